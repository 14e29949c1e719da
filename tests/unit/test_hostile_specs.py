"""Specs are data: a worker loads specs by name from the spec directories only, a derived feature
computes and never runs code, and no spec name or key reaches outside the store root."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from include.mlops.spec import SpecError, load_spec
from tests.conftest import DEMO_START, ROOT, day_interval, small_spec, use_home, write_spec

DAY = DEMO_START


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    use_home(monkeypatch, home)
    monkeypatch.delenv("MLOPS_SPEC_DIRS", raising=False)
    return home


def churn_raw() -> dict:
    return yaml.safe_load((ROOT / "include" / "specs" / "churn.yaml").read_text())


# -- names, never paths ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ref, what",
    [
        ("/etc/mlops/churn.yaml", "is a file path"),
        ("churn.yaml", "is a file path"),
        ("specs/churn", "is a file path"),
        ("../../../../../../elsewhere/x", "is a file path"),
        ("Churn", "is not a spec name"),
        ("", "is not a spec name"),
    ],
)
def test_a_dataset_is_a_name_in_the_spec_directories(home, ref, what):
    with pytest.raises(SpecError) as err:
        load_spec(ref)
    msg = str(err.value)
    assert what in msg and str(home / "specs") in msg and "mlops ingest" in msg, msg


def test_the_pipelines_first_step_refuses_a_spec_path(home, tmp_path):
    """ml_training's first task (extract) with a `dataset` param that is a file: refused before any
    store access, saying where specs live; the same for a name that climbs out of the store."""
    from include.mlops import pipeline as P

    theirs = small_spec(tmp_path / "elsewhere" / "specs")  # a valid spec, but not an installed one
    outside = tmp_path / "elsewhere" / "x"
    for ref in (str(theirs), "../../../../../../" + str(outside).lstrip("/")):
        with pytest.raises(SpecError, match=r"is a file path: .*spec directories .*mlops ingest"):
            P.extract(day_interval(DAY), ref)
    assert not outside.exists() and not (home / "store").exists()


def test_mlops_dataset_must_name_a_spec(home, monkeypatch, tmp_path):
    from include.mlops import pipeline as P

    monkeypatch.setenv("MLOPS_DATASET", str(small_spec(tmp_path)))
    with pytest.raises(SpecError, match="is a file path"):
        P.extract(day_interval(DAY))


def test_spec_dirs_in_order_and_the_file_name_is_the_spec_name(home, tmp_path, monkeypatch):
    extra = tmp_path / "team_specs"
    raw = {**churn_raw(), "description": "the team's"}
    write_spec(extra, raw)  # extra/specs/churn.yaml
    monkeypatch.setenv("MLOPS_SPEC_DIRS", str(extra / "specs"))
    assert load_spec("churn").description == "the team's"  # MLOPS_SPEC_DIRS first, then the home, then shipped
    (extra / "specs" / "renamed.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match=r"named renamed\.yaml but the spec's name is 'churn'"):
        load_spec("renamed")


def test_a_link_out_of_a_spec_directory_is_refused(home, tmp_path):
    theirs = tmp_path / "theirs" / "churn.yaml"
    theirs.parent.mkdir()
    theirs.write_text(yaml.safe_dump(churn_raw()))
    (home / "specs").mkdir(parents=True)
    (home / "specs" / "churn.yaml").symlink_to(theirs)
    with pytest.raises(SpecError, match=r"links to .*outside its spec directory"):
        load_spec("churn")
    inside = home / "specs" / "real.yaml"  # a link that stays inside the directory is followed
    inside.write_text(yaml.safe_dump({**churn_raw(), "name": "alias"}))
    (home / "specs" / "alias.yaml").symlink_to(inside)
    assert load_spec("alias").name == "alias"


def test_ingest_replaces_a_link_it_finds_instead_of_writing_through_it(home, tmp_path):
    from include.mlops.data.ingest import install_spec

    victim = tmp_path / "victim.yaml"
    victim.write_text("keep")
    (home / "specs").mkdir(parents=True)
    (home / "specs" / "churn.yaml").symlink_to(victim)
    src = tmp_path / "mine" / "churn.yaml"
    src.parent.mkdir()
    src.write_text(yaml.safe_dump(churn_raw()))
    dst = install_spec(src, home)
    assert victim.read_text() == "keep" and not dst.is_symlink() and load_spec("churn").name == "churn"


# -- derived features through `mlops spec check FILE` -------------------------------------------
HOSTILE = [
    ("@pd.io.common.os.system('touch {marker}')", "is not an expression"),
    ("__import__('os')", "calls '__import__'"),
    ("__import__('os').system('touch {marker}')", "calls \"__import__('os').system\""),
    ("().__class__.__bases__", "uses Attribute"),
    ("tenure_months.__class__", "uses Attribute"),
    ("__builtins__", "names '__builtins__'"),
    ("tenure_months[0]", "uses Subscript"),
    ("lambda: 1", "uses Lambda"),
    ("(lambda: 1)()", "calls 'lambda: 1'"),
    ("[open('{marker}', 'w') for _ in [1]]", "uses ListComp"),
    ("10 ** 10 ** 10", "an exponent is a feature or a number"),
    ("tenure_months ** 1000000", "an exponent is at most"),
    ("9" * 40, "larger than a float keeps exactly"),
    ("-" * 2000 + "tenure_months", "characters long"),
    ("exec('import os')", "calls 'exec'"),
]


@pytest.mark.parametrize("expr, construct", HOSTILE)
def test_spec_check_refuses_a_hostile_expression_and_runs_nothing(home, tmp_path, expr, construct):
    from include.mlops.cli import app

    marker = tmp_path / "pwned"
    raw = churn_raw()
    raw["derived_features"] = {"evil": expr.format(marker=marker)}
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["spec", "check", str(path)], catch_exceptions=False)
    assert res.exit_code == 1, res.output
    assert "derived_features.evil:" in res.output and construct in res.output, res.output
    assert not marker.exists()


def test_a_spec_with_a_fine_expression_passes_the_same_check(home, tmp_path):
    from include.mlops.cli import app

    raw = churn_raw()
    raw["derived_features"] = {"charge_per_month": "total_charges / (tenure_months + 1) ** 2"}
    path = tmp_path / "fine.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["spec", "check", str(path)], catch_exceptions=False)
    assert res.exit_code == 0 and "ok: churn" in res.output, res.output


# -- the store root --------------------------------------------------------------------------------
def test_a_link_inside_the_store_that_points_out_is_refused(tmp_path):
    from include.mlops.storage import ObjectStore, UnsafeKeyError, ensure_bucket

    store = ObjectStore(f"file://{tmp_path / 'store'}")
    ensure_bucket(store)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("kept")
    (tmp_path / "store" / "staging").mkdir()
    (tmp_path / "store" / "staging" / "churn").symlink_to(outside, target_is_directory=True)
    (tmp_path / "store" / "reports").mkdir()
    (tmp_path / "store" / "reports" / "r.json").symlink_to(outside / "keep.txt")
    for op in (
        lambda: store.put_bytes("staging/churn/events/x.parquet", b"x"),
        lambda: store.delete_prefix("staging/churn/"),
        lambda: store.list("staging/churn/"),
        lambda: store.get_bytes("staging/churn/keep.txt"),
        lambda: store.put_json("reports/r.json", {}),
        lambda: store.get_text("reports/r.json"),
        lambda: store.delete_prefix("reports/"),
        lambda: store.list("reports/"),
    ):
        with pytest.raises(UnsafeKeyError, match="outside the store root"):
            op()
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"] and (outside / "keep.txt").read_text() == "kept"
    store.put_json("reports/ok.json", {"ok": True})  # the rest of the store still works
    assert store.get_json("reports/ok.json") == {"ok": True}


def test_a_landing_prefix_that_climbs_out_is_refused_by_the_spec_and_at_the_store(home, tmp_path):
    """A spec's own prefixes cannot leave the store: the spec refuses `..`, and the store would
    refuse the key before the disk even if a spec slipped through."""
    from include.mlops import pipeline as P
    from include.mlops.spec import SpecError
    from include.mlops.storage import UnsafeKeyError, ensure_bucket, get_store

    store = get_store()
    ensure_bucket(store)
    for field, section in (("source.landing_prefix", "source"), ("label.feed_prefix", "label")):
        key = "landing_prefix" if section == "source" else "feed_prefix"
        raw = churn_raw()
        write_spec(home, {**raw, section: {**(raw.get(section) or {}), key: "../../outside"}})
        with pytest.raises(SpecError, match=field.replace(".", r"\.")):
            P.extract(day_interval(DAY), "churn")
    with pytest.raises(UnsafeKeyError, match="would leave the store root"):
        store.put_bytes("../../outside/x.parquet", b"x")
    assert not (tmp_path / "outside").exists()


def test_s3_keys_stay_under_the_prefix():
    from include.mlops.storage import ObjectStore, UnsafeKeyError

    s3 = ObjectStore("s3://bucket/store")
    assert s3._bucket_key("staging/churn/x") == ("bucket", "store/staging/churn/x")
    assert s3._s3_key_of("store/staging/churn/x") == "staging/churn/x"
    for bad in ("storeX/y", "other/store/y"):
        with pytest.raises(UnsafeKeyError, match="not under the store root"):
            s3._s3_key_of(bad)
    with pytest.raises(UnsafeKeyError):
        s3._bucket_key("../elsewhere/x")


def test_spec_check_takes_the_users_own_file_or_an_installed_name(home, tmp_path):
    """`mlops spec check FILE` still takes the user's own file (their command line, not a worker param)."""
    from include.mlops.cli import app

    path = small_spec(tmp_path / "drafts")
    res = CliRunner().invoke(app, ["spec", "check", str(path)], catch_exceptions=False)
    assert res.exit_code == 0 and f"{path}: ok: churn" in res.output, res.output
    res = CliRunner().invoke(app, ["spec", "check", "nope"], catch_exceptions=False)
    assert (
        res.exit_code == 1
        and "'nope' not found" in res.output
        and "installed specs: ['churn', 'housing']" in res.output
    )


def test_a_spec_whose_name_climbs_out_is_refused_by_its_check(home, tmp_path):
    from include.mlops.cli import app

    path = tmp_path / "climb.yaml"
    path.write_text(yaml.safe_dump({**churn_raw(), "name": "../../../../elsewhere/x"}))
    res = CliRunner().invoke(app, ["spec", "check", str(path)], catch_exceptions=False)
    assert res.exit_code == 1 and "name" in res.output and "elsewhere" in res.output, res.output
