"""Checked AST -> a Python closure ``row -> value`` (and, via :mod:`.vector`, numpy kernels).

No text is ever evaluated: each node becomes a small closure over its children's closures, constants are
folded by the checker, and values are only read with ``row[name]`` (fields) or ``Mapping.get`` (lenient lookups
inside untyped values). Common shapes are specialised: ``field <op> constant`` is a single closure doing
``row[name] > c``; ``and``/``or`` of two or three operands are single expressions; ``x in [constants]`` tests a
frozenset.

Run-time semantics (see :mod:`.ops` for the details):

* a declared field or namespace attribute that is absent raises ``ExprError(code="missing_field")``; a key
  absent inside an untyped (``any``) value is null;
* ordering comparisons with null are false, ``==``/``!=`` are plain equality; arithmetic with null is null;
* ``x / 0`` and ``x % 0`` are null; ``**`` beyond the limits raises ``overflow``;
* a value of the wrong type at run time raises ``runtime_type``; a boolean context accepts true/false/null
  (null is false).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from ..errors import ExprError
from . import nodes as n
from .check import COMPARE_OPS, NOCONST, Annotations, FieldRef, annotate
from .functions import FUNCTIONS, bind
from .ops import NUMBER_CLASSES, Where, binary_op, compare_failed, compare_values, dig, negate, runtime_error, truth
from .types import BOOLEAN, Scope, Type
from .version import to_version

__all__ = ["compile_expr", "compile_vector", "Evaluator"]

Evaluator = Callable[[Any], Any]
_MIRROR = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ALWAYS_BOOL = (n.Compare, n.In, n.Not, n.BoolOp)
#: Plain operators for ``number <op> constant`` when the constant is a non-zero number (no null/zero cases).
_FAST_ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "%": operator.mod,
}


def compile_expr(node: n.Node, scope: Scope, *, expect: Type | None = None, text: str = "") -> Evaluator:
    """Check ``node`` against ``scope`` (raising :class:`ExprError`) and return ``row -> value``.

    With ``expect=BOOLEAN`` the result is always ``True``/``False`` (null counts as false).
    """
    notes = annotate(node, scope, expect, text)
    builder = _Builder(notes)
    if expect == BOOLEAN:
        return builder.boolean(node)
    return builder.build(node)


def compile_vector(node: n.Node, scope: Scope, *, expect: Type | None = None, text: str = "") -> Any:
    """Columnar evaluation; see :func:`iot_dsl.expr.vector.compile_vector` (re-exported here)."""
    from .vector import compile_vector as _compile_vector

    return _compile_vector(node, scope, expect=expect, text=text)


def _missing(name: str, where: Where) -> ExprError:
    return runtime_error(f"missing field '{name}'", "missing_field", where)


def _not_mapping(row: Any, where: Where) -> ExprError:
    return runtime_error(f"expected a mapping to read fields from, got {type(row).__name__}", "runtime_type", where)


def _constant(value: Any) -> Evaluator:
    if isinstance(value, list):
        return lambda row: list(value)
    return lambda row: value


def _bare_getter(name: str, where: Where) -> Evaluator:
    def get(row: Any) -> Any:
        try:
            return row[name]
        except KeyError:
            raise _missing(name, where) from None
        except TypeError:
            raise _not_mapping(row, where) from None

    return get


def _namespace_getter(ref: FieldRef, where: Where) -> Evaluator:
    assert ref.namespace is not None and ref.key is not None
    fetch = ref.namespace.getter or _bare_getter(ref.root, where)
    key, dotted = ref.key, f"{ref.root}.{ref.key}"

    def get(row: Any) -> Any:
        try:
            mapping = fetch(row)
        except KeyError:
            raise _missing(ref.root, where) from None
        if mapping is None:
            raise _missing(dotted, where)
        try:
            return mapping[key]
        except KeyError:
            raise _missing(dotted, where) from None
        except TypeError:
            raise _not_mapping(mapping, where) from None

    return get


def _compare_field(name: str, op: str, c: Any, where: Where) -> Evaluator:
    """``row[name] <op> c`` as one closure (the hot shape of conditions)."""

    def fail(row: Any, error: Exception) -> bool:
        if isinstance(error, KeyError):
            raise _missing(name, where) from None
        try:
            value = row[name]
        except TypeError:
            raise _not_mapping(row, where) from None
        return compare_failed(value, c, op, where)

    if op == ">":

        def f(row: Any) -> Any:
            try:
                return row[name] > c
            except (KeyError, TypeError) as exc:
                return fail(row, exc)

    elif op == ">=":

        def f(row: Any) -> Any:
            try:
                return row[name] >= c
            except (KeyError, TypeError) as exc:
                return fail(row, exc)

    elif op == "<":

        def f(row: Any) -> Any:
            try:
                return row[name] < c
            except (KeyError, TypeError) as exc:
                return fail(row, exc)

    elif op == "<=":

        def f(row: Any) -> Any:
            try:
                return row[name] <= c
            except (KeyError, TypeError) as exc:
                return fail(row, exc)

    elif op == "==":

        def f(row: Any) -> Any:
            try:
                return row[name] == c
            except (KeyError, TypeError) as exc:
                return fail(row, exc)

    else:

        def f(row: Any) -> Any:
            try:
                return row[name] != c
            except (KeyError, TypeError) as exc:
                return fail(row, exc)

    return f


def _member(v: Any, box: Any, where: Where) -> bool:
    """Dynamic ``v in box``: lists by equality, strings by substring, null container is false."""
    if box is None:
        return False
    if isinstance(box, str):
        if isinstance(v, str):
            return v in box
        if v is None:
            return False
    elif isinstance(box, (list, tuple)):
        return v in box
    raise runtime_error(
        f"'in' needs a list or a string on the right, got {type(box).__name__}"
        if not isinstance(box, str)
        else f"'in' with a string on the right needs a string on the left, got {type(v).__name__}",
        "runtime_type",
        where,
    )


class _Builder:
    """Turns annotated nodes into closures."""

    def __init__(self, notes: Annotations) -> None:
        self.notes = notes
        self.builders: dict[type, Callable[[Any], Evaluator]] = {
            n.Field: self._field,
            n.Unary: self._unary,
            n.Not: self._not,
            n.BoolOp: self._boolop,
            n.Binary: self._binary,
            n.Compare: self._compare,
            n.In: self._in,
            n.ListLit: self._list,
            n.Call: self._call,
        }

    def build(self, node: n.Node) -> Evaluator:
        """The closure computing ``node`` (constants become constant closures)."""
        value = self.notes.const(node)
        if value is not NOCONST:
            return _constant(value)
        f = self.builders[type(node)](node)
        if id(node) in self.notes.as_version:
            inner = f
            f = lambda row: to_version(inner(row))  # noqa: E731
        return f

    def boolean(self, node: n.Node) -> Evaluator:
        """A closure for ``node`` in a boolean context: always True/False (null is False)."""
        f = self.build(node)
        if isinstance(node, _ALWAYS_BOOL) or self.notes.const(node) in (True, False):
            return f
        where = (node.start, node.end)

        def as_bool(row: Any) -> bool:
            value = f(row)
            if value is True or value is False:
                return value
            return truth(value, where)

        return as_bool

    # ---- nodes ----------------------------------------------------------------------------------------------

    def _field(self, node: n.Field) -> Evaluator:
        ref = self.notes.fields[id(node)]
        where = (node.start, node.end)
        get = _bare_getter(ref.root, where) if ref.namespace is None else _namespace_getter(ref, where)
        if ref.rest:
            base, rest = get, ref.rest
            get = lambda row: dig(base(row), rest)  # noqa: E731
        if ref.type.name == "version":
            raw = get
            get = lambda row: to_version(raw(row))  # noqa: E731
        return get

    def _unary(self, node: n.Unary) -> Evaluator:
        f, neg = self.build(node.operand), negate((node.start, node.end))
        return lambda row: neg(f(row))

    def _not(self, node: n.Not) -> Evaluator:
        f = self.boolean(node.operand)
        return lambda row: not f(row)

    def _boolop(self, node: n.BoolOp) -> Evaluator:
        fs = [self.boolean(operand) for operand in node.operands]
        if node.op == "and":
            if len(fs) == 2:
                a, b = fs
                return lambda row: a(row) and b(row)
            if len(fs) == 3:
                a, b, c = fs
                return lambda row: a(row) and b(row) and c(row)
            return lambda row: all(f(row) for f in fs)
        if len(fs) == 2:
            a, b = fs
            return lambda row: a(row) or b(row)
        if len(fs) == 3:
            a, b, c = fs
            return lambda row: a(row) or b(row) or c(row)
        return lambda row: any(f(row) for f in fs)

    def _binary(self, node: n.Binary) -> Evaluator:
        where = (node.start, node.end)
        op = binary_op(node.op, where)
        lc, rc = self.notes.const(node.left), self.notes.const(node.right)
        if rc is not NOCONST:
            lf = self.build(node.left)
            fast = _FAST_ARITH.get(node.op) if rc.__class__ in NUMBER_CLASSES and rc else None
            if fast is None:
                return lambda row: op(lf(row), rc)

            def arith(row: Any) -> Any:  # number <op> non-zero number constant, inline
                a = lf(row)
                if a.__class__ in NUMBER_CLASSES:
                    try:
                        return fast(a, rc)
                    except OverflowError:
                        return op(a, rc)  # raises the positioned overflow error
                return op(a, rc)

            return arith
        rf = self.build(node.right)
        if lc is not NOCONST:
            return lambda row: op(lc, rf(row))
        lf = self.build(node.left)
        return lambda row: op(lf(row), rf(row))

    def _plain_field(self, node: n.Node) -> str | None:
        """The name when ``node`` is a bare, typed-as-is field read straight from ``row``, else None."""
        if not isinstance(node, n.Field) or id(node) in self.notes.as_version:
            return None
        ref = self.notes.fields[id(node)]
        if ref.namespace is not None or ref.rest or ref.type.name == "version":
            return None
        return ref.root

    def _compare(self, node: n.Compare) -> Evaluator:
        op, where = node.op, (node.start, node.end)
        lc, rc = self.notes.const(node.left), self.notes.const(node.right)
        if rc is not NOCONST and (name := self._plain_field(node.left)) is not None:
            return _compare_field(name, op, rc, where)
        if lc is not NOCONST and (name := self._plain_field(node.right)) is not None:
            return _compare_field(name, _MIRROR[op], lc, where)
        fn = COMPARE_OPS[op]
        lf = self.build(node.left)
        if rc is not NOCONST:

            def compare_const(row: Any) -> Any:
                a = lf(row)
                try:
                    return fn(a, rc)
                except TypeError:
                    return compare_failed(a, rc, op, where)

            return compare_const
        rf = self.build(node.right)
        return lambda row: compare_values(fn, lf(row), rf(row), op, where)

    def _in(self, node: n.In) -> Evaluator:
        item, negated, where = self.build(node.item), node.negate, (node.start, node.end)
        box = self.notes.const(node.container)
        if box is NOCONST:
            cf = self.build(node.container)
            return lambda row: _member(item(row), cf(row), where) != negated
        if isinstance(box, list):
            try:
                members: Any = frozenset(box)
            except TypeError:
                members = tuple(box)

            name = self._plain_field(node.item)
            if name is not None and not negated:
                get = item

                def member_field(row: Any) -> bool:
                    try:
                        return row[name] in members
                    except (KeyError, TypeError):
                        get(row)  # raises missing_field / runtime_type when that was the cause
                        return False  # an unhashable value is in no set of constants

                return member_field

            def member(row: Any) -> bool:
                try:
                    return (item(row) in members) != negated
                except TypeError:  # an unhashable value is in no set of constants
                    return negated

            return member
        return lambda row: _member(item(row), box, where) != negated

    def _list(self, node: n.ListLit) -> Evaluator:
        fs = [self.build(item) for item in node.items]
        return lambda row: [f(row) for f in fs]

    def _call(self, node: n.Call) -> Evaluator:
        fs = [self.build(arg) for arg in node.args]
        call = bind(FUNCTIONS[node.name], (node.start, node.end), len(fs))
        if len(fs) == 1:
            (a,) = fs
            return lambda row: call(a(row))
        if len(fs) == 2:
            a, b = fs
            return lambda row: call(a(row), b(row))
        return lambda row: call(*[f(row) for f in fs])
