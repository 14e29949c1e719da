"""Entity id -> raw feature row, read from Feast's online store for a batch of requests at once."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.config import Settings
    from include.mlops.spec import DatasetSpec


class FeatureStoreUnavailable(Exception):
    """The online store could not be read (503: the request itself was fine)."""


class FeatureLookup:
    """Entity id -> raw feature row from the online store; used only on the scorer thread
    (the SQLite online store's connection belongs to the thread that opened it)."""

    def __init__(self, settings: Settings, spec: DatasetSpec) -> None:
        self.settings, self.spec = settings, spec
        self._fs: Any = None
        self._service: Any = None

    def warm(self) -> None:
        self._store()

    def _store(self) -> tuple[Any, Any]:
        if self._fs is None:
            from include.mlops.features.build import repo_config

            cfg = repo_config(self.settings)  # first, so Feast is imported without typeguard
            from feast import FeatureStore

            # Feast's default ("sync") refreshes an expired registry cache inside the lookup that
            # finds it expired, stalling every request queued behind it; "thread" refreshes it on
            # a timer thread of its own, so a lookup never waits on the registry.
            cfg.registry.cache_mode = "thread"
            self._fs = FeatureStore(config=cfg, repo_path=str(self.settings.feast_repo))
            self._service = self._fs.get_feature_service(self.spec.feature_service_name)
        return self._fs, self._service

    def get(self, ids: list[Any]) -> dict[Any, list[Any] | None]:
        """Ids come validated in the spec's key type (an int, or a str for `entity.dtype: string`)."""
        try:
            fs, service = self._store()
            resp = fs.get_online_features(
                features=service, entity_rows=[{self.spec.entity_key: i} for i in ids]
            ).to_dict()
        except Exception as exc:
            self._fs = self._service = None  # reconnect next time
            raise FeatureStoreUnavailable(f"online store lookup failed: {type(exc).__name__}: {exc}") from exc
        out: dict[Any, list[Any] | None] = {}
        feats = self.spec.features
        for j, i in enumerate(ids):
            values = [resp[f.name][j] if f.name in resp else None for f in feats]
            if all(v is None for v in values):
                out[i] = None  # unknown entity
                continue
            out[i] = [
                (math.nan if v is None else float(v)) if f.is_numeric else v for f, v in zip(feats, values, strict=True)
            ]
        return out
