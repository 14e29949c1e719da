"""Promotion as a ledger transaction, and rollback that names what it undoes (issues 15 and 17).

A real MLflow registry (sqlite) and a real object store (files) in a fresh home per test; model
versions point at an empty directory: nothing here loads a model. A crash is simulated by calling
the named steps of a move (`moves.begin_move`, `set_previous`, `set_champion`) up to a point
and stopping, then calling the entry point a retry would call (the SIGKILL versions live in
tests/integration/test_faults_kill.py).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.conftest import small_spec, use_home

PASSED = {"passed": True, "reasons": [], "metrics": {"roc_auc": 0.9}}
REJECTED = {"passed": False, "reasons": ["roc_auc 0.6 < 0.7"], "metrics": {"roc_auc": 0.6}}


pytestmark = pytest.mark.usefixtures("keep_mlflow_uris")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Any:
    """A home with the churn spec, its registered model and versions 1-3 (made once: a fresh
    MLflow database costs seconds on a busy machine; each test works on a copy)."""
    import mlflow

    from include.mlops.config import embedded_env
    from include.mlops.registry import mlflow_client

    home = tmp_path_factory.mktemp("txn") / "home"
    home.mkdir()
    small_spec(home)
    saved = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    client = mlflow_client(embedded_env(home)["MLFLOW_TRACKING_URI"])
    client.create_registered_model("churn_model")
    (home / "artifact").mkdir()
    for _ in range(3):
        client.create_model_version("churn_model", str(home / "artifact"), tags={"gate": "passed"})
    mlflow.set_tracking_uri(saved[0])
    mlflow.set_registry_uri(saved[1])
    return home


@pytest.fixture
def reg(template, tmp_path, monkeypatch) -> dict[str, Any]:
    """A copy of the template, the environment on it, v1 promoted (the first champion)."""
    import shutil

    from include.mlops import pipeline as P
    from include.mlops.context import context

    home = tmp_path / "home"
    shutil.copytree(template, home)
    use_home(monkeypatch, home)
    ctx = context("churn")
    spec, store, client = ctx.spec, ctx.store, ctx.client
    name = spec.model_name
    P.promote(registered(name, "1"), PASSED, "first", "ml_training", spec_name="churn")
    return {"client": client, "store": store, "model": name, "spec": spec}


def registered(model: str, version: str) -> Any:
    """What the register step hands on for `version` (the template's versions have no MLflow run)."""
    from include.mlops.results import RegisterResult

    return RegisterResult(model=model, version=version, created=True, run_id="")


def aliases(r: dict[str, Any]) -> dict[str, str | None]:
    from include.mlops.registry import alias_version

    return {a: alias_version(r["client"], r["model"], a) for a in ("champion", "previous", "challenger")}


def ledger(r: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
    from include.mlops.ledger import read_ledger

    return read_ledger(r["store"], r["model"], **kw)


def tags(r: dict[str, Any]) -> dict[str, str]:
    return dict(r["client"].get_registered_model(r["model"]).tags)


def begin_rollout(r: dict[str, Any], version: str, run_id: str, strategy: str = "direct") -> Any:
    """What `deployment.rollout` writes first: this run's promotion, pending, awaiting its check."""
    from include.mlops.moves import begin_move, promotion_base

    return begin_move(
        r["client"],
        r["store"],
        r["model"],
        version,
        action="promote",
        reason="gate passed: roc_auc=0.9000",
        run_id=run_id,
        dag_id="ml_training",
        strategy=strategy,
        base=promotion_base("ml_training", run_id, version),
        awaits_check=True,
    )


# -- the transaction ----------------------------------------------------------------------------------
def test_a_promotion_is_pending_before_any_alias_moves_then_done(reg):
    from include.mlops import pipeline as P

    out = P.promote(registered(reg["model"], "2"), PASSED, "r2", "ml_training", spec_name="churn")
    assert out.promoted and out.move_status == "done" and out.previous == "1"
    assert aliases(reg) == {"champion": "2", "previous": "1", "challenger": None}
    events = [e for e in ledger(reg, history=True) if e["move"] == out.move]
    assert [e["status"] for e in events] == ["pending", "done"]
    intent = events[0]
    assert (intent["from_version"], intent["to_version"], intent["previous"], intent["previous_before"]) == (
        "1",
        "2",
        "1",
        None,
    )
    moves = [e for e in ledger(reg) if e["move"] == out.move]  # one record per move, at its latest status
    assert len(moves) == 1 and moves[0]["status"] == "done" and moves[0]["ended_at"] >= moves[0]["at"]
    version = reg["client"].get_model_version(reg["model"], "2")
    assert version.tags["mlops.last_promoted_at"] == intent["at"]
    again = P.promote(registered(reg["model"], "2"), PASSED, "r2", "ml_training", spec_name="churn")
    assert not again.promoted and len(ledger(reg, history=True)) == len(events) + 2  # v1's two, nothing new


@pytest.mark.parametrize("stop_after", ["begin_move", "set_previous", "set_champion"])
def test_a_retry_after_a_crash_at_any_step_finishes_the_same_promotion(reg, stop_after):
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import pipeline as P

    c, store, model = reg["client"], reg["store"], reg["model"]
    move = M.begin_move(
        c, store, model, "2", action="promote", reason="gate passed", run_id="r2", dag_id="ml_training",
        base=M.promotion_base("ml_training", "r2", "2"),
    )  # fmt: skip
    if stop_after != "begin_move":
        M.set_previous(c, move)
    if stop_after == "set_champion":
        M.set_champion(c, move)
        assert aliases(reg)["champion"] == "2"  # moved, nothing completed: the old retry said "already champion"
    out = P.promote(registered(model, "2"), PASSED, "r2", "ml_training", spec_name="churn")
    assert out.promoted and out.resumed and out.move == move.move and out.move_status == "done"
    assert aliases(reg) == {"champion": "2", "previous": "1", "challenger": None}
    assert [e["status"] for e in ledger(reg, history=True) if e["move"] == move.move] == ["pending", "done"]
    assert not L.open_moves(store, model)


def test_an_interrupted_promotion_without_a_check_is_finished_by_the_next_one(reg):
    """`pipeline.promote` on its own (no deploy check): whoever touches the aliases next finishes it."""
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import pipeline as P

    c, store, model = reg["client"], reg["store"], reg["model"]
    move = M.begin_move(c, store, model, "2", action="promote", reason="gate passed", run_id="r2", dag_id="d")
    M.set_previous(c, move)
    out = P.promote(registered(model, "3"), PASSED, "r3", "d", spec_name="churn")
    assert out.promoted and out.previous == "2"
    assert L.move_record(store, model, move.move).status == "done"
    assert aliases(reg) == {"champion": "3", "previous": "2", "challenger": None}


def test_a_promotion_awaiting_its_check_blocks_another_until_it_is_ended(reg):
    from include.mlops import moves as M
    from include.mlops import pipeline as P
    from include.mlops.delivery.rollback import rollback

    begin_rollout(reg, "2", "r2")
    with pytest.raises(M.MoveInProgress, match=r"v1 -> v2 .* run r2 .* ml_rollback"):
        P.promote(registered(reg["model"], "3"), PASSED, "r3", "ml_training", spec_name="churn")
    assert aliases(reg)["champion"] == "1"
    rollback(None, "rb", "ml_rollback", spec_name="churn")
    assert P.promote(registered(reg["model"], "3"), PASSED, "r3", "ml_training", spec_name="churn").promoted


# -- the deploy step's own retries (no service needed: these end before any check) -----------------
def test_a_rollout_that_deploys_nothing_leaves_the_strategy_tags_alone(reg):
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollout import publish_strategy, rollout

    publish_strategy(reg["client"], reg["model"], "canary", 0.25)
    req = DeployRequest.of(registered(reg["model"], "2"), REJECTED, "r2", "ml_training", "direct", "churn")
    out = rollout(req)
    assert not out.promoted and out.message.startswith("not promoted") and out.champion == "1"
    assert out.gate_passed is False  # what the gate alert reads
    assert tags(reg)["mlops.deployment.strategy"] == "canary"
    assert tags(reg)["mlops.deployment.canary_share"] == "0.25"
    assert [e["action"] for e in ledger(reg)] == ["promote"]  # v1's only


def test_a_rollout_retry_does_not_redo_a_completed_or_rolled_back_promotion(reg):
    from include.mlops import moves as M
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollout import DeploymentCheckFailed, rollout
    from include.mlops.delivery.staging import _roll_back_failed

    c, store, model = reg["client"], reg["store"], reg["model"]
    done = begin_rollout(reg, "2", "r2", "canary")
    M.apply_move(c, done)
    M.complete_move(c, store, done, outcome="checked")
    out = rollout(DeployRequest.of(registered(model, "2"), PASSED, "r2", "ml_training", spec_name="churn"))
    assert out.promoted and out.checked and out.resumed and out.strategy == "canary"

    failed = begin_rollout(reg, "3", "r3")
    M.apply_move(c, failed)
    _roll_back_failed(c, store, model, "3", "2", "p99 over budget", "r3", "ml_training", "direct", failed)
    assert aliases(reg) == {"champion": "2", "previous": "1", "challenger": None}  # as before the move
    with pytest.raises(DeploymentCheckFailed, match="ended rolled_back .* not promoted again") as info:
        rollout(DeployRequest.of(registered(model, "3"), PASSED, "r3", "ml_training", spec_name="churn"))
    assert aliases(reg)["champion"] == "2"
    got = info.value  # the fields the rollback alert reads
    assert (got.model, got.version, got.rolled_back, got.rolled_back_to) == (model, "3", True, "2")


# -- rollback -----------------------------------------------------------------------------------------
def test_rollback_undoes_the_last_promotion_and_a_second_click_is_refused(reg):
    from include.mlops import pipeline as P
    from include.mlops.delivery.rollback import RollbackRefused, rollback
    from include.mlops.delivery.rollout import publish_strategy

    P.promote(registered(reg["model"], "2"), PASSED, "r2", "ml_training", "canary", spec_name="churn")
    reg["client"].set_registered_model_alias(reg["model"], "challenger", "2")
    publish_strategy(reg["client"], reg["model"], "canary", 0.1)
    back = rollback(None, "rb1", "ml_rollback", spec_name="churn", reason="bad answers")
    assert (back["from_version"], back["to_version"], back["changed"], back["strategy"]) == ("2", "1", True, "canary")
    assert aliases(reg) == {"champion": "1", "previous": "2", "challenger": None}
    assert (tags(reg)["mlops.deployment.strategy"], tags(reg)["mlops.deployment.canary_share"]) == ("direct", "0.0")
    entry = ledger(reg)[-1]
    assert (entry["action"], entry["strategy"], entry["undo"], entry["status"]) == ("rollback", "canary", True, "done")
    assert "bad answers" in entry["reason"]

    with pytest.raises(RollbackRefused, match=r"nothing new to roll back.*re-promote v2.*to_version"):
        rollback(None, "rb2", "ml_rollback", spec_name="churn")
    assert aliases(reg)["champion"] == "1" and len(ledger(reg)) == 3
    # the same request retried after it completed: nothing more, not an error
    assert rollback(None, "rb1", "ml_rollback", spec_name="churn")["to_version"] == "1"
    # a named version is always possible, and a rollback without one then undoes that move
    assert rollback("2", "rb3", "ml_rollback", spec_name="churn")["to_version"] == "2"
    assert aliases(reg)["previous"] == "1"
    assert rollback(None, "rb4", "ml_rollback", spec_name="churn")["to_version"] == "1"


def test_rollback_refuses_the_first_champion_and_aliases_moved_outside_the_ledger(reg):
    from include.mlops.delivery.rollback import RollbackRefused, rollback

    with pytest.raises(RollbackRefused, match="v1 is the first champion"):
        rollback(None, "rb", "ml_rollback", spec_name="churn")
    reg["client"].set_registered_model_alias(reg["model"], "champion", "3")  # by hand, in the MLflow UI
    with pytest.raises(RollbackRefused, match="champion of churn_model is v3, but .* went to v1"):
        rollback(None, "rb", "ml_rollback", spec_name="churn")
    with pytest.raises(ValueError, match="no version '9'"):
        rollback("9", "rb", "ml_rollback", spec_name="churn")


@pytest.mark.parametrize("stop_after", ["begin_move", "set_previous", "set_champion"])
def test_rollback_after_a_crash_mid_rollout_goes_back_to_the_version_it_replaced(reg, stop_after):
    """The rollout's promotion of v3 (v2 champion) crashed: rollback targets v2 whatever moved,
    ends the rollout and closes the promotion as rolled_back; nothing re-promotes v3."""
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import pipeline as P
    from include.mlops.delivery.request import DeployRequest
    from include.mlops.delivery.rollback import rollback
    from include.mlops.delivery.rollout import DeploymentCheckFailed, publish_strategy, rollout

    c, store, model = reg["client"], reg["store"], reg["model"]
    P.promote(registered(model, "2"), PASSED, "r2", "ml_training", spec_name="churn")
    c.set_registered_model_alias(model, "challenger", "3")
    publish_strategy(c, model, "canary", 0.2)
    move = begin_rollout(reg, "3", "r3", "canary")
    if stop_after != "begin_move":
        M.set_previous(c, move)
    if stop_after == "set_champion":
        M.set_champion(c, move)
    back = rollback(None, "rb", "ml_rollback", spec_name="churn")
    assert (back["from_version"], back["to_version"], back["strategy"]) == ("3", "2", "canary")
    assert aliases(reg) == {"champion": "2", "previous": "1", "challenger": None}
    assert L.move_record(store, model, move.move).status == "rolled_back"
    assert tags(reg)["mlops.deployment.strategy"] == "direct"
    with pytest.raises(DeploymentCheckFailed, match="not promoted again"):  # the run's retry stops there
        rollout(DeployRequest.of(registered(model, "3"), PASSED, "r3", "ml_training", spec_name="churn"))
    # v2's promotion is still the last one in force: a rollback now would undo it (to v1)
    assert L.last_move_in_force(store, model).to_version == "2"


def test_an_interrupted_rollback_is_finished_by_its_retry(reg):
    from include.mlops import ledger as L
    from include.mlops import moves as M
    from include.mlops import pipeline as P
    from include.mlops.delivery.rollback import rollback

    c, store, model = reg["client"], reg["store"], reg["model"]
    P.promote(registered(model, "2"), PASSED, "r2", "ml_training", spec_name="churn")
    undo = M.begin_move(
        c, store, model, "1", action="rollback", reason="rollback", run_id="rb", dag_id="ml_rollback",
        undoes=L.last_move_in_force(store, model),
    )  # fmt: skip
    M.set_previous(c, undo)  # killed here: champion still v2
    back = rollback(None, "rb", "ml_rollback", spec_name="churn")
    assert back["to_version"] == "1" and aliases(reg) == {"champion": "1", "previous": "2", "challenger": None}
    assert L.move_record(store, model, undo.move).status == "done" and not L.open_moves(store, model)


def test_entries_written_before_moves_had_ids_read_as_done_moves(reg):
    """A home from before this change: its ledger objects have no status; rollback still finds its target."""
    from include.mlops.delivery.rollback import rollback

    c, store, model = reg["client"], reg["store"], reg["model"]
    c.set_registered_model_alias(model, "champion", "2")
    old = {"at": "2099-01-01T00:00:00.000000Z", "model": model, "action": "promote", "from_version": "1",
           "to_version": "2", "reason": "gate passed", "run_id": "old", "dag_id": "ml_training", "strategy": "direct"}  # fmt: skip
    store.put_json(f"ledger/{model}/2099-01-01T000000.000000Z_promote_old.json", old)
    assert ledger(reg)[-1]["status"] == "done"
    assert rollback(None, "rb", "ml_rollback", spec_name="churn")["to_version"] == "1"


# -- fail closed ----------------------------------------------------------------------------------------
def test_a_registry_that_does_not_answer_decides_nothing(reg, monkeypatch):
    from include.mlops import pipeline as P
    from include.mlops.delivery.rollback import rollback

    before = ledger(reg, history=True)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    from include.mlops.config import get_settings

    if hasattr(get_settings, "cache_clear"):
        get_settings.cache_clear()
    for call in (
        lambda: rollback(None, "rb", "ml_rollback", spec_name="churn"),
        lambda: rollback("1", "rb", "ml_rollback", spec_name="churn"),
        lambda: P.promote(registered(reg["model"], "2"), REJECTED, "r2", "d", spec_name="churn"),
    ):
        with pytest.raises(Exception) as err:
            call()
        assert not isinstance(err.value, ValueError), err.value  # not "no such version", not "refused"
        assert "Connection refused" in str(err.value) or "Max retries" in str(err.value), err.value
    assert ledger(reg, history=True) == before
