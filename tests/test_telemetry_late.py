"""Window closing on the watermark, boundaries, late data (revisions and late records), state (issue 4)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from iot_dsl import Engine
from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.runtime.aggregates import AggregateOperator, allowed_lateness
from iot_dsl.runtime.operators import TIME_KEY

from .conftest import compile_yaml
from .test_telemetry_oracle import HEADER, T0, build_operator

TUMBLING = """
aggregates:
  temps:
    stream: telemetry
    group_by: [site]
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()", mean: "mean(temp)", present: "count(temp)"}
"""


def registry(*specs: tuple[str, str]) -> DeviceRegistry:
    return DeviceRegistry(Device(d, "boiler", site, "line-1", 52.0, 4.0, "1.0.0", {}) for d, site in specs)


def reading(device: str, t: float, temp: Any = 50.0) -> dict[str, Any]:
    event: dict[str, Any] = {"device": device, "ts": t, TIME_KEY: t}
    if temp is not ...:
        event["temp"] = temp
    return event


def close(op: AggregateOperator, ctx: Any, watermark: float) -> list[dict[str, Any]]:
    ctx.watermarks["telemetry"] = watermark
    records: list[dict[str, Any]] = []
    op.on_time(0.0, records)
    return records


def aggregates(records: list[dict[str, Any]], level: str = "device") -> list[tuple[Any, ...]]:
    return [
        (r["device"] if level == "device" else r["group"], r["window_start"] - T0, r["revision"], r["values"]["n"])
        for r in records if r["kind"] == "aggregate" and r["level"] == level
    ]


def test_window_start_is_inclusive_end_exclusive_and_closes_when_the_watermark_reaches_the_end() -> None:
    op, ctx = build_operator(TUMBLING, registry(("a", "north")))
    records: list[dict[str, Any]] = []
    op.process([reading("a", T0), reading("a", T0 + 9.999), reading("a", T0 + 10.0)], records)
    assert close(op, ctx, T0 + 9.999) == []
    first = close(op, ctx, T0 + 10.0)
    assert aggregates(first) == [("a", 0.0, 0, 2)]
    (record,) = [r for r in first if r["level"] == "device"]
    assert (record["start"], record["end"], record["at"]) == (
        "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:10.000Z", "2026-01-01T00:00:10.000Z")
    assert record["group"] == "north" and record["values"] == {"n": 2, "mean": 50.0, "present": 2}
    assert close(op, ctx, T0 + 15) == []  # nothing new is due
    assert aggregates(close(op, ctx, T0 + 20)) == [("a", 10.0, 0, 1)]


def test_no_watermark_means_nothing_closes_until_flush() -> None:
    op, _ctx = build_operator(TUMBLING, registry(("a", "north")))
    records: list[dict[str, Any]] = []
    op.process([reading("a", T0 + 1)], records)
    assert op.on_time(0.0, records) == [] and records == []
    op.flush(records)
    assert aggregates(records) == [("a", 0.0, 0, 1)]
    out: list[dict[str, Any]] = []
    assert op.flush(out) == [] and out == []


def test_late_data_within_allowed_lateness_revises_only_the_touched_windows_and_beyond_gives_late_records() -> None:
    op, ctx = build_operator(TUMBLING, registry(("a", "north"), ("b", "north"), ("c", "south")), allowed=30.0)
    records: list[dict[str, Any]] = []
    sent = [reading(d, T0 + s) for s in range(10) for d in "abc"]
    op.process(sent, records)
    first = close(op, ctx, T0 + 12)
    assert sorted(aggregates(first)) == [("a", 0.0, 0, 10), ("b", 0.0, 0, 10), ("c", 0.0, 0, 10)]
    assert sorted(aggregates(first, "site")) == [("north", 0.0, 0, 20), ("south", 0.0, 0, 10)]
    # late but within lateness (watermark 12 < end 10 + 30): device a and its site are revised, nothing else
    late_ok = [reading("a", T0 + 5), reading("a", T0 + 6)]
    op.process(late_ok, records)
    revised = close(op, ctx, T0 + 13)
    assert aggregates(revised) == [("a", 0.0, 1, 12)]
    assert aggregates(revised, "site") == [("north", 0.0, 1, 22)]
    op.process([reading("b", T0 + 7)], records)
    again = close(op, ctx, T0 + 14)
    assert aggregates(again) == [("b", 0.0, 1, 11)] and aggregates(again, "site") == [("north", 0.0, 2, 23)]
    # beyond lateness: watermark passes end + lateness, the window is final
    assert close(op, ctx, T0 + 40) == []
    gone: list[dict[str, Any]] = []
    op.process([reading("c", T0 + 8, temp=61.5)], gone)
    (late,) = gone
    assert late["kind"] == "late" and late["device"] == "c" and late["missed"] == 1 and late["counted"] is False
    assert late["event"] == {"device": "c", "ts": T0 + 8, "temp": 61.5} and late["at"] == "2026-01-01T00:00:08.000Z"
    assert late["watermark"] == "2026-01-01T00:00:40.000Z"
    assert close(op, ctx, T0 + 41) == []
    # counts reconcile: latest revision of every device window + late readings == readings sent
    latest: dict[str, int] = {}
    for device, _, _, n in aggregates(first + revised + again):
        latest[device] = n
    total_sent = len(sent) + len(late_ok) + 2
    assert sum(latest.values()) + len(gone) == total_sent


def test_without_allowed_lateness_readings_for_closed_windows_are_late() -> None:
    op, ctx = build_operator(TUMBLING, registry(("a", "north")))
    records: list[dict[str, Any]] = []
    op.process([reading("a", T0 + 1)], records)
    close(op, ctx, T0 + 10)
    op.process([reading("a", T0 + 9.5), reading("a", T0 + 10.5)], records)
    assert [r["kind"] for r in records] == ["late"]
    assert aggregates(close(op, ctx, T0 + 20)) == [("a", 10.0, 0, 1)]


def test_hopping_reading_late_for_some_windows_counts_in_the_others() -> None:
    op, ctx = build_operator("""
aggregates:
  hop:
    stream: telemetry
    per_device: true
    window: {hopping: 30s, every: 10s}
    compute: {n: "count()"}
""", registry(("a", "north")))
    records: list[dict[str, Any]] = []
    op.process([reading("a", T0 + 25)], records)
    assert sorted(aggregates(close(op, ctx, T0 + 30))) == [("a", 0.0, 0, 1)]
    # t=25 belongs to [0,30), [10,40), [20,50): [0,30) is closed, the others still open
    op.process([reading("a", T0 + 25)], records)
    (late,) = records
    assert late["missed"] == 1 and late["counted"] is True
    assert sorted(aggregates(close(op, ctx, T0 + 60))) == [("a", 10.0, 0, 2), ("a", 20.0, 0, 2)]


def test_session_revision_when_late_data_joins_two_sessions() -> None:
    op, ctx = build_operator("""
aggregates:
  visits:
    stream: telemetry
    per_device: true
    window: {session: 5s}
    compute: {n: "count()", first: "first(temp)", last: "last(temp)"}
""", registry(("a", "north")), allowed=60.0)
    records: list[dict[str, Any]] = []
    op.process([reading("a", T0, 1.0), reading("a", T0 + 2, 2.0), reading("a", T0 + 10, 3.0)], records)
    out = close(op, ctx, T0 + 16)
    assert [(r["window_start"] - T0, r["window_end"] - T0, r["revision"], r["values"]["n"])
            for r in out if r["level"] == "device"] == [(0.0, 7.0, 0, 2), (10.0, 15.0, 0, 1)]
    op.process([reading("a", T0 + 6, 2.5)], records)  # bridges both sessions
    (merged,) = [r for r in close(op, ctx, T0 + 17) if r["level"] == "device"]
    assert (merged["window_start"] - T0, merged["window_end"] - T0, merged["revision"]) == (0.0, 15.0, 1)
    assert merged["values"] == {"n": 4, "first": 1.0, "last": 3.0}


def test_sliding_windows_revise_the_trailing_windows_a_late_reading_falls_into() -> None:
    op, ctx = build_operator("""
aggregates:
  trail:
    stream: telemetry
    per_device: true
    window: {sliding: 5s}
    compute: {n: "count()"}
""", registry(("a", "north")), allowed=60.0)
    records: list[dict[str, Any]] = []
    op.process([reading("a", T0 + s) for s in (0, 2, 4, 8)], records)
    first = close(op, ctx, T0 + 8)
    assert [(r["window_end"] - T0, r["values"]["n"], r["revision"]) for r in first if r["level"] == "device"] == [
        (0.0, 1, 0), (2.0, 2, 0), (4.0, 3, 0), (8.0, 2, 0)]
    assert first[0]["window_start"] == T0 - 5
    op.process([reading("a", T0 + 3.5)], records)
    revised = close(op, ctx, T0 + 9)
    assert [(r["window_end"] - T0, r["values"]["n"], r["revision"]) for r in revised if r["level"] == "device"] == [
        (3.5, 3, 0), (4.0, 4, 1), (8.0, 3, 1)]


def test_missing_and_null_values_are_counted_by_count_only() -> None:
    op, _ctx = build_operator(TUMBLING, registry(("a", "north")))
    records: list[dict[str, Any]] = []
    op.process([reading("a", T0, None), reading("a", T0 + 1, ...), reading("a", T0 + 2, 4.0)], records)
    op.flush(records)
    (device,) = [r for r in records if r["level"] == "device"]
    assert device["values"] == {"n": 3, "mean": 4.0, "present": 1}
    op2, _ = build_operator(TUMBLING, registry(("a", "north")))
    out: list[dict[str, Any]] = []
    op2.process([reading("a", T0, None)], out)
    op2.flush(out)
    assert [r["values"] for r in out if r["level"] == "device"] == [{"n": 1, "mean": None, "present": 0}]


def test_snapshot_and_restore_resume_open_windows_and_revisions() -> None:
    spec = """
aggregates:
  temps:
    stream: telemetry
    group_by: [site]
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()", mean: "mean(temp)", modes: "distinct(mode)"}
"""
    reg = registry(("a", "north"), ("b", "south"))
    events = [dict(reading(d, T0 + s, float(s)), mode=m) for s in range(25) for d, m in (("a", "x"), ("b", "y"))]

    def run(split: int | None) -> list[dict[str, Any]]:
        op, ctx = build_operator(spec, reg, allowed=20.0)
        out: list[dict[str, Any]] = []
        for i, start in enumerate(range(0, len(events), 10)):
            if split is not None and i == split:
                state = op.snapshot()
                op, ctx = build_operator(spec, reg, allowed=20.0)
                op.restore(state)
            op.process(events[start:start + 10], out)
            out += close(op, ctx, events[start:start + 10][-1]["ts"])
        op.process([dict(reading("a", T0 + 3, 100.0), mode="z")], out)
        out += close(op, ctx, T0 + 26)
        op.flush(out)
        return out

    assert run(None) == run(3)
    revised = [r for r in run(None) if r["revision"] == 1 and r["level"] == "device"]
    assert [(r["device"], r["values"]["modes"]) for r in revised] == [("a", 2)]


def test_group_membership_follows_registry_changes() -> None:
    reg = registry(("a", "north"), ("b", "north"))
    op, _ctx = build_operator(TUMBLING, reg)
    records: list[dict[str, Any]] = []
    op.process([reading("a", T0), reading("b", T0)], records)
    reg.update("b", site="south")
    reg.add(Device("c", "boiler", "east", "line-1", 0.0, 0.0, "1.0.0", {}))
    op.process([reading("a", T0 + 1), reading("b", T0 + 1), reading("c", T0 + 1)], records)
    reg.remove("a")
    op.process([reading("a", T0 + 2), reading("x", T0 + 2) | {"site": "west"}], records)
    op.flush(records)
    sites = {r["group"]: r["values"]["n"] for r in records if r["level"] == "site"}
    # a reading counts for the group its device belonged to when it arrived; a device unknown to the registry is
    # keyed by the attributes its first event carried, a removed one leaves every attribute-defined group
    assert sites == {"north": 3, "south": 1, "east": 1, "west": 1}


def test_the_dict_path_equals_the_columnar_path_and_where_filters() -> None:
    spec = """
aggregates:
  temps:
    stream: telemetry
    group_by: [site]
    where: "temp > 10"
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()", mean: "mean(temp * 2)", hi: "max(temp)", modes: "distinct(mode)", fw: "distinct(device.firmware)"}
"""
    reg = registry(("a", "north"), ("b", "south"))
    rng = np.random.default_rng(4)
    t = np.sort(T0 + rng.uniform(0, 30, 400))
    dev = rng.integers(0, 2, 400)
    temp = rng.normal(20, 10, 400)
    mode = np.array(["m1", "m2", "m3"], dtype=object)[rng.integers(0, 3, 400)]
    op1, _ = build_operator(spec, reg)
    one: list[dict[str, Any]] = []
    op1.process([dict(reading("ab"[d], ts, float(v)), mode=m) for d, ts, v, m in zip(dev, t, temp, mode, strict=True)], one)
    op1.flush(one)
    op2, _ = build_operator(spec, reg)
    two: list[dict[str, Any]] = []
    op2.process_columns(t, (dev, ["a", "b"]), {"temp": temp, "mode": mode, "device.firmware": np.array(["1.0.0"] * 400, dtype=object)}, two)
    op2.flush(two)
    assert one == two
    kept = temp > 10
    assert sum(r["values"]["n"] for r in one if r["level"] == "device") == int(kept.sum())
    assert all(r["values"]["fw"] == 1 for r in one)


def test_engine_closes_windows_on_the_source_watermark_and_feeds_rules() -> None:
    plan = compile_yaml(HEADER.replace("time: ts,", "time: ts, lateness: 2s,") + TUMBLING)
    engine = Engine(plan, registry=registry(("a", "north")))
    first = engine.push([{"device": "a", "ts": T0 + s, "temp": 1.0} for s in range(11)])
    assert [r for r in first if r["kind"] == "aggregate"] == []  # watermark 10 - 2 = 8 < 10
    second = engine.push([{"device": "a", "ts": T0 + 12, "temp": 1.0}])
    assert sorted((r["level"], r["values"]["n"]) for r in second if r["kind"] == "aggregate") == [
        ("device", 10), ("site", 10)]
    rest = engine.finish()
    assert sorted((r["level"], r["window_start"] - T0) for r in rest if r["kind"] == "aggregate") == [
        ("device", 10.0), ("site", 10.0)]


def test_allowed_lateness_is_read_from_the_source_config() -> None:
    plan = {"segments": [{"operators": [{"kind": "source", "name": "s", "config": {"allowed_lateness": "1m"}},
                                        {"kind": "source", "name": "other", "config": {}}]}]}
    assert allowed_lateness(plan, "s") == 60.0
    assert allowed_lateness(plan, "other") == 0.0 and allowed_lateness(plan, "missing") == 0.0
    assert allowed_lateness(None, "s") == 0.0 and allowed_lateness(plan, None) == 0.0


@pytest.mark.parametrize("kind", ["tumbling: 10s", "session: 3s", "sliding: 5s", "hopping: 10s, every: 5s"])
def test_every_window_kind_emits_each_window_exactly_once_when_closed_step_by_step(kind: str) -> None:
    spec = f"""
aggregates:
  w:
    stream: telemetry
    per_device: true
    window: {{{kind}}}
    compute: {{n: "count()"}}
"""
    reg = registry(("a", "north"), ("b", "north"))
    events = [reading(d, T0 + s * 0.7) for s in range(60) for d in "ab" if not (20 <= s < 30 and d == "a")]
    stepwise_op, ctx = build_operator(spec, reg)
    stepwise: list[dict[str, Any]] = []
    for i in range(0, len(events), 7):
        stepwise_op.process(events[i:i + 7], stepwise)
        stepwise += close(stepwise_op, ctx, events[i:i + 7][-1]["ts"] - 1.0)
    stepwise_op.flush(stepwise)
    at_once_op, _ = build_operator(spec, reg)
    at_once: list[dict[str, Any]] = []
    at_once_op.process(events, at_once)
    at_once_op.flush(at_once)
    key = lambda r: (r["level"], r["device"] or "", r["window_start"], r["window_end"])
    assert sorted(map(key, stepwise)) == sorted(map(key, at_once))
    assert all(r["revision"] == 0 for r in stepwise)
    device = [r for r in at_once if r["level"] == "device"]
    if kind.startswith("sliding"):
        assert len(device) == len(events)
    else:
        assert sum(r["values"]["n"] for r in device) == len(events) * (2 if kind.startswith("hopping") else 1)
