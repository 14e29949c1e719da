"""A trained home copied elsewhere, its original removed, works after `mlops home rebase`.

The home starts as the fault tests' small template (10 days of churn data, champion v1,
challenger v2), copied and rebased once (the template stays untouched for other tests); that
home is copied again with shutil.copytree and then deleted, so anything still naming it fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import use_home
from tests.support.faults_home import SPEC, rebase, template


def _grep(root: Path, needle: str) -> list[str]:
    """Files under `root` (logs aside) whose bytes contain `needle`."""
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and "logs" not in p.relative_to(root).parts and needle.encode() in p.read_bytes():
            hits.append(str(p.relative_to(root)))
    return hits


pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """A trained home at `old`, copied to `new` (a name with a space: percent-encoded in URIs),
    then `old` deleted."""
    from include.mlops.local.home import rebase as rebase_home

    tpl = template(tmp_path_factory)
    old = tmp_path_factory.mktemp("original") / "home"
    shutil.copytree(tpl["home"], old)
    rebase_home(old, tpl["home"])
    new = tmp_path_factory.mktemp("moved") / "elsewhere home"
    shutil.copytree(old, new)
    shutil.rmtree(old)
    outs = {k: rebase(tpl[k], tpl["home"], old) for k in ("a", "b")}
    return {"outs": outs, "old": old, "new": new}


def test_rebased_copy_loads_models_features_and_reruns_a_step(moved, monkeypatch):
    from include.mlops import cli

    old, new, outs = moved["old"], moved["new"], moved["outs"]
    before = _grep(new, str(old))
    assert "mlflow.db" in before and "feast_registry.db" in before, before

    use_home(monkeypatch, new)
    runner = CliRunner()
    first = runner.invoke(cli.app, ["home", "rebase"])
    assert first.exit_code == 0, first.output
    assert f"{old} -> {new}" in first.output
    assert "mlflow.db: rewrote" in first.output and "feast_registry.db: rewrote" in first.output
    assert _grep(new, str(old)) == []  # no store names the old home any more
    again = runner.invoke(cli.app, ["home", "rebase", "--from", str(old)])
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output  # idempotent

    from mlflow import MlflowClient

    from include.mlops import pipeline as P
    from include.mlops.config import get_settings
    from include.mlops.features import build as F
    from include.mlops.registry import setup_mlflow
    from include.mlops.spec import load_spec
    from include.mlops.training import tracking

    settings = get_settings()
    client = setup_mlflow(settings)
    spec = load_spec(SPEC)
    # the champion through its alias, and a run's artifacts
    champion = client.get_model_version_by_alias(spec.model_name, "champion")
    assert str(champion.version) == "1" and str(new) in champion.source
    model = tracking.load_sklearn(f"models:/{spec.model_name}@champion")
    assert hasattr(model, "predict_proba")
    run_a = outs["a"]["train"].run_id
    listed = [a.path for a in MlflowClient().list_artifacts(run_a)]
    assert listed, "the run lists no artifacts"
    # Feast: the registry's file source now names the copy's store
    fs = F.get_feature_store(settings)
    view = fs.get_feature_view(spec.feature_view_name)
    assert view.batch_source.path.startswith(str(new))
    import pandas as pd

    part = pd.read_parquet(Path(view.batch_source.path))
    ids = part[spec.entity_key].drop_duplicates().head(5).tolist()
    online = F.online_features(fs, spec, ids)
    assert len(online) == 5 and online[spec.numeric_features[0]].notna().all()
    entity_df = part[[spec.entity_key, spec.timestamp]].head(20).reset_index(drop=True)
    hist = F.historical_features(fs, spec, entity_df)
    assert len(hist) == 20
    # a pipeline step runs again on the copy: evaluate run B against the champion
    ev = P.evaluate(rebase(outs["b"]["train"], old, new), SPEC)
    assert str(ev.champion_version) == "1" and ev.metrics


def test_rebase_refuses_while_a_process_uses_the_home(tmp_path, monkeypatch):
    from include.mlops import cli

    home = tmp_path / "copy"
    home.mkdir()
    (home / "held.db").write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; f = open(sys.argv[1]); print('open', flush=True); time.sleep(600)"]
        + [str(home / "held.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"  # the file is open from here on
        use_home(monkeypatch, home)
        out = CliRunner().invoke(cli.app, ["home", "rebase", "--from", str(tmp_path / "original")])
        assert out.exit_code == 1
        assert "in use" in out.output and f"pid {holder.pid}" in out.output, out.output
    finally:
        holder.kill()
        holder.wait()
    out = CliRunner().invoke(cli.app, ["home", "rebase", "--from", str(tmp_path / "original")])
    assert out.exit_code == 0, out.output  # the holder is gone once wait() returned


def test_rebase_refuses_a_home_inside_the_old_one(tmp_path, monkeypatch):
    from include.mlops import cli

    inner = tmp_path / "home" / "copy"
    inner.mkdir(parents=True)
    use_home(monkeypatch, inner)
    out = CliRunner().invoke(cli.app, ["home", "rebase", "--from", str(tmp_path / "home")])
    assert out.exit_code == 1 and "inside one another" in out.output, out.output
