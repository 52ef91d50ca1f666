"""The interpreter: events in, records out; bad events become dead letters and the engine goes on (issue 2)."""

from __future__ import annotations

import orjson
import pytest

from iot_dsl import Engine, PlanError, compile_file
from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.runtime.clock import VirtualClock, format_time
from iot_dsl.runtime.engine import link_topic
from iot_dsl.runtime.operators import render_template
from iot_dsl.transports import MemoryTransport

from .conftest import FIXTURES, WORKFLOWS, compile_yaml

T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def registry_of(*devices: tuple[str, str, str, str]) -> DeviceRegistry:
    reg = DeviceRegistry()
    for device_id, kind, site, firmware in devices:
        reg.add(Device(device_id, kind, site, site, 0.0, 0.0, firmware, {}))
    return reg


def plant_registry() -> DeviceRegistry:
    return registry_of(
        ("boiler-1", "boiler", "north", "2.1.0"),
        ("boiler-2", "boiler", "north", "1.9.3"),
        ("valve-1", "valve", "north", "3.2.0"),
        ("valve-2", "valve", "north", "2.4.1"),
        ("valve-3", "valve", "south", "3.2.0"),
        ("pump-1", "pump", "south", "1.4.0"),
    )


def boiler(device: str, temp: float, pressure: float = 6.0, ts: float = T0, site: str = "north") -> dict:
    return {"stream": "telemetry", "device": device, "ts": ts, "type": "boiler", "site": site, "temp": temp, "pressure": pressure}


def test_stream_filter_derive_rule_to_command_records() -> None:
    engine = Engine(compile_file(WORKFLOWS / "plant.yaml"), registry=plant_registry())
    records = engine.push([boiler("boiler-1", 97.0), boiler("boiler-2", 80.0)])
    commands = [r for r in records if r["kind"] == "command"]
    # the hot boiler on gw-north closes the valves of its own site, each with its firmware's payload
    assert [(c["device"], c["payload"], c["node"], c["segment"]) for c in commands] == [
        ("valve-1", {"target": 0}, "boiler_overheat", "gw-north"),
        ("valve-2", {"cmd": "CLOSE"}, "boiler_overheat", "gw-north"),
    ]
    assert all(c["at"] == "2026-01-01T00:00:00.000Z" and c["expires_in"] == 30.0 for c in commands)
    (alert,) = [r for r in records if r["kind"] == "alert"]
    assert alert == {
        "kind": "alert", "at": "2026-01-01T00:00:00.000Z", "node": "boiler_overheat", "severity": "critical",
        "message": "boiler boiler-1 at 97.0 C on north", "device": "boiler-1", "segment": "gw-north",
    }
    assert engine.stats.events_in == 2 and engine.stats.records["command"] == 2


def test_cloud_rule_uses_firmware_version_semantics_and_variant_payloads() -> None:
    engine = Engine(compile_file(WORKFLOWS / "plant.yaml"), registry=plant_registry())
    records = engine.push([boiler("boiler-1", 60.0, pressure=9.0), boiler("boiler-2", 60.0, pressure=9.0)])
    # only boiler-1 runs firmware >= 2.0; the trip runs in the cloud, fed through gw-north's uplink
    assert [(r["kind"], r["device"], r["payload"], r["segment"]) for r in records] == [
        ("command", "boiler-1", {"mode": "off"}, "cloud")
    ]


def test_command_without_targets_goes_to_the_sending_device_and_unsupported_firmware_is_rejected() -> None:
    plan = compile_yaml(
        """
        workflow: w
        devices:
          types:
            pump:
              commands:
                stop: {variants: [{firmware: ">=2.0", payload: {cmd: stop}}]}
        streams:
          s: {key: device, time: ts, fields: {flow: number}}
        rules:
          - {name: dry, when: s, if: "flow < 1", do: [{command: stop, params: {}}]}
        """
    )
    reg = registry_of(("p-new", "pump", "x", "2.0.1"), ("p-old", "pump", "x", "1.2"), ("p-other", "pump", "x", "3.0"))
    records = Engine(plan, registry=reg).push(
        [{"device": "p-new", "ts": T0, "flow": 0.5}, {"device": "p-old", "ts": T0, "flow": 0.2}]
    )
    assert [(r["kind"], r["device"]) for r in records] == [("command", "p-new"), ("command_result", "p-old")]
    assert records[1]["status"] == "rejected" and records[1]["reason"] == "firmware 1.2 does not support 'stop'"


def test_command_to_a_device_type_without_that_command_is_rejected() -> None:
    plan = compile_yaml(
        """
        workflow: w
        devices:
          types:
            pump: {commands: {stop: {payload: {cmd: stop}}}}
            lamp: {}
        streams:
          s: {key: device, time: ts}
        rules:
          - {name: all_stop, when: s, do: [{command: stop, targets: "true"}]}
        """
    )
    reg = registry_of(("lamp-1", "lamp", "x", "1.0"), ("pump-1", "pump", "x", "1.0"))
    records = Engine(plan, registry=reg).push([{"device": "pump-1", "ts": T0}])
    assert [(r["kind"], r["device"], r.get("status")) for r in records] == [
        ("command_result", "lamp-1", "rejected"),
        ("command", "pump-1", None),
    ]
    assert records[0]["reason"] == "device type 'lamp' has no command 'stop'"


def test_params_are_evaluated_on_the_triggering_event() -> None:
    plan = compile_file(WORKFLOWS / "filter-derive.yaml")
    reg = registry_of(("f-1", "freezer", "w", "1.0.0"))
    records = Engine(plan, registry=reg).push(
        [{"device": "f-1", "ts": T0, "temp": -10.0, "door_open": False}, {"device": "f-1", "ts": T0 + 1, "temp": -10.0, "door_open": True}]
    )
    assert [(r["kind"], r["payload"]) for r in records] == [("command", {"cmd": "boost", "minutes": 16.0})]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ([1, 2], "event is not a JSON object"),
        ({"stream": "telemetry", "ts": T0, "type": "boiler", "site": "north"}, "missing or invalid device key"),
        ({"stream": "nope", "device": "boiler-1", "ts": T0}, "unknown stream 'nope' (streams: telemetry)"),
        ({"device": "boiler-1", "ts": T0, "pressure": 1.0}, "cannot derive 'temp_f': missing field 'temp'"),
        ({"stream": "telemetry", "device": "boiler-9", "ts": T0, "site": "east"}, "device 'boiler-9' is not served by any gateway"),
        ({"stream": "telemetry", "device": "boiler-1", "type": "boiler", "site": "north"}, "missing event time 'ts'"),
        ({"stream": "telemetry", "device": "boiler-1", "ts": "yesterday", "site": "north"}, "invalid event time 'ts': 'yesterday'"),
        ({"stream": "telemetry", "device": "boiler-1", "ts": T0, "site": "north", "temp": "hot"}, "field 'temp' should be number, got str"),
        ({"stream": "telemetry", "device": "boiler-1", "ts": T0, "site": "north", "type": "boiler"}, "cannot derive 'temp_f'"),
    ],
)
def test_malformed_events_become_dead_letters_and_the_engine_goes_on(event: object, reason: str) -> None:
    engine = Engine(compile_file(WORKFLOWS / "plant.yaml"), registry=plant_registry())
    records = engine.push([event, boiler("boiler-1", 97.0)])
    dead = [r for r in records if r["kind"] == "dead_letter"]
    assert len(dead) == 1 and dead[0]["reason"].startswith(reason)
    kept = dead[0]["event"]  # the original is kept (enriched with registry envelope fields): nothing is lost
    assert kept == event if not isinstance(event, dict) else kept.items() >= event.items()
    assert sum(r["kind"] == "command" for r in records) == 2  # the good event still went through
    orjson.dumps(records)  # every record is JSON-serializable


def test_envelope_fields_come_from_the_registry_and_streams_must_be_named_when_ambiguous() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          a: {key: device, time: ts}
          b: {key: device, time: ts}
          a_pumps: {from: a, where: "type == 'pump' and site == 'x'"}
        rules:
          - {name: r, when: a_pumps, do: [{alert: "{device} {group}"}]}
        """
    )
    engine = Engine(plan, registry=registry_of(("p1", "pump", "x", "1.0")))
    records = engine.push([{"stream": "a", "device": "p1", "ts": T0}, {"device": "p1", "ts": T0}])
    assert [(r["kind"], r.get("message"), r.get("reason")) for r in records] == [
        ("dead_letter", None, "event names no stream (streams: a, b)"),
        ("alert", "p1 x", None),
    ]


def test_runtime_expression_failure_in_a_filter_is_a_dead_letter() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, fields: {a: number, b: number}}
          t: {from: s, where: "a > b"}
        rules:
          - {name: r, when: t, do: [{alert: "a={a}"}]}
        """
    )
    records = Engine(plan).push([{"device": "d", "ts": T0, "a": 1}, {"device": "d", "ts": T0, "a": 3, "b": 2}])
    assert [r["kind"] for r in records] == ["dead_letter", "alert"]
    assert records[0]["reason"].startswith("cannot evaluate 'where'")
    assert records[1]["message"] == "a=3"


def test_rule_failure_is_a_dead_letter() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s: {key: device, time: ts, fields: {a: number}}
        rules:
          - {name: r, when: s, if: "a > 1", do: [{alert: "{a} {missing}"}]}
        """
    )
    records = Engine(plan).push([{"device": "d", "ts": T0}, {"device": "d", "ts": T0, "a": 2}])
    assert [r["kind"] for r in records] == ["dead_letter", "alert"]
    assert records[0]["reason"].startswith("rule 'r' failed")
    assert records[1]["message"] == "2 {missing}"


def test_event_time_formats_are_accepted() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          s: {key: id, time: at}
        rules:
          - {name: r, when: s, do: [{alert: "x"}]}
        """
    )
    records = Engine(plan).push(
        [{"id": "a", "at": T0}, {"id": "a", "at": int(T0 * 1000)}, {"id": "a", "at": "2026-01-01T00:00:00.500Z"}]
    )
    assert [r["at"] for r in records] == ["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.500Z"]


def test_single_segment_engine_runs_only_that_gateway_and_publishes_its_uplinks() -> None:
    plan = compile_file(FIXTURES / "workflows" / "two_gateways.yaml")
    transport = MemoryTransport()
    uplinked: list[tuple[str, object]] = []
    transport.subscribe("iot-dsl/two-gateways/link/#", lambda topic, payload: uplinked.append((topic, payload)))
    reg = registry_of(("s1", "sensor", "a", "1.0"), ("s2", "sensor", "a", "1.0"))
    engine = Engine(plan, segment="gw-a", transport=transport, registry=reg)
    assert engine.segments == ["gw-a"]
    records = engine.push([{"device": "s1", "ts": T0, "temp": 70.0}])
    # the local rule fired on the gateway; the cloud rule did not run here
    assert [(r["kind"], r["node"], r["device"]) for r in records] == [("command", "local_reset", "s1")]
    topics = [t for t, _ in uplinked]
    assert link_topic("two-gateways", "gw-a->cloud:filter:hot->filter:hotter") in topics
    assert link_topic("two-gateways", "gw-a->cloud:records") in topics


def test_all_segments_in_one_process_carry_events_over_links() -> None:
    plan = compile_file(FIXTURES / "workflows" / "two_gateways.yaml")
    reg = registry_of(("s1", "sensor", "a", "1.0"), ("s2", "sensor", "a", "1.0"), ("s3", "sensor", "b", "1.0"))
    records = Engine(plan, registry=reg).push([{"device": "s1", "ts": T0, "temp": 65.0, "site": "a"}])
    assert [(r["node"], r["device"], r["segment"]) for r in records] == [
        ("local_reset", "s1", "gw-a"),
        ("central_reset", "s1", "cloud"),
        ("central_reset", "s2", "cloud"),
    ]


def test_unknown_segment_is_refused() -> None:
    with pytest.raises(PlanError, match="plan has no segment 'gw-x' \\(segments: cloud, gw-a, gw-b\\)"):
        Engine(compile_file(FIXTURES / "workflows" / "two_gateways.yaml"), segment="gw-x")


def test_sinks_publish_selected_records_on_their_topic() -> None:
    transport = MemoryTransport()
    got: list[bytes] = []
    transport.subscribe("plant/records/+", lambda _t, payload: got.append(payload))
    engine = Engine(compile_file(WORKFLOWS / "plant.yaml"), registry=plant_registry(), transport=transport)
    engine.push([boiler("boiler-1", 97.0), {"bad": True}])
    kinds = [r["kind"] for r in orjson.loads(got[0])]
    assert kinds == ["command", "command", "alert"]


def test_unknown_devices_are_learned_from_their_events() -> None:
    engine = Engine(compile_file(WORKFLOWS / "plant.yaml"))
    engine.push([boiler("boiler-7", 60.0, site="south")])
    assert engine.registry.get("boiler-7") is not None and engine.gateway_of("boiler-7") == "gw-south"


def test_run_yields_records_of_every_batch_and_clock_is_the_injected_one() -> None:
    clock = VirtualClock(T0 + 5)
    engine = Engine(compile_file(WORKFLOWS / "plant.yaml"), registry=plant_registry(), clock=clock)
    records = list(engine.run([[boiler("boiler-1", 97.0)], [[]]]))
    assert [r["kind"] for r in records] == ["command", "command", "alert", "dead_letter"]
    assert records[-1]["at"] == format_time(T0 + 5)  # a dead letter without event time carries the clock's time


def test_templates_never_format_python_attributes() -> None:
    assert render_template("{device.__class__} {0} {x}", {"x": 1, "device": "d"}) == "{device.__class__} {0} 1"


def test_each_gateway_keeps_its_own_watermark_and_the_cloud_sees_the_lowest() -> None:
    plan = compile_file(FIXTURES / "workflows" / "two_gateways.yaml")
    reg = registry_of(("s1", "sensor", "a", "1.0"), ("s3", "sensor", "b", "1.0"))
    engine = Engine(plan, registry=reg)
    engine.push([{"device": "s1", "ts": T0 + 50, "temp": 1.0}])
    assert engine.watermarks["gw-a"]["telemetry"] == T0 + 50 and "telemetry" not in engine.watermarks["gw-b"]
    assert engine.watermarks["cloud"]["telemetry"] == T0 + 50  # gw-b has not reported: it does not hold back
    engine.push([{"device": "s3", "ts": T0 + 10, "temp": 1.0}, {"device": "s1", "ts": T0 + 60, "temp": 1.0}])
    assert engine.watermarks["gw-b"]["telemetry"] == T0 + 10
    assert engine.watermarks["cloud"]["telemetry"] == T0 + 50  # never goes backwards
    engine.push([{"device": "s3", "ts": T0 + 55, "temp": 1.0}])
    assert engine.watermarks["cloud"]["telemetry"] == T0 + 55  # the slowest gateway now sets the pace


def test_a_command_to_the_sender_works_without_a_registry_entry() -> None:
    plan = compile_file(WORKFLOWS / "filter-derive.yaml")
    engine = Engine(plan)  # empty registry: a replay of recorded events without a fleet
    described = {"device": "f-9", "ts": T0, "temp": -10.0, "door_open": False, "type": "freezer", "firmware": "1.0"}
    anonymous = {"device": "f-8", "ts": T0, "temp": -10.0, "door_open": False}
    records = engine.push([described, anonymous])
    assert [(r["kind"], r["device"]) for r in records] == [("command", "f-9"), ("command_result", "f-8")]
    assert records[0]["payload"] == {"cmd": "boost", "minutes": 16.0}
    assert records[1]["reason"] == "device type 'unknown' has no command 'boost'"


def test_a_rule_cooldown_and_its_command_ids_survive_a_restart() -> None:
    text = """
workflow: w
devices:
  types:
    boiler:
      commands: {vent: {payload: {cmd: vent}}}
streams:
  telemetry: {key: device, time: ts, fields: {temp: number}}
rules:
  - name: vent
    when: telemetry
    if: "temp > 90"
    cooldown: 1m
    do: [{command: vent}]
"""
    registry = registry_of(("b1", "boiler", "north", "1.0.0"))
    plan = compile_yaml(text)
    first = Engine(plan, registry=registry)
    assert Engine(plan, registry=registry).snapshot()["operators"] == {}  # nothing to keep before it fires
    fired = [r for r in first.push([{"device": "b1", "ts": T0, "temp": 95}]) if r["kind"] == "command"]
    assert [r["command_id"] for r in fired] == ["cloud/vent/1"]
    again = Engine(plan, registry=registry)
    again.restore(orjson.loads(orjson.dumps(first.snapshot())))
    records = again.push([{"device": "b1", "ts": T0 + 30, "temp": 95}, {"device": "b1", "ts": T0 + 61, "temp": 95}])
    assert [(r["command_id"], r["at"]) for r in records if r["kind"] == "command"] == [("cloud/vent/2", format_time(T0 + 61))]
