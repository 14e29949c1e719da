"""Decide and retrain: the drift policy's rules, the window they read, and the retraining plan."""
