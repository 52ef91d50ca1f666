"""Tests for iot_dsl.expr types, versions and the facade (compile_condition, security refusals)."""

from __future__ import annotations

import pytest

import iot_dsl.expr as expr
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
    TYPE_NAMES,
    VERSION,
    Scope,
    Version,
    assignable,
    compile_condition,
    is_assignable,
    join,
    list_of,
    type_from_name,
    type_name,
)
from iot_dsl.expr.version import VersionError, parse_version, to_version


# ---- types ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("number", NUMBER),
        ("integer", INTEGER),
        ("string", STRING),
        ("boolean", BOOLEAN),
        ("version", VERSION),
        ("duration", DURATION),
        ("any", ANY),
        ("list", LIST),
        ("null", NULL),
        (" number ", NUMBER),
        ("list[number]", list_of(NUMBER)),
        ("list[list[string]]", list_of(list_of(STRING))),
    ],
)
def test_type_from_name(name: str, expected: expr.Type) -> None:
    assert type_from_name(name) == expected
    assert type_from_name(type_name(expected)) == expected  # round trip


@pytest.mark.parametrize("name", ["float", "", "list[float]", "List", 5])
def test_type_from_name_unknown(name: str) -> None:
    with pytest.raises(ValueError) as info:
        type_from_name(name)
    for valid in TYPE_NAMES:
        assert valid in str(info.value)


def test_type_rendering_and_lattice() -> None:
    assert str(list_of(NUMBER)) == "list[number]" and LIST.is_list and not NUMBER.is_list
    assert assignable(INTEGER, NUMBER) and not assignable(NUMBER, INTEGER)
    assert assignable(NULL, STRING) and assignable(ANY, VERSION) and assignable(DURATION, ANY)
    assert assignable(list_of(INTEGER), list_of(NUMBER)) and not assignable(list_of(STRING), list_of(NUMBER))
    assert not assignable(STRING, NUMBER)
    assert is_assignable is assignable
    assert join(INTEGER, INTEGER) == INTEGER
    assert join(INTEGER, NUMBER) == NUMBER
    assert join(NULL, STRING) == STRING and join(STRING, NULL) == STRING
    assert join(ANY, STRING) == ANY
    assert join(list_of(INTEGER), list_of(NUMBER)) == list_of(NUMBER)
    assert join(list_of(STRING), list_of(NUMBER)) is None
    assert join(STRING, NUMBER) is None


# ---- versions ------------------------------------------------------------------------------------------------------


def test_version_parsing() -> None:
    assert str(Version("2.10.1")) == "2.10.1"
    assert str(Version("2.10")) == "2.10.0"
    assert str(Version("v2.9.7")) == "2.9.7"
    assert str(Version("2")) == "2.0.0"
    assert str(Version("2.0.0-rc.1+build.5")) == "2.0.0-rc.1"
    assert repr(Version("1.2")) == "Version('1.2.0')"
    v = Version.parse("2.0.0-rc1")
    assert (v.major, v.minor, v.patch, v.pre) == (2, 0, 0, ("rc1",))
    assert Version.parse("1.2.3") is parse_version("1.2.3")  # cached


@pytest.mark.parametrize("text", ["", "x", "1.2.3.4", "01.2", "1..2", "1.2-", "1.2.3-rc!", "1" * 200, None, 5])
def test_version_invalid(text: object) -> None:
    with pytest.raises(VersionError):
        Version(text)  # type: ignore[arg-type]
    assert to_version(text) is None


def test_version_ordering() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
               "1.0.0-rc.1", "1.0.0", "2.9.7", "2.10", "2.10.1", "10.0.0"]
    versions = [Version(t) for t in ordered]
    assert sorted(reversed(versions)) == versions
    for low, high in zip(versions, versions[1:]):
        assert low < high and low <= high and high > low and high >= low and low != high
    assert Version("2.10") == Version("2.10.0") and hash(Version("2.10")) == hash(Version("2.10.0"))
    assert Version("1.0") != "1.0"
    for op in ("__lt__", "__le__", "__gt__", "__ge__"):
        assert getattr(Version("1.0"), op)("1.0") is NotImplemented
    with pytest.raises(TypeError):
        _ = Version("1.0") < "2.0"  # type: ignore[operator]


def test_version_is_immutable_and_coerces() -> None:
    v = Version("1.0")
    with pytest.raises(AttributeError):
        v.major = 3  # type: ignore[misc]
    assert to_version(v) is v
    assert to_version("1.0") == v
    assert to_version(1.0) is None


# ---- facade and security ---------------------------------------------------------------------------------------------


def test_facade_exports() -> None:
    for name in ("parse_expr", "check_expr", "compile_expr", "compile_vector", "Scope", "Namespace", "NUMBER",
                 "INTEGER", "STRING", "BOOLEAN", "DURATION", "VERSION", "ANY", "NULL", "type_from_name", "Version",
                 "FUNCTIONS", "register", "compile_condition", "types"):
        assert hasattr(expr, name), name
    assert expr.types.NUMBER is NUMBER


def test_compile_condition() -> None:
    scope = Scope(fields={"temp": NUMBER, "status": STRING})
    hot = compile_condition("temp > 90 and status != 'ok'", scope)
    assert hot({"temp": 95, "status": "alarm"}) is True
    assert hot({"temp": 95, "status": "ok"}) is False
    with pytest.raises(ExprError) as info:
        compile_condition("temp * 2", scope)
    assert info.value.code == "type" and info.value.message == "condition must be boolean, got number"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("().__class__", "syntax"),
        ("().__class__.__bases__[0].__subclasses__()", "syntax"),
        ("__import__('os')", "refused"),
        ("temp.__class__", "refused"),
        ("9**9**9**9", "too_large"),
        ('"a" * 10**9', "type"),
        ("x" * 10_000, "too_long"),
        ("(" * 1000 + "temp" + ")" * 1000, "too_deep"),
        ("temp.real > 1", "type"),
        ("eval('1')", "unknown_function"),
        ("getattr(temp, 'x')", "unknown_function"),
        ("open('/etc/passwd')", "unknown_function"),
        ("lambda: 1", "syntax"),
        ("temp if 1 else 2", "syntax"),
        ("temp; 1", "syntax"),
    ],
)
def test_security_refusals(text: str, code: str) -> None:
    scope = Scope(fields={"temp": NUMBER})
    with pytest.raises(ExprError) as info:
        compile_condition(text, scope)
    assert info.value.code == code, info.value.message
