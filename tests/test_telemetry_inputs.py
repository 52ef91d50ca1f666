"""Awkward input for the aggregate operator: unvectorizable expressions, odd values, errors, empty groups (issue 4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.runtime.operators import TIME_KEY

from .test_telemetry_late import close, reading, registry
from .test_telemetry_oracle import T0, build_operator


def run(spec: str, events: list[dict[str, Any]], reg: DeviceRegistry | None = None) -> list[dict[str, Any]]:
    op, _ = build_operator(spec, reg or registry(("a", "north"), ("b", "south")))
    records: list[dict[str, Any]] = []
    op.process(events, records)
    op.flush(records)
    return records


def test_unvectorizable_where_and_arguments_fall_back_to_row_at_a_time() -> None:
    spec = """
aggregates:
  w:
    stream: telemetry
    where: "startswith(mode, 'a')"
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()", size: "sum(len(mode))", odd: "max(100 / (temp - 50))"}
"""
    events = [dict(reading("a", T0 + i, 50.0 + i), mode=m) for i, m in enumerate(["auto", "manual", "away", "a"])]
    events.append(dict(reading("a", T0 + 5, 1.0), mode=None))  # the condition cannot be evaluated: not selected
    (device,) = [r for r in run(spec, events) if r["level"] == "device"]
    # "auto" (temp 50: 100/0 is null), "away" (temp 52), "a" (temp 53)
    assert device["values"] == {"n": 3, "size": 9.0, "odd": 50.0}


def test_an_argument_that_fails_at_run_time_counts_as_missing() -> None:
    spec = """
aggregates:
  w:
    stream: telemetry
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()", size: "count(len(mode))", top: "max(len(mode))"}
"""
    events = [dict(reading("a", T0, 1.0), mode="abc"), dict(reading("a", T0 + 1, 1.0), mode=7)]
    (device,) = [r for r in run(spec, events) if r["level"] == "device"]
    assert device["values"] == {"n": 2, "size": 1, "top": 3.0}


def test_columnar_where_and_columnar_late_records_and_missing_columns() -> None:
    spec = """
aggregates:
  w:
    stream: telemetry
    where: "temp > 0"
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()", m: "mean(temp)", modes: "distinct(mode)", top: "max(len(mode))"}
"""
    op, ctx = build_operator(spec, registry(("a", "north")))
    records: list[dict[str, Any]] = []
    op.process_columns(np.array([T0, T0 + 1, T0 + 2]), ["a", "a", "a"], {"temp": np.array([1.0, -1.0, 3.0])}, records)
    records += close(op, ctx, T0 + 10)
    op.process_columns(np.array([T0 + 3]), ["a"], {"temp": np.array([9.0])}, records)
    late = [r for r in records if r["kind"] == "late"]
    assert [r["event"] for r in late] == [{"device": "a", "time": T0 + 3, "temp": 9.0, "mode": None, "len(mode)": None}]
    (device,) = [r for r in records if r["kind"] == "aggregate" and r["level"] == "device"]
    # no 'mode' column was given: distinct() sees nothing, len(mode) cannot run on columns and has no rows to fall
    # back on, so both are missing
    assert device["values"] == {"n": 2, "m": 2.0, "modes": 0, "top": None}


def test_mixed_and_unhashable_values_in_untyped_fields() -> None:
    spec = """
aggregates:
  w:
    stream: telemetry
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()", m: "mean(extra)", kinds: "distinct(extra)", deep: "max(payload.level)"}
"""
    header_fields = "fields: {temp: number, mode: string, extra: any, payload: any}"
    values: list[Any] = [1, "x", [1, 2], [1, 2], None, 3.0, True]
    events = [dict(reading("a", T0 + i, 1.0), extra=v, payload={"level": i} if i % 2 else "flat")
              for i, v in enumerate(values)]
    from . import test_telemetry_oracle as oracle
    from .test_telemetry_oracle import HEADER

    original = oracle.HEADER
    oracle.HEADER = HEADER.replace("fields: {temp: number, mode: string}", header_fields)
    try:
        records = run(spec, events)
    finally:
        oracle.HEADER = original
    (device,) = [r for r in records if r["level"] == "device"]
    # numbers only for mean (booleans are not numbers); distinct over everything present, lists compared by their
    # text, and true counts as equal to 1 (as in Python)
    assert device["values"] == {"n": 7, "m": 2.0, "kinds": 4, "deep": 5.0}


def test_a_group_nobody_belongs_to_yields_only_device_records() -> None:
    spec = """
groups:
  nobody: {where: "site == 'mars'"}
aggregates:
  w:
    stream: telemetry
    group: nobody
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()"}
"""
    records = run(spec, [reading("a", T0), reading("b", T0 + 1)])
    assert sorted((r["level"], r["device"], r["group"]) for r in records) == [
        ("device", "a", None), ("device", "b", None)]


def test_only_devices_of_the_group_are_counted_and_empty_batches_do_nothing() -> None:
    spec = """
groups:
  northern: {where: "site == 'north'"}
aggregates:
  w:
    stream: telemetry
    group: northern
    window: {tumbling: 10s}
    compute: {n: "count()"}
"""
    op, _ctx = build_operator(spec, registry(("a", "north"), ("b", "south")))
    records: list[dict[str, Any]] = []
    assert op.process([], records) == []
    op.process_columns(np.zeros(0), [], {"temp": np.zeros(0)}, records)
    op.process([reading("a", T0), reading("b", T0)], records)
    op.flush(records)
    assert [(r["group"], r["values"]["n"]) for r in records] == [("northern", 1)]


def test_sessions_and_sliding_windows_forget_state_once_beyond_lateness() -> None:
    for window in ("session: 2s", "sliding: 2s"):
        op, ctx = build_operator(f"""
aggregates:
  w:
    stream: telemetry
    per_device: true
    window: {{{window}}}
    compute: {{n: "count()"}}
""", registry(("a", "north")), allowed=5.0)
        records: list[dict[str, Any]] = []
        op.process([reading("a", T0), reading("a", T0 + 1)], records)
        close(op, ctx, T0 + 4)
        op.process([reading("a", T0 + 0.5)], records)  # within lateness: a revision
        assert 1 in {r["revision"] for r in close(op, ctx, T0 + 4.5) if r["level"] == "device"}
        assert close(op, ctx, T0 + 30) == []  # everything is final and forgotten
        assert op.snapshot()["emitted"] == [] and op.snapshot()["sessions"] == [] and "rows" not in op.snapshot()
        op.process([reading("a", T0 + 0.7)], records)
        assert records[-1]["kind"] == "late"


def test_sliding_window_late_reading_that_touches_no_emitted_window() -> None:
    op, ctx = build_operator("""
aggregates:
  w:
    stream: telemetry
    window: {sliding: 1s}
    compute: {n: "count()"}
""", registry(("a", "north")), allowed=30.0)
    records: list[dict[str, Any]] = []
    op.process([reading("a", T0), reading("a", T0 + 10)], records)
    close(op, ctx, T0 + 10)
    op.process([reading("a", T0 + 20)], records)  # not late: its window is not due yet
    assert close(op, ctx, T0 + 10) == []
    op.process([reading("a", T0 + 5)], records)  # late within lateness; no emitted window contains it
    assert [(r["window_end"] - T0, r["revision"]) for r in close(op, ctx, T0 + 11)] == [(5.0, 0)]


def test_a_registry_update_after_a_columnar_batch_is_seen_by_the_next_one() -> None:
    reg = registry(("a", "north"), ("b", "north"))
    op, _ctx = build_operator("""
aggregates:
  w:
    stream: telemetry
    group_by: [site]
    window: {tumbling: 10s}
    compute: {n: "count()"}
""", reg)
    names = ["a", "b"]
    records: list[dict[str, Any]] = []
    op.process_columns(np.array([T0, T0]), (np.array([0, 1]), names), {"temp": np.ones(2)}, records)
    reg.update("b", site="south")
    op.process_columns(np.array([T0 + 1, T0 + 1]), (np.array([0, 1]), names), {"temp": np.ones(2)}, records)
    op.flush(records)
    assert sorted((r["group"], r["values"]["n"]) for r in records) == [("north", 3), ("south", 1)]


def test_events_passed_on_carry_values_and_window_fields() -> None:
    from .conftest import compile_yaml
    from .test_telemetry_oracle import HEADER

    plan = compile_yaml(HEADER + """
aggregates:
  w:
    stream: telemetry
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()"}
rules:
  - {when: w, if: "level == 'device'", do: [{alert: "{device} sent {n}"}]}
""")
    from iot_dsl import Engine

    engine = Engine(plan, registry=DeviceRegistry([Device("a", "boiler", "n", "g", 0.0, 0.0, "1", {})]))
    engine.push([{"device": "a", "ts": T0 + 1, "temp": 1.0}])
    alerts = [r for r in engine.finish() if r["kind"] == "alert"]
    assert [a["message"] for a in alerts] == ["a sent 1"]
    assert TIME_KEY not in alerts[0]
