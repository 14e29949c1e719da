"""The model manager's decisions, with a fake registry and fake loads: what serves after each
alias move, that a failed load never replaces a working model, and what each strategy loads."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from include.mlops.config import ServeConfig
from include.mlops.serving.config import CANARY_SHARE_TAG, STRATEGY_TAG
from include.mlops.serving.frames import FrameBuilder
from include.mlops.serving.loading import LoadedModel
from include.mlops.serving.metrics import Metrics
from include.mlops.serving.models import ModelManager
from include.mlops.spec import load_spec


class FakeRegistry:
    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.version_tags: dict[str, dict[str, str]] = {}

    def get_registered_model(self, name):
        return SimpleNamespace(aliases=dict(self.aliases), tags=dict(self.tags))

    def get_model_version(self, name, version):
        return SimpleNamespace(tags=self.version_tags.get(version, {}), run_id="r")


@pytest.fixture
def manager(monkeypatch):
    spec = load_spec("churn")
    m = ModelManager(spec, "sqlite:///unused.db", ServeConfig(), FrameBuilder(spec, verify=False), Metrics())
    reg = FakeRegistry()
    m._client = reg
    loads: list[str] = []
    broken: set[str] = set()

    def fake_load(version):
        loads.append(version)
        if version in broken:
            raise RuntimeError(f"cannot load v{version}")
        return LoadedModel(
            spec.model_name, version, object(), [], [0, 1], 1, None, tags=reg.version_tags.get(version, {})
        )

    monkeypatch.setattr(m, "load", fake_load)
    return SimpleNamespace(m=m, reg=reg, loads=loads, broken=broken)


def test_follows_the_champion_and_switches_back_without_reloading(manager):
    m, reg = manager.m, manager.reg
    reg.aliases = {"champion": "1"}
    assert m.refresh().champion.version == "1"
    first = m.state
    reg.aliases = {"champion": "2", "previous": "1"}
    assert m.refresh().champion.version == "2" and m.state is not first
    reg.aliases = {"champion": "1", "previous": "2"}
    assert m.refresh().champion is first.champion  # kept in memory: the switch back is instant
    assert manager.loads == ["1", "2"]


def test_a_version_that_fails_to_load_never_serves(manager):
    m, reg = manager.m, manager.reg
    reg.aliases = {"champion": "1"}
    m.refresh()
    manager.broken.add("2")
    reg.aliases = {"champion": "2", "previous": "1"}
    assert m.refresh().champion.version == "1"
    assert "v2" in m.pending["champion"] and "cannot load" in m.pending["champion"]
    m.refresh()
    assert manager.loads.count("2") == 1  # not retried on every poll


def test_no_champion_means_not_ready(manager):
    manager.reg.aliases = {"challenger": "1"}
    assert manager.m.refresh() is None and manager.m.state is None


@pytest.mark.parametrize(
    ("strategy", "gate", "challenger"),
    [
        ("direct", "passed", None),
        ("canary", "passed", "2"),
        ("canary", "failed", None),
        ("ab_test", "passed", "2"),
        ("ab_test", "failed", None),
        ("shadow", "failed", "2"),
        ("blue_green", "passed", None),
    ],
)
def test_what_each_strategy_serves(manager, strategy, gate, challenger):
    m, reg = manager.m, manager.reg
    reg.aliases = {"champion": "1", "challenger": "2"}
    reg.tags = {STRATEGY_TAG: strategy, CANARY_SHARE_TAG: "0.25"}
    reg.version_tags = {"2": {"gate": gate}}
    st = m.refresh()
    assert st.strategy == strategy and st.champion.version == "1"
    assert (st.challenger.version if st.challenger else None) == challenger
    assert st.canary_share == 0.25
    if strategy == "blue_green":
        assert st.standby == ("2",)  # warm beside the champion, not serving


@pytest.mark.parametrize(
    ("strategy", "tag", "share"),
    [
        ("canary", None, 0.1),  # no tag: the spec's first canary step
        ("ab_test", None, 0.4),  # no tag: the spec's A/B share
        ("ab_test", "0.3", 0.3),  # the deploy step's tag wins over the spec
        ("ab_test", "not a number", 0.4),  # a broken tag: the spec's share, not a crash
        ("ab_test", "nan", 0.4),
        ("canary", "7", 1.0),  # clipped to [0, 1]
        ("direct", None, 0.0),
    ],
)
def test_the_share_comes_from_the_tag_else_the_spec(manager, strategy, tag, share):
    m, reg = manager.m, manager.reg
    dep = m.spec.deployment
    m.spec = m.spec.model_copy(
        update={
            "deployment": dep.model_copy(
                update={
                    "canary": dep.canary.model_copy(update={"steps": [0.1, 0.5]}),
                    "ab_test": dep.ab_test.model_copy(update={"share": 0.4}),
                }
            )
        }
    )
    reg.aliases = {"champion": "1", "challenger": "2"}
    reg.tags = {STRATEGY_TAG: strategy, **({CANARY_SHARE_TAG: tag} if tag is not None else {})}
    st = m.refresh()
    assert (st.strategy, st.canary_share) == (strategy, share)


def test_the_environment_pins_the_strategy(manager):
    m, reg = manager.m, manager.reg
    m.cfg = ServeConfig(strategy="shadow", canary_share=0.5)
    reg.aliases = {"champion": "1", "challenger": "2"}
    reg.tags = {STRATEGY_TAG: "canary", CANARY_SHARE_TAG: "0.1"}
    st = m.refresh()
    assert (st.strategy, st.canary_share, st.challenger.version) == ("shadow", 0.5, "2")


@pytest.mark.parametrize("name", ["churn", "housing"])
def test_a_real_pipeline_scores_and_logs_through_the_service_path(name, tmp_path):
    """Classification (probabilities, 0.5 threshold) and regression, from rows to the log's table."""
    from datetime import date

    import numpy as np
    import pandas as pd

    from include.mlops.data.generator import generate_day
    from include.mlops.features.build import build_features, model_features
    from include.mlops.serving.loading import smoke_test
    from include.mlops.serving.predlog import LogBatch, log_columns, to_frame
    from include.mlops.serving.validation import RecordValidator
    from include.mlops.training.fit import build_pipeline

    spec = load_spec(name)
    events, labels = generate_day(spec, date(2026, 10, 1), rows=300)
    X = build_features(events, spec)[model_features(spec)]
    model = build_pipeline(spec, {"max_iter": 20} if name == "churn" else {"n_estimators": 10}).fit(
        X, labels[spec.label]
    )
    classes = [int(c) for c in model.classes_] if spec.is_classification else None
    lm = LoadedModel(
        spec.model_name, "7", model, model_features(spec), classes, 1 if classes else None, RecordValidator(spec)
    )
    builder = FrameBuilder(spec)
    rows = [[r[f] for f in spec.feature_names] for r in events.head(20).to_dict("records")]
    rows = [[float(v) if isinstance(v, (int, np.integer, float)) else v for v in row] for row in rows]
    frame = builder.frame(rows)
    pred, score, proba = lm.score(frame)
    smoke_test(lm, frame)
    if spec.is_classification:
        expected = model.predict_proba(X.head(20))[:, 1]
        np.testing.assert_allclose(score, expected)
        assert (pred == (expected >= 0.5).astype(int)).all() and proba.shape == (20, 2)
    else:
        np.testing.assert_allclose(score, model.predict(X.head(20)))
        assert proba is None
    table = to_frame(
        [
            LogBatch(
                rows,
                [f"r{i}" for i in range(20)],
                [0.0] * 20,
                [None] * 20,
                pred.tolist(),
                score.tolist(),
                ["7"] * 20,
                ["champion"] * 20,
            )
        ],
        spec,
        spec.model_name,
        builder,
    )
    assert list(table.columns) == log_columns(spec) and len(table) == 20
    # the log's feature columns are the frame the model scored, rebuilt from the raw rows
    pd.testing.assert_frame_equal(table[model_features(spec)], frame, check_dtype=True)
