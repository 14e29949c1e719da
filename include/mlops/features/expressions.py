"""Derived-feature expressions: a small arithmetic language, parsed, never executed as Python.

A spec's `derived_features` are data written by whoever writes the spec, so they must not be able
to run code (`DataFrame.eval` and `eval` both reach attributes, `@` locals and calls). What
parses here: column names, numbers, `+ - * / // % **`, comparisons, `&`, `|`, `~`, parentheses,
and the functions in FUNCTIONS. Anything else is a SpecError naming the expression and the part
that is not allowed. Evaluation walks the parsed tree with numpy on whole columns, in float64
(numbers too), so no expression reaches Python's unbounded integers: `10 ** 10 ** 10` is refused
(a power's exponent is a column or a number within MAX_EXPONENT) and anything that overflows is
inf. The text is short (MAX_LENGTH) and shallow (MAX_DEPTH), so parsing and evaluating are cheap.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BINARY = {
    ast.Add: "add",
    ast.Sub: "subtract",
    ast.Mult: "multiply",
    ast.Div: "true_divide",
    ast.FloorDiv: "floor_divide",
    ast.Mod: "mod",
    ast.Pow: "power",
    ast.BitAnd: "logical_and",
    ast.BitOr: "logical_or",
}
COMPARE = {
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
    ast.Eq: "equal",
    ast.NotEq: "not_equal",
}
UNARY = {ast.USub: "negative", ast.UAdd: "positive", ast.Invert: "logical_not", ast.Not: "logical_not"}
FUNCTIONS = {  # name -> (numpy function, number of arguments)
    "abs": ("abs", 1),
    "sqrt": ("sqrt", 1),
    "log": ("log", 1),
    "log1p": ("log1p", 1),
    "exp": ("exp", 1),
    "clip": ("clip", 3),
    "where": ("where", 3),
    "minimum": ("minimum", 2),
    "maximum": ("maximum", 2),
}
MAX_LENGTH = 500  # characters
MAX_DEPTH = 32  # nested operations
MAX_EXPONENT = 64


class ExpressionError(ValueError):
    """An expression uses something outside the language; the message says what."""


@dataclass(frozen=True)
class Expression:
    text: str
    tree: ast.Expression
    names: frozenset[str]

    def evaluate(self, columns: Mapping[str, Any]) -> Any:
        """The expression over whole columns (numpy arrays or pandas Series) as a float array."""
        import numpy as np

        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.asarray(_eval(self.tree.body, columns, np), dtype=np.float64)


def parse_expression(text: str, columns: set[str] | frozenset[str]) -> Expression:
    """Check `text` against the language and the known `columns`; raises ExpressionError."""
    if len(str(text)) > MAX_LENGTH:
        raise ExpressionError(f"{str(text)[:40]!r}... is {len(str(text))} characters long; at most {MAX_LENGTH}")
    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{text!r} is not an expression ({exc.msg})") from None
    except (MemoryError, RecursionError, ValueError):  # the parser's own limits (nesting, digits)
        raise ExpressionError(f"{text!r} is too deeply nested or holds too large a number") from None
    if _depth(tree.body) > MAX_DEPTH:
        raise ExpressionError(f"{text!r} nests operations more than {MAX_DEPTH} deep; split it into derived features")
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if node.id.startswith("__"):
                raise ExpressionError(f"{text!r} names {node.id!r}; names starting with __ are not allowed")
            if node.id not in columns and node.id not in FUNCTIONS:
                raise ExpressionError(
                    f"{text!r} names {node.id!r}, which is not a feature (features: {sorted(columns)})"
                )
            names.add(node.id)
        elif isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else None
            if fn not in FUNCTIONS or node.keywords:
                raise ExpressionError(f"{text!r} calls {ast.unparse(node.func)!r}; allowed: {sorted(FUNCTIONS)}")
            if len(node.args) != FUNCTIONS[fn][1]:
                raise ExpressionError(f"{text!r}: {fn} takes {FUNCTIONS[fn][1]} argument(s)")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ExpressionError(f"{text!r} holds {node.value!r}; only numbers are allowed")
            if isinstance(node.value, int) and abs(node.value) > 2**53:
                raise ExpressionError(f"{text!r} holds {node.value}, larger than a float keeps exactly (2**53)")
        elif isinstance(node, ast.Compare):
            if len(node.ops) != 1 or type(node.ops[0]) not in COMPARE:
                raise ExpressionError(f"{text!r}: compare two values at a time with < <= > >= == !=")
        elif isinstance(node, ast.BinOp | ast.UnaryOp):
            if type(node.op) not in BINARY and type(node.op) not in UNARY:
                raise ExpressionError(f"{text!r} uses an operator that is not allowed ({type(node.op).__name__})")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
                _check_exponent(text, node.right)
        elif not isinstance(node, ast.Expression | ast.Load | ast.operator | ast.unaryop | ast.cmpop):
            raise ExpressionError(f"{text!r} uses {type(node).__name__}, which is not allowed")
    return Expression(str(text), tree, frozenset(names - set(FUNCTIONS)))


def _depth(node: ast.AST) -> int:
    children = list(ast.iter_child_nodes(node))
    return 1 + max((_depth(c) for c in children), default=0)


def _check_exponent(text: str, exponent: ast.AST) -> None:
    """A power's exponent is a column, or a number (with its sign) no larger than MAX_EXPONENT."""
    node, sign = exponent, 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        if abs(node.value) <= MAX_EXPONENT:
            return
        raise ExpressionError(f"{text!r} raises to {sign * node.value!r}; an exponent is at most {MAX_EXPONENT}")
    raise ExpressionError(
        f"{text!r} raises to {ast.unparse(exponent)!r}; an exponent is a feature or a number up to {MAX_EXPONENT}"
    )


def _eval(node: ast.AST, columns: Mapping[str, Any], np: Any) -> Any:
    if isinstance(node, ast.Constant):
        return np.float64(node.value)
    if isinstance(node, ast.Name):
        return np.asarray(columns[node.id], dtype=np.float64)
    if isinstance(node, ast.BinOp):
        return getattr(np, BINARY[type(node.op)])(_eval(node.left, columns, np), _eval(node.right, columns, np))
    if isinstance(node, ast.UnaryOp):
        return getattr(np, UNARY[type(node.op)])(_eval(node.operand, columns, np))
    if isinstance(node, ast.Compare):
        fn = COMPARE[type(node.ops[0])]
        return getattr(np, fn)(_eval(node.left, columns, np), _eval(node.comparators[0], columns, np))
    if isinstance(node, ast.Call):
        fn = FUNCTIONS[node.func.id][0]  # type: ignore[attr-defined]
        return getattr(np, fn)(*(_eval(a, columns, np) for a in node.args))
    raise ExpressionError(f"cannot evaluate {type(node).__name__}")  # parse_expression let nothing else in
