"""Tests for iot_dsl.expr compiled closures: results, null/zero/overflow semantics, run-time errors, functions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from iot_dsl.errors import ExprError
from iot_dsl.expr import (
    ANY,
    BOOLEAN,
    DURATION,
    FUNCTIONS,
    INTEGER,
    LIST,
    NUMBER,
    STRING,
    VERSION,
    FunctionSpec,
    Namespace,
    Scope,
    Version,
    compile_condition,
    compile_expr,
    parse_expr,
    register,
)

DEVICES = {
    "d1": {"firmware": "2.10.1", "lat": 52.52, "lon": 13.405, "type": "valve"},
    "d2": {"firmware": "2.9.7", "lat": 48.8566, "lon": 2.3522, "type": "pump"},
    "d3": {"firmware": "2.0.0-rc1", "lat": 0.0, "lon": 0.0, "type": "valve"},
    "d4": {"firmware": "garbage", "lat": 0.0, "lon": 0.0, "type": "valve"},
}


def device_of(row: Mapping[str, Any]) -> Mapping[str, Any]:
    return DEVICES[row["device"]]


SCOPE = Scope(
    fields={
        "temp": NUMBER,
        "count": INTEGER,
        "delta": NUMBER,
        "status": STRING,
        "type": STRING,
        "site": STRING,
        "device": STRING,
        "age": DURATION,
        "ok": BOOLEAN,
        "fw": VERSION,
        "tags": LIST,
        "payload": ANY,
    },
    namespaces={
        "device": Namespace("device", {"firmware": VERSION, "lat": NUMBER, "lon": NUMBER, "type": STRING}, device_of),
        "event": Namespace("event", {"site": STRING, "payload": ANY}),
    },
)

ROW: dict[str, Any] = {
    "temp": 95.0,
    "count": 7,
    "delta": -3.0,
    "status": "alarm",
    "type": "valve",
    "site": "berlin",
    "device": "d1",
    "age": 12.0,
    "ok": True,
    "fw": "1.2.3",
    "tags": ["a", "b"],
    "payload": {"x": {"y": 5}, "s": "text", "n": None, "flag": True},
    "event": {"site": "berlin", "payload": {"k": 1}},
}


def run(text: str, row: Mapping[str, Any] | None = None, scope: Scope = SCOPE) -> Any:
    return compile_expr(parse_expr(text), scope, text=text)(ROW if row is None else row)


def cond(text: str, row: Mapping[str, Any] | None = None, scope: Scope = SCOPE) -> bool:
    return compile_condition(text, scope)(ROW if row is None else row)


def with_(**changes: Any) -> dict[str, Any]:
    return {**ROW, **changes}


def failure(text: str, row: Mapping[str, Any] | None = None, scope: Scope = SCOPE) -> ExprError:
    f = compile_expr(parse_expr(text), scope, text=text)
    with pytest.raises(ExprError) as info:
        f(ROW if row is None else row)
    return info.value


# ---- the examples -------------------------------------------------------------------------------------------------


def test_examples() -> None:
    assert cond('temp > 90 and device.firmware >= "2.10"') is True
    assert cond('temp > 90 and device.firmware >= "2.10"', with_(device="d2")) is False
    assert cond("type == 'valve' and site == event.site") is True
    assert run("temp * 9 / 5 + 32") == pytest.approx(203.0)
    assert cond('status in ["alarm", "fault"]') is True
    assert cond('status in ["alarm", "fault"]', with_(status="ok")) is False
    assert cond("abs(delta) > 2.5") is True
    assert cond("age < 30s") is True
    assert cond("age < 30s", with_(age=45)) is False


def test_constant_and_literal_results() -> None:
    assert run("1 + 2") == 3
    assert run("[1, 2]") == [1, 2]
    assert run("[1, 2]") is not run("[1, 2]")  # callers may not share (and mutate) the constant
    assert run("[count, 1]") == [7, 1]
    assert cond("true") is True
    assert cond("1 < 2") is True


# ---- versions --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "expected"), [("d1", True), ("d2", False), ("d3", False), ("d4", False)]
)
def test_firmware_at_least(device: str, expected: bool) -> None:
    assert cond('device.firmware >= "2.10"', with_(device=device)) is expected


def test_version_semantics() -> None:
    assert cond('device.firmware < "2.10"', with_(device="d2")) is True
    assert cond('device.firmware < "2.0.0"', with_(device="d3")) is True  # pre-release sorts first
    assert cond('device.firmware == "v2.10.1"') is True
    assert cond('device.firmware != "2.10.1"') is False
    assert cond('device.firmware in ["2.10.1", "3.0"]') is True
    assert cond('device.firmware not in ["2.10.1"]', with_(device="d2")) is True
    assert cond("fw == status", with_(status="1.2.3")) is True
    assert cond("fw == status", with_(status="not a version")) is False
    assert cond('fw < version("1.10")') is True
    assert cond("fw > payload", with_(payload="1.0")) is True
    assert cond("status in [fw]", with_(status="1.2.3")) is True
    assert run("fw", with_(fw=Version("1.0"))) == Version("1.0")
    assert run("version(status)", with_(status="bad")) is None


# ---- null, zero and overflow --------------------------------------------------------------------------------------------


def test_null_semantics() -> None:
    row = with_(temp=None)
    assert cond("temp > 90", row) is False
    assert cond("temp <= 90", row) is False
    assert cond("90 < temp", row) is False
    assert cond("temp == null", row) is True
    assert cond("temp != null", row) is False
    assert cond("temp != 5", row) is True
    assert cond("temp == 5", row) is False
    assert run("temp + 1", row) is None
    assert run("-temp", row) is None
    assert run("temp * 2 + 1", row) is None
    assert run("1 - temp", row) is None
    assert cond("temp * 2 > 1", row) is False
    assert cond("temp > delta", row) is False
    assert cond("ok", with_(ok=None)) is False
    assert cond("not ok", with_(ok=None)) is True
    assert cond("temp in [1, 2]", row) is False
    assert cond("temp not in [1, 2]", row) is True
    assert cond("'a' in tags", with_(tags=None)) is False
    assert cond("'a' not in tags", with_(tags=None)) is True
    assert run("abs(temp)", row) is None
    assert run("coalesce(temp, delta, 0)", row) == -3.0
    assert run("coalesce(temp)", row) is None
    assert cond("is_null(temp)", row) is True
    assert cond("between(temp, 1, 2)", row) is False


def test_division_by_zero_is_null() -> None:
    assert run("temp / 0") is None
    assert run("temp % 0") is None
    assert run("temp / count", with_(count=0)) is None
    assert run("count % count", with_(count=0)) is None
    assert run("temp / (count - 7)") is None
    assert run("count ** -1", with_(count=0)) is None
    assert run("temp / 4") == pytest.approx(23.75)
    assert run("count % 4") == 3
    assert run("-7 % count", with_(count=3)) == 2  # floor modulo, like Python


def test_power_at_run_time() -> None:
    assert run("count ** 2") == 49
    assert run("2 ** count") == 128
    assert run("delta ** 0.5") is None  # negative base, fractional exponent
    assert run("count ** payload", with_(payload=-1)) == pytest.approx(1 / 7)
    for row, text in (
        (with_(count=2000), "2 ** count"),
        (with_(count=10**200), "count ** 2"),
        (with_(temp=1e200), "temp ** 2"),
        (with_(count=3), "count ** 1000"),
        (with_(temp=1e151), "temp ** 2"),
    ):
        error = failure(text, row)
        assert error.code == "overflow", text
        assert error.offset == 0


def test_arithmetic_overflow_in_floats() -> None:
    assert failure("count / 3", with_(count=10**400)).code == "overflow"
    assert failure("temp * count", with_(count=10**400)).code == "overflow"
    assert failure("count / temp", with_(count=10**400)).code == "overflow"
    assert failure("count / payload", with_(count=10**400, payload=3)).code == "overflow"


# ---- run-time errors ----------------------------------------------------------------------------------------------------


def test_missing_fields() -> None:
    row = {k: v for k, v in ROW.items() if k != "temp"}
    error = failure("temp > 90", row)
    assert error.code == "missing_field" and error.message == "missing field 'temp'"
    assert failure("90 < temp", row).code == "missing_field"
    assert failure("temp + 1", row).code == "missing_field"
    assert failure("temp in [1]", row).code == "missing_field"
    assert failure("temp", row).code == "missing_field"
    no_event = {k: v for k, v in ROW.items() if k != "event"}
    assert failure("event.site", no_event).message == "missing field 'event'"
    assert failure("event.site", with_(event={})).message == "missing field 'event.site'"
    assert failure("event.site", with_(event=None)).message == "missing field 'event.site'"
    assert failure("device.lat", with_(device="nope")).message == "missing field 'device'"
    nofield = Scope(fields={}, namespaces={"device": Namespace("device", {"lat": NUMBER}, lambda row: {})})
    assert failure("device.lat", {}, nofield).message == "missing field 'device.lat'"


def test_rows_that_are_not_mappings() -> None:
    for text in ("temp", "temp > 1", "temp in [1]", "event.site"):
        error = failure(text, ["not", "a", "mapping"])  # type: ignore[arg-type]
        assert error.code == "runtime_type", text
    assert failure("event.site", with_(event=["x"])).code == "runtime_type"


def test_lenient_lookups_inside_untyped_values() -> None:
    assert run("payload.x.y") == 5
    assert run("payload.missing") is None
    assert run("payload.s.deeper") is None
    assert run("event.payload.k") == 1
    assert cond("payload.missing > 1") is False


def test_runtime_type_errors() -> None:
    """Payloads lie about their types: never repeat or format strings, never silently coerce."""
    assert failure("payload * 3", with_(payload="x" * 10)).code == "runtime_type"
    assert failure("temp * 1000000000", with_(temp="%999999999d")).code == "runtime_type"
    assert failure("temp % 5", with_(temp="%999999999d")).code == "runtime_type"
    assert failure("temp - payload", with_(payload=[1])).code == "runtime_type"
    assert failure("temp > 90", with_(temp="hot")).code == "runtime_type"
    assert failure("temp > delta", with_(temp="hot")).code == "runtime_type"
    assert failure("temp * 2 > 1", with_(temp=[1])).code == "runtime_type"
    assert failure("-payload", with_(payload="x")).code == "runtime_type"
    assert failure("ok and temp > 1", with_(ok=3)).code == "runtime_type"
    assert run("payload", with_(payload=1)) == 1  # not a condition: passes through
    with pytest.raises(ExprError) as info:
        cond("payload", with_(payload=1))
    assert info.value.code == "runtime_type"
    assert failure("'a' in payload", with_(payload=5)).code == "runtime_type"
    assert failure("payload in status", with_(payload=5)).code == "runtime_type"
    assert failure("lower(payload)", with_(payload=5)).code == "runtime_type"
    message = failure("payload * 3", with_(payload="x")).message
    assert message == "cannot apply '*' to str and int"


def test_payload_strings_join_and_numpy_scalars() -> None:
    assert run("payload + payload", with_(payload="ab")) == "abab"
    assert run("payload + 1", with_(payload=np.int64(2))) == 3
    assert run("payload * 2", with_(payload=np.float32(1.5))) == 3.0
    assert run("-payload", with_(payload=np.int64(2))) == -2
    assert run("temp + payload", with_(payload=None)) is None
    assert cond("payload", with_(payload=np.bool_(True))) is True


def test_booleans_are_not_numbers_at_run_time() -> None:
    assert failure("payload + 1", with_(payload=True)).code == "runtime_type"


# ---- membership and boolean operators -------------------------------------------------------------------------------------


def test_membership() -> None:
    assert cond("'a' in tags") is True
    assert cond("'z' not in tags") is True
    assert cond("'lar' in status") is True
    assert cond("'x' in payload.s", with_(payload={"s": "xyz"})) is True
    assert cond("payload in [1, 2]", with_(payload=[1])) is False  # unhashable: in no set of constants
    assert cond("payload not in [1, 2]", with_(payload=[1])) is True
    assert cond("payload in [[1], [2]]", with_(payload=[2])) is True  # unhashable constants: a tuple scan
    assert cond("null in status") is False
    assert cond("payload in status", with_(payload=None)) is False
    assert cond("count in [7.0]") is True
    assert cond("status in ['a', null]", with_(status=None)) is True
    assert cond("payload in ['a']", with_(payload={"k": 1})) is False
    assert cond("payload in 'abc'", with_(payload="b")) is True
    assert cond("'b' in payload", with_(payload=("a", "b"))) is True


def test_boolean_operators() -> None:
    assert cond("ok and temp > 1") is True
    assert cond("ok and temp > 1 and count == 7") is True
    assert cond("ok and temp > 1 and count == 7 and status == 'x'") is False
    assert cond("not ok or temp > 1") is True
    assert cond("not ok or temp < 1 or count == 0") is False
    assert cond("not ok or temp < 1 or count == 0 or status == 'alarm'") is True
    assert cond("payload.flag or false") is True
    assert cond("not payload.flag") is False
    assert run("ok and ok") is True


def test_short_circuit() -> None:
    row = {k: v for k, v in ROW.items() if k != "temp"}
    assert cond("false and temp > 1", row) is False
    assert cond("ok or temp > 1", row) is True


def test_comparison_shapes() -> None:
    for op, expected in (("==", False), ("!=", True), ("<", False), ("<=", False), (">", True), (">=", True)):
        assert cond(f"temp {op} 90") is expected, op
        assert cond(f"90 {op} temp") is (not expected if op not in ("==", "!=") else expected), op
        assert cond(f"temp + 0 {op} 90") is expected, op
        assert cond(f"temp {op} delta + 93") is expected, op
    assert cond("status == 'alarm'") is True
    assert cond("tags == ['a', 'b']") is True
    assert cond("age >= 12s") is True
    assert cond("-delta == 3") is True


# ---- functions ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abs(delta)", 3.0),
        ("abs(-age)", 12.0),
        ("min(temp, count, 100)", 7),
        ("max(temp, count)", 95.0),
        ("min(payload)", 4),
        ("round(temp / 7)", 14),
        ("round(temp / 7, 2)", 13.57),
        ("round(2.5)", 2),
        ("round(count, -1)", 10),
        ("round(count, payload)", 7),
        ("floor(delta / 2)", -2),
        ("ceil(delta / 2)", -1),
        ("sqrt(payload)", 2.0),
        ("log(payload)", math.log(4)),
        ("log(payload, 2)", 2.0),
        ("exp(count / 7)", math.e),
        ("clamp(temp, 0, 50)", 50),
        ("clamp(delta, 0, 50)", 0),
        ("between(temp, 90, 100)", True),
        ("between(temp, 0, 10)", False),
        ("hypot(3, payload)", 5.0),
        ("len(status)", 5),
        ("len(tags)", 2),
        ("lower('AbC')", "abc"),
        ("upper(status)", "ALARM"),
        ("startswith(status, 'al')", True),
        ("endswith(status, 'rm')", True),
        ("contains(status, 'lar')", True),
        ("coalesce(payload, 1)", 4),
        ("is_null(payload)", False),
        ("number('42')", 42),
        ("number(' 2.5 ')", 2.5),
        ("number(payload)", 4),
        ("string(count)", "7"),
        ("string(temp)", "95.0"),
        ("string(ok)", "true"),
        ("string(status)", "alarm"),
        ("string(fw)", "1.2.3"),
        ("string(tags)", '["a", "b"]'),
        ("version('v2.1')", Version("2.1.0")),
    ],
)
def test_functions(text: str, expected: Any) -> None:
    result = run(text, with_(payload=4))
    if isinstance(expected, float):
        assert result == pytest.approx(expected)
    else:
        assert result == expected and type(result) is type(expected)


def test_round_clamps_digits() -> None:
    assert run("round(count, payload)", with_(payload=-10**9)) == 0
    assert run("round(temp, payload)", with_(payload=10**9)) == 95.0


def test_distance_km() -> None:
    # Berlin -> Paris is about 878 km
    assert run("distance_km(device.lat, device.lon, 48.8566, 2.3522)") == pytest.approx(877.5, abs=2)
    assert run("distance_km(0, 0, 0, 0)") == 0.0


@pytest.mark.parametrize(
    ("text", "payload"),
    [
        ("sqrt(payload)", -1),
        ("log(payload)", 0),
        ("log(payload, 1)", 5),
        ("number(payload)", "abc"),
        ("number(payload)", "nan"),
        ("number(payload)", "1e999"),
        ("number(payload)", "1" * 100),
        ("version(payload)", "x.y"),
        ("floor(payload)", float("nan")),
    ],
)
def test_function_domain_errors_are_null(text: str, payload: Any) -> None:
    assert run(text, with_(payload=payload)) is None


def test_function_overflow_and_type_errors() -> None:
    assert failure("exp(payload)", with_(payload=1000)).code == "overflow"
    assert failure("floor(payload)", with_(payload=float("inf"))).code == "overflow"
    for text, payload in (
        ("len(payload)", 5),
        ("upper(payload)", 5),
        ("startswith(status, payload)", 5),
        ("endswith(payload, 'x')", 5),
        ("contains(payload, 'x')", 5),
        ("number(payload)", [1]),
        ("string(payload)", object()),
        ("round(temp, payload)", 1.5),
        ("abs(payload)", "x"),
        ("min(payload, 1)", "x"),
    ):
        error = failure(text, with_(payload=payload))
        assert error.code == "runtime_type", text
    assert "cannot take" in failure("len(payload)", with_(payload=5)).message


def test_number_and_string_conversions() -> None:
    assert run("number(payload)", with_(payload=True)) == 1
    assert run("number(payload)", with_(payload=2.5)) == 2.5
    assert run("string(payload)", with_(payload={"b": 1, "a": [2]})) == '{"a": [2], "b": 1}'
    assert run("string(payload)", with_(payload=None)) is None
    assert run("string(false)") == "false"
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    assert run("string(payload)", with_(payload=deep)) is None


# ---- registry ------------------------------------------------------------------------------------------------------------


def test_registry_is_closed_and_extensible() -> None:
    assert {"abs", "min", "max", "round", "floor", "ceil", "sqrt", "log", "exp", "clamp", "len", "lower", "upper",
            "startswith", "endswith", "contains", "coalesce", "is_null", "number", "string", "version", "hypot",
            "distance_km", "between"} <= set(FUNCTIONS)
    with pytest.raises(ValueError, match="already registered"):
        register(FUNCTIONS["abs"])
    for bad in ("_private", "not-an-identifier"):
        with pytest.raises(ValueError, match="invalid function name"):
            register(FunctionSpec(bad, (NUMBER,), NUMBER, abs))
    spec = FunctionSpec("double_it", (NUMBER,), NUMBER, lambda x: x * 2, lambda x: x * 2, doc="2x")
    register(spec)
    try:
        assert spec.arity == (1, 1) and spec.param_type(5) == NUMBER
        assert run("double_it(count)") == 14
        assert run("double_it(temp) + double_it(1)") == pytest.approx(192.0)
    finally:
        del FUNCTIONS["double_it"]


def test_zero_argument_functions() -> None:
    register(FunctionSpec("forty_two", (), INTEGER, lambda: 42, min_args=0))
    try:
        assert run("forty_two() + count") == 49
        assert run("forty_two()") == 42
    finally:
        del FUNCTIONS["forty_two"]


def test_three_argument_calls_evaluate_each_row() -> None:
    assert run("clamp(count, 0, payload)", with_(payload=5)) == 5
    assert run("clamp(count, 0, payload)", with_(payload=50)) == 7


def test_compile_expr_expect_boolean_wraps() -> None:
    f = compile_expr(parse_expr("payload"), SCOPE, expect=BOOLEAN)
    assert f(with_(payload=None)) is False
    assert f(with_(payload=True)) is True


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_field_constant_comparisons_every_operator(op: str) -> None:
    f = compile_condition(f"temp {op} 90", SCOPE)
    assert f(with_(temp=None)) is (op == "!=")
    missing = {k: v for k, v in ROW.items() if k != "temp"}
    with pytest.raises(ExprError) as info:
        f(missing)
    assert info.value.code == "missing_field"
    with pytest.raises(ExprError) as info:
        f(["not a mapping"])
    assert info.value.code == "runtime_type"
    if op not in ("==", "!="):
        with pytest.raises(ExprError) as info:
            f(with_(temp="hot"))
        assert info.value.code == "runtime_type"
        assert "cannot compare str with int" in info.value.message


def test_operator_helpers() -> None:
    from iot_dsl.expr.check import NOCONST
    from iot_dsl.expr.ops import binary_op

    assert repr(NOCONST) == "NOCONST"
    with pytest.raises(ValueError, match="unknown operator"):
        binary_op("^")
    with pytest.raises(ExprError) as info:
        binary_op("/")(10**400, np.float64(2.0))  # the numpy (slow) path also guards overflow
    assert info.value.code == "overflow"
