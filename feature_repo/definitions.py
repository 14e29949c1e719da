"""Feast definitions for the CLI, generated from the dataset spec (MLOPS_DATASET, default churn).

Entity `*`, source `*_source`, feature view `*_features_fv`, feature service `*_model_v1`: the
same objects `ml_training`'s prepare task applies, built by the same function.
"""

from include.mlops.config import get_settings
from include.mlops.features.build import feast_objects, source_path
from include.mlops.spec import load_spec
from include.mlops.storage import get_store

_settings = get_settings()
_spec = load_spec(_settings.dataset)
_store = get_store()
_objs = feast_objects(_spec, source_path(_store, _spec), _store.endpoint_url)

entity = _objs["entity"]
source = _objs["source"]
feature_view = _objs["view"]
feature_service = _objs["service"]
