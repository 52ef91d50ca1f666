"""Pattern operators at run time: watermark-driven absence and ``for``, durable state, bounds, rules on matches."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from iot_dsl import Engine
from iot_dsl.runtime.clock import format_time
from iot_dsl.runtime.operators import BuildContext
from iot_dsl.runtime.patterns import HoldOperator

from .conftest import compile_yaml

T0 = 1767225600.0

STREAM = """
workflow: w
devices:
  types:
    boiler:
      commands: {shutdown: {payload: {mode: "off"}}}
streams:
  telemetry: {key: device, time: ts, lateness: 2s, fields: {temp: number, status: string}}
"""

OVERHEAT = STREAM + """
patterns:
  overheat:
    stream: telemetry
    within: 30s
    sequence:
      - {name: hot, when: "temp > 90", times: 2}
      - {name: hotter, when: "temp > max(hot.temp) + 2"}
      - {absent: "status == 'ack'", for: 10s}
rules:
  - when: overheat
    do:
      - {alert: "{device} {hot_count} {match_start} {match_end} {temp}"}
"""

HOLD = STREAM + """
patterns:
  sustained:
    stream: telemetry
    condition: "temp > 90"
    for: 30s
"""


def ev(t: float, temp: float, device: str = "d1", status: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"device": device, "ts": T0 + t, "temp": temp, "status": status, "seq": int(t * 10), **extra}


def kinds(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def at(t: float) -> str:
    return format_time(T0 + t)


def test_absence_fires_when_the_watermark_passes_the_deadline_never_on_the_clock() -> None:
    engine = Engine(compile_yaml(OVERHEAT))
    assert engine.push([ev(0, 91), ev(1, 92), ev(3, 95)]) == []
    # the clock moving does not fire anything: only event time (the watermark) does
    assert engine.advance_to(T0 + 3600) == []
    # watermark = 13 - 2 = 11 > 3 + 10 ... but an event at exactly the deadline may still arrive: the watermark
    # must pass it
    assert engine.push([ev(15, 50)]) == []  # watermark 13: deadline 13 not passed yet
    records = engine.push([ev(15.5, 50)])  # watermark 13.5
    (match,) = kinds(records, "match")
    assert match == {
        "kind": "match", "at": at(13), "node": "overheat", "key": {"device": "d1"}, "start": at(0), "end": at(3),
        "steps": {"hot": [{"device": "d1", "seq": 0, "ts": T0}, {"device": "d1", "seq": 10, "ts": T0 + 1}],
                  "hotter": [{"device": "d1", "seq": 30, "ts": T0 + 3}]},
        "segment": "cloud",
    }
    (alert,) = kinds(records, "alert")
    assert alert["message"] == f"d1 2 {T0} {T0 + 3} 95"
    assert alert["at"] == at(13)


def test_an_ack_at_the_deadline_cancels_and_one_after_it_does_not() -> None:
    engine = Engine(compile_yaml(OVERHEAT))
    records = engine.push([ev(0, 91), ev(1, 92), ev(3, 95), ev(13, 50, status="ack")]) + engine.finish()
    assert kinds(records, "match") == []
    engine = Engine(compile_yaml(OVERHEAT))
    records = engine.push([ev(0, 91), ev(1, 92), ev(3, 95), ev(13.001, 50, status="ack")]) + engine.finish()
    assert [m["at"] for m in kinds(records, "match")] == [at(13)]


def test_out_of_order_events_within_lateness_are_put_back_in_event_time_order() -> None:
    in_order = [ev(0, 91), ev(1, 92), ev(2, 80, status="ack"), ev(3, 95), ev(20, 50)]
    engine = Engine(compile_yaml(OVERHEAT))
    expected = engine.push(in_order) + engine.finish()
    engine = Engine(compile_yaml(OVERHEAT))
    shuffled = [in_order[1], in_order[0], in_order[3], in_order[2], in_order[4]]  # at most 2 s behind
    got = []
    for event in shuffled:
        got += engine.push([event])
    got += engine.finish()
    assert got == expected and len(kinds(got, "match")) == 1


def test_for_fires_once_when_the_condition_held_for_the_duration_at_the_watermark() -> None:
    engine = Engine(compile_yaml(HOLD))
    assert engine.push([ev(0, 91), ev(10, 95), ev(20, 92), ev(30, 93), ev(31, 93)]) == []
    assert engine.advance_to(T0 + 10_000) == []
    records = engine.push([ev(32.5, 94)])  # watermark 30.5 > 30
    (match,) = kinds(records, "match")
    assert (match["at"], match["start"], match["end"], match["key"]) == (at(30), at(0), at(30), {"device": "d1"})
    assert match["steps"] == {"held": [{"device": "d1", "seq": 0, "ts": T0}, {"device": "d1", "seq": 300, "ts": T0 + 30}]}
    # it stays matched while it holds; it matches again only after it broke and held again
    assert engine.push([ev(40, 99), ev(50, 20), ev(60, 91)]) == []
    (again,) = kinds(engine.push([ev(100, 91)]), "match")  # watermark 98 > 90
    assert (again["start"], again["at"]) == (at(60), at(90))
    assert again["steps"] == {"held": [{"device": "d1", "seq": 600, "ts": T0 + 60}]}
    assert engine.finish() == []


def test_a_false_reading_at_or_before_the_deadline_breaks_the_hold() -> None:
    engine = Engine(compile_yaml(HOLD))
    records = engine.push([ev(0, 91), ev(30, 50), ev(31, 91), ev(40, 91), ev(45, 10, device="d2")]) + engine.finish()
    # 0..30 broke at 30; 31.. held until the end of input (the watermark goes to +inf): one match at 61
    assert [(m["start"], m["at"], m["steps"]["held"][-1]["ts"]) for m in kinds(records, "match")] == [
        (at(31), at(61), T0 + 40)
    ]


def run_in_batches(text: str, events: list[dict[str, Any]], size: int, restart_after: int | None = None) -> list[dict[str, Any]]:
    plan = compile_yaml(text)
    engine = Engine(plan)
    records: list[dict[str, Any]] = []
    for index in range(0, len(events), size):
        records += engine.push(events[index : index + size])
        if restart_after is not None and index >= restart_after:
            saved = orjson.loads(orjson.dumps(engine.snapshot()))  # it survives JSON
            engine = Engine(plan)
            engine.restore(saved)
            restart_after = None
    return records + engine.finish()


def sawtooth(devices: int = 5, n: int = 120) -> list[dict[str, Any]]:
    events = []
    for i in range(n):
        for d in range(devices):
            temp = 85 + ((i * 7 + d * 3) % 13)
            status = "ack" if (i + d) % 17 == 0 else "ok"
            events.append(ev(i + d * 0.1, temp, device=f"d{d}", status=status))
    return events


@pytest.mark.parametrize("text", [OVERHEAT, HOLD, OVERHEAT.replace("max(hot.temp) + 2", "93")], ids=["sequence", "hold", "no-context"])
@pytest.mark.parametrize("restart_after", [0, 100, 333, 555])
def test_snapshot_and_restore_mid_stream_give_the_uninterrupted_output(text: str, restart_after: int) -> None:
    events = sawtooth()
    uninterrupted = run_in_batches(text, events, 37)
    assert kinds(uninterrupted, "match")
    assert run_in_batches(text, events, 37, restart_after=restart_after) == uninterrupted


def test_snapshot_holds_buffered_events_partial_matches_and_timers() -> None:
    engine = Engine(compile_yaml(OVERHEAT))
    engine.push([ev(0, 91), ev(1, 92), ev(3, 95), ev(4, 50)])
    state = engine.snapshot()["operators"]["cloud"]["pattern:overheat"]
    assert [e["ts"] for e in state["buffer"]] == [T0 + 3, T0 + 4]  # not yet passed by the watermark (2)
    (key,) = state["matcher"]["keys"]
    assert key["key"] == "d1" and [len(r["chain"]) for r in key["runs"]] == [2, 1]
    engine.push([ev(6, 50)])  # watermark 4: the hotter reading completes the steps; the absence is pending
    (key,) = engine.snapshot()["operators"]["cloud"]["pattern:overheat"]["matcher"]["keys"]
    (waiting,) = [r for r in key["runs"] if r["deadline"] is not None]
    assert waiting["deadline"] == T0 + 13
    restored = Engine(compile_yaml(OVERHEAT))
    restored.restore(engine.snapshot())
    assert [m["at"] for m in kinds(restored.push([ev(16, 50)]), "match")] == [at(13)]


def test_partial_matches_time_out_with_within_and_are_reported_when_asked() -> None:
    text = OVERHEAT.replace("within: 30s", "within: 30s\n    emit_timeouts: true")
    engine = Engine(compile_yaml(text))
    records = engine.push([ev(0, 91), ev(5, 50), ev(29, 92), ev(40, 50)])
    (timeout,) = kinds(records, "pattern_timeout")
    assert timeout == {
        "kind": "pattern_timeout", "at": at(30), "node": "overheat", "key": {"device": "d1"}, "start": at(0),
        "steps": {"hot": [{"device": "d1", "seq": 0, "ts": T0}, {"device": "d1", "seq": 290, "ts": T0 + 29}], "hotter": []},
        "waiting_for": "hotter",
        "segment": "cloud",
    }
    # the run started at 29 expires at 59 (the sweep runs as the watermark moves)
    later = engine.push([ev(70, 50)])
    assert [(t["start"], t["at"]) for t in kinds(later, "pattern_timeout")] == [(at(29), at(59))]
    assert engine.snapshot()["operators"]["cloud"]["pattern:overheat"]["matcher"]["keys"] == []


def test_timeouts_are_dropped_silently_only_when_not_asked_for() -> None:
    engine = Engine(compile_yaml(OVERHEAT))
    records = engine.push([ev(0, 91), ev(40, 50), ev(45, 50)]) + engine.finish()
    assert records == []
    assert engine.snapshot()["operators"]["cloud"]["pattern:overheat"]["matcher"]["keys"] == []


@pytest.mark.parametrize("policy, expected_starts", [("drop_oldest", [2.0, 3.0]), ("drop_newest", [0.0, 1.0])])
def test_the_per_key_cap_drops_by_policy_counts_and_alerts(policy: str, expected_starts: list[float]) -> None:
    text = STREAM + f"""
patterns:
  pair:
    stream: telemetry
    max_partial: 2
    overflow: {policy}
    after_match: all
    sequence:
      - {{name: a, when: "temp > 90"}}
      - {{name: b, when: "temp < 0", contiguity: followed_by_any}}
"""
    engine = Engine(compile_yaml(text))
    records = engine.push([ev(0, 91), ev(1, 91), ev(2, 91), ev(3, 91), ev(4, 91, device="d2"), ev(5, -1), ev(5.5, -1, device="d2")])
    records += engine.finish()
    (alert,) = kinds(records, "alert")
    assert alert["key"] == {"device": "d1"} and alert["dropped"] == 1 and alert["at"] == at(2)
    assert alert["message"] == f"pattern 'pair': more than 2 partial matches for one key; {policy.replace('_', ' ')} (counted)"
    starts = sorted(m["steps"]["a"][0]["ts"] - T0 for m in kinds(records, "match") if m["key"] == {"device": "d1"})
    assert starts == expected_starts
    state = engine.snapshot()["operators"]["cloud"]["pattern:pair"]
    assert state["dropped"] == 1


def test_matches_of_a_per_site_pattern_drive_rules_with_key_and_count_fields() -> None:
    text = STREAM + """
patterns:
  site_hot:
    stream: telemetry
    per: [site]
    within: 1m
    sequence:
      - {name: hot, when: "temp > 90", times: "2+"}
      - {name: cool, when: "temp < 50 and device != last(hot.device)"}
rules:
  - name: act
    when: site_hot
    if: "hot_count >= 2 and site == 'north'"
    do:
      - {alert: "{site} {hot_count} {device}"}
"""
    engine = Engine(compile_yaml(text))
    events = [ev(0, 91, "a", site="north"), ev(1, 95, "b", site="north"), ev(2, 95, "c", site="south"),
              ev(3, 40, "b", site="north"), ev(4, 40, "a", site="north"), ev(5, 40, "d", site="south")]
    records = engine.push(events) + engine.finish()
    (match,) = kinds(records, "match")
    assert match["key"] == {"site": "north"} and match["steps"]["cool"][0]["device"] == "a"
    assert [a["message"] for a in kinds(records, "alert")] == ["north 2 a"]


def test_events_without_the_key_or_with_a_condition_that_cannot_be_evaluated_are_dead_letters() -> None:
    text = STREAM + """
patterns:
  p:
    stream: telemetry
    per: [site, device]
    sequence:
      - {name: a, when: "temp > 90"}
      - {name: b, when: "temp > a.temp"}
"""
    engine = Engine(compile_yaml(text))
    no_temp = {"device": "d1", "ts": T0 + 2, "site": "s", "status": "ok"}
    records = engine.push([ev(0, 91, site="s"), ev(1, 80), no_temp, ev(3, 95, site="s")]) + engine.finish()
    dead = kinds(records, "dead_letter")
    assert [d["reason"] for d in dead] == [
        "pattern 'p': missing key field (site, device)",
        "pattern 'p' cannot evaluate its condition: missing field 'temp'",
    ]
    # the bad event left the partial match as it was: the next reading still completes it
    (match,) = kinds(records, "match")
    assert match["key"] == {"site": "s", "device": "d1"} and match["end"] == at(3)


def test_a_bad_event_for_a_key_without_partial_matches_is_a_dead_letter_too() -> None:
    text = STREAM + """
patterns:
  p: {stream: telemetry, sequence: [{name: a, when: "temp > 90"}]}
"""
    engine = Engine(compile_yaml(text))
    records = engine.push([{"device": "d9", "ts": T0, "status": "ok"}]) + engine.finish()
    assert [r["reason"] for r in kinds(records, "dead_letter")] == ["pattern 'p' cannot evaluate its condition: missing field 'temp'"]
    engine = Engine(compile_yaml(HOLD))
    records = engine.push([{"device": "d9", "ts": T0, "status": "ok"}]) + engine.finish()
    assert [r["reason"] for r in kinds(records, "dead_letter")] == ["pattern 'sustained' cannot evaluate its condition: missing field 'temp'"]


def test_a_pattern_over_a_derived_stream_uses_its_source_watermark_and_null_aggregates() -> None:
    text = STREAM + """
  hot_only:
    from: telemetry
    where: "temp > 80 or status == 'reset'"
patterns:
  p:
    stream: hot_only
    within: 1m
    sequence:
      - {name: a, when: "temp > 80 or status == 'reset'", times: 2}
      - {name: b, when: "temp > avg(a.temp) and count(a) == 2 and sum(a.temp) > 0 and min(a.temp) > 0 and first(a.status) == 'ok'"}
"""
    engine = Engine(compile_yaml(text))
    records = engine.push([ev(0, 90), {"device": "d1", "ts": T0 + 1, "status": "reset", "temp": None}, ev(2, 91), ev(9, 50)])
    # the watermark of the source (9 - 2) passed 2 although the filter dropped the reading at 9
    (match,) = kinds(records, "match")
    assert match["end"] == at(2) and [s["ts"] - T0 for s in match["steps"]["a"]] == [0, 1]
    assert engine.finish() == []


def bare_hold_operator() -> HoldOperator:
    """The HOLD pattern's operator, built outside an engine (no source, no watermark)."""
    plan = compile_yaml(HOLD)
    spec = next(op for op in plan.segments[0]["operators"] if op["kind"] == "pattern")
    ctx = BuildContext(
        segment="cloud", device_attributes={}, device_types={}, attributes_of=lambda d: {}, devices_in_scope=lambda: iter(()),
        now=lambda: 0.0,
    )
    return HoldOperator(spec, ctx, "device")


def test_operators_built_without_a_known_source_wait_for_the_final_watermark() -> None:
    op = bare_hold_operator()
    records: list[dict[str, Any]] = []
    event = {**ev(0, 95), "@t": T0}
    assert op.process([event], records) == [] and op.on_time(0.0, records) == []
    (out,) = op.flush(records)
    assert out["match_start"] == T0 and out["@t"] == T0 + 30 and len(records) == 1


def test_a_failed_condition_undoes_what_other_partial_matches_of_the_event_did() -> None:
    text = STREAM + """
patterns:
  p:
    stream: telemetry
    after_match: all
    sequence:
      - {name: a, when: "temp > 90"}
      - {name: b, when: "a.status == 'go' or temp > a.temp", contiguity: followed_by_any}
      - {name: c, when: "temp > 98"}
"""
    engine = Engine(compile_yaml(text))
    # the partial match waiting for b after a (status 'go') takes the bad event without reading temp; the one
    # waiting for c needs temp and fails: the event is a dead letter and no partial match moved
    bad = {"device": "d1", "ts": T0 + 2, "status": "ok", "seq": 20}
    records = engine.push([ev(0, 91, status="go"), ev(1, 92), bad, ev(3, 99)]) + engine.finish()
    assert [r["reason"] for r in kinds(records, "dead_letter")] == ["pattern 'p' cannot evaluate its condition: missing field 'temp'"]
    assert [[m["steps"][s][0]["seq"] for s in "abc"] for m in kinds(records, "match")] == [[0, 10, 30]]


def test_an_absence_without_within_completes_at_its_deadline() -> None:
    text = STREAM + """
patterns:
  quiet:
    stream: telemetry
    sequence:
      - {name: a, when: "temp > 90"}
      - {absent: "status == 'ack'", for: 5s}
"""
    engine = Engine(compile_yaml(text))
    records = engine.push([ev(0, 91), ev(1, 91), ev(2, 50, status="ack"), ev(3, 95), ev(20, 10)])
    # skip-past-last: the match at 8 (started at 3) is the only one; those at 0 and 1 were cancelled by the ack
    assert [(m["start"], m["at"]) for m in kinds(records, "match")] == [(at(3), at(8))]


def test_a_matched_hold_survives_a_restart_without_matching_again() -> None:
    plan = compile_yaml(HOLD)
    engine = Engine(plan)
    assert len(kinds(engine.push([ev(0, 91), ev(31, 92), ev(40, 92)]), "match")) == 1
    restored = Engine(plan)
    restored.restore(orjson.loads(orjson.dumps(engine.snapshot())))
    assert restored.push([ev(50, 93)]) + restored.finish() == []


def test_absence_deadlines_after_the_last_reading_of_every_device_fire_at_finish() -> None:
    # regression (events benchmark, --events 100000): matches whose absence deadline lies after the device's last
    # reading, and after the stream's last watermark, must still complete when the input ends
    engine = Engine(compile_yaml(OVERHEAT))
    batch = [ev(0, 91, device=d) for d in ("d1", "d2")] + [ev(1, 92, device=d) for d in ("d1", "d2")]
    batch += [ev(3, 95, device="d1"), ev(4, 97, device="d2"), ev(5, 50, device="d3")]
    lines = [orjson.dumps(e) for e in batch]
    assert kinds(engine.push_raw(lines), "match") == []  # watermark 3: no deadline (13, 14) passed
    records = engine.finish()
    assert [(m["key"]["device"], m["at"]) for m in kinds(records, "match")] == [("d1", at(13)), ("d2", at(14))]
    assert engine.finish() == []  # nothing fires twice


def test_an_event_that_arrived_before_the_start_it_follows_in_event_time_still_completes_the_match() -> None:
    # the reading at t=5 arrives first, in its own batch, when nothing could start a match for d1; the start
    # (t=3) arrives in a later batch: both are released together and taken in event-time order
    text = STREAM + """
patterns:
  p:
    stream: telemetry
    sequence:
      - {name: hot, when: "temp > 90"}
      - {name: cool, when: "temp < 50"}
"""
    engine = Engine(compile_yaml(text))
    records = engine.push([ev(5, 40), ev(4, 60, "d2")]) + engine.push([ev(3, 95), ev(6, 70, "d2")])
    records += engine.push([ev(30, 70, "d3")])
    (match,) = kinds(records, "match")
    assert match["key"] == {"device": "d1"} and match["start"] == at(3) and match["end"] == at(5)
    assert engine.finish() == []


def test_a_key_value_that_cannot_be_a_key_is_a_dead_letter_and_the_engine_goes_on() -> None:
    text = """
workflow: w
streams:
  telemetry: {key: device, time: ts, lateness: 2s, fields: {temp: number, zone: any}}
patterns:
  p:
    stream: telemetry
    per: [zone]
    sequence:
      - {name: hot, when: "temp > 90"}
      - {name: hotter, when: "temp > hot.temp"}
"""
    engine = Engine(compile_yaml(text))
    events = [
        {"device": "d1", "ts": T0, "temp": 95, "zone": ["a", "b"]},
        {"device": "d1", "ts": T0 + 1, "temp": 95, "zone": "z1"},
        {"device": "d2", "ts": T0 + 2, "temp": 99, "zone": "z1"},
    ]
    records = engine.push(events) + engine.finish()
    assert [r["reason"] for r in kinds(records, "dead_letter")] == ["pattern 'p': key field (zone) is not a plain value"]
    (match,) = kinds(records, "match")
    assert match["key"] == {"zone": "z1"} and match["end"] == at(2)


def test_an_empty_batch_holds_nothing_back() -> None:
    op = bare_hold_operator()
    records: list[dict[str, Any]] = []
    assert op.process([], records) == [] and op.buffered() == [] and op.flush(records) == [] and records == []


def test_a_reloaded_workflow_keeps_the_state_of_unchanged_patterns_only() -> None:
    events = [ev(0, 91), ev(1, 92), ev(2, 95)]
    before = Engine(compile_yaml(OVERHEAT))
    before.push(events)
    saved = orjson.loads(orjson.dumps(before.snapshot()))
    # another rule was added: the pattern did not change, its in-flight match completes after the reload
    extra_rule = OVERHEAT + "  - {name: also, when: overheat, do: [{alert: 'again {device}'}]}\n"
    reloaded = Engine(compile_yaml(extra_rule))
    assert reloaded.restore(saved) == []
    matches = kinds(reloaded.push([ev(20, 50)]) + reloaded.finish(), "match")
    assert [m["start"] for m in matches] == [at(0)]
    # the pattern changed (another threshold): its old partial matches do not fit it and are left out
    changed = Engine(compile_yaml(OVERHEAT.replace("temp > 90", "temp > 80")))
    assert changed.restore(saved) == ["pattern:overheat"]
    assert kinds(changed.push([ev(20, 50)]) + changed.finish(), "match") == []
