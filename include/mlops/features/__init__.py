"""Prepare: feature functions, derived-feature expressions, the Feast definitions and the online store."""
