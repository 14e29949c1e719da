"""Labels of any kind, on real data that ships with scikit-learn (no mocks, no download).

Breast cancer with text labels ("yes"/"no", either one the positive class), the same with
boolean labels, text "0"/"1" against a spec's `positive_class: 1`, wine as a 3-class label;
the whole evaluate step on a real MLflow; and the one-score-function rule: evaluation, batch
scoring and the service's model all give `scores.positive_scores` for the same rows.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from include.mlops.constants import BINARY_METRICS, MULTICLASS_METRICS
from include.mlops.evaluation import gate as G
from include.mlops.evaluation import metrics as E
from include.mlops.features.build import model_features
from include.mlops.results import TrainResult
from include.mlops.scores import (
    DECISION_THRESHOLD,
    LabelError,
    class_scores,
    positive_class,
    positive_scores,
    score_model,
)
from include.mlops.spec import parse_spec
from include.mlops.training import fit as T

DAY0 = date(2026, 10, 1)
DAYS = 5
WINE_NAMES = ["barolo", "grignolino", "barbera"]


def _frame(data, target, seed: int = 0) -> pd.DataFrame:
    """Rows shuffled once, spread over DAYS event days in order, with an id and a category."""
    X = pd.DataFrame(data, columns=[f"f{i}" for i in range(data.shape[1])])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    df = X.iloc[order].reset_index(drop=True)
    df["label"] = np.asarray(target, dtype=object)[order]
    n = len(df)
    day = (np.arange(n) * DAYS) // n
    start = pd.Timestamp(datetime(DAY0.year, DAY0.month, DAY0.day, tzinfo=UTC))
    df["event_timestamp"] = start + pd.to_timedelta(day, unit="D") + pd.to_timedelta(np.arange(n) % 1000, unit="s")
    df["item_id"] = np.arange(n, dtype="int64")
    df["cohort"] = np.where(rng.random(n) < 0.5, "a", "b")
    return df


def _raw_spec(name: str, df: pd.DataFrame, label: dict, **extra) -> dict:
    feats = {c: {"type": "float"} for c in df.columns if c.startswith("f")}
    feats["cohort"] = {"type": "category", "values": ["a", "b"]}
    raw = {
        "name": name,
        "task": "classification",
        "entity": {"name": "item", "key": "item_id"},
        "label": {"name": "label", "feed": "inline", **label},
        "features": feats,
        "training": {"window_days": DAYS, "holdout_days": 1, "min_rows": 50},
        "model": {"family": "logistic_regression", "search": {"n_iter": 1, "cv_folds": 2, "space": {}}},
        "gate": {"slices": ["cohort"], "slice_min_rows": 10},
    }
    raw.update(extra)
    return raw


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    # sklearn's target is 0 for malignant: the label says whether the tumour is malignant
    return _frame(d.data, np.where(d.target == 0, "yes", "no"))


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    d = load_wine()
    return _frame(d.data, np.asarray(WINE_NAMES, dtype=object)[d.target], seed=1)


def _cancer_spec(df, positive, **label):
    return parse_spec(_raw_spec("cancer", df, {"positive_class": positive, **label}))


def _wine_spec(df, **extra):
    return parse_spec(
        _raw_spec(
            "wine",
            df,
            {"classes": WINE_NAMES},
            gate={"minimums": {"f1_macro": 0.8}, "slices": ["cohort"], "slice_min_rows": 10},
            **extra,
        )
    )


def _fit(spec, df):
    train, hold = T.time_split(df, spec, spec.training.holdout_days)
    model, result = T.fit(spec, train)
    return model, result, hold


# -- binary: text labels, either class positive -------------------------------------------------------
def test_text_labels_yes_or_no_positive_give_complementary_scores_and_sklearn_metrics(cancer):
    out = {}
    for positive in ("yes", "no"):
        spec = _cancer_spec(cancer, positive)
        model, result, hold = _fit(spec, cancer)
        assert result.scoring == "roc_auc" and np.isfinite(result.best_score)
        scored = score_model(model, hold[model_features(spec)], spec)
        out[positive] = (spec, model, hold, scored, E.metrics(hold["label"], scored, spec))

    (_, m_yes, hold, s_yes, met_yes), (spec_no, m_no, _, s_no, met_no) = out["yes"], out["no"]
    assert list(m_yes.classes_) == list(m_no.classes_) == ["no", "yes"]
    np.testing.assert_allclose(s_yes.score + s_no.score, 1.0)  # the same model, the other column
    assert set(s_yes.prediction) <= {"yes", "no"}  # class values, not 0/1
    y = hold["label"].to_numpy()
    for positive, scored, met in (("yes", s_yes, met_yes), ("no", s_no, met_no)):
        proba = m_yes.predict_proba(hold[model_features(spec_no)])
        p = proba[:, list(m_yes.classes_).index(positive)]
        np.testing.assert_allclose(scored.score, p)
        pred = np.where(p >= DECISION_THRESHOLD, positive, "yes" if positive == "no" else "no")
        assert (scored.prediction == pred).all()
        expected = {
            "roc_auc": skm.roc_auc_score(y == positive, p),
            "average_precision": skm.average_precision_score(y == positive, p),
            "f1": skm.f1_score(y, pred, pos_label=positive),
            "precision": skm.precision_score(y, pred, pos_label=positive),
            "recall": skm.recall_score(y, pred, pos_label=positive),
            "accuracy": skm.accuracy_score(y, pred),
            "log_loss": skm.log_loss(y, proba, labels=m_yes.classes_),
        }
        assert set(met) == set(BINARY_METRICS)
        for k, v in expected.items():
            assert met[k] == pytest.approx(v, rel=1e-6), k  # log_loss: probabilities clipped at 1e-7
    # symmetric metrics agree across the two choices; the class-specific ones do not
    assert met_yes["roc_auc"] == pytest.approx(met_no["roc_auc"])
    assert met_yes["log_loss"] == pytest.approx(met_no["log_loss"], rel=1e-6)
    assert met_yes["f1"] != pytest.approx(met_no["f1"])
    slices = E.slice_metrics(hold, s_no, spec_no)
    assert set(slices) == {"cohort=a", "cohort=b"}
    part = hold["cohort"].to_numpy() == "a"
    assert slices["cohort=a"]["roc_auc"] == pytest.approx(skm.roc_auc_score(y[part] == "no", s_no.score[part]))
    assert G.gate(spec_no, met_no, slices, 0).passed


def test_boolean_labels_default_to_true(cancer):
    df = cancer.assign(label=cancer["label"] == "yes")
    spec = parse_spec(_raw_spec("cancer", df, {}))
    model, _, hold = _fit(spec, df)
    assert positive_class(model.classes_, spec) is True
    scored = score_model(model, hold[model_features(spec)], spec)
    p = model.predict_proba(hold[model_features(spec)])[:, 1]
    np.testing.assert_allclose(scored.score, p)
    assert scored.prediction.dtype == bool
    y = hold["label"].to_numpy(dtype=bool)
    met = E.metrics(hold["label"], scored, spec)
    assert met["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert met["f1"] == pytest.approx(skm.f1_score(y, p >= DECISION_THRESHOLD))


def test_positive_class_as_number_resolves_against_text_labels(cancer):
    """CSV labels read as text "1"/"0" with `positive_class: 1` in the spec."""
    df = cancer.assign(label=np.where(cancer["label"] == "yes", "1", "0"))
    spec = _cancer_spec(df, 1)
    model, _, hold = _fit(spec, df)
    assert positive_class(model.classes_, spec) == "1"
    p = model.predict_proba(hold[model_features(spec)])[:, list(model.classes_).index("1")]
    np.testing.assert_allclose(
        positive_scores(model.predict_proba(hold[model_features(spec)]), model.classes_, spec), p
    )
    assert E.metrics(hold["label"], score_model(model, hold[model_features(spec)], spec), spec)[
        "roc_auc"
    ] == pytest.approx(skm.roc_auc_score(hold["label"] == "1", p))


def test_integer_labels_keep_todays_scores(cancer):
    df = cancer.assign(label=(cancer["label"] == "yes").astype("int64"))
    spec = parse_spec(_raw_spec("cancer", df, {}))
    model, _, hold = _fit(spec, df)
    X = hold[model_features(spec)]
    scored = score_model(model, X, spec)
    np.testing.assert_allclose(scored.score, model.predict_proba(X)[:, 1])
    assert scored.prediction.dtype == np.int64
    assert (scored.prediction == (model.predict_proba(X)[:, 1] >= 0.5)).all()


def test_a_positive_class_that_is_not_a_class_is_a_clear_error(cancer):
    spec = _cancer_spec(cancer, "maybe")
    train, _ = T.time_split(cancer, spec, 1)
    with pytest.raises(T.TrainingDataError) as err:
        T.fit(spec, train)
    msg = str(err.value)
    assert "label.positive_class 'maybe' matches none of the classes" in msg and "['no', 'yes']" in msg
    unset = parse_spec(_raw_spec("cancer", cancer, {}))
    with pytest.raises(T.TrainingDataError, match=r"label.positive_class is not set .* \['no', 'yes'\]"):
        T.fit(unset, train)
    with pytest.raises(LabelError, match="matches none of the classes"):
        positive_scores(np.full((2, 2), 0.5), ["no", "yes"], spec)


# -- multiclass ---------------------------------------------------------------------------------------
def test_more_than_two_classes_need_label_classes(wine):
    spec = parse_spec(_raw_spec("wine", wine, {}))
    train, _ = T.time_split(wine, spec, 1)
    with pytest.raises(T.TrainingDataError, match=r"has 3 classes .* list them under label.classes"):
        T.fit(spec, train)
    listed = parse_spec(_raw_spec("wine", wine, {"classes": ["barolo", "grignolino", "nebbiolo"]}))
    with pytest.raises(T.TrainingDataError, match=r"\['barbera'\] that label.classes .* does not list"):
        T.fit(listed, train)


def test_wine_trains_evaluates_and_gates_on_f1_macro(wine):
    spec = _wine_spec(wine)
    assert spec.is_multiclass and spec.primary_metric == "f1_macro"
    model, result, hold = _fit(spec, wine)
    assert result.scoring == "f1_macro" and 0.5 < result.best_score <= 1.0
    X, y = hold[model_features(spec)], hold["label"].to_numpy()
    scored = score_model(model, X, spec)
    proba = model.predict_proba(X)
    classes = list(model.classes_)
    assert scored.classes == classes and scored.proba.shape == (len(hold), 3)
    assert (scored.prediction == model.predict(X)).all()
    np.testing.assert_allclose(scored.score, proba.max(axis=1))
    met = E.metrics(y, scored, spec)
    assert set(met) == set(MULTICLASS_METRICS)
    assert met["f1_macro"] == pytest.approx(skm.f1_score(y, model.predict(X), average="macro"))
    assert met["f1_weighted"] == pytest.approx(skm.f1_score(y, model.predict(X), average="weighted"))
    assert met["accuracy"] == pytest.approx(skm.accuracy_score(y, model.predict(X)))
    assert met["log_loss"] == pytest.approx(skm.log_loss(y, proba, labels=classes))
    assert met["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    slices = E.slice_metrics(hold, scored, spec)
    assert set(slices) == {"cohort=a", "cohort=b"}
    decision = G.gate(spec, met, slices, 0)
    assert decision.passed, decision.reasons
    better = {**met, "f1_macro": met["f1_macro"] + 0.1}
    worse = G.gate(spec, met, slices, 0, better, {})
    assert not worse.passed and "regression of f1_macro" in worse.reasons[0]
    low = G.gate(parse_spec({**spec.to_dict(), "gate": {"minimums": {"f1_macro": 1.01}}}), met, slices, 0)
    assert not low.passed and "minimum f1_macro" in low.reasons[0]
    # the prediction log keeps the class and its probability: label-only metrics still agree
    logged = E.metrics(y, type(scored)(scored.prediction, scored.score, None, classes), spec)
    assert logged["f1_macro"] == pytest.approx(met["f1_macro"]) and np.isnan(logged["log_loss"])


def test_multiclass_metrics_survive_a_class_the_model_never_saw(wine):
    spec = _wine_spec(wine)
    model, _, _ = _fit(spec, wine[wine["label"] != "barbera"])
    assert list(model.classes_) == ["barolo", "grignolino"]
    _, hold = T.time_split(wine, spec, 1)
    assert "barbera" in set(hold["label"])
    scored = score_model(model, hold[model_features(spec)], spec)
    met = E.metrics(hold["label"], scored, spec)
    assert met["accuracy"] == pytest.approx(skm.accuracy_score(hold["label"], scored.prediction))
    # a class the model never saw has probability 0: the loss is large but defined
    sorted_proba = np.hstack([np.zeros((len(hold), 1)), scored.proba])  # barbera, barolo, grignolino
    expected = skm.log_loss(hold["label"], sorted_proba, labels=["barbera", "barolo", "grignolino"])
    assert met["log_loss"] == pytest.approx(expected)


def test_multiclass_roc_auc_of_a_model_and_rows_with_two_classes_only(wine):
    """A CV fold of a multiclass task where the model and the rows hold two classes: ROC AUC
    (one-vs-rest) is the binary AUC, not an error (sklearn reads two columns as binary)."""
    from include.mlops.scores import Scored

    y = np.array(["a", "b", "a", "b", "b", "a"], dtype=object)
    p_b = np.array([0.2, 0.7, 0.4, 0.9, 0.3, 0.1])
    pred = np.where(p_b >= 0.5, "b", "a")
    scored = Scored(pred, np.maximum(p_b, 1 - p_b), proba=np.c_[1 - p_b, p_b], classes=["a", "b"])
    met = E.metrics(y, scored, _wine_spec(wine))
    assert met["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y == "b", p_b))
    assert 0 < met["roc_auc_ovr"] < 1


# -- the whole evaluate step, and one score function everywhere ---------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from tests.conftest import use_home

    path = tmp_path_factory.mktemp("labels")
    with pytest.MonkeyPatch.context() as mp:
        use_home(mp, path)
        from include.mlops.storage import ObjectStore, ensure_bucket

        ensure_bucket(ObjectStore(f"file://{path / 'store'}"))
        yield path


def _spec_file(home: Path, raw: dict) -> tuple[str, object]:
    """Install `raw` in the home's spec directory; returns (its name, the spec)."""
    from include.mlops.spec import load_spec

    path = home / "specs" / f"{raw['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return raw["name"], load_spec(raw["name"])


def _train_and_log(home: Path, spec_name: str, spec, df: pd.DataFrame) -> tuple[TrainResult, Any]:
    """What pipeline.train hands to evaluate, without Feast (a fitted model logged in a run), and the model."""
    import mlflow

    from include.mlops.config import get_settings
    from include.mlops.registry import ensure_experiment, setup_mlflow
    from include.mlops.storage import ObjectStore
    from include.mlops.training import tracking as P

    settings = get_settings()
    client = setup_mlflow(settings)
    store = ObjectStore(settings.store_uri)
    model, _, hold = _fit(spec, df)
    train, _ = T.time_split(df, spec, spec.training.holdout_days)
    holdout_uri = store.put_parquet(f"training/{spec.name}/holdout.parquet", hold)
    with mlflow.start_run(experiment_id=ensure_experiment(client, spec.name, settings)) as run:
        info = P.log_model(model, spec, train[model_features(spec)].head(5))
    rows = {"train": len(train), "holdout": len(hold)}
    tr = TrainResult(
        run_id=run.info.run_id, experiment_id=run.info.experiment_id, model_uri=info.model_uri, train_uri="",
        holdout_uri=holdout_uri, data_hash="", rows=rows, reused=False,
    )  # fmt: skip
    return tr, model


@pytest.mark.parametrize("which", ["cancer", "wine"])
def test_evaluate_step_on_mlflow(home, cancer, wine, which):
    from mlflow import MlflowClient

    from include.mlops import pipeline as P

    if which == "cancer":
        raw = _raw_spec("cancer", cancer, {"positive_class": "no"})
        df = cancer
    else:
        raw = _raw_spec(
            "wine",
            wine,
            {"classes": WINE_NAMES},
            gate={"minimums": {"f1_macro": 0.8}, "slices": ["cohort"], "slice_min_rows": 10},
        )
        df = wine
    spec_name, spec = _spec_file(home, raw)
    tr, model = _train_and_log(home, spec_name, spec, df)
    out = P.evaluate(tr, spec_name)
    assert out.passed, out.reasons
    assert out.nan_predictions == 0
    client = MlflowClient()
    run = client.get_run(tr.run_id)
    primary = spec.primary_metric
    assert run.data.metrics[f"holdout_{primary}"] == pytest.approx(out.metrics[primary])
    plots = {f.path for f in client.list_artifacts(tr.run_id, "plots")}
    assert "plots/confusion_matrix.png" in plots
    assert ("plots/roc_curve.png" in plots) == (which == "cancer")
    # the logged pyfunc answers class probabilities, one column per class
    import mlflow.pyfunc

    hold = pd.read_parquet(tr.holdout_uri.removeprefix("file://"))
    answer = np.asarray(mlflow.pyfunc.load_model(tr.model_uri).predict(hold[model_features(spec)].head(3)))
    assert answer.shape == (3, len(model.classes_))


def test_batch_scoring_and_the_service_agree_with_positive_scores(home, cancer, wine):
    from include.mlops.config import ServeConfig, get_settings
    from include.mlops.layout import staging_key
    from include.mlops.registry import setup_mlflow
    from include.mlops.serving import batch
    from include.mlops.serving.frames import FrameBuilder
    from include.mlops.serving.loading import smoke_test
    from include.mlops.serving.metrics import Metrics
    from include.mlops.serving.models import ModelManager
    from include.mlops.serving.predlog import LogBatch, to_frame
    from include.mlops.storage import ObjectStore
    from tests.conftest import day_interval

    settings = get_settings()
    client = setup_mlflow(settings)
    store = ObjectStore(settings.store_uri)
    for which, df, label in (
        ("cancer", cancer, {"positive_class": "no"}),
        ("wine", wine, {"classes": WINE_NAMES}),
    ):
        spec_name, spec = _spec_file(home, _raw_spec(f"{which}_serve", df, label))
        tr, model = _train_and_log(home, spec_name, spec, df)
        client.create_registered_model(spec.model_name)
        version = str(client.create_model_version(spec.model_name, tr.model_uri, tr.run_id).version)
        client.set_registered_model_alias(spec.model_name, "champion", version)
        day = DAY0 + timedelta(days=DAYS - 1)
        events = df[df["event_timestamp"].dt.date == day].drop(columns="label").reset_index(drop=True)
        store.put_parquet(staging_key(spec, day), events)

        out = batch.score_batch(day_interval(day), spec_name)
        scored_rows = pd.read_parquet(out["uri"].removeprefix("file://"))
        X = events[model_features(spec)]
        proba = model.predict_proba(X)
        expected_pred, expected_score = class_scores(proba, model.classes_, spec)
        if not spec.is_multiclass:
            np.testing.assert_allclose(expected_score, positive_scores(proba, model.classes_, spec))
        np.testing.assert_allclose(scored_rows["score"], expected_score)
        assert scored_rows["prediction"].tolist() == expected_pred.tolist()
        for j, c in enumerate(model.classes_):
            np.testing.assert_allclose(scored_rows[f"probability_{c}"], proba[:, j])

        builder = FrameBuilder(spec)
        manager = ModelManager(spec, settings.tracking_uri, ServeConfig(), builder, Metrics())
        lm = manager.load(version)  # real download, signature check, warm-up and smoke test
        rows = [[r[f] for f in spec.feature_names] for r in events.to_dict("records")]
        pred, score, probs = lm.score(builder.frame(rows))
        np.testing.assert_allclose(score, expected_score)
        assert pred.tolist() == expected_pred.tolist()
        assert set(pred.tolist()) <= set(model.classes_)  # class values ("yes"/"no", cultivar names)
        np.testing.assert_allclose(probs, proba)
        smoke_test(lm, builder.frame(rows))
        log = to_frame(
            [
                LogBatch(
                    rows,
                    [f"r{i}" for i in range(len(rows))],
                    [0.0] * len(rows),
                    list(range(len(rows))),
                    pred.tolist(),
                    score.tolist(),
                    [version] * len(rows),
                    ["champion"] * len(rows),
                )
            ],
            spec,
            spec.model_name,
            builder,
        )
        assert log["prediction"].tolist() == expected_pred.tolist()


# -- monitoring: Evidently's pos_label and the multiclass definition ----------------------------------
@pytest.mark.parametrize("which", ["cancer", "wine"])
def test_monitoring_performance_for_text_and_multiclass_labels(cancer, wine, which):
    from include.mlops.monitoring.reading import PREDICTION, SCORE
    from include.mlops.monitoring.step import MonitoringConfig
    from include.mlops.monitoring.window import analyse

    if which == "cancer":
        df, spec = cancer, _cancer_spec(cancer, "no")
    else:
        df, spec = wine, _wine_spec(wine)
    model, _, hold = _fit(spec, df)
    train, _ = T.time_split(df, spec, 1)
    ref, cur = train.copy(), hold.copy()
    for f in (ref, cur):
        s = score_model(model, f[model_features(spec)], spec)
        f[SCORE], f[PREDICTION] = s.score, s.prediction
    a = analyse(ref, cur, cur, spec, MonitoringConfig.from_spec(spec), day="test")
    y = cur["label"].to_numpy()
    if which == "cancer":
        assert a.performance["roc_auc"] == pytest.approx(skm.roc_auc_score(y == "no", cur[SCORE]))
        assert a.target_drift["rate"] == pytest.approx(np.mean(y == "no"))
    else:
        assert a.performance["f1_macro"] == pytest.approx(skm.f1_score(y, cur[PREDICTION], average="macro"))
        assert a.performance["log_loss"] is None  # the log has no per-class probabilities
        assert set(a.target_drift["shares"]) == set(WINE_NAMES)
    evid = {
        m["config"]["type"].rsplit(":", 1)[-1]: m["value"]
        for m in a.snapshots["performance"].dict()["metrics"]
        if not isinstance(m.get("value"), dict)
    }
    assert evid["Accuracy"] == pytest.approx(skm.accuracy_score(y, cur[PREDICTION]))


# -- resolving the positive class ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("yaml_value", "classes", "index"),
    [
        ("yes", ["no", "yes"], 1),  # YAML 1.2: yes stays text
        ("'no'", ["no", "yes"], 0),
        ("1", ["0", "1"], 1),  # a number against text labels: compared as text
        ("0", [0, 1], 0),
        ("true", [False, True], 1),
        ("null", [0, 1], 1),  # the default: 1 ...
        ("null", [False, True], 1),  # ... or True
        ("null", ["0", "1"], 1),
    ],
)
def test_positive_class_resolution(tmp_path, cancer, yaml_value, classes, index):
    from include.mlops.scores import positive_index
    from include.mlops.spec import load_spec_file

    raw = _raw_spec("cancer", cancer, {})
    text = yaml.safe_dump(raw, sort_keys=False).replace("feed: inline", f"feed: inline\n  positive_class: {yaml_value}")
    (tmp_path / "cancer.yaml").write_text(text)
    spec = load_spec_file(tmp_path / "cancer.yaml")
    assert positive_index(np.asarray(classes), spec) == index
    proba = np.array([[0.2, 0.8], [0.7, 0.3]])
    np.testing.assert_allclose(positive_scores(proba, classes, spec), proba[:, index])
    pred, score = class_scores(proba, classes, spec)
    expected = [classes[index] if p >= DECISION_THRESHOLD else classes[1 - index] for p in proba[:, index]]
    assert pred.tolist() == expected and score.tolist() == proba[:, index].tolist()
