"""Prometheus metrics of the service, in a registry of its own (one per app instance).

Requests and their latency carry the `model_version` and `variant` that answered them, failed
ones too once they were routed (a model that raised, a timeout), so a canary's error rate and
latency can be read apart from the champion's (`include.mlops.delivery.live`). Requests that
failed before routing (bad input, no model yet) carry empty labels. Shadow scoring has its own
latency histogram and error counter per version: it answers no request."""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        # Importing feast sets PROMETHEUS_MULTIPROC_DIR (for its own feature server), which makes
        # prometheus_client keep values in mmap files of a temp dir, if feast came first. The
        # service is one process: keep the values in memory whatever was imported before.
        values.ValueClass = values.MutexValue
        r = self.registry = CollectorRegistry()
        p = "mlops_serving_"
        self.requests = Counter(
            f"{p}requests",
            "HTTP requests answered, by outcome, model version and variant",
            ["endpoint", "status", "model_version", "variant"],
            registry=r,
        )
        self.latency = Histogram(
            f"{p}request_latency_seconds",
            "Request latency in the service",
            ["endpoint", "model_version", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(f"{p}errors", "Requests that failed, by kind", ["endpoint", "kind"], registry=r)
        self.predictions = Counter(
            f"{p}predictions", "Records scored, by model version and variant", ["model_version", "variant"], registry=r
        )
        self._scoring_metrics(r, p)
        self.batch_rows = Histogram(
            f"{p}batch_rows",
            "Rows scored together in one micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=r,
        )
        self.model_load = Gauge(
            f"{p}model_load_seconds",
            "Seconds the last load (download, load, warm-up, smoke test) of a model version took",
            ["model_version"],
            registry=r,
        )
        self.model_loads = Counter(f"{p}model_loads", "Model loads by outcome", ["outcome"], registry=r)
        self.model_info = Gauge(
            f"{p}model_info", "1 for each model version serving, by role", ["model_version", "variant"], registry=r
        )
        self._serving: list[tuple[str, str]] = []
        self.swaps = Counter(f"{p}model_swaps", "Atomic switches of the serving models", registry=r)
        self.log_rows = Counter(f"{p}prediction_log_rows", "Rows written to the prediction log", registry=r)
        self.log_errors = Counter(f"{p}prediction_log_errors", "Failed prediction-log writes (retried)", registry=r)
        self.log_dropped = Counter(
            f"{p}prediction_log_dropped_rows", "Rows dropped because the log buffer was full", registry=r
        )
        self.log_pending = Gauge(f"{p}prediction_log_pending_rows", "Rows waiting to be written", registry=r)

    def _scoring_metrics(self, r: Any, p: str) -> None:
        """Model calls: answers per (version, variant), and the shadow's own figures per version."""
        from prometheus_client import Counter, Histogram

        self.scoring = Histogram(
            f"{p}scoring_seconds",
            "Seconds one model call took on a micro-batch of answers (the model's share of latency)",
            ["model_version", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # shadow scoring answers no request: its own figures, per version, for the shadow report
        self.shadow_latency = Histogram(
            f"{p}shadow_latency_seconds",
            "Seconds one shadow model call took (the same rows the champion scored)",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_errors = Counter(
            f"{p}shadow_errors", "Rows the shadow model failed to score", ["model_version"], registry=r
        )

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def set_serving(self, roles: dict[str, Any]) -> None:
        """Replace the model_info series with the current {variant: version} map."""
        import warnings

        with warnings.catch_warnings():  # the same variable makes remove() warn needlessly
            warnings.simplefilter("ignore", UserWarning)
            for labels in self._serving:
                self.model_info.remove(*labels)
        self._serving = [(str(v), k) for k, v in roles.items() if v is not None]
        for labels in self._serving:
            self.model_info.labels(*labels).set(1)
