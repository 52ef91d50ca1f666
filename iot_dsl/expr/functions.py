"""The closed function registry: the only callables an expression can reach.

A call ``name(args)`` is resolved by exact lookup in :data:`FUNCTIONS` (never by attribute access on a user
string). Each :class:`FunctionSpec` carries its argument and return types for the checker, a scalar ``impl``
and optionally a numpy ``vector_impl`` (``None`` makes the function scalar-only).

Run-time rules applied around every ``impl`` (:func:`bind`): any null argument gives ``null_result`` (null,
or false for predicates) unless ``handles_null``; ``ValueError``/``ZeroDivisionError`` (a domain error such as
``sqrt(-1)``, ``log(0)``, ``number("abc")``, an invalid version) give null; ``OverflowError`` raises
``ExprError(code="overflow")``; ``TypeError`` (a payload of the wrong type) raises ``runtime_type``.
Later modules add functions with :func:`register`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from .ops import MAX_MAGNITUDE, Where, runtime_error
from .types import ANY, BOOLEAN, INTEGER, NULL, NUMBER, STRING, VERSION, Type, is_numeric, join
from .version import Version, parse_version



class _LazyNumpy:
    """numpy, imported on first use: the scalar path (and ``import iot_dsl``) never needs it."""

    def __getattr__(self, name: str) -> Any:
        import numpy

        return getattr(numpy, name)


np: Any = _LazyNumpy()

__all__ = ["FunctionSpec", "ArgTypeError", "FUNCTIONS", "register", "bind", "vector_is_null", "EARTH_RADIUS_KM"]

EARTH_RADIUS_KM = 6371.0088


class ArgTypeError(Exception):
    """Raised by a spec's ``infer``: argument ``index`` (0-based) should have been ``expected``."""

    def __init__(self, index: int, expected: str) -> None:
        super().__init__(expected)
        self.index = index
        self.expected = expected


@dataclass(frozen=True)
class FunctionSpec:
    """One function: name, signature, scalar and vector implementations.

    ``arg_types`` are the parameter types (the last repeats when ``variadic``); ``min_args`` (default: all of
    them) allows optional trailing parameters. ``infer`` replaces the per-argument check for polymorphic
    functions: it gets the argument types and returns the result type, or raises :class:`ArgTypeError`.
    """

    name: str
    arg_types: tuple[Type, ...]
    return_type: Type
    impl: Callable[..., Any]
    vector_impl: Callable[..., Any] | None = None
    variadic: bool = False
    doc: str = ""
    min_args: int | None = None
    infer: Callable[[Sequence[Type]], Type] | None = None
    null_result: Any = None
    handles_null: bool = False

    @property
    def arity(self) -> tuple[int, int | None]:
        """``(fewest, most)`` arguments; ``most`` is None for variadic functions."""
        low = len(self.arg_types) if self.min_args is None else self.min_args
        return low, None if self.variadic else len(self.arg_types)

    def param_type(self, index: int) -> Type:
        """The declared type of argument ``index`` (the last type repeats for variadic functions)."""
        return self.arg_types[min(index, len(self.arg_types) - 1)]


FUNCTIONS: dict[str, FunctionSpec] = {}


def register(spec: FunctionSpec) -> FunctionSpec:
    """Add ``spec`` to :data:`FUNCTIONS`; raises ``ValueError`` for a duplicate or a non-identifier/private name."""
    if not spec.name.isidentifier() or spec.name.startswith("_"):
        raise ValueError(f"invalid function name {spec.name!r}")
    if spec.name in FUNCTIONS:
        raise ValueError(f"function {spec.name!r} is already registered")
    FUNCTIONS[spec.name] = spec
    return spec


def bind(spec: FunctionSpec, where: Where = (0, 0), nargs: int | None = None) -> Callable[..., Any]:
    """The run-time callable for ``spec`` with the null/domain/overflow/type rules of the module doc.

    With ``nargs=1`` the result is a faster one-argument function.
    """
    impl, null_result, name = spec.impl, spec.null_result, spec.name
    check_null = not spec.handles_null

    def failed(exc: Exception, args: tuple[Any, ...]) -> Any:
        if isinstance(exc, OverflowError):
            raise runtime_error(f"overflow in {name}()", "overflow", where) from None
        if isinstance(exc, TypeError):
            kinds = ", ".join("null" if a is None else type(a).__name__ for a in args)
            raise runtime_error(f"{name}() cannot take ({kinds})", "runtime_type", where) from None
        return null_result  # ValueError / ZeroDivisionError: a domain error is null

    if nargs == 1:

        def call1(arg: Any) -> Any:
            if arg is None and check_null:
                return null_result
            try:
                return impl(arg)
            except (ArithmeticError, ValueError, TypeError) as exc:
                return failed(exc, (arg,))

        return call1

    def call(*args: Any) -> Any:
        if check_null and None in args:
            return null_result
        try:
            return impl(*args)
        except (ArithmeticError, ValueError, TypeError) as exc:
            return failed(exc, args)

    return call


# ---- type inference helpers ------------------------------------------------------------------------------------


def _family(t: Type) -> str | None:
    if is_numeric(t):
        return "number"
    if t.name == "duration":
        return "duration"
    return None


def _same_kind(result: Type | None) -> Callable[[Sequence[Type]], Type]:
    """Arguments all numbers or all durations (``any``/``null`` fit); returns ``result`` or their join."""

    def infer(types: Sequence[Type]) -> Type:
        seen: str | None = None
        joined: Type = NULL
        for index, t in enumerate(types):
            if t.name in ("any", "null"):
                joined = join(joined, t) or ANY
                continue
            family = _family(t)
            if family is None or (seen is not None and family != seen):
                raise ArgTypeError(index, seen or "number or duration")
            seen = family
            joined = join(joined, t) or ANY
        return result if result is not None else (NUMBER if joined == NULL else joined)

    return infer


def _round_infer(types: Sequence[Type]) -> Type:
    for index, (t, want) in enumerate(zip(types, (NUMBER, INTEGER))):
        if not (t.name in ("any", "null") or (is_numeric(t) if want is NUMBER else t.name == "integer")):
            raise ArgTypeError(index, str(want))
    return INTEGER if len(types) == 1 else NUMBER


def _len_infer(types: Sequence[Type]) -> Type:
    if not (types[0].name in ("string", "any", "null") or types[0].is_list):
        raise ArgTypeError(0, "string or list")
    return INTEGER


def _coalesce_infer(types: Sequence[Type]) -> Type:
    joined: Type = NULL
    for index, t in enumerate(types):
        step = join(joined, t)
        if step is None:
            raise ArgTypeError(index, str(joined))
        joined = step
    return joined


# ---- scalar implementations ------------------------------------------------------------------------------------


def _str_only(*values: Any) -> None:
    for value in values:
        if not isinstance(value, str):
            raise TypeError("expected a string")


def _lower(s: Any) -> str:
    _str_only(s)
    return str(s).lower()


def _upper(s: Any) -> str:
    _str_only(s)
    return str(s).upper()


def _startswith(s: Any, prefix: Any) -> bool:
    _str_only(s, prefix)
    return bool(s.startswith(prefix))


def _endswith(s: Any, suffix: Any) -> bool:
    _str_only(s, suffix)
    return bool(s.endswith(suffix))


def _contains(s: Any, sub: Any) -> bool:
    _str_only(s, sub)
    return sub in s


def _len(value: Any) -> int:
    if not isinstance(value, (str, list, tuple)):
        raise TypeError("len() needs a string or a list")
    return len(value)


def _number(value: Any) -> int | float:
    """Numbers pass (booleans become 0/1); numeric strings are parsed; anything else is a domain error (null)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if not isinstance(value, str):
        raise TypeError("number() needs a number or a string")
    text = value.strip()
    if len(text) > 64:
        raise ValueError("numeric text too long")
    try:
        return int(text)
    except ValueError:
        result = float(text)
    if not math.isfinite(result) or abs(result) > MAX_MAGNITUDE:
        raise ValueError("not a finite number")
    return result


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Version)):
        return str(value)
    if isinstance(value, (list, dict)):
        try:
            return json.dumps(value, default=str, sort_keys=True)
        except RecursionError:
            raise ValueError("value nested too deeply") from None
    raise TypeError("string() cannot convert this value")


def _version(value: Any) -> Version:
    return value if isinstance(value, Version) else parse_version(value)


def _distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in kilometres between two lat/lon points in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dphi, dlam = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _round(x: Any, ndigits: Any = None) -> Any:
    """Python's round (halves to even); ``ndigits`` is clamped to +-4400 so ``round(x, -10**9)`` stays cheap."""
    if ndigits is None:
        return round(x)
    if not isinstance(ndigits, int):
        raise TypeError("round() digits must be an integer")
    return round(x, max(-4400, min(4400, ndigits)))


def _clamp(x: Any, lo: Any, hi: Any) -> Any:
    return min(max(x, lo), hi)


def _between(x: Any, lo: Any, hi: Any) -> bool:
    return bool(lo <= x <= hi)


def _coalesce(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


# ---- vector implementations (numpy; NaN or None is null) ------------------------------------------------------


def vector_is_null(a: Any) -> Any:
    """Elementwise null test: NaN in float arrays, None in object arrays; other arrays have no nulls."""
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        return np.isnan(arr)
    if arr.dtype.kind == "O":
        return np.equal(arr, None)
    return np.zeros(arr.shape, dtype=bool)


def _v_abs(x: Any) -> Any:
    return np.abs(x)


def _v_floor(x: Any) -> Any:
    return np.floor(x)


def _v_ceil(x: Any) -> Any:
    return np.ceil(x)


def _v_hypot(x: Any, y: Any) -> Any:
    return np.hypot(x, y)


def _v_coalesce(*values: Any) -> Any:
    result = values[-1]
    for value in reversed(values[:-1]):
        result = np.where(vector_is_null(value), result, value)
    return result


def _v_round(x: Any, ndigits: Any = None) -> Any:
    if ndigits is None:
        return np.round(x)
    if np.ndim(ndigits) != 0:
        raise runtime_error("round(): the number of digits must be a constant here", "not_vectorizable", (0, 0))
    return np.round(x, int(ndigits))


def _v_sqrt(x: Any) -> Any:
    return np.sqrt(np.where(np.asarray(x) < 0, np.nan, x))


def _v_log(x: Any, base: Any = None) -> Any:
    x = np.where(np.asarray(x) <= 0, np.nan, x)
    if base is None:
        return np.log(x)
    base = np.where((np.asarray(base) <= 0) | (np.asarray(base) == 1), np.nan, base)
    return np.log(x) / np.log(base)


def _v_exp(x: Any) -> Any:
    result = np.exp(x)
    if np.any(np.isinf(result) & np.isfinite(x)):
        raise runtime_error("overflow in exp()", "overflow", (0, 0))
    return result


def _v_distance_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> Any:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi, dlam = p2 - p1, np.radians(np.subtract(lon2, lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def _v_between(x: Any, lo: Any, hi: Any) -> Any:
    return np.logical_and(np.greater_equal(x, lo), np.less_equal(x, hi))


def _v_min(*values: Any) -> Any:
    return reduce(np.minimum, values)


def _v_max(*values: Any) -> Any:
    return reduce(np.maximum, values)


def _v_clamp(x: Any, lo: Any, hi: Any) -> Any:
    return np.minimum(np.maximum(x, lo), hi)


# ---- the built-ins ---------------------------------------------------------------------------------------------

_NUMERIC = _same_kind(None)

for _spec in (
    FunctionSpec("abs", (NUMBER,), NUMBER, abs, _v_abs, doc="|x| (numbers or durations)", infer=_NUMERIC),
    FunctionSpec("min", (NUMBER,), NUMBER, lambda *a: min(a), _v_min, True, "smallest argument", min_args=1, infer=_NUMERIC),
    FunctionSpec("max", (NUMBER,), NUMBER, lambda *a: max(a), _v_max, True, "largest argument", min_args=1, infer=_NUMERIC),
    FunctionSpec(
        "round", (NUMBER, INTEGER), NUMBER, _round, _v_round, doc="round(x) -> integer, round(x, n) -> n digits "
        "(halves to even)", min_args=1, infer=_round_infer
    ),
    FunctionSpec("floor", (NUMBER,), INTEGER, math.floor, _v_floor, doc="largest integer <= x"),
    FunctionSpec("ceil", (NUMBER,), INTEGER, math.ceil, _v_ceil, doc="smallest integer >= x"),
    FunctionSpec("sqrt", (NUMBER,), NUMBER, math.sqrt, _v_sqrt, doc="square root; null for negatives"),
    FunctionSpec("log", (NUMBER, NUMBER), NUMBER, math.log, _v_log, doc="log(x) natural, log(x, base); null for "
                 "x <= 0", min_args=1),
    FunctionSpec("exp", (NUMBER,), NUMBER, math.exp, _v_exp, doc="e ** x (overflow is an error)"),
    FunctionSpec("clamp", (NUMBER, NUMBER, NUMBER), NUMBER, _clamp, _v_clamp, doc="x limited to [lo, hi]",
                 infer=_NUMERIC),
    FunctionSpec("between", (NUMBER, NUMBER, NUMBER), BOOLEAN, _between, _v_between, doc="lo <= x <= hi",
                 infer=_same_kind(BOOLEAN), null_result=False),
    FunctionSpec("hypot", (NUMBER, NUMBER), NUMBER, math.hypot, _v_hypot, doc="sqrt(x*x + y*y)"),
    FunctionSpec("distance_km", (NUMBER, NUMBER, NUMBER, NUMBER), NUMBER, _distance_km, _v_distance_km,
                 doc="haversine distance in km between (lat1, lon1) and (lat2, lon2), degrees"),
    FunctionSpec("len", (ANY,), INTEGER, _len, doc="length of a string or list", infer=_len_infer),
    FunctionSpec("lower", (STRING,), STRING, _lower, doc="lower-case string"),
    FunctionSpec("upper", (STRING,), STRING, _upper, doc="upper-case string"),
    FunctionSpec("startswith", (STRING, STRING), BOOLEAN, _startswith, doc="s starts with prefix",
                 null_result=False),
    FunctionSpec("endswith", (STRING, STRING), BOOLEAN, _endswith, doc="s ends with suffix", null_result=False),
    FunctionSpec("contains", (STRING, STRING), BOOLEAN, _contains, doc="substring test", null_result=False),
    FunctionSpec("coalesce", (ANY,), ANY, _coalesce, _v_coalesce, True, "first non-null argument", min_args=1,
                 infer=_coalesce_infer, handles_null=True),
    FunctionSpec("is_null", (ANY,), BOOLEAN, lambda x: x is None, vector_is_null, doc="x is null",
                 handles_null=True),
    FunctionSpec("number", (ANY,), NUMBER, _number, doc="parse a number from a string (null if it is not one)"),
    FunctionSpec("string", (ANY,), STRING, _string, doc="text form of a value"),
    FunctionSpec("version", (STRING,), VERSION, _version, doc="parse a semantic version ('2.10.1', 'v2.9')"),
):
    register(_spec)

del _spec
