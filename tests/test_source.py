"""Tests for iot_dsl.source: safe YAML loading with a file:line:col for every value."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
import yaml

from iot_dsl import source
from iot_dsl.errors import ExprError, LoadError, SchemaError, SourceSpan
from iot_dsl.source import Limits, Position, SourceDoc, YamlPath, load_file, load_text

_PARSERS: dict[str, Any] = {"python": source._PyLoader}
if getattr(yaml, "CSafeLoader", None) is not None:
    _PARSERS["libyaml"] = yaml.CSafeLoader


@pytest.fixture(autouse=True, params=sorted(_PARSERS))
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test with both PyYAML parsers: positions and refusals must not depend on which one is used."""
    monkeypatch.setattr(source, "_LOADER", _PARSERS[request.param])
    return str(request.param)


def load(text: str, limits: Limits = Limits()) -> SourceDoc:
    return load_text(dedent(text), "plant.yaml", limits)


def refuse(text: str, code: str, limits: Limits = Limits()) -> LoadError:
    """Load ``text`` and expect a LoadError with ``code`` (how fast that happens is measured in benchmarks/)."""
    return refused(lambda: load_text(text, "bad.yaml", limits), code)


def refused(action: Callable[[], Any], code: str) -> LoadError:
    with pytest.raises(LoadError) as info:
        action()
    error = info.value
    assert error.code == code, error.render()
    return error


def at(error: LoadError) -> tuple[int, int]:
    assert error.span is not None
    return error.span.line, error.span.col


WORKFLOW = """\
# plant workflow
name: plant
on: {event: start}
rules:
  - when: temperature > 30 and humidity < 20
    do: [alert, 'log']
  - when: 'it''s "hot"'
    do:
      - notify: "a\\x41b"
    note: |
      first line
        more indented
      last
"""


# --------------------------------------------------------------------------------------------------------------
# Data and positions
# --------------------------------------------------------------------------------------------------------------


def test_data_is_plain_python() -> None:
    doc = load_text(WORKFLOW, "plant.yaml")
    assert doc.file == "plant.yaml"
    assert doc.text == WORKFLOW
    assert doc.data == {
        "name": "plant",
        "on": {"event": "start"},
        "rules": [
            {"when": "temperature > 30 and humidity < 20", "do": ["alert", "log"]},
            {"when": "it's \"hot\"", "do": [{"notify": "aAb"}], "note": "first line\n  more indented\nlast\n"},
        ],
    }
    assert list(doc.data) == ["name", "on", "rules"]
    assert repr(doc) == "SourceDoc(file='plant.yaml')"


def test_positions_of_nested_values_and_keys() -> None:
    doc = load_text(WORKFLOW, "plant.yaml")
    assert doc.position(()) == Position(2, 1, 14, 1, None)  # a block scalar ends after its line break
    assert doc.position(("name",)) == Position(2, 7, 2, 12, None, key_line=2, key_col=1)
    assert doc.position(["on"]) == Position(3, 5, 3, 19, None, key_line=3, key_col=1)
    assert doc.position(("on", "event")) == Position(3, 13, 3, 18, None, key_line=3, key_col=6)
    assert doc.position(("rules",)) == Position(5, 3, 14, 1, None, key_line=4, key_col=1)
    assert doc.position(("rules", 0)) == Position(5, 5, 6, 23, None)
    assert doc.position(("rules", 0, "when")) == Position(5, 11, 5, 45, None, key_line=5, key_col=5)
    assert doc.position(("rules", 0, "do")) == Position(6, 9, 6, 23, None, key_line=6, key_col=5)
    assert doc.position(("rules", 0, "do", 1)) == Position(6, 17, 6, 22, "'")
    assert doc.position(("rules", 1, "when")) == Position(7, 11, 7, 24, "'", key_line=7, key_col=5)
    assert doc.position(("rules", 1, "do", 0)) == Position(9, 9, 9, 25, None)
    assert doc.position(("rules", 1, "do", 0, "notify")) == Position(9, 17, 9, 25, '"', key_line=9, key_col=9)
    assert doc.position(("rules", 1, "note")) == Position(10, 11, 14, 1, "|", key_line=10, key_col=5)
    assert doc.position(("rules", 2)) is None
    assert doc.position(("nope",)) is None


def test_spans_fall_back_to_the_nearest_ancestor() -> None:
    doc = load_text(WORKFLOW, "plant.yaml")
    assert doc.span(("rules", 0, "when")) == SourceSpan("plant.yaml", 5, 11, 5, 45)
    assert str(doc.span(("rules", 0, "then", "x"))) == "plant.yaml:5:5"
    assert str(doc.span(())) == "plant.yaml:2:1"
    assert SourceDoc("mem.yaml", "", {}).span(("a", 1)) == SourceSpan("mem.yaml", 1, 1)


def test_key_span_points_at_the_key() -> None:
    doc = load_text(WORKFLOW, "plant.yaml")
    assert doc.key_span(("rules", 0, "when")) == SourceSpan("plant.yaml", 5, 5, 5, 9)
    assert doc.key_span(("on", "event")) == SourceSpan("plant.yaml", 3, 6, 3, 11)
    # sequence items and the root have no key; unknown paths fall back to the ancestor's value span
    assert doc.key_span(("rules", 1)) == doc.span(("rules", 1))
    assert doc.key_span(()) == doc.span(())
    assert doc.key_span(("rules", 0, "whn")) == doc.span(("rules", 0))
    # a document built in code may have key positions but no key ends
    built = SourceDoc("mem.yaml", "a: 1\n", {"a": 1}, {("a",): Position(1, 4, 1, 5, None, 1, 1)})
    assert built.key_span(("a",)) == SourceSpan("mem.yaml", 1, 1)


def test_line_text() -> None:
    doc = load_text(WORKFLOW, "plant.yaml")
    assert doc.line_text(1) == "# plant workflow"
    assert doc.line_text(5) == "  - when: temperature > 30 and humidity < 20"
    assert doc.line_text(0) == ""
    assert doc.line_text(15) == ""
    assert doc.line_text(99) == ""


def test_crlf_and_unicode_line_breaks_count_like_yaml() -> None:
    doc = load_text("a: 1\r\nb:\r\n  c: x\r\nd: \u00e9t\u00e9\r\n", "crlf.yaml")
    assert doc.data == {"a": 1, "b": {"c": "x"}, "d": "\u00e9t\u00e9"}
    assert doc.position(("b", "c")) == Position(3, 6, 3, 7, None, key_line=3, key_col=3)
    assert doc.line_text(3) == "  c: x"
    assert doc.expr_span(("d",), 1) == SourceSpan("crlf.yaml", 4, 5)
    nel = load_text("a: 1\x85b: 2\n", "nel.yaml")
    assert nel.position(("b",)) == Position(2, 4, 2, 5, None, key_line=2, key_col=1)


def test_leading_bom_is_ignored() -> None:
    doc = load_text("\ufeffa: 1\n", "bom.yaml")
    assert doc.data == {"a": 1}
    assert doc.position(("a",)) == Position(1, 4, 1, 5, None, key_line=1, key_col=1)


def test_positions_skip_anchors_tags_and_comments() -> None:
    doc = load(
        """\
        a: &x !!str  foo
        b: ! bar
        c: &m   # the anchored mapping starts below
          k: v
        d: [&s one, *s]
        e: &empty
        f: 1
        """
    )
    assert doc.data == {"a": "foo", "b": "bar", "c": {"k": "v"}, "d": ["one", "one"], "e": None, "f": 1}
    assert doc.position(("a",)) == Position(1, 14, 1, 17, None, key_line=1, key_col=1)
    assert doc.position(("b",)) == Position(2, 6, 2, 9, None, key_line=2, key_col=1)
    assert doc.position(("c",)) == Position(4, 3, 4, 7, None, key_line=3, key_col=1)
    assert doc.position(("d", 0)) == Position(5, 8, 5, 11, None)
    # an empty anchored value stays where the anchor ends, it does not run into the next key
    pos = doc.position(("e",))
    assert pos is not None and (pos.line, pos.col) == (6, 10)


def test_alias_values_are_copies_positioned_at_the_anchor() -> None:
    doc = load(
        """\
        defaults: &d
          qos: 1
          tags: [a, b]
        mqtt:
          options: *d
        coap:
          options: *d
        """
    )
    assert doc.data["mqtt"]["options"] == {"qos": 1, "tags": ["a", "b"]}
    doc.data["mqtt"]["options"]["tags"].append("c")
    assert doc.data["coap"]["options"]["tags"] == ["a", "b"]
    assert doc.data["defaults"]["tags"] == ["a", "b"]
    # the value's text lives at the anchor; the key is the key where the alias is used
    assert doc.position(("mqtt", "options")) == Position(2, 3, 3, 15, None, key_line=5, key_col=3)
    assert doc.position(("coap", "options", "tags", 1)) == Position(3, 13, 3, 14, None)
    assert doc.position(("coap", "options", "qos")) == Position(2, 8, 2, 9, None, key_line=2, key_col=3)
    assert doc.key_span(("coap", "options")) == SourceSpan("plant.yaml", 7, 3, 7, 10)


def test_scalar_and_key_anchors_can_be_aliased() -> None:
    doc = load("&k limit: &v 10\nlist: [*v, *k]\nother:\n  *k : 3\n")
    assert doc.data == {"limit": 10, "list": [10, "limit"], "other": {"limit": 3}}
    assert doc.position(("list", 0)) == Position(1, 14, 1, 16, None)
    assert doc.position(("list", 1)) == Position(1, 4, 1, 9, None)
    assert doc.key_span(("other", "limit")) == SourceSpan("plant.yaml", 4, 3, 4, 5)
    # an aliased key is still a duplicate of itself
    error = refuse("&k limit: 1\n*k : again\n", "duplicate_key")
    assert error.message == "duplicate key 'limit' (first defined at line 1)"


def test_flow_collections_end_after_their_bracket() -> None:
    doc = load("a: {b: [1, 2], c: {}}\nd: []\n")
    assert doc.position(("a",)) == Position(1, 4, 1, 22, None, key_line=1, key_col=1)
    assert doc.position(("a", "b")) == Position(1, 8, 1, 14, None, key_line=1, key_col=5)
    assert doc.position(("d",)) == Position(2, 4, 2, 6, None, key_line=2, key_col=1)


def test_lookups_below_aliases_and_in_lists() -> None:
    doc = load(
        """\
        base: &b
          topics: [t/1, t/2]
        use: *b
        list:
          - plain  text  
            continued
        last: &tail"""
    )
    assert doc.data == {
        "base": {"topics": ["t/1", "t/2"]},
        "use": {"topics": ["t/1", "t/2"]},
        "list": ["plain  text continued"],
        "last": None,
    }
    assert doc.position(("use", "topics", 1)) == doc.position(("base", "topics", 1))
    assert doc.position(("use", "nope", 0)) is None
    assert doc.position(("nope", 0)) is None
    assert doc.span(("use", "nope")) == SourceSpan("plant.yaml", 2, 3, 2, 21)
    assert doc.expr_span(("use", "topics", 1), 2) == SourceSpan("plant.yaml", 2, 19)
    assert doc.expr_span(("list", 0), 12) == SourceSpan("plant.yaml", 6, 5)
    assert doc.expr_span(("list", -1), 12) == doc.span(("list",))  # paths use indexes from 0
    assert doc.expr_span(("list", 0), 11, 12) == SourceSpan("plant.yaml", 5, 16, 5, 16)
    pos = doc.position(("last",))
    assert pos is not None and (pos.line, pos.col) == (7, 12)


# --------------------------------------------------------------------------------------------------------------
# Scalar resolution: YAML 1.2 core schema
# --------------------------------------------------------------------------------------------------------------

RESOLVED = [
    ("true", True),
    ("True", True),
    ("TRUE", True),
    ("false", False),
    ("False", False),
    ("FALSE", False),
    ("on", "on"),
    ("off", "off"),
    ("yes", "yes"),
    ("no", "no"),
    ("y", "y"),
    ("n", "n"),
    ("tRue", "tRue"),
    ("null", None),
    ("Null", None),
    ("NULL", None),
    ("~", None),
    ("", None),
    ("nul", "nul"),
    ("0", 0),
    ("-17", -17),
    ("+3", 3),
    ("012", 12),
    ("0x1F", 31),
    ("0o17", 15),
    ("0b101", "0b101"),
    ("1_000", "1_000"),
    ("0x", "0x"),
    ("1.5", 1.5),
    ("-.5", -0.5),
    ("1.", 1.0),
    ("1e3", 1000.0),
    ("6.02E+23", 6.02e23),
    (".inf", math.inf),
    ("-.Inf", -math.inf),
    ("+.INF", math.inf),
    ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ("2026-01-01", "2026-01-01"),
    ("1:30", "1:30"),
    ("temp > 30", "temp > 30"),
    ("'123'", "123"),
    ('"true"', "true"),
    ("'null'", "null"),
    ("''", ""),
    ("!!str 12", "12"),
    ("! 12", "12"),
    ("!!int '0x10'", 16),
    ("!!int -5", -5),
    ("!!float 1", 1.0),
    ("!!float '2.5'", 2.5),
    ("!!float -.inf", -math.inf),
    ("!!bool 'false'", False),
    ("!!null ''", None),
    ("!!null ~", None),
]


@pytest.mark.parametrize(("text", "expected"), RESOLVED)
def test_scalars_resolve_by_yaml_12_core_schema(text: str, expected: Any) -> None:
    value = load_text(f"v: {text}\n").data["v"]
    assert value == expected
    assert type(value) is type(expected)


def test_nan() -> None:
    value = load_text("v: [.nan, .NaN, .NAN, !!float .nan]\n").data["v"]
    assert all(isinstance(v, float) and math.isnan(v) for v in value)


def test_block_scalars_are_strings() -> None:
    assert load_text("a: |\n  123\nb: >-\n  true\n").data == {"a": "123\n", "b": "true"}


def test_keys_are_strings() -> None:
    doc = load("on: a\noff: b\nyes: c\n200: d\ntrue: e\n~: f\n0x10: g\n'quoted': h\n")
    assert list(doc.data) == ["on", "off", "yes", "200", "true", "~", "0x10", "quoted"]
    assert doc.key_span(("on",)) == SourceSpan("plant.yaml", 1, 1, 1, 3)
    assert load_text("!!str 7: x\n").data == {"7": "x"}
    assert load_text("'<<': quoted merge-looking keys are fine\n").data == {"<<": "quoted merge-looking keys are fine"}


# --------------------------------------------------------------------------------------------------------------
# expr_span: offsets inside string values
# --------------------------------------------------------------------------------------------------------------


def expr_doc() -> SourceDoc:
    return load(
        """\
        plain: temp > 30 and hum < 2
        single: 'it''s x > 1'
        double: "a\\tb == \\u00e9 + c"
        anchored: &e  speed > 10
        block: |
          first > 1
            second < 2

          third
        folded: >
          one two
          three

            kept
          four
        multi: plain
          continued here
        quoted: "line one
          line two\\
          three"
        count: 3
        """
    )


def test_expr_span_plain_scalar() -> None:
    doc = expr_doc()
    assert doc.expr_span(("plain",), 0) == SourceSpan("plant.yaml", 1, 8)
    assert doc.expr_span(("plain",), 5, 6) == SourceSpan("plant.yaml", 1, 13, 1, 14)
    assert doc.expr_span(("plain",), 17, 20) == SourceSpan("plant.yaml", 1, 25, 1, 28)
    assert doc.expr_span(("anchored",), 6, 8) == SourceSpan("plant.yaml", 4, 21, 4, 23)


def test_expr_span_quoted_scalars() -> None:
    doc = expr_doc()
    single = doc.data["single"]
    assert single.index("x") == 5
    # one column for the quote, one more for the doubled '' before the x
    assert doc.expr_span(("single",), 5, 6) == SourceSpan("plant.yaml", 2, 16, 2, 17)
    # the escaped quote is two source characters wide
    assert doc.expr_span(("single",), 2, 3) == SourceSpan("plant.yaml", 2, 12, 2, 14)
    double = doc.data["double"]
    assert double == "a\tb == \u00e9 + c"
    assert doc.expr_span(("double",), 0) == SourceSpan("plant.yaml", 3, 10)
    assert doc.expr_span(("double",), 1, 2) == SourceSpan("plant.yaml", 3, 11, 3, 13)  # \t
    assert doc.expr_span(("double",), 7, 8) == SourceSpan("plant.yaml", 3, 18, 3, 24)  # \u00e9
    assert doc.expr_span(("double",), 11, 12) == SourceSpan("plant.yaml", 3, 27, 3, 28)  # c


def test_expr_span_literal_block() -> None:
    doc = expr_doc()
    text = doc.data["block"]
    assert text == "first > 1\n  second < 2\n\nthird\n"
    assert doc.expr_span(("block",), 0) == SourceSpan("plant.yaml", 6, 3)
    assert doc.expr_span(("block",), text.index("second"), text.index("second") + 6) == SourceSpan(
        "plant.yaml", 7, 5, 7, 11
    )
    assert doc.expr_span(("block",), text.index("second") - 2) == SourceSpan("plant.yaml", 7, 3)
    assert doc.expr_span(("block",), text.index("third")) == SourceSpan("plant.yaml", 9, 3)
    # the end of the value is just after its last character
    assert doc.expr_span(("block",), len(text)) == SourceSpan("plant.yaml", 9, 8)


def test_expr_span_folded_block_and_multiline_scalars() -> None:
    doc = expr_doc()
    folded = doc.data["folded"]
    assert folded == "one two three\n\n  kept\nfour\n"
    assert doc.expr_span(("folded",), folded.index("three")) == SourceSpan("plant.yaml", 12, 3)
    assert doc.expr_span(("folded",), folded.index("kept")) == SourceSpan("plant.yaml", 14, 5)
    assert doc.expr_span(("folded",), folded.index("kept") - 1) == SourceSpan("plant.yaml", 14, 4)
    assert doc.expr_span(("folded",), folded.index("four")) == SourceSpan("plant.yaml", 15, 3)
    # a folded line break maps (zero-width) to the end of the line it folds
    assert doc.expr_span(("folded",), 7, 8) == SourceSpan("plant.yaml", 11, 10, 11, 10)
    multi = doc.data["multi"]
    assert multi == "plain continued here"
    assert doc.expr_span(("multi",), multi.index("here"), len(multi)) == SourceSpan("plant.yaml", 17, 13, 17, 17)
    quoted = doc.data["quoted"]
    assert quoted == "line one line twothree"
    assert doc.expr_span(("quoted",), quoted.index("two"), quoted.index("two") + 3) == SourceSpan(
        "plant.yaml", 19, 8, 19, 11
    )
    assert doc.expr_span(("quoted",), quoted.index("three")) == SourceSpan("plant.yaml", 20, 3)


def test_expr_span_multiline_quoted_with_empty_lines() -> None:
    doc = load('a: "x\n\n  y\\\n\n  z"\nb: \'p\n\n   q\'\n')
    assert doc.data == {"a": "x\ny\nz", "b": "p\nq"}
    assert doc.expr_span(("a",), 2) == SourceSpan("plant.yaml", 3, 3)
    assert doc.expr_span(("a",), 4) == SourceSpan("plant.yaml", 5, 3)
    assert doc.expr_span(("b",), 2) == SourceSpan("plant.yaml", 8, 4)


def test_expr_span_clamps_and_falls_back() -> None:
    doc = expr_doc()
    assert doc.expr_span(("plain",), -4) == SourceSpan("plant.yaml", 1, 8)
    assert doc.expr_span(("plain",), 999) == SourceSpan("plant.yaml", 1, 29)
    assert doc.expr_span(("plain",), 3, 3) == SourceSpan("plant.yaml", 1, 11, 1, 12)
    assert doc.expr_span(("plain",), 3, 999) == SourceSpan("plant.yaml", 1, 11, 1, 29)
    # not a string / no such value: the value's (or the ancestor's) span
    assert doc.expr_span(("count",), 1) == doc.span(("count",))
    assert doc.expr_span(("missing", 0), 1) == doc.span(())
    empty = load("a: |\n")
    assert empty.data == {"a": ""}
    assert empty.expr_span(("a",), 0) == SourceSpan("plant.yaml", 2, 1)


def test_expr_span_best_effort_when_the_text_does_not_decode() -> None:
    # documents built in code may hold positions that do not match the text: estimates, never exceptions
    text = 'a: "\\xZZ"\nb: "\\q"\nc: plain\nd: [x]\ne: "abc"\nf: "open'
    positions: dict[YamlPath, Position] = {
        ("a",): Position(1, 4, 1, 10, '"'),
        ("b",): Position(2, 4, 2, 8, '"'),
        ("c",): Position(3, 4, 3, 9, None),
        ("d",): Position(4, 4, 4, 7, "'"),
        ("e",): Position(5, 4, 5, 9, '"'),
        ("f",): Position(6, 4, 6, 9, '"'),
    }
    data = {"a": "zz", "b": "q", "c": "other", "d": "xyzzy", "e": "xyz", "f": "open"}
    doc = SourceDoc("mem.yaml", text, data, positions)
    assert doc.expr_span(("a",), 1) == SourceSpan("mem.yaml", 1, 6)
    assert doc.expr_span(("b",), 0, 1) == SourceSpan("mem.yaml", 2, 5, 2, 6)
    assert doc.expr_span(("c",), 2) == SourceSpan("mem.yaml", 3, 4)
    assert doc.expr_span(("d",), 1, 2) == SourceSpan("mem.yaml", 4, 6, 4, 7)
    assert doc.expr_span(("d",), 99) == SourceSpan("mem.yaml", 5, 3)  # past the line: an estimate
    assert doc.expr_span(("e",), 2) == SourceSpan("mem.yaml", 5, 7)  # decodes to "abc", not "xyz": estimate
    assert doc.expr_span(("f",), 1, 4) == SourceSpan("mem.yaml", 6, 6, 6, 9)  # no closing quote


# --------------------------------------------------------------------------------------------------------------
# error()
# --------------------------------------------------------------------------------------------------------------


def test_error_builds_positioned_errors() -> None:
    doc = load_text(WORKFLOW, "plant.yaml")
    error = doc.error("unknown key 'when'", ("rules", 0, "when"), code="unknown_key", hint="did you mean x?", key=True)
    assert isinstance(error, LoadError)
    assert error.render() == (
        "plant.yaml:5:5: unknown key 'when' (did you mean x?)\n"
        "  at rules[0].when\n"
        "  5 |   - when: temperature > 30 and humidity < 20\n"
        "    |     ^^^^"
    )
    schema = doc.error("bad value", ["rules", 0, "do", 0], code="enum", cls=SchemaError)
    assert isinstance(schema, SchemaError)
    assert schema.code == "enum"
    assert schema.path == ("rules", 0, "do", 0)
    assert schema.span == SourceSpan("plant.yaml", 6, 10, 6, 15)
    assert schema.source_line == "    do: [alert, 'log']"
    expr = doc.error("boom", ("rules", 9), code="expr", cls=ExprError)
    assert isinstance(expr, ExprError)
    assert expr.span == doc.span(("rules",))


# --------------------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------------------


def test_too_large_text_is_refused_before_parsing() -> None:
    error = refuse("a: " + "x" * 40 + "\n", "too_large", Limits(max_bytes=32))
    assert error.message == "bad.yaml is 44 bytes, larger than the limit of 32 bytes"
    # the cap counts UTF-8 bytes, not characters
    refuse("a: " + "\u00e9" * 15, "too_large", Limits(max_bytes=32))
    refuse("a: [" + "1, " * 1_000_000 + "]", "too_large")


def test_too_large_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * (3 * 1024 * 1024) + b"\n")
    error = refused(lambda: load_file(big), "too_large")
    assert error.message == f"{big} is 3145732 bytes, larger than the limit of 2097152 bytes"
    error = refused(lambda: load_file(big, display_name="big.yaml"), "too_large")
    assert error.message.startswith("big.yaml is 3145732 bytes")


def test_file_that_grows_after_stat_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("a: 1\n")
    monkeypatch.setattr(source, "open", lambda *args, **kwargs: io.BytesIO(b"a: 1\n" * 100), raising=False)
    error = refused(lambda: load_file(path, Limits(max_bytes=64), display_name="w.yaml"), "too_large")
    assert error.message == "w.yaml is larger than the limit of 64 bytes"


def test_missing_and_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    error = refused(lambda: load_file(tmp_path / "nope.yaml", display_name="nope.yaml"), "not_found")
    assert error.message == "file not found: nope.yaml"
    error = refused(lambda: load_file(tmp_path), "unreadable")
    assert error.message == f"cannot read {tmp_path}: not a regular file"
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    error = refused(lambda: load_file(plain / "child.yaml", display_name="child.yaml"), "unreadable")
    assert error.message == "cannot read child.yaml: Not a directory"

    def denied(*args: object, **kwargs: object) -> io.BytesIO:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(source, "open", denied, raising=False)
    error = refused(lambda: load_file(plain, display_name="plain.txt"), "unreadable")
    assert error.message == "cannot read plain.txt: Permission denied"


def test_not_utf8_file_is_refused_with_a_position(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: plant\nnote: caf\u00e9 ok\n".encode("latin-1"))
    error = refused(lambda: load_file(path, display_name="latin1.yaml"), "unreadable")
    assert error.render() == (
        "latin1.yaml:2:10: latin1.yaml is not valid UTF-8 (byte 0xe9 at offset 21) (save the file as UTF-8)\n"
        "  2 | note: caf\ufffd ok\n"
        "    |          ^"
    )


def test_utf8_file_loads_with_bom_and_display_name(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_bytes("\ufeffname: caf\u00e9\n".encode())
    doc = load_file(path, display_name="ok.yaml")
    assert doc.data == {"name": "caf\u00e9"}
    assert doc.file == "ok.yaml"
    assert doc.span(("name",)) == SourceSpan("ok.yaml", 1, 7, 1, 11)
    assert load_file(str(path)).file == str(path)


def test_control_characters_and_surrogates_are_refused() -> None:
    error = refuse("a: 1\nb: x\x07y\n", "unreadable")
    assert error.render() == (
        "bad.yaml:2:5: character U+0007 is not allowed in YAML text (remove the control character)\n"
        "  2 | b: x\x07y\n"
        "    |     ^"
    )
    assert at(refuse("a: \ud800\n", "unreadable")) == (1, 4)
    assert at(refuse("a: 1\nb: \ufeff\n", "unreadable")) == (2, 4)


def test_yaml_syntax_errors_have_one_based_positions() -> None:
    error = refuse("name: plant\nrules: [1, 2\nb: c\n", "yaml_syntax")
    assert at(error) == (3, 2)
    assert error.message.startswith("invalid YAML: ")
    assert error.hint == "while parsing a flow sequence at line 2"
    assert error.source_line == "b: c"
    error = refuse("a: b: c\n", "yaml_syntax")
    assert at(error) == (1, 5)
    assert error.message.startswith("invalid YAML: mapping values are not allowed")
    assert error.hint is None
    assert at(refuse("a:\n\t- b\n", "yaml_syntax")) == (2, 1)
    assert at(refuse("a: 'open\n", "yaml_syntax")) == (2, 1)


def test_yaml_errors_without_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(text: str, limits: Limits) -> Iterator[Any]:
        raise yaml.YAMLError("the parser broke")
        yield  # pragma: no cover - makes this a generator

    monkeypatch.setattr(source, "_events", broken)
    error = refuse("a: 1\n", "yaml_syntax")
    assert error.message == "invalid YAML: the parser broke"
    assert error.span is None

    def unmarked(text: str, limits: Limits) -> Iterator[Any]:
        raise yaml.MarkedYAMLError(context="while testing", problem=None)
        yield  # pragma: no cover - makes this a generator

    monkeypatch.setattr(source, "_events", unmarked)
    error = refuse("a: 1\n", "yaml_syntax")
    assert error.message == "invalid YAML: while testing"
    assert error.span is None


DUPLICATE = """\
name: plant
rules:
  - id: r1
    when: temp > 30
    do: alert
    when: temp > 40
"""


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    error = refuse(DUPLICATE, "duplicate_key")
    assert error.render() == (
        "bad.yaml:6:5: duplicate key 'when' (first defined at line 4)\n"
        "  at rules[0].when\n"
        "  6 |     when: temp > 40\n"
        "    |     ^^^^"
    )
    error = refuse("a: 1\nb: 2\na: 3\n", "duplicate_key")
    assert error.message == "duplicate key 'a' (first defined at line 1)"
    assert error.path == ("a",)
    error = refuse("a: {x: 1, 'x': 2}\n", "duplicate_key")
    assert at(error) == (1, 11)
    error = refuse("streams:\n  s:\n    fields: {t: float}\n    fields: {}\n", "duplicate_key")
    assert error.path == ("streams", "s", "fields")


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ('!!python/object/apply:os.system ["echo hi"]\n', "!!python/object/apply:os.system"),
        ("a: !!python/object/apply:os.system ['echo hi']\n", "!!python/object/apply:os.system"),
        ("a: !!python/object:collections.OrderedDict {}\n", "!!python/object:collections.OrderedDict"),
        ("a: !!python/name:os.system ''\n", "!!python/name:os.system"),
        ("!custom root: 1\n", "!custom"),
        ("a: !custom x\n", "!custom"),
        ("a: !!binary aGVsbG8=\n", "!!binary"),
        ("a: !!timestamp 2026-01-01\n", "!!timestamp"),
        ("a: !!set {x, y}\n", "!!set"),
        ("a: !!omap [x: 1]\n", "!!omap"),
        ("a: !<tag:example.com:thing> x\n", "tag:example.com:thing"),
        ("%TAG !! tag:evil.com,2000:\n---\na: !!str x\n", "tag:evil.com,2000:str"),
    ],
)
def test_non_standard_tags_are_refused(text: str, tag: str) -> None:
    error = refuse(text, "unsafe_tag")
    assert error.message == f"tag '{tag}' is not allowed"
    assert error.hint is not None and "!!str" in error.hint


def test_unsafe_tag_render() -> None:
    error = refuse("name: x\nrun: !!python/object/apply:os.system [echo hi]\n", "unsafe_tag")
    assert error.render() == (
        "bad.yaml:2:6: tag '!!python/object/apply:os.system' is not allowed (only the standard !!str, !!int, "
        "!!float, !!bool, !!null, !!seq and !!map tags may be used)\n"
        "  at run\n"
        "  2 | run: !!python/object/apply:os.system [echo hi]\n"
        "    |      ^"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!int abc\n", "'abc' cannot be read as !!int"),
        ("a: !!int 1.5\n", "'1.5' cannot be read as !!int"),
        ("a: !!float abc\n", "'abc' cannot be read as !!float"),
        ("a: !!bool yes\n", "'yes' cannot be read as !!bool"),
        ("a: !!null x\n", "'x' cannot be read as !!null"),
        ("!!int k: v\n", "'k' cannot be read as !!int"),
        ("a: !!map x\n", "tag '!!map' cannot be used on a scalar"),
        ("a: !!str [x]\n", "tag '!!str' cannot be used on a collection"),
        ("a: !!seq {x: 1}\n", "tag '!!seq' cannot be used on a collection"),
        ("!!seq {x: 1}\n", "tag '!!seq' cannot be used on a collection"),
    ],
)
def test_explicit_tags_must_fit_the_value(text: str, message: str) -> None:
    assert refuse(text, "tag_mismatch").message == message


def test_explicit_collection_tags_are_fine() -> None:
    assert load_text("!!map\na: !!seq [1]\nb: !!map {c: !!null ''}\n").data == {"a": [1], "b": {"c": None}}


def test_merge_keys_are_refused() -> None:
    text = "base: &b {qos: 1}\nmqtt:\n  <<: *b\n  qos: 2\n"
    error = refuse(text, "merge_key")
    assert at(error) == (3, 3)
    assert error.message == "merge keys ('<<') are not allowed"
    assert error.hint == "merge keys hide duplicate and overridden keys; write the keys out"
    assert refuse("a:\n  !!merge x: 1\n", "merge_key").message == "merge keys ('<<', !!merge) are not allowed"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": each level's list holds ``width`` aliases of the previous level."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = [f"a: &a [{','.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"{names[level]}: &{names[level]} [{','.join([f'*{names[level - 1]}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused() -> None:
    bomb = alias_bomb()
    assert len(bomb) < 350
    error = refuse(bomb, "alias_limit")
    assert error.hint == "this looks like an alias bomb ('billion laughs'); write the values out"


def test_alias_bomb_is_refused_by_alias_count() -> None:
    error = refuse(alias_bomb(), "alias_limit", Limits(max_nodes=10**12))
    assert error.message == "more than 64 alias uses (*name) in one document"
    assert at(error) == (9, 11)  # the second alias on the last line is the 65th


def test_alias_bomb_is_refused_by_expanded_size() -> None:
    error = refuse(alias_bomb(), "alias_limit", Limits(max_aliases=1_000_000))
    assert error.message == "alias expansion exceeds the limit of 200000 values"
    assert error.hint is not None and "billion laughs" in error.hint
    assert at(error)[0] == 6  # level 5 is the first whose expansion passes 200000 values
    refuse(alias_bomb(4, 4), "alias_limit", Limits(max_nodes=50))


def test_normal_alias_reuse_is_fine() -> None:
    assert load_text("a: &x hi\nb: *x\n").data == {"a": "hi", "b": "hi"}
    many = "a: &x 1\nb: [" + ", ".join(["*x"] * 64) + "]\n"
    assert len(load_text(many).data["b"]) == 64
    refuse("a: &x 1\nb: [" + ", ".join(["*x"] * 65) + "]\n", "alias_limit")


def test_undefined_and_recursive_aliases() -> None:
    error = refuse("a: *nope\n", "yaml_syntax")
    assert error.message == "alias '*nope' refers to no anchor '&nope' defined before it"
    assert at(error) == (1, 4)
    error = refuse("a: &r [1, *r]\n", "yaml_syntax")
    assert error.message == "alias '*r' refers to a node that contains it (recursive data)"


def test_anchors_may_be_redefined() -> None:
    # YAML 1.2: an alias refers to the most recent anchor of that name before it
    assert load_text("a: &x 1\nb: &x 2\nc: *x\n").data == {"a": 1, "b": 2, "c": 2}
    assert load_text("a: &x [&x 1, *x]\nb: *x\n").data == {"a": [1, 1], "b": 1}


def test_too_many_values_without_aliases() -> None:
    error = refuse("a: [1, 2, 3]\n", "too_large", Limits(max_nodes=3))
    assert error.message == "document has more than 3 values"
    assert at(error) == (1, 8)


def test_deep_flow_nesting_is_refused_not_a_recursion_error() -> None:
    error = refuse("a: " + "[" * 1000 + "]" * 1000 + "\n", "too_deep")
    assert error.message == "nesting is deeper than the limit of 64 levels"
    assert error.hint == "flatten the structure"
    assert at(error)[0] == 1
    error = refuse("a: [" + "[1, " * 99 + "]" * 100 + "\n", "too_deep")
    assert error.message == "nesting is deeper than the limit of 64 levels"
    refuse("a: " + "{b: " * 1000 + "x" + "}" * 1000 + "\n", "too_deep")
    # without a closing bracket in sight: refused long before the parser could complain
    refuse("a: " + "[" * 100_000, "too_deep")


def test_deep_block_nesting_is_refused() -> None:
    deep = "\n".join(" " * i + f"k{i}:" for i in range(1000)) + " leaf\n"
    error = refuse(deep, "too_deep")
    assert error.path == tuple(f"k{i}" for i in range(64))
    assert error.render() == (
        "bad.yaml:65:65: nesting is deeper than the limit of 64 levels (flatten the structure)\n"
        f"  at {'.'.join(f'k{i}' for i in range(64))}\n"
        f"  65 | {' ' * 64}k64:\n"
        f"     | {' ' * 64}^"
    )
    deep_list = "a:\n" + "".join(" " * (2 * i + 2) + "-\n" for i in range(500)) + " " * 1002 + "x\n"
    refuse(deep_list, "too_deep")


def test_depth_limit_is_inclusive() -> None:
    ok = "a: " + "[" * 63 + "]" * 63 + "\n"
    assert load_text(ok).position(("a",) + (0,) * 62) == Position(1, 66, 1, 68, None)
    refuse("a: " + "[" * 64 + "]" * 64 + "\n", "too_deep")
    assert load_text("a: [[[]]]\n", limits=Limits(max_depth=4)).data == {"a": [[[]]]}
    refuse("a: [[[[]]]]\n", "too_deep", Limits(max_depth=4))


def test_aliases_cannot_build_deep_nesting() -> None:
    text = "a: &x [[[1]]]\nb: [[*x]]\n"
    assert load_text(text, limits=Limits(max_depth=6)).data["b"] == [[[[[1]]]]]
    error = refuse(text, "too_deep", Limits(max_depth=5))
    assert error.message == "alias '*x' nests values deeper than the limit of 5 levels"


def test_long_scalars_are_refused() -> None:
    error = refuse("a: " + "x" * 70_000 + "\n", "scalar_too_long")
    assert error.message == "scalar is 70000 characters long, more than the limit of 65536"
    assert at(error) == (1, 4)
    refuse("k" * 70_000 + ": 1\n", "scalar_too_long")
    refuse("a: '" + "y" * 20 + "'\n", "scalar_too_long", Limits(max_scalar_len=10))
    error = refuse("a: " + "9" * 5000 + "\n", "scalar_too_long")
    assert error.message == "integer has 5000 digits, more than the limit of 4300"
    assert error.hint == "quote it to keep it as text"
    assert load_text("a: '" + "9" * 5000 + "'\n").data["a"] == "9" * 5000
    assert load_text("a: 0x" + "f" * 5000 + "\n").data["a"] == 16**5000 - 1


@pytest.mark.parametrize(
    ("text", "hint", "where"),
    [
        ("", "the file is empty", (1, 1)),
        ("# only a comment\n\n", "the file is empty", (1, 1)),
        ("---\n", "the file is empty", (2, 1)),
        ("- a\n- b\n", "found a sequence", (1, 1)),
        ("just text\n", "found a scalar", (1, 1)),
        ("''\n", "found a scalar", (1, 1)),
        ("*a\n", "found an alias", (1, 1)),
    ],
)
def test_top_level_must_be_a_mapping(text: str, hint: str, where: tuple[int, int]) -> None:
    error = refuse(text, "not_a_mapping")
    assert error.message == "a workflow file must be a mapping at the top level"
    assert error.hint == hint
    assert at(error) == where


def test_multiple_documents_are_refused() -> None:
    error = refuse("a: 1\n---\nb: 2\n", "multiple_documents")
    assert at(error) == (2, 1)
    assert error.message == "a workflow file must hold a single YAML document, found a second one"
    refuse("---\na: 1\n...\n---\nb: 2\n", "multiple_documents")
    assert load_text("---\na: 1\n...\n").data == {"a": 1}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("? [a, b]\n: x\n", "a mapping key must be a scalar, not a sequence"),
        ("? {a: 1}\n: x\n", "a mapping key must be a scalar, not a mapping"),
        ("{[a]: 1}\n", "a mapping key must be a scalar, not a sequence"),
        ("a: &l [1]\n*l : x\n", "a mapping key must be a scalar, not an alias to a collection"),
    ],
)
def test_complex_keys_are_refused(text: str, message: str) -> None:
    assert refuse(text, "complex_key").message == message


def test_limits_defaults() -> None:
    limits = Limits()
    assert (limits.max_bytes, limits.max_depth, limits.max_aliases, limits.max_nodes, limits.max_scalar_len) == (
        2 * 1024 * 1024,
        64,
        64,
        200_000,
        65_536,
    )
    with pytest.raises(AttributeError):
        limits.max_depth = 3  # type: ignore[misc]


def test_large_ordinary_document_loads(tmp_path: Path, parser: str) -> None:
    lines = ["streams:"]
    for i in range(500):
        lines.append(f"  s{i}:\n    when: temperature > {i}\n    tags: [a, b]")
    path = tmp_path / "wide.yaml"
    path.write_text("\n".join(lines) + "\n")
    doc = load_file(path)
    assert len(doc.data["streams"]) == 500
    assert doc.position(("streams", "s499", "tags", 1)) == Position(1501, 15, 1501, 16, None)
    assert doc.expr_span(("streams", "s499", "when"), 14) == SourceSpan(str(path), 1500, 25)
    assert os.fspath(path) == doc.file
