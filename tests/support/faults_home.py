"""A small trained home for the fault-injection tests, built once per test process and copied
per test or per module, so each fault starts from the same registry and store.

The template: 10 days of demo churn data (400 rows a day) extracted, validated and prepared as
one interval (one Feast apply and one materialisation); run A trained on day 10's window and
promoted (champion v1, the first ledger entry); run B trained on day 9's window and registered
(v2, alias `challenger`, gate passed); run C trained on day 8's window and not registered. The spec is installed in the home's spec directory and
named by its name, `churn`, as the steps take it.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEMO_START, day_interval, small_spec, use_home

SPEC = "churn"
DAYS = 10
ROWS = 400
_TEMPLATE: dict[str, Any] = {}


def build_template(root: Path) -> dict[str, Any]:
    """Build the template home under `root` (see the module docstring); returns its facts."""
    from dataclasses import replace

    from include.mlops import pipeline as P
    from include.mlops.data.generator import write_days
    from include.mlops.spec import load_spec
    from include.mlops.storage import get_store

    home = root / "home"
    mp = pytest.MonkeyPatch()
    use_home(mp, home)
    try:
        small_spec(_spec_dir(home), SPEC)
        spec = load_spec(SPEC)
        store = get_store()
        (home / "store").mkdir(parents=True, exist_ok=True)
        write_days(store, spec, DEMO_START, DAYS, rows=ROWS)
        history = P.Interval(day_interval(DEMO_START).start, day_interval(DEMO_START + timedelta(days=DAYS - 1)).end)
        P.extract(history, SPEC)
        val = P.validate(history, SPEC)
        P.prepare(history, SPEC)
        lineage = {"dag_id": "faults", "run_id": "template"}
        iv_a = day_interval(DEMO_START + timedelta(days=DAYS - 1))
        tr_a = P.train(iv_a, lineage, SPEC)
        ev_a = replace(P.evaluate(tr_a, SPEC), passed=True, reasons=[])
        rg_a = P.register(tr_a, ev_a, val, lineage, iv_a, SPEC)
        P.promote(rg_a, ev_a, "template", "faults", spec_name=SPEC)
        iv_b = day_interval(DEMO_START + timedelta(days=DAYS - 2))
        tr_b = P.train(iv_b, lineage, SPEC)
        ev_b = replace(P.evaluate(tr_b, SPEC), passed=True, reasons=[])
        rg_b = P.register(tr_b, ev_b, val, lineage, iv_b, SPEC)
        iv_c = day_interval(DEMO_START + timedelta(days=DAYS - 3))
        tr_c = P.train(iv_c, lineage, SPEC)
    finally:
        mp.undo()
    assert (rg_a.version, rg_b.version) == ("1", "2"), (rg_a, rg_b)
    return {
        "home": home,
        "spec": spec,
        "validate": val,
        "a": {"interval": iv_a, "train": tr_a, "evaluate": ev_a, "register": rg_a},
        "b": {"interval": iv_b, "train": tr_b, "evaluate": ev_b, "register": rg_b},
        "c": {"interval": iv_c, "train": tr_c, "evaluate": replace(ev_b, metrics={})},
    }


def _spec_dir(home: Path) -> Path:
    d = home / "specs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The process's template home, built on first use."""
    if "t" not in _TEMPLATE:
        _TEMPLATE["t"] = build_template(tmp_path_factory.mktemp("faults-template"))
    return _TEMPLATE["t"]


def copy_home(tpl: dict[str, Any], dest: Path) -> Path:
    """A copy of the template home at `dest/home`: its own registry database, store and Feast
    files. Artifacts of the template's runs stay where they are (read only; the runs' URIs name them)."""
    home = dest / "home"
    shutil.copytree(tpl["home"], home, ignore=shutil.ignore_patterns("mlartifacts"))
    return home


def rebase(value: Any, old: Path, new: Path) -> Any:
    """A step output of the template with its paths moved to a copy's home (store URIs)."""
    if hasattr(value, "to_xcom"):  # a step's typed result: rebased through its XCom form
        return type(value).from_xcom(rebase(value.to_xcom(), old, new))
    if isinstance(value, str):
        return value.replace(str(old), str(new))
    if isinstance(value, dict):
        return {k: rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase(v, old, new) for v in value]
    return value
