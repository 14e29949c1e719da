"""Train: the time split, the spec's sklearn pipeline and its budgeted search, and what goes to MLflow."""
