"""Micro-batching: concurrent requests are scored together, off the event loop.

The model call costs a few milliseconds whether it scores one row or sixty-four, so the
service's throughput comes from scoring concurrent requests in one call. Requests queue their
validated records; one scorer thread takes everything queued (up to `max_rows`), looks up the
entity features of the whole batch in one online-store call, builds one frame, calls each
model once, and resolves every request's future. A batch mixing champion and challenger
requests is scored in two parts, the champion's first: a slow or failing canary delays or
fails only the requests routed to it. While it scores, the event loop keeps
parsing and validating the next requests, which form the next batch. A lone request is scored
at once; only when others are in flight does a batch wait (up to `wait_ms`) for stragglers.
Shadow scoring runs after the answers are sent, and the prediction log is written by its own
thread: neither is on a request's critical path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops.serving.feature_lookup import FeatureStoreUnavailable
from include.mlops.serving.predlog import LogBatch
from include.mlops.serving.routing import CHALLENGER, SHADOW
from include.mlops.serving.validation import ValidationFailed, error

if TYPE_CHECKING:
    from include.mlops.serving.feature_lookup import FeatureLookup
    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.loading import LoadedModel
    from include.mlops.serving.metrics import Metrics
    from include.mlops.serving.predlog import PredictionLog
    from include.mlops.spec import DatasetSpec

log = logging.getLogger(__name__)


class ModelError(Exception):
    """The model raised on validated input (500: a bug or a broken model, not bad input).

    `failed`: the (model version, variant) pairs that raised, so the request is counted against
    the version that failed, not against every version its records were routed to."""

    def __init__(self, message: str, failed: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass(slots=True)
class Task:
    """One record to score: its raw features (None until looked up) and where it is routed."""

    entity: int | str | None  # in the spec's key type (entity.dtype)
    row: list[Any] | None
    loc: tuple[Any, ...]
    request_id: str
    variant: str
    model: LoadedModel
    shadow: LoadedModel | None = None
    event_ts: float | None = None  # the record's event time, when the caller sent it


@dataclass(slots=True)
class Job:
    """One HTTP request's records."""

    tasks: list[Task]
    ts: float
    log: bool = True
    future: Any = None


def _challenged(job: Job) -> bool:
    """Whether any record of the request is routed to the challenger (canary or A/B arm)."""
    return any(t.variant == CHALLENGER for t in job.tasks)


class Batcher:
    def __init__(
        self,
        spec: DatasetSpec,
        builder: FrameBuilder,
        lookup: FeatureLookup,
        predlog: PredictionLog | None,
        metrics: Metrics,
        *,
        max_rows: int = 64,
        wait_ms: float = 2.0,
        inline: bool = True,
    ) -> None:
        self.spec, self.builder, self.lookup, self.predlog, self.metrics = spec, builder, lookup, predlog, metrics
        self.max_rows, self.wait_s, self.inline = max_rows, wait_ms / 1000.0, inline
        self.arriving = 0  # requests being read and validated: a batch may wait for them
        self._pending: deque[Job] = deque()
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_jobs = 0
        self._background: set[Any] = set()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="scorer")

    async def start(self) -> None:
        self._event = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="batcher")

    async def stop(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pending and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._background:
            await asyncio.wait(self._background, timeout=max(0.1, deadline - loop.time()))
        await asyncio.to_thread(self.executor.shutdown, True)

    def run_on_scorer(self, fn: Any, *args: Any) -> Any:
        """Run something on the scorer thread (e.g. warming the online store connection)."""
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def submit(self, job: Job, timeout: float = 30.0) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        job.future = loop.create_future()
        self._pending.append(job)
        assert self._event is not None
        self._event.set()
        return await asyncio.wait_for(job.future, timeout)

    # -- the loop (event loop side) -------------------------------------------------------------
    def _pending_rows(self) -> int:
        return sum(len(j.tasks) for j in self._pending)

    async def _loop(self) -> None:
        assert self._event is not None
        while True:
            while not self._pending:
                self._event.clear()
                await self._event.wait()
            if self.wait_s > 0 and (self.arriving > 0 or self._last_jobs > 1) and self._pending_rows() < self.max_rows:
                await asyncio.sleep(self.wait_s)
            jobs: list[Job] = []
            rows = 0
            while self._pending and (not jobs or rows + len(self._pending[0].tasks) <= self.max_rows):
                job = self._pending.popleft()
                jobs.append(job)
                rows += len(job.tasks)
            self._last_jobs = len(jobs)
            # The champion's answers never wait on the challenger: a batch that mixes them scores
            # and answers the requests without a challenger record first. A slow or failing canary
            # costs its own requests only, and the latency measured for each side is its own.
            plain = [j for j in jobs if not _challenged(j)]
            if plain and len(plain) < len(jobs):
                await self._run(plain)
                await self._run([j for j in jobs if _challenged(j)])
            else:
                await self._run(jobs)

    async def _run(self, jobs: list[Job]) -> None:
        """Score some jobs, resolve their futures, queue their shadow scoring."""
        loop = asyncio.get_running_loop()
        rows = sum(len(j.tasks) for j in jobs)
        shadow = None
        # A lone request with its features in hand, nothing else arriving or queued: score it
        # right here. Handing it to the scorer thread and back costs two thread wake-ups, which
        # on a busy machine are the tail of single-request latency. Lookups stay on the scorer
        # thread (the online store's connection lives there), and so does a challenger's record:
        # a slow canary must not hold the event loop that every other request needs.
        inline = (
            self.inline
            and rows <= 8
            and self.arriving == 0
            and not self._pending
            and all(t.row is not None and t.variant != CHALLENGER for j in jobs for t in j.tasks)
        )
        try:
            if inline:
                results, shadow = self._score(jobs)
            else:
                results, shadow = await loop.run_in_executor(self.executor, self._score, jobs)
        except Exception as exc:  # a bug in scoring must fail these requests, not the loop
            log.exception("scoring a batch of %d rows failed", rows)
            results = [ModelError(f"{type(exc).__name__}: {exc}")] * len(jobs)
        for job, res in zip(jobs, results, strict=True):
            if job.future.done():
                continue
            if isinstance(res, BaseException):
                job.future.set_exception(res)
            else:
                job.future.set_result(res)
        if shadow is not None:
            fut = loop.run_in_executor(self.executor, self._score_shadow, shadow)
            self._background.add(fut)
            fut.add_done_callback(self._background.discard)

    # -- scoring (scorer thread) ----------------------------------------------------------------
    def _score(self, jobs: list[Job]) -> tuple[list[Any], Any]:
        key = self.spec.entity_key
        ids = sorted({t.entity for j in jobs for t in j.tasks if t.row is None})
        found: dict[Any, list[Any] | None] = {}
        lookup_error: Exception | None = None
        if ids:
            try:
                found = self.lookup.get(ids)
            except FeatureStoreUnavailable as exc:
                lookup_error = exc
        results: list[Any] = [None] * len(jobs)
        rows: list[list[Any]] = []
        owners: list[tuple[int, Task]] = []
        for ji, job in enumerate(jobs):
            need = [t for t in job.tasks if t.row is None]
            if need and lookup_error is not None:
                results[ji] = lookup_error
                continue
            errs = [
                error(
                    (*t.loc, key),
                    f"unknown {key} {t.entity!r}: no features in the online store",
                    "value_error.unknown_entity",
                )
                for t in need
                if found.get(t.entity) is None
            ]
            if errs:
                results[ji] = ValidationFailed(errs)
                continue
            for t in job.tasks:
                if t.row is None:
                    t.row = found[t.entity]
                rows.append(t.row)
                owners.append((ji, t))
        if not rows:
            return results, None
        frame = self.builder.frame(rows)
        n = len(rows)
        self.metrics.batch_rows.observe(n)
        pred, score, proba = self._score_groups(frame, owners, results)
        answered: list[int] = []
        for i, (ji, t) in enumerate(owners):
            res = results[ji]
            if isinstance(res, BaseException):
                continue
            if res is None:
                res = results[ji] = []
            res.append((pred[i], score[i], proba[i], t.model, t.variant))
            answered.append(i)
        logged = [i for i in answered if jobs[owners[i][0]].log]
        if self.predlog is not None and logged:
            self._log(rows, logged, owners, jobs, pred, score, None)
        shadowed = [i for i in answered if owners[i][1].shadow is not None]  # synthetic traffic too: checks watch it
        return results, ((frame, rows, shadowed, owners, jobs) if shadowed else None)

    def _score_groups(
        self, frame: Any, owners: list[tuple[int, Task]], results: list[Any]
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """One model call per (model, variant) for the batch's rows; (predictions, scores,
        probabilities) by row. A call that raises is retried request by request, so one bad
        request fails alone; a request that still fails gets a ModelError naming the version and
        variant, and no other model's requests are touched."""
        n = len(owners)
        out: tuple[list[Any], list[Any], list[Any]] = ([None] * n, [None] * n, [None] * n)
        groups: dict[tuple[int, str], tuple[LoadedModel, str, list[int]]] = {}
        for i, (_, t) in enumerate(owners):
            groups.setdefault((id(t.model), t.variant), (t.model, t.variant, []))[2].append(i)
        for model, variant, idx in groups.values():
            if self._score_one(model, variant, frame, idx, out):
                continue
            by_job: dict[int, list[int]] = {}
            for i in idx:
                by_job.setdefault(owners[i][0], []).append(i)
            for ji, jidx in by_job.items():
                if len(by_job) > 1 and self._score_one(model, variant, frame, jidx, out, quiet=True):
                    continue
                prior = results[ji].failed if isinstance(results[ji], ModelError) else ()
                results[ji] = ModelError(
                    f"v{model.version} could not score the request",
                    tuple(dict.fromkeys((*prior, (model.version, variant)))),
                )
        return out

    def _score_one(
        self,
        model: LoadedModel,
        variant: str,
        frame: Any,
        idx: list[int],
        out: tuple[list[Any], ...],
        quiet: bool = False,
    ) -> bool:
        """Score rows `idx` of the frame with `model` into `out`; False if the model raised."""
        t0 = time.perf_counter()
        try:
            p, s, pr = model.score(frame if len(idx) == len(frame) else frame.iloc[idx])
        except Exception:
            if not quiet:
                log.exception("%s v%s failed on %d validated rows", model.name, model.version, len(idx))
            return False
        self.metrics.scoring.labels(model_version=model.version, variant=variant).observe(time.perf_counter() - t0)
        self.metrics.predictions.labels(model_version=model.version, variant=variant).inc(len(idx))
        pl, sl = p.tolist(), s.tolist()  # class values may be text: plain Python values, not .item()
        prl = pr.tolist() if pr is not None else None
        for k, i in enumerate(idx):
            out[0][i], out[1][i] = pl[k], sl[k]
            if prl is not None:
                out[2][i] = prl[k]
        return True

    def _log(
        self,
        rows: list[list[Any]],
        idx: list[int],
        owners: list[tuple[int, Task]],
        jobs: list[Job],
        pred: list[Any],
        score: list[Any],
        shadow: bool | None,
    ) -> None:
        assert self.predlog is not None
        ts = [owners[i][1] for i in idx]
        self.predlog.submit(
            LogBatch(
                rows=[rows[i] for i in idx],
                request_id=[t.request_id for t in ts],
                ts=[jobs[owners[i][0]].ts for i in idx],
                entity=[t.entity for t in ts],
                event_ts=[t.event_ts for t in ts],
                prediction=[pred[i] for i in idx],
                score=[score[i] for i in idx],
                model_version=[(t.shadow.version if shadow else t.model.version) for t in ts],  # type: ignore[union-attr]
                variant=[SHADOW if shadow else t.variant for t in ts],
            )
        )

    def _score_shadow(self, work: tuple[Any, list[list[Any]], list[int], list[tuple[int, Task]], list[Job]]) -> None:
        frame, rows, idx, owners, jobs = work
        groups: dict[int, tuple[LoadedModel, list[int]]] = {}
        for i in idx:
            m = owners[i][1].shadow
            assert m is not None
            groups.setdefault(id(m), (m, []))[1].append(i)
        n = len(frame)
        pred: list[Any] = [None] * n
        score: list[Any] = [None] * n
        for model, gidx in groups.values():
            t0 = time.perf_counter()
            try:
                p, s, _ = model.score(frame if len(gidx) == n else frame.iloc[gidx])
            except Exception:
                log.exception("shadow v%s failed on %d rows (answers were not affected)", model.version, len(gidx))
                self.metrics.shadow_errors.labels(model_version=model.version).inc(len(gidx))
                continue
            self.metrics.shadow_latency.labels(model_version=model.version).observe(time.perf_counter() - t0)
            self.metrics.predictions.labels(model_version=model.version, variant=SHADOW).inc(len(gidx))
            pl, sl = p.tolist(), s.tolist()  # class values may be text: plain Python values, not .item()
            for k, i in enumerate(gidx):
                pred[i], score[i] = pl[k], sl[k]
            keep = [i for i in gidx if jobs[owners[i][0]].log]
            if self.predlog is not None and keep:
                self._log(rows, keep, owners, jobs, pred, score, True)
