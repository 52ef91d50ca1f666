"""Tests for iot_dsl.expr.compile_vector: numpy kernels equal the scalar closures row by row (null as NaN)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from iot_dsl.errors import ExprError
from iot_dsl.expr import (
    ANY,
    BOOLEAN,
    DURATION,
    INTEGER,
    NUMBER,
    STRING,
    VERSION,
    Namespace,
    Scope,
    compile_expr,
    compile_vector,
    parse_expr,
)

SCOPE = Scope(
    fields={"a": NUMBER, "b": NUMBER, "c": NUMBER, "i": INTEGER, "j": INTEGER, "s": STRING, "d": DURATION,
            "flag": BOOLEAN, "fw": VERSION, "x": ANY, "o": ANY},
    namespaces={"dev": Namespace("dev", {"lat": NUMBER, "lon": NUMBER})},
)
SIZE = 400


@pytest.fixture(scope="module")
def columns() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240611)
    a = rng.normal(0, 50, SIZE)
    a[rng.random(SIZE) < 0.1] = np.nan  # nulls
    b = rng.normal(0, 5, SIZE)
    b[rng.random(SIZE) < 0.1] = 0.0  # zero divisors
    b[rng.random(SIZE) < 0.05] = np.nan
    c = np.round(rng.uniform(-3, 3, SIZE), 1)
    return {
        "a": a,
        "b": b,
        "c": c,
        "i": rng.integers(-20, 20, SIZE),
        "j": rng.integers(-3, 4, SIZE),
        "s": rng.choice(np.array(["alarm", "fault", "ok", "idle"]), SIZE),
        "d": rng.uniform(0, 120, SIZE),
        "flag": rng.random(SIZE) < 0.5,
        "dev.lat": rng.uniform(-90, 90, SIZE),
        "dev.lon": rng.uniform(-180, 180, SIZE),
        "x": rng.uniform(0.5, 3, SIZE),
        "o": np.array([None if k % 3 == 0 else bool(k % 2) for k in range(SIZE)], dtype=object),
    }


def rows(columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    out = []
    for k in range(SIZE):
        row: dict[str, Any] = {}
        for name, col in columns.items():
            value = col[k].item() if hasattr(col[k], "item") else col[k]
            if isinstance(value, float) and np.isnan(value):
                value = None
            if name.startswith("dev."):
                row.setdefault("dev", {})[name[4:]] = value
            else:
                row[name] = value
        out.append(row)
    return out


def scalar_column(values: list[Any]) -> np.ndarray:
    if all(v is None or isinstance(v, bool) for v in values) and any(isinstance(v, bool) for v in values):
        return np.array([bool(v) for v in values])
    return np.array([np.nan if v is None else v for v in values], dtype=float)


EXPRESSIONS = [
    "a + b",
    "a - b * 2",
    "a * 9 / 5 + 32",
    "a / b",
    "a % b",
    "i % j",
    "i * j - 3",
    "-a",
    "-i + 1",
    "c ** 2",
    "x ** c",
    "b ** 3",
    "c ** j",
    "i / j",
    "d * 2 + 5s",
    "d / 1m",
    "abs(a)",
    "min(a, b, 3)",
    "max(a, b)",
    "round(a)",
    "round(a / 7, 2)",
    "floor(a / 3)",
    "ceil(a / 3)",
    "sqrt(a)",
    "log(a)",
    "log(x, 2)",
    "log(x, c)",
    "exp(c)",
    "clamp(a, -10, 10)",
    "hypot(a, b)",
    "distance_km(dev.lat, dev.lon, 52.5, 13.4)",
    "coalesce(a, b, 0)",
    "1 + 2",
    "a + null",
]

CONDITIONS = [
    "a > 10",
    "a >= b",
    "a < 0 and b > 0",
    "a < 0 or b > 0 or i == 3",
    "not (a > 10)",
    "a == null",
    "a != null",
    "a == b",
    "a != b",
    "a <= 5 and not flag",
    "flag",
    "o",
    "o or flag",
    "s == 'alarm'",
    "s != 'ok'",
    "s in ['alarm', 'fault']",
    "s not in ['alarm']",
    "i in [1, 2, 3]",
    "a in [1.5, null]",
    "i not in []",
    "d < 30s",
    "between(a, -10, 10)",
    "is_null(a)",
    "is_null(o)",
    "a / b > 1",
    "true",
    "1 > 2",
]


def assert_same(vector: np.ndarray, scalar: list[Any]) -> None:
    expected = scalar_column(scalar)
    assert vector.shape == (SIZE,)
    if expected.dtype == bool:
        np.testing.assert_array_equal(vector.astype(bool), expected)
    else:
        np.testing.assert_allclose(vector.astype(float), expected, rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_vector_equals_scalar_expressions(text: str, columns: dict[str, np.ndarray]) -> None:
    node = parse_expr(text)
    scalar = compile_expr(node, SCOPE, text=text)
    vector = compile_vector(node, SCOPE, text=text)
    assert_same(vector(columns), [scalar(row) for row in rows(columns)])


@pytest.mark.parametrize("text", CONDITIONS)
def test_vector_equals_scalar_conditions(text: str, columns: dict[str, np.ndarray]) -> None:
    node = parse_expr(text)
    scalar = compile_expr(node, SCOPE, expect=BOOLEAN, text=text)
    vector = compile_vector(node, SCOPE, expect=BOOLEAN, text=text)
    result = vector(columns)
    assert result.dtype == bool
    assert_same(result, [scalar(row) for row in rows(columns)])


@pytest.mark.parametrize(
    "text",
    [
        "fw > '1.0'",
        "fw == fw",
        "s + 'x'",
        "lower(s) == 'ok'",
        "len(s)",
        "'a' in s",
        "a in [a, 1]",
        "[a, b]",
        "version('1.0')",
        "x in o",
        "s == fw",
    ],
)
def test_not_vectorizable(text: str) -> None:
    with pytest.raises(ExprError) as info:
        compile_vector(parse_expr(text), SCOPE)
    assert info.value.code == "not_vectorizable"


def test_vector_runtime_errors(columns: dict[str, np.ndarray]) -> None:
    with pytest.raises(ExprError) as info:
        compile_vector(parse_expr("a + 1"), SCOPE)({"b": columns["b"]})
    assert info.value.code == "missing_field" and "'a'" in info.value.message
    with pytest.raises(ExprError) as info:
        compile_vector(parse_expr("2 ** i"), SCOPE)({"i": np.array([1, 2000])})
    assert info.value.code == "overflow"
    with pytest.raises(ExprError) as info:
        compile_vector(parse_expr("a ** 2"), SCOPE)({"a": np.array([1.0, 1e200])})
    assert info.value.code == "overflow"
    with pytest.raises(ExprError) as info:
        compile_vector(parse_expr("exp(a)"), SCOPE)({"a": np.array([1.0, 1000.0])})
    assert info.value.code == "overflow"
    with pytest.raises(ExprError) as info:
        compile_vector(parse_expr("round(a, i)"), SCOPE)({"a": np.array([1.0]), "i": np.array([1])})
    assert info.value.code == "not_vectorizable"
    with pytest.raises(ExprError) as info:
        compile_vector(parse_expr("x"), SCOPE, expect=BOOLEAN)({"x": np.array([1.0])})
    assert info.value.code == "runtime_type"


def test_zero_division_and_power_nulls() -> None:
    kernel = compile_vector(parse_expr("a / b"), SCOPE)
    out = kernel({"a": np.array([1.0, 1.0]), "b": np.array([0.0, 2.0])})
    assert np.isnan(out[0]) and out[1] == 0.5
    power = compile_vector(parse_expr("a ** b"), SCOPE)({"a": np.array([0.0, -8.0]), "b": np.array([-1.0, 0.5])})
    assert np.isnan(power).all()


def test_constant_results_broadcast() -> None:
    out = compile_vector(parse_expr("1 + 1"), SCOPE)({"a": np.zeros(5)})
    assert out.tolist() == [2] * 5
    assert compile_vector(parse_expr("'x'"), SCOPE)({}).tolist() == ["x"]
