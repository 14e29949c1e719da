"""Feast imported without typeguard (include/mlops/features/feast_import.py), and the switch that keeps it.

Each case is a fresh interpreter: the swap only works before Feast's first import in a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from include.mlops.config import PROJECT_ROOT

PROBE = """
import json, time
from include.mlops.features.feast_import import without_typeguard
swapped = without_typeguard()
t = time.perf_counter()
import feast
seconds = time.perf_counter() - t
try:
    feast.Entity(name="e", join_keys=["id"], description=5)  # description must be a str
    outcome = "accepted"
except Exception as exc:
    outcome = type(exc).__name__
print(json.dumps({"swapped": swapped, "outcome": outcome, "import_s": seconds, "again": without_typeguard()}))
"""


def test_feast_skips_typeguard_unless_asked_to_keep_it():
    procs = {}
    for keep in ("", "1"):
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MLOPS_FEAST_TYPECHECKS": keep}
        procs[keep] = subprocess.Popen(
            [sys.executable, "-c", PROBE], env=env, cwd=str(PROJECT_ROOT), stdout=subprocess.PIPE, text=True
        )
    out = {k: json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for k, p in procs.items()}
    fast, checked = out[""], out["1"]
    assert fast["swapped"] and fast["again"] and fast["outcome"] == "accepted"
    assert not checked["swapped"] and not checked["again"] and checked["outcome"] == "TypeCheckError"
    print(f"import feast: {fast['import_s']:.1f} s without typeguard, {checked['import_s']:.1f} s with it")
