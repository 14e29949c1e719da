"""`mlops spec init`, `spec check` and `ingest` as a user runs them, on real scikit-learn tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from include.mlops.cli import app
from include.mlops.spec import load_spec_file
from tests.byod_data import table, write_csv
from tests.conftest import use_home

runner = CliRunner()


def mlops(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def home(tmp_path, monkeypatch):
    use_home(monkeypatch, tmp_path / "home")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.mark.parametrize(
    "kind, task, kind_of_task, classes",
    [
        ("cancer", "classification", "binary", ["no", "yes"]),
        ("wine", "classification", "multiclass", ["barbera", "barolo", "grignolino"]),
        ("diabetes", "regression", "regression", None),
    ],
)
def test_spec_init_drafts_a_valid_spec(home, tmp_path, kind, task, kind_of_task, classes):
    csv = write_csv(kind, tmp_path)
    res = mlops("spec", "init", csv)
    assert res.exit_code == 0, res.output
    assert f"wrote {kind}.yaml" in res.output
    spec = load_spec_file(tmp_path / f"{kind}.yaml")
    assert (spec.task, spec.task_kind) == (task, kind_of_task)
    assert (spec.entity_key, spec.entity.dtype, spec.timestamp, spec.label) == (
        "customer_id",
        "string",
        "event_time",
        "outcome",
    )
    assert spec.label_spec.classes == classes
    if kind == "cancer":
        assert spec.label_spec.positive_class == "yes"  # the text, not YAML's boolean
        assert spec.source.rename["mean radius"] == "mean_radius"
        assert spec.feature("mean_radius").type == "float"
    # scaled to a few hundred rows over 14 days
    assert spec.training.window_days == 13 and spec.training.min_rows <= len(table(kind)) // 2
    assert spec.model.family == "random_forest"
    check = mlops("spec", "check", tmp_path / f"{kind}.yaml", "--data", csv)
    assert check.exit_code == 0, check.output
    assert f"fits the spec ({len(table(kind))} rows)" in check.output


def test_spec_init_asks_for_what_it_cannot_tell(home, tmp_path):
    df = table("cancer").rename(columns={"outcome": "diagnosis", "customer_id": "patient"})
    df.to_csv(tmp_path / "x.csv", index=False)
    res = mlops("spec", "init", tmp_path / "x.csv")
    assert res.exit_code == 1
    assert "cannot tell which column is the entity key" in res.output and "--key" in res.output
    res = mlops("spec", "init", tmp_path / "x.csv", "--key", "patient")
    assert "cannot tell which column is the label" in res.output and "--label" in res.output
    res = mlops("spec", "init", tmp_path / "x.csv", "--key", "patient", "--label", "diagnosis")
    assert res.exit_code == 0, res.output


def test_spec_check_names_the_field_and_the_fix(home, tmp_path):
    csv = write_csv("cancer", tmp_path)
    mlops("spec", "init", csv)
    raw = yaml.safe_load((tmp_path / "cancer.yaml").read_text())
    raw["gate"]["minimum"] = raw["gate"].pop("minimums")
    raw["model"]["primary_metric"] = "rmse"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    res = mlops("spec", "check", tmp_path / "bad.yaml")
    assert res.exit_code == 1
    assert "gate.minimum: unknown key; did you mean 'minimums'?" in res.output


def test_spec_check_reports_a_file_that_does_not_fit(home, tmp_path):
    csv = write_csv("cancer", tmp_path)
    mlops("spec", "init", csv)
    table("cancer").drop(columns=["mean radius"]).rename(columns={"worst area": "worst_area_cm"}).to_csv(
        tmp_path / "other.csv", index=False
    )
    res = mlops("spec", "check", tmp_path / "cancer.yaml", "--data", tmp_path / "other.csv")
    assert res.exit_code == 1
    assert "lacks the spec's column(s) ['mean_radius', 'worst_area']" in res.output
    assert "worst_area_cm" in res.output


def test_ingest_lands_days_and_a_label_feed(home, tmp_path):
    csv = write_csv("cancer", tmp_path)
    mlops("spec", "init", csv)
    res = mlops("ingest", csv, "--spec", tmp_path / "cancer.yaml")
    assert res.exit_code == 0, res.output
    assert "landed 569 events over 14 days, 2025-03-01 to 2025-03-14" in res.output
    assert (home / "specs" / "cancer.yaml").exists()  # installed: the DAGs find it by name
    day = home / "store/raw/cancer/events/dt=2025-03-05/ingest-cancer.csv"
    events = pd.read_csv(day)
    assert "outcome" not in events.columns and "mean_radius" in events.columns
    labels = pd.read_csv(home / "store/raw/cancer/labels/dt=2025-03-05/ingest-cancer.csv")
    assert list(labels.columns) == ["customer_id", "event_time", "outcome"]
    assert set(labels["outcome"]) <= {"yes", "no"} and len(labels) == len(events)
    # the same file again overwrites, it does not add
    again = mlops("ingest", csv, "--spec", "cancer")
    assert again.exit_code == 0, again.output
    assert len(list(Path(day).parent.iterdir())) == 1


def test_ingest_inline_labels_and_integer_keys(home, tmp_path):
    df = table("diabetes")
    df["customer_id"] = range(len(df))
    df.to_csv(tmp_path / "diabetes.csv", index=False)
    assert mlops("spec", "init", tmp_path / "diabetes.csv").exit_code == 0
    raw = yaml.safe_load((tmp_path / "diabetes.yaml").read_text())
    assert raw["entity"]["dtype"] == "int64"
    raw["label"]["feed"] = "inline"
    (tmp_path / "diabetes.yaml").write_text(yaml.safe_dump(raw))
    res = mlops("ingest", tmp_path / "diabetes.csv", "--spec", tmp_path / "diabetes.yaml")
    assert res.exit_code == 0, res.output
    events = pd.read_csv(home / "store/raw/diabetes/events/dt=2025-03-03/ingest-diabetes.csv")
    assert "outcome" in events.columns
    assert not (home / "store/raw/diabetes/labels").exists()


def test_ingest_refuses_text_ids_for_an_integer_key(home, tmp_path):
    csv = write_csv("cancer", tmp_path)
    mlops("spec", "init", csv)
    raw = yaml.safe_load((tmp_path / "cancer.yaml").read_text())
    raw["entity"]["dtype"] = "int64"
    (tmp_path / "cancer.yaml").write_text(yaml.safe_dump(raw))
    res = mlops("ingest", csv, "--spec", tmp_path / "cancer.yaml")
    assert res.exit_code == 1
    assert "not integers (e.g. 'C-" in res.output and "entity.dtype: string" in res.output


def test_run_training_refuses_a_bad_date(home):
    res = mlops("run", "training", "--spec", "churn", "--date", "14/03/2025")
    assert res.exit_code == 1 and "write YYYY-MM-DD" in res.output


def test_a_rejected_file_lands_nothing_and_installs_no_spec(home, tmp_path):
    csv = write_csv("cancer", tmp_path)
    mlops("spec", "init", csv)
    df = table("cancer")
    df.loc[100, "event_time"] = "2099-04-02 10:00:00"
    df.to_csv(tmp_path / "future.csv", index=False)
    res = mlops("ingest", tmp_path / "future.csv", "--spec", tmp_path / "cancer.yaml")
    assert res.exit_code == 1
    assert "in the future" in res.output and "2099-04-02" in res.output
    assert not (home / "specs" / "cancer.yaml").exists()
    assert not (home / "store" / "raw").exists()


def test_epoch_seconds_are_times(home, tmp_path):
    df = table("wine")
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True).astype("int64") // 10**9
    df = df.rename(columns={"event_time": "ts"})
    df.to_csv(tmp_path / "wine.csv", index=False)
    res = mlops("spec", "init", tmp_path / "wine.csv")
    assert res.exit_code == 0, res.output
    assert "time ts" in res.output and "over 14 days" in res.output


def test_empty_category_fields_reach_the_pipeline_as_missing_values(home, tmp_path):
    """A CSV's empty field is a missing value all the way to staging (not the text '')."""
    from datetime import date

    from include.mlops import layout
    from include.mlops import pipeline as P
    from include.mlops.storage import get_store
    from tests.conftest import day_interval

    df = table("cancer")
    df["size_band"] = pd.cut(df["mean radius"], [0, 12, 15, 100], labels=["s", "m", "l"]).astype(str)
    df.loc[df.index % 7 == 0, "size_band"] = None
    df.to_csv(tmp_path / "cancer.csv", index=False)
    assert mlops("spec", "init", tmp_path / "cancer.csv").exit_code == 0
    spec = load_spec_file(tmp_path / "cancer.yaml")
    assert spec.source.format == "csv" and spec.feature("size_band").required is False
    assert mlops("ingest", tmp_path / "cancer.csv", "--spec", tmp_path / "cancer.yaml").exit_code == 0
    day = date(2025, 3, 5)
    P.extract(day_interval(day), "cancer")
    staged = get_store().get_parquet(layout.staging_events_key(spec, day))
    assert staged["size_band"].isna().any() and "" not in set(staged["size_band"].dropna())
    P.validate(day_interval(day), "cancer")  # optional category with gaps: passes
