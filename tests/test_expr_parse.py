"""Tests for iot_dsl.expr parsing: the grammar, AST spans, human syntax errors and the parse-time limits."""

from __future__ import annotations

from pathlib import Path

import pytest

import iot_dsl
from iot_dsl.errors import ExprError
from iot_dsl.expr import INTEGER, NULL, NUMBER, STRING, BOOLEAN, field_paths, parse_expr
from iot_dsl.expr import grammar as grammar_mod
from iot_dsl.expr import nodes as n
from iot_dsl.expr.parser import MAX_BRACKETS, MAX_DEPTH, MAX_LENGTH


def err(text: str) -> ExprError:
    with pytest.raises(ExprError) as info:
        parse_expr(text)
    return info.value


# ---- shapes and spans --------------------------------------------------------------------------------------------


def test_examples_parse_with_spans() -> None:
    text = 'temp > 90 and device.firmware >= "2.10"'
    tree = parse_expr(text)
    assert isinstance(tree, n.BoolOp) and tree.op == "and" and (tree.start, tree.end) == (0, len(text))
    first, second = tree.operands
    assert isinstance(first, n.Compare) and first.op == ">" and text[first.start : first.end] == "temp > 90"
    assert first.left == n.Field(("temp",), start=0, end=4)
    assert first.right == n.Literal(90, INTEGER, start=7, end=9)
    assert isinstance(second, n.Compare) and isinstance(second.left, n.Field)
    assert second.left.path == ("device", "firmware") and second.left.dotted == "device.firmware"
    assert text[second.right.start : second.right.end] == '"2.10"'


def test_precedence_and_associativity() -> None:
    tree = parse_expr("temp * 9 / 5 + 32")
    assert isinstance(tree, n.Binary) and tree.op == "+"
    assert isinstance(tree.left, n.Binary) and tree.left.op == "/"
    assert isinstance(tree.left.left, n.Binary) and tree.left.left.op == "*"
    power = parse_expr("2 ** 3 ** 2")  # right-associative
    assert isinstance(power, n.Binary) and isinstance(power.right, n.Binary) and power.right.op == "**"
    neg = parse_expr("-2 ** 2")  # unary minus binds looser than **
    assert isinstance(neg, n.Unary) and isinstance(neg.operand, n.Binary)
    exp_neg = parse_expr("2 ** -1")
    assert isinstance(exp_neg, n.Binary) and isinstance(exp_neg.right, n.Unary)
    boolean = parse_expr("a or b and not c")
    assert isinstance(boolean, n.BoolOp) and boolean.op == "or"
    assert isinstance(boolean.operands[1], n.BoolOp) and isinstance(boolean.operands[1].operands[1], n.Not)
    flat = parse_expr("a or b or c")
    assert isinstance(flat, n.BoolOp) and len(flat.operands) == 3
    comparison = parse_expr("a + 1 == b % 2")
    assert isinstance(comparison, n.Compare) and isinstance(comparison.left, n.Binary)


def test_literals() -> None:
    assert parse_expr("42") == n.Literal(42, INTEGER, start=0, end=2)
    assert parse_expr("2.5").type == NUMBER  # type: ignore[attr-defined]
    assert parse_expr("1e3") == n.Literal(1000.0, NUMBER, start=0, end=3)
    assert parse_expr("true") == n.Literal(True, BOOLEAN, start=0, end=4)
    assert parse_expr("false") == n.Literal(False, BOOLEAN, start=0, end=5)
    assert parse_expr("null") == n.Literal(None, NULL, start=0, end=4)
    assert parse_expr("'it\\'s'") == n.Literal("it's", STRING, start=0, end=7)
    assert parse_expr('"a\\"b\\n\\t\\r\\\\\\0\\u00e9"').value == 'a"b\n\t\r\\\0é'  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    node = parse_expr(text)
    assert isinstance(node, n.Duration) and node.seconds == pytest.approx(seconds)


def test_lists_calls_membership() -> None:
    tree = parse_expr('status in ["alarm", "fault",]')
    assert isinstance(tree, n.In) and not tree.negate
    assert isinstance(tree.container, n.ListLit) and len(tree.container.items) == 2
    negated = parse_expr("x not in []")
    assert isinstance(negated, n.In) and negated.negate
    assert isinstance(negated.container, n.ListLit) and negated.container.items == ()
    call = parse_expr("abs(delta) > 2.5")
    assert isinstance(call, n.Compare) and call.left == n.Call(
        "abs", (n.Field(("delta",), start=4, end=9),), start=0, end=10
    )
    assert parse_expr("f()") == n.Call("f", (), start=0, end=3)
    group = parse_expr("(a)")
    assert group == n.Field(("a",), start=1, end=2)


def test_keywords_are_words_only() -> None:
    assert parse_expr("android") == n.Field(("android",), start=0, end=7)
    assert parse_expr("order") == n.Field(("order",), start=0, end=5)
    assert parse_expr("nothing") == n.Field(("nothing",), start=0, end=7)


def test_walk_children_and_field_paths() -> None:
    tree = parse_expr("-a + f(b.c, [d]) > 1 and not (e in g) or x not in y")
    assert field_paths(tree) == {("a",), ("b", "c"), ("d",), ("e",), ("g",), ("x",), ("y",)}
    kinds = {type(node).__name__ for node in n.walk(tree)}
    assert {"BoolOp", "Not", "In", "Unary", "Call", "ListLit", "Compare", "Binary", "Field", "Literal"} <= kinds


# ---- syntax errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        ("()", 1, "unexpected ')' — expected a value"),
        ("temp >", 6, "unexpected end of expression — expected a value"),
        ("(a", 2, "unexpected end of expression — expected ')'"),
        ("a b", 2, "unexpected name 'b' — expected an operator or end of expression"),
        ("[1 2]", 3, "unexpected number 2 — expected an operator, ',' or ']'"),
        ("f(1,,2)", 4, "unexpected ',' — expected a value or ')'"),
        ("x not 5", 6, "unexpected number 5 — expected 'in'"),
        ("a.", 2, "unexpected end of expression — expected a field name"),
        ("a 'x'", 2, "unexpected string 'x'"),
        ("a 5s", 2, "unexpected duration 5s"),
        ("a and", 5, "unexpected end of expression"),
        ("a < b < c", 6, "unexpected '<' — comparisons cannot be chained"),
        ("a == b in c", 7, "unexpected 'in' — comparisons cannot be chained"),
        ("temp = 5", 5, "unexpected character '='"),
        ("a $ b", 2, "unexpected character '$'"),
        ("a \x01", 2, "unexpected character '\\x01'"),
        ('x == "abc', 5, "unterminated string"),
        ("'\\q'", 1, "invalid escape '\\q' in string"),
        ("'\\u12'", 1, "invalid escape '\\u'"),
        ("5min > 1", 1, "unexpected name 'min'"),
        ("().__class__", 1, "unexpected ')' — expected a value"),
        ("().__class__.__bases__[0].__subclasses__()", 1, "unexpected ')'"),
        ("abs(x).real", 6, "unexpected '.'"),
        ("x[0]", 1, "unexpected '['"),
    ],
)
def test_syntax_errors(text: str, offset: int, message: str) -> None:
    error = err(text)
    assert error.code == "syntax"
    assert error.offset == offset
    assert error.message.startswith(message), error.message


def test_syntax_hints() -> None:
    assert err("a < b < c").hint == "combine them with 'and', e.g. a < b and b < c"
    assert err("temp = 5").hint == "use '==' to compare"
    assert err("a && b").hint == "use 'and'"
    assert err("a || b").hint == "use 'or'"
    assert err("!a").hint is not None
    assert err("5min > 1").hint == "durations are written with a unit: 500ms, 30s, 5m, 1h, 2d"
    assert "\\uXXXX" in (err("'\\q'").hint or "")


def test_empty_and_non_text() -> None:
    assert err("   ").message == "empty expression"
    assert err("").code == "syntax"
    with pytest.raises(ExprError) as info:
        parse_expr(42)  # type: ignore[arg-type]
    assert info.value.code == "syntax" and "must be text" in info.value.message


def test_error_end_offsets() -> None:
    error = err("a b")
    assert (error.offset, error.end_offset) == (2, 3)
    unterminated = err("x == 'abc")
    assert (unterminated.offset, unterminated.end_offset) == (5, 9)


# ---- limits and refusals --------------------------------------------------------------------------------------------


def test_too_long() -> None:
    error = err("x" * 10_000)
    assert error.code == "too_long" and "10000" in error.message
    parse_expr("a" * MAX_LENGTH)  # exactly at the limit is fine


def test_too_many_brackets() -> None:
    error = err("(" * 1000 + "x" + ")" * 1000)
    assert error.code == "too_deep" and error.offset == MAX_BRACKETS
    parse_expr("(" * MAX_BRACKETS + "x" + ")" * MAX_BRACKETS)
    assert err("[" * 40 + "]" * 40).code == "too_deep"
    # brackets inside strings do not count, escaped quotes do not end the string
    parse_expr('"' + "(" * 100 + '\\"" == x')
    parse_expr("'" + "[" * 100 + "' == x")


@pytest.mark.parametrize("text", ["-" * 4000 + "x", "not " * 1000 + "x", "+".join(["a"] * 2000), "2" + "**2" * 1000])
def test_deep_trees_without_brackets(text: str) -> None:
    error = err(text)
    assert error.code == "too_deep", error.message
    assert str(MAX_DEPTH) in error.message


def test_private_names_refused() -> None:
    for text, offset in (("__import__('os')", 0), ("temp.__class__", 5), ("_secret > 1", 0), ("a._b", 2)):
        error = err(text)
        assert error.code == "refused" and error.offset == offset, text


def test_number_too_large_literal() -> None:
    error = err("1e999")
    assert error.code == "too_large" and error.message.startswith("number too large")
    assert err("2e300 > x").code == "too_large"


# ---- grammar location ---------------------------------------------------------------------------------------------


def test_grammar_path_source_checkout() -> None:
    path = grammar_mod.grammar_path()
    assert path.name == "expr.lark" and path.is_file()


def test_grammar_path_installed_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "iot_dsl"
    (package / "grammar").mkdir(parents=True)
    (package / "grammar" / "expr.lark").write_text("start: 'x'\n")
    (package / "__init__.py").write_text("")
    monkeypatch.setattr(iot_dsl, "__file__", str(package / "__init__.py"))
    assert grammar_mod.grammar_path() == (package / "grammar" / "expr.lark").resolve()


def test_grammar_path_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "iot_dsl"
    package.mkdir()
    monkeypatch.setattr(iot_dsl, "__file__", str(package / "__init__.py"))
    with pytest.raises(FileNotFoundError, match="expr.lark"):
        grammar_mod.grammar_path()


def test_parser_is_cached() -> None:
    assert grammar_mod.get_parser() is grammar_mod.get_parser()
