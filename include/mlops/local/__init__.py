"""The embedded default on one laptop: the demo, the local stack, the home directory, one-day runs."""
