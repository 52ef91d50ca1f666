"""The orchestration runtime piece by piece: state machine, deadlines, dispatcher, rollout planner, specs, and the
run's behaviours (retries, verification, expiry, concurrency, rate rollouts, barriers, compensation, stop) on the
virtual clock and on a clock without timers."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from iot_dsl import Engine, compile_text
from iot_dsl.devices import Device, DeviceRegistry, SimulatedFleet
from iot_dsl.devices.endpoint import SimulatedEndpoint
from iot_dsl.errors import ExprError
from iot_dsl.runtime.clock import VirtualClock, parse_time
from iot_dsl.runtime.operators import TIME_KEY, BuildContext
from iot_dsl.runtime.orchestration import OrchestrationOperator, follow_progress, orchestration_operators
from iot_dsl.runtime.orchestration_dispatch import Dispatcher, commands_topic, results_topic
from iot_dsl.runtime.orchestration_rollout import RolloutPlan, plan_rollout, rollout_order
from iot_dsl.runtime.orchestration_run import _reason, latency_summary
from iot_dsl.runtime.orchestration_spec import (
    KeyTemplate,
    RolloutSpec,
    Share,
    cumulative_waves,
    parse_spec,
    share_count,
    template_names,
)
from iot_dsl.runtime.orchestration_state import (
    COMPENSATED,
    PENDING,
    SENT,
    SUCCEEDED,
    TERMINAL,
    TRANSITIONS,
    Command,
    IllegalTransition,
)
from iot_dsl.runtime.orchestration_timers import DeadlineQueue
from iot_dsl.transports import MemoryTransport

from .test_orchestration_scenarios import Scenario

T0 = 1767225600.0
DEVICE = Device("d-1", "valve", "north", "north", 0.0, 0.0, "1.0", {})


# ------------------------------------------------------------------------------------------------ state machine
def test_every_state_has_a_row_and_terminal_states_only_allow_compensation() -> None:
    assert set(TRANSITIONS) == set(TERMINAL) | {PENDING, SENT, "acknowledged"}
    assert {s for s in TERMINAL if TRANSITIONS[s]} == {SUCCEEDED}


def test_commands_refuse_illegal_moves_and_keep_their_times() -> None:
    command = Command("r/1", DEVICE, "close", {}, "k", owner=None, created_at=T0)
    assert (command.state, command.attempt, command.terminal, repr(command)) == (
        PENDING, 0, False, "Command('r/1', 'd-1', 'close', pending)")
    with pytest.raises(IllegalTransition) as caught:
        command.move(SUCCEEDED, T0)
    assert (caught.value.command_id, caught.value.state, caught.value.wanted, caught.value.code) == (
        "r/1", PENDING, SUCCEEDED, "illegal_transition")
    assert str(caught.value) == "command r/1: cannot move from pending to succeeded"
    command.attempt = 1
    command.move(SENT, T0 + 1)
    command.move(PENDING, T0 + 2, "failed once")
    assert command.reason == "failed once" and command.message_id == "r/1#1"
    command.attempt = 2
    command.move(SENT, T0 + 3)
    command.move(SUCCEEDED, T0 + 4)
    command.move(COMPENSATED, T0 + 9)
    assert (command.first_sent_at, command.finished_at, command.reason, command.terminal) == (T0 + 1, T0 + 4, None, True)
    with pytest.raises(IllegalTransition):
        command.move(SUCCEEDED, T0 + 10)


# --------------------------------------------------------------------------------------------------- deadlines
class ManualClock:
    """A clock without timers: time is whatever the test sets."""

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def test_deadlines_without_timers_fire_in_order_when_polled() -> None:
    queue = DeadlineQueue(ManualClock(T0))
    fired: list[tuple[str, float]] = []
    queue.schedule(T0 + 2, lambda when: fired.append(("b", when)))
    queue.schedule(T0 + 1, lambda when: fired.append(("a", when)))
    queue.schedule(T0 + 2, lambda when: (fired.append(("c", when)), queue.poll(when), queue.schedule(when, lambda w: fired.append(("d", w)))))
    assert (len(queue), queue.next_deadline()) == (3, T0 + 1)
    queue.poll(T0 + 0.5)
    assert fired == []
    queue.poll(T0 + 5)
    assert fired == [("a", T0 + 1), ("b", T0 + 2), ("c", T0 + 2), ("d", T0 + 2)]
    assert queue.next_deadline() is None


def test_deadlines_on_a_virtual_clock_keep_one_timer_at_the_earliest_deadline() -> None:
    clock = VirtualClock(T0)
    queue = DeadlineQueue(clock)
    fired: list[float] = []
    queue.schedule(T0 + 5, fired.append)
    queue.schedule(T0 + 9, fired.append)  # later: the armed timer stays
    assert clock.pending() == 1 and clock.next_timer_at() == T0 + 5
    queue.schedule(T0 + 2, fired.append)  # earlier: re-armed
    assert clock.pending() == 1 and clock.next_timer_at() == T0 + 2
    clock.advance_to(T0 + 6)
    assert fired == [T0 + 2, T0 + 5] and clock.next_timer_at() == T0 + 9
    clock.advance_to(T0 + 10)
    assert fired == [T0 + 2, T0 + 5, T0 + 9] and clock.pending() == 0


# -------------------------------------------------------------------------------------------------- dispatcher
class Owner:
    timeout = 5.0

    def __init__(self) -> None:
        self.heard: list[tuple[str, str, Any, Any, float]] = []

    def outcome(self, command: Command, status: str, reason: Any, reported: Any, now: float) -> None:
        self.heard.append((command.id, status, reason, reported, now))


def test_dispatcher_correlates_answers_by_attempt_and_times_out_the_rest() -> None:
    clock = VirtualClock(T0)
    transport = MemoryTransport()
    sent: list[Any] = []
    transport.subscribe(commands_topic("w/x"), lambda _t, payload: sent.append(payload))
    dispatcher = Dispatcher(transport, "w/x", DeadlineQueue(clock), clock.now)
    owner = Owner()
    commands = [Command(f"r/{i}", DEVICE, "close", {"a": i}, f"k{i}", owner, T0) for i in range(3)]
    dispatcher.send([], lambda c: 5.0, T0)
    assert sent == []
    dispatcher.send(commands, lambda c: 5.0, T0)
    assert commands_topic("w/x") == "iot-dsl/w_x/commands" and [m["id"] for m in sent[0]] == ["r/0#1", "r/1#1", "r/2#1"]
    assert sent[0][0] == {"id": "r/0#1", "command_id": "r/0", "device": "d-1", "command": "close", "payload": {"a": 0},
                          "key": "k0", "expires_at": None, "sent_at": T0}
    answers = results_topic("w/x")
    clock.advance_to(T0 + 1)
    transport.publish(answers, [{"id": "r/0#1", "status": "acknowledged"}, {"id": "r/0#1", "status": "acknowledged"}])
    assert commands[0].state == "acknowledged"
    transport.publish(answers, [{"id": "r/0#1", "status": "succeeded", "reported": {"p": 0}},
                                {"id": "r/1#1", "status": "weird"}, {"id": "nope#1", "status": "succeeded"}])
    dispatcher.forget(commands[2])
    clock.advance_to(T0 + 10)
    transport.publish(answers, [{"id": "r/0#1", "status": "succeeded"}])
    assert owner.heard == [
        ("r/0", "succeeded", None, {"p": 0}, T0 + 1),
        ("r/1", "failed", "unknown answer status 'weird'", None, T0 + 1),
    ]
    assert dispatcher.late_answers == 2 and dispatcher.in_flight == {}
    dispatcher.close()
    transport.publish(answers, [{"id": "r/0#1", "status": "succeeded"}])
    assert dispatcher.late_answers == 2
    ran: list[int] = []
    dispatcher.defer(1, lambda: ran.append(1))  # outside a batch of answers: at once
    assert ran == [1]


def test_dispatcher_timeouts_reach_the_owner_at_their_deadline() -> None:
    clock = VirtualClock(T0)
    dispatcher = Dispatcher(MemoryTransport(), "w", DeadlineQueue(clock), clock.now)
    owner = Owner()
    command = Command("r/1", DEVICE, "close", {}, "k", owner, T0)
    dispatcher.send([command], lambda c: 5.0, T0)
    clock.advance_to(T0 + 60)
    assert owner.heard == [("r/1", "timed_out", "no answer within the timeout", None, T0 + 5)]


# ----------------------------------------------------------------------------------------------- rollout, spec
def test_shares_waves_and_rollout_plans() -> None:
    assert share_count(Share(percent=10.0), 1200) == 120 and share_count(Share(percent=1.0), 1200) == 12
    assert share_count(Share(percent=1.0), 50) == 1 and share_count(Share(count=80), 50) == 50
    assert cumulative_waves([Share(percent=1.0), Share(percent=10.0), Share(percent=100.0)], 1200) == [12, 120, 1200]
    assert cumulative_waves([Share(count=0), Share(count=5), Share(count=3), Share(percent=50.0)], 20) == [5, 10, 20]
    assert cumulative_waves([], 7) == [7]
    assert plan_rollout(None, 10) == RolloutPlan((10,))
    assert plan_rollout(RolloutSpec(waves=(Share(percent=50.0),)), 0) == RolloutPlan((0,))
    assert plan_rollout(RolloutSpec(waves=(Share(percent=50.0),)), 10) == RolloutPlan((5, 10))
    assert plan_rollout(RolloutSpec(start=2, factor=2.0, max_per_minute=5), 20) == RolloutPlan((2, 6, 11, 16, 20), 60.0)
    assert plan_rollout(RolloutSpec(start=3, factor=1.5), 10) == RolloutPlan((3, 7, 10), 60.0)
    devices = [Device(f"d-{i}", "t", "s", "g", 0.0, 0.0, "1", {}) for i in range(50)]
    ordered = rollout_order(devices, "salt")
    assert ordered == rollout_order(list(reversed(devices)), "salt") != rollout_order(devices, "other")
    assert ordered[:10] != devices[:10] and sorted(d.id for d in ordered) == sorted(d.id for d in devices)


def test_spec_parsing_and_key_templates() -> None:
    spec = parse_spec(
        {
            "orchestration": "o",
            "steps": [
                {"name": "a", "command": "x", "barrier": {"quorum": {"count": 3}, "timeout": None},
                 "undo": {"command": "y", "params": [["p", "1"]]}, "timeout": 4.0},
                {"name": "b", "command": "x", "after": ["a"], "rollout": {"rate": {"start": 5, "max_per_minute": 9}}},
            ],
            "rollout": {"waves": [{"percent": 10.0}]},
            "abort": {"failure_rate": 0.05},
        }
    )
    a, b = spec.steps
    assert a.undo is not None and (a.undo.command, a.undo.params, a.undo.timeout) == ("y", (("p", "1"),), 4.0)
    assert a.barrier is not None and a.barrier.quorum == Share(count=3) and a.rollout == RolloutSpec(waves=(Share(percent=10.0),))
    assert b.rollout == RolloutSpec(start=5, factor=1.0, max_per_minute=9) and b.timeout == 30.0 and b.after == ("a",)
    assert spec.abort is not None and spec.abort.scope == ("overall",) and spec.abort.min_executions == 1
    assert spec.on_failure == "stop" and spec.idempotency == "{run}/{step}/{device}" and spec.step("b") is b
    with pytest.raises(KeyError):
        spec.step("zzz")
    template = KeyTemplate("{orchestration}:{device}/{event.seq}/{event.none}/{other}/{x.y}!")
    assert template_names(template.template) == ["orchestration", "device", "event.seq", "event.none", "other", "x.y"]
    assert template.render({"orchestration": "o", "device": "d"}, {"seq": 7}) == "o:d/7/{event.none}/{other}/{x.y}!"


def test_reasons_and_latency_summaries() -> None:
    assert _reason(ExprError("boom")) == "boom"
    assert _reason(KeyError("level")) == "missing field 'level'"
    assert _reason(TypeError("bad operand")) == "bad operand"
    assert latency_summary([]) is None
    assert latency_summary([0.3, 0.1, 0.2, 0.4]) == {"min": 0.1, "p50": 0.2, "p95": 0.4, "max": 0.4}


# ------------------------------------------------------------------------------------------------ run behaviour
TYPES = """
workflow: w
devices:
  types:
    valve:
      telemetry: {position: number}
      attributes: {zone: string}
      commands:
        close: {payload: {target: 0}}
        open:
          variants: [{firmware: ">=2.0", payload: {target: 100}}]
        move: {params: {to: number}, payload: {cmd: move}}
    pump:
      commands:
        start: {payload: {cmd: start}}
streams:
  ops: {key: device, time: ts, fields: {seq: integer, level: number}}
rules:
  - name: go
    when: ops
    do: [{orchestrate: o}]
"""


def scenario(orchestration: str, fleet: str, **endpoint: Any) -> Scenario:
    text = TYPES + "orchestrations:\n  o:\n" + textwrap.indent(textwrap.dedent(orchestration), "    ")
    text += "simulation:\n  fleet:\n" + textwrap.indent(textwrap.dedent(fleet), "    ")
    return Scenario(text, **endpoint)


def finished(s: Scenario) -> dict[str, Any]:
    return s.report()


def test_retries_back_off_with_jitter_only_for_declared_outcomes() -> None:
    s = scenario(
        """\
        steps:
          close:
            command: close
            targets: "type == 'valve'"
            timeout: 5s
            retries: {max: 2, backoff: 1s, factor: 3, jitter: 0.5, on: [failed]}
        """,
        "- {type: valve, count: 2, firmware: '1.0', command_latency: 100ms}\n"
        "- {type: valve, count: 1, id_prefix: mute, firmware: '1.0', silent_rate: 1.0}\n",
        failing=["valve-0001"],
    )
    s.trigger("valve-0002")
    s.run_for(60)
    attempts = [(r["device"], r["attempt"], r["at"]) for r in s.kind("command") if r["device"] == "valve-0001"]
    assert [a[1] for a in attempts] == [1, 2, 3]
    retries = [r for r in s.kind("command_result") if not r["final"]]
    assert [(r["status"], r["reason"]) for r in retries] == [("failed", "injected failure")] * 2
    delays = [r["retry_in"] for r in retries]
    assert 0.5 <= delays[0] <= 1.5 and 1.5 <= delays[1] <= 4.5 and delays != [1.0, 3.0]
    assert parse_time(attempts[1][2]) == pytest.approx(parse_time(retries[0]["at"]) + delays[0])
    report = finished(s)
    assert report["states"] == {"succeeded": 1, "failed": 1, "timed_out": 1}
    assert report["attempts"] == 5  # the silent valve timed out: not a declared outcome, no retry
    failures = {f["device"]: f["reason"] for f in report["failures"]}
    assert failures == {"valve-0001": "injected failure", "mute-0001": "no answer within 5s"}


def test_a_retry_that_could_only_run_after_expiry_is_not_made() -> None:
    s = scenario(
        """\
        steps:
          close: {command: close, targets: "type == 'valve'", timeout: 5s, expires: 8s, retries: {max: 3, backoff: 4s}}
        """,
        "- {type: valve, count: 1, firmware: '1.0', silent_rate: 1.0}\n",
    )
    s.trigger("valve-0001")
    s.run_for(60)
    assert [(r["status"], r["final"]) for r in s.kind("command_result")] == [("timed_out", True)]


def test_verification_needs_the_reported_state_to_confirm() -> None:
    fleet = "- {type: valve, count: 20, firmware: '1.0', command_latency: 100ms}\n"
    orchestration = """\
        steps:
          close: {command: close, targets: "type == 'valve'", verify: "position == 0 and device.type == 'valve'"}
        """
    s = scenario(orchestration, fleet, reports={"close": {"position": 0}}, stuck_rate=0.3)
    s.trigger("valve-0001")
    s.run_for(60)
    stuck = {f["device"] for f in finished(s)["failures"]}
    assert 2 <= len(stuck) <= 12
    assert all(s.endpoint.state[d] == {} for d in stuck) and all(s.endpoint.state[d] == {"position": 0} for d in
                                                                   {f"valve-{i:04d}" for i in range(1, 21)} - stuck)
    # a stuck device never reported a position at all
    assert {f["reason"] for f in finished(s)["failures"]} == {"cannot verify the reported state: missing field 'position'"}
    s = scenario(orchestration.replace("position == 0", "target == 5"), fleet)  # reports its payload: target 0
    s.trigger("valve-0001")
    s.run_for(60)
    assert {f["reason"] for f in finished(s)["failures"]} == {
        "reported state does not confirm 'target == 5 and device.type == 'valve''"}
    assert len(finished(s)["failures"]) == 20


def test_concurrency_limits_commands_in_flight_and_queued_commands_expire_unsent() -> None:
    s = scenario(
        """\
        steps:
          close: {command: close, targets: "type == 'valve'", timeout: 20s, expires: 3s}
        concurrency: 2
        """,
        "- {type: valve, count: 5, firmware: '1.0', command_latency: 1s}\n"
        "- {type: valve, count: 1, id_prefix: mute, firmware: '1.0', silent_rate: 1.0}\n",
    )
    s.trigger("valve-0001")
    s.run_for(60)
    sent_at = sorted(parse_time(r["at"]) - s.start for r in s.kind("command"))
    assert sent_at[:2] == [0.0, 0.0] and all(t > 0 for t in sent_at[2:])
    reasons = sorted({r.get("reason") for r in s.kind("command_result")}, key=str)
    assert "not sent before the command expired" in reasons or "no final answer before the command expired" in reasons
    report = finished(s)
    assert sum(report["states"].values()) == 6 and report["states"]["expired"] >= 1
    expired = [r for r in s.kind("command_result") if r["status"] == "expired"]
    assert all(parse_time(r["at"]) == s.start + 3 for r in expired)


def test_in_flight_commands_expire_when_their_answer_never_comes() -> None:
    s = scenario(
        """\
        steps:
          close: {command: close, targets: "type == 'valve'", timeout: 20s, expires: 3s}
        """,
        "- {type: valve, count: 1, firmware: '1.0', silent_rate: 1.0}\n",
    )
    s.trigger("valve-0001")
    s.run_for(60)
    ((status, reason, at),) = [(r["status"], r["reason"], r["at"]) for r in s.kind("command_result")]
    assert (status, reason, parse_time(at)) == ("expired", "no final answer before the command expired", s.start + 3)


def test_rate_rollout_releases_per_minute_and_an_abort_stops_later_releases() -> None:
    orchestration = """\
        steps:
          close: {command: close, targets: "type == 'valve'", timeout: 5s}
        rollout: {rate: {start: 2, factor: 2, max_per_minute: 3}}
        """
    s = scenario(orchestration, "- {type: valve, count: 8, firmware: '1.0', command_latency: 1s}\n")
    s.trigger("valve-0001")
    s.run_for(600)
    waves = [(r["wave"], r["devices"], parse_time(r["at"]) - s.start) for r in s.kind("orchestration") if r["event"] == "wave"]
    assert waves == [(1, 2, 0.0), (2, 3, 60.0), (3, 3, 120.0)]
    assert finished(s)["status"] == "completed" and parse_time(finished(s)["finished_at"]) == s.start + 121
    aborting = orchestration + "abort: {failure_rate: 10%, min_executions: 2}\n"
    s = scenario(aborting, "- {type: valve, count: 8, firmware: '1.0', command_latency: 1s, failure_rate: 1.0}\n")
    s.trigger("valve-0001")
    s.run_for(600)
    report = finished(s)
    assert report["status"] == "aborted" and report["not_reached"] == 6 and len(s.kind("command")) == 2


def test_a_count_quorum_larger_than_the_targets_fails_the_step_and_skips_the_rest() -> None:
    s = scenario(
        """\
        steps:
          first: {command: close, targets: "type == 'valve'"}
          big: {command: close, targets: "type == 'valve'", after: first, barrier: {quorum: 5}}
          other: {command: start, targets: "type == 'pump'", after: first}
          last: {command: start, targets: "type == 'pump'", after: [big, other]}
        """,
        "- {type: valve, count: 3, firmware: '1.0'}\n- {type: pump, count: 1, firmware: '1.0'}\n",
    )
    s.trigger("valve-0001")
    s.run_for(60)
    report = finished(s)
    assert report["reason"] == "barrier of step 'big' needs 5 successes but only 3 devices are targeted"
    assert {n: st["status"] for n, st in report["steps"].items()} == {
        "first": "done", "big": "failed", "other": "skipped", "last": "skipped"}


def test_a_barrier_met_by_quorum_lets_dependents_start_before_stragglers_finish() -> None:
    s = scenario(
        """\
        steps:
          close: {command: close, targets: "type == 'valve'", barrier: {quorum: 50%}, timeout: 5s}
          start: {command: start, targets: "type == 'pump'", after: close, barrier: {quorum: 2}}
        """,
        "- {type: valve, count: 2, firmware: '1.0', command_latency: 100ms}\n"
        "- {type: valve, count: 2, id_prefix: slow, firmware: '1.0', command_latency: 3s}\n"
        "- {type: pump, count: 1, firmware: '1.0'}\n",
    )
    s.trigger("valve-0001")
    s.run_for(60)
    report = finished(s)
    assert report["reason"] == "barrier of step 'start' needs 2 successes but only 1 devices are targeted"
    started = [r for r in s.kind("orchestration") if r["event"] in ("barrier", "step")]
    assert [(r["event"], r["step"]) for r in started] == [("step", "close"), ("barrier", "close"), ("step", "start")]
    assert report["steps"]["close"]["status"] == "stopped"  # the slow valves finished after the stop
    assert report["states"] == {"succeeded": 4}


def test_a_barrier_deadline_fails_the_run() -> None:
    s = scenario(
        """\
        steps:
          close: {command: close, targets: "type == 'valve'", barrier: {quorum: 100%, timeout: 2s}, timeout: 10s}
        """,
        "- {type: valve, count: 3, firmware: '1.0', command_latency: {min: 1s, max: 5s}}\n",
    )
    s.trigger("valve-0001")
    s.run_for(60)
    report = finished(s)
    assert report["status"] == "failed" and report["reason"].startswith("barrier of step 'close' not met within 2s: ")
    assert parse_time(next(r["at"] for r in s.kind("orchestration") if r["event"] == "failed")) == s.start + 2


def test_steps_that_cannot_start_or_select_nobody_and_targets_that_cannot_be_read() -> None:
    s = scenario(
        """\
        steps:
          move: {command: move, targets: "zone == 'a'", params: {to: "level"}}
        """,
        "- {type: valve, count: 2, firmware: '1.0', attributes: {zone: a}}\n- {type: pump, count: 1, firmware: '1.0'}\n",
    )
    s.trigger("valve-0001")  # the trigger event has no 'level'
    s.run_for(10)
    assert finished(s)["reason"] == "step 'move' cannot start: missing field 'level'"
    s = scenario(
        """\
        steps:
          move: {command: move, targets: "zone == 'a'", params: {to: "level * 2"}}
          nobody: {command: start, targets: "type == 'pump' and site == 'mars'", barrier: {quorum: 100%}}
          self: {command: close, after: nobody}
        """,
        "- {type: valve, count: 2, firmware: '1.0', attributes: {zone: a}}\n- {type: pump, count: 1, firmware: '1.0'}\n",
    )
    s.trigger("valve-0002", level=4)
    s.run_for(10)
    report = finished(s)
    assert report["status"] == "completed" and report["steps"]["nobody"]["targets"] == 0
    assert {r["device"]: r["payload"] for r in s.kind("command")} == {
        "valve-0001": {"cmd": "move", "to": 8}, "valve-0002": {"target": 0}}  # the pump has no 'zone': not a target
    assert report["steps"]["self"]["targets"] == 1 and report["latency_s"] is not None


def test_compensation_undoes_in_reverse_order_and_reports_undo_failures() -> None:
    s = scenario(
        """\
        steps:
          first: {command: close, targets: "type == 'valve'", undo: {command: open, timeout: 4s}}
          second: {command: move, targets: "type == 'valve'", params: {to: "1"}, after: first, undo: {command: open}}
          third: {command: start, targets: "type == 'pump'", after: second, barrier: {quorum: 100%}}
        on_failure: compensate
        """,
        "- {type: valve, count: 2, firmware: ['2.0', '1.0'], command_latency: 100ms}\n"
        "- {type: pump, count: 1, firmware: '1.0', reject_rate: 1.0}\n",
    )
    s.trigger("valve-0001")
    s.run_for(60)
    report = finished(s)
    opens = [(r["step"], r["device"]) for r in s.kind("command") if r["command"] == "open"]
    assert opens == [("second", "valve-0001"), ("first", "valve-0001")]  # valve-0002's firmware cannot 'open'
    assert report["compensation"]["status"] == "partial" and report["compensation"]["undone"] == 2
    assert report["compensation"]["failures"] == [
        {"device": "valve-0002", "step": "first", "command": "open", "status": "rejected",
         "reason": "firmware 1.0 does not support 'open'"},
        {"device": "valve-0002", "step": "second", "command": "open", "status": "rejected",
         "reason": "firmware 1.0 does not support 'open'"},
    ]
    assert report["states"] == {"succeeded": 2, "rejected": 1, "compensated": 2}
    compensated = [r for r in s.kind("command_result") if r["status"] == "compensated"]
    assert all("compensated_by" in r for r in compensated)


def test_undo_commands_are_retried_during_compensation() -> None:
    s = scenario(
        """\
        steps:
          first: {command: close, targets: "type == 'valve'", undo: {command: open}, retries: {max: 2, backoff: 1s, on: [timed_out]}, timeout: 2s}
          second: {command: start, targets: "type == 'pump'", after: first, barrier: {quorum: 1}}
        on_failure: compensate
        """,
        "- {type: valve, count: 1, firmware: '2.0', command_latency: 100ms}\n"
        "- {type: pump, count: 1, firmware: '1.0', reject_rate: 1.0}\n",
        duplicate_rate=0.0,
    )
    # the valve answers its first attempt only: afterwards it is silent, so the undo needs retries
    original = s.fleet.command
    calls: list[str] = []

    def answers_once(device: str, command: str, payload: Any, sent_at: float, command_id: str) -> Any:
        calls.append(command)
        outcome = original(device, command, payload, sent_at, command_id)
        if command == "open" and calls.count("open") < 3:
            from iot_dsl.devices.commands import CommandOutcome

            return CommandOutcome(device, command_id, "silent", None, "lost")
        return outcome

    s.fleet.command = answers_once  # type: ignore[method-assign]
    s.trigger("valve-0001")
    s.run_for(60)
    undo = [r for r in s.kind("command") if r["command"] == "open"]
    assert [r["attempt"] for r in undo] == [1, 2, 3]
    # the undo's first delivery executed (answer lost); the retries got the recorded result instead of re-running
    assert finished(s)["compensation"] == {"status": "done", "undone": 1, "failures": []}


def test_a_stop_cancels_queued_and_backing_off_commands() -> None:
    s = scenario(
        """\
        steps:
          close: {command: close, targets: "type == 'valve'", timeout: 5s, retries: {max: 1, backoff: 30s}}
        concurrency: 2
        abort: {failure_rate: 40%, min_executions: 1}
        """,
        "- {type: valve, count: 1, id_prefix: bad, firmware: '1.0', command_latency: 100ms}\n"
        "- {type: valve, count: 5, firmware: '1.0', command_latency: 1s}\n"
        "- {type: valve, count: 1, id_prefix: rej, firmware: '1.0', reject_rate: 1.0, command_latency: 2s}\n",
        failing=["bad-0001"],
    )
    s.trigger("valve-0001")
    s.run_for(120)
    report = finished(s)
    assert report["status"] == "aborted" and report["states"]["cancelled"] >= 1
    cancelled = [r for r in s.kind("command_result") if r["status"] == "cancelled"]
    assert all(r["reason"] == "run aborted: not sent" for r in cancelled)
    assert sum(report["states"].values()) == 7


def test_a_wave_scoped_abort_cancels_a_command_backing_off_for_a_retry() -> None:
    s = scenario(
        """\
        steps:
          close: {command: close, targets: "type == 'valve'", timeout: 5s, retries: {max: 1, backoff: 30s}}
        abort: {failure_rate: 40%, min_executions: 1, scope: [wave]}
        """,
        "- {type: valve, count: 1, id_prefix: bad, firmware: '1.0', command_latency: 100ms}\n"
        "- {type: valve, count: 1, id_prefix: rej, firmware: '1.0', reject_rate: 1.0, command_latency: 2s}\n",
        failing=["bad-0001"],
    )
    s.trigger("bad-0001")
    s.run_for(120)
    results = [(r["device"], r["status"], r["final"], round(parse_time(r["at"]) - s.start, 3)) for r in s.kind("command_result")]
    assert results == [("bad-0001", "failed", False, 0.1), ("rej-0001", "rejected", True, 2.0),
                       ("bad-0001", "cancelled", True, 2.0)]
    assert finished(s)["reason"] == "failure rate 1/1 (100.0%) in wave 1 of step 'close' exceeds 40%"
    assert len(s.kind("command")) == 2  # the retry due at 30 s was never sent


def test_runs_work_on_a_clock_without_timers() -> None:
    text = TYPES + textwrap.dedent(
        """\
        orchestrations:
          o:
            steps:
              close: {command: close, targets: "type == 'valve'", timeout: 5s}
        simulation:
          fleet:
            - {type: valve, count: 3, firmware: '1.0', command_latency: 1s}
            - {type: valve, count: 1, id_prefix: mute, firmware: '1.0', silent_rate: 1.0}
        """
    )
    plan = compile_text(text)
    fleet = SimulatedFleet(plan.data["simulation"], seed=0, stream="ops")
    manual = ManualClock(fleet.start)
    devices = VirtualClock(fleet.start)  # the simulated devices keep their own timers
    engine = Engine(plan, clock=manual, registry=fleet.registry)  # type: ignore[arg-type]
    SimulatedEndpoint(fleet, engine.transport, devices, plan.name)
    records = engine.push([{"stream": "ops", "device": "valve-0001", "ts": fleet.start, "seq": 1}])
    for second in range(1, 11):
        manual.t = fleet.start + second
        devices.advance_to(manual.t)
        records += engine.advance_to(manual.t)
    results = {r["device"]: (r["status"], parse_time(r["at"]) - fleet.start) for r in records if r["kind"] == "command_result"}
    assert results == {"valve-0001": ("succeeded", 1.0), "valve-0002": ("succeeded", 1.0), "valve-0003": ("succeeded", 1.0),
                       "mute-0001": ("timed_out", 5.0)}


def test_python_api_start_report_progress_flush_and_snapshot() -> None:
    s = scenario(
        """\
        steps:
          close: {command: close, targets: "type == 'valve'", timeout: 5s}
        rollout: {waves: [50%]}
        """,
        "- {type: valve, count: 4, firmware: '1.0', command_latency: 1s}\n",
    )
    (op,) = orchestration_operators(s.engine)
    progress: list[dict[str, Any]] = []
    follow_progress(s.engine.transport, s.plan.name, progress.append)
    run = op.start(None, at=s.start + 10)
    assert run == "o/1" and op.report(run)["status"] == "running" and op.report(run)["started_at"] is None
    s.run_for(10.5)
    assert progress[0] == {"orchestration": "o", "run": "o/1", "status": "running", "targets": 4, "released": 2,
                           "finished": 0, "states": {}}
    s.run_for(10)
    assert progress[-1]["status"] == "completed" and progress[-1]["states"] == {"succeeded": 4}
    assert op.report("o/1")["status"] == "completed" and op.reports[0]["run"] == "o/1"
    with pytest.raises(KeyError):
        op.report("o/9")
    second = op.start({"device": "valve-0001", "seq": 3, TIME_KEY: s.clock.now()})
    s.records += s.engine.finish()
    (unfinished,) = [r for r in s.kind("orchestration") if r["event"] == "unfinished"]
    assert unfinished["run"] == second and unfinished["report"]["status"] == "running"
    assert op.snapshot() == {"counter": 2}
    op.restore({"counter": 7})
    assert op.start() == "o/8"


def test_an_operator_built_without_ports_and_on_a_gateway_segment() -> None:
    plan = compile_text(TYPES + "orchestrations:\n  o:\n    steps:\n      close: {command: close, targets: \"type == 'valve'\"}\n")
    spec = next(op for seg in plan.segments for op in seg["operators"] if op["kind"] == "orchestration")
    registry = DeviceRegistry([DEVICE])
    ctx = BuildContext(
        segment="gw-a", device_attributes=plan.data["device_attributes"], device_types=plan.data["device_types"],
        attributes_of=registry.attributes, devices_in_scope=lambda: iter(registry), now=lambda: T0, workflow="w",
    )
    op = OrchestrationOperator(spec, ctx, "device")
    assert op.snapshot() is None and op.start() == "gw-a/o/1"
    records: list[dict[str, Any]] = []
    op.on_time(T0 + 100, records)
    assert [(r["kind"], r.get("event")) for r in records] == [
        ("orchestration", "started"), ("orchestration", "step"), ("command", None), ("command_result", None),
        ("orchestration", "step_done"), ("orchestration", "finished")]
    assert records[3]["reason"] == "no answer within 30s" and records[-1]["report"]["segment"] == "gw-a"


def test_record_times_match_format_time_across_many_seconds() -> None:
    from iot_dsl.runtime.clock import format_time
    from iot_dsl.runtime.orchestration_run import iso_time

    times = [T0 + i * 1.0007 for i in range(5000)] + [T0 - 0.0004, T0 + 0.9996]
    assert [iso_time(t) for t in times] == [format_time(t) for t in times]


def test_fleet_online_at_follows_chained_offline_windows() -> None:
    fleet = SimulatedFleet(
        {"fleet": [{"type": "valve", "count": 1, "offline": [{"from": "10s", "to": "20s"}, {"from": "20s", "to": "30s"}]}]}
    )
    start = fleet.start
    assert fleet.online_at("valve-0001", start + 5) == start + 5
    assert fleet.online_at("valve-0001", start + 15) == start + 30
    assert fleet.online_at("nobody", start + 15) == start + 15
