"""The workflow JSON Schema check (iot_dsl.schema): every kind of violation becomes a positioned, actionable error.

Each test compiles a small workflow through :func:`iot_dsl.compile_text` and inspects the :class:`DslErrors` it
raises: the stable ``code``, the ``message`` and ``hint`` people read, the YAML path and the ``file:line:col``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iot_dsl import DslError, DslErrors, SchemaError, compile_text
from iot_dsl.schema import KNOWN_TOP_LEVEL_KEYS, schema_text, validate_document, workflow_schema
from iot_dsl.source import load_text

# A small valid workflow touching every section; each test breaks one line of it.
VALID = """\
workflow: w
devices:
  types:
    pump:
      telemetry: {flow: number}
      commands:
        stop: {payload: {cmd: stop}}
streams:
  telemetry:
    topic: plant/+/telemetry
    device_type: pump
    lateness: 5s
rules:
  - name: dry
    when: telemetry
    if: "flow < 1"
    do:
      - command: stop
      - alert: "pump {device} is dry"
        severity: warning
sinks:
  ops: {topic: plant/ops}
edge:
  gateways:
    gw-a:
      devices: "site == 'a'"
      buffer: {max_bytes: 64MB, overflow: drop_oldest}
simulation:
  fleet:
    - type: pump
      count: 2
      firmware: "1.0.0"
      dropout: 0.1
"""


def variant(old: str, new: str) -> str:
    """``VALID`` with exactly one occurrence of ``old`` replaced by ``new``."""
    assert VALID.count(old) == 1, old
    return VALID.replace(old, new)


def all_errors(text: str) -> list[DslError]:
    with pytest.raises(DslErrors) as info:
        compile_text(text, "w.yaml")
    return info.value.errors


def schema_errors(text: str) -> list[SchemaError]:
    """The schema errors among everything the compiler reports for ``text`` (later stages may add their own)."""
    found = [e for e in all_errors(text) if isinstance(e, SchemaError)]
    assert found, "expected at least one schema error"
    return found


def only(text: str) -> SchemaError:
    """The single error ``text`` produces, which must be a schema error."""
    errors = all_errors(text)
    assert len(errors) == 1, DslErrors(errors).render()
    (error,) = errors
    assert isinstance(error, SchemaError)
    return error


def at(error: DslError) -> tuple[int, int]:
    assert error.span is not None
    assert error.span.file == "w.yaml"
    return error.span.line, error.span.col


# ---- the schema itself ----------------------------------------------------------------------------------------


def test_valid_workflow_has_no_schema_errors() -> None:
    compile_text(VALID, "w.yaml")
    assert validate_document(load_text(VALID, "w.yaml")) == []


def test_workflow_schema_is_the_shipped_root_file() -> None:
    shipped = Path(__file__).resolve().parent.parent / "iot_dsl" / "schemas" / "workflow.schema.json"
    assert workflow_schema() == json.loads(shipped.read_text(encoding="utf-8"))
    assert workflow_schema() is workflow_schema()  # parsed once
    assert workflow_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert workflow_schema()["required"] == ["workflow"]


def test_schema_text_is_one_json_schema_document() -> None:
    printed = json.loads(schema_text())
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert tuple(printed["properties"]) == KNOWN_TOP_LEVEL_KEYS
    assert printed["required"] == ["workflow"]
    assert schema_text().endswith("\n")


def test_known_top_level_keys() -> None:
    assert KNOWN_TOP_LEVEL_KEYS == tuple(workflow_schema()["properties"])
    assert KNOWN_TOP_LEVEL_KEYS[:6] == ("workflow", "description", "version", "devices", "streams", "rules")
    assert {"sinks", "edge", "simulation"} <= set(KNOWN_TOP_LEVEL_KEYS)


# ---- unknown and missing keys ---------------------------------------------------------------------------------


def test_unknown_top_level_key_with_did_you_mean() -> None:
    error = only(variant("rules:\n", "rulez:\n"))
    assert error.code == "unknown_key"
    assert error.message == "unknown key 'rulez'"
    assert error.hint == "did you mean 'rules'?"
    assert error.path == ("rulez",) and error.path_text == "rulez"
    assert at(error) == (13, 1)
    assert error.span is not None and error.span.end_col == 6  # the key itself, not its value
    assert error.render() == (
        "w.yaml:13:1: unknown key 'rulez' (did you mean 'rules'?)\n"
        "  at rulez\n"
        "  13 | rulez:\n"
        "     | ^^^^^"
    )


def test_unknown_top_level_key_without_a_guess_lists_the_allowed_keys() -> None:
    error = only(VALID + "owner: bob\n")
    assert error.code == "unknown_key"
    assert error.message == "unknown key 'owner'"
    assert error.hint == "allowed at the top level: " + ", ".join(KNOWN_TOP_LEVEL_KEYS)
    assert error.hint.startswith("allowed at the top level: workflow, description, version, devices, streams, rules, ")
    assert at(error) == (34, 1)


def test_unknown_nested_key_without_a_guess_lists_what_is_allowed_here() -> None:
    error = only(variant("    if: \"flow < 1\"\n", "    if: \"flow < 1\"\n    colour: red\n"))
    assert error.code == "unknown_key"
    assert error.message == "unknown key 'colour'"
    assert error.hint == "allowed here: name, description, when, if, do, cooldown, placement"
    assert error.path_text == "rules[0].colour"
    assert at(error) == (17, 5)


def test_misspelt_nested_key_is_unknown_and_the_real_one_missing() -> None:
    errors = schema_errors(variant("    when: telemetry\n", "    whn: telemetry\n"))
    assert [(e.code, e.message, e.hint, e.path_text, at(e)) for e in errors] == [
        ("missing_key", "missing required key 'when'", None, "rules[0]", (14, 5)),
        ("unknown_key", "unknown key 'whn'", "did you mean 'when'?", "rules[0].whn", (15, 5)),
    ]


def test_several_unknown_keys_in_one_mapping_are_each_reported() -> None:
    text = variant("  ops: {topic: plant/ops}\n", "  ops: {topic: plant/ops, kind: [alert], nods: [x]}\n")
    errors = schema_errors(text)
    assert [(e.message, e.hint, e.path_text) for e in errors] == [
        ("unknown key 'kind'", "did you mean 'kinds'?", "sinks.ops.kind"),
        ("unknown key 'nods'", "did you mean 'nodes'?", "sinks.ops.nods"),
    ]


def test_missing_required_keys() -> None:
    error = only(variant("workflow: w\n", "description: no name\n"))
    assert (error.code, error.message, error.path, at(error)) == (
        "missing_key",
        "missing required key 'workflow'",
        (),
        (1, 1),
    )
    error = only(variant("  ops: {topic: plant/ops}\n", "  ops: {kinds: [alert]}\n"))
    assert (error.code, error.message, error.path_text) == ("missing_key", "missing required key 'topic'", "sinks.ops")
    errors = schema_errors(variant("      count: 2\n", ""))
    assert [(e.message, e.path_text) for e in errors] == [("missing required key 'count'", "simulation.fleet[0]")]


# ---- types ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message", "path"),
    [
        ("count: 2", 'count: "ten"', "expected an integer, got 'ten'", "simulation.fleet[0].count"),
        ("count: 2", "count: 2.5", "expected an integer, got number 2.5", "simulation.fleet[0].count"),
        ("count: 2", "count: true", "expected an integer, got true", "simulation.fleet[0].count"),
        ("dropout: 0.1", "dropout: false", "expected a number, got false", "simulation.fleet[0].dropout"),
        ("dropout: 0.1", "dropout: null", "expected a number, got null", "simulation.fleet[0].dropout"),
        (
            "lateness: 5s",
            "lateness: 5s\n    critical: 'yes'",
            "expected true or false, got 'yes'",
            "streams.telemetry.critical",
        ),
        ("topic: plant/ops", "topic: [a, b]", "expected a string, got a list", "sinks.ops.topic"),
        ("topic: plant/ops", "topic: {a: b}", "expected a string, got a mapping", "sinks.ops.topic"),
        (
            "stop: {payload: {cmd: stop}}",
            "stop: 3",
            "expected a mapping or nothing (null), got number 3",
            "devices.types.pump.commands.stop",
        ),
    ],
)
def test_wrong_types(old: str, new: str, message: str, path: str) -> None:
    errors = schema_errors(variant(old, new))
    assert [(e.code, e.message, e.path_text) for e in errors] == [("type", message, path)]


def test_rules_must_be_a_list() -> None:
    text = VALID[: VALID.index("rules:")] + "rules: {}\n" + VALID[VALID.index("sinks:") :]
    error = only(text)
    assert (error.code, error.message, error.hint, error.path_text, at(error)) == (
        "type",
        "expected a list, got a mapping",
        None,
        "rules",
        (13, 8),
    )


def test_an_action_that_is_not_a_mapping_gets_only_the_type_error() -> None:
    # not also "an action has exactly one of ...": the value is not a mapping at all
    errors = schema_errors(variant("      - command: stop\n", "      - stop\n"))
    assert [(e.code, e.message, e.path_text) for e in errors] == [
        ("type", "expected a mapping, got 'stop'", "rules[0].do[0]"),
    ]


# ---- enums and names ------------------------------------------------------------------------------------------


def test_enum_without_a_close_match() -> None:
    error = only(variant("severity: warning", "severity: urgent"))
    assert error.code == "enum"
    assert error.message == "'urgent' is not one of: info, warning, critical"
    assert error.hint is None
    assert (error.path_text, at(error)) == ("rules[0].do[1].severity", (20, 19))


def test_enum_with_did_you_mean() -> None:
    error = only(variant("overflow: drop_oldest", "overflow: dropp_oldest"))
    assert error.code == "enum"
    assert error.message == "'dropp_oldest' is not one of: drop_oldest, drop_newest, downsample, block"
    assert error.hint == "did you mean 'drop_oldest'?"
    assert error.path_text == "edge.gateways.gw-a.buffer.overflow"
    assert error.render() == (
        "w.yaml:27:43: 'dropp_oldest' is not one of: drop_oldest, drop_newest, downsample, block"
        " (did you mean 'drop_oldest'?)\n"
        "  at edge.gateways.gw-a.buffer.overflow\n"
        "  27 |       buffer: {max_bytes: 64MB, overflow: dropp_oldest}\n"
        "     |                                           ^^^^^^^^^^^^"
    )


def test_enum_with_a_non_string_value() -> None:
    error = only(variant("severity: warning", "severity: 3"))
    assert (error.code, error.message, error.hint) == ("enum", "number 3 is not one of: info, warning, critical", None)


NAME_RULE = "a name starts with a letter and holds letters, digits, '_' or '-' (at most 64)"


def test_invalid_stream_name_points_at_the_key() -> None:
    text = variant("streams:\n", "streams:\n  ok:\n    topic: a/b\n  9lives:\n    topic: c/d\n")
    error = only(text)
    assert error.code == "name"
    assert error.message == f"invalid name '9lives': {NAME_RULE}"
    assert error.path == ("streams", "9lives")
    assert at(error) == (11, 3)  # the bad key itself, not the first key of the mapping
    assert error.render() == (
        "w.yaml:11:3: invalid name '9lives': a name starts with a letter and holds letters, digits, '_' or '-'"
        " (at most 64)\n"
        "  at streams.9lives\n"
        "  11 |   9lives:\n"
        "     |   ^^^^^^"
    )


def test_invalid_names_everywhere_names_are_declared() -> None:
    errors = schema_errors(
        variant("    gw-a:\n", "    gw a:\n")
        .replace("  ops: {", "  _ops: {")
        .replace("telemetry: {flow", "telemetry: {flow!")
    )
    assert [(e.code, e.path_text) for e in errors] == [
        ("name", "devices.types.pump.telemetry.flow!"),
        ("name", "sinks._ops"),
        ("name", "edge.gateways.gw a"),
    ]
    assert all(e.message.startswith("invalid name '") for e in errors)


def test_invalid_name_as_a_value() -> None:
    error = only(variant("  - name: dry\n", "  - name: dry run\n"))
    assert error.code == "pattern"
    assert error.message == f"'dry run' is not valid: {NAME_RULE}"
    assert (error.path_text, at(error)) == ("rules[0].name", (14, 11))


# ---- actions --------------------------------------------------------------------------------------------------

# the action schema's own message (the list of action kinds grows with the language)
ONE_ACTION = str(workflow_schema()["$defs"]["action"]["x-message"])


def test_the_action_message_names_the_choices() -> None:
    assert ONE_ACTION.startswith("an action has exactly one of 'command', 'alert'")


def test_action_with_both_command_and_alert() -> None:
    error = only(variant("      - command: stop\n", "      - command: stop\n        alert: also\n"))
    assert error.code == "one_of"
    assert error.message == ONE_ACTION
    assert (error.path_text, at(error)) == ("rules[0].do[0]", (18, 9))


def test_action_with_neither_command_nor_alert() -> None:
    error = only(variant("      - command: stop\n", "      - expires: 30s\n"))
    assert error.code == "one_of"
    assert error.message == ONE_ACTION
    assert error.path_text == "rules[0].do[0]"
    assert error.render() == (
        f"w.yaml:18:9: {ONE_ACTION}\n"
        "  at rules[0].do[0]\n"
        "  18 |       - expires: 30s\n"
        "     |         ^^^^^^^^^^^^"
    )


def test_empty_do_list_and_empty_alert() -> None:
    error = only(VALID[: VALID.index("    do:\n")] + "    do: []\n" + VALID[VALID.index("sinks:") :])
    assert (error.code, error.message, error.path_text, at(error)) == (
        "empty",
        "must not be empty (at least 1)",
        "rules[0].do",
        (17, 9),
    )
    errors = schema_errors(variant('alert: "pump {device} is dry"', 'alert: ""'))
    assert [(e.code, e.message, e.path_text) for e in errors] == [
        ("empty", "must not be empty (at least 1)", "rules[0].do[1].alert"),
    ]


# ---- formats, ranges and lengths ------------------------------------------------------------------------------


def test_bad_duration_uses_the_schema_x_message() -> None:
    error = only(variant("lateness: 5s", "lateness: 5 minutes"))
    assert error.message == "'5 minutes' is not valid: a duration looks like 500ms, 30s, 5m, 1h or 2d"
    assert error.code == "anyOf"
    assert (error.path_text, at(error)) == ("streams.telemetry.lateness", (12, 15))
    assert error.render() == (
        "w.yaml:12:15: '5 minutes' is not valid: a duration looks like 500ms, 30s, 5m, 1h or 2d\n"
        "  at streams.telemetry.lateness\n"
        "  12 |     lateness: 5 minutes\n"
        "     |               ^^^^^^^^^"
    )


def test_bad_size_uses_the_schema_x_message() -> None:
    error = only(variant("max_bytes: 64MB", "max_bytes: 64 megs"))
    assert error.message == "'64 megs' is not valid: a size looks like 512KB, 256MB or 1GB"
    assert error.path_text == "edge.gateways.gw-a.buffer.max_bytes"


def test_bad_placement() -> None:
    error = only(variant("    lateness: 5s\n", "    lateness: 5s\n    placement: moon\n"))
    assert error.code == "pattern"
    assert error.message == "'moon' is not valid: placement is edge, cloud, auto or edge:<gateway>"
    assert (error.path_text, at(error)) == ("streams.telemetry.placement", (13, 16))


@pytest.mark.parametrize(
    ("old", "new", "message", "path"),
    [
        ("dropout: 0.1", "dropout: 2", "number 2 must be <= 1", "simulation.fleet[0].dropout"),
        ("dropout: 0.1", "dropout: -0.5", "number -0.5 must be >= 0", "simulation.fleet[0].dropout"),
        ("count: 2", "count: -1", "number -1 must be >= 0", "simulation.fleet[0].count"),
    ],
)
def test_minimum_and_maximum(old: str, new: str, message: str, path: str) -> None:
    error = only(variant(old, new))
    assert (error.code, error.message, error.hint, error.path_text) == ("range", message, None, path)


def test_expression_longer_than_the_schema_allows() -> None:
    long_expr = "flow < 1 and " * 315 + "flow < 2"  # 4103 characters
    assert len(long_expr) > 4096
    errors = schema_errors(variant('if: "flow < 1"', f'if: "{long_expr}"'))
    assert [(e.code, e.message, e.path_text, at(e)) for e in errors] == [
        ("too_long", "too long (at most 4096 characters)", "rules[0].if", (16, 9)),
    ]


# ---- alternatives (anyOf) -------------------------------------------------------------------------------------


def test_firmware_of_no_accepted_form() -> None:
    error = only(variant('firmware: "1.0.0"', "firmware: 3"))
    assert error.code == "anyOf"
    assert error.message == "number 3 is not an accepted form here"
    assert error.hint == "expected a string, a list or a mapping"
    assert (error.path_text, at(error)) == ("simulation.fleet[0].firmware", (32, 17))
    assert only(variant('firmware: "1.0.0"', "firmware: true")).message == "true is not an accepted form here"


def test_firmware_of_an_accepted_form_reports_what_is_wrong_inside() -> None:
    # a mapping and a list are accepted forms: say what is wrong inside, not that the form is wrong
    error = only(variant('firmware: "1.0.0"', 'firmware: {"2.0": 0.5, "1.0": -1}'))
    assert (error.code, error.message, error.path) == (
        "range",
        "number -1 must be >= 0",
        ("simulation", "fleet", 0, "firmware", "1.0"),
    )
    assert at(error) == (32, 37)
    error = only(variant('firmware: "1.0.0"', "firmware: []"))
    assert (error.code, error.message, error.path_text) == (
        "empty",
        "must not be empty (at least 1)",
        "simulation.fleet[0].firmware",
    )
    error = only(variant('firmware: "1.0.0"', "firmware: [2]"))
    assert (error.code, error.message, error.path_text) == (
        "type",
        "expected a string, got number 2",
        "simulation.fleet[0].firmware[0]",
    )


def test_command_latency_alternatives() -> None:
    error = only(variant("dropout: 0.1", "dropout: 0.1\n      command_latency: {min: 5 minutes, max: 1s}"))
    assert error.message == "'5 minutes' is not valid: a duration looks like 500ms, 30s, 5m, 1h or 2d"
    assert error.path_text == "simulation.fleet[0].command_latency.min"
    error = only(variant("dropout: 0.1", "dropout: 0.1\n      command_latency: soon"))
    assert error.message == "'soon' is not valid: a duration looks like 500ms, 30s, 5m, 1h or 2d"
    assert error.path_text == "simulation.fleet[0].command_latency"
    error = only(variant("dropout: 0.1", "dropout: 0.1\n      command_latency: [1s]"))
    assert error.message == "a list is not an accepted form here"
    assert error.hint == "expected a number, a string or a mapping"


# ---- all errors at once ---------------------------------------------------------------------------------------


def test_every_error_is_reported_in_one_run_sorted_by_position() -> None:
    text = (
        variant("simulation:\n", "simulation:\n  speed: 2\n")
        .replace("overflow: drop_oldest", "overflow: dropp_oldest")
        .replace("dropout: 0.1", "dropout: 2")
        .replace("lateness: 5s", "lateness: 5 minutes")
        .replace("severity: warning", "severity: urgent")
        .replace("workflow: w\n", "workflow: w\nowner: bob\n")
    )
    errors = all_errors(text)
    assert [(e.code, e.path_text, at(e)) for e in errors] == [
        ("unknown_key", "owner", (2, 1)),
        ("anyOf", "streams.telemetry.lateness", (13, 15)),
        ("enum", "rules[0].do[1].severity", (21, 19)),
        ("enum", "edge.gateways.gw-a.buffer.overflow", (28, 43)),
        ("unknown_key", "simulation.speed", (30, 3)),
        ("range", "simulation.fleet[0].dropout", (35, 16)),
    ]
    assert all(isinstance(e, SchemaError) for e in errors)
    # the schema check itself returns them sorted by position (not in the schema's keyword order), each once
    direct = validate_document(load_text(text, "w.yaml"))
    positions = [at(e) for e in direct]
    assert positions == sorted(positions) and len(set(positions)) == 6
    assert [e.sort_key() for e in direct] == [e.sort_key() for e in errors]
    assert DslErrors(errors).message == "6 errors"
    assert DslErrors(errors).render() == "\n".join(e.render() for e in errors)
