"""Tests for iot_dsl.expr checking: scopes and namespaces, types, did-you-mean, folding limits, versions."""

from __future__ import annotations

import pytest

from iot_dsl.errors import ExprError
from iot_dsl.expr import (
    ANY,
    BOOLEAN,
    DURATION,
    INTEGER,
    LIST,
    NULL,
    NUMBER,
    STRING,
    VERSION,
    Namespace,
    Scope,
    Type,
    annotate,
    check_expr,
    list_of,
    parse_expr,
)
from iot_dsl.expr import nodes as n
from iot_dsl.expr.check import NOCONST

DEVICE = Namespace("device", {"firmware": VERSION, "lat": NUMBER, "lon": NUMBER, "type": STRING, "meta": ANY})
EVENT = Namespace("event", {"site": STRING, "payload": ANY})
SCOPE = Scope(
    fields={
        "temperature": NUMBER,
        "temp": NUMBER,
        "count": INTEGER,
        "status": STRING,
        "type": STRING,
        "site": STRING,
        "device": STRING,
        "age": DURATION,
        "ok": BOOLEAN,
        "fw": VERSION,
        "tags": list_of(STRING),
        "values": LIST,
        "payload": ANY,
        "label": STRING,
    },
    namespaces={"device": DEVICE, "event": EVENT},
)


def typ(text: str, scope: Scope = SCOPE, expect: Type | None = None) -> Type:
    return check_expr(parse_expr(text), scope, expect=expect, text=text)


def err(text: str, scope: Scope = SCOPE, expect: Type | None = None) -> ExprError:
    with pytest.raises(ExprError) as info:
        typ(text, scope, expect)
    return info.value


def const(text: str, scope: Scope = SCOPE) -> object:
    node = parse_expr(text)
    return annotate(node, scope, text=text).const(node)


# ---- names ---------------------------------------------------------------------------------------------------------


def test_bare_fields_and_namespaces() -> None:
    assert typ("temp") == NUMBER
    assert typ("device") == STRING  # the bare field (the device id) ...
    assert typ("device.firmware") == VERSION  # ... and the namespace
    assert typ("event.site") == STRING
    assert typ("event.payload.x.y") == ANY  # deeper paths into untyped values
    assert typ("payload.a.b") == ANY
    assert typ("device.meta.x") == ANY


def test_unknown_field_did_you_mean() -> None:
    error = err("temperatur > 90")
    assert error.code == "unknown_field" and error.message == "unknown field 'temperatur'"
    assert error.hint == "did you mean 'temperature'?"
    assert (error.offset, error.end_offset) == (0, 10)
    ns_error = err('device.firmwre >= "2.1"')
    assert ns_error.code == "unknown_field" and ns_error.hint == "did you mean 'firmware'?"
    assert "of 'device'" in ns_error.message
    root = err("devic.firmware")
    assert root.code == "unknown_field" and root.hint == "did you mean 'device'?"


def test_unknown_field_lists_small_scopes() -> None:
    error = err("zzz", Scope(fields={"a": NUMBER, "b": NUMBER}))
    assert error.hint == "known names: a, b"
    big = Scope(fields={f"f{i}": NUMBER for i in range(20)})
    assert err("zzz", big).hint is None


def test_namespace_alone_is_not_a_value() -> None:
    error = err("event")
    assert error.code == "unknown_field" and "namespace" in error.message
    assert error.hint == "name one of its fields, e.g. event.payload"


def test_no_fields_below_typed_values() -> None:
    assert err("temp.x").code == "type"
    assert err("device.firmware.major").code == "type"


def test_allow_unknown() -> None:
    loose = Scope(fields={"temp": NUMBER}, allow_unknown=True)
    assert typ("whatever", loose) == ANY
    assert typ("whatever.deep", loose) == ANY
    assert typ("whatever + 1", loose) == NUMBER


def test_refused_names_in_hand_built_trees() -> None:
    with pytest.raises(ExprError) as info:
        check_expr(n.Field(("temp", "__class__")), SCOPE)
    assert info.value.code == "refused"
    with pytest.raises(ExprError) as info:
        check_expr(n.Call("__import__", (n.Literal("os", STRING),)), SCOPE)
    assert info.value.code == "refused"


def test_unsupported_node_and_depth_guard() -> None:
    with pytest.raises(ExprError) as info:
        check_expr(n.Node(start=0, end=1), SCOPE)
    assert info.value.code == "syntax"
    deep: n.Node = n.Field(("temp",))
    for _ in range(150):
        deep = n.Unary("-", deep)
    with pytest.raises(ExprError) as info:
        check_expr(deep, SCOPE)
    assert info.value.code == "too_deep"


# ---- types ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("count + 1", INTEGER),
        ("count * 2 - 1 % 3", INTEGER),
        ("count / 2", NUMBER),
        ("temp * 9 / 5 + 32", NUMBER),
        ("2 ** 3", NUMBER),
        ("-count", INTEGER),
        ("-age", DURATION),
        ("status + '!'", STRING),
        ("age + 5s", DURATION),
        ("age - 1m", DURATION),
        ("age % 1h", DURATION),
        ("age / 1s", NUMBER),
        ("age * 2", DURATION),
        ("2 * age", DURATION),
        ("age / 2", DURATION),
        ("payload + 1", NUMBER),
        ("payload + payload", ANY),
        ("payload + 'x'", STRING),
        ("payload + age", DURATION),
        ("age / payload", ANY),
        ("null + 1", NUMBER),
        ("null + null", NULL),
        ("-null", NULL),
        ("-payload", ANY),
        ("[1, 2.5]", list_of(NUMBER)),
        ("[1, null]", list_of(INTEGER)),
        ("[]", LIST),
        ("[null]", LIST),
        ("[[1], [2.0]]", list_of(list_of(NUMBER))),
        ("temp > 1 and ok or not ok", BOOLEAN),
        ("payload and ok", BOOLEAN),
    ],
)
def test_result_types(text: str, expected: Type) -> None:
    assert typ(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"temp" + 1', "cannot apply '+' to string and integer"),
        ('"a" * 10**9', "cannot apply '*' to string and number"),
        ("status * 3", "cannot apply '*' to string and integer"),
        ("age + 5", "cannot apply '+' to duration and integer"),
        ("age ** 2", "cannot apply '**' to duration and integer"),
        ("payload ** age", "cannot apply '**' to any and duration"),
        ("2 / age", "cannot apply '/' to integer and duration"),
        ("age * age", "cannot apply '*' to duration and duration"),
        ("ok + 1", "cannot apply '+' to boolean and integer"),
        ("payload - 'x'", "cannot apply '-' to any and string"),
        ("-status", "cannot negate string"),
        ("not temp", "'not' needs a boolean, got number"),
        ("ok and temp", "'and' needs booleans, got number"),
        ("status > 5", "string compared with integer"),
        ("age < 30", "duration compared with integer"),
        ("ok < true", "cannot order boolean values with '<'"),
        ("tags < tags", "cannot order list[string] values with '<'"),
        ("temp < null", "cannot order null with '<'"),
        ("[1, 'a']", "list items must share a type: integer and string"),
        ("tags == [1]", "list[string] compared with list[integer]"),
        ("5 in tags", "cannot look for integer in list[string]"),
        ("5 in status", "'in' with a string on the right needs a string on the left, got integer"),
        ("5 in temp", "'in' needs a list or a string on the right, got number"),
        ("fw in [1, 2]", "cannot look for version in list[integer]"),
        ("fw == 5", "version compared with integer"),
    ],
)
def test_type_errors(text: str, message: str) -> None:
    error = err(text)
    assert error.code == "type"
    assert error.message == message


def test_type_error_hints_and_spans() -> None:
    error = err("age < 30")
    assert error.hint == "write the number with a unit, e.g. 30s"
    assert (error.offset, error.end_offset) == (0, 8)
    assert err("age + 5").hint == "give the number a unit, e.g. 30s"
    assert err('"a" * 10**9').hint == "strings cannot be repeated"
    assert err("temp < null").hint == "test for null with == null"
    operand = err("ok and temp")
    assert (operand.offset, operand.end_offset) == (7, 11)


def test_comparisons_accepted() -> None:
    for text in (
        "temp == count",
        "temp != null",
        "null == null",
        "payload < 3",
        "payload == 'x'",
        "ok == true",
        "tags == ['a']",
        "tags != values",
        "age >= 30s",
        "status < 'm'",
        "fw > fw",
        "fw == null",
        "'x' in payload",
        "payload in tags",
        "null in tags",
        "status in payload",
        "'a' in status",
        "x in null",
    ):
        scope = Scope(fields={**SCOPE.fields, "x": NUMBER}, namespaces=SCOPE.namespaces)
        assert typ(text, scope) == BOOLEAN, text


def test_expect_boolean() -> None:
    error = err("temp * 2", expect=BOOLEAN)
    assert error.code == "type" and error.message == "condition must be boolean, got number"
    assert err("null", expect=BOOLEAN).message == "condition must be boolean, got null"
    assert typ("payload", expect=BOOLEAN) == ANY  # untyped: checked at run time
    assert typ("ok", expect=BOOLEAN) == BOOLEAN
    other = err("status", expect=NUMBER)
    assert other.message == "expected number, got string"
    assert typ("count", expect=NUMBER) == INTEGER


# ---- functions -------------------------------------------------------------------------------------------------------


def test_function_errors() -> None:
    unknown = err("lowr(status)")
    assert unknown.code == "unknown_function" and unknown.hint == "did you mean 'lower'?"
    assert err("frobnicate(1)").code == "unknown_function"
    arity = err("round(1, 2, 3)")
    assert arity.code == "arity" and arity.message == "round() takes 1 or 2 arguments, got 3"
    assert err("abs()").message == "abs() takes 1 argument, got 0"
    assert err("hypot(1)").message == "hypot() takes 2 arguments, got 1"
    assert err("coalesce()").message == "coalesce() takes at least 1 argument, got 0"
    assert err("clamp(1)").message == "clamp() takes 3 arguments, got 1"
    assert err("distance_km(1, 2)").message == "distance_km() takes 4 arguments, got 2"
    bad = err("lower(temp)")
    assert bad.code == "type" and bad.message == "argument 1 of lower() must be string, got number"
    assert (bad.offset, bad.end_offset) == (6, 10)
    assert err("abs(status)").message == "argument 1 of abs() must be number or duration, got string"
    assert err("max(age, 1)").message == "argument 2 of max() must be duration, got integer"
    assert err("round(temp, 1.5)").message == "argument 2 of round() must be integer, got number"
    assert err("round(status)").message == "argument 1 of round() must be number, got string"
    assert err("len(temp)").message == "argument 1 of len() must be string or list, got number"
    assert err("coalesce(temp, status)").message == "argument 2 of coalesce() must be number, got string"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abs(temp)", NUMBER),
        ("abs(count)", INTEGER),
        ("abs(age)", DURATION),
        ("abs(payload)", ANY),
        ("min(count, temp)", NUMBER),
        ("max(age, 1s)", DURATION),
        ("min(null)", NUMBER),
        ("round(temp)", INTEGER),
        ("round(temp, 2)", NUMBER),
        ("floor(temp)", INTEGER),
        ("clamp(temp, 0, 100)", NUMBER),
        ("between(temp, 0, 100)", BOOLEAN),
        ("len(status)", INTEGER),
        ("len(tags)", INTEGER),
        ("coalesce(payload, 1)", ANY),
        ("coalesce(null, count)", INTEGER),
        ("coalesce(count, temp)", NUMBER),
        ("is_null(payload)", BOOLEAN),
        ("number(status)", NUMBER),
        ("string(temp)", STRING),
        ("version(status)", VERSION),
        ("lower(payload)", STRING),
        ("distance_km(device.lat, device.lon, 0, 0)", NUMBER),
    ],
)
def test_function_types(text: str, expected: Type) -> None:
    assert typ(text) == expected


# ---- folding and limits -----------------------------------------------------------------------------------------------


def test_constant_folding() -> None:
    assert const("1 + 2 * 3") == 7
    assert const("2 ** 10") == 1024
    assert const("-(3)") == -3
    assert const("1 / 0") is None
    assert const("7 % 0") is None
    assert const("0 ** -1") is None
    assert const("not false") is True
    assert const("true and false") is False
    assert const("false or null") is False
    assert const("1 < 2") is True
    assert const("null == null") is True
    assert const("2 in [1, 2]") is True
    assert const("2 not in [1, 2]") is False
    assert const("'b' in 'abc'") is True
    assert const("null in 'abc'") is False
    assert const("1 in null") is False
    assert const("[1, 2]") == [1, 2]
    assert const("abs(-2) + max(1, 5)") == 7
    assert const("sqrt(-1)") is None
    assert const("lower(null)") is None
    assert const("between(null, 1, 2)") is False
    assert const("coalesce(null, 3)") == 3
    assert const("30s + 500ms") == pytest.approx(30.5)
    assert const("temp + 1") is NOCONST


@pytest.mark.parametrize(
    "text",
    ["9**9**9**9", "2 ** 2000", "temp ** 1025", "10.0 ** 400", "2 ** 1000", "1e300 * 10", "-1e300 * 1e10", "exp(1000)"],
)
def test_too_large(text: str) -> None:
    error = err(text)
    assert error.code == "too_large", error.message
    assert error.message.startswith("number too large")


def test_too_large_message_quotes_source() -> None:
    assert "9**9**9" in err("9**9**9**9").message
    hand_built = n.Binary("**", n.Literal(10, INTEGER), n.Literal(400, INTEGER))
    with pytest.raises(ExprError, match="constant expression"):
        check_expr(hand_built, SCOPE)  # no text: a generic description
    long_text = "(1e300" + " + 0" * 30 + ") * 10"
    assert err(long_text).message.endswith("...")


def test_large_but_allowed() -> None:
    assert const("2 ** 996") == 2**996
    assert const("temp ** 1024 > 1") is NOCONST


# ---- versions ---------------------------------------------------------------------------------------------------------


def test_version_literals_are_converted() -> None:
    text = 'device.firmware >= "2.10"'
    node = parse_expr(text)
    notes = annotate(node, SCOPE, text=text)
    assert isinstance(node, n.Compare)
    assert notes.type_of(node.right) == VERSION
    assert str(notes.const(node.right)) == "2.10.0"
    reversed_node = parse_expr('"v2.9.7" < fw')
    assert isinstance(reversed_node, n.Compare)
    assert str(annotate(reversed_node, SCOPE).const(reversed_node.left)) == "2.9.7"


def test_bad_version_literal() -> None:
    error = err('device.firmware >= "2.x"')
    assert error.code == "bad_version" and (error.offset, error.end_offset) == (19, 24)
    assert err('version("nope")').code == "bad_version"
    in_list = err('fw in ["1.0", "bad"]')
    assert in_list.code == "bad_version" and in_list.offset == 14


def test_version_coercions() -> None:
    node = parse_expr("fw == status")
    notes = annotate(node, SCOPE)
    assert isinstance(node, n.Compare) and id(node.right) in notes.as_version
    assert typ("fw < payload") == BOOLEAN
    assert typ("fw == null") == BOOLEAN
    assert typ('fw in ["1.0", null]') == BOOLEAN
    assert typ("status in [version('1.0')]") == BOOLEAN
    assert typ('version("2.1") < device.firmware') == BOOLEAN
