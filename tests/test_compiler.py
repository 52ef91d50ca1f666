"""The compiler: workflow YAML -> validated, placed, partitioned, canonical plan (issue 2)."""

from __future__ import annotations

import pytest

from iot_dsl import CompileError, DslErrors, compile_file
from iot_dsl.errors import ExprError

from .conftest import FIXTURES, WORKFLOWS, compile_yaml


def errors_of(text: str) -> list:
    with pytest.raises(DslErrors) as info:
        compile_yaml(text)
    return info.value.errors


def test_two_gateways_compile_to_three_segments_with_explicit_links() -> None:
    plan = compile_file(FIXTURES / "workflows" / "two_gateways.yaml")
    assert [s["name"] for s in plan.segments] == ["cloud", "gw-a", "gw-b"]
    ops = {s["name"]: [op["id"] for op in s["operators"]] for s in plan.segments}
    # auto: source, the filter and the rule that only reads it stay on each gateway
    assert ops["gw-a"] == ["source:telemetry", "filter:hot", "rule:local_reset"]
    assert ops["gw-b"] == ops["gw-a"]
    assert ops["cloud"] == ["filter:hotter", "rule:central_reset"]
    links = {(l["kind"], l["channel"], l["from"]["segment"], l["to"]["segment"], l["from"]["node"], l["to"]["node"]) for l in plan.links}
    assert ("uplink", "events", "gw-a", "cloud", "filter:hot", "filter:hotter") in links
    assert ("uplink", "events", "gw-b", "cloud", "filter:hot", "filter:hotter") in links
    assert ("uplink", "records", "gw-a", "cloud", None, None) in links
    assert ("downlink", "commands", "cloud", "gw-b", None, None) in links
    assert len(plan.links) == 6


def test_compiling_twice_gives_identical_bytes() -> None:
    first = compile_file(WORKFLOWS / "plant.yaml").to_json()
    second = compile_file(WORKFLOWS / "plant.yaml").to_json()
    assert first == second
    assert first.endswith(b"\n") and b'"version": 1' in first


def test_edge_node_depending_on_cloud_only_node_is_a_positioned_error() -> None:
    with pytest.raises(DslErrors) as info:
        compile_file(FIXTURES / "workflows" / "edge_on_cloud.yaml")
    (error,) = info.value.errors
    assert isinstance(error, CompileError) and error.code == "placement"
    assert error.span is not None and (error.span.line, error.span.col) == (11, 16)
    assert error.path_text == "streams.local.placement"
    assert "'local' is placed at the edge (gw-a) but depends on 'central', which runs only in the cloud" in error.message


def test_edge_placement_without_gateways_is_refused() -> None:
    (error,) = errors_of(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, placement: edge}
        """
    )
    assert error.code == "placement" and "declares no gateways" in error.message


def test_edge_gateway_placement_and_unknown_gateway() -> None:
    (error,) = errors_of(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, placement: "edge:gw-nrth"}
        edge:
          gateways:
            gw-north: {devices: "site == 'n'"}
        """
    )
    assert error.code == "unknown_gateway" and error.hint == "did you mean 'gw-north'?"


def test_named_gateway_placement_runs_only_there() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, fields: {v: number}}
          only_north: {from: s, where: "v > 1", placement: "edge:gw-north"}
        edge:
          gateways:
            gw-north: {devices: "site == 'n'"}
            gw-south: {devices: "site == 's'"}
        """
    )
    north = [op["id"] for op in plan.segment("gw-north")["operators"]]
    south = [op["id"] for op in plan.segment("gw-south")["operators"]]
    assert "filter:only_north" in north and "filter:only_north" not in south


def test_edge_node_fed_by_another_gateway_is_refused() -> None:
    (error,) = errors_of(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, fields: {v: number}}
          a: {from: s, where: "v > 1", placement: "edge:gw-a"}
          b: {from: a, where: "v > 2", placement: "edge:gw-b"}
        edge:
          gateways:
            gw-a: {devices: "site == 'a'"}
            gw-b: {devices: "site == 'b'"}
        """
    )
    assert "depends on 'a', which runs on gw-a" in error.message


def test_without_gateways_everything_runs_in_the_cloud() -> None:
    plan = compile_file(WORKFLOWS / "filter-derive.yaml")
    assert [s["name"] for s in plan.segments] == ["cloud"]
    assert [op["kind"] for op in plan.segments[0]["operators"]] == ["source", "filter", "derive", "rule"]
    assert plan.links == []


def test_unknown_names_get_did_you_mean() -> None:
    errors = errors_of(
        """
        workflow: w
        devices:
          types:
            pump: {commands: {stop: {}}}
        streams:
          telemetry: {key: device, time: ts, device_type: pmp}
          hot: {from: telemetri, where: "true"}
        rules:
          - {when: hott, do: [{command: stp}]}
        sinks:
          out: {topic: t, nodes: [hto]}
        simulation:
          stream: telemtry
          fleet: [{type: pumpp, count: 1}]
        """
    )
    rendered = sorted((e.code, e.message, e.hint) for e in errors)
    assert rendered == [
        ("unknown_command", "unknown command 'stp'", "did you mean 'stop'?"),
        ("unknown_device_type", "unknown device type 'pmp'", "did you mean 'pump'?"),
        ("unknown_device_type", "unknown device type 'pumpp'", "did you mean 'pump'?"),
        ("unknown_element", "unknown element 'hto'", "did you mean 'hot'?"),
        ("unknown_stream", "unknown stream 'hott'", "did you mean 'hot'?"),
        ("unknown_stream", "unknown stream 'telemetri'", "did you mean 'telemetry'?"),
        ("unknown_stream", "unknown stream 'telemtry'", "did you mean 'telemetry'?"),
    ]


def test_unknown_name_without_a_close_guess_lists_the_known_ones() -> None:
    (error,) = errors_of(
        """
        workflow: w
        streams:
          telemetry: {key: device, time: ts}
          x: {from: zzz}
        """
    )
    assert error.hint == "known: telemetry, x"


def test_cycles_are_refused() -> None:
    errors = errors_of(
        """
        workflow: w
        streams:
          a: {from: b, where: "true"}
          b: {from: a, where: "true"}
        """
    )
    assert [e.code for e in errors] == ["cycle"]
    assert errors[0].message in ("streams form a cycle: a -> b -> a", "streams form a cycle: b -> a -> b")


def test_duplicate_rule_names_are_refused() -> None:
    errors = errors_of(
        """
        workflow: w
        streams:
          s: {key: device, time: ts}
        rules:
          - {name: r, when: s, do: [{alert: one}]}
          - {name: r, when: s, do: [{alert: two}]}
        """
    )
    assert [(e.code, e.path_text) for e in errors] == [("duplicate_name", "rules[1]")]


def test_alias_stream_without_where_or_derive_passes_everything() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, fields: {v: number}}
          copy: {from: s}
          enriched: {from: copy, derive: {w: "v * 2", x: "w + 1"}}
        """
    )
    ops = plan.segments[0]["operators"]
    assert [op["id"] for op in ops] == ["source:s", "filter:copy", "derive:enriched"]
    assert ops[0]["fields"]["seq"] == "integer"
    assert ops[2]["fields"]["w"] == "number" and ops[2]["fields"]["x"] == "number"


def test_derived_field_types_flow_to_later_streams() -> None:
    (error,) = errors_of(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, fields: {name: string}}
          d: {from: s, derive: {shout: "upper(name)"}}
          e: {from: d, where: "shout > 3"}
        """
    )
    assert isinstance(error, ExprError) and error.path_text == "streams.e.where"


@pytest.mark.parametrize(
    "expression",
    ["().__class__", "__import__('os')", "9**9**9**9", "temp.__class__", "().__class__.__bases__[0].__subclasses__()"],
)
def test_sandbox_escapes_are_refused_at_compile_time(expression: str) -> None:
    text = f"""
    workflow: w
    streams:
      s: {{key: device, time: ts, fields: {{temp: number}}}}
      t: {{from: s, where: "{expression}"}}
    """
    (error,) = errors_of(text)
    assert isinstance(error, ExprError)
    assert error.span is not None and error.span.line == 5
    assert error.path_text == "streams.t.where"


def test_gateway_device_expressions_are_type_checked() -> None:
    (error,) = errors_of(
        """
        workflow: w
        streams:
          s: {key: device, time: ts}
        edge:
          gateways:
            g: {devices: "sitee == 'a'"}
        """
    )
    assert error.code == "unknown_field" and error.hint == "did you mean 'site'?"


def test_target_and_param_expressions_are_checked_in_their_scopes() -> None:
    errors = errors_of(
        """
        workflow: w
        devices:
          types:
            valve: {attributes: {line: string}, commands: {close: {params: {speed: number}}}}
        streams:
          s: {key: device, time: ts, fields: {temp: number}}
        rules:
          - when: s
            do:
              - command: close
                targets: "line == event.lne"
                params: {speed: "tmp * 2"}
        """
    )
    assert sorted((e.path_text, e.code) for e in errors) == [
        ("rules[0].do[0].params.speed", "unknown_field"),
        ("rules[0].do[0].targets", "unknown_field"),
    ]


def test_four_kinds_of_error_are_reported_together_with_whole_messages() -> None:
    """A misspelt key, an unknown field, a type error and a syntax error: all four in one run, pinned whole."""
    path = FIXTURES / "workflows" / "four_errors.yaml"
    with pytest.raises(DslErrors) as info:
        compile_file(path)
    name = str(path)
    assert info.value.render() == "\n".join(
        [
            f"{name}:15:5: unknown key 'wher' (did you mean 'where'?)",
            "  at streams.hot.wher",
            '  15 |     wher: "temp > 90"',
            "     |     ^^^^",
            f"{name}:18:13: unknown field 'temprature' (known names: device, group, pressure, seq, site, temp, ts, type)",
            "  at streams.very_hot.where",
            '  18 |     where: "temprature > 95"',
            "     |             ^^^^^^^^^^",
            f"{name}:22:10: condition must be boolean, got number",
            "  at rules[0].if",
            '  22 |     if: "pressure + 1"',
            "     |          ^^^^^^^^^^^^",
            f"{name}:25:38: unexpected end of expression — expected ')'",
            "  at rules[0].do[0].targets",
            '  25 |         targets: "id == (event.device"',
            "     |                                      ^",
        ]
    )
    codes = [e.code for e in info.value.errors]
    assert codes == ["unknown_key", "unknown_field", "type", "syntax"]
