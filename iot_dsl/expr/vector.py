"""Checked AST -> a numpy kernel ``columns -> array`` for batch (columnar) evaluation.

Columns are named by the field path as written (``"temp"``, ``"device.firmware"``, ``"event.payload.x"``) and
must share one length; the result has that length. Null is NaN in float columns (None in object columns); the
results equal :func:`~.compile.compile_expr` row by row with null as NaN: arithmetic, comparisons (ordering with
null is false, ``null == null`` is true), ``/``/``%`` by zero (NaN), ``**`` limits (``overflow``), and the
functions that have a ``vector_impl``.

Differences from the scalar path, by design: ``and``/``or`` evaluate every operand (no short-circuit), so an
error in an operand the scalar path would skip is raised here; integer columns use numpy's fixed-width integers.
Supported: literals, fields, arithmetic, comparisons, ``and``/``or``/``not``, ``in`` with a constant list
(``np.isin``) and functions with a ``vector_impl``. Anything else (versions, string functions, lists, ``in``
a string) raises ``ExprError(code="not_vectorizable")`` when compiling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import ExprError
from . import nodes as n
from .check import NOCONST, Annotations, annotate
from .functions import FUNCTIONS, vector_is_null
from .ops import MAX_EXPONENT, MAX_MAGNITUDE, Where, runtime_error, truth
from .types import BOOLEAN, Scope, Type
from .version import Version

__all__ = ["compile_vector", "Kernel"]

Columns = Mapping[str, Any]
Kernel = Callable[[Columns], Any]

_ORDER = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}
_ALWAYS_BOOL = (n.Compare, n.In, n.Not, n.BoolOp)


def compile_vector(node: n.Node, scope: Scope, *, expect: Type | None = None, text: str = "") -> Kernel:
    """Check ``node`` and return ``columns -> np.ndarray`` (see module doc); raises ``not_vectorizable``."""
    notes = annotate(node, scope, expect, text)
    builder = _Builder(notes)
    kernel = builder.boolean(node) if expect == BOOLEAN else builder.build(node)

    def run(columns: Columns) -> Any:
        with np.errstate(all="ignore"):
            result = np.asarray(kernel(columns))
        if result.ndim == 0:
            size = len(next(iter(columns.values()))) if columns else 1
            result = np.full(size, result[()], dtype=result.dtype)
        return result

    return run


def _refuse(node: n.Node, what: str) -> ExprError:
    return ExprError(
        f"{what} cannot be evaluated on columns", code="not_vectorizable", offset=node.start, end_offset=node.end
    )


def _vector_truth(value: Any, where: Where) -> Any:
    arr = np.asarray(value)
    if arr.dtype.kind == "b":
        return arr
    if arr.dtype.kind == "O":
        return np.fromiter((truth(v, where) for v in arr.ravel()), dtype=bool, count=arr.size).reshape(arr.shape)
    raise runtime_error(f"expected booleans, got a {arr.dtype} column", "runtime_type", where)


def _equal(a: Any, b: Any) -> Any:
    """Elementwise ``==`` with ``null == null`` true (NaN or None on both sides)."""
    same = np.equal(a, b)
    return np.logical_or(same, np.logical_and(vector_is_null(a), vector_is_null(b)))


def _divide(a: Any, b: Any) -> Any:
    return np.where(np.equal(b, 0), np.nan, np.true_divide(a, b))


def _modulo(a: Any, b: Any) -> Any:
    return np.where(np.equal(b, 0), np.nan, np.remainder(a, b))


def _power(where: Where) -> Callable[[Any, Any], Any]:
    def power(a: Any, b: Any) -> Any:
        base, exponent = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        if np.any(np.abs(exponent) > MAX_EXPONENT):
            raise runtime_error(f"overflow: exponent exceeds {MAX_EXPONENT}", "overflow", where)
        result = np.power(base, exponent)
        result = np.where((base == 0) & (exponent < 0), np.nan, result)
        if np.any(np.abs(result) > MAX_MAGNITUDE):
            raise runtime_error("overflow: result of '**' is too large", "overflow", where)
        return result

    return power


_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": _divide,
    "%": _modulo,
}


class _Builder:
    """Turns annotated nodes into numpy kernels."""

    def __init__(self, notes: Annotations) -> None:
        self.notes = notes
        self.builders: dict[type, Callable[[Any], Kernel]] = {
            n.Field: self._field,
            n.Unary: self._unary,
            n.Not: self._not,
            n.BoolOp: self._boolop,
            n.Binary: self._binary,
            n.Compare: self._compare,
            n.In: self._in,
            n.Call: self._call,
        }

    def build(self, node: n.Node) -> Kernel:
        """The kernel computing ``node``; constants are scalars (null is NaN) broadcast by numpy."""
        value = self.notes.const(node)
        if value is not NOCONST:
            if isinstance(value, (list, Version)):
                raise _refuse(node, "a list or version value")
            scalar = np.nan if value is None else value
            return lambda cols: scalar
        if id(node) in self.notes.as_version:
            raise _refuse(node, "a version comparison")
        builder = self.builders.get(type(node))
        if builder is None:
            raise _refuse(node, "a list display")
        return builder(node)

    def boolean(self, node: n.Node) -> Kernel:
        """A kernel yielding a boolean array (null is false)."""
        f = self.build(node)
        if isinstance(node, _ALWAYS_BOOL):
            return f
        where = (node.start, node.end)
        return lambda cols: _vector_truth(f(cols), where)

    def _field(self, node: n.Field) -> Kernel:
        if self.notes.type_of(node).name == "version":
            raise _refuse(node, "a version field")
        key, where = node.dotted, (node.start, node.end)

        def column(cols: Columns) -> Any:
            try:
                return cols[key]
            except KeyError:
                raise runtime_error(f"missing column '{key}'", "missing_field", where) from None

        return column

    def _unary(self, node: n.Unary) -> Kernel:
        f = self.build(node.operand)
        return lambda cols: np.negative(f(cols))

    def _not(self, node: n.Not) -> Kernel:
        f = self.boolean(node.operand)
        return lambda cols: np.logical_not(f(cols))

    def _boolop(self, node: n.BoolOp) -> Kernel:
        fs = [self.boolean(operand) for operand in node.operands]
        combine = np.logical_and if node.op == "and" else np.logical_or

        def boolop(cols: Columns) -> Any:
            result = fs[0](cols)
            for f in fs[1:]:
                result = combine(result, f(cols))
            return result

        return boolop

    def _binary(self, node: n.Binary) -> Kernel:
        if self.notes.type_of(node).name == "string":
            raise _refuse(node, "string concatenation")
        op = _power((node.start, node.end)) if node.op == "**" else _ARITH[node.op]
        lf, rf = self.build(node.left), self.build(node.right)
        return lambda cols: op(lf(cols), rf(cols))

    def _compare(self, node: n.Compare) -> Kernel:
        lf, rf = self.build(node.left), self.build(node.right)
        if node.op == "==":
            return lambda cols: _equal(lf(cols), rf(cols))
        if node.op == "!=":
            return lambda cols: np.logical_not(_equal(lf(cols), rf(cols)))
        order = _ORDER[node.op]
        return lambda cols: order(lf(cols), rf(cols))

    def _in(self, node: n.In) -> Kernel:
        box = self.notes.const(node.container)
        if not isinstance(box, list) or any(isinstance(v, (list, Version)) for v in box):
            raise _refuse(node, "'in' without a constant list of scalars")
        item, negated = self.build(node.item), node.negate
        values = [v for v in box if v is not None]
        with_null = len(values) != len(box)

        def member(cols: Columns) -> Any:
            v = item(cols)
            found = np.isin(v, values)
            if with_null:
                found = np.logical_or(found, vector_is_null(v))
            return np.logical_not(found) if negated else found

        return member

    def _call(self, node: n.Call) -> Kernel:
        impl = FUNCTIONS[node.name].vector_impl
        if impl is None:
            raise _refuse(node, f"{node.name}()")
        fs = [self.build(arg) for arg in node.args]
        return lambda cols: impl(*[f(cols) for f in fs])
