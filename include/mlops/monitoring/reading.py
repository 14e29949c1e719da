"""Reading a window: the prediction log (online requests and batch scores) and the late labels.

Every log row names its `variant` and `model_version` (`serving.predlog`; older logs read as the
champion's answers of version "unknown"). A shadow row is never an answer: the caller got the
champion's answer to that request. The window's reports judge the champion's answers
(`judged_rows`); every variant and version is counted on its own in `monitoring.variants`.
Where the objects live is `include.mlops.layout`'s.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING

from include.mlops import layout

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

# the prediction log's columns this package reads (besides the features, entity and timestamps)
SCORE, PREDICTION, SOURCE = "score", "prediction", "source"
ROWS_KINDS = ("answered", "shadow", "all")


def prediction_keys(store: ObjectStore, spec: DatasetSpec, days: list[date]) -> list[tuple[str, str]]:
    """(source, key) of every prediction-log object of the days: online requests, then batch scores."""
    out: list[tuple[str, str]] = []
    root = len(layout.predictions_prefix(spec))
    for day in days:
        out += [
            ("online", k)
            for k in store.list(layout.online_predictions_prefix(spec, day))
            if k.endswith(".parquet") and "/batch/" not in k[root:]
        ]
        out += [("batch", k) for k in store.list(layout.batch_predictions_prefix(spec, day)) if k.endswith(".parquet")]
    return out


def read_predictions(
    store: ObjectStore, spec: DatasetSpec, days: list[date], *, rows: str = "answered"
) -> tuple[pd.DataFrame, list[str]]:
    """The prediction log of the days, with a `source` column and `variant` and `model_version`
    on every row (`serving.predlog.with_variant_columns`); (frame, keys read).

    `rows`: "answered" (the default: what callers got, every variant but shadow), "shadow" (the
    shadow's own scores, never an answer) or "all".
    """
    import pandas as pd

    from include.mlops.serving.predlog import is_answer, with_variant_columns

    if rows not in ROWS_KINDS:
        raise ValueError(f"rows={rows!r}: use one of {', '.join(ROWS_KINDS)}")
    keys = prediction_keys(store, spec, days)
    frames = []
    for source, key in keys:
        df = store.get_parquet(key)
        df[SOURCE] = source
        frames.append(df)
    if not frames:
        return pd.DataFrame(), []
    df = with_variant_columns(pd.concat(frames, ignore_index=True))
    if "ts" in df.columns:
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
    if spec.timestamp in df.columns:
        df[spec.timestamp] = pd.to_datetime(df[spec.timestamp], utc=True)
    if rows != "all":
        answered = is_answer(df["variant"])
        df = df[answered if rows == "answered" else ~answered].reset_index(drop=True)
    return df, [k for _, k in keys]


def read_labels(store: ObjectStore, spec: DatasetSpec, first_arrival: date, last_arrival: date) -> pd.DataFrame:
    """Ground truth that arrived in [first_arrival, last_arrival]: staged by ml_training's extract,
    else straight from the raw label feed."""
    import pandas as pd

    frames = []
    day = first_arrival
    while day <= last_arrival:
        staged = layout.staging_labels_key(spec, day)
        if store.exists(staged):
            frames.append(store.get_parquet(staged))
        elif spec.label_spec.feed_prefix:
            feed = layout.labels_landing_prefix(spec, day)
            frames += [store.get_parquet(k) for k in store.list(feed) if k.endswith(".parquet")]
        day += timedelta(days=1)
    cols = [spec.entity_key, spec.timestamp, spec.label]
    if not frames:
        return pd.DataFrame(columns=cols)
    labels = pd.concat(frames, ignore_index=True)[cols]
    labels[spec.timestamp] = pd.to_datetime(labels[spec.timestamp], utc=True)
    if spec.entity_is_string:
        from include.mlops.features.build import entity_column

        labels[spec.entity_key] = entity_column(spec, labels[spec.entity_key])
    return labels.drop_duplicates([spec.entity_key, spec.timestamp], keep="last").reset_index(drop=True)


def join_labels(preds: pd.DataFrame, labels: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Predictions that have ground truth: on (entity, event time) when the log has the event
    time, else on (entity, date of the request)."""
    import pandas as pd

    if preds.empty or labels.empty:
        return preds.iloc[0:0].assign(**{spec.label: pd.Series(dtype="float64")})
    ent, ts = spec.entity_key, spec.timestamp
    lab = labels[[ent, ts, spec.label]].copy()
    lab[ts] = lab[ts].astype("datetime64[ns, UTC]")
    if spec.entity_is_string:  # text on both sides: the log holds pandas' string, labels may hold objects
        from include.mlops.features.build import entity_column

        lab[ent] = entity_column(spec, lab[ent])
        preds = preds.assign(**{ent: entity_column(spec, preds[ent])})
    parts = []
    has_ts = preds[ts].notna() if ts in preds.columns else pd.Series(False, index=preds.index)
    if has_ts.any():
        p = preds[has_ts].drop(columns=[spec.label], errors="ignore").copy()
        p[ts] = p[ts].astype("datetime64[ns, UTC]")
        parts.append(p.merge(lab, on=[ent, ts], how="inner"))
    if (~has_ts).any():
        p = preds[~has_ts].drop(columns=[spec.label], errors="ignore").copy()
        p["_day"] = pd.to_datetime(p["ts"], utc=True).dt.date
        by_day = lab.assign(_day=lab[ts].dt.date).drop_duplicates([ent, "_day"], keep="last")
        parts.append(p.merge(by_day[[ent, "_day", spec.label]], on=[ent, "_day"], how="inner").drop(columns="_day"))
    return pd.concat(parts, ignore_index=True) if parts else preds.iloc[0:0]


def sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most n rows, the same ones for the same data and seed."""
    if len(df) <= n:
        return df
    return df.sample(n=n, random_state=seed).sort_index()


def split_answers(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(answered rows, shadow rows) of a frame `read_predictions(rows="all")` returned."""
    from include.mlops.serving.predlog import is_answer

    if "variant" not in df.columns:  # an empty read: no rows of either kind
        return df, df
    answered = is_answer(df["variant"])
    return df[answered].reset_index(drop=True), df[~answered].reset_index(drop=True)


def judged_rows(answered: pd.DataFrame) -> pd.DataFrame:
    """What the window's reports and the drift policy judge: the champion's answers (variant
    `champion`, whichever version held the alias when it answered). A canary's, a pinned
    version's and a shadow's rows are judged per version in `variant_numbers`, not here."""
    from include.mlops.serving.predlog import DEFAULT_VARIANT

    if "variant" not in answered.columns:
        return answered
    return answered[answered["variant"] == DEFAULT_VARIANT].reset_index(drop=True)
