"""The scoring service: FastAPI on uvicorn, serving whatever the registry's aliases point to.

Modules: `config` (environment), `validation` (request parsing and field-level checks),
`frames` (records -> the model's input frame, identical to `features.build_features`),
`routing` (which variant answers), `models` (loading, warming, atomic swaps), `batcher`
(micro-batching concurrent requests), `predlog` (the prediction log), `metrics`, `app`.
Run it with `python -m include.mlops.serving`. Nothing here is imported at package import time.
"""
