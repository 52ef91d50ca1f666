"""Tumbling windows through dense (device x arrival) blocks: same records as the row buffer, pandas agrees (issue 4).

The aggregate operator keeps open tumbling windows as dense blocks when every statistic can be computed from
them; closing reduces the blocks along axis 1. These tests check that route against pandas and against the
operator's general row-buffer route (the same operator with the blocks switched off) on the same input, and
that it steps aside -- with unchanged results -- whenever it cannot apply: membership changes inside a
window, late data that revises a window, a device far busier than the others, a restored snapshot.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.runtime.aggregates import AggregateOperator, _plain_list, _row_maker
from iot_dsl.runtime.groups import Level, Membership
from iot_dsl.runtime.operators import TIME_KEY
from iot_dsl.runtime.telemetry_stats import (
    BlockColumn,
    Segments,
    StatSpec,
    block_stats,
    compute_stats,
    rollup_stats,
)
from iot_dsl.runtime.windows import DenseWindows, WindowSpec, grid_index, grid_index_of

from .test_telemetry_oracle import (
    RTOL,
    T0,
    Fleet,
    _window_frame,
    assert_equal_stats,
    build_operator,
    by_key,
    make_fleet,
    pandas_stats,
)

BLOCK_STATS = {
    "n": "count()", "present": "count(temp)", "total": "sum(temp)", "mean": "mean(temp)", "low": "min(temp)",
    "high": "max(temp)", "var": "var(temp)", "sd": "std(temp)", "p50": "p50(temp)", "p95": "p95(temp)",
    "p99": "p99(temp)", "med": "median(temp)", "p999": "percentile(temp, 99.9)",
}
COMPUTE = ", ".join(f'{k}: "{v}"' for k, v in BLOCK_STATS.items())
PLANT = f"""
groups:
  plant: {{hierarchy: [site, type]}}
aggregates:
  stats:
    stream: telemetry
    group: plant
    per_device: true
    window: {{tumbling: 20s}}
    compute: {{{COMPUTE}}}
"""


def pair(yaml_text: str, registry: DeviceRegistry, allowed: float = 0.0) -> tuple[AggregateOperator, AggregateOperator]:
    """The same aggregate twice: with dense blocks (as built) and with them switched off (row buffer only)."""
    dense, _ = build_operator(yaml_text, registry, allowed)
    rows, _ = build_operator(yaml_text, registry, allowed)
    assert dense._dense is not None
    rows._dense = None
    return dense, rows


def push(op: AggregateOperator, fleet: Fleet, lo: int, hi: int, records: list[dict[str, Any]]) -> None:
    op.process_columns(fleet.t[lo:hi], (fleet.dev[lo:hi], fleet.ids), {"temp": fleet.temp[lo:hi]}, records)


def run(op: AggregateOperator, fleet: Fleet, batch: float, between: Callable[[int], None] | None = None,
        watermark_lag: float | None = None) -> list[dict[str, Any]]:
    """Feed the fleet in event-time batches (optionally closing up to ``t - watermark_lag`` after each); flush."""
    records: list[dict[str, Any]] = []
    edges = np.searchsorted(fleet.t, np.arange(fleet.t[0], fleet.t[-1] + batch, batch), side="left")
    edges = np.unique(np.append(edges, fleet.t.size))
    for number, (lo, hi) in enumerate(itertools.pairwise(edges)):
        if between is not None:
            between(number)
        push(op, fleet, lo, hi, records)
        if watermark_lag is not None:
            op._close(float(fleet.t[hi - 1]) - watermark_lag, records)
    op.flush(records)
    return records


def assert_same_records(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same records in the same order; statistics equal to a relative 1e-12 (summation order may differ)."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert {k: v for k, v in a.items() if k != "values"} == {k: v for k, v in b.items() if k != "values"}
        if a["kind"] != "aggregate":
            continue
        assert a["values"].keys() == b["values"].keys()
        for name, value in a["values"].items():
            other = b["values"][name]
            if value is None or other is None:
                assert value is None and other is None, (name, value, other)
            else:
                assert math.isclose(value, other, rel_tol=1e-12, abs_tol=1e-12), (name, value, other)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return make_fleet(1_500, 65, seed=23, gaps=0.05, missing=0.05)


# --------------------------------------------------------------------------------------------- against pandas
def test_dense_blocks_match_pandas_per_device_and_per_group(fleet: Fleet) -> None:
    op, _ = build_operator(PLANT, fleet.registry)
    records = run(op, fleet, 1.0)
    frame = _window_frame(fleet.frame, 20.0)
    assert frame["start"].nunique() == 5  # the first and last windows are partial
    compared = assert_equal_stats(by_key(records, "device"), pandas_stats(frame, ["device", "start"]), BLOCK_STATS)
    assert compared >= len(BLOCK_STATS) * 1_500 * 4
    assert_equal_stats(by_key(records, "site"), pandas_stats(frame, ["site", "start"]), BLOCK_STATS)
    frame["site_type"] = frame["site"] + "/" + frame["type"]
    assert_equal_stats(by_key(records, "type"), pandas_stats(frame, ["site_type", "start"]), BLOCK_STATS)


@pytest.mark.parametrize("batch", [0.25, 1.0, 7.0, 45.0])
def test_dense_blocks_give_the_row_buffer_records_whatever_the_batching(fleet: Fleet, batch: float) -> None:
    dense, rows = pair(PLANT, fleet.registry)
    assert_same_records(run(dense, fleet, batch, watermark_lag=2.0), run(rows, fleet, batch, watermark_lag=2.0))
    assert not dense._dense.blocks and not dense._chunks  # type: ignore[union-attr]


def test_dict_events_and_columns_give_the_same_records(fleet: Fleet) -> None:
    by_columns, _ = build_operator(PLANT, fleet.registry)
    by_events, _ = build_operator(PLANT, fleet.registry)
    expected = run(by_columns, fleet, 1.0, watermark_lag=1.0)
    records: list[dict[str, Any]] = []
    edges = np.unique(np.append(np.searchsorted(fleet.t, np.arange(fleet.t[0], fleet.t[-1] + 1, 1.0)), fleet.t.size))
    for lo, hi in itertools.pairwise(edges):
        batch = [{"device": fleet.ids[d], TIME_KEY: t, "temp": None if math.isnan(x) else x}
                 for d, t, x in zip(fleet.dev[lo:hi].tolist(), fleet.t[lo:hi].tolist(), fleet.temp[lo:hi].tolist(),
                                    strict=True)]
        by_events.process(batch, records)
        by_events._close(float(fleet.t[hi - 1]) - 1.0, records)
    by_events.flush(records)
    # devices are numbered in order of first sight here (by the id table there): sums may differ in the last bit
    assert_same_records(records, expected)


def test_groups_with_non_members_and_no_device_level(fleet: Fleet) -> None:
    text = f"""
groups:
  hot: {{by: [type], where: "type == 'boiler' or type == 'pump'"}}
aggregates:
  stats:
    stream: telemetry
    group: hot
    window: {{tumbling: 20s}}
    compute: {{{COMPUTE}}}
"""
    dense, rows = pair(text, fleet.registry)
    got = run(dense, fleet, 3.0, watermark_lag=0.5)
    assert_same_records(got, run(rows, fleet, 3.0, watermark_lag=0.5))
    frame = _window_frame(fleet.frame, 20.0)
    frame = frame[frame["type"].isin(["boiler", "pump"])]
    assert_equal_stats(by_key(got, "hot"), pandas_stats(frame, ["type", "start"]), BLOCK_STATS)
    # closing a window drops the rows of devices in no group, even those of windows still open
    op, _ = build_operator(text, fleet.registry)
    members = [i for i, d in enumerate(fleet.ids) if fleet.registry.get(d).type in ("boiler", "pump")][:3]
    op.process_columns(T0 + np.array([10.0, 10.5, 25.0, 25.5, 26.0, 26.5]), (np.arange(6), fleet.ids),
                       {"temp": np.arange(6.0)}, [])
    op.process_columns(T0 + np.array([27.0, 27.5, 28.0]), (np.array(members), fleet.ids), {"temp": np.ones(3)}, [])
    records: list[dict[str, Any]] = []
    op._close(T0 + 21.0, records)
    assert records and all(r["window_start"] == T0 for r in records)
    kept = sorted(fleet.ids[i] for c in op._chunks for i in c["dev"].tolist())
    expected = [d for d in fleet.ids[2:6] if fleet.registry.get(d).type in ("boiler", "pump")]
    assert kept == sorted(expected + [fleet.ids[i] for i in members])


def test_per_device_level_with_devices_outside_every_group() -> None:
    registry = DeviceRegistry([
        Device("a", "pump", "north", "l1", 0.0, 0.0, "1.0", {}),
        Device("b", "pump", "north", "l1", 0.0, 0.0, "1.0", {}),
        Device("c", "fan", "south", "l1", 0.0, 0.0, "1.0", {}),
    ])
    text = f"""
groups:
  pumps: {{by: [type], where: "type == 'pump'"}}
aggregates:
  stats:
    stream: telemetry
    group: pumps
    per_device: true
    window: {{tumbling: 10s}}
    compute: {{{COMPUTE}}}
"""
    dense, rows = pair(text, registry)
    t = T0 + np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 4.5])
    dev = np.array([0, 1, 2, 0, 2, 1, 0])
    temp = np.array([1.0, 2.0, 3.0, np.nan, 5.0, 6.0, 7.0])
    out = []
    for op in (dense, rows):
        records: list[dict[str, Any]] = []
        op.process_columns(t, (dev, ["a", "b", "c"]), {"temp": temp}, records)
        op.flush(records)
        out.append(records)
    assert_same_records(out[0], out[1])
    values = {(r["level"], r["device"] or r["group"]): r["values"] for r in out[0]}
    assert values[("pumps", "pump")]["n"] == 5 and values[("pumps", "pump")]["present"] == 4
    assert values[("pumps", "pump")]["mean"] == pytest.approx(4.0, rel=RTOL)
    assert values[("device", "c")]["n"] == 2 and ("pumps", "fan") not in values
    assert values[("device", "a")]["low"] == 1.0 and values[("device", "a")]["high"] == 7.0


# ---------------------------------------------------------------------------- where the blocks step aside
def test_membership_change_inside_a_window_keys_rows_as_they_arrived() -> None:
    fleet = make_fleet(300, 45, seed=5)
    registries = [DeviceRegistry(list(fleet.registry)) for _ in range(2)]
    ops = []
    for registry in registries:
        op, _ = build_operator(PLANT, registry)
        ops.append(op)
    ops[1]._dense = None
    outputs = []
    for op, registry in zip(ops, registries, strict=True):
        def move(number: int, registry: DeviceRegistry = registry) -> None:
            if number == 25:  # inside the second window: two devices change site
                registry.update("d00001", site="moved")
                registry.update("d00002", site="moved")
        outputs.append(run(op, fleet, 1.0, between=move, watermark_lag=1.0))
    assert_same_records(outputs[0], outputs[1])
    moved = [r for r in outputs[0] if r["level"] == "site" and r["group"] == "moved"]
    assert [r["window_start"] for r in moved] == [T0 + 20, T0 + 40]


def test_registry_change_that_moves_nobody_keeps_the_blocks(fleet: Fleet) -> None:
    registry = DeviceRegistry(list(fleet.registry))
    op, _ = build_operator(PLANT, registry)
    records: list[dict[str, Any]] = []
    push(op, fleet, 0, 2_000, records)
    generation = op.membership.generation
    registry.update("d00003", firmware="9.9.9")  # not a grouping attribute
    push(op, fleet, 2_000, 4_000, records)
    assert op.membership.generation == generation
    assert all(block.usable for block in op._dense.blocks.values())  # type: ignore[union-attr]


def test_late_data_revisions_go_through_the_row_buffer(fleet: Fleet) -> None:
    dense, rows = pair(PLANT, fleet.registry, allowed=30.0)
    out = []
    for op in (dense, rows):
        records: list[dict[str, Any]] = []
        half = fleet.t.size // 2
        late = np.flatnonzero(fleet.t[:half] < T0 + 20)[-50:]  # readings of the first window, held back
        keep = np.setdiff1d(np.arange(half), late)
        op.process_columns(fleet.t[keep], (fleet.dev[keep], fleet.ids), {"temp": fleet.temp[keep]}, records)
        op._close(T0 + 25.0, records)
        op.process_columns(fleet.t[late], (fleet.dev[late], fleet.ids), {"temp": fleet.temp[late]}, records)
        op.process_columns(fleet.t[half:], (fleet.dev[half:], fleet.ids), {"temp": fleet.temp[half:]}, records)
        op._close(T0 + 45.0, records)
        op.flush(records)
        out.append(records)
    assert_same_records(out[0], out[1])
    assert any(r["revision"] == 1 for r in out[0])


def test_a_device_far_busier_than_the_others_falls_back_to_the_rows() -> None:
    registry = DeviceRegistry(Device(f"d{i}", "pump", "north", "l1", 0.0, 0.0, "1.0", {}) for i in range(20))
    text = f"""
aggregates:
  stats:
    stream: telemetry
    group_by: [type]
    per_device: true
    window: {{tumbling: 1m}}
    compute: {{{COMPUTE}}}
"""
    dense, rows = pair(text, registry)
    rng = np.random.default_rng(4)
    t = T0 + np.sort(rng.uniform(0, 59, 20_000))
    dev = np.where(rng.random(t.size) < 0.99, 0, rng.integers(1, 20, t.size))
    temp = rng.normal(0, 1, t.size)
    out = []
    for op in (dense, rows):
        records: list[dict[str, Any]] = []
        for lo in range(0, t.size, 1_000):
            op.process_columns(t[lo : lo + 1_000], (dev[lo : lo + 1_000], [f"d{i}" for i in range(20)]),
                               {"temp": temp[lo : lo + 1_000]}, records)
        if op is dense:
            assert not dense._dense.blocks[int(T0 // 60)].usable  # type: ignore[union-attr]
        op.flush(records)
        out.append(records)
    assert_same_records(out[0], out[1])
    assert next(r for r in out[0] if r["device"] == "d0")["values"]["n"] == int((dev == 0).sum())


def test_snapshot_restore_inside_a_window_rebuilds_the_blocks(fleet: Fleet) -> None:
    dense, rows = pair(PLANT, fleet.registry, allowed=5.0)
    out = []
    for op in (dense, rows):
        records: list[dict[str, Any]] = []
        third = fleet.t.size // 3
        push(op, fleet, 0, third, records)
        op._close(float(fleet.t[third - 1]) - 1.0, records)
        state = op.snapshot()
        fresh, _ = build_operator(PLANT, fleet.registry, 5.0)
        if op is rows:
            fresh._dense = None
        fresh.restore(state)
        push(fresh, fleet, third, fleet.t.size, records)
        fresh.flush(records)
        out.append(records)
    assert_same_records(out[0], out[1])
    assert len({r["window_start"] for r in out[0]}) == 5


def test_statistics_the_blocks_cannot_compute_use_the_rows() -> None:
    registry = DeviceRegistry([Device("a", "pump", "north", "l1", 0.0, 0.0, "1.0", {})])
    op, _ = build_operator("""
aggregates:
  stats:
    stream: telemetry
    per_device: true
    window: {tumbling: 10s}
    compute: {first: "first(temp)", n: "count()"}
""", registry)
    assert op._dense is None
    only_count, _ = build_operator("""
aggregates:
  stats:
    stream: telemetry
    window: {tumbling: 10s}
    compute: {n: "count()"}
""", registry)
    records: list[dict[str, Any]] = []
    only_count.process_columns(T0 + np.array([1.0, 2.0, 12.0]), (np.array([0, 0, 0]), ["a"]), {}, records)
    only_count.flush(records)
    assert [r["values"] for r in records] == [{"n": 2}, {"n": 1}]


# ------------------------------------------------------------------------------------------------ the parts
def test_grid_index_of_agrees_with_grid_index() -> None:
    rng = np.random.default_rng(0)
    t = np.concatenate([rng.uniform(-1e9, 1e9, 2_000), np.arange(-50, 50) * 0.1, np.arange(-5, 5) * 60.0])
    for step in (60.0, 0.1, 0.3, 7.0):
        assert grid_index(t, step).tolist() == [grid_index_of(x, step) for x in t.tolist()]
    assert grid_index_of(0.3, 0.1) == grid_index(np.array([0.3]), 0.1)[0] == 2  # 3 * 0.1 > 0.3
    assert grid_index_of(-0.2, 0.1) == -2
    with np.errstate(invalid="ignore"):  # not a time any reading has; still the same answer
        assert grid_index_of(math.inf, 60.0) == int(grid_index(np.array([math.inf]), 60.0)[0])


@pytest.mark.parametrize("config", [{"tumbling": "1m"}, {"hopping": "1m", "every": "20s"}, {"session": "30s"},
                                    {"sliding": "30s"}])
def test_last_end_at_agrees_with_last_end(config: dict[str, str]) -> None:
    window = WindowSpec.from_config(config)
    t = T0 + np.array([0.0, 0.5, 19.999, 20.0, 59.999, 60.0, 61.25])
    assert window.last_end(t).tolist() == [window.last_end_at(x) for x in t.tolist()]


def test_dense_windows_keep_arrival_order_per_device() -> None:
    windows = DenseWindows(["x"])
    windows.add(7, np.zeros(0, dtype=np.int64), {"x": np.zeros(0)}, 0)
    assert not windows.blocks
    windows.add(7, np.array([2, 0, 2, 2, 5]), {"x": np.array([1.0, 2.0, 3.0, 4.0, 5.0])}, 0)
    windows.add(7, np.array([0, 2]), {"x": np.array([6.0, 7.0])}, 0)
    block = windows.blocks[7]
    assert block.counts[:6].tolist() == [2, 0, 4, 0, 0, 1]
    active = block.active()
    assert active.tolist() == [0, 2, 5]
    cells = block.column("x", active)
    assert cells.shape == (3, 4)
    assert np.array_equal(cells, [[2, 6, np.nan, np.nan], [1, 3, 4, 7], [5] + [np.nan] * 3], equal_nan=True)
    cells[1, 0] = -1.0  # the caller owns the column: the block keeps its readings
    assert block.column("x", active)[1].tolist() == [1, 3, 4, 7]
    prefix = block.column("x", np.array([0, 1, 2]))
    assert prefix.shape == (3, 4) and np.isnan(prefix[1]).all()
    # a window keyed under another membership generation is not usable any more
    windows.add(7, np.array([1]), {"x": np.array([8.0])}, 1)
    assert not windows.blocks[7].usable
    windows.add(7, np.array([1]), {"x": np.array([9.0])}, 1)
    assert windows.blocks[7].rows == 9
    assert windows.pop(7) is block and windows.width_hint == 4 and not windows.blocks
    assert windows.ending_by(0.0, WindowSpec.from_config({"tumbling": "1s"})) == []


def test_block_statistics_match_segment_statistics() -> None:
    rng = np.random.default_rng(2)
    rows = [rng.normal(10, 3, n) for n in (1, 2, 5, 40, 3000)]
    rows[2][[1, 3]] = np.nan
    rows.append(np.array([np.nan, np.nan]))  # nothing present
    width = max(r.size for r in rows)
    block = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        block[i, : r.size] = r
    counts = np.array([r.size for r in rows])
    specs = [StatSpec("n", "count"), StatSpec("k", "count", "x"), StatSpec("s", "sum", "x"), StatSpec("m", "mean", "x"),
             StatSpec("lo", "min", "x"), StatSpec("hi", "max", "x"), StatSpec("v", "var", "x"),
             StatSpec("sd", "std", "x"), StatSpec("med", "median", "x", 0.5), StatSpec("p", "percentile", "x", 0.95),
             StatSpec("p0", "percentile", "x", 0.0), StatSpec("p1", "percentile", "x", 1.0)]
    flat = np.concatenate(rows)
    segments = Segments(np.cumsum(counts) - counts, counts, np.zeros(flat.size), {"x": flat})
    expected = compute_stats(specs, segments)
    got = block_stats(specs, {"x": BlockColumn(block)}, counts)
    for spec in specs:
        assert np.allclose(got[spec.name], expected[spec.name], rtol=1e-12, equal_nan=True), spec.name
    # groups: rows 0, 2 and 5 in slot 3; rows 1 and 4 in slot 0; row 3 in no group
    slots = np.array([3, 0, 3, -1, 0, 3])
    groups, values = rollup_stats(specs, {"x": BlockColumn(block)}, counts, slots)
    assert groups.tolist() == [0, 3]
    for slot, members in ((0, [1, 4]), (3, [0, 2, 5])):
        part = np.concatenate([rows[i] for i in members])
        seg = Segments(np.array([0]), np.array([part.size]), np.zeros(part.size), {"x": part})
        one = compute_stats(specs, seg)
        for spec in specs:
            assert np.allclose(values[spec.name][groups.tolist().index(slot)], one[spec.name][0], rtol=1e-12,
                               equal_nan=True), (slot, spec.name)
    empty_groups, empty = rollup_stats(specs, {"x": BlockColumn(block)}, counts, np.full(6, -1))
    assert empty_groups.size == 0 and empty == {}


def test_membership_generation_moves_only_when_a_known_device_changes_group() -> None:
    attributes = {"a": {"type": "pump"}, "b": {"type": "fan"}}
    version = [0]
    membership = Membership([Level("type", lambda attrs: attrs.get("type"))], lambda d: attributes.get(d, {}),
                            version=lambda: version[0])
    assert membership.device_indices(["a", "b", "a"]).tolist() == [0, 1, 0]
    version[0] += 1
    membership.refresh()
    assert membership.generation == 0
    attributes["b"] = {"type": "pump"}
    version[0] += 1
    assert membership.device_indices(["b"]).tolist() == [1]
    assert membership.generation == 1
    assert membership.slots(0, np.array([0, 1])).tolist() == [0, 0]


@pytest.mark.parametrize("width", range(1, 9))
def test_values_rows_for_any_number_of_statistics(width: int) -> None:
    names = tuple(f"s{i}" for i in range(width))
    make = _row_maker(names)
    assert list(map(make, *[[i, i + 10] for i in range(width)])) == [
        {f"s{i}": i for i in range(width)}, {f"s{i}": i + 10 for i in range(width)}]


def test_plain_lists_are_json_values() -> None:
    assert _plain_list(np.array([1.5, np.nan])) == [1.5, None]
    assert _plain_list(np.array([3, 4], dtype=np.int64)) == [3, 4]
    assert _plain_list(np.array([True, False])) == [1, 0]
    assert _plain_list(np.array([np.float32(2.0), None, "x"], dtype=object)) == [2.0, None, "x"]
