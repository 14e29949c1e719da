"""DAG params the platform's DAGs share. Light on purpose: DAG files import this at parse time."""

from __future__ import annotations

from airflow.sdk import Param

from include.mlops.constants import SPEC_NAME_PATTERN


def dataset_param(empty: str = "MLOPS_DATASET") -> Param:
    """The `dataset` param: a spec's name (never a path; the trigger form refuses one), or empty
    for `empty`."""
    return Param(
        None,
        type=["null", "string"],
        pattern=SPEC_NAME_PATTERN,
        description=f"Dataset spec name (installed in a spec directory); empty uses {empty}",
    )
