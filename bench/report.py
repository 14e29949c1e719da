"""BENCHMARKS.md from bench/results.json: the machine, the versions, the scale, then one section per
benchmark with each figure, its goal (where the issue sets one), met or missed, and the command
that produced it. The page depends on the results file alone, so the same results give the same
page byte for byte.

    PYTHONPATH=. .venv/bin/python -m bench.report [--results bench/results.json] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import OUT_DIR, RESULTS, ROOT

ORDER = ["parse", "validate", "batch_scoring", "materialize", "pipeline", "serving", "drift", "detection", "production"]
NOT_BENCHMARKS = {"machine", "commands", "bench_seconds", "bench_status", "scale", "setup"}
SKIP = {"home", "command", "commands", "machine", "detail", "at"}  # paths, provenance, per-window logs
ABOUT = {
    "parse": "DAG parse cost in a fresh interpreter per file (best of `runs`), beyond the bare `airflow.sdk` import.",
    "validate": "The `validate` task on one day of N rows: GX suite, reports, quarantine; `gx_s` is GX alone.",
    "batch_scoring": "`score_batch` against the bare read + `predict_proba` + write on the same rows and model.",
    "materialize": "Our materialisation into our SQLite online store (a row per entity) against Feast's `materialize` into its own.",
    "pipeline": (
        "`ml_training` with `dag.test()` beside a running scoring service, which deploy checks as under "
        "`make up` and compose: per-task times, peak RSS (the service's apart), overhead over the bare compute."
    ),
    "serving": "Our scoring service against `mlflow models serve`, same model, same client, interleaved.",
    "drift": "Our sampled monitoring analysis against Evidently on every row, and whether they decide alike.",
    "detection": "The drift policy on simulated daily windows: false alarms and detection delay per scenario.",
    "production": "`ml_training` on the CeleryExecutor stack (PostgreSQL, Redis, S3) against the embedded default.",
}


@dataclass(frozen=True)
class Goal:
    pattern: str  # a dotted key; `<rows>` matches any size
    op: str  # "<", "<=", ">=", ">", "=="
    target: Any
    unit: str = ""
    rows: int | None = None  # the size the goal is stated for, if any

    def matches(self, key: str) -> re.Match | None:
        rx = "^" + re.escape(self.pattern).replace(re.escape("<rows>"), r"(?P<rows>\d+)") + "$"
        return re.match(rx, key)

    def text(self) -> str:
        at = f" at {self.rows:,} rows" if self.rows else ""
        if self.target is None:
            return self.op + at
        return f"{self.op} {fmt(self.target)}{self.unit}{at}"


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
    "ours < theirs": lambda pair, _: pair[0] < pair[1],  # a [ours, theirs] pair
}
# The goals. A figure without one is reported as measured.
GOALS = [
    Goal("parse.max_file_s", "<", 0.5, " s"),
    Goal("parse.heavy_modules", "==", []),
    Goal("pipeline.<rows>.overhead_ratio", "<=", 1.5, rows=1_000_000),
    Goal("pipeline.<rows>.wall_s", "<", 300, " s", rows=1_000_000),  # "under 5 minutes end to end"
    Goal("pipeline.<rows>.peak_rss_mb", "<", 4096, " MB", rows=1_000_000),
    Goal("materialize.<rows>.speedup", ">=", 3, "x", rows=1_000_000),
    Goal("materialize.<rows>.rss_ratio", "<=", 0.25, rows=1_000_000),  # "at most a quarter of the memory"
    Goal("serving.throughput_ratio_c32", ">=", 2),
    Goal("serving.p99_c1_ours_vs_mlflow_ms", "ours < theirs", None),
    Goal("serving.ours.c<rows>.errors", "==", 0),
    Goal("serving.ours_entity.c<rows>.errors", "==", 0),
    Goal("drift.<rows>.ours_s", "<", 20, " s", rows=1_000_000),
    Goal("drift.<rows>.same_decision", "==", True),
    Goal("validate.<rows>.s", "<", 3, " s", rows=1_000_000),
    Goal("batch_scoring.<rows>.ratio", "<=", 1.5, rows=1_000_000),
]


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, float):
        if v != v:  # NaN
            return "nan"
        return f"{v:,.0f}" if abs(v) >= 10_000 else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}".rstrip("0").rstrip(".")
    if v is None:
        return "–"
    if isinstance(v, list):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v).replace("|", "\\|").replace("\n", " ")


def unit(path: tuple[str, ...], value: Any) -> str:
    """The unit a key's suffix names (`_s`, `_ms`, `_mb`), on it or on its parent (`task_s.train`)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    for part in reversed(path[-2:]):
        for suffix, u in (("_ms", " ms"), ("_mb", " MB"), ("_gb", " GB"), ("_s", " s"), ("_seconds", " s")):
            if part.endswith(suffix) or part == suffix[1:]:
                return u
    return ""


def natural(key: str) -> list:
    """c8 before c32, 10000 before 100000."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(key))]


def leaves(node: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, scalar) pairs; per-window logs, paths and long or nested lists are left out."""
    if isinstance(node, dict):
        out = []
        for k in sorted(node, key=natural):
            if k in SKIP:
                continue
            out += leaves(node[k], (*path, str(k)))
        return out
    if isinstance(node, list) and (len(node) > 8 or any(isinstance(x, dict | list) for x in node)):
        return []
    return [(path, node)]


def goal_for(key: str) -> tuple[Goal | None, re.Match | None]:
    for g in GOALS:
        m = g.matches(key)
        if m:
            return g, m
    return None, None


def status(path: tuple[str, ...], value: Any) -> tuple[str, str]:
    """(the goal, met or missed) for a figure, or two empty strings when the issue sets none."""
    g, m = goal_for(".".join(path))
    if g is None:
        return "", ""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if g.op in ("<", "<=", ">=", ">") and not numeric:
        return "", ""
    word = "met" if OPS[g.op](value, g.target) else "**missed**"
    rows = m.groupdict().get("rows") if m else None
    if g.rows and rows and int(rows) != g.rows:
        word += "\\*"  # measured at another size than the goal's
    return g.text(), word


def cell(path: tuple[str, ...], value: Any, with_goal: bool = True) -> str:
    text = fmt(value) + unit(path, value)
    goal, word = status(path, value)
    return f"{text} ({word}: {goal})" if goal and with_goal else text


def section(name: str, data: Any, command: str | None) -> list[str]:
    out = [f"## {name}", ""]
    if name in ABOUT:
        out += [ABOUT[name], ""]
    commands = sorted(set(_commands(data)) | ({command_text(command)} if command else set()), key=natural)
    if commands:
        out += ["Produced by " + ", ".join(f"`{c}`" for c in commands) + ".", ""]
    items = leaves(data, (name,))
    # Leaves grouped by parent (`a.b.c` -> row `a.b`, column `c`); sibling rows with the same
    # columns (per size, per target, per scenario) read best as one matrix, the rest as
    # figure / value / goal / status.
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for path, value in items:
        rows.setdefault(path[:-1], {})[path[-1]] = value

    # Rows with the same columns whose keys differ in one place (the size, the target, the
    # scenario) form a matrix; where a row could join several, the largest wins.
    def candidates(parent: tuple[str, ...]) -> list[tuple]:
        cols = tuple(rows[parent])
        return [(i, parent[:i] + ("*",) + parent[i + 1 :], cols) for i in range(1, len(parent))]

    counts: dict[tuple, int] = {}
    for parent in rows:
        for cand in candidates(parent):
            counts[cand] = counts.get(cand, 0) + 1
    groups: dict[tuple, list[tuple[str, ...]]] = {}
    for parent in rows:
        best = max(candidates(parent), key=lambda c: (counts[c], c[0]), default=None)
        groups.setdefault(best if best and counts[best] > 1 else ("single", parent), []).append(parent)
    singles = [parent for members in groups.values() if len(members) == 1 for parent in members]
    has_goal = any(status((*p, k), v)[0] for p in singles for k, v in rows[p].items())
    if singles:
        out += (
            ["| figure | value | goal | status |", "|---|---:|---|---|"]
            if has_goal
            else ["| figure | value |", "|---|---:|"]
        )
        for parent in singles:
            for k, v in rows[parent].items():
                path = (*parent, k)
                key = f"`{'.'.join(path)}`"
                if has_goal:
                    goal, word = status(path, v)
                    out.append(f"| {key} | {cell(path, v, with_goal=False)} | {goal} | {word} |")
                else:
                    out.append(f"| {key} | {cell(path, v)} |")
        out.append("")
    for key, members in groups.items():
        if len(members) < 2:
            continue
        at, pattern, cols = key
        out += [f"`{'.'.join(pattern)}`", ""]
        if len(cols) > 8:  # many figures for a few members: one row per figure
            out.append("| | " + " | ".join(m[at] for m in members) + " |")
            out.append("|---|" + "---:|" * len(members))
            for c in cols:
                out.append(f"| {c} | " + " | ".join(cell((*m, c), rows[m][c]) for m in members) + " |")
        else:
            out.append("| | " + " | ".join(cols) + " |")
            out.append("|---|" + "---:|" * len(cols))
            for m in members:
                out.append(f"| {m[at]} | " + " | ".join(cell((*m, c), rows[m][c]) for c in cols) + " |")
        out.append("")
    if any(status(path, v)[1].endswith("*") for path, v in items):
        out += ["\\* measured at another size than the one the goal is stated for.", ""]
    return out


def command_text(cmd: str) -> str:
    """Commands as the page writes them: `python -m ...`, run from the repository root."""
    return re.sub(r"^PYTHONPATH=\S+\s+", "", cmd.strip()).replace(".venv/bin/python", "python")


def _commands(node: Any) -> list[str]:
    """Per-size commands recorded inside a section (`"command": ...`)."""
    if isinstance(node, dict):
        found = [command_text(node["command"])] if isinstance(node.get("command"), str) else []
        for k, v in node.items():
            if k != "command":
                found += _commands(v)
        return found
    return []


def render(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    scale = results.get("scale", "not recorded (figures merged from separate runs)")
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench.report` from `bench/results.json`, which `make bench` writes",
        "(`BENCH_SCALE=small make bench` for the quick pass). Do not edit by hand: re-run the benchmarks.",
        "Each figure's key is its path in `bench/results.json`; commands run from the repository root",
        "as `PYTHONPATH=. .venv/bin/python ...`. Times are wall-clock seconds on the machine below,",
        "which may have been shared with other work (see `load_avg_*` where recorded): read them as",
        "upper bounds.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| scale | {scale}"
        + (
            " (`BENCH_SCALE=small`: 100,000 rows where the full run uses 1,000,000; see `bench/__main__.py`)"
            if scale == "small"
            else ""
        )
        + " |",
        f"| cpus | {m.get('cpus', '–')} |",
        f"| memory | {m.get('memory_gb', '–')} GB |",
        f"| python | {m.get('python', '–')} |",
        f"| platform | {m.get('platform', '–')} |",
    ]
    lines += [f"| {pkg} | {ver} |" for pkg, ver in sorted(m.get("versions", {}).items())]
    lines.append("")
    took, state = results.get("bench_seconds", {}), results.get("bench_status", {})
    if took or state:
        lines += ["`make bench` took:", "", "| benchmark | seconds | status |", "|---|---:|---|"]
        lines += [f"| {k} | {fmt(took.get(k))} | {state.get(k, 'ok')} |" for k in {**took, **state}]
        lines += [f"| total | {fmt(round(sum(took.values()), 1))} | |", ""]
    goals = [(g.pattern, g.text()) for g in GOALS]
    lines += ["Goals checked: " + "; ".join(f"`{p}` {t}" for p, t in goals) + ".", ""]
    names = [n for n in ORDER if n in results] + sorted(
        n for n in results if n not in ORDER and n not in NOT_BENCHMARKS and isinstance(results[n], dict)
    )
    commands = results.get("commands", {})
    for name in names:
        lines += section(name, results[name], commands.get(name))
    missing = [n for n in ORDER if n not in results]
    if missing:
        lines += ["## Not measured in this run", ""]
        lines += [f"- `{n}`" + (f": {state[n]}" if n in state else "") for n in missing]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(RESULTS))
    # the full run's page is the committed BENCHMARKS.md; another BENCH_OUT gets its own
    page = ROOT / "BENCHMARKS.md" if OUT_DIR == ROOT / "bench" else OUT_DIR / "BENCHMARKS.md"
    ap.add_argument("--out", default=str(page))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.write_text(render(json.loads(Path(args.results).read_text())))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
