"""The scoring service: FastAPI on uvicorn, serving whatever the registry's aliases point to.

Modules: `config` (environment), `validation` (request parsing and field-level checks),
`frames` (records -> the model's input frame, identical to `features.build.build_features`),
`routing` (which variant answers), `models` (following the registry, atomic swaps), `loading`
(one version: download, checks, warm-up, smoke test), `registry_health` (read deadlines, /ready's
registry block), `batcher` (micro-batching concurrent requests), `feature_lookup` (the online
store), `predlog` (the prediction log), `metrics`, `bodies` (request and response bodies),
`service` (what the routes share, one request's path), `app` (the routes); `batch` is
`ml_batch_scoring`'s scoring of a whole interval with the champion.
Run it with `python -m include.mlops.serving`. Nothing here is imported at package import time.
"""
