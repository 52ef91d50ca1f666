"""Exact percentiles of large groups of block rows: a dense block, each row's group and the fractions in; per
fraction, one exact percentile per group out (linear interpolation between closest ranks, NaN for a group with
no present value).

Selecting each group's order statistics with ``np.partition`` moves every cell of the group, once per group.
Here a small systematic sample of each group's cells *brackets* the ranks a percentile needs: bounds ``L <= U``
such that the two order statistics the interpolation reads very probably lie in ``[L, U]``. For all groups at
once, each group's present cells below ``L`` are counted and its cells in ``[L, U]`` (a few percent of them)
gathered -- by a binary search in every row when the rows are sorted, else by one comparison pass over the
block -- and the order statistics are then selected among those candidates. The bracket is checked
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
    group_of = np.repeat(np.arange(groups, dtype=np.int64), per_group)  # the group of each row of rows_of
    n = np.add.reduceat(present[rows_of], first).astype(np.int64)
    sample = _sample(block, picked, starts, per_group)
    for q, result in zip(qs, out, strict=True):
        low_bound, high_bound = _bracket(sample, q)
        if ordered:
            found = _sorted_candidates(block, present, rows_of, first, group_of, low_bound, high_bound)
        else:
            found = _masked_candidates(block, rows_of, group_of, low_bound, high_bound)
        for s in _pick(found, n, q, result).tolist():
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


#: per group: its cells in the bracket (all groups' together, group after group), how many, how many below it
Candidates = tuple[F64, I64, I64]


def _sorted_candidates(
    block: F64, present: I64, rows_of: I64, first: I64, group_of: I64, low: F64, high: F64
) -> Candidates:
    """Sorted rows: each row's cells below ``low`` and up to ``high`` of its group are prefixes, found by one
    binary search (cells <= high are the cells < the next float up; +inf: every present cell)."""
    row_low, row_high = low[group_of], high[group_of]
    m = rows_of.size
    bounds = np.concatenate((row_low, np.nextafter(row_high, np.inf)))
    both = _leading(block, np.concatenate((rows_of, rows_of)), bounds)
    below, upto = both[:m], np.where(row_high == np.inf, present[rows_of], both[m:])
    lengths = np.maximum(upto - below, 0)
    width = block.shape[1]
    offsets = np.cumsum(lengths) - lengths
    flat = np.repeat(rows_of * width + below - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return block.reshape(-1)[flat], np.add.reduceat(lengths, first), np.add.reduceat(below, first)


def _masked_candidates(block: F64, rows_of: I64, group_of: I64, low: F64, high: F64) -> Candidates:
    """Rows in any order: one comparison pass per bound over the whole block."""
    groups = low.size
    # rows in no group get an empty bracket: +inf below which everything lies, -inf above which nothing does
    row_group = np.full(block.shape[0], groups, dtype=np.int64)
    row_group[rows_of] = group_of
    row_low = np.append(low, np.inf)[row_group]
    row_high = np.append(high, -np.inf)[row_group]
    below = block < row_low[:, None]
    inside = block <= row_high[:, None]
    np.logical_and(inside, ~below, out=inside)
    below_rows = np.add.reduce(below.view(np.uint8), axis=1, dtype=np.int64)  # a byte per cell: fast to add
    below_n = np.bincount(group_of, weights=below_rows[rows_of], minlength=groups)
    flat = np.flatnonzero(inside)
    of = row_group[flat // block.shape[1]]  # never the no-group bin: its bracket is empty
    values = block.reshape(-1)[flat][np.argsort(of.astype(np.uint16) if groups < 1 << 16 else of, kind="stable")]
    return values, np.bincount(of, minlength=groups).astype(np.int64), np.rint(below_n).astype(np.int64)


def _pick(found: Candidates, n: I64, q: float, out: F64) -> I64:
    """Fill ``out`` for the groups whose bracket holds both order statistics the percentile ``q`` needs; return
    the others (groups with present values whose bracket missed)."""
    values, counts, below_n = found
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


def _leading(block: F64, rows: I64, bound: F64) -> I64:
    """Rows sorted (NaN last): for each ``(rows[i], bound[i])``, how many leading cells of that row are below the
    bound, by one binary search run on all of them at once."""
    width = block.shape[1]
    flat = block.reshape(-1)
    last = rows * width - 1  # the flat index of the cell before each row's first
    pos = np.zeros(bound.size, dtype=np.int64)
    step = 1 << (width.bit_length() - 1) if width else 0
    while step:
        reach = pos + step  # is the reach-th cell (1-based) still below the bound?
        hit = flat.take(last + np.minimum(reach, width)) < bound  # NaN never is
        hit &= reach <= width
        pos += hit * step
        step >>= 1
    return pos


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
