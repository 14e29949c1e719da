"""SIGKILL at a named point: run a step in a subprocess that kills itself, hard, the moment a
chosen function is called or returns, then let the test run the retry and read the end state.

No hook in product code: the point is any importable function or method, named
`module:attr.path` (`include.mlops.training.tracking:log_model`,
`mlflow.tracking.client:MlflowClient.set_registered_model_alias`), wrapped in the subprocess
before the step runs. `match` narrows it to calls whose arguments equal given values (bound by
the function's signature, compared as text: `{"alias": "champion"}`; `{"entry.action": "pending"}`
reads an attribute of an argument), `nth` to the nth such
call. Before it dies the process writes the point's name to a marker file, so the test knows it
died there and not somewhere else; SIGKILL means no `finally`, no `atexit`, no flush: what a
lost worker, an OOM kill or a pulled plug leaves.

    point = KillPoint("mlflow.tracking.client:MlflowClient.create_model_version", when="after")
    result = run_killed("from include.mlops import pipeline as P; ...", [point], env=...)
    assert result.killed_at == point.label
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class KillPoint:
    target: str  # module:attr.path
    when: str = "after"  # before (on call) | after (on return)
    match: dict[str, str] = field(default_factory=dict)
    nth: int = 1
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or f"{self.when} {self.target}{self.match or ''}#{self.nth}"


@dataclass
class KillResult:
    returncode: int
    killed_at: str | None
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL and self.killed_at is not None

    def tail(self, n: int = 40) -> str:
        return "\n".join((self.stdout + "\n" + self.stderr).splitlines()[-n:])


def run_killed(
    code: str, points: list[KillPoint], env: dict[str, str] | None = None, deadline_s: float = 600.0
) -> KillResult:
    """Run `code` (Python source) in a fresh interpreter with the kill points armed; returns how
    it ended. `deadline_s` only guards against a step that never ends (the result says so)."""
    with tempfile.TemporaryDirectory(prefix="kill-points-") as tmp:
        plan = Path(tmp) / "plan.json"
        marker = Path(tmp) / "killed_at"
        plan.write_text(json.dumps({"code": code, "points": [asdict(p) for p in points], "marker": str(marker)}))
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH", "")]))
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        # files, not pipes: a child the step started (a scoring service) may outlive it
        with out_path.open("w") as out, err_path.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.kill_points", str(plan)],
                cwd=ROOT,
                env=full_env,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group: what it started is ended with it
            )
            try:
                returncode = proc.wait(timeout=deadline_s)
                note = ""
            except subprocess.TimeoutExpired:
                returncode, note = -1, f"\n(no end within {deadline_s:.0f} s)"
            finally:
                _end_group(proc)
        killed_at = marker.read_text() if marker.exists() else None
        return KillResult(returncode, killed_at, out_path.read_text(), err_path.read_text() + note)


def _end_group(proc: subprocess.Popen) -> None:
    """SIGKILL the step's process group (the step and anything it started), then reap the step."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _resolve(target: str) -> tuple[Any, str, Any]:
    """(owner object, attribute name, original attribute) for `module:attr.path`."""
    module_name, _, path = target.partition(":")
    if not path:
        raise ValueError(f"a kill point names module:function, not {target!r}")
    owner: Any = importlib.import_module(module_name)
    parts = path.split(".")
    for part in parts[:-1]:
        owner = getattr(owner, part)
    name = parts[-1]
    original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    return owner, name, original


def _argument(bound: dict[str, Any], path: str) -> str | None:
    """An argument's value as text; `entry.action` reads an attribute (or key) of an argument."""
    name, *attrs = path.split(".")
    if name not in bound:
        return None
    value = bound[name]
    for attr in attrs:
        value = value.get(attr) if isinstance(value, dict) else getattr(value, attr, None)
    return None if value is None else str(value)


def _die(label: str, marker: str) -> None:
    with open(marker, "w") as f:
        f.write(label)
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: KillPoint, marker: str) -> None:
    """Wrap the point's function in this process so that it kills the process there."""
    owner, name, original = _resolve(point.target)
    if isinstance(original, (staticmethod, classmethod)):
        raise ValueError(f"{point.target}: static and class methods are not supported")
    sig = inspect.signature(original)
    calls = {"n": 0}

    def matches(args: tuple, kwargs: dict) -> bool:
        if not point.match:
            return True
        try:
            bound = sig.bind_partial(*args, **kwargs).arguments
        except TypeError:
            return False
        return all(_argument(bound, k) == str(v) for k, v in point.match.items())

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hit = matches(args, kwargs)
        if hit:
            calls["n"] += 1
            hit = calls["n"] == point.nth
        if hit and point.when == "before":
            _die(point.label, marker)
        result = original(*args, **kwargs)
        if hit and point.when == "after":
            _die(point.label, marker)
        return result

    setattr(owner, name, wrapper)


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    for raw in plan["points"]:
        arm(KillPoint(**raw), plan["marker"])
    exec(compile(plan["code"], "<kill-points step>", "exec"), {"__name__": "__kill_points__"})


if __name__ == "__main__":
    main(sys.argv[1])
