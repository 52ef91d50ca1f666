"""Acceptance scenarios for device command orchestration (issue 5), on the virtual clock.

Each scenario compiles a workflow, builds an engine on a :class:`VirtualClock` over a seeded simulated fleet, plays
the devices with a :class:`SimulatedEndpoint` on the engine's Transport, fires the triggering rule with one event
and advances time. Assertions read the records (``command``, ``command_result``, ``orchestration``), the run
report, and what the simulated devices actually executed.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from typing import Any

import pytest

from iot_dsl import DslErrors, Engine, compile_text
from iot_dsl.devices import SimulatedFleet
from iot_dsl.devices.endpoint import SimulatedEndpoint
from iot_dsl.runtime.clock import VirtualClock, parse_time
from iot_dsl.runtime.orchestration_rollout import rollout_order
from iot_dsl.runtime.orchestration_state import TERMINAL
from iot_dsl.testing import by_kind


class Scenario:
    """A compiled workflow, its fleet, an engine on a virtual clock and the simulated devices answering."""

    def __init__(self, yaml_text: str, *, seed: int = 0, stream: str = "ops", **endpoint: Any) -> None:
        self.plan = compile_text(textwrap.dedent(yaml_text), "scenario.yaml")
        self.fleet = SimulatedFleet(self.plan.data["simulation"], seed=seed, stream=stream)
        self.start = self.fleet.start
        self.clock = VirtualClock(self.start)
        self.engine = Engine(self.plan, clock=self.clock, registry=self.fleet.registry)
        self.endpoint = SimulatedEndpoint(self.fleet, self.engine.transport, self.clock, self.plan.name, **endpoint)
        self.records: list[dict[str, Any]] = []

    def trigger(self, device: str, **fields: Any) -> None:
        event = {"stream": "ops", "device": device, "ts": self.clock.now(), "seq": 1, **fields}
        self.records += self.engine.push([event])

    def run_for(self, seconds: float) -> None:
        self.records += self.engine.advance_to(self.clock.now() + seconds)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return by_kind(self.records, kind)

    def report(self) -> dict[str, Any]:
        (finished,) = [r for r in self.kind("orchestration") if r["event"] == "finished"]
        return finished["report"]  # type: ignore[no-any-return]


ROLLOUT = """
workflow: roll
devices:
  types:
    meter:
      commands:
        configure: {payload: {cmd: cfg}}
streams:
  ops: {key: device, time: ts, fields: {seq: integer}}
rules:
  - name: go
    when: ops
    do: [{orchestrate: rollout}]
orchestrations:
  rollout:
    steps:
      configure:
        command: configure
        targets: "type == 'meter'"
        timeout: 10s
    rollout: {waves: [1%, 10%, 100%]}
    concurrency: 200
    abort: {failure_rate: 5%, min_executions: 50, scope: [overall]}
simulation:
  fleet:
    - {type: meter, count: 1200, firmware: "1.0", command_latency: {min: 100ms, max: 2s}}
"""


def rollout_with_failures(percent: int) -> Scenario:
    """1,200 meters; ``percent``% of them fail every command, spread evenly over the rollout order."""
    fleet = SimulatedFleet(compile_text(ROLLOUT).data["simulation"], seed=4, stream="ops")
    order = rollout_order(fleet.registry, "rollout/1/configure")  # the run's seeded order for step 'configure'
    every = round(100 / percent)
    failing = [d.id for i, d in enumerate(order) if i % every == every - 1]
    assert abs(len(failing) / 1200 - percent / 100) < 0.005
    scenario = Scenario(ROLLOUT, seed=4, failing=failing)
    scenario.trigger("meter-0001")
    scenario.run_for(600)
    return scenario


def test_rollout_in_waves_completes_with_3_percent_failures() -> None:
    s = rollout_with_failures(3)
    report = s.report()
    assert report["status"] == "completed" and report["reason"] is None
    assert report["states"] == {"succeeded": 1164, "failed": 36}
    assert report["not_reached"] == 0
    assert [r["devices"] for r in s.kind("orchestration") if r["event"] == "wave"] == [12, 108, 1080]
    assert len(report["failures"]) == 36 and {f["reason"] for f in report["failures"]} == {"injected failure"}
    assert sum(s.endpoint.started.values()) == 1200


def test_rollout_aborts_with_8_percent_failures_and_unreached_devices_receive_nothing() -> None:
    s = rollout_with_failures(8)
    report = s.report()
    assert report["status"] == "aborted"
    assert report["reason"].startswith("failure rate ") and report["reason"].endswith("in overall exceeds 5%")
    reached = {r["device"] for r in s.kind("command")}
    # the abort trips in the second wave (>= 50 executions): the 1,080 devices of the last wave get nothing
    assert len(reached) == 120 and report["not_reached"] == 1080
    assert {device for device, _ in s.endpoint.started} == reached
    assert s.endpoint.deliveries == 120
    finals = [r for r in s.kind("command_result") if r["final"]]
    assert len(finals) == 120 and all(r["status"] in ("succeeded", "failed") for r in finals)
    aborted = next(r for r in s.kind("orchestration") if r["event"] == "aborted")
    executions, failures = int(aborted["reason"].split("/")[1].split()[0]), int(aborted["reason"].split()[2].split("/")[0])
    assert executions >= 50 and failures / executions > 0.05


VALVES = """
workflow: plant
devices:
  types:
    valve:
      commands:
        close: {payload: {target: 0}}
        open: {payload: {target: 100}}
    pump:
      commands:
        start: {payload: {cmd: start}}
        stop: {payload: {cmd: stop}}
streams:
  ops: {key: device, time: ts, fields: {seq: integer}}
rules:
  - name: shutdown
    when: ops
    do: [{orchestrate: safe_shutdown}]
orchestrations:
  safe_shutdown:
    steps:
      close_valves:
        command: close
        targets: "type == 'valve' and site == event.site"
        barrier: {quorum: 100%, timeout: 30s}
        timeout: 10s
        undo: {command: open}
      start_pump:
        after: [close_valves]
        command: start
        targets: "type == 'pump' and site == event.site"
    on_failure: compensate
simulation:
  fleet:
    - {type: valve, count: 39, sites: [north], firmware: "3.0", command_latency: {min: 100ms, max: 900ms}}
    - {type: valve, count: 1, id_prefix: stuck-valve, sites: [north], firmware: "3.0", silent_rate: 1.0}
    - {type: pump, count: 1, sites: [north], firmware: "1.0"}
    - {type: valve, count: 5, id_prefix: south-valve, sites: [south], firmware: "3.0"}
"""


def test_barrier_failure_never_starts_the_pump_and_reopens_the_closed_valves() -> None:
    s = Scenario(VALVES, stream="ops")
    s.trigger("pump-0001", site="north")
    s.run_for(120)
    report = s.report()
    assert report["status"] == "failed"
    assert "barrier of step 'close_valves' cannot be met: 39 of 40 succeeded" in report["reason"]
    # the pump was never started: no command went to it, and its step was skipped
    assert not [r for r in s.kind("command") if r["device"] == "pump-0001"]
    assert report["steps"]["start_pump"] == {"status": "skipped", "targets": 0, "released": 0, "states": {}}
    # the failing valve is named, with why
    assert report["failures"] == [
        {"device": "stuck-valve-0001", "step": "close_valves", "command": "close", "status": "timed_out",
         "reason": "no answer within 10s"}
    ]
    # every valve that closed was reopened, in a compensation phase after the failure
    opens = [r for r in s.kind("command") if r["command"] == "open"]
    assert sorted(r["device"] for r in opens) == [f"valve-{i:04d}" for i in range(1, 40)]
    assert all(s.endpoint.state[f"valve-{i:04d}"] == {"target": 100} for i in range(1, 40))
    assert report["compensation"] == {"status": "done", "undone": 39, "failures": []}
    assert report["states"] == {"timed_out": 1, "compensated": 39}
    events = [r["event"] for r in s.kind("orchestration")]
    assert events == ["started", "step", "failed", "compensating", "finished"]
    failed_at = parse_time(next(r for r in s.kind("orchestration") if r["event"] == "failed")["at"])
    assert failed_at == s.start + 10  # the timeout made the quorum impossible: no need to wait for the 30 s
    assert min(parse_time(r["at"]) for r in opens) >= failed_at
    # the south site was never touched
    assert not [r for r in s.kind("command") if r["device"].startswith("south")]


def test_barrier_met_starts_the_dependent_step() -> None:
    s = Scenario(VALVES.replace("silent_rate: 1.0", "silent_rate: 0.0"), stream="ops")
    s.trigger("pump-0001", site="north")
    s.run_for(60)
    report = s.report()
    assert report["status"] == "completed" and report["states"] == {"succeeded": 41}
    closes = [parse_time(r["at"]) for r in s.kind("command_result") if r["command"] == "close"]
    (start,) = [parse_time(r["at"]) for r in s.kind("command") if r["command"] == "start"]
    assert start == max(closes)  # the pump starts the moment the last valve confirmed
    barrier = next(r for r in s.kind("orchestration") if r["event"] == "barrier")
    assert (barrier["succeeded"], barrier["needed"]) == (40, 40)


HOSTILE = """
workflow: hostile
devices:
  types:
    sensor:
      commands:
        calibrate: {payload: {cmd: cal}}
streams:
  ops: {key: device, time: ts, fields: {seq: integer}}
rules:
  - name: go
    when: ops
    do: [{orchestrate: calibrate_all}]
orchestrations:
  calibrate_all:
    steps:
      calibrate:
        command: calibrate
        targets: "type == 'sensor'"
        timeout: 5s
        expires: 60s
        retries: {max: 2, backoff: 1s, factor: 2, jitter: 0.2, on: [timed_out, failed]}
    concurrency: 1000
    idempotency: "{orchestration}/{device}/{command}/{event.seq}"
simulation:
  fleet:
    - {type: sensor, count: 4350, firmware: "1.0", command_latency: {min: 50ms, max: 3s}, failure_rate: 0.01}
    - {type: sensor, count: 500, id_prefix: offline, firmware: "1.0", offline: [{from: 0s, to: 5m}]}
    - {type: sensor, count: 100, id_prefix: rejecting, firmware: "1.0", reject_rate: 1.0}
    - {type: sensor, count: 50, id_prefix: silent, firmware: "1.0", silent_rate: 1.0}
"""


def test_5000_devices_offline_rejecting_silent_all_terminal_by_deadline_once_per_key_expired_never_run() -> None:
    s = Scenario(HOSTILE, seed=11, duplicate_rate=0.25, duplicate_delay=0.5)
    s.trigger("sensor-0001")
    s.run_for(600)  # offline devices reconnect at 5 min and get their (long expired) requests
    commands = s.kind("command")
    first = {}
    for record in commands:
        first.setdefault(record["command_id"], record)
    finals = [r for r in s.kind("command_result") if r["final"]]
    # every command ends in exactly one terminal state, by its deadline (its expiry)
    assert len(first) == 5000 and sorted(r["command_id"] for r in finals) == sorted(first)
    assert all(r["status"] in TERMINAL for r in finals)
    assert all(parse_time(r["at"]) <= first[r["command_id"]]["expires_at"] for r in finals)
    status_by_prefix = Counter((r["device"].rsplit("-", 1)[0], r["status"]) for r in finals)
    assert status_by_prefix[("offline", "timed_out")] == 500
    assert status_by_prefix[("rejecting", "rejected")] == 100
    assert status_by_prefix[("silent", "timed_out")] == 50
    assert status_by_prefix[("sensor", "succeeded")] == 4350  # 1% random failures all recovered by retries
    # duplicated deliveries and retries: each idempotency key took effect at most once on its device
    assert s.endpoint.duplicates > 1000
    assert max(s.endpoint.executions.values()) == 1
    assert max(s.endpoint.started.values()) <= 3
    # expired commands never execute: the offline devices got every attempt after reconnecting, and ran none
    assert s.endpoint.expired_refused == s.endpoint.held_offline >= 1500
    assert not [key for key in s.endpoint.executions if key[0].startswith("offline")]
    # the silent devices executed once (their answers were lost); retries did not execute again
    assert sum(n for key, n in s.endpoint.executions.items() if key[0].startswith("silent")) == 50
    report = s.report()
    assert report["status"] == "completed"
    assert report["states"] == {"succeeded": 4350, "timed_out": 550, "rejected": 100}
    assert len(report["failures"]) == 650
    keys = {r["key"] for r in commands}
    assert "calibrate_all/sensor-0001/calibrate/1" in keys and len(keys) == 5000


FIRMWARE = """
workflow: mixed
devices:
  types:
    valve:
      commands:
        close:
          variants:
            - {firmware: ">=3.0", payload: {target: 0}}
            - {firmware: ">=1.0,<3.0", payload: {cmd: CLOSE}}
    pump:
      commands:
        stop: {payload: {cmd: stop}}
streams:
  ops: {key: device, time: ts, fields: {seq: integer}}
rules:
  - name: go
    when: ops
    do: [{orchestrate: close_all}]
orchestrations:
  close_all:
    steps:
      close:
        command: close
        targets: "site == 'north'"
simulation:
  fleet:
    - {type: valve, count: 6, firmware: ["3.2.0", "2.4.1", "0.9.0"], sites: [north]}
    - {type: pump, count: 1, firmware: "1.0", sites: [north]}
"""


def test_mixed_firmware_gets_each_variant_and_unsupported_devices_are_refused_at_dispatch() -> None:
    s = Scenario(FIRMWARE)
    s.trigger("pump-0001")
    s.run_for(30)
    payloads = {r["device"]: r["payload"] for r in s.kind("command")}
    assert payloads == {
        "valve-0001": {"target": 0}, "valve-0004": {"target": 0},
        "valve-0002": {"cmd": "CLOSE"}, "valve-0005": {"cmd": "CLOSE"},
    }
    refused = {r["device"]: r["reason"] for r in s.kind("command_result") if r["status"] == "rejected"}
    assert refused == {
        "valve-0003": "firmware 0.9.0 does not support 'close'",
        "valve-0006": "firmware 0.9.0 does not support 'close'",
        "pump-0001": "device type 'pump' has no command 'close'",
    }
    assert s.endpoint.deliveries == 4  # refused commands never travel
    assert s.report()["states"] == {"succeeded": 4, "rejected": 3}


def test_unsupported_command_with_static_targets_is_refused_at_compile_time() -> None:
    text = FIRMWARE.replace("targets: \"site == 'north'\"", "targets: \"type == 'pump' and site == 'north'\"")
    with pytest.raises(DslErrors) as caught:
        compile_text(textwrap.dedent(text), "mixed.yaml")
    (error,) = caught.value.errors
    assert error.code == "unsupported_command"
    assert str(error.span) == "mixed.yaml:24:18"
    assert error.message == "device type 'pump' does not support command 'close' (the targets select only pump)"
    assert error.hint == "'pump' offers: stop"
