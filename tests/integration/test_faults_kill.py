"""SIGKILL at named points of `train`, `register` and `deploy`, then the retry of the same step.

Each test copies a small trained home (tests/support/faults_home.py: champion v1 from run A,
v2 registered from run B with its gate passed, run C trained and not registered), runs the
step in a subprocess armed with a kill point (tests/support/kill_points.py: the process
SIGKILLs itself when the named function is called or returns; no hook in product code), checks
it died there, runs the step again as Airflow's retry would, and reads the end state: MLflow
runs per interval, versions per run, `champion` and `previous`, the ledger, and a rollback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import use_home
from tests.support.faults_home import SPEC, copy_home, rebase, template
from tests.support.kill_points import KillPoint, run_killed

pytestmark = pytest.mark.integration

CLIENT = "mlflow.tracking.client:MlflowClient"
LINEAGE = {"dag_id": "faults", "run_id": "kill-retry"}
DEPLOY_RUN = "deploy-run"  # an Airflow retry is the same DAG run: the killed try and the retry share it


@pytest.fixture(scope="module")
def tpl(tmp_path_factory) -> dict[str, Any]:
    return template(tmp_path_factory)


@pytest.fixture
def home(tpl, tmp_path, monkeypatch) -> dict[str, Any]:
    """A fresh copy of the template, the environment pointed at it; the template's step outputs
    with their URIs moved to the copy."""
    from include.mlops.config import embedded_env

    h = copy_home(tpl, tmp_path)
    use_home(monkeypatch, h)
    outs = {k: rebase(tpl[k], tpl["home"], h) for k in ("a", "b", "c")}
    return {"home": h, "env": embedded_env(h), **outs, "validate": rebase(tpl["validate"], tpl["home"], h)}


def _client():
    from include.mlops.config import get_settings
    from include.mlops.registry import setup_mlflow

    return setup_mlflow(get_settings())


def _aliases(client) -> dict[str, str | None]:
    from include.mlops.registry import alias_version

    return {a: alias_version(client, f"{SPEC}_model", a) for a in ("champion", "previous", "challenger")}


def _ledger() -> list[dict[str, Any]]:
    from include.mlops.ledger import read_ledger
    from include.mlops.storage import get_store

    return sorted(read_ledger(get_store(), f"{SPEC}_model"), key=lambda e: e["at"])


def _interval_code(iv) -> str:
    return (
        "from datetime import datetime\n"
        "from include.mlops import pipeline as P\n"
        f"iv = P.Interval(datetime.fromisoformat({iv.start.isoformat()!r}), datetime.fromisoformat({iv.end.isoformat()!r}))\n"
    )


def _kill(home: dict[str, Any], code: str, point: KillPoint) -> None:
    """Run `code` with `point` armed; fail unless the process died at that point."""
    result = run_killed(code, [point], env=home["env"])
    assert result.killed, f"the step did not die at {point.label} (exit {result.returncode}):\n{result.tail()}"
    assert result.killed_at == point.label


# -- train --------------------------------------------------------------------------------------------
def test_kill_in_train_after_the_run_started_then_retry_leaves_one_finished_run(home):
    """Killed inside the MLflow run (logging the model): the run stays RUNNING in the tracking
    store. The retry must end with one FINISHED run for the interval and no run left RUNNING
    (the orphan closed as failed or resumed)."""
    from include.mlops import pipeline as P

    iv = _day_before(home["c"]["interval"])  # an interval no run has trained yet
    code = _interval_code(iv) + f"P.train(iv, {LINEAGE!r}, {SPEC!r})\n"
    _kill(
        home, code, KillPoint("include.mlops.training.tracking:log_model", when="before", name="train: inside the run")
    )

    client = _client()
    before = _runs(client, iv.key)
    assert [r.info.status for r in before] == ["RUNNING"], "the kill should leave the run RUNNING"

    out = P.train(iv, LINEAGE, SPEC)
    runs = _runs(client, iv.key)
    statuses = sorted(r.info.status for r in runs)
    assert "RUNNING" not in statuses, f"an orphan run is left RUNNING: {statuses}"
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert [r.info.run_id for r in finished] == [out.run_id], statuses
    # the retry is itself idempotent: a third attempt reuses the finished run
    assert P.train(iv, LINEAGE, SPEC).run_id == out.run_id


def _day_before(iv):
    from datetime import timedelta

    from include.mlops.pipeline import Interval

    return Interval(iv.start - timedelta(days=1), iv.end - timedelta(days=1))


def _runs(client, interval_key: str) -> list[Any]:
    exp = client.get_experiment_by_name(SPEC)
    return client.search_runs([exp.experiment_id], f"tags.`mlops.interval` = '{interval_key}'", max_results=50)


# -- register -----------------------------------------------------------------------------------------
def test_kill_in_register_after_the_version_was_created_then_retry_registers_once(home):
    """Killed after `create_model_version` returned, before the `challenger` alias: the retry
    finds the run's version instead of creating a second one, and sets the alias."""
    from include.mlops import pipeline as P

    c = home["c"]
    args = json.dumps([c["train"].to_xcom(), c["evaluate"].to_xcom(), home["validate"].to_xcom()])
    code = (
        _interval_code(c["interval"])
        + f"import json\ntr, ev, val = json.loads({args!r})\n"
        + f"P.register(tr, ev, val, {LINEAGE!r}, iv, {SPEC!r})\n"
    )
    _kill(home, code, KillPoint(f"{CLIENT}.create_model_version", when="after", name="register: version created"))

    client = _client()
    assert _aliases(client)["challenger"] == "2", "the kill came before the alias moved"
    out = P.register(c["train"], c["evaluate"], home["validate"], LINEAGE, c["interval"], SPEC)
    versions = client.search_model_versions(f"name='{SPEC}_model' and run_id='{c['train'].run_id}'")
    assert [str(v.version) for v in versions] == ["3"], "one version per run"
    assert (out.version, out.created) == ("3", False)
    assert _aliases(client) == {"champion": "1", "previous": None, "challenger": "3"}
    assert len(client.search_model_versions(f"name='{SPEC}_model'")) == 3


# -- deploy (promotion) ------------------------------------------------------------------------------
def _promote_code(home: dict[str, Any]) -> str:
    b = home["b"]
    args = json.dumps([b["register"].to_xcom(), b["evaluate"].to_xcom()])
    return (
        "import json\nfrom include.mlops import pipeline as P\n"
        f"reg, ev = json.loads({args!r})\n"
        f"P.promote(reg, ev, {DEPLOY_RUN!r}, 'faults', spec_name={SPEC!r})\n"
    )


def _retry_promote(home: dict[str, Any]) -> dict[str, Any]:
    from include.mlops import pipeline as P

    b = home["b"]
    return P.promote(b["register"], b["evaluate"], DEPLOY_RUN, "faults", spec_name=SPEC)


def _assert_promotion_complete(ledger_before: list[dict[str, Any]]) -> None:
    """v2 champion, v1 previous, the ledger's new entries end in a completed 1 -> 2 promotion
    (nothing left pending), and a rollback lands on v1 (as a completed ledger entry)."""
    from include.mlops.delivery.rollback import rollback

    client = _client()
    aliases = _aliases(client)
    assert (aliases["champion"], aliases["previous"]) == ("2", "1"), aliases
    new = [e for e in _ledger() if e not in ledger_before]
    moves = [(e["action"], e["from_version"], e["to_version"], e.get("status", "done")) for e in new]
    assert moves == [("promote", "1", "2", "done")], moves

    back = rollback(None, "rollback-after-kill", "faults", spec_name=SPEC)
    assert (back["from_version"], back["to_version"], back["changed"]) == ("2", "1", True), back
    assert _aliases(client)["champion"] == "1"
    last = _ledger()[-1]
    assert (last["action"], last["to_version"], last.get("status", "done")) == ("rollback", "1", "done"), last


def test_kill_in_deploy_after_the_champion_moved_then_retry_completes_the_promotion(home):
    ledger_before = _ledger()
    point = KillPoint(
        f"{CLIENT}.set_registered_model_alias", when="after", match={"alias": "champion"}, name="deploy: champion moved"
    )
    _kill(home, _promote_code(home), point)
    assert _aliases(_client())["champion"] == "2"
    _retry_promote(home)
    _assert_promotion_complete(ledger_before)


def test_kill_in_deploy_after_previous_moved_then_retry_completes_the_promotion(home):
    ledger_before = _ledger()
    point = KillPoint(
        f"{CLIENT}.set_registered_model_alias", when="after", match={"alias": "previous"}, name="deploy: previous moved"
    )
    _kill(home, _promote_code(home), point)
    _retry_promote(home)
    _assert_promotion_complete(ledger_before)


def test_kill_in_deploy_after_the_pending_ledger_entry_then_retry_completes_the_promotion(home):
    """The transaction's intent is written first (a ledger entry "pending"); killed right
    after it, the retry finishes the same promotion."""
    ledger_before = _ledger()
    point = KillPoint(
        "include.mlops.moves:write_ledger", when="after", match={"entry.status": "pending"}, name="deploy: pending"
    )
    _kill(home, _promote_code(home), point)
    _retry_promote(home)
    _assert_promotion_complete(ledger_before)


def test_kill_in_deploy_before_the_champion_moved_then_retry_promotes(home):
    """Killed at the first alias write (nothing moved yet): the retry promotes normally."""
    ledger_before = _ledger()
    point = KillPoint(
        f"{CLIENT}.set_registered_model_alias", when="before", match={"alias": "champion"}, name="deploy: before move"
    )
    _kill(home, _promote_code(home), point)
    assert _aliases(_client())["champion"] == "1"
    _retry_promote(home)
    _assert_promotion_complete(ledger_before)
