"""The pattern language compiles to plan entries; every mistake is a positioned error, all reported together."""

from __future__ import annotations

import textwrap

import pytest

from iot_dsl import DslErrors
from iot_dsl.errors import CompileError, ExprError, SchemaError

from .conftest import compile_yaml

HEAD = """
workflow: w
streams:
  telemetry: {key: device, time: ts, fields: {temp: number, status: string, ok: boolean}}
patterns:
"""


def pattern(body: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(body).strip(), "  ") + "\n"


def errors_of(text: str) -> list:
    with pytest.raises(DslErrors) as info:
        compile_yaml(text)
    return info.value.errors


def one_error(body: str) -> tuple:
    (error,) = errors_of(pattern(body))
    assert error.span is not None
    return error, (error.span.line, error.span.col), error.path_text, error.message


def test_a_pattern_becomes_a_plan_operator_with_normalised_steps_and_match_fields() -> None:
    plan = compile_yaml(pattern("""
        overheat:
          stream: telemetry
          within: 2m
          sequence:
            - {name: hot, when: "temp > 90", times: 3, consecutive: true}
            - {name: hotter, when: "temp > hot.temp + 5 and temp > avg(hot.temp)", contiguity: next}
            - {name: maybe, when: "ok", optional: true}
            - {absent: "status == 'ack'", for: 30s}
        held:
          stream: telemetry
          per: [site, type]
          condition: "temp > 90"
          for: 30s
    """) + """
rules:
  - when: overheat
    if: "hot_count == 3 and maybe_count >= 0 and match_end >= match_start"
    do: [{alert: "x"}]
""")
    (cloud,) = plan.segments
    ops = {op["id"]: op for op in cloud["operators"]}
    config = ops["pattern:overheat"]["config"]
    assert [(s["name"], s["min"], s["max"], s["consecutive"], s["contiguity"]) for s in config["steps"]] == [
        ("hot", 3, 3, True, "followed_by"), ("hotter", 1, 1, False, "next"), ("maybe", 0, 1, False, "followed_by"),
    ]
    assert config["absent"] == {"when": "status == 'ack'", "for": 30.0, "at": 3}
    assert config["within"] == 120.0 and config["after_match"] == "skip_past_last" and config["max_partial"] == 1000
    assert ops["pattern:overheat"]["inputs"] == ["source:telemetry"]
    assert ops["pattern:overheat"]["fields"]["hot_count"] == "integer"
    assert ops["pattern:overheat"]["fields"]["match_start"] == "number"
    assert "hotter_count" not in ops["pattern:overheat"]["fields"]
    assert ops["pattern:held"]["config"]["condition"] == "temp > 90" and ops["pattern:held"]["config"]["for"] == 30.0
    assert ops["pattern:held"]["config"]["per"] == ["site", "type"]
    assert ops["rule:rule-1"]["inputs"] == ["pattern:overheat"]


@pytest.mark.parametrize(
    "times, bounds",
    [("2", (2, 2)), ('"1+"', (1, None)), ('"0+"', (0, None)), ("{min: 2, max: 4}", (2, 4)), ("{min: 2}", (2, None))],
)
def test_times_forms(times: str, bounds: tuple) -> None:
    plan = compile_yaml(pattern(f"""
        p:
          stream: telemetry
          sequence:
            - {{name: a, when: "temp > 1", times: {times}}}
            - {{name: b, when: "temp > 2"}}
    """))
    step = plan.segments[0]["operators"][1]["config"]["steps"][0]
    assert (step["min"], step["max"]) == bounds


def test_misspelt_keys_get_did_you_mean_from_the_schema() -> None:
    errors = errors_of(pattern("""
        p:
          stream: telemetry
          withn: 30s
          sequence:
            - {name: hot, when: "temp > 90", tims: 3}
            - {name: b, when: "temp > 1", contiguity: folowed_by}
    """))
    assert [(type(e), e.message, e.hint, e.span.line) for e in errors] == [
        (SchemaError, "unknown key 'withn'", "did you mean 'within'?", 8),
        (SchemaError, "unknown key 'tims'", "did you mean 'times'?", 10),
        (SchemaError, "'folowed_by' is not one of: next, followed_by, followed_by_any", "did you mean 'followed_by'?", 11),
    ]


@pytest.mark.parametrize(
    "times, message",
    [
        ("0", "number 0 must be >= 1"),
        ('"x"', "'x' is not valid: write 'n+' for n or more, e.g. '1+'"),
        ("{min: 1, mx: 2}", "unknown key 'mx'"),
    ],
)
def test_malformed_times_are_schema_errors(times: str, message: str) -> None:
    errors = errors_of(pattern(f"""
        p:
          stream: telemetry
          sequence:
            - {{name: a, when: "temp > 1", times: {times}}}
    """))
    assert [e.message for e in errors] == [message]


def test_times_max_below_min_is_positioned_at_times() -> None:
    error, at, path, message = one_error("""
        p:
          stream: telemetry
          sequence:
            - {name: a, when: "temp > 1", times: {min: 3, max: 2}}
    """)
    assert isinstance(error, CompileError) and error.code == "times"
    assert (at, path, message) == ((9, 44), "patterns.p.sequence[0].times", "bad times: max (2) is less than min (3)")


def test_unknown_step_reference_points_inside_the_expression_with_a_guess() -> None:
    error, at, path, message = one_error("""
        p:
          stream: telemetry
          sequence:
            - {name: hot, when: "temp > 90"}
            - {name: hotter, when: "temp > hott.temp + 5"}
    """)
    assert isinstance(error, ExprError)
    assert (at, path, message, error.hint) == (
        (10, 38), "patterns.p.sequence[1].when", "unknown field 'hott'", "did you mean 'hot'?"
    )


def test_a_reference_to_a_later_step_is_refused() -> None:
    error, at, path, message = one_error("""
        p:
          stream: telemetry
          sequence:
            - {name: hot, when: "temp > hotter.temp"}
            - {name: hotter, when: "temp > 5"}
    """)
    assert (at, message, error.hint) == ((9, 35), "step 'hotter' is not an earlier step", "a condition may refer only to steps before it")


@pytest.mark.parametrize(
    "condition, message",
    [
        ("avg(temp) > 1", "avg() takes one earlier step's field, e.g. avg(hot.temp)"),
        ("avg(hot) > 1", "avg() needs a field of step 'hot', e.g. avg(hot.temp)"),
        ("avg(hot.status) > 1", "avg() needs a numeric field, 'hot.status' is string"),
        ("sum(hot.nope) > 1", "unknown field 'nope' of 'hot'"),
        ("avg(hot.temp.x) > 1", "avg() takes one earlier step's field, e.g. avg(hot.temp)"),
        ("count(hot) > 'x'", "integer compared with string"),
        ("min(hot.status) > 1", "string compared with integer"),
    ],
)
def test_aggregate_misuse_is_reported_at_the_call(condition: str, message: str) -> None:
    errors = errors_of(pattern(f"""
        p:
          stream: telemetry
          sequence:
            - {{name: hot, when: "temp > 90", times: 2}}
            - {{name: b, when: "{condition}"}}
    """))
    assert [e.message for e in errors] == [message]
    assert errors[0].path_text == "patterns.p.sequence[1].when"


def test_aggregate_with_no_earlier_step_says_so() -> None:
    (error,) = errors_of(pattern("""
        p:
          stream: telemetry
          sequence:
            - {name: hot, when: "count(temp) > 1"}
    """))
    assert error.hint == "no step comes before this one"


def test_min_and_max_of_numbers_stay_ordinary_functions() -> None:
    compile_yaml(pattern("""
        p:
          stream: telemetry
          sequence:
            - {name: hot, when: "max(temp, 3) > min(1, 2)"}
            - {name: b, when: "max(hot.temp) > first(hot.temp) and last(hot.status) == 'x' and count(hot) == 1"}
    """))


@pytest.mark.parametrize(
    "body, code, path, message",
    [
        ("""
        p: {stream: telemetry}
        """, "pattern_shape", "patterns.p", "pattern 'p' needs a 'sequence' (or a 'condition' with 'for')"),
        ("""
        p: {stream: telemetry, condition: "temp > 1", for: 3s, sequence: [{when: "temp > 1"}]}
        """, "pattern_shape", "patterns.p.condition", "a pattern has either a 'sequence' or a 'condition', not both"),
        ("""
        p: {stream: telemetry, condition: "temp > 1"}
        """, "pattern_shape", "patterns.p.condition", "a 'condition' needs 'for' (how long it must hold)"),
        ("""
        p: {stream: telemetry, for: 3s, sequence: [{when: "temp > 1"}]}
        """, "pattern_shape", "patterns.p.for", "'for' on a pattern goes with 'condition'"),
        ("""
        p: {stream: telemetry, within: 0s, sequence: [{when: "temp > 1"}]}
        """, "range", "patterns.p.within", "'within' must be longer than 0"),
        ("""
        p: {stream: telemetry, sequence: [{absent: "temp > 1", for: 3s}, {when: "temp > 1"}]}
        """, "absent_first", "patterns.p.sequence[0]", "a sequence cannot start with an absent step"),
        ("""
        p: {stream: telemetry, within: 9s, sequence: [{when: "temp > 1"}, {absent: "ok"}, {absent: "ok"}]}
        """, "absent_twice", "patterns.p.sequence[2]", "two absent steps in a row"),
        ("""
        p: {stream: telemetry, sequence: [{when: "temp > 1"}, {absent: "ok"}]}
        """, "absent_unbounded", "patterns.p.sequence[1]", "an absent step at the end needs 'for' (or the pattern's 'within')"),
        ("""
        p: {stream: telemetry, sequence: [{when: "temp > 1"}, {absent: "ok", for: 3s}, {when: "temp > 2"}]}
        """, "step_shape", "patterns.p.sequence[1].for", "'for' is only for an absent step at the end"),
        ("""
        p: {stream: telemetry, sequence: [{when: "temp > 1"}, {absent: "ok"}, {when: "temp > 2", optional: true}]}
        """, "step_shape", "patterns.p.sequence[2].optional", "the step after an absent step cannot be optional"),
        ("""
        p: {stream: telemetry, sequence: [{when: "temp > 1"}, {absent: "ok"}, {when: "temp > 2", times: "0+"}]}
        """, "step_shape", "patterns.p.sequence[2].times", "the step after an absent step cannot be optional"),
        ("""
        p: {stream: telemetry, sequence: [{when: "temp > 1"}, {absent: "ok", for: 2s, times: 2}]}
        """, "step_shape", "patterns.p.sequence[1].times", "an absent step takes no 'times'"),
        ("""
        p: {stream: telemetry, sequence: [{when: "temp > 1"}, {absent: "ok", when: "ok"}]}
        """, "step_shape", "patterns.p.sequence[1].absent", "a step has either 'when' or 'absent', not both"),
        ("""
        p: {stream: telemetry, sequence: [{name: a}]}
        """, "step_shape", "patterns.p.sequence[0]", "a step needs 'when' (or 'absent')"),
        ("""
        p: {stream: telemetry, sequence: [{when: "ok", for: 3s}]}
        """, "step_shape", "patterns.p.sequence[0].for", "'for' belongs to an absent step"),
        ("""
        p: {stream: telemetry, sequence: [{when: "ok", consecutive: true}]}
        """, "step_shape", "patterns.p.sequence[0].consecutive", "'consecutive' needs a repeated step (times)"),
        ("""
        p: {stream: telemetry, sequence: [{name: a, when: "ok"}, {name: a, when: "ok"}]}
        """, "duplicate_name", "patterns.p.sequence[1].name", "duplicate step name 'a'"),
        ("""
        p: {stream: telemetry, sequence: [{when: "ok", optional: true}, {when: "ok", times: {min: 0, max: 2}}]}
        """, "step_shape", "patterns.p.sequence", "every step is optional: a pattern needs at least one required step"),
        ("""
        telemetry: {stream: telemetry, sequence: [{when: "ok"}]}
        """, "duplicate_name", "patterns.telemetry", "pattern 'telemetry' has the name of a stream"),
        ("""
        p: {stream: telemetry, per: devce, sequence: [{when: "ok"}]}
        """, "unknown_field", "patterns.p.per", "unknown key field 'devce'"),
        ("""
        p: {stream: telemetry, per: [site, tipe], sequence: [{when: "ok"}]}
        """, "unknown_field", "patterns.p.per[1]", "unknown key field 'tipe'"),
        ("""
        p: {stream: telemetri, sequence: [{when: "ok"}]}
        """, "unknown_stream", "patterns.p.stream", None),
        ("""
        p: {stream: telemetry, condition: "temp", for: 3s}
        """, "type", "patterns.p.condition", "condition must be boolean, got number"),
        ("""
        p: {stream: telemetry, within: 5s, sequence: [{name: a, when: "ok"}, {absent: "a.temp"}, {when: "ok"}]}
        """, "type", "patterns.p.sequence[1].absent", "condition must be boolean, got number"),
        ("""
        p: {stream: telemetry, within: 5s, sequence: [{name: a, when: "ok"}, {absent: "b.temp", for: 1s}]}
        """, "unknown_field", "patterns.p.sequence[1].absent", "unknown field 'b'"),
    ],
)
def test_structural_mistakes_are_positioned(body: str, code: str, path: str, message: str | None) -> None:
    errors = errors_of(pattern(body))
    assert [(e.code, e.path_text) for e in errors] == [(code, path)]
    assert errors[0].span is not None and errors[0].span.line >= 6
    if message is not None:
        assert errors[0].message == message


def test_all_mistakes_of_a_workflow_are_reported_in_one_run() -> None:
    errors = errors_of(pattern("""
        p:
          stream: telemetry
          sequence:
            - {absent: "ok", for: 3s}
            - {name: a, when: "temp > b.temp", times: {min: 4, max: 1}}
            - {name: b, when: "tmp > 1"}
        q: [not, a, mapping]
        r:
          stream: telemetry
          sequence: [3, {when: "ok"}]
    """))
    assert [(e.code, e.span.line) for e in errors] == [
        ("absent_first", 9), ("unknown_field", 10), ("times", 10), ("unknown_field", 11), ("type", 12), ("type", 15)
    ]


@pytest.mark.parametrize(
    "body, message",
    [
        ('p: {stream: telemetry, within: 3x, sequence: [{when: "ok"}]}', "'3x' is not valid: a duration looks like 500ms, 30s, 5m, 1h or 2d"),
        ("p: {stream: telemetry, sequence: x}", "expected a list, got 'x'"),
        ('p: {sequence: [{when: "ok"}]}', "missing required key 'stream'"),
        ('p: {stream: telemetry, sequence: [{when: "ok", times: true}]}', "true is not an accepted form here"),
    ],
)
def test_what_the_schema_refuses_is_not_reported_twice(body: str, message: str) -> None:
    assert [e.message for e in errors_of(pattern(body))] == [message]
