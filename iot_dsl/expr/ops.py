"""Run-time semantics of operators, shared by the compiler (closures) and the checker (constant folding).

* **null**: arithmetic with null gives null; ordering comparisons (``< <= > >=``) with null are false;
  ``==``/``!=`` are plain equality (``null == null`` is true, ``x != null`` is true for any non-null x);
  ``in`` with a null container is false (so ``not in`` is true).
* **zero**: ``x / 0`` and ``x % 0`` give null (and so does ``0 ** -1``); a negative base with a fractional
  exponent gives null too.
* **overflow**: ``a ** b`` with ``|b| > 1024`` or a result beyond 1e300 raises ``ExprError(code="overflow")``,
  as does any arithmetic Python cannot hold in a float; the engine dead-letters the event.
* **types**: operands are checked at run time (payloads lie): arithmetic needs numbers (``+`` also joins two
  strings); anything else raises ``ExprError(code="runtime_type")``. Strings are never repeated or formatted.
"""

from __future__ import annotations

import numbers
import operator
import sys
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ExprError

__all__ = [
    "MAX_EXPONENT",
    "MAX_MAGNITUDE",
    "NUMBER_CLASSES",
    "is_number",
    "plain_number",
    "binary_op",
    "negate",
    "power",
    "compare_failed",
    "compare_values",
    "truth",
    "dig",
    "runtime_error",
]

MAX_EXPONENT = 1024
MAX_MAGNITUDE = 1e300
#: Classes taken as numbers on the fast path (bool is deliberately absent).
NUMBER_CLASSES = frozenset({int, float})

Where = tuple[int, int]


def runtime_error(message: str, code: str, where: Where) -> ExprError:
    """An error raised while evaluating, positioned at the sub-expression ``where`` = (start, end)."""
    return ExprError(message, code=code, offset=where[0], end_offset=where[1])


def is_number(value: Any) -> bool:
    """True for int/float (and numpy scalars), false for bool, None and everything else."""
    cls = value.__class__
    return cls in NUMBER_CLASSES or (cls is not bool and isinstance(value, numbers.Real))


def plain_number(value: Any) -> int | float:
    """A numpy (or other ``numbers.Real``) scalar as a plain int or float."""
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def power(a: Any, b: Any, where: Where = (0, 0)) -> Any:
    """Guarded ``a ** b`` on numbers: null for 0**-n and complex results, ``overflow`` when too large."""
    if abs(b) > MAX_EXPONENT:
        raise runtime_error(f"overflow: exponent {b} exceeds {MAX_EXPONENT}", "overflow", where)
    if a.__class__ is int and b.__class__ is int and b > 0 and abs(a) > 1:
        if (abs(a).bit_length() - 1) * b > 1000:  # 2**1000 > 1e300: refuse before computing
            raise runtime_error(f"overflow: {a} ** {b} is too large", "overflow", where)
    try:
        result = a**b
    except ZeroDivisionError:
        return None
    except OverflowError:
        raise runtime_error(f"overflow: {a} ** {b} is too large", "overflow", where) from None
    if result.__class__ is complex:
        return None
    if abs(result) > MAX_MAGNITUDE:
        raise runtime_error(f"overflow: {a} ** {b} is too large", "overflow", where)
    return result


def _divide(a: Any, b: Any) -> Any:
    return a / b if b else None


def _modulo(a: Any, b: Any) -> Any:
    return a % b if b else None


_PLAIN: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
    "%": _modulo,
}


def binary_op(op: str, where: Where = (0, 0)) -> Callable[[Any, Any], Any]:
    """A function ``(a, b) -> a op b`` with the module's null/zero/overflow/type rules for ``+ - * / % **``."""
    if op == "**":
        fast: Callable[[Any, Any], Any] = lambda a, b: power(a, b, where)  # noqa: E731
    elif op in _PLAIN:
        fast = _PLAIN[op]
    else:
        raise ValueError(f"unknown operator {op!r}")

    def checked(a: Any, b: Any) -> Any:
        try:
            return fast(a, b)
        except OverflowError:
            raise runtime_error(f"overflow in '{op}'", "overflow", where) from None

    def apply(a: Any, b: Any) -> Any:
        if a.__class__ in NUMBER_CLASSES and b.__class__ in NUMBER_CLASSES:
            try:
                return fast(a, b)
            except OverflowError:
                raise runtime_error(f"overflow in '{op}'", "overflow", where) from None
        if a is None or b is None:
            return None
        if is_number(a) and is_number(b):
            return checked(plain_number(a), plain_number(b))
        if op == "+" and isinstance(a, str) and isinstance(b, str):
            return a + b
        raise runtime_error(f"cannot apply '{op}' to {_kind(a)} and {_kind(b)}", "runtime_type", where)

    return apply


def negate(where: Where = (0, 0)) -> Callable[[Any], Any]:
    """A function ``a -> -a`` for numbers (null stays null; anything else is ``runtime_type``)."""

    def apply(a: Any) -> Any:
        if a.__class__ in NUMBER_CLASSES:
            return -a  # type: ignore[operator]  # an int or a float (mypy reads the class test as object)
        if a is None:
            return None
        if is_number(a):
            return -plain_number(a)
        raise runtime_error(f"cannot negate {_kind(a)}", "runtime_type", where)

    return apply


def compare_values(fn: Callable[[Any, Any], bool], a: Any, b: Any, op: str, where: Where = (0, 0)) -> Any:
    """``fn(a, b)`` for the comparison ``op``, with :func:`compare_failed` when Python refuses to compare."""
    try:
        return fn(a, b)
    except TypeError:
        return compare_failed(a, b, op, where)


def compare_failed(a: Any, b: Any, op: str, where: Where = (0, 0)) -> bool:
    """Called when ``a op b`` raised TypeError: false if either side is null, else a ``runtime_type`` error."""
    if a is None or b is None:
        return False
    raise runtime_error(f"cannot compare {_kind(a)} with {_kind(b)} using '{op}'", "runtime_type", where)


def truth(value: Any, where: Where = (0, 0)) -> bool:
    """A boolean operand at run time: true/false pass, null is false, anything else is ``runtime_type``."""
    if value is True or value is False:
        return value
    if value is None:
        return False
    numpy = sys.modules.get("numpy")  # a numpy bool can only exist once numpy is imported
    if numpy is not None and isinstance(value, numpy.bool_):
        return bool(value)
    raise runtime_error(f"expected a boolean, got {_kind(value)}", "runtime_type", where)


def dig(value: Any, keys: tuple[str, ...]) -> Any:
    """Lenient nested lookup inside an untyped value: a missing key or a non-mapping gives null."""
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key)
        else:
            return None
    return value
