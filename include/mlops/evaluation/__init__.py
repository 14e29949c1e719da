"""Evaluate: holdout and slice metrics, who the challenger is compared with, the promotion gate, plots."""
