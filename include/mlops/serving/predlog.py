"""The prediction log: every prediction, written in batches by a background thread.

The request path only appends a micro-batch (its raw feature rows and outputs) to a queue. The
writer thread turns what has accumulated into one parquet object per day partition,
`predictions/<dataset>/dt=YYYY-MM-DD/<batch id>.parquet` (the day of the record's event time
when the caller sent one, else of the request), every few seconds or every N rows,
and once more on shutdown, so nothing that was answered is lost. A failed write is retried
on the next cycle; the buffer is bounded so that a dead object store cannot exhaust memory
(rows dropped past the bound are counted in a metric and logged).

Every row names what produced it: `model_version` (the registry version that scored it) and
`variant`, the role of that version for the request:

| variant | answered the caller | written by |
|---|---|---|
| champion | yes | the service (the champion's share of traffic), batch scoring |
| challenger | yes | the service: a canary's share of traffic |
| pinned | yes | the service: an admin request pinned to one version (deploy checks) |
| shadow | no: scored in addition, the caller got the champion's answer | the service in a shadow phase (same request id as the answer) |

Monitoring counts every variant but `shadow` as an answer (`is_answer`). Logs written before
these columns existed are read as the champion's answers of an unknown version
(`with_variant_columns`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from include.mlops.layout import online_predictions_key

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.metrics import Metrics
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class LogBatch:
    """Scored rows of one micro-batch: `rows` holds the raw feature values (spec order) the model
    frame was built from, the other lists the rest. The writer builds the model features of a
    whole flush in one go from the rows: per-batch frames would cost a `concat` of hundreds of
    one-row frames, about 80 ms holding the GIL every flush at one request at a time."""

    rows: list[list[Any]]
    request_id: list[str]
    ts: list[float]  # epoch seconds, UTC
    entity: list[int | str | None]  # in the spec's key type (entity.dtype)
    prediction: list[Any]
    score: list[float]
    model_version: list[str]
    variant: list[str]
    event_ts: list[float | None] | None = None  # epoch seconds, UTC; None where not sent

    def __len__(self) -> int:
        return len(self.request_id)


SHADOW_VARIANT = "shadow"  # the one variant that never answered (serving.routing.SHADOW)
DEFAULT_VARIANT = "champion"  # what a row without a variant was: the champion's answer
UNKNOWN_VERSION = "unknown"  # the version of a row written before the log named it


def is_answer(variant: pd.Series) -> pd.Series:
    """Which rows answered a caller: every variant but shadow (a shadow row is a second opinion
    on a request the champion answered, so counting it would count that request twice)."""
    return variant.astype("object").fillna(DEFAULT_VARIANT).astype(str) != SHADOW_VARIANT


def with_variant_columns(df: pd.DataFrame) -> pd.DataFrame:
    """`variant` and `model_version` as text on every row: a log (or a row) from before the
    columns existed reads as the champion's answer of an unknown version."""
    import pandas as pd

    out = df.copy(deep=False)  # new columns replace, never write into, the caller's
    for col, default in (("variant", DEFAULT_VARIANT), ("model_version", UNKNOWN_VERSION)):
        values = out[col] if col in out.columns else pd.Series(None, index=out.index, dtype="object")
        text = values.astype("object").where(values.notna(), None)
        out[col] = text.map(lambda v, d=default: _label(v, d)).astype("object")
    return out


def _label(value: Any, default: str) -> str:
    if value is None or str(value).strip() == "":
        return default
    if isinstance(value, float) and value.is_integer():  # 3.0: an integer column that met a gap
        return str(int(value))
    return str(value).strip()


def log_columns(spec: DatasetSpec) -> list[str]:
    from include.mlops.features.build import model_features

    return [
        "request_id",
        "ts",
        spec.timestamp,
        spec.entity_key,
        *model_features(spec),
        "prediction",
        "score",
        "model_name",
        "model_version",
        "variant",
    ]


def entity_array(spec: DatasetSpec, ids: list[Any]) -> Any:
    """The log's entity column in the key's own type: nullable Int64, or for `entity.dtype: string`
    text (a parquet string column even when every id is null), so monitoring joins it to the
    labels' ids as they are."""
    import pandas as pd

    if spec.entity_is_string:
        return pd.array(ids, dtype="string")
    return pd.array(ids, dtype="Int64")


def to_frame(batches: list[LogBatch], spec: DatasetSpec, model_name: str, builder: FrameBuilder) -> pd.DataFrame:
    """The log's table for some batches, columns in the documented order."""
    import numpy as np
    import pandas as pd

    from include.mlops.features.build import model_features

    feats = builder.frame([r for b in batches for r in b.rows])

    def cat(attr: str) -> list[Any]:
        return [v for b in batches for v in getattr(b, attr)]

    def seconds(values: list[Any]) -> pd.DatetimeIndex:
        micros = np.asarray([np.nan if v is None else v for v in values], dtype="float64") * 1e6
        return pd.to_datetime(micros, unit="us", utc=True)

    event = [v for b in batches for v in (b.event_ts or [None] * len(b))]
    out = pd.DataFrame(
        {
            "request_id": pd.Series(cat("request_id"), dtype="object"),
            "ts": seconds(cat("ts")),
            spec.timestamp: seconds(event),
            spec.entity_key: entity_array(spec, cat("entity")),
        }
    )
    for c in model_features(spec):
        out[c] = feats[c].to_numpy()
    prediction = cat("prediction")
    # a classifier's prediction is a class value: int64 for 0/1, bool, or text ("yes"/"no")
    out["prediction"] = pd.Series(prediction, dtype=None if spec.is_classification else "float64")
    out["score"] = pd.Series(cat("score"), dtype="float64")
    out["model_name"] = model_name
    out["model_version"] = pd.Series(cat("model_version"), dtype="object")
    out["variant"] = pd.Series(cat("variant"), dtype="object")
    return out


_FLUSH = object()
_STOP = object()


class PredictionLog:
    def __init__(
        self,
        store: ObjectStore,
        spec: DatasetSpec,
        model_name: str,
        *,
        flush_seconds: float = 5.0,
        max_rows: int = 10_000,
        max_buffer_rows: int = 2_000_000,
        metrics: Metrics | None = None,
        builder: FrameBuilder | None = None,
    ) -> None:
        from include.mlops.serving.frames import FrameBuilder

        self.store, self.spec, self.model_name = store, spec, model_name
        self.builder = builder or FrameBuilder(spec)
        self.flush_seconds, self.max_rows, self.max_buffer_rows = flush_seconds, max_rows, max_buffer_rows
        self.metrics = metrics
        self._q: queue.Queue[Any] = queue.Queue()
        self._buf: list[LogBatch] = []
        self._pending: pd.DataFrame | None = None  # a table whose write failed part-way
        self._rows = 0
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._flushed: list[threading.Event] = []
        self.written: list[str] = []

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, batch: LogBatch) -> None:
        """Called on the scoring path: O(1), never blocks."""
        self._q.put_nowait(batch)

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything submitted so far (blocks the caller, not the request path)."""
        done = threading.Event()
        self._q.put((_FLUSH, done))
        return done.wait(timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Drain and write everything, then stop the thread (called on shutdown)."""
        if self._thread is None:
            return
        self._q.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("prediction log did not finish writing within %ss; %d rows pending", timeout, self._rows)
        self._thread = None

    # -- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        last = time.monotonic()
        while True:
            timeout = max(0.0, self.flush_seconds - (time.monotonic() - last))
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._drain()
                for attempt in range(3):
                    if self._write():
                        break
                    time.sleep(0.5 * (attempt + 1))
                return
            if isinstance(item, tuple) and item and item[0] is _FLUSH:
                self._drain()
                self._write()
                item[1].set()
                last = time.monotonic()
                continue
            if item is not None:
                self._add(item)
            if self._rows >= self.max_rows or time.monotonic() - last >= self.flush_seconds:
                self._drain()
                self._write()
                last = time.monotonic()

    def _drain(self) -> None:
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if item is _STOP:  # keep it for the loop
                self._q.put(_STOP)
                return
            if isinstance(item, tuple) and item and item[0] is _FLUSH:
                self._q.put(item)
                return
            self._add(item)

    def _add(self, batch: LogBatch) -> None:
        if self._rows + len(batch) > self.max_buffer_rows:
            log.error("prediction log buffer full (%d rows): dropping %d rows", self._rows, len(batch))
            if self.metrics:
                self.metrics.log_dropped.inc(len(batch))
            return
        self._buf.append(batch)
        self._rows += len(batch)
        if self.metrics:
            self.metrics.log_pending.set(self._rows)

    def _write(self) -> bool:
        import pandas as pd

        if not self._buf and self._pending is None:
            return True
        try:
            parts = [] if self._pending is None else [self._pending]
            if self._buf:
                parts.append(to_frame(self._buf, self.spec, self.model_name, self.builder))
            df = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        except Exception:
            log.exception("prediction log: could not build the table (%d rows kept)", self._rows)
            if self.metrics:
                self.metrics.log_errors.inc()
            return False
        self._buf, self._pending = [], df
        rows = len(df)
        try:
            days = df[self.spec.timestamp].fillna(df["ts"]).dt.strftime("%Y-%m-%d")
            for day in sorted(days.unique()):
                part = df[(days == day).to_numpy()].reset_index(drop=True)  # by position: days is df's own column
                self._seq += 1
                batch_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{os.getpid()}-{self._seq:06d}-{uuid.uuid4().hex[:8]}"
                key = online_predictions_key(self.spec, date.fromisoformat(day), batch_id)
                self.written.append(self.store.put_parquet(key, part))
                # a written partition leaves the buffer at once: a retry never writes it twice
                keep = days != day
                self._pending, days = self._pending[keep], days[keep]
        except Exception:
            log.exception("prediction log write failed (%d rows kept for the next attempt)", len(self._pending))
            if self.metrics:
                self.metrics.log_errors.inc()
            self._rows = len(self._pending)
            return False
        self._pending, self._rows = None, 0
        if self.metrics:
            self.metrics.log_rows.inc(rows)
            self.metrics.log_pending.set(0)
        return True
