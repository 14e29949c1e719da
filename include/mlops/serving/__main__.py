"""`python -m include.mlops.serving`: run the scoring service (settings: include.mlops.config.ServeConfig).

One uvicorn worker: throughput comes from micro-batching inside it, and every worker would
hold its own copy of each model. OpenMP is pinned to one thread unless set otherwise: on a
small machine, the model's thread pool fights the event loop and p99 explodes (STACK_NOTES).
"""

from __future__ import annotations

import logging
import os


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in the log
    from include.mlops.config import get_settings, quiet_telemetry

    quiet_telemetry()
    level = get_settings().log_level
    import uvicorn

    from include.mlops.config import ServeConfig
    from include.mlops.serving.app import create_app

    cfg = ServeConfig.from_env()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(cfg),
        host=cfg.host,
        port=cfg.port,
        access_log=cfg.access_log,
        log_level=level.lower(),
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
