"""Exact percentiles of large groups of block rows: a dense block, each row's group and the fractions in; per
fraction, one exact percentile per group out (linear interpolation between closest ranks, NaN for a group with
no present value).

Selecting each group's order statistics with ``np.partition`` moves every cell of the group, once per group.
Here a small systematic sample of each group's cells *brackets* the ranks a percentile needs: bounds ``L <= U``
such that the two order statistics the interpolation reads very probably lie in ``[L, U]``. One pass over the
block, for all groups at once, counts each group's present cells below ``L`` and gathers its cells in ``[L, U]``
(a few percent of them); the order statistics are then read from the sorted candidates. The bracket is checked
exactly -- the counts say whether both ranks fall inside it -- and a group whose bracket misses (an unlucky or
skewed sample) is selected in full, so the result never depends on the sample, only the time does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["group_percentiles", "select_percentiles"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: cells sampled per group to place the bracket
SAMPLE = 1024
#: half-width of the bracket around the sampled rank, in binomial standard deviations (plus a few ranks)
_SPREAD = 4.0
_SLACK = 2.0
#: a golden-ratio sequence spreads the sampled cells over the columns of the sampled rows
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def group_percentiles(
    block: F64, present: I64, picked: I64, starts: I64, per_group: I64, qs: Sequence[float], ordered: bool = False
) -> list[F64]:
    """Exact percentiles of each group's present (non-NaN) cells, one array (a value per group) per fraction.

    ``block`` is rows x cells (NaN: missing or padding); ``present`` each row's number of present cells;
    ``picked`` lists rows group after group, ``per_group[s]`` rows for group ``s`` from ``picked[starts[s]]``.
    Only the listed groups' rows are read (``starts`` need not cover ``picked``). ``qs`` are fractions in [0, 1].
    ``ordered``: every row is sorted (NaN last), so a row's cells below a bound are a prefix, found by binary
    search instead of a pass over the row.
    """
    groups = int(starts.size)
    out = [np.full(groups, np.nan) for _ in qs]
    if groups == 0:
        return out
    total = int(per_group.sum())
    first = np.cumsum(per_group) - per_group
    rows_of = picked[np.repeat(starts - first, per_group) + np.arange(total, dtype=np.int64)]  # group after group
    row_group = np.full(block.shape[0], -1, dtype=np.int64)
    row_group[rows_of] = np.repeat(np.arange(groups, dtype=np.int64), per_group)
    n = np.bincount(row_group[rows_of], weights=present[rows_of], minlength=groups)
    n = np.rint(n).astype(np.int64)
    sample = _sample(block, picked, starts, per_group)
    for q, result in zip(qs, out, strict=True):
        low_bound, high_bound = _bracket(sample, q)
        missed = _from_bracket(block, present, row_group, n, q, low_bound, high_bound, result, ordered)
        for s in missed.tolist():
            rows = picked[starts[s] : starts[s] + per_group[s]]
            result[s] = select_percentiles(block[rows].ravel(), int(n[s]), [q])[0]
    return out


def _sample(block: F64, picked: I64, starts: I64, per_group: I64) -> F64:
    """Per group, :data:`SAMPLE` of its cells (rows spread evenly over the group, columns along a golden-ratio
    sequence), sorted (NaN last): groups x SAMPLE."""
    j = np.arange(SAMPLE, dtype=np.int64)
    rows = picked[starts[:, None] + (j[None, :] * per_group[:, None]) // SAMPLE]
    cols = np.floor(np.modf(j * _GOLDEN)[0] * block.shape[1]).astype(np.int64)
    sample: F64 = block[rows, cols[None, :]]
    sample.sort(axis=1)
    return sample


def _bracket(sample: F64, q: float) -> tuple[F64, F64]:
    """Per group, bounds around the sample's ``q`` quantile (-inf/+inf where the sample runs out)."""
    m = np.count_nonzero(~np.isnan(sample), axis=1)
    centre = q * np.maximum(m - 1, 0)
    half = _SPREAD * np.sqrt(m * q * (1.0 - q)) + _SLACK
    lo = np.floor(centre - half).astype(np.int64)
    hi = np.ceil(centre + half).astype(np.int64)
    line = np.arange(sample.shape[0])
    low = np.where(lo >= 0, sample[line, np.clip(lo, 0, sample.shape[1] - 1)], -np.inf)
    high = np.where(hi <= m - 1, sample[line, np.clip(hi, 0, sample.shape[1] - 1)], np.inf)
    return low, high


def _from_bracket(
    block: F64, present: I64, row_group: I64, n: I64, q: float, low: F64, high: F64, out: F64, ordered: bool
) -> I64:
    """Fill ``out`` for the groups whose bracket ``[low, high]`` holds both order statistics; return the others
    (groups with present values whose bracket missed)."""
    groups = n.size
    # rows in no group get an empty bracket: +inf below which everything lies, -inf above which nothing does
    row_low = np.append(low, np.inf)[row_group]
    row_high = np.append(high, -np.inf)[row_group]
    if ordered:
        # cells <= high are the cells < the next float up (+inf: every present cell); both searches in one
        rows = block.shape[0]
        both = _leading(block, np.concatenate((row_low, np.nextafter(row_high, np.inf))))
        below_rows, upto = both[:rows], np.where(row_high == np.inf, present, both[rows:])
        values, of = _prefix_ranges(block, row_group, below_rows, upto)
    else:
        below = block < row_low[:, None]
        inside = block <= row_high[:, None]
        np.logical_and(inside, ~below, out=inside)
        below_rows = np.add.reduce(below.view(np.uint8), axis=1, dtype=np.int64)  # a byte per cell: fast to add
        flat = np.flatnonzero(inside)
        values = block.reshape(-1)[flat]  # row after row
        of = row_group[flat // block.shape[1]]
    member = row_group >= 0
    below_n = np.rint(np.bincount(row_group[member], weights=below_rows[member], minlength=groups)).astype(np.int64)
    values = values[np.argsort(of.astype(np.uint16) if groups <= 1 << 16 else of, kind="stable")]  # by group
    counts = np.bincount(of, minlength=groups).astype(np.int64)
    offsets = np.cumsum(counts) - counts
    missed: list[int] = []
    for s in np.flatnonzero(n).tolist():
        size = int(n[s])
        rank = q * (size - 1)
        lo = math.floor(rank)
        k = lo - int(below_n[s])
        need_next = lo + 1 < size
        if k < 0 or k + int(need_next) >= counts[s]:
            missed.append(s)  # the bracket does not hold both order statistics
            continue
        candidates = values[offsets[s] : offsets[s] + counts[s]]
        candidates.partition([k, k + 1] if need_next else k)
        low = candidates[k]
        high = candidates[k + 1] if need_next else low
        with np.errstate(invalid="ignore"):  # infinite neighbours interpolate to NaN, as numpy's percentile does
            out[s] = low + (high - low) * (rank - lo)
    return np.array(missed, dtype=np.int64)


def _leading(block: F64, bound: F64) -> I64:
    """Rows sorted (NaN last): per bound, how many leading cells of its row are ``< bound`` -- bounds for every
    row, possibly several rounds of them (``bound[i]`` is for row ``i % rows``) -- by one binary search run on
    all of them at once."""
    rows, width = block.shape
    flat = block.reshape(-1)
    last = np.arange(bound.size, dtype=np.int64) % max(rows, 1) * width - 1  # the cell before each row's first
    pos = np.zeros(bound.size, dtype=np.int64)
    step = 1 << (width.bit_length() - 1) if width else 0
    while step:
        reach = pos + step  # is the reach-th cell (1-based) still below the bound?
        hit = flat.take(last + np.minimum(reach, width)) < bound  # NaN never is
        hit &= reach <= width
        pos += hit * step
        step >>= 1
    return pos


def _prefix_ranges(block: F64, row_group: I64, begin: I64, end: I64) -> tuple[F64, I64]:
    """The cells ``begin[r] <= j < end[r]`` of every row ``r`` (row after row), and the group of each."""
    width = block.shape[1]
    lengths = np.maximum(end - begin, 0)
    total = int(lengths.sum())
    offsets = np.cumsum(lengths) - lengths
    rows = np.arange(block.shape[0], dtype=np.int64)
    flat = np.repeat(rows * width + begin - offsets, lengths) + np.arange(total, dtype=np.int64)
    return block.reshape(-1)[flat], np.repeat(row_group, lengths)


def select_percentiles(values: F64, size: int, qs: Sequence[float]) -> list[float]:
    """Exact percentiles (linear interpolation) of the ``size`` present values in ``values`` (NaN: missing),
    one per fraction in ``qs``. ``values`` is scratch: it is partitioned in place."""
    out = []
    for q in qs:
        rank = q * (size - 1)
        lo = math.floor(rank)
        values.partition(lo)  # NaN sorts last: position lo holds the lo-th smallest present value
        low = values[lo]
        high = np.fmin.reduce(values[lo + 1 :]) if lo + 1 < size else low  # the next one up (fmin skips NaN)
        with np.errstate(invalid="ignore"):  # infinite neighbours interpolate to NaN, as numpy's percentile does
            out.append(float(low + (high - low) * (rank - lo)))
    return out
