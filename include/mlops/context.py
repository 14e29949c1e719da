"""The one way a step, the service, the CLI or a benchmark gets what it works with.

`context(spec_name)` reads the settings from the environment (`config.get_settings`), loads the
dataset spec by name (the settings' `MLOPS_DATASET` when none is given) and opens the object
store the settings name; the MLflow client is made on first use, so a step that never talks to
the registry never opens the tracking database.

    ctx = context(spec_name)
    ctx.spec.primary_metric, ctx.store.get_bytes(key), ctx.client.get_registered_model(name)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.config import Settings
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore


@dataclass
class Context:
    spec: DatasetSpec
    settings: Settings
    store: ObjectStore
    _client: Any = field(default=None, repr=False)

    @cached_property
    def client(self) -> Any:
        """An MLflow client on the configured tracking server (made once, on first use)."""
        if self._client is not None:
            return self._client
        from include.mlops.registry import setup_mlflow

        return setup_mlflow(self.settings)

    @property
    def model_name(self) -> str:
        return self.spec.model_name


def open_store(settings: Settings) -> ObjectStore:
    """The object store the settings name (file:// or s3://)."""
    from include.mlops.storage import ObjectStore

    return ObjectStore(settings.store_uri, settings.s3_endpoint_url)


def context(spec_name: str | None = None, settings: Settings | None = None) -> Context:
    """Spec, settings and store for one dataset (the settings' dataset when `spec_name` is empty)."""
    from include.mlops.config import get_settings
    from include.mlops.spec import load_spec

    s = settings or get_settings()
    return Context(spec=load_spec(spec_name or s.dataset), settings=s, store=open_store(s))
