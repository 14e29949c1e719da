"""Real tables that ship inside scikit-learn, dressed as a team's export: string ids, event times
over two weeks, labels as the team has them (text, several classes, or a number)."""

from __future__ import annotations

from pathlib import Path

START = "2025-03-01"
DAYS = 14


def table(kind: str, seed: int = 0):
    """`cancer` (labels "yes"/"no", yes = malignant), `wine` (three named classes) or `diabetes`
    (regression), with columns `customer_id`, `event_time`, the features (their own names, spaces
    included) and `outcome`."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    loader, labels = {
        "cancer": (load_breast_cancer, {0: "yes", 1: "no"}),
        "wine": (load_wine, {0: "barolo", 1: "grignolino", 2: "barbera"}),
        "diabetes": (load_diabetes, None),
    }[kind]
    df = loader(as_frame=True).frame.rename(columns={"target": "outcome"})
    if labels:
        df["outcome"] = df["outcome"].map(labels)
    rng = np.random.default_rng(seed)
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # classes spread over the days
    n = len(df)
    df.insert(0, "customer_id", [f"C-{i:06d}" for i in rng.permutation(n)])
    seconds = np.sort(rng.integers(0, DAYS * 86_400, n))
    times = pd.Timestamp(START, tz="UTC") + pd.to_timedelta(seconds, unit="s")
    df.insert(1, "event_time", times.strftime("%Y-%m-%d %H:%M:%S"))
    return df


def write_csv(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.csv"
    table(kind).to_csv(path, index=False)
    return path
