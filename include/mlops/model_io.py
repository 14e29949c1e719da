"""Model artifacts are data, never code: the one way the platform writes and reads a model.

The platform logs its scikit-learn Pipelines with MLflow's sklearn flavour in the skops format
(`training.tracking.log_model`), and that is all it loads. Before any model is deserialized (by the scoring
service, by `evaluate`), its MLmodel metadata must say flavour `sklearn` with
`serialization_format: skops`; a pickle or cloudpickle artifact, a pyfunc `python_model` or a
model that ships code (`code_paths`) is refused without being opened, because opening it runs
whatever it says. The skops file itself is then checked: every type it would construct outside
skops' own safe set must be in `TRUSTED_TYPES`, an allowlist written here, in code. The list an
artifact carries (`skops_trusted_types` in its MLmodel) is never read: a crafted artifact could
name `os.system` there. Only then is the file loaded, with `trusted=` the same allowlist.

`TRUSTED_TYPES` is what `training.fit.build_pipeline` makes for every family in
`constants.CLASSIFIERS` and `REGRESSORS` once fitted (tests/unit/test_model_io.py derives it
again and fails when a scikit-learn upgrade or a new family needs more). An operator who serves
their own estimator classes adds them with MLOPS_TRUSTED_TYPES_EXTRA (comma-separated fully
qualified names): configuration of the process, never of the artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from include.mlops.config import Settings, get_settings, variable

FLAVOR = "sklearn"
FORMAT = "skops"
EXTRA_TYPES_ENV = variable(Settings, "trusted_types_extra")  # MLOPS_TRUSTED_TYPES_EXTRA
ACCEPTED = (
    "MLflow's sklearn flavour with serialization_format 'skops' "
    "(mlflow.sklearn.log_model(..., serialization_format='skops'), as include/mlops/training/tracking.py log_model writes it)"
)

# The types the platform's fitted pipelines hold beyond skops' own trusted set (builtins, numpy
# scalars and arrays, scikit-learn estimators and losses): derived from build_pipeline for every
# model family, binary, multiclass and regression.
TRUSTED_TYPES: tuple[str, ...] = (
    "functools.partial",  # HistGradientBoosting's fitted preprocessing: partial(check_array, ...)
    "numpy.dtype",  # fitted estimators keep the input dtype
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.tree._tree.Tree",  # random forests
    "sklearn.utils.validation.check_array",  # the function inside that partial
)


class UnsafeModelError(Exception):
    """A model artifact in a format that can run code, or holding types outside the allowlist.
    Refused before anything in it is deserialized."""


def trusted_types() -> list[str]:
    """The allowlist in force: `TRUSTED_TYPES` plus the operator's MLOPS_TRUSTED_TYPES_EXTRA."""
    return sorted({*TRUSTED_TYPES, *get_settings().trusted_types_extra})


def _refuse(what: str, found: str, fix: str = "") -> UnsafeModelError:
    return UnsafeModelError(
        f"refused to load {what}: {found}. The platform loads only {ACCEPTED}; loading another format "
        f"can run code from the artifact, so nothing in it was deserialized.{' ' + fix if fix else ''}"
    )


def model_file(local_dir: str | Path, what: str) -> Path:
    """The skops file of a downloaded MLflow model, after its MLmodel metadata says it is the one
    format the platform accepts; `UnsafeModelError` (naming the format found) otherwise."""
    import yaml

    root = Path(local_dir).resolve()
    mlmodel = root / "MLmodel"
    if not mlmodel.is_file():
        raise _refuse(what, f"no MLmodel file in {root} (not an MLflow model directory)")
    try:
        meta = yaml.safe_load(mlmodel.read_text()) or {}
    except yaml.YAMLError as exc:
        raise _refuse(what, f"its MLmodel file is not valid YAML ({exc})") from None
    flavors = meta.get("flavors") if isinstance(meta, dict) else None
    if not isinstance(flavors, dict):
        raise _refuse(what, "its MLmodel file lists no flavors")
    pyfunc = flavors.get("python_function")
    sk = flavors.get(FLAVOR)
    if not isinstance(sk, dict):
        found = ", ".join(
            f"{k} (loader_module {v.get('loader_module')})"
            if isinstance(v, dict) and v.get("loader_module")
            else str(k)
            for k, v in flavors.items()
        )
        raise _refuse(what, f"it has no sklearn flavour (flavors: {found or 'none'})")
    fmt = sk.get("serialization_format") or "pickle"  # MLflow's reading when the key is absent
    if fmt != FORMAT:
        raise _refuse(
            what,
            f"its sklearn flavour is serialized as {fmt!r}",
            "Retrain it with the platform (the ml_training DAG), which writes skops.",
        )
    if isinstance(pyfunc, dict) and pyfunc.get("loader_module") not in (None, "mlflow.sklearn"):
        raise _refuse(what, f"its python_function flavour loads through {pyfunc.get('loader_module')!r}")
    for name, conf in (("sklearn", sk), ("python_function", pyfunc)):
        if isinstance(conf, dict) and conf.get("code"):
            raise _refuse(what, f"its {name} flavour ships code ({conf['code']!r}, logged with code_paths)")
    path = (root / str(sk.get("pickled_model") or "")).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise _refuse(what, f"its model file {sk.get('pickled_model')!r} is not a file inside the model directory")
    return path


def check_types(path: str | Path, what: str) -> None:
    """Every type the skops file would construct is trusted by skops or in the allowlist; the
    check reads the file's schema only (nothing is constructed or imported)."""
    import zipfile

    from skops.io import get_untrusted_types

    from include.mlops.training.tracking import quiet_deprecations

    try:
        with quiet_deprecations(f"checked the types in {what}"):
            found = get_untrusted_types(file=str(path))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise _refuse(what, f"its model file is not a readable skops archive ({type(exc).__name__}: {exc})") from None
    outside = sorted(set(found) - set(trusted_types()))
    if outside:
        raise UnsafeModelError(
            f"refused to load {what}: its skops file holds type(s) outside the platform's allowlist: "
            f"{', '.join(outside)}. Only the types of the platform's own pipelines load "
            f"(include/mlops/model_io.py TRUSTED_TYPES); an operator can add their own classes with "
            f"{EXTRA_TYPES_ENV}. The list the artifact carries is not read."
        )


def load_local(local_dir: str | Path, what: str) -> Any:
    """A downloaded MLflow model directory, checked (format, then types) and loaded with skops."""
    import skops.io

    from include.mlops.training.tracking import quiet_deprecations

    path = model_file(local_dir, what)
    check_types(path, what)
    with quiet_deprecations(f"loaded {what}"):
        return skops.io.load(str(path), trusted=trusted_types())


def load(model_uri: str, what: str | None = None) -> Any:
    """Download `model_uri` (models:/..., runs:/..., a path) and load it as `load_local` does."""
    import tempfile

    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        local = download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return load_local(local, what or _named(model_uri))


def _named(model_uri: str) -> str:
    """`models:/<name>@<alias>` as "<name> v<version> (<uri>)", so a refusal names the version."""
    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return model_uri
    from mlflow import MlflowClient

    name, alias = model_uri[len("models:/") :].split("@", 1)
    try:
        return f"{name} v{MlflowClient().get_model_version_by_alias(name, alias).version} ({model_uri})"
    except Exception:  # only a label: the download above already reached the registry
        return model_uri


def check_writable(model: Any) -> list[str]:
    """The allowlisted types `model` holds (what `log_model` passes as skops_trusted_types), or
    `UnsafeModelError` naming the types a platform pipeline must not contain."""
    import warnings

    import skops.io

    with warnings.catch_warnings():  # skops' module scan trips ~1,000 Airflow deprecation warnings
        warnings.simplefilter("ignore")
        found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    allowed = set(trusted_types())
    outside = sorted(set(found) - allowed)
    if outside:
        raise UnsafeModelError(
            f"the trained pipeline holds type(s) outside the platform's allowlist: {', '.join(outside)}. "
            f"The scoring service and evaluate would refuse to load it. If the pipeline is meant to "
            f"contain them, add them to TRUSTED_TYPES in include/mlops/model_io.py (after review: a "
            f"type there may be constructed from any artifact)."
        )
    return sorted(found)
