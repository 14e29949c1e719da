"""Issue 5: the production configuration, natively, on this machine's PostgreSQL and Redis.

docker-compose.yaml's x-airflow-common environment reproduced without Docker
(tests/support/production_stack.py `ProductionStack`): Airflow 3 with the CeleryExecutor
(api-server with the execution API, scheduler, dag-processor, `airflow celery worker`) on fresh
PostgreSQL databases (`mlops_test_<random>_{airflow,mlflow,feast}`), Redis as the Celery broker
and the Feast online store (two empty database numbers, 5 and 6 when free), the MLflow tracking
server on PostgreSQL proxying artifacts to S3 (moto's server mode standing in for MinIO), and the
scoring service.
Runs of `ml_training` go through the real scheduler with real data intervals (REST), nothing
is mocked. The stack starts once for the module; every process is stopped (process groups),
the databases dropped and the Redis databases flushed, whatever happens.

Differences from compose, on purpose: `[scheduler] use_job_schedule = False`, because these
runs simulate October 2026 while the cron schedule would add a run for "yesterday" (no data);
and a task heartbeat timeout of HEARTBEAT_TIMEOUT_S instead of 300 s, because the full-day run is
also issue 15's worker crash: the Celery worker running `train` is SIGKILLed (its whole process
group, as a lost node), a new worker is started, and Airflow's own heartbeat-timeout detection and
the DAG's retry must finish the run on the new worker with the same end state as a clean run
(one MLflow run, one model version, the champion, a complete ledger).

Skipped, with the reason printed, when PostgreSQL (trust auth, user postgres) or Redis do not
answer on 127.0.0.1; on the project's machines and CI they do, and then it must pass.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import DEMO_START, day_interval, small_spec
from tests.support.production_stack import (
    DAG_ID,
    ProductionStack,
    group_members,
    pg,
    services_unavailable,
    tail,
    wait_until,
)

pytestmark = pytest.mark.production
ROWS = 300
INGEST_DAYS = 8  # day 9 is the first full run: labels (3 days late) cover days 1-6
# Ingest-only runs queued at once to see a second worker take over part of them: [start, end) days.
# Two runs (eight worker tasks, one run after the other: max_active_runs=1) still leave the second
# worker several to take; each run costs a GX validation and a Feast apply, so no more than two.
INGEST_RUNS = [(0, 4), (4, INGEST_DAYS)]
FULL_DAY = DEMO_START + timedelta(days=INGEST_DAYS)
ALL_TASKS = {"extract", "validate", "prepare", "train", "evaluate", "register", "deploy"}
WORKER_TASKS = {"extract", "validate", "prepare", "train"}  # what an ingest-only run executes
KILLED_TASK = "train"  # the task whose worker is SIGKILLed in the full-day run
# Airflow's defaults are 300 s and 10 s: a killed worker's task would be failed after 5 minutes.
# 30 s is still six missed heartbeats ([workers] min_heartbeat_interval is 5 s) on a busy machine.
HEARTBEAT_TIMEOUT_S = 30
HEARTBEAT_CHECK_S = 3


@pytest.fixture(scope="module")
def stack(request):
    reason = services_unavailable()
    if reason:
        print(f"\n[test_production] SKIPPED: {reason}")
        pytest.skip(reason)
    moto_server = request.getfixturevalue("moto_server")
    # Not tmp_path: pytest keeps only the last 3 base temps, and the logs must outlive a failure.
    root = Path(tempfile.mkdtemp(prefix="mlops-production-"))
    failed_before = request.session.testsfailed
    st = ProductionStack(
        root,
        s3_endpoint=moto_server,
        bucket=f"mlops-prod-{secrets.token_hex(3)}",
        worker_concurrency=1,
        airflow_overrides={
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": str(HEARTBEAT_CHECK_S),
        },
    )
    try:
        try:
            st.start()
        except Exception as exc:  # start() has stopped what it started; the logs remain
            pytest.fail(f"the production stack did not start: {exc}\n{st.log_tails()}", pytrace=False)
        # installed in the stack's MLOPS_HOME/specs: every process finds it by name
        st.spec_path = small_spec(st.mlops_home)
        st.spec_name = st.spec_path.stem
        st.write_days(st.spec_name, INGEST_DAYS + 1, ROWS)
        print(
            f"\n[test_production] stack up in {st.timings}; databases {st.databases}; "
            f"redis dbs broker={st.broker_db} feast={st.feast_redis_db}; logs in {st.logs}"
        )
        yield st
    finally:
        st.stop()
        print(f"\n[test_production] stopped in {st.timings.get('stop_s')}s (killed: {st.timings.get('stop_killed')})")
        if request.session.testsfailed == failed_before:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"\n[test_production] logs kept in {root}")
    leftovers = pg("select datname from pg_database where datname like %s", (f"mlops_test_{st.tag}_%",))
    assert not leftovers, f"databases not dropped: {leftovers}"


def _spec(stack):
    from include.mlops.spec import load_spec

    with stack.applied():  # found by name in the stack's MLOPS_HOME/specs, as the workers find it
        return load_spec(stack.spec_name)


def _conf(stack, train: bool) -> dict:
    return {"dataset": stack.spec_name, "train": train}


def _ran_on(tis: dict) -> dict[str, str]:
    return {
        k: v["hostname"] for k, v in tis.items() if v["state"] in ("success", "skipped", "failed") and v["hostname"]
    }


@pytest.fixture(scope="module")
def ingested(stack):
    """Days 1-8 ingested by two ingest-only runs queued at once while one worker (concurrency 1)
    serves; a second worker joins once the first task runs."""
    t0 = time.perf_counter()
    run_ids = [
        stack.trigger(DEMO_START + timedelta(days=a), DEMO_START + timedelta(days=b), _conf(stack, False))
        for a, b in INGEST_RUNS
    ]

    def first_task_running() -> bool:
        return any(t["state"] in ("running", "success") for t in stack.task_instances(run_ids[0]).values())

    wait_until(first_task_running, 180, "the first ingest task to start on worker-1", 0.5)
    added_at = time.time()
    stack.add_worker("worker-2", concurrency=1, wait=True)
    done = stack.wait_runs(run_ids, 600)
    failed = [r for r in run_ids if done[r]["state"] != "success"]
    assert not failed, f"ingest runs failed: {failed}\n{stack.failure_report(failed)}"
    print(f"\n[test_production] {len(run_ids)} ingest runs done in {time.perf_counter() - t0:.1f}s")
    return {
        "run_ids": run_ids,
        "runs": done,
        "tis": {r: stack.task_instances(r) for r in run_ids},
        "worker2_added_at": added_at,
    }


@pytest.fixture(scope="module")
def trained(stack, ingested):
    """The full run of day 9 (train, evaluate, register, deploy) through the scheduler, with the
    scoring service already running (as in compose): it must pick up the champion by itself.

    It is also issue 15's worker crash. worker-2 is retired first (warm shutdown; it is idle), so
    that worker-1 alone serves the run; as soon as `train` runs there, worker-1's whole process
    group is SIGKILLed and worker-3 is started. Nothing else steps in: the scheduler has to notice
    the missing task heartbeats, the DAG's retry has to run on worker-3, and the run must end as a
    clean run would."""
    stack.start_scoring(stack.spec_name)
    stack.stop_worker("worker-2")
    t0 = time.perf_counter()
    rid = stack.trigger(FULL_DAY, FULL_DAY + timedelta(days=1), _conf(stack, True))
    seen: dict = {}

    def killed_task_started() -> bool:
        seen["ti"] = stack.task_instances(rid).get(KILLED_TASK)
        return seen["ti"] is not None and seen["ti"]["state"] not in (None, "scheduled", "queued")

    wait_until(killed_task_started, 600, f"{KILLED_TASK} to start on worker-1", 0.25)
    ti = seen["ti"]
    assert ti["state"] == "running" and ti["try_number"] == 1, (
        f"{KILLED_TASK} was not seen running before it ended: {ti}\n{stack.failure_report([rid])}"
    )
    victim = ti["hostname"]
    assert victim == "worker-1", ti
    killed_at = datetime.now(UTC)
    t_kill = time.perf_counter()
    stack.kill_worker(victim)
    stack.add_worker("worker-3", concurrency=1, wait=True)

    def left_running() -> bool:
        return stack.task_instances(rid)[KILLED_TASK]["state"] != "running"

    # the heartbeat timeout, its check interval, and the dag-processor handling the failure
    wait_until(left_running, HEARTBEAT_TIMEOUT_S + 400, f"the scheduler to fail the orphaned {KILLED_TASK}", 0.5)
    detected_s = time.perf_counter() - t_kill
    run = stack.wait_runs([rid], 600)[rid]
    tis = stack.task_instances(rid)
    assert run["state"] == "success", f"full-day run {run['state']}\n{stack.failure_report([rid])}"
    crash = {
        "victim": victim,
        "killed_at": killed_at,
        "detected_s": round(detected_s, 1),
        "kill_to_end_s": round(time.perf_counter() - t_kill, 1),
    }
    print(
        f"\n[test_production] full-day run {time.perf_counter() - t0:.1f}s, {crash}; tasks: "
        + ", ".join(
            f"{k}={v['duration']:.1f}s@{v['hostname']}#{v['try_number']}" for k, v in tis.items() if v["duration"]
        )
    )
    return {"run_id": rid, "run": run, "tis": tis, "crash": crash}


# -- Celery: a second worker takes queued work ---------------------------------------------------
def test_second_worker_takes_queued_tasks(stack, ingested):
    hosts: dict[str, list[str]] = {}
    for rid, tis in ingested["tis"].items():
        assert {k for k, v in tis.items() if v["state"] in ("success", "skipped")} >= WORKER_TASKS, (rid, tis)
        for task, host in _ran_on(tis).items():
            hosts.setdefault(host, []).append(f"{rid}:{task}")
    assert set(hosts) == {"worker-1", "worker-2"}, f"task instances ran on {hosts}; expected both workers"
    # worker-2 joined while runs were queued; what it ran started after it joined
    for tis in ingested["tis"].values():
        for t in tis.values():
            if t["hostname"] == "worker-2":
                started = datetime.fromisoformat(t["start_date"].replace("Z", "+00:00")).timestamp()
                assert started >= ingested["worker2_added_at"] - 1, t
    # and each worker's own Celery log shows the ml_training workloads it executed
    for name in ("worker-1", "worker-2"):
        log = stack.workers[name].log.read_text(errors="replace")
        executed = re.findall(
            r"Executing workload in Celery: .*?log_path='dag_id=ml_training/run_id=([^/]+)/task_id=(\w+)/", log
        )
        assert executed, f"{name} log shows no ml_training workload:\n{tail(stack.workers[name].log)}"
        assert "succeeded in" in log
        for rid, task in executed:
            ti = ingested["tis"].get(rid, {}).get(task)
            if ti is not None and ti["try_number"] == 1:
                assert ti["hostname"] == name, (name, rid, task, ti["hostname"])


# -- the full-day run on Celery -----------------------------------------------------------------
def test_full_day_run_succeeds_on_celery(stack, trained):
    tis, rid = trained["tis"], trained["run_id"]
    assert {k: v["state"] for k, v in tis.items()} == dict.fromkeys(ALL_TASKS, "success")
    run = trained["run"]
    assert run["data_interval_start"].startswith(FULL_DAY.isoformat()), run
    assert run["conf"] == _conf(stack, True)
    for task, ti in tis.items():
        assert ti["hostname"] in stack.workers, (task, ti["hostname"])
        assert ti["queue"] == "default" and ti["pid"] and ti["unixname"], ti
    # the scheduler handed every task to the CeleryExecutor (its "TaskInstance Finished" line, logged
    # when Celery's result arrives, can come a moment after the run is marked successful) ...
    sched = stack._proc("scheduler").log

    def finished_lines() -> dict[str, str]:  # each task's last try (the killed one has two)
        lines = [ln for ln in sched.read_text(errors="replace").splitlines() if "TaskInstance Finished" in ln]
        return {
            t: ln
            for t in ALL_TASKS
            for ln in lines
            if f"task_id={t}, run_id={rid}," in ln and f"try_number={tis[t]['try_number']}," in ln
        }

    wait_until(lambda: len(finished_lines()) == len(ALL_TASKS), 90, "the scheduler's executor events", 1)
    for task, line in finished_lines().items():
        assert "executor=CeleryExecutor" in line and "executor_state=success" in line, (task, line)
    # ... Celery ran them (their ids are the TIs' external executor ids, results in PostgreSQL) ...
    rows = pg(
        "select ti.task_id, ti.external_executor_id, m.status from task_instance ti "
        "left join celery_taskmeta m on m.task_id = ti.external_executor_id "
        "where ti.dag_id = %s and ti.run_id = %s",
        (DAG_ID, rid),
        db=stack.db["airflow"],
    )
    assert {r[0] for r in rows} == ALL_TASKS
    assert all(r[1] and r[2] == "SUCCESS" for r in rows), rows
    # ... and the workers' logs show each of them being executed
    logs = "".join(w.log.read_text(errors="replace") for w in stack.workers.values())
    for task in ALL_TASKS:
        assert f"log_path='dag_id=ml_training/run_id={rid}/task_id={task}/" in logs, task
    # the metadata DB really is PostgreSQL and the broker Redis
    assert (
        pg("select count(*) from dag_run where dag_id = %s", (DAG_ID,), db=stack.db["airflow"])[0][0]
        == len(INGEST_RUNS) + 1
    )


# -- a Celery worker killed mid-task; Airflow's heartbeat timeout and retry finish on a new one --
def test_worker_killed_mid_task_retry_finishes_on_new_worker(stack, trained):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from include.mlops.ledger import read_ledger
    from include.mlops.storage import get_store

    rid, crash, tis = trained["run_id"], trained["crash"], trained["tis"]
    victim = crash["victim"]
    # the killed worker is gone for good, with every process of its group
    assert stack.workers[victim].popen.returncode == -9
    assert not group_members(stack.workers[victim].popen.pid)
    # it had received the task (its log shows the workload)
    victim_log = stack.workers[victim].log.read_text(errors="replace")
    assert f"log_path='dag_id=ml_training/run_id={rid}/task_id={KILLED_TASK}/" in victim_log, tail(
        stack.workers[victim].log
    )
    # the scheduler failed the orphaned try for its missing heartbeats (event log) ...
    events = stack.api(
        "GET",
        "/eventLogs",
        params={"dag_id": DAG_ID, "run_id": rid, "task_id": KILLED_TASK, "event": "heartbeat timeout"},
    )["event_logs"]
    assert events and {e["try_number"] for e in events} == {1}, events
    assert f"({HEARTBEAT_TIMEOUT_S} seconds)" in events[0]["extra"], events[0]
    detected_at = datetime.fromisoformat(events[0]["when"].replace("Z", "+00:00"))
    assert detected_at >= crash["killed_at"] + timedelta(seconds=HEARTBEAT_TIMEOUT_S - 6), (detected_at, crash)
    # ... and the DAG's retry ran on the new worker, once
    tries = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{rid}/taskInstances/{KILLED_TASK}/tries")["task_instances"]
    by_try = {t["try_number"]: t for t in tries}
    assert sorted(by_try) == [1, 2], tries
    assert by_try[1]["hostname"] == victim and by_try[1]["state"] in ("failed", "up_for_retry"), by_try[1]
    assert by_try[2]["hostname"] == "worker-3" and by_try[2]["state"] == "success", by_try[2]
    assert tis[KILLED_TASK]["try_number"] == 2 and tis[KILLED_TASK]["state"] == "success"
    # nothing else was retried; what ran after the crash ran on the new worker
    assert {k: v["try_number"] for k, v in tis.items() if k != KILLED_TASK} == dict.fromkeys(
        ALL_TASKS - {KILLED_TASK}, 1
    )
    for task in ("evaluate", "register", "deploy"):
        assert tis[task]["hostname"] == "worker-3", (task, tis[task]["hostname"])

    # the end state is a clean run's: one finished MLflow run for the interval, none left running,
    spec = _spec(stack)
    client = MlflowClient(stack.mlflow_url, stack.mlflow_url)
    exp = client.get_experiment_by_name(spec.name)
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`mlops.interval` = '{day_interval(FULL_DAY).key}'",
        run_view_type=ViewType.ALL,
    )
    statuses = sorted(r.info.status for r in runs)
    assert statuses.count("FINISHED") == 1 and "RUNNING" not in statuses, statuses
    finished = next(r for r in runs if r.info.status == "FINISHED")
    # one model version, from that run, and it is the champion
    versions = client.search_model_versions(f"name = '{spec.model_name}'")
    assert [(v.version, v.run_id) for v in versions] == [("1", finished.info.run_id)], versions
    assert client.get_model_version_by_alias(spec.model_name, "champion").version == "1"
    # and the promotion is in the ledger, once and complete
    with stack.applied():
        ledger = read_ledger(get_store(), spec.model_name)
    promotions = [e for e in ledger if e.get("to_version") == "1"]
    assert len(promotions) == 1 and promotions[0]["action"] == "promote", ledger
    assert promotions[0].get("status", "done") == "done" and promotions[0]["from_version"] is None, promotions[0]


# -- MLflow server on PostgreSQL, artifacts in S3 -------------------------------------------------
def test_champion_in_mlflow_server_with_artifacts_in_s3(stack, trained):
    import boto3
    from mlflow import MlflowClient

    spec = _spec(stack)
    client = MlflowClient(stack.mlflow_url, stack.mlflow_url)
    mv = client.get_model_version_by_alias(spec.model_name, "champion")
    assert mv.version == "1" and mv.status == "READY"
    assert mv.tags["airflow.run_id"] == trained["run_id"] and mv.tags["airflow.dag_id"] == DAG_ID
    exp = client.get_experiment_by_name(spec.name)
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location  # the server decides
    # the tracking server's store is the PostgreSQL database
    aliases = pg("select name, alias, version from registered_model_aliases", db=stack.db["mlflow"])
    assert (spec.model_name, "champion", 1) in aliases, aliases
    # and the artifacts are objects in S3 under the bucket's mlflow/ prefix
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    keys = [
        o["Key"]
        for p in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix="mlflow/")
        for o in p.get("Contents", [])
    ]
    assert any(k.endswith("/MLmodel") for k in keys), keys[:20]
    assert any(k.endswith("model.skops") for k in keys), keys[:20]
    assert any("evaluation/gate.json" in k for k in keys), keys[:20]
    assert not (stack.mlops_home / "mlartifacts").exists() and not (stack.root / "mlruns").exists()


# -- Feast: registry in PostgreSQL, online store in Redis ----------------------------------------
def _day_events(stack, day):
    from include.mlops.data.generator import events_key
    from include.mlops.storage import get_store

    with stack.applied():
        return get_store().get_parquet(events_key(_spec(stack), day))


def test_feast_registry_in_postgres_and_online_features_from_redis(stack, trained):
    import redis

    from include.mlops.config import get_settings
    from include.mlops.features import build as F

    spec = _spec(stack)
    tables = {
        r[0]
        for r in pg(
            "select table_name from information_schema.tables where table_schema = 'public'", db=stack.db["feast"]
        )
    }
    assert {"entities", "feature_views", "feature_services", "data_sources"} <= tables, tables
    views = pg("select feature_view_name, project_id from feature_views", db=stack.db["feast"])
    assert (spec.feature_view_name, "mlops") in views, views
    assert redis.Redis(host="127.0.0.1", port=6379, db=stack.feast_redis_db).dbsize() >= ROWS

    events = _day_events(stack, FULL_DAY)
    expected = F.build_features(events.head(3), spec)
    ids = [int(x) for x in expected[spec.entity_key]]
    with stack.applied():
        settings = get_settings()
        assert settings.feast_online_store == "redis"
        fs = F.get_feature_store(settings)
        assert fs.config.online_store.type == "redis"
        online = F.online_features(fs, spec, ids).set_index(spec.entity_key)
    for _, row in expected.iterrows():
        got = online.loc[int(row[spec.entity_key])]
        for name in spec.numeric_features:
            if row[name] == row[name]:  # not NaN
                assert got[name] == pytest.approx(row[name]), (name, got[name], row[name])
        for name in spec.categorical_features:
            assert got[name] == row[name], name


# -- the scoring service loads the champion from the same registry -------------------------------
def test_scoring_service_serves_champion_from_registry(stack, trained):
    import requests
    from mlflow import MlflowClient

    spec = _spec(stack)
    champion = MlflowClient(stack.mlflow_url, stack.mlflow_url).get_model_version_by_alias(spec.model_name, "champion")
    base, proc = stack.scoring_url, stack._proc("scoring")

    def serves_champion() -> bool:
        r = requests.get(f"{base}/ready", timeout=5)
        return r.status_code == 200 and (r.json().get("champion") or {}).get("version") == champion.version

    # started before the run, with no model in the registry: it loads the champion once promoted
    wait_until(serves_champion, 180, "scoring service /ready with the champion", 1, proc.popen, proc.log)
    ready = requests.get(f"{base}/ready", timeout=10).json()
    assert ready["model_name"] == spec.model_name and ready["champion"]["run_id"] == champion.run_id, ready
    events = _day_events(stack, FULL_DAY)
    entity = int(events[spec.entity_key].iloc[0])
    # by entity id: the features come from the Redis online store
    r = requests.post(f"{base}/predict", json={"records": [{spec.entity_key: entity}]}, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text, tail(proc.log))
    pred = r.json()["predictions"][0]
    assert pred["model_version"] == champion.version and pred["model_name"] == spec.model_name, pred
    assert pred[spec.entity_key] == entity and 0.0 <= pred["score"] <= 1.0, pred
    r = requests.post(f"{base}/predict", json={"entity_ids": [entity]}, timeout=30)
    assert r.status_code == 200 and r.json()["predictions"][0]["score"] == pytest.approx(pred["score"]), r.text
    # a full feature row (no lookup) is scored by the same champion
    row = json.loads(events[spec.feature_names].head(1).to_json(orient="records"))[0]
    r = requests.post(f"{base}/predict", json={"records": [row]}, timeout=30)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["predictions"][0]["model_version"] == champion.version
