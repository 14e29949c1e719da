"""Seeded demo data: daily raw batches in the landing zone, labels as a late, separate feed.

Two demo datasets ship (churn, classification; housing, regression). Named scenarios can be
injected from a chosen day so the platform's reactions can be seen and tested:

- `covariate_drift`: the inputs move (pricier plans, more support calls), the relationship holds;
- `concept_drift`: the relationship changes (usage, not contract, now drives the label);
- `schema_missing` / `schema_renamed` / `schema_retyped`: a column disappears, is renamed or
  arrives as text;
- `corrupted`: nulls in required columns, out-of-range numbers, unknown categories.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

SCENARIOS = (
    "none",
    "covariate_drift",
    "concept_drift",
    "schema_missing",
    "schema_renamed",
    "schema_retyped",
    "corrupted",
)


@dataclass(frozen=True)
class Scenario:
    name: str = "none"
    start: date | None = None  # first affected day; None = never

    def active(self, day: date) -> bool:
        return self.name != "none" and self.start is not None and day >= self.start


def events_key(spec: DatasetSpec, day: date) -> str:
    """The demo's one events file of the day (extract reads every file of the day's folder)."""
    from include.mlops.layout import events_landing_key

    return events_landing_key(spec, day)


def labels_key(spec: DatasetSpec, arrival: date) -> str:
    """The demo's one label file that arrived on `arrival`."""
    from include.mlops.layout import labels_landing_key

    return labels_landing_key(spec, arrival)


def entity_ids(spec: DatasetSpec, numbers: np.ndarray) -> np.ndarray:
    """Customer numbers as the spec's entity ids: int64, or for `entity.dtype: string` text like
    "C-0100123" (what most real keys look like), the same customer always the same text."""
    import numpy as np

    if spec.entity_is_string:
        return np.array([f"C-{int(i):07d}" for i in numbers], dtype=object)
    return numbers.astype("int64")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-x))


def _churn(rng: np.random.Generator, n: int, drift: bool, concept: bool) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    plan_p = [0.15, 0.25, 0.35, 0.25] if drift else [0.35, 0.35, 0.2, 0.1]
    plan = rng.choice(["basic", "standard", "premium", "unlimited"], n, p=plan_p)
    base_charge = pd.Series(plan).map({"basic": 25, "standard": 55, "premium": 85, "unlimited": 115}).to_numpy()
    contract = rng.choice(["month_to_month", "one_year", "two_year"], n, p=[0.5, 0.3, 0.2])
    tenure = np.clip(rng.gamma(2.0, 14.0, n), 0, 120).astype(int)
    monthly = np.clip(base_charge * (1.25 if drift else 1.0) + rng.normal(0, 8, n), 5, 250)
    support = np.clip(rng.poisson(3.5 if drift else 1.5, n), 0, 50)
    usage = np.clip(rng.lognormal(3.0, 0.7, n), 0, 500)
    internet = rng.choice(["none", "dsl", "fiber"], n, p=[0.15, 0.45, 0.4])
    late = np.clip(rng.poisson(0.8, n), 0, 12)
    satisfaction = np.clip(rng.normal(3.6 - 0.25 * support / 2, 0.8, n), 1, 5)
    df = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": monthly.round(2),
            "total_charges": np.clip(monthly * tenure + rng.normal(0, 20, n), 0, 30000).round(2),
            "support_calls_30d": support,
            "data_usage_gb": usage.round(2),
            "call_minutes": np.clip(rng.gamma(3.0, 120.0, n), 0, 5000).round(1),
            "num_devices": np.clip(rng.poisson(2.0, n) + 1, 1, 10),
            "late_payments_12m": late,
            "avg_session_min": np.clip(rng.normal(35, 12, n), 0, 300).round(1),
            "satisfaction_score": satisfaction.round(1),
            "plan": plan,
            "contract": contract,
            "payment_method": rng.choice(
                ["card", "bank_transfer", "e_check", "mailed_check"], n, p=[0.35, 0.3, 0.25, 0.1]
            ),
            "region": rng.choice(["north", "south", "east", "west", "central"], n),
            "internet_service": internet,
            "paperless_billing": rng.choice(["yes", "no"], n, p=[0.6, 0.4]),
        }
    )
    if concept:  # usage and region now drive churn; contract and tenure stop protecting
        logit = (
            -2.9
            + 1.6 * (df["data_usage_gb"] > 30)
            + 1.2 * (df["region"].isin(["south", "east"]))
            - 0.6 * (df["support_calls_30d"] > 2)
        )
    else:
        logit = (
            -2.9
            + 1.3 * (df["contract"] == "month_to_month")
            - 0.035 * df["tenure_months"]
            + 0.35 * df["support_calls_30d"]
            + 0.012 * (df["monthly_charges"] - 60)
            + 0.45 * df["late_payments_12m"]
            - 0.45 * (df["satisfaction_score"] - 3.5)
            + 0.5 * (df["internet_service"] == "fiber")
            + 0.3 * (df["payment_method"] == "e_check")
        )
    noise = rng.normal(0, 0.6, n)
    df["__label"] = (rng.random(n) < _sigmoid(logit.to_numpy() + noise)).astype(int)
    return df


def _housing(rng: np.random.Generator, n: int, drift: bool, concept: bool) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    district = rng.choice(["centre", "inner", "suburb", "rural"], n, p=[0.15, 0.3, 0.4, 0.15])
    area = np.clip(rng.lognormal(4.7 + (0.2 if drift else 0), 0.35, n), 20, 600)
    df = pd.DataFrame(
        {
            "living_area_m2": area.round(1),
            "lot_area_m2": np.clip(rng.gamma(2.0, 300.0, n), 0, 5000).round(0),
            "bedrooms": np.clip((area / 35).astype(int) + rng.integers(-1, 2, n), 0, 10),
            "bathrooms": np.clip((area / 70).astype(int) + rng.integers(0, 2, n), 0, 8),
            "year_built": rng.integers(1900, 2025, n),
            "garage_spaces": rng.integers(0, 3, n),
            "distance_km": np.clip(rng.gamma(2.0, 6.0, n), 0, 80).round(2),
            "condition": rng.choice(["poor", "fair", "good", "excellent"], n, p=[0.1, 0.3, 0.45, 0.15]),
            "district": district,
            "heating": rng.choice(["gas", "electric", "heat_pump", "oil"], n),
            "has_pool": rng.choice(["yes", "no"], n, p=[0.1, 0.9]),
            "energy_rating": rng.choice(["A", "B", "C", "D", "E"], n),
        }
    )
    district_premium = pd.Series(district).map({"centre": 180, "inner": 110, "suburb": 40, "rural": 0}).to_numpy()
    cond = df["condition"].map({"poor": -40, "fair": -10, "good": 10, "excellent": 50}).to_numpy()
    per_m2 = 1.2 if concept else 2.2
    price = (
        80
        + per_m2 * df["living_area_m2"]
        + district_premium * (0.3 if concept else 1.0)
        + cond
        - 1.5 * df["distance_km"]
        + 15 * df["garage_spaces"]
        + 0.4 * (df["year_built"] - 1960)
        + rng.normal(0, 35, n)
    )
    df["__label"] = np.clip(price, 20, None).round(1)
    return df


GENERATORS = {"churn": _churn, "housing": _housing}


def _corrupt(rng: np.random.Generator, df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    import numpy as np

    df = df.copy()
    n = len(df)
    k = max(1, int(0.05 * n))
    req_num = [f for f in spec.features if f.is_numeric and f.required]
    cats = [f for f in spec.features if not f.is_numeric]
    if req_num:
        col = req_num[0].name
        df[col] = df[col].astype("float64")
        df.loc[rng.choice(n, k, replace=False), col] = np.nan
        hi = req_num[-1]
        df[hi.name] = df[hi.name].astype("float64")
        df.loc[rng.choice(n, k, replace=False), hi.name] = (hi.range[1] if hi.range else 0) * 10 + 1
    if cats:
        c = cats[0].name
        df.loc[rng.choice(n, k, replace=False), c] = "??unknown??"
    return df


def _break_schema(df: pd.DataFrame, spec: DatasetSpec, kind: str) -> pd.DataFrame:
    target = spec.numeric_features[1]
    if kind == "schema_missing":
        return df.drop(columns=[spec.categorical_features[0]])
    if kind == "schema_renamed":
        return df.rename(columns={target: f"{target}_renamed"})
    df = df.copy()
    df[target] = df[target].map(lambda v: f"{v}")  # numbers arrive as text
    return df


def generate_day(
    spec: DatasetSpec, day: date, scenario: Scenario = Scenario(), rows: int | None = None, seed: int | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One day's raw events and their labels (entity, event time, label), reproducibly; the ids
    follow `entity.dtype` (see `entity_ids`)."""
    import numpy as np
    import pandas as pd

    from include.mlops.spec_sections import DemoSpec

    demo = spec.demo or DemoSpec()
    n = rows or demo.rows_per_day
    base_seed = int(seed if seed is not None else demo.seed)
    rng = np.random.default_rng([base_seed, day.toordinal()])
    active = scenario.active(day)
    gen = GENERATORS.get(spec.name)
    if gen is None:
        raise KeyError(f"no demo generator for dataset {spec.name!r} (known: {sorted(GENERATORS)})")
    df = gen(
        rng, n, drift=active and scenario.name == "covariate_drift", concept=active and scenario.name == "concept_drift"
    )
    # A stable customer pool: ids repeat across days, never within one day.
    pool = np.arange(100_000, 100_000 + max(n * 10, 1000))
    ids = rng.choice(pool, n, replace=False)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    seconds = np.sort(rng.integers(0, 86_400, n))
    ts = pd.to_datetime(start) + pd.to_timedelta(seconds, unit="s")
    df.insert(0, spec.timestamp, ts)
    df.insert(0, spec.entity_key, entity_ids(spec, ids))
    labels = pd.DataFrame(
        {spec.entity_key: df[spec.entity_key], spec.timestamp: df[spec.timestamp], spec.label: df.pop("__label")}
    )
    if active and scenario.name == "corrupted":
        df = _corrupt(rng, df, spec)
    elif active and scenario.name.startswith("schema_"):
        df = _break_schema(df, spec, scenario.name)
    return df, labels


def write_days(
    store: ObjectStore,
    spec: DatasetSpec,
    start: date,
    days: int,
    scenario: Scenario = Scenario(),
    rows: int | None = None,
    seed: int | None = None,
) -> list[str]:
    """Write `days` daily batches to the landing zone (events now, labels delay_days later)."""
    written = []
    for i in range(days):
        day = start + timedelta(days=i)
        events, labels = generate_day(spec, day, scenario, rows=rows, seed=seed)
        written.append(store.put_parquet(events_key(spec, day), events))
        store.put_parquet(labels_key(spec, day + timedelta(days=spec.label_delay_days)), labels)
    return written
