"""Firmware ranges and command variants; the public iot_dsl.testing kit."""

from __future__ import annotations

from pathlib import Path

import pytest

from iot_dsl import DslErrors, compile_file
from iot_dsl.runtime.firmware import parse_range, select_payload
from iot_dsl.testing import Engine, by_kind, collect, fleet_for, plan_of, replay_events, run_workflow

from .conftest import WORKFLOWS, compile_yaml


@pytest.mark.parametrize(
    ("text", "yes", "no"),
    [
        ("*", ["0.1", "99.0.0"], []),
        (">=2.0", ["2.0", "2.10.1", "10.0"], ["1.9.9", "2.0.0-rc1"]),
        ("<2.0", ["1.9.3"], ["2.0.0"]),
        (">=1.2,<2.0", ["1.2.0", "1.10"], ["1.1", "2.0"]),
        ("==2.1.0", ["2.1.0", "v2.1.0"], ["2.1.1"]),
        ("2.1.0", ["2.1.0"], ["2.1.1"]),
        ("!=1.9", ["1.8", "2.0"], ["1.9"]),
        ("<=3,>1", ["3.0", "1.5"], ["1.0", "3.0.1"]),
    ],
)
def test_firmware_ranges_compare_semantic_versions(text: str, yes: list[str], no: list[str]) -> None:
    matches = parse_range(text)
    assert all(matches(v) for v in yes) and not any(matches(v) for v in no)


def test_a_firmware_that_is_not_a_version_matches_no_range() -> None:
    assert parse_range(">=1.0")("unknown") is False


def test_bad_firmware_ranges_are_refused_at_compile_time() -> None:
    with pytest.raises(DslErrors) as info:
        compile_yaml(
            """
            workflow: w
            devices:
              types:
                valve:
                  commands:
                    close: {variants: [{firmware: "about 2", payload: {}}]}
            """
        )
    (error,) = info.value.errors
    assert error.code == "firmware_range"
    assert error.message == "'about 2' is not a firmware comparison (like >=2.0 or <1.5.3)"
    assert error.path_text == "devices.types.valve.commands.close.variants[0].firmware"


def test_select_payload_prefers_the_first_matching_variant_then_the_default() -> None:
    command = {"variants": [{"firmware": ">=2", "payload": {"v": 2}}, {"firmware": "*", "payload": {"v": 1}}]}
    assert select_payload(command, "2.5") == {"v": 2} and select_payload(command, "1.0") == {"v": 1}
    only_new = {"variants": [{"firmware": ">=2", "payload": {"v": 2}}]}
    assert select_payload(only_new, "1.0") is None
    with_default = {"variants": [{"firmware": ">=2"}], "payload": {"v": 0}}
    assert select_payload(with_default, "2.0") == {} and select_payload(with_default, "1.0") == {"v": 0}
    assert select_payload(None, "1.0") == {}


def test_command_params_are_checked_against_the_declared_ones() -> None:
    with pytest.raises(DslErrors) as info:
        compile_yaml(
            """
            workflow: w
            devices:
              types:
                boiler: {commands: {set_setpoint: {params: {value: number}}}}
            streams:
              s: {key: device, time: ts, fields: {temp: number, name: string}}
            rules:
              - when: s
                do:
                  - {command: set_setpoint, params: {valu: "temp - 5"}}
                  - {command: set_setpoint, params: {value: "name"}}
            """
        )
    assert [(e.code, e.message, e.hint) for e in info.value.errors] == [
        ("unknown_param", "command 'set_setpoint' has no parameter 'valu'", "did you mean 'value'?"),
        ("type", "parameter 'value' of 'set_setpoint' is number, got string", None),
    ]


def test_testing_kit_runs_workflows_from_paths_text_plans_and_dicts(tmp_path: Path) -> None:
    records = run_workflow(WORKFLOWS / "filter-derive.yaml", duration="20m", seed=2)
    assert by_kind(records, "command") and by_kind(records, "command_result")
    plan = compile_file(WORKFLOWS / "filter-derive.yaml")
    path = tmp_path / "plan.json"
    path.write_bytes(plan.to_json())
    assert plan_of(str(path)).to_json() == plan.to_json()
    assert plan_of(dict(plan.data)).name == "cold-room" and plan_of(plan) is plan
    text = (WORKFLOWS / "filter-derive.yaml").read_text()
    assert plan_of(text).name == "cold-room"
    event = {"device": "freezer-0001", "ts": 1767225600, "temp": -10.0, "door_open": False}
    replayed = replay_events(plan, [event])
    assert [r["kind"] for r in replayed] == ["command", "command_result"]
    fleet = fleet_for(plan)
    assert fleet is not None
    assert collect(Engine(plan, registry=fleet.registry), [[event]])[0]["kind"] == "command"
