"""Exact group percentiles from a sampled bracket (issue 4): equal to a brute-force sort for every group and
fraction, whether the rows are sorted or not, and exact even when the sample misleads the bracket.

The oracle here is numpy's own ``np.percentile`` (linear interpolation) over each group's present values,
gathered row by row in Python.
"""

from __future__ import annotations

import numpy as np
import pytest

from iot_dsl.runtime.group_percentiles import SAMPLE, group_percentiles
from iot_dsl.runtime.telemetry_stats import BlockColumn, StatSpec, rollup_stats, segments_from_ids

QS = (0.0, 0.01, 0.25, 0.5, 0.95, 0.99, 1.0)


def oracle(block: np.ndarray, slots: np.ndarray, groups: list[int], q: float) -> list[float]:
    out = []
    for g in groups:
        cells = np.concatenate([row[~np.isnan(row)] for row, s in zip(block, slots, strict=True) if s == g])
        out.append(float(np.percentile(cells, q * 100)) if cells.size else float("nan"))
    return out


def run(block: np.ndarray, slots: np.ndarray, ordered: bool, qs: tuple[float, ...] = QS) -> tuple[list[int], list]:
    member = np.flatnonzero(slots >= 0)
    order, starts, per_group = segments_from_ids(slots[member])
    picked = member[order]
    groups = slots[picked[starts]].tolist()
    present = np.count_nonzero(~np.isnan(block), axis=1)
    return groups, group_percentiles(block, present, picked, starts, per_group, list(qs), ordered=ordered)


def fleet_block(seed: int, rows: int, width: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    level = rng.normal(0, 20, rows)  # devices differ: a group's cells are not one distribution
    block = level[:, None] + rng.normal(0, 3, (rows, width))
    block[rng.random(block.shape) < 0.05] = np.nan  # missing values
    ends = rng.integers(width // 2, width + 1, rows)  # gaps: rows end early
    block[np.arange(width)[None, :] >= ends[:, None]] = np.nan
    block = np.round(block, 1)  # many ties
    slots = rng.integers(-1, groups, rows)  # -1: in no group
    return block, slots


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_group_and_fraction_equals_a_full_sort(seed: int, ordered: bool) -> None:
    block, slots = fleet_block(seed, rows=3000, width=40, groups=5)
    if ordered:
        block.sort(axis=1)
    groups, found = run(block, slots, ordered)
    for q, values in zip(QS, found, strict=True):
        assert values.tolist() == pytest.approx(oracle(block, slots, groups, q), rel=1e-12, abs=0), q


def test_sorted_and_unsorted_rows_give_identical_bits() -> None:
    block, slots = fleet_block(7, rows=2000, width=33, groups=3)
    _, unsorted = run(block.copy(), slots, ordered=False)
    ordered_block = np.sort(block, axis=1)
    _, ordered = run(ordered_block, slots, ordered=True)
    for a, b in zip(unsorted, ordered, strict=True):
        assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("ordered", [False, True])
def test_a_misleading_sample_still_gives_the_exact_percentile(ordered: bool) -> None:
    # one cell per row; the rows the sample reads hold 0.0, every other row 1.0 (and a few -5.0): the sampled
    # bracket is [0, 0], which holds neither the 95th percentile nor the 1st -- both are found in full
    rows = 3 * SAMPLE
    picked_rows = (np.arange(SAMPLE) * rows) // SAMPLE
    block = np.ones((rows, 1))
    block[picked_rows, 0] = 0.0
    block[np.setdiff1d(np.arange(rows), picked_rows)[:40], 0] = -5.0
    slots = np.zeros(rows, dtype=np.int64)
    groups, found = run(block, slots, ordered, qs=(0.01, 0.95))
    assert found[0].tolist() == oracle(block, slots, groups, 0.01)
    assert found[1].tolist() == oracle(block, slots, groups, 0.95) == [1.0]


@pytest.mark.parametrize("ordered", [False, True])
def test_infinities_and_a_group_with_nothing_present(ordered: bool) -> None:
    rng = np.random.default_rng(5)
    block = rng.normal(0, 1, (600, 8))
    block[:5, 0] = np.inf
    block[5:10, 1] = -np.inf
    slots = np.repeat(np.array([0, 1, 2]), 200)
    block[slots == 2] = np.nan  # group 2: no present value
    if ordered:
        block.sort(axis=1)
    groups, found = run(block, slots, ordered)
    with np.errstate(invalid="ignore"):  # inf - inf: numpy's interpolation gives NaN there too
        for q, values in zip(QS, found, strict=True):
            np.testing.assert_array_equal(values[:2], oracle(block, slots, groups, q)[:2], err_msg=str(q))
            assert np.isnan(values[2])


def test_no_groups_gives_empty_results() -> None:
    empty = np.zeros(0, dtype=np.int64)
    found = group_percentiles(np.zeros((3, 4)), np.full(3, 4), empty, empty, empty, [0.5, 0.9])
    assert [f.size for f in found] == [0, 0]


def test_rollup_percentiles_of_large_groups_match_the_oracle() -> None:
    # through rollup_stats: groups far larger than a padded sort handles, rows sorted as a closed window's are
    block, slots = fleet_block(11, rows=4000, width=61, groups=4)
    counts = np.full(block.shape[0], block.shape[1])
    specs = [StatSpec("p95", "percentile", "x", 0.95), StatSpec("med", "median", "x", 0.5)]
    groups, values = rollup_stats(specs, {"x": BlockColumn(block.copy(), None, sort=True)}, counts, slots)
    assert values["p95"].tolist() == pytest.approx(oracle(block, slots, groups.tolist(), 0.95), rel=1e-12)
    assert values["med"].tolist() == pytest.approx(oracle(block, slots, groups.tolist(), 0.5), rel=1e-12)
