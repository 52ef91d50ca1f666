"""Type checking and constant folding: AST + :class:`Scope` -> result :class:`Type` (or an ``ExprError``).

:func:`check_expr` returns the type; :func:`annotate` returns everything the compilers need (each node's type,
folded constants, how each field is reached, which values need a run-time version coercion).

Error codes: ``unknown_field`` and ``unknown_function`` (with a did-you-mean hint), ``arity``, ``type``,
``refused`` (a name starting with ``_``), ``too_large`` (a constant beyond 1e300, or ``**`` with a constant
exponent beyond 1024), ``bad_version`` (a version literal that does not parse), ``too_deep``.

Folding evaluates literal-only subtrees with exactly the run-time rules of :mod:`.ops`/:mod:`.functions`
(so ``1 / 0`` folds to null); only the limits above are stricter.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ExprError, did_you_mean
from . import nodes as n
from .functions import FUNCTIONS, ArgTypeError, FunctionSpec
from .ops import MAX_EXPONENT, MAX_MAGNITUDE, binary_op, compare_values, is_number, negate, truth
from .parser import MAX_DEPTH
from .types import (
    ANY,
    BOOLEAN,
    DURATION,
    INTEGER,
    NULL,
    NUMBER,
    STRING,
    VERSION,
    Namespace,
    Scope,
    Type,
    assignable,
    is_numeric,
    join,
    list_of,
)
from .version import VersionError, parse_version

__all__ = ["check_expr", "annotate", "Annotations", "FieldRef", "NOCONST", "COMPARE_OPS"]


class _NoConst:
    def __repr__(self) -> str:
        return "NOCONST"


#: Marks "not a constant" (``None`` is the constant null).
NOCONST: Any = _NoConst()

COMPARE_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True)
class FieldRef:
    """How a :class:`~.nodes.Field` is read: ``row[root]`` or the namespace's ``key``, then lenient ``rest``."""

    root: str
    namespace: Namespace | None
    key: str | None
    rest: tuple[str, ...]
    type: Type


@dataclass
class Annotations:
    """Per-node facts keyed by ``id(node)`` (valid while the tree is alive)."""

    types: dict[int, Type] = field(default_factory=dict)
    consts: dict[int, Any] = field(default_factory=dict)
    fields: dict[int, FieldRef] = field(default_factory=dict)
    as_version: set[int] = field(default_factory=set)

    def type_of(self, node: n.Node) -> Type:
        """The checked type of ``node``."""
        return self.types[id(node)]

    def const(self, node: n.Node) -> Any:
        """The folded value of ``node``, or :data:`NOCONST`."""
        return self.consts.get(id(node), NOCONST)


def check_expr(node: n.Node, scope: Scope, expect: Type | None = None, text: str = "") -> Type:
    """Check ``node`` against ``scope``; returns its type or raises :class:`ExprError`.

    With ``expect`` the result must fit that type (``expect=BOOLEAN`` reports ``condition must be boolean``).
    ``text`` is the source the node was parsed from; it only improves messages.
    """
    annotations = annotate(node, scope, expect, text)
    return annotations.type_of(node)


def annotate(node: n.Node, scope: Scope, expect: Type | None = None, text: str = "") -> Annotations:
    """Check ``node`` (as :func:`check_expr`) and return the :class:`Annotations` the compilers use."""
    checker = _Checker(scope, text)
    result = checker.check(node)
    if expect is not None and (result.name == "null" or not assignable(result, expect)):
        if expect == BOOLEAN:
            message = f"condition must be boolean, got {result}"
        else:
            message = f"expected {expect}, got {result}"
        raise checker.error(node, message, "type")
    return checker.notes


def _boolish(t: Type) -> bool:
    return t.name in ("boolean", "any", "null")


def _family(t: Type) -> str:
    return "number" if is_numeric(t) else t.name


def _arith_type(op: str, left: Type, right: Type) -> Type | None:
    """Result type of ``left op right`` for ``+ - * / % **``, or None when the operation is not defined."""
    lf, rf = _family(left), _family(right)
    loose = {"any", "null"}
    if lf in loose or rf in loose:
        other = rf if lf in loose else lf
        if other in loose:
            return ANY if "any" in (lf, rf) else NULL
        if other == "number":
            return NUMBER
        if other == "duration" and op != "**":
            return ANY if op == "/" else DURATION
        return STRING if other == "string" and op == "+" else None
    if lf == rf == "number":
        both_int = left.name == right.name == "integer"
        return INTEGER if both_int and op in ("+", "-", "*", "%") else NUMBER
    if lf == rf == "duration":
        return {"+": DURATION, "-": DURATION, "%": DURATION, "/": NUMBER}.get(op)
    if {lf, rf} == {"duration", "number"}:
        if op == "*" or (op == "/" and lf == "duration"):
            return DURATION
        return None
    return STRING if lf == rf == "string" and op == "+" else None


def _equatable(a: Type, b: Type) -> bool:
    """May values of these types be tested with ``==`` (no version coercion considered)?"""
    if a.name in ("any", "null") or b.name in ("any", "null"):
        return True
    if is_numeric(a) and is_numeric(b):
        return True
    if a.is_list and b.is_list:
        return join(a, b) is not None
    return a == b


def _hint_for(word: str, candidates: Iterable[str]) -> str | None:
    pool = sorted(set(candidates))
    guess = did_you_mean(word, pool)
    if guess is not None:
        return f"did you mean '{guess}'?"
    if pool and len(pool) <= 12:
        return f"known names: {', '.join(pool)}"
    return None


class _Checker:
    """One checking run: visits nodes bottom-up, recording types and constants into ``notes``."""

    def __init__(self, scope: Scope, text: str) -> None:
        self.scope = scope
        self.text = text
        self.notes = Annotations()
        self.depth = 0
        self.visitors: dict[type, Callable[[Any], Type]] = {
            n.Literal: self._literal,
            n.Duration: self._duration,
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

    # ---- plumbing -------------------------------------------------------------------------------------------

    def error(self, node: n.Node, message: str, code: str, hint: str | None = None) -> ExprError:
        """An :class:`ExprError` spanning ``node``."""
        return ExprError(message, code=code, offset=node.start, end_offset=node.end, hint=hint)

    def check(self, node: n.Node) -> Type:
        """Check one node (children first); records and returns its type."""
        visit = self.visitors.get(type(node))
        if visit is None:
            raise self.error(node, f"unsupported expression node {type(node).__name__}", "syntax")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(node, f"expression nests too deeply (more than {MAX_DEPTH} levels)", "too_deep")
        try:
            result = visit(node)
        finally:
            self.depth -= 1
        self.notes.types[id(node)] = result
        return result

    def const(self, node: n.Node) -> Any:
        return self.notes.consts.get(id(node), NOCONST)

    def fold(self, node: n.Node, value: Any) -> None:
        """Record ``value`` as the constant of ``node``, refusing numbers beyond :data:`MAX_MAGNITUDE`."""
        if is_number(value) and not abs(value) <= MAX_MAGNITUDE:
            raise self.error(node, f"number too large: {self._source(node)}", "too_large")
        self.notes.consts[id(node)] = value

    def _source(self, node: n.Node) -> str:
        snippet = self.text[node.start : node.end] if self.text and node.end > node.start else ""
        return (snippet[:60] + "...") if len(snippet) > 60 else (snippet or "constant expression")

    def to_version(self, node: n.Node) -> None:
        """Make ``node`` (a string or untyped value) a version: fold a constant now, else coerce at run time."""
        value = self.const(node)
        if value is NOCONST:
            self.notes.as_version.add(id(node))
        elif value is not None:
            try:
                self.notes.consts[id(node)] = parse_version(value)
            except VersionError as exc:
                raise self.error(node, str(exc), "bad_version") from None
            self.notes.types[id(node)] = VERSION

    # ---- leaves ---------------------------------------------------------------------------------------------

    def _literal(self, node: n.Literal) -> Type:
        self.fold(node, node.value)
        return node.type

    def _duration(self, node: n.Duration) -> Type:
        self.fold(node, node.seconds)
        return DURATION

    def _field(self, node: n.Field) -> Type:
        for part in node.path:
            if part.startswith("_"):
                raise self.error(node, f"names starting with '_' are not allowed: '{part}'", "refused")
        ref = self._resolve(node)
        self.notes.fields[id(node)] = ref
        return ref.type

    def _resolve(self, node: n.Field) -> FieldRef:
        scope, (root, *rest) = self.scope, node.path
        if root in scope.namespaces and rest:
            ns = scope.namespaces[root]
            key, deeper = rest[0], tuple(rest[1:])
            if key not in ns.fields:
                hint = _hint_for(key, ns.fields)
                raise self.error(node, f"unknown field '{key}' of '{root}'", "unknown_field", hint)
            kind = ns.fields[key]
            if deeper and kind.name != "any":
                raise self.error(node, f"'{root}.{key}' is a {kind}; it has no field '{deeper[0]}'", "type")
            return FieldRef(root, ns, key, deeper, ANY if deeper else kind)
        if root in scope.fields:
            kind = scope.fields[root]
            if rest and kind.name != "any":
                raise self.error(node, f"'{root}' is a {kind}; it has no field '{rest[0]}'", "type")
            return FieldRef(root, None, None, tuple(rest), ANY if rest else kind)
        if scope.allow_unknown:
            return FieldRef(root, None, None, tuple(rest), ANY)
        if root in scope.namespaces:
            some = next(iter(sorted(scope.namespaces[root].fields)), "field")
            raise self.error(
                node, f"'{root}' is a namespace, not a value", "unknown_field", f"name one of its fields, e.g. {root}.{some}"
            )
        hint = _hint_for(root, [*scope.fields, *scope.namespaces])
        raise self.error(node, f"unknown field '{root}'", "unknown_field", hint)

    # ---- operators ------------------------------------------------------------------------------------------

    def _unary(self, node: n.Unary) -> Type:
        kind = self.check(node.operand)
        if not (is_numeric(kind) or kind.name in ("duration", "any", "null")):
            raise self.error(node, f"cannot negate {kind}", "type")
        value = self.const(node.operand)
        if value is not NOCONST:
            self.fold(node, negate((node.start, node.end))(value))
        return kind

    def _not(self, node: n.Not) -> Type:
        kind = self.check(node.operand)
        if not _boolish(kind):
            raise self.error(node.operand, f"'not' needs a boolean, got {kind}", "type")
        value = self.const(node.operand)
        if value is not NOCONST:
            self.fold(node, not truth(value))
        return BOOLEAN

    def _boolop(self, node: n.BoolOp) -> Type:
        values = []
        for operand in node.operands:
            kind = self.check(operand)
            if not _boolish(kind):
                raise self.error(operand, f"'{node.op}' needs booleans, got {kind}", "type")
            values.append(self.const(operand))
        if all(v is not NOCONST for v in values):
            truths = [truth(v) for v in values]
            self.fold(node, all(truths) if node.op == "and" else any(truths))
        return BOOLEAN

    def _binary(self, node: n.Binary) -> Type:
        left, right = self.check(node.left), self.check(node.right)
        result = _arith_type(node.op, left, right)
        if result is None:
            hint = None
            if {_family(left), _family(right)} == {"duration", "number"} and node.op in ("+", "-", "%"):
                hint = "give the number a unit, e.g. 30s"
            elif "string" in (left.name, right.name) and node.op == "*":
                hint = "strings cannot be repeated"
            raise self.error(node, f"cannot apply '{node.op}' to {left} and {right}", "type", hint)
        lv, rv = self.const(node.left), self.const(node.right)
        if node.op == "**" and is_number(rv) and abs(rv) > MAX_EXPONENT:
            raise self.error(
                node, f"number too large: exponent {rv} exceeds {MAX_EXPONENT} in {self._source(node)}", "too_large"
            )
        if lv is not NOCONST and rv is not NOCONST:
            try:
                value = binary_op(node.op, (node.start, node.end))(lv, rv)
            except ExprError as exc:
                raise self.error(node, f"number too large: {self._source(node)}", "too_large") from exc
            self.fold(node, value)
        return result

    def _compare(self, node: n.Compare) -> Type:
        left, right = self.check(node.left), self.check(node.right)
        ordering = node.op not in ("==", "!=")
        names = {left.name, right.name}
        if "version" in names and names - {"version"} and names - {"version"} <= {"string", "any"}:
            self.to_version(node.right if left.name == "version" else node.left)
        elif "null" in names and "any" not in names and ordering:
            raise self.error(node, f"cannot order null with '{node.op}'", "type", "test for null with == null")
        elif not _equatable(left, right):
            hint = None
            if {_family(left), _family(right)} == {"duration", "number"}:
                hint = "write the number with a unit, e.g. 30s"
            raise self.error(node, f"{left} compared with {right}", "type", hint)
        elif ordering and (left.name == "boolean" or left.is_list) and right.name not in ("any", "null"):
            raise self.error(node, f"cannot order {left} values with '{node.op}'", "type")
        lv, rv = self.const(node.left), self.const(node.right)
        if lv is not NOCONST and rv is not NOCONST:
            self.fold(node, compare_values(COMPARE_OPS[node.op], lv, rv, node.op))
        return BOOLEAN

    def _in(self, node: n.In) -> Type:
        item, box = self.check(node.item), self.check(node.container)
        if box.is_list:
            assert box.elem is not None
            elem = box.elem
            const_list = isinstance(node.container, n.ListLit) and self.const(node.container) is not NOCONST
            if item.name == "version" and elem.name == "string" and const_list:
                assert isinstance(node.container, n.ListLit)
                self._versions_in(node.container)
            elif item.name == "string" and elem.name == "version":
                self.to_version(node.item)
            elif not _equatable(item, elem):
                raise self.error(node, f"cannot look for {item} in {box}", "type")
        elif box.name == "string":
            if item.name not in ("string", "any", "null"):
                raise self.error(node, f"'in' with a string on the right needs a string on the left, got {item}", "type")
        elif box.name not in ("any", "null"):
            raise self.error(node.container, f"'in' needs a list or a string on the right, got {box}", "type")
        iv, cv = self.const(node.item), self.const(node.container)
        if iv is not NOCONST and cv is not NOCONST:
            if isinstance(cv, str):
                found = isinstance(iv, str) and iv in cv
            else:
                found = cv is not None and iv in cv
            self.fold(node, found != node.negate)
        return BOOLEAN

    def _versions_in(self, container: n.ListLit) -> None:
        """A constant list of version strings compared with a version: parse each (errors point at the item)."""
        for item in container.items:
            self.to_version(item)
        self.notes.consts[id(container)] = [self.const(item) for item in container.items]
        self.notes.types[id(container)] = list_of(VERSION)

    def _list(self, node: n.ListLit) -> Type:
        elem: Type = NULL
        values = []
        for item in node.items:
            kind = self.check(item)
            joined = join(elem, kind)
            if joined is None:
                raise self.error(item, f"list items must share a type: {elem} and {kind}", "type")
            elem = joined
            values.append(self.const(item))
        if all(v is not NOCONST for v in values):
            self.fold(node, values)
        return list_of(ANY if elem.name == "null" else elem)

    # ---- calls ----------------------------------------------------------------------------------------------

    def _call(self, node: n.Call) -> Type:
        if node.name.startswith("_"):
            raise self.error(node, f"names starting with '_' are not allowed: '{node.name}'", "refused")
        spec = FUNCTIONS.get(node.name)
        if spec is None:
            raise self.error(node, f"unknown function '{node.name}'", "unknown_function", _hint_for(node.name, FUNCTIONS))
        self._arity(spec, node)
        kinds = [self.check(arg) for arg in node.args]
        if spec.infer is not None:
            try:
                result = spec.infer(kinds)
            except ArgTypeError as exc:
                got = kinds[exc.index]
                message = f"argument {exc.index + 1} of {spec.name}() must be {exc.expected}, got {got}"
                raise self.error(node.args[exc.index], message, "type") from None
        else:
            for index, (arg, kind) in enumerate(zip(node.args, kinds)):
                want = spec.param_type(index)
                if not assignable(kind, want):
                    message = f"argument {index + 1} of {spec.name}() must be {want}, got {kind}"
                    raise self.error(arg, message, "type")
            result = spec.return_type
        values = [self.const(arg) for arg in node.args]
        if all(v is not NOCONST for v in values):
            self.fold(node, self._fold_call(spec, node, values))
        return result

    def _arity(self, spec: FunctionSpec, node: n.Call) -> None:
        low, high = spec.arity
        count = len(node.args)
        if count >= low and (high is None or count <= high):
            return
        if high is None:
            wanted = f"at least {low} argument{'s' if low != 1 else ''}"
        elif low == high:
            wanted = f"{low} argument{'s' if low != 1 else ''}"
        else:
            wanted = f"{low} {'or' if high == low + 1 else 'to'} {high} arguments"
        raise self.error(node, f"{spec.name}() takes {wanted}, got {count}", "arity")

    def _fold_call(self, spec: FunctionSpec, node: n.Call, values: list[Any]) -> Any:
        """Evaluate a call on constants with the run-time rules, but a bad version literal is an error."""
        if not spec.handles_null and any(v is None for v in values):
            return spec.null_result
        try:
            return spec.impl(*values)
        except VersionError as exc:
            raise self.error(node, str(exc), "bad_version") from None
        except OverflowError:
            raise self.error(node, f"number too large: {self._source(node)}", "too_large") from None
        except (ValueError, ZeroDivisionError):
            return spec.null_result
        except TypeError as exc:  # pragma: no cover - the argument types were checked above
            raise self.error(node, f"{spec.name}(): {exc}", "type") from None

