"""Closing tumbling windows from dense blocks: the shortcuts the close takes keep the results exact (issue 4).

A closed window's block is sorted row by row in place (percentiles and extremes read the sorted rows), counts
come from the block's fill when nothing is missing, group percentiles select per group, the block's memory is
reused by the next window, buffered rows get their device indices and group slots only when read (or before
the id table or the membership changes), records are copies of one key-sharing prototype, and they come out in
key order whatever order the devices were first seen in.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.runtime.aggregates import _IsoTimes, _key_sharing
from iot_dsl.runtime.clock import format_time
from iot_dsl.runtime.groups import Level, Membership
from iot_dsl.runtime.telemetry_stats import BlockColumn, Segments, StatSpec, block_stats, compute_stats, rollup_stats
from iot_dsl.runtime.windows import DenseWindows

from .test_telemetry_dense import assert_same_records
from .test_telemetry_oracle import T0, build_operator

SPECS = [StatSpec("n", "count"), StatSpec("k", "count", "x"), StatSpec("s", "sum", "x"), StatSpec("m", "mean", "x"),
         StatSpec("lo", "min", "x"), StatSpec("hi", "max", "x"), StatSpec("v", "var", "x"), StatSpec("sd", "std", "x"),
         StatSpec("med", "median", "x", 0.5), StatSpec("p95", "percentile", "x", 0.95),
         StatSpec("p0", "percentile", "x", 0.0), StatSpec("p1", "percentile", "x", 1.0)]
AGGREGATE = """
aggregates:
  stats:
    stream: telemetry
    group_by: [type]
    per_device: true
    window: {tumbling: 10s}
    compute: {n: "count()", mean: "mean(temp)", low: "min(temp)", high: "max(temp)", sd: "std(temp)",
              p95: "p95(temp)"}
"""


def _block(counts: list[int], missing: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of readings left-aligned in a NaN-padded block (some readings missing: NaN), and the counts."""
    rng = np.random.default_rng(seed)
    block = np.full((len(counts), max(counts)), np.nan)
    for i, count in enumerate(counts):
        block[i, :count] = np.round(rng.normal(20, 4, count), 3)
    block[(rng.random(block.shape) < missing) & ~np.isnan(block)] = np.nan
    return block, np.array(counts, dtype=np.int64)


@pytest.mark.parametrize("missing", [0.0, 0.1])
def test_sorted_block_with_fill_counts_gives_the_plain_block_statistics(missing: float) -> None:
    block, counts = _block([1, 2, 7, 30, 30, 29, 3, 0], missing, seed=3)
    plain = block_stats(SPECS, {"x": BlockColumn(block.copy())}, counts)
    sorted_cells = block.copy()
    column = BlockColumn(sorted_cells, counts, sort=True)
    got = block_stats(SPECS, {"x": column}, counts)
    for spec in SPECS:
        assert np.allclose(got[spec.name], plain[spec.name], rtol=1e-12, equal_nan=True), spec.name
    assert np.array_equal(sorted_cells, np.sort(block, axis=1), equal_nan=True)  # sorted in place
    present = (~np.isnan(block)).sum(axis=1)
    assert got["k"].tolist() == present.tolist()
    assert (present == counts).all() == (missing == 0.0)


def test_group_percentiles_of_large_groups_with_and_without_present_values() -> None:
    block, counts = _block([800] * 12, 0.05, seed=4)
    block[[1, 4, 7]] = np.nan  # group 2 (rows 1, 4 and 7): 2,400 cells, nothing present
    slots = np.array([0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 1, 1])
    groups, values = rollup_stats(SPECS, {"x": BlockColumn(block, counts, sort=True)}, counts, slots)
    assert groups.tolist() == [0, 1, 2]
    for slot in (0, 1):
        part = block[slots == slot].ravel()
        one = compute_stats(SPECS, Segments(np.array([0]), np.array([part.size]), np.zeros(part.size), {"x": part}))
        for spec in SPECS:
            assert np.allclose(values[spec.name][slot], one[spec.name][0], rtol=1e-12), (slot, spec.name)
    assert values["n"][2] == 2_400 and values["k"][2] == 0
    assert all(np.isnan(values[name][2]) for name in ("m", "lo", "hi", "med", "p95", "p0", "p1"))


def test_a_closed_block_lends_its_memory_to_the_next_window() -> None:
    windows = DenseWindows(["x"])
    windows.add(1, np.array([0, 1, 1, 2]), {"x": np.array([1.0, 2.0, 3.0, 4.0])}, 0)
    first = windows.pop(1)
    cells = first.cells["x"]
    windows.recycle(first)
    assert first.cells == {} and windows.spare["x"] is cells
    windows.add(2, np.array([2, 0]), {"x": np.array([5.0, 6.0])}, 0)
    reused = windows.blocks[2].cells["x"]
    assert np.shares_memory(reused, cells) and reused.shape == cells.shape and not windows.spare
    assert np.array_equal(reused[0, :], [6.0, np.nan, 5.0], equal_nan=True)  # arrival x device
    assert np.isnan(reused[1:, :]).all()  # nothing of the previous window is left
    windows.recycle(windows.pop(2))
    assert windows.spare["x"] is cells  # the whole array again, not the view the block had
    windows.add(3, np.array([1]), {"x": np.array([7.0])}, 0)  # fewer cells: the front of the spare memory
    smaller = windows.blocks[3].cells["x"]
    assert np.shares_memory(smaller, cells) and smaller.shape == (4, 2) and smaller.flags.c_contiguous
    assert np.array_equal(windows.blocks[3].column("x", np.array([1])), [[7.0]])
    windows.recycle(windows.pop(3))
    windows.add(4, np.arange(5), {"x": np.arange(5.0)}, 0)  # more cells than the spare memory holds: new memory
    assert not np.shares_memory(windows.blocks[4].cells["x"], cells) and windows.blocks[4].cells["x"].shape == (4, 5)


def test_membership_calls_before_move_while_the_old_slots_are_in_place() -> None:
    attributes = {"a": {"type": "pump"}, "b": {"type": "fan"}}
    version = [0]
    seen: list[list[int]] = []
    membership = Membership([Level("type", lambda attrs: attrs.get("type"))], lambda d: attributes.get(d, {}),
                            version=lambda: version[0],
                            before_move=lambda: seen.append(membership.slots(0, np.array([0, 1])).tolist()))
    membership.device_indices(["a", "b"])
    attributes["c"] = {"type": "valve"}
    version[0] += 1
    membership.device_indices(["c"])  # a new device and a registry change that moves nobody
    assert seen == []
    attributes["b"] = {"type": "pump"}
    version[0] += 1
    membership.refresh()
    assert seen == [[0, 1]] and membership.slots(0, np.array([0, 1])).tolist() == [0, 0]


def _registry(ids: list[str]) -> DeviceRegistry:
    return DeviceRegistry(Device(d, "pump" if i % 2 else "fan", "north", "l1", 0.0, 0.0, "1.0", {})
                          for i, d in enumerate(ids))


def _readings(ids: list[str], step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = T0 + np.arange(0.0, 10.0, step)
    dev = np.arange(t.size) % len(ids)
    return t, dev, np.round(np.sin(np.arange(t.size)) * 10 + 20, 3)


def test_buffered_rows_keep_the_group_they_arrived_in() -> None:
    ids = ["a", "b", "c", "d"]
    registry = _registry(ids)
    op, _ = build_operator(AGGREGATE, registry)
    op._dense = None  # the row buffer closes the window
    t, dev, temp = _readings(ids, 0.25)
    half = t.size // 2
    records: list[dict[str, Any]] = []
    op.process_columns(t[:half], (dev[:half], ids), {"temp": temp[:half]}, records)
    assert all("slot0" not in chunk for chunk in op._chunks)  # not needed yet
    registry.update("a", type="valve")  # "a" was a fan: its readings so far stay with the fans
    op.process_columns(t[half:], (dev[half:], ids), {"temp": temp[half:]}, records)
    op.flush(records)
    counts = {r["group"]: r["values"]["n"] for r in records if r["level"] == "type"}
    before = int((dev[:half] == 0).sum())
    assert counts == {"fan": int((dev == 2).sum()) + before, "pump": int((dev % 2 == 1).sum()),
                      "valve": int((dev == 0).sum()) - before}


def test_records_come_out_in_key_order_whatever_the_order_of_first_sight() -> None:
    ids = [f"d{i}" for i in range(12)]
    out = []
    for dense in (True, False):
        op, _ = build_operator(AGGREGATE, _registry(ids))
        if not dense:
            op._dense = None
        t, dev, temp = _readings(ids, 0.05)
        seen = ids[::-1]  # codes index a table in reverse order: devices are numbered from the last id
        records: list[dict[str, Any]] = []
        op.process_columns(t, (len(ids) - 1 - dev, seen), {"temp": temp}, records)
        op.flush(records)
        out.append(records)
    assert_same_records(out[0], out[1])  # the row buffer sorts its output by key too
    groups = [(r["level"], r["group"]) for r in out[0] if r["level"] != "device"]
    assert groups == [("type", "fan"), ("type", "pump")]
    assert [r["device"] for r in out[0] if r["level"] == "device"] == sorted(ids)


def test_buffered_codes_keep_their_devices_when_the_id_table_changes() -> None:
    ids = ["a", "b", "c", "d"]
    op, _ = build_operator(AGGREGATE, _registry(ids))
    op._dense = None  # the row buffer closes the window
    records: list[dict[str, Any]] = []
    op.process_columns(T0 + np.array([1.0, 2.0, 3.0]), (np.array([0, 1, 1]), ids), {"temp": np.ones(3)}, records)
    assert "dev" not in op._chunks[0]  # coded input keeps its codes until the rows are read
    op.process_columns(T0 + np.array([4.0, 5.0]), (np.array([0, 0]), ["d", "c"]), {"temp": np.ones(2)}, records)
    op.flush(records)
    counts = {r["device"]: r["values"]["n"] for r in records if r["level"] == "device"}
    assert counts == {"a": 1, "b": 2, "d": 2}


def test_record_prototype_copies_are_independent_plain_dicts() -> None:
    fields = {"kind": "aggregate", "group": None, "device": None, "values": None}
    proto = _key_sharing(fields)
    first, second = proto.copy(), proto.copy()
    first["group"], first["values"] = "fan", {"n": 1}
    second["extra"] = 2  # a key the prototype does not have
    assert type(first) is dict and list(first) == list(fields) and proto == fields
    assert first == {"kind": "aggregate", "group": "fan", "device": None, "values": {"n": 1}}
    assert second == {**fields, "extra": 2}
    assert json.loads(json.dumps(first)) == first


def test_window_bound_texts_stay_right_while_their_cache_stays_small() -> None:
    iso = _IsoTimes()
    times = [T0 + 60.0 * k for k in range(3000)]
    assert [iso(t) for t in times] == [format_time(t) for t in times]
    assert len(iso.cache) <= 1024
    assert iso(times[-1]) == format_time(times[-1]) and iso(times[0]) == format_time(times[0])
