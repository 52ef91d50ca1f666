"""Compiling ``orchestrations:`` (issue 5): the schema, the step DAG, rule wiring, type checks and static capability
checks, each error positioned at file:line:col with a guess where one helps; and the normalized plan config."""

from __future__ import annotations

import textwrap

import pytest

from iot_dsl import DslErrors, compile_text
from iot_dsl.capabilities.orchestration import normalize, static_types

BASE = """\
workflow: w
devices:
  types:
    valve:
      telemetry: {position: number}
      commands:
        close: {payload: {target: 0}}
        open: {payload: {target: 100}}
        move: {params: {to: number}, payload: {cmd: move}}
    pump:
      commands:
        start: {payload: {cmd: start}}
streams:
  ops: {key: device, time: ts, fields: {level: number, seq: integer}}
rules:
  - name: go
    when: ops
    do: [{orchestrate: shut}]
orchestrations:
  shut:
    steps:
      close_valves:
        command: close
        targets: "type == 'valve' and site == event.site"
        barrier: {quorum: 100%, timeout: 30s}
        undo: {command: open}
      start_pump:
        after: [close_valves]
        command: start
        targets: "type == 'pump'"
    on_failure: compensate
"""


def errors_of(text: str) -> list[tuple[str, str, str, str | None]]:
    """(position, code, message, hint) of every error compiling ``text``."""
    with pytest.raises(DslErrors) as caught:
        compile_text(text, "w.yaml")
    return [(str(e.span), e.code, e.message, e.hint) for e in caught.value.errors]


def variant(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def test_a_valid_orchestration_compiles_to_a_node_fed_by_its_rule() -> None:
    plan = compile_text(BASE, "w.yaml")
    (op,) = [op for seg in plan.segments for op in seg["operators"] if op["kind"] == "orchestration"]
    assert op["inputs"] == ["rule:go"] and op["name"] == "shut" and op["at"] == "w.yaml:21:5"
    config = op["config"]
    assert config["event_fields"] == {"device": "string", "ts": "any", "seq": "integer", "type": "string",
                                      "site": "string", "group": "string", "level": "number"}
    assert config["reported_fields"] == {"position": "number"}
    assert config["steps"][0] == {
        "name": "close_valves", "command": "close", "targets": "type == 'valve' and site == event.site", "after": [],
        "params": [], "timeout": 30.0, "retries": {}, "expires": None, "verify": None,
        "barrier": {"quorum": {"percent": 100.0}, "timeout": 30.0},
        "undo": {"command": "open", "params": [], "timeout": 30.0},
    }
    assert config["on_failure"] == "compensate" and config["idempotency"] is None
    assert op["fields"]["status"] == "string" and op["fields"]["level"] == "number"


def test_misspelt_keys_are_refused_with_a_guess() -> None:
    found = errors_of(variant("        undo: {command: open}", "        undoo: {command: open}"))
    assert found == [("w.yaml:26:9", "unknown_key", "unknown key 'undoo'",
                      "did you mean 'undo'?")]
    found = errors_of(variant("    on_failure: compensate", "    on_falure: compensate"))
    assert found[0][1:] == ("unknown_key", "unknown key 'on_falure'", "did you mean 'on_failure'?")


def test_schema_refuses_bad_values() -> None:
    found = errors_of(variant("quorum: 100%", "quorum: most"))
    assert found[0][0] == "w.yaml:25:27" and found[0][1] == "anyOf"
    found = errors_of(variant("    on_failure: compensate", "    on_failure: rollback"))
    assert found == [("w.yaml:31:17", "enum", "'rollback' is not one of: stop, compensate", None)]
    found = errors_of(variant("    on_failure: compensate", "    rollout: {waves: [1%], rate: {start: 1}}"))
    assert found[0][1:3] == ("one_of", "a rollout has exactly one of 'waves' or 'rate'")
    found = errors_of(variant("    on_failure: compensate", "    abort: {failure_rate: 0.05}"))
    assert found[0][1:3] == ("type", "expected a string, got number 0.05")


def test_unknown_orchestration_in_a_rule_gets_a_guess() -> None:
    found = errors_of(variant("do: [{orchestrate: shut}]", "do: [{orchestrate: shutt}]"))
    assert found == [
        ("w.yaml:18:24", "unknown_orchestration", "unknown orchestration 'shutt'", "did you mean 'shut'?"),
        # nothing triggers 'shut' any more, so its targets cannot read the triggering event
        ("w.yaml:24:47", "unknown_field", "unknown field 'site' of 'event'", None),
    ]
    found = errors_of(variant("do: [{orchestrate: shut}]", "do: [{orchestrate: zzz}]"))
    assert found[0][3] == "known: shut"
    found = errors_of(BASE.split("orchestrations:")[0])
    assert found == [("w.yaml:18:24", "unknown_orchestration", "unknown orchestration 'shut'", "no orchestrations are declared")]


def test_unknown_step_and_cycles_are_refused_at_compile_time() -> None:
    found = errors_of(variant("after: [close_valves]", "after: [close_valve]"))
    assert found == [("w.yaml:28:17", "unknown_step", "unknown step 'close_valve' in orchestration 'shut'",
                      "did you mean 'close_valves'?")]
    found = errors_of(variant("after: [close_valves]", "after: zzz"))
    assert found[0][3] == "steps: close_valves, start_pump"
    cyclic = variant("        undo: {command: open}\n", "        undo: {command: open}\n        after: start_pump\n")
    found = errors_of(cyclic)
    assert found == [("w.yaml:27:16", "cycle",
                      "steps of orchestration 'shut' form a cycle: close_valves -> start_pump -> close_valves",
                      "a step cannot (directly or through others) come after itself")]
    found = errors_of(variant("after: [close_valves]", "after: [start_pump]"))
    assert found[0][:3] == ("w.yaml:28:17", "cycle", "steps of orchestration 'shut' form a cycle: start_pump -> start_pump")


def test_commands_params_and_static_capability_checks() -> None:
    found = errors_of(variant("        command: start\n", "        command: strat\n"))
    assert found == [("w.yaml:29:18", "unknown_command", "unknown command 'strat'", "did you mean 'start'?")]
    found = errors_of(variant("        command: start\n", "        command: zzz\n"))
    assert found[0][3] == "known: close, move, open, start"
    found = errors_of(variant("        undo: {command: open}", "        undo: {command: start}"))
    assert found == [("w.yaml:26:25", "unsupported_command",
                      "device type 'valve' does not support command 'start' (the targets select only valve)",
                      "'valve' offers: close, move, open")]
    moving = variant("        command: start\n        targets: \"type == 'pump'\"",
                     "        command: move\n        targets: \"type == 'valve'\"\n        params: {to: \"level\", speed: \"1\"}")
    found = errors_of(moving)
    assert found == [("w.yaml:31:31", "unknown_param", "command 'move' has no parameter 'speed'", "parameters: to")]


def test_params_are_checked_against_the_trigger_event_and_declared_types() -> None:
    text = variant("        command: start\n        targets: \"type == 'pump'\"",
                   "        command: move\n        targets: \"type == 'valve'\"\n        params: {to: \"level\", tto: \"1\"}")
    found = errors_of(text)
    assert found == [("w.yaml:31:31", "unknown_param", "command 'move' has no parameter 'tto'", "did you mean 'to'?")]
    text = variant("        command: start\n        targets: \"type == 'pump'\"",
                   "        command: move\n        targets: \"type == 'valve'\"\n        params: {to: \"site\"}")
    assert errors_of(text) == [("w.yaml:31:22", "type", "parameter 'to' of 'move' is number, got string", None)]
    text = variant("        undo: {command: open}", "        undo: {command: move, params: {to: \"nope\"}}")
    found = errors_of(text)
    assert found[0][1:3] == ("unknown_field", "unknown field 'nope'")
    text = variant("        undo: {command: open}", "        undo: {command: open, params: {x: \"1\"}}")
    compile_text(text)  # 'open' declares no params: any parameter goes


def test_expressions_are_type_checked_with_their_own_scopes() -> None:
    found = errors_of(variant("site == event.site", "site == event.sight"))
    assert found[0][:3] == ("w.yaml:24:47", "unknown_field", "unknown field 'sight' of 'event'")
    found = errors_of(variant("targets: \"type == 'pump'\"", "targets: \"lat\""))
    assert found[0][1] == "type"
    found = errors_of(variant("targets: \"type == 'pump'\"", "targets: \"level > 1\""))
    assert found[0][1:3] == ("unknown_field", "unknown field 'level'")  # bare names are device attributes
    found = errors_of(variant("        undo: {command: open}", "        verify: \"position + 1\""))
    assert found[0][:2] == ("w.yaml:26:18", "type")
    # verify reads the reported state: declared telemetry is typed, unknown names are allowed (any)
    compile_text(variant("        undo: {command: open}", "        verify: \"position == 0 and state == 'closed' and device.site == event.site\""))


def test_quorum_failure_rate_and_idempotency_template_checks() -> None:
    found = errors_of(variant("quorum: 100%", "quorum: 120%"))
    assert found == [("w.yaml:25:27", "range", "a quorum of 120% is more than all targets", None)]
    found = errors_of(variant("    on_failure: compensate", "    abort: {failure_rate: 150%}"))
    assert found == [("w.yaml:31:27", "range", "a failure rate above 100% can never be exceeded", None)]
    found = errors_of(variant("    on_failure: compensate", "    idempotency: \"{device}/{comand}/{event.seq}/{qqqqqqqq}\""))
    assert found == [
        ("w.yaml:31:18", "unknown_placeholder", "unknown placeholder '{comand}' in the idempotency key", "did you mean '{command}'?"),
        ("w.yaml:31:18", "unknown_placeholder", "unknown placeholder '{qqqqqqqq}' in the idempotency key",
         "use {orchestration}, {run}, {step}, {device}, {command} or {event.<field>}"),
    ]
    compile_text(variant("    on_failure: compensate", "    idempotency: \"{orchestration}/{device}/{event.seq}\""))


def test_an_orchestration_run_outcome_is_a_stream_rules_can_use() -> None:
    outcome = '  - name: outcome\n    when: shut\n    if: "status != \'completed\' and failed > 0 and level > 1"\n    do: [{alert: "{run} {status}"}]\n'
    plan = compile_text(BASE.replace("orchestrations:\n", outcome + "orchestrations:\n"))
    rule = next(op for seg in plan.segments for op in seg["operators"] if op["name"] == "outcome")
    assert rule["inputs"] == ["orchestration:shut"]


def test_placement_is_honoured() -> None:
    text = variant("    on_failure: compensate", "    on_failure: stop\n    placement: edge")
    found = errors_of(text)
    assert found == [("w.yaml:32:16", "placement", "'shut' is placed at the edge but the workflow declares no gateways",
                      "declare gateways under edge.gateways")]


@pytest.mark.parametrize(
    ("text", "types"),
    [
        ("type == 'valve'", {"valve"}),
        ("'valve' == type", {"valve"}),
        ("type in ['valve', 'pump']", {"valve", "pump"}),
        ("type in ['valve', site]", None),
        ("type not in ['valve']", None),
        ("type == 'valve' and site == event.site", {"valve"}),
        ("type in ['a', 'b'] and type == 'b'", {"b"}),
        ("site == 'x' and id == 'y'", None),
        ("type == 'a' or type == 'b'", {"a", "b"}),
        ("type == 'a' or site == 'b'", None),
        ("type != 'valve'", None),
        ("type == site", None),
        ("not (type == 'a')", None),
        ("type ==", None),
    ],
)
def test_static_types_pins_device_types_only_when_the_expression_does(text: str, types: set[str] | None) -> None:
    assert static_types(text) == types


def test_normalize_fills_defaults_and_tolerates_what_the_schema_refused() -> None:
    config = normalize(
        "o",
        {
            "steps": {
                "a": {"command": "x", "targets": 3, "after": "b", "retries": 2, "timeout": "bad", "barrier": {"quorum": 5},
                      "rollout": {"rate": {"start": 10, "factor": 2, "max_per_minute": 50}}, "undo": {"params": {}}},
                "b": {"command": "y", "retries": {"max": 1, "backoff": "2s", "factor": 3, "jitter": 0.1, "on": ["failed"]},
                      "barrier": {"quorum": "all"}, "rollout": {"waves": ["x", True]}, "params": {"p": "1", "q": 2}},
                "c": {"command": "z", "barrier": {"quorum": "1e%"}, "rollout": {"rate": {"start": 0}}, "retries": {"backoff": "x"}},
                "f": {"command": "z", "rollout": {"rate": {"start": 3}}},
                "d": "not a mapping",
                "e": {"targets": "no command"},
            },
            "rollout": {"waves": ["1%", 10, "100%"]},
            "concurrency": 5,
            "abort": {"failure_rate": "5%", "min_executions": 20, "scope": ["wave"], "outcomes": ["failed"]},
            "on_failure": "explode",
            "idempotency": 7,
        },
    )
    a, b, c, f = config["steps"]
    assert f["rollout"] == {"rate": {"start": 3, "factor": 1.0}}
    assert (a["targets"], a["after"], a["retries"], a["timeout"], a["barrier"]) == (
        None, ["b"], {"max": 2}, 30.0, {"quorum": {"count": 5}, "timeout": None})
    assert a["rollout"] == {"rate": {"start": 10, "factor": 2.0, "max_per_minute": 50}} and "undo" not in a
    assert b["retries"] == {"max": 1, "backoff": 2.0, "factor": 3.0, "jitter": 0.1, "on": ["failed"]}
    assert b["barrier"]["quorum"] == {"percent": 100.0} and "rollout" not in b and b["params"] == [["p", "1"]]
    assert c["barrier"]["quorum"] == {"percent": 100.0} and "rollout" not in c and c["retries"] == {}
    assert config["rollout"] == {"waves": [{"percent": 1.0}, {"count": 10}, {"percent": 100.0}]}
    assert config["concurrency"] == 5 and config["on_failure"] == "stop" and config["idempotency"] is None
    assert config["abort"] == {"failure_rate": 0.05, "min_executions": 20, "scope": ["wave"], "outcomes": ["failed"]}
    bare = normalize("o", {"steps": {}, "abort": {"failure_rate": 3}, "concurrency": True})
    assert "abort" not in bare and "concurrency" not in bare and bare["steps"] == []
    assert normalize("o", {"steps": [], "abort": {"failure_rate": "5%"}})["abort"] == {
        "failure_rate": 0.05, "min_executions": 1, "scope": ["overall"]}


def test_a_non_mapping_orchestration_or_step_is_left_to_the_schema() -> None:
    found = errors_of(BASE.replace("  shut:\n    steps:", "  other: 3\n  shut:\n    steps:"))
    assert found == [("w.yaml:20:10", "type", "expected a mapping, got number 3", None)]
    found = errors_of(BASE.replace("    steps:\n", "    steps:\n      broken: 3\n"))
    assert found == [("w.yaml:22:15", "type", "expected a mapping, got number 3", None)]
