"""Features: pure pandas feature functions, and the Feast definitions generated from the spec.

The same `build_features` runs before the Feast offline source is written and inside the
scoring service for full feature rows, so training and serving cannot disagree.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.features.feast_import import without_typeguard

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.config import Settings
    from include.mlops.spec import DatasetSpec
    from include.mlops.storage import ObjectStore

CREATED = "created_timestamp"


class FeatureJoinError(Exception):
    """The point-in-time join lost or duplicated rows."""


def derived_features(spec: DatasetSpec) -> dict[str, str]:
    """Derived features declared in the spec as pandas expressions (name -> expression)."""
    return dict(spec.derived_features)


def model_features(spec: DatasetSpec) -> list[str]:
    """Every column the model sees, in a fixed order."""
    return [*spec.feature_names, *derived_features(spec)]


def build_features(df: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Cast raw columns to their spec types and add the derived features. Pure: no I/O."""
    import pandas as pd

    out = pd.DataFrame(index=df.index)
    for key in (spec.entity_key, spec.timestamp):
        if key in df.columns:
            out[key] = df[key]
    for f in spec.features:
        col = df[f.name]
        if f.is_numeric:
            out[f.name] = pd.to_numeric(col, errors="coerce").astype("float64")
        else:
            out[f.name] = col.astype("object").where(col.notna(), None)
    columns = {name: out[name].to_numpy() for name in spec.numeric_features}
    for name, expr in derived_expressions(spec):
        out[name] = columns[name] = derived_values(expr, columns, len(out))
    return out


def derived_expressions(spec: DatasetSpec) -> list[tuple[str, Any]]:
    """The spec's derived features, parsed by the restricted expression language (never eval'd)."""
    from include.mlops.features.expressions import parse_expression

    usable, out = set(spec.numeric_features), []
    for name, text in derived_features(spec).items():
        out.append((name, parse_expression(text, usable)))
        usable.add(name)
    return out


def derived_values(expr: Any, columns: dict[str, Any], n: int) -> Any:
    """One derived feature over whole columns: float64, infinities as missing, constants broadcast."""
    import numpy as np

    v = expr.evaluate(columns)
    if v.ndim == 0:
        v = np.full(n, float(v))
    return np.where(np.isinf(v), np.nan, v)


def entity_value(spec: DatasetSpec, value: Any) -> int | str:
    """One entity id in the spec's key type (`entity.dtype`): text for string keys, an int otherwise."""
    return str(value) if spec.entity_is_string else int(value)


def entity_column(spec: DatasetSpec, values: pd.Series) -> pd.Series:
    """The entity key column in the spec's type. String keys become Python `str` values in an
    object column (null stays null), what Feast's string join key and our online store expect;
    int64 keys are returned as they are (the benchmarked path)."""
    import pandas as pd

    if not spec.entity_is_string:
        return values
    if values.dtype == object and pd.api.types.is_string_dtype(values):
        return values  # already text
    return values.astype(str).astype(object).where(values.notna(), None)


def feature_source_prefix(spec: DatasetSpec) -> str:
    return f"features/{spec.name}"


def feature_key(spec: DatasetSpec, day: str) -> str:
    return f"{feature_source_prefix(spec)}/part-{day}.parquet"


def source_path(store: ObjectStore, spec: DatasetSpec) -> str:
    """Where Feast reads the offline features: a local folder, or an s3:// prefix."""
    if store.scheme == "file":
        return store.local_path(feature_source_prefix(spec))
    return store.uri(feature_source_prefix(spec))


def feast_objects(spec: DatasetSpec, path: str, s3_endpoint: str | None = None) -> dict[str, Any]:
    """Entity, source, feature view and feature service for a spec; names say their kind."""
    without_typeguard()
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64, String

    key_type, key_dtype = (ValueType.STRING, String) if spec.entity_is_string else (ValueType.INT64, Int64)
    entity = Entity(name=spec.entity_name, join_keys=[spec.entity_key], value_type=key_type)
    source = FileSource(
        name=f"{spec.name}_source",
        path=path,
        timestamp_field=spec.timestamp,
        created_timestamp_column=CREATED,
        s3_endpoint_override=s3_endpoint,
    )
    schema = [Field(name=spec.entity_key, dtype=key_dtype)]  # the entity column (Feast infers the same for int64)
    schema += [Field(name=n, dtype=Float64) for n in spec.numeric_features]
    schema += [Field(name=n, dtype=String) for n in spec.categorical_features]
    schema += [Field(name=n, dtype=Float64) for n in derived_features(spec)]
    ttl_days = spec.features_store.ttl_days
    view = FeatureView(
        name=spec.feature_view_name,
        entities=[entity],
        ttl=timedelta(days=ttl_days),
        schema=schema,
        source=source,
        online=True,
        tags={"dataset": spec.name},
    )
    service = FeatureService(name=spec.feature_service_name, features=[view], tags={"model": spec.model_name})
    return {"entity": entity, "source": source, "view": view, "service": service}


def repo_config(settings: Settings) -> Any:
    """Feast's RepoConfig from the environment: SQLite locally, PostgreSQL + Redis in production."""
    without_typeguard()
    from feast.infra.registry.sql import SqlRegistryConfig
    from feast.repo_config import RepoConfig

    from include.mlops.features import online_store

    kind = settings.feast_online_store
    if kind == "redis":
        online: dict[str, Any] = {"type": "redis", "connection_string": settings.feast_online_path}
    elif kind == "sqlite":  # ours: one row per entity (include/mlops/features/online_store.py)
        online = {"type": online_store.TYPE, "path": settings.feast_online_path}
    elif kind == "feast-sqlite":  # Feast's own SQLite layout, one row per feature
        online = {"type": "sqlite", "path": settings.feast_online_path}
    else:
        raise ValueError(f"FEAST_ONLINE_STORE={kind!r}: expected sqlite, feast-sqlite or redis")
    return RepoConfig(
        project="mlops",
        provider="local",
        registry=SqlRegistryConfig(registry_type="sql", path=settings.feast_registry_path, cache_ttl_seconds=60),
        online_store=online,
        offline_store={"type": "file"},
        # historical_features hands Feast UTC event times itself (in the zone object Feast's file
        # store expects); Feast's own coercion would turn them back into the slow kind
        coerce_tz_aware=False,
        entity_key_serialization_version=3,
        repo_path=str(settings.feast_repo),
    )


def get_feature_store(settings: Settings) -> Any:
    without_typeguard()
    from feast import FeatureStore

    settings.home.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings), repo_path=str(settings.feast_repo))


def apply_definitions(fs: Any, spec: DatasetSpec, store: ObjectStore) -> dict[str, Any]:
    objs = feast_objects(spec, source_path(store, spec), store.endpoint_url)
    fs.apply([objs["entity"], objs["source"], objs["view"], objs["service"]])
    return objs


def offline_frame(spec: DatasetSpec, features: pd.DataFrame, created: datetime) -> pd.DataFrame:
    """Features as Feast reads them: UTC event time plus a created timestamp (the interval end,
    not now(), so a re-run writes identical bytes); a string entity key as text."""
    import pandas as pd

    df = features.copy()
    if spec.entity_is_string and spec.entity_key in df.columns:
        df[spec.entity_key] = entity_column(spec, df[spec.entity_key])
    df[spec.timestamp] = pd.to_datetime(df[spec.timestamp], utc=True)
    ts = pd.Timestamp(created)
    df[CREATED] = ts.tz_convert("UTC") if ts.tzinfo else ts.tz_localize("UTC")
    return df


def write_offline(store: ObjectStore, spec: DatasetSpec, day: str, offline: pd.DataFrame) -> str:
    """The interval's features as one parquet object: overwritten on a re-run, never appended."""
    return store.put_parquet(feature_key(spec, day), offline)


def latest_rows(spec: DatasetSpec, features: pd.DataFrame) -> np.ndarray:
    """Positions of the newest row per entity (by event time, then created time; on a tie the
    later row), in event-time order. Positions, not a sorted copy: the frame is never duplicated."""
    import numpy as np
    import pandas as pd

    def ns(col: str) -> np.ndarray:
        return pd.to_datetime(features[col], utc=True).to_numpy(dtype="datetime64[ns]").view("int64")

    keys = [ns(spec.timestamp)]
    if CREATED in features.columns:
        keys.insert(0, ns(CREATED))  # lexsort: the last key is the primary one
    order = np.lexsort(keys)
    last = ~pd.Series(features[spec.entity_key].to_numpy()[order]).duplicated(keep="last").to_numpy()
    return order[last]


def materialize_frame(fs: Any, spec: DatasetSpec, features: pd.DataFrame, chunk_rows: int = 50_000) -> int:
    """Write the newest row per entity to the online store, in bounded chunks.

    Faster and leaner than `materialize`, which rereads the whole source for the range: we
    already hold exactly the interval's rows. Our SQLite store gets its own vectorised writer
    (`online_store.write_frame`, the same bytes as its `online_write_batch`); other stores (Redis
    in production) get Feast's `write_to_online_store` per chunk.
    """
    from include.mlops.features import online_store

    rows = latest_rows(spec, features)
    if online_store.supports(fs.config):
        return online_store.write_frame(fs, spec.feature_view_name, features, rows, chunk_rows)
    for i in range(0, len(rows), chunk_rows):
        fs.write_to_online_store(spec.feature_view_name, features.iloc[rows[i : i + chunk_rows]])
    return len(rows)


def historical_features(fs: Any, spec: DatasetSpec, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join for an entity frame; fails loudly if rows go missing or multiply.

    Event times go to Feast as UTC with pytz's zone: Feast 0.67's file store compares the zone
    with `pytz.UTC` and otherwise rebuilds each timestamp in Python, one row at a time (~5 s for
    1M entity rows here), while its own tz coercion (`coerce_tz_aware`, off in `repo_config`)
    produces `datetime.timezone.utc`, which fails that comparison.

    Strings travel through the join as Arrow strings, not Python objects: Feast's file store turns
    dask's `convert-string` off for the process (when `fs` is built), and dask then hashes every
    object column at each of the join's dozen `persist` calls by joining all its values into one
    Python string (3 of the 9 s at 1M rows). The option is on for this call only, and the output's
    string columns are turned back into the object columns (None for null) Feast gives otherwise.
    """
    import dask
    import pandas as pd
    import pytz

    cast = {
        col: pd.to_datetime(entity_df[col], utc=True).dt.tz_convert(pytz.UTC)
        for col in entity_df.columns
        if pd.api.types.is_datetime64_any_dtype(entity_df[col])
    }
    if spec.entity_is_string:  # Feast joins on equal types: string keys as text on both sides
        cast[spec.entity_key] = entity_column(spec, entity_df[spec.entity_key])
    service = fs.get_feature_service(spec.feature_service_name)
    with dask.config.set({"dataframe.convert-string": True}):
        out = fs.get_historical_features(entity_df=entity_df.assign(**cast), features=service).to_df()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.StringDtype):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    if len(out) != len(entity_df):
        raise FeatureJoinError(
            f"point-in-time join returned {len(out)} rows for {len(entity_df)} entity rows "
            f"({len(entity_df) - len(out)} lost): the feature source lacks rows within the TTL "
            f"for some labelled events"
        )
    missing = out[model_features(spec)].isna().all(axis=1).sum()
    if missing:
        raise FeatureJoinError(f"{missing} joined rows have no feature values at all")
    return out


def online_features(fs: Any, spec: DatasetSpec, entity_ids: list[Any]) -> pd.DataFrame:
    """The feature service's online values for some entities (ids in or convertible to the key's type)."""
    import pandas as pd

    resp = fs.get_online_features(
        features=fs.get_feature_service(spec.feature_service_name),
        entity_rows=[{spec.entity_key: entity_value(spec, e)} for e in entity_ids],
    ).to_dict()
    return pd.DataFrame(resp)
