"""Derived features are data: they compute, they never run code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.mlops.features.expressions import ExpressionError, parse_expression
from include.mlops.spec import SpecError, load_spec, parse_spec

COLS = {"a", "b", "c"}


@pytest.mark.parametrize(
    "text",
    [
        "a / (b + 1)",
        "a * 2 - c ** 2 + b // 3 % 2",
        "(a > 1) & (b <= 2) | ~(c == 0)",
        "log1p(abs(a)) + sqrt(b) - exp(-c)",
        "clip(a, 0, 10) + where(b > 1, a, c) + minimum(a, b) + maximum(a, c)",
        "-a",
        "a * 2 ** -1 + b ** 2",  # numbers are floats: no integer-only rules, no unbounded integers
    ],
)
def test_the_language_agrees_with_pandas(text):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=50), "b": rng.integers(0, 5, 50), "c": rng.normal(size=50)})
    expr = parse_expression(text, COLS)
    got = expr.evaluate({k: df[k].to_numpy() for k in COLS})
    env = {"log1p": np.log1p, "abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "clip": np.clip, "where": np.where}
    env |= {"minimum": np.minimum, "maximum": np.maximum}
    with np.errstate(all="ignore"):
        want = np.asarray(eval(text, {"__builtins__": {}}, {**env, **{k: df[k].to_numpy() for k in COLS}}), float)  # noqa: S307 - the test's own text
    np.testing.assert_allclose(got, want, equal_nan=True)


@pytest.mark.parametrize(
    "text, why",
    [
        ("@pd.io.common.os.system('touch /tmp/pwned')", "not an expression"),
        ("__import__('os').system('id')", "calls "),
        ("a.__class__", "Attribute"),
        ("open('/etc/passwd')", "calls 'open'"),
        ("[x for x in a]", "ListComp"),
        ("lambda: 1", "Lambda"),
        ("a if b else c", "IfExp"),
        ("'text'", "only numbers"),
        ("d + 1", "'d', which is not a feature"),
        ("a < b < c", "two values at a time"),
        ("a @ b", "not allowed"),
        ("log(a, b)", "takes 1 argument"),
    ],
)
def test_anything_else_is_refused(text, why, tmp_path):
    with pytest.raises(ExpressionError, match=why):
        parse_expression(text, COLS)
    assert not (tmp_path / "pwned").exists()


def test_a_hostile_spec_fails_its_check():
    raw = load_spec("churn").to_dict()
    raw["derived_features"]["x"] = "@pd.io.common.os.system('touch /tmp/pwned-spec')"
    with pytest.raises(SpecError, match=r"derived_features.x: .* is not an expression"):
        parse_spec(raw)
