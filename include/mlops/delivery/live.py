"""What the live scoring service measured, per model version and variant, between two moments.

A live phase (a canary step, a shadow phase, an A/B test) is judged on the traffic the service
really took while it ran. Two sources hold it:

- the service's Prometheus counters (`GET /metrics`): requests by status, request latency and
  model-call latency per (version, variant), and per shadow version its scored rows, errors and
  call latency. A `MetricsSnapshot` is one reading (JSON for XCom); `traffic` turns two readings
  into one (version, variant)'s requests, server errors (5xx) and latency percentiles,
  interpolated inside the histogram buckets as Prometheus' `histogram_quantile` does;
- the prediction log of the phase's window (`live_rows`, after `flush` has the service write its
  buffer): scores per variant for the score distance, shadow rows to pair with the champion's
  answers by request id, and labels where they have arrived.

A counter that went down between the readings (the service restarted) is read from zero: the
second reading is the whole phase's traffic since the restart.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

P = "mlops_serving_"
Buckets = list[tuple[float, float]]  # [(upper bound `le`, cumulative count)], +Inf last
SHADOW = "shadow"


@dataclass(frozen=True)
class MetricsSnapshot:
    """The service's /metrics at one time, summed over endpoints. Keys are (version, variant)
    and, for requests, (version, variant, status); shadow figures are keyed by version."""

    at: float
    requests: dict[tuple[str, str, str], float] = field(default_factory=dict)
    latency_buckets: dict[tuple[str, str], Buckets] = field(default_factory=dict)
    latency_sum: dict[tuple[str, str], float] = field(default_factory=dict)
    scoring_buckets: dict[tuple[str, str], Buckets] = field(default_factory=dict)  # model calls
    scoring_sum: dict[tuple[str, str], float] = field(default_factory=dict)
    predictions: dict[tuple[str, str], float] = field(default_factory=dict)  # rows scored
    shadow_errors: dict[str, float] = field(default_factory=dict)  # rows the shadow failed on

    def to_json(self) -> str:
        def value(v: Any) -> Any:  # bucket bounds: "+Inf" as text, strict JSON has no Infinity
            return [["+Inf" if math.isinf(le) else le, c] for le, c in v] if isinstance(v, list) else v

        def items(d: dict[Any, Any]) -> list[list[Any]]:
            return [[*(k if isinstance(k, tuple) else (k,)), value(v)] for k, v in d.items()]

        return json.dumps({k: (v if k == "at" else items(v)) for k, v in asdict(self).items()}, allow_nan=False)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> MetricsSnapshot:
        raw = json.loads(text) if isinstance(text, str) else text
        out: dict[str, Any] = {"at": float(raw["at"])}
        for name, entries in raw.items():
            if name == "at":
                continue
            d: dict[Any, Any] = {}
            for *key, value in entries:
                k = tuple(str(x) for x in key) if len(key) > 1 else str(key[0])
                d[k] = [(float(le), float(c)) for le, c in value] if isinstance(value, list) else float(value)
            out[name] = d
        return cls(**out)

    def shadow_rows(self, version: str) -> float:
        return self.predictions.get((version, SHADOW), 0.0)


def parse_metrics(text: str, at: float | None = None) -> MetricsSnapshot:
    """A snapshot from Prometheus exposition text (what /metrics answers)."""
    from prometheus_client.parser import text_string_to_metric_families

    snap = MetricsSnapshot(at=time.time() if at is None else at)
    raw_buckets: dict[str, dict[tuple[str, ...], dict[float, float]]] = {"latency": {}, "scoring": {}, "shadow": {}}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            lab, v = s.labels, float(s.value)
            version, variant = lab.get("model_version", ""), lab.get("variant", "")
            if s.name == f"{P}requests_total":
                _add(snap.requests, (version, variant, lab.get("status", "")), v)
            elif s.name == f"{P}predictions_total":
                _add(snap.predictions, (version, variant), v)
            elif s.name == f"{P}shadow_errors_total":
                _add(snap.shadow_errors, version, v)
            elif s.name == f"{P}request_latency_seconds_sum":
                _add(snap.latency_sum, (version, variant), v)
            elif s.name == f"{P}scoring_seconds_sum":
                _add(snap.scoring_sum, (version, variant), v)
            elif s.name == f"{P}shadow_latency_seconds_sum":
                _add(snap.scoring_sum, (version, SHADOW), v)
            elif s.name.endswith("_bucket"):
                kind = {
                    f"{P}request_latency_seconds_bucket": "latency",
                    f"{P}scoring_seconds_bucket": "scoring",
                    f"{P}shadow_latency_seconds_bucket": "shadow",
                }.get(s.name)
                if kind:
                    key = (version, SHADOW if kind == "shadow" else variant)
                    _add(raw_buckets[kind].setdefault(key, {}), float(lab["le"]), v)
    for kind, target in (("latency", snap.latency_buckets), ("scoring", snap.scoring_buckets)):
        for key, by_le in raw_buckets[kind].items():
            target[key] = sorted(by_le.items())
    for key, by_le in raw_buckets["shadow"].items():
        snap.scoring_buckets[key] = sorted(by_le.items())
    return snap


def _add(d: dict[Any, float], key: Any, v: float) -> None:
    d[key] = d.get(key, 0.0) + v


def _url(handle_or_url: Any) -> str:
    return str(getattr(handle_or_url, "url", handle_or_url)).rstrip("/")


def snapshot(handle_or_url: Any, token: str | None = None, timeout: float = 10.0) -> MetricsSnapshot:
    """Read the service's /metrics now (a `ServiceHandle` or its URL; /metrics needs no token,
    `token` is accepted for symmetry with `flush`)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = _url(handle_or_url)
    try:
        r = httpx.get(f"{url}/metrics", headers=headers, timeout=timeout)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise RuntimeError(f"could not read the scoring service's metrics at {url}/metrics: {exc}") from exc
    return parse_metrics(r.text)


def flush(handle_or_url: Any, token: str | None, timeout: float = 60.0) -> dict[str, Any]:
    """Have the service write its prediction-log buffer now (POST /admin/flush, admin token), so
    `live_rows` sees every answer given so far; its answer ({"flushed", "objects"})."""
    import httpx

    url = _url(handle_or_url)
    token = token if token is not None else getattr(handle_or_url, "token", None)
    if not token:
        raise ValueError(f"flushing {url}'s prediction log needs the admin token (MLOPS_ADMIN_TOKEN)")
    r = httpx.post(f"{url}/admin/flush", headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"{url}/admin/flush answered {r.status_code}: {r.text[:300]}")
    return r.json()


# -- between two snapshots ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Traffic:
    """One (version, variant) between two snapshots: requests (for a shadow, rows scored),
    server errors (5xx; for a shadow, rows it failed on) and latency in milliseconds."""

    version: str
    variant: str
    requests: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    mean_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _delta(after: float, before: float) -> float:
    return after if after < before else after - before  # a reset counter reads from zero


def bucket_deltas(before: Buckets | None, after: Buckets | None) -> Buckets:
    """Cumulative counts per bucket bound gained between two readings (all of `after` if the
    histogram was reset in between)."""
    if not after:
        return []
    prior = dict(before or [])
    total_after, total_before = after[-1][1], prior.get(after[-1][0], 0.0)
    if total_after < total_before:
        return list(after)
    return [(le, c - prior.get(le, 0.0)) for le, c in after]


def quantile(q: float, buckets: Buckets) -> float | None:
    """The q-quantile (seconds) of cumulative buckets, linear inside the bucket that holds it
    (from 0 for the first); the highest finite bound if it falls in +Inf. None without counts."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cum in buckets:
        if cum >= rank and cum > below:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / (cum - below)
        lower, below = (le if not math.isinf(le) else lower), cum
    return lower


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000.0, 3)


def _latency(buckets: Buckets, total_seconds: float) -> tuple[float | None, float | None, float | None]:
    n = buckets[-1][1] if buckets else 0.0
    mean = total_seconds / n if n > 0 else None
    return _ms(quantile(0.5, buckets)), _ms(quantile(0.95, buckets)), _ms(mean)


def traffic(before: MetricsSnapshot, after: MetricsSnapshot, version: str, variant: str) -> Traffic:
    """The requests one (version, variant) answered or failed between the snapshots."""
    by_status: dict[str, float] = {}
    for (v, k, status), n in after.requests.items():
        if v == version and k == variant:
            by_status[status] = _delta(n, before.requests.get((v, k, status), 0.0))
    requests = int(round(sum(by_status.values())))
    errors = int(round(sum(n for s, n in by_status.items() if s.startswith("5"))))
    key = (version, variant)
    buckets = bucket_deltas(before.latency_buckets.get(key), after.latency_buckets.get(key))
    total = _delta(after.latency_sum.get(key, 0.0), before.latency_sum.get(key, 0.0))
    return Traffic(
        version, variant, requests, errors, errors / requests if requests else None, *_latency(buckets, total)
    )


def scoring(before: MetricsSnapshot, after: MetricsSnapshot, version: str, variant: str) -> Traffic:
    """Model calls of one (version, variant): rows scored, and the latency of each call. For a
    shadow (variant "shadow") the rows it failed on are its errors. This is what compares a
    shadow with the champion: both score the same rows, and neither call includes the HTTP
    round trip that only the champion's answers pay."""
    key = (version, variant)
    rows = _delta(after.predictions.get(key, 0.0), before.predictions.get(key, 0.0))
    errors = 0.0
    if variant == SHADOW:
        errors = _delta(after.shadow_errors.get(version, 0.0), before.shadow_errors.get(version, 0.0))
    buckets = bucket_deltas(before.scoring_buckets.get(key), after.scoring_buckets.get(key))
    total = _delta(after.scoring_sum.get(key, 0.0), before.scoring_sum.get(key, 0.0))
    tried = rows + errors
    return Traffic(
        version,
        variant,
        int(round(rows)),
        int(round(errors)),
        errors / tried if tried else None,
        *_latency(buckets, total),
    )


def shadow_traffic(before: MetricsSnapshot, after: MetricsSnapshot, version: str) -> Traffic:
    """A shadow version's scoring between the snapshots (`scoring` with variant "shadow")."""
    return scoring(before, after, version, SHADOW)


def requests_of(handle_or_url: Any, version: str, variant: str, since: MetricsSnapshot | dict | str) -> int:
    """How many live requests (a shadow: rows) `version` took as `variant` since a snapshot:
    one /metrics read, for a trigger that polls. `since` may be the snapshot's JSON."""
    before = since if isinstance(since, MetricsSnapshot) else MetricsSnapshot.from_json(since)
    now = snapshot(handle_or_url)
    if variant == SHADOW:
        return shadow_traffic(before, now, version).requests
    return traffic(before, now, version, variant).requests


# -- the prediction log of the window -----------------------------------------------------------------
def _days(since: float, until: float) -> list[Any]:
    first = datetime.fromtimestamp(since, UTC).date()
    last = datetime.fromtimestamp(until, UTC).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def live_rows(
    store: ObjectStore, spec: DatasetSpec, since: float, until: float, variants: tuple[str, ...] = ()
) -> pd.DataFrame:
    """The prediction-log rows the service wrote for requests in [since, until) (epoch seconds),
    every variant or those named (e.g. ("champion", "challenger"), or ("champion", "shadow"));
    columns as `monitoring.reading.read_predictions` gives them (`ts` UTC, `variant`,
    `model_version`, `score`, `prediction`, `request_id`, the entity and features).
    Call `flush` first: rows still in the service's buffer are not in the log yet."""
    import pandas as pd

    from include.mlops.monitoring.reading import read_predictions

    df, _ = read_predictions(store, spec, _days(since, until), rows="all")
    if df.empty:
        return df
    df = df[df["source"] == "online"] if "source" in df.columns else df
    lo, hi = pd.Timestamp(since, unit="s", tz="UTC"), pd.Timestamp(until, unit="s", tz="UTC")
    keep = (df["ts"] >= lo) & (df["ts"] < hi)
    if variants:
        keep &= df["variant"].isin(variants)
    return df[keep].reset_index(drop=True)


def labelled(store: ObjectStore, spec: DatasetSpec, rows: pd.DataFrame, until: float) -> pd.DataFrame:
    """`rows` (from `live_rows`) that have ground truth, labels arrived from the first row's day
    to `until`'s day (`monitoring.reading.read_labels` / `join_labels`)."""
    from include.mlops.monitoring.reading import join_labels, read_labels

    if rows.empty:
        return rows.iloc[0:0]
    first = rows["ts"].min().date()
    last = datetime.fromtimestamp(until, UTC).date()
    return join_labels(rows, read_labels(store, spec, first, max(first, last)), spec)
