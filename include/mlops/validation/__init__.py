"""Validate: the landed batch checked against the spec (pandas checks first, then the GX suite)."""
