"""Statistics over segments: rows grouped into contiguous segments in, one value per segment and statistic out.

The aggregate operator sorts the rows of the windows it closes so that every (window, group) pair is one
contiguous *segment* of the row arrays; this module computes the requested statistics for all segments at once
with numpy (``np.add.reduceat`` and friends, padded 2-D sorts for percentiles). There is no Python loop over
rows; the only loop is over unusually large segments when computing percentiles (``np.partition`` per segment).

Tumbling windows have a faster route: :func:`block_stats` takes one dense 2-D block per column (one row per
device, its readings in arrival order, NaN padding the gaps) and reduces along axis 1; :func:`rollup_stats`
derives group figures from those blocks and the device -> group slot of each row. Both give the statistics in
:data:`BLOCK_FUNCTIONS` with the definitions below.

Missing values: a null, a missing field or NaN is *missing*; every statistic except ``count()`` ignores missing
values. With no present value in a segment, ``count(x)`` and ``distinct(x)`` are 0, ``sum(x)`` is 0 and every
other statistic is null (NaN here).

Definitions: ``var``/``std`` are the sample variance/deviation (n - 1; null below 2 values); ``pNN``/``median``/
``percentile(x, q)`` are exact percentiles with linear interpolation between closest ranks (numpy's default,
pandas' ``quantile``, DuckDB's ``quantile_cont``); ``first``/``last`` are the values with the earliest/latest
event time (ties: earliest/latest arrival); ``rate`` is ``(last - first) / (t_last - t_first)`` per second;
``slope`` is the least-squares slope of the value against event time, per second; ``distinct`` counts distinct
present values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .group_percentiles import group_percentiles, select_percentiles
from .row_parts import RowParts

__all__ = [
    "BLOCK_FUNCTIONS",
    "INTEGER_STATS",
    "STAT_FUNCTIONS",
    "BlockColumn",
    "Segments",
    "StatSpec",
    "block_stats",
    "compute_stats",
    "percentile_of",
    "rollup_stats",
    "segments_from_ids",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: statistic name -> number of column arguments it takes (percentile takes a column and a constant)
STAT_FUNCTIONS: dict[str, int] = {
    "count": -1,  # count() or count(x)
    "sum": 1,
    "mean": 1,
    "min": 1,
    "max": 1,
    "var": 1,
    "std": 1,
    "median": 1,
    "percentile": 2,
    "first": 1,
    "last": 1,
    "rate": 1,
    "slope": 1,
    "distinct": 1,
}
#: statistics :func:`block_stats` and :func:`rollup_stats` compute (the others need the rows' event times)
BLOCK_FUNCTIONS = frozenset({"count", "sum", "mean", "min", "max", "var", "std", "median", "percentile"})
#: statistics whose result is an integer
INTEGER_STATS = frozenset({"count", "distinct"})
_PNN = re.compile(r"^p(100|[1-9]?[0-9])$")
#: segments longer than this get their percentiles by ``np.partition`` one at a time (padding would waste)
_BIG_SEGMENT = 2048
#: rows of a block per band when a statistic needs a temporary the size of the block
_BAND_ROWS = 1024
#: the per-row intermediates of a :class:`BlockColumn` that a pass over a part of its rows computes, each
#: after the ones it reads
ROW_KEYS = ("n", "sum", "mean", "min", "max", "m2")
_INPUTS = {"mean": ("n", "sum"), "m2": ("n", "sum", "mean")}
#: blocks given no thread parts are worked through in one part, on the calling thread
_ONE_PART = RowParts(1)


def _with_inputs(keys: set[str], ordered: bool) -> set[str]:
    """``keys`` and every intermediate they are computed from (a sorted block's maximum reads ``n``)."""
    out = set(keys)
    for key in keys:
        out.update(_INPUTS.get(key, ()))
    if ordered and "max" in keys:
        out.add("n")
    return out


def percentile_of(name: str) -> float | None:
    """``p95`` -> 0.95, ``p5`` -> 0.05, ``median`` -> 0.5; None for any other name."""
    if name == "median":
        return 0.5
    match = _PNN.match(name)
    return int(match.group(1)) / 100 if match else None


@dataclass(frozen=True)
class StatSpec:
    """One requested statistic: output ``name``, ``function``, the argument ``column`` (None for ``count()``) and
    the percentile fraction ``q`` (for percentiles)."""

    name: str
    function: str
    column: str | None = None
    q: float | None = None


@dataclass
class Segments:
    """Rows grouped into contiguous segments: ``starts``/``counts`` per segment (every count >= 1), event times
    ``t`` and argument ``columns`` (float64 with NaN for missing, or object arrays with None), all row-aligned."""

    starts: I64
    counts: I64
    t: F64
    columns: Mapping[str, Any]

    @property
    def size(self) -> int:
        """Number of segments."""
        return int(self.starts.size)


def segments_from_ids(ids: I64) -> tuple[I64, I64, I64]:
    """For segment ids per row: (row order grouping equal ids contiguously, starts, counts) in id order.

    The order is stable (rows keep their arrival order within a segment); ids must be >= 0.
    """
    order = stable_order(ids)
    sorted_ids = ids[order]
    if sorted_ids.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return order, empty, empty
    boundaries = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
    starts = np.concatenate((np.zeros(1, dtype=np.int64), boundaries)).astype(np.int64)
    counts = np.diff(np.append(starts, sorted_ids.size)).astype(np.int64)
    return order, starts, counts


def stable_order(ids: I64) -> I64:
    """A stable argsort of non-negative integer ids, by 16-bit radix passes when the ids are small enough."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(ids.max())
    if top < 1 << 16:
        return np.argsort(ids.astype(np.uint16), kind="stable").astype(np.int64)
    if top < 1 << 32:
        low = np.argsort((ids & 0xFFFF).astype(np.uint16), kind="stable")
        high = np.argsort((ids[low] >> 16).astype(np.uint16), kind="stable")
        return low[high].astype(np.int64)
    return np.argsort(ids, kind="stable").astype(np.int64)


def _present(x: Any) -> npt.NDArray[np.bool_]:
    if x.dtype.kind == "f":
        present: npt.NDArray[np.bool_] = ~np.isnan(x)
        return present
    if x.dtype.kind == "O":
        return np.array([v is not None and not (isinstance(v, float) and math.isnan(v)) for v in x.tolist()], dtype=bool)
    return np.ones(x.shape, dtype=bool)


def _as_float(x: Any) -> F64:
    if x.dtype.kind in "fiub":
        converted: F64 = x.astype(np.float64, copy=False)
        return converted
    out = np.full(x.shape, np.nan)
    for i, v in enumerate(x.tolist()):  # only reached for columns holding non-numbers: numbers are kept
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[i] = float(v)
    return out


class _Column:
    """Per-column intermediate results shared by the statistics over that column."""

    def __init__(self, x: Any, seg: Segments) -> None:
        self.raw = x
        self.seg = seg
        self._cache: dict[str, Any] = {"x": _as_float(x)}
        self._makers: dict[str, Any] = {
            "x": self._x, "n": self._n, "sum": self._sum, "mean": self._mean, "min": self._min, "max": self._max,
            "var": self._var, "tmean": self._tmean, "slope": self._slope, "first_index": self._first_index,
            "last_index": self._last_index, "first": self._first, "last": self._last, "rate": self._rate,
            "distinct": self._distinct,
        }
        #: values present for numeric statistics (an object column's non-numbers count as missing)
        self.present = ~np.isnan(self._cache["x"]) if x.dtype.kind == "O" else _present(x)

    def get(self, key: str) -> Any:
        """The named intermediate (computed once)."""
        if key not in self._cache:
            self._cache[key] = self._makers[key]()
        return self._cache[key]

    def _reduce(self, values: Any, ufunc: Any = np.add) -> Any:
        return ufunc.reduceat(values, self.seg.starts)

    def _x(self) -> F64:
        return _as_float(self.raw)

    def _n(self) -> I64:
        return np.asarray(self._reduce(self.present.astype(np.int64)), dtype=np.int64)

    def _sum(self) -> F64:
        return np.asarray(self._reduce(np.where(self.present, self.get("x"), 0.0)), dtype=np.float64)

    def _mean(self) -> F64:
        n = self.get("n")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self.get("sum") / np.maximum(n, 1), np.nan)

    def _min(self) -> F64:
        low = self._reduce(np.where(self.present, self.get("x"), np.inf), np.minimum)
        return np.where(self.get("n") > 0, low, np.nan)

    def _max(self) -> F64:
        high = self._reduce(np.where(self.present, self.get("x"), -np.inf), np.maximum)
        return np.where(self.get("n") > 0, high, np.nan)

    def _var(self) -> F64:
        n = self.get("n")
        mean = np.repeat(self.get("mean"), self.seg.counts)
        d = np.where(self.present, self.get("x") - mean, 0.0)
        ss = self._reduce(d * d)
        return np.where(n > 1, ss / np.maximum(n - 1, 1), np.nan)

    def _tmean(self) -> F64:
        n = self.get("n")
        total = self._reduce(np.where(self.present, self.seg.t, 0.0))
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)

    def _slope(self) -> F64:
        n = self.get("n")
        counts = self.seg.counts
        dt = np.where(self.present, self.seg.t - np.repeat(self.get("tmean"), counts), 0.0)
        dx = np.where(self.present, self.get("x") - np.repeat(self.get("mean"), counts), 0.0)
        sxy, sxx = self._reduce(dt * dx), self._reduce(dt * dt)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((n > 1) & (sxx > 0), sxy / np.where(sxx > 0, sxx, 1.0), np.nan)

    def _first_index(self) -> I64:
        t = np.where(self.present, self.seg.t, np.inf)
        earliest = np.repeat(self._reduce(t, np.minimum), self.seg.counts)
        rows = np.arange(t.size, dtype=np.int64)
        return np.asarray(self._reduce(np.where(t == earliest, rows, t.size), np.minimum), dtype=np.int64)

    def _last_index(self) -> I64:
        t = np.where(self.present, self.seg.t, -np.inf)
        latest = np.repeat(self._reduce(t, np.maximum), self.seg.counts)
        rows = np.arange(t.size, dtype=np.int64)
        return np.asarray(self._reduce(np.where(t == latest, rows, -1), np.maximum), dtype=np.int64)

    def _first(self) -> F64:
        return self._at(self.get("first_index"))

    def _last(self) -> F64:
        return self._at(self.get("last_index"))

    def _at(self, index: I64) -> F64:
        ok = self.get("n") > 0
        safe = np.where(ok, index, 0)
        return np.where(ok, self.get("x")[safe], np.nan)

    def _rate(self) -> F64:
        ok = self.get("n") > 1
        first, last = self.get("first_index"), self.get("last_index")
        t = self.seg.t
        dt = np.where(ok, t[np.where(ok, last, 0)] - t[np.where(ok, first, 0)], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok & (dt > 0), (self.get("last") - self.get("first")) / np.where(dt > 0, dt, 1.0), np.nan)

    def get_x(self) -> F64:
        """The values as floats (non-numbers NaN)."""
        values: F64 = self.get("x")
        return values

    def _distinct(self) -> I64:
        present = _present(self.raw)
        seg_of_row = np.repeat(np.arange(self.seg.size, dtype=np.int64), self.seg.counts)[present]
        values = self.raw[present]
        if values.size == 0:
            return np.zeros(self.seg.size, dtype=np.int64)
        try:
            _, codes = np.unique(values, return_inverse=True)
        except TypeError:  # mixed value types: compare by type and text
            _, codes = np.unique(np.array([f"{type(v).__name__}:{v}" for v in values.tolist()]), return_inverse=True)
        width = int(codes.max()) + 1
        pairs = np.unique(seg_of_row * width + codes.astype(np.int64))
        return np.bincount(pairs // width, minlength=self.seg.size).astype(np.int64)

    def percentiles(self, qs: Sequence[float]) -> list[F64]:
        """Exact percentiles (linear interpolation) for every segment, one array per fraction in ``qs``."""
        x, present, counts, starts = self.get("x"), self.present, self.seg.counts, self.seg.starts
        n = self.get("n")
        out = [np.full(self.seg.size, np.nan) for _ in qs]
        big = counts > _BIG_SEGMENT
        small = ~big
        if small.any():
            self._small_percentiles(x, present, qs, small, out)
        for s in np.flatnonzero(big).tolist():
            size = int(n[s])  # missing values are NaN in x
            if size:
                values = select_percentiles(x[starts[s] : starts[s] + counts[s]].copy(), size, qs)
                for arr, value in zip(out, values, strict=True):
                    arr[s] = value
        for arr in out:
            arr[n == 0] = np.nan
        return out

    def _small_percentiles(
        self, x: F64, present: npt.NDArray[np.bool_], qs: Sequence[float], small: npt.NDArray[np.bool_], out: list[F64]
    ) -> None:
        counts, starts = self.seg.counts, self.seg.starts
        chosen = np.flatnonzero(small)
        width = int(counts[chosen].max())
        rows_per = counts[chosen]
        seg_of_row = np.repeat(np.arange(chosen.size, dtype=np.int64), rows_per)
        offsets = np.arange(seg_of_row.size, dtype=np.int64) - np.repeat(np.cumsum(rows_per) - rows_per, rows_per)
        source = np.repeat(starts[chosen], rows_per) + offsets
        block = np.full((chosen.size, width), np.nan)
        block[seg_of_row, offsets] = np.where(present[source], x[source], np.nan)
        block.sort(axis=1)  # NaN (missing and padding) sorts last
        valid = self.get("n")[chosen]
        line = np.arange(chosen.size)
        for i, q in enumerate(qs):
            rank = np.maximum(valid - 1, 0) * q
            lo = np.floor(rank).astype(np.int64)
            hi = np.minimum(lo + 1, np.maximum(valid - 1, 0))
            low, high = block[line, lo], block[line, hi]
            out[i][chosen] = low + (high - low) * (rank - lo)


def compute_stats(specs: Sequence[StatSpec], seg: Segments) -> dict[str, Any]:
    """Compute every statistic in ``specs`` for every segment of ``seg``: output name -> array (one per segment)."""
    columns: dict[str, _Column] = {}

    def column(name: str) -> _Column:
        if name not in columns:
            columns[name] = _Column(np.asarray(seg.columns[name]), seg)
        return columns[name]

    out: dict[str, Any] = {}
    wanted: dict[str, list[StatSpec]] = {}
    for spec in specs:
        if spec.function == "count" and spec.column is None:
            out[spec.name] = seg.counts.copy()
        elif spec.function in ("median", "percentile"):
            wanted.setdefault(str(spec.column), []).append(spec)
        else:
            key = {"count": "n", "std": "var"}.get(spec.function, spec.function)
            value = column(str(spec.column)).get(key)
            out[spec.name] = np.sqrt(value) if spec.function == "std" else value
    for name, group in wanted.items():
        results = column(name).percentiles([float(spec.q if spec.q is not None else 0.5) for spec in group])
        for spec, result in zip(group, results, strict=True):
            out[spec.name] = result
    return out


class BlockColumn:
    """One column as a dense block (rows: devices, columns: readings, NaN: gap or missing), with the per-row
    intermediates the statistics share (each computed once).

    ``filled`` (optional) is each row's number of cells holding a reading, missing values included: when the
    block has no missing value at all, ``n`` is that count without a pass over the block. With ``sort`` the
    block's rows are sorted in place first (NaN last; for a block whose cell order no longer matters, such as
    a closed window's): percentiles then read it directly and each row's minimum and maximum are its ends.

    The block may also come uninitialised with ``fill``, a function writing the given rows of it: the rows are
    then filled, sorted, and the intermediates named in ``prepare`` (of :data:`ROW_KEYS`) computed, in one pass
    over each part of the rows -- on several threads with ``parts`` (see :mod:`.row_parts`). Intermediates not
    prepared are computed on first use, over all rows.
    """

    def __init__(
        self,
        block: F64,
        filled: I64 | None = None,
        sort: bool = False,
        *,
        fill: Callable[[slice], object] | None = None,
        prepare: Iterable[str] = (),
        parts: RowParts | None = None,
    ) -> None:
        self.block = block
        self.ordered = sort
        self.present: npt.NDArray[np.bool_] = np.empty(block.shape, dtype=bool)
        self._filled = filled
        self._cache: dict[str, Any] = {}
        wanted = _with_inputs(set(prepare), sort)
        made = {key: self._new(key) for key in ROW_KEYS if key in wanted}

        def pass_over(rows: slice) -> None:
            if fill is not None:
                fill(rows)
            if sort:
                block[rows].sort(axis=1)
            present = self.present[rows]
            np.isnan(block[rows], out=present)
            np.logical_not(present, out=present)
            for key, out in made.items():  # in ROW_KEYS order: a row's inputs are ready before it is needed
                self._kernels[key](rows, out)

        self._kernels: dict[str, Callable[[slice, Any], None]] = {
            "n": self._n, "sum": self._sum, "mean": self._mean, "min": self._min, "max": self._max, "m2": self._m2,
        }
        self._cache.update(made)  # the kernels of later keys read the earlier ones' rows from the cache
        (parts if parts is not None else _ONE_PART).run(block.shape[0], block.size, pass_over)

    def get(self, key: str) -> Any:
        """``n``, ``sum``, ``mean``, ``min``, ``max``, ``m2`` (sum of squared deviations from the mean), ``var``
        or ``sorted`` (rows sorted, NaN last), per row."""
        found = self._cache.get(key)
        if found is None:
            if key in self._kernels:
                for needed in ROW_KEYS:  # inputs first (a closed table: no method names built from strings)
                    if needed in _with_inputs({key}, self.ordered) and needed not in self._cache:
                        out = self._new(needed)
                        self._kernels[needed](slice(0, self.block.shape[0]), out)
                        self._cache[needed] = out
                found = self._cache[key]
            else:
                found = self._cache[key] = {"var": self._var, "sorted": self._sorted}[key]()
        return found

    def _new(self, key: str) -> Any:
        return np.empty(self.block.shape[0], dtype=np.int64 if key == "n" else np.float64)

    # row kernels: rows ``rows`` of one intermediate into ``out``, from the block and earlier intermediates
    def _n(self, rows: slice, out: I64) -> None:
        filled, present = self._filled, self.present[rows]
        if filled is not None and np.count_nonzero(present) == int(filled[rows].sum()):
            out[rows] = filled[rows]  # nothing missing: every reading is a present value
        else:
            out[rows] = np.count_nonzero(present, axis=1)

    def _sum(self, rows: slice, out: F64) -> None:
        np.add.reduce(self.block[rows], axis=1, where=self.present[rows], out=out[rows])

    def _mean(self, rows: slice, out: F64) -> None:
        n = self._cache["n"][rows]
        out[rows] = np.where(n > 0, self._cache["sum"][rows] / np.maximum(n, 1), np.nan)

    def _min(self, rows: slice, out: F64) -> None:
        if self.ordered:
            out[rows] = self.block[rows, 0]  # NaN only when nothing is present
        else:
            np.fmin.reduce(self.block[rows], axis=1, out=out[rows])

    def _max(self, rows: slice, out: F64) -> None:
        if self.ordered:
            block = self.block[rows]
            out[rows] = block[np.arange(block.shape[0]), np.maximum(self._cache["n"][rows] - 1, 0)]
        else:
            np.fmax.reduce(self.block[rows], axis=1, out=out[rows])

    def _m2(self, rows: slice, out: F64) -> None:
        out[rows] = self.squares_about(self._cache["mean"], rows)

    def _var(self) -> F64:
        n = self.get("n")
        return np.where(n > 1, self.get("m2") / np.maximum(n - 1, 1), np.nan)

    def _sorted(self) -> F64:
        if self.ordered:
            return self.block
        return np.sort(self.block, axis=1)  # NaN (missing and padding) sorts last

    def squares_about(self, center: F64, rows: slice | None = None) -> F64:
        """Per row (of ``rows``, default all): the sum of squared deviations of the present values from ``center``
        (one value per row of the block).

        Computed a band of rows at a time: the deviations stay a small, cache-sized temporary."""
        rows = slice(0, self.block.shape[0]) if rows is None else rows
        out = np.empty(rows.stop - rows.start)
        for lo in range(rows.start, rows.stop, _BAND_ROWS):
            band = slice(lo, min(lo + _BAND_ROWS, rows.stop))
            d = self.block[band] - center[band, None]
            np.copyto(d, 0.0, where=~self.present[band])
            np.einsum("ij,ij->i", d, d, out=out[band.start - rows.start : band.stop - rows.start])
        return out

    def percentile(self, q: float) -> F64:
        """Exact percentile ``q`` (a fraction) of each row, linear interpolation between closest ranks."""
        ordered, valid = self.get("sorted"), self.get("n")
        rank = np.maximum(valid - 1, 0) * q
        lo = np.floor(rank).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(valid - 1, 0))
        line = np.arange(ordered.shape[0])
        low, high = ordered[line, lo], ordered[line, hi]
        out = low + (high - low) * (rank - lo)
        out[valid == 0] = np.nan
        return np.asarray(out, dtype=np.float64)


def block_stats(specs: Sequence[StatSpec], columns: Mapping[str, BlockColumn], rows: I64) -> dict[str, Any]:
    """Every statistic in ``specs`` (functions in :data:`BLOCK_FUNCTIONS`) for every block row.

    ``columns`` maps the specs' column names to blocks with the same rows; ``rows`` is each row's number of
    readings (what ``count()`` counts, missing values included).
    """
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.function == "count" and spec.column is None:
            out[spec.name] = rows.astype(np.int64, copy=True)
            continue
        column = columns[str(spec.column)]
        if spec.function in ("median", "percentile"):
            out[spec.name] = column.percentile(float(spec.q if spec.q is not None else 0.5))
        else:
            key = {"count": "n", "std": "var"}.get(spec.function, spec.function)
            value = column.get(key)
            out[spec.name] = np.sqrt(value) if spec.function == "std" else value
    return out


def rollup_stats(
    specs: Sequence[StatSpec], columns: Mapping[str, BlockColumn], rows: I64, slots: I64
) -> tuple[I64, dict[str, Any]]:
    """Group statistics from device blocks: ``slots`` gives each block row's group (-1: in no group).

    Returns the groups that have rows (ascending slot) and, per statistic, one value per group. Counts, sums,
    minima and maxima combine the rows' figures; the variance is the two-pass sum of squared deviations from
    the group mean; percentiles select over the group's values, exactly as for segments.
    """
    member = slots >= 0
    everyone = bool(member.all())
    slot = slots if everyone else slots[member]
    if slot.size == 0:
        return np.zeros(0, dtype=np.int64), {}
    order, starts, per_group = segments_from_ids(slot)
    groups = slot[order[starts]]
    group_of = np.empty(slot.size, dtype=np.int64)
    group_of[order] = np.repeat(np.arange(groups.size, dtype=np.int64), per_group)

    def combine(values: Any) -> Any:
        return np.bincount(group_of, weights=values if everyone else values[member], minlength=groups.size)

    out: dict[str, Any] = {}
    shared: dict[str, dict[str, Any]] = {}
    wanted: dict[str, list[StatSpec]] = {}
    for spec in specs:
        if spec.function == "count" and spec.column is None:
            out[spec.name] = np.rint(combine(rows)).astype(np.int64)
            continue
        name = str(spec.column)
        if spec.function in ("median", "percentile"):
            wanted.setdefault(name, []).append(spec)
            continue
        column = columns[name]
        figures = shared.setdefault(name, {})
        if "n" not in figures:
            figures["n"] = n = np.rint(combine(column.get("n"))).astype(np.int64)
            with np.errstate(invalid="ignore", divide="ignore"):
                figures["sum"] = total = combine(column.get("sum"))
                figures["mean"] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        function = spec.function
        if function in ("min", "max") and function not in figures:
            per_row = column.get(function) if everyone else column.get(function)[member]
            reduce = np.fmin if function == "min" else np.fmax
            figures[function] = np.asarray(reduce.reduceat(per_row[order], starts), dtype=np.float64)
        elif function in ("var", "std") and "var" not in figures:
            # rows' squared deviations about their own mean, plus each row's mean offset from its group's
            # (Chan et al.): the group's sum of squared deviations about its mean, without another pass
            n = figures["n"]
            count, mean = column.get("n"), column.get("mean")
            offset = np.where(count > 0, mean - _spread(figures["mean"][group_of], member, everyone), 0.0)
            ss = combine(column.get("m2") + count * offset * offset)
            figures["var"] = np.where(n > 1, ss / np.maximum(n - 1, 1), np.nan)
        key = {"count": "n", "std": "var"}.get(function, function)
        out[spec.name] = np.sqrt(figures[key]) if function == "std" else figures[key]
    for name, group in wanted.items():
        picked = order if everyone else np.flatnonzero(member)[order]
        qs = [float(spec.q if spec.q is not None else 0.5) for spec in group]
        for spec, result in zip(group, _rollup_percentiles(columns[name], picked, starts, per_group, qs), strict=True):
            out[spec.name] = result
    return groups, out


def _rollup_percentiles(
    column: BlockColumn, picked: I64, starts: I64, per_group: I64, qs: Sequence[float]
) -> list[F64]:
    """Exact percentiles of each group's present values, one array (one value per group) per fraction in ``qs``.

    ``picked`` lists block rows group after group (``per_group`` rows each, from ``starts``). Groups of few cells
    share one padded sort, as small segments do; larger groups are selected from a sampled bracket of their
    cells (:func:`.group_percentiles.group_percentiles`).
    """
    block = column.block
    width = block.shape[1]
    out = [np.full(starts.size, np.nan) for _ in qs]
    big = per_group * width > _BIG_SEGMENT
    if not big.all():
        small = np.flatnonzero(~big)
        counts = per_group[small] * width
        values = block[picked[np.repeat(~big, per_group)]].ravel()
        seg = Segments(np.cumsum(counts) - counts, counts, np.zeros(0), {"x": values})
        for arr, result in zip(out, _Column(values, seg).percentiles(qs), strict=True):
            arr[small] = result
    if big.any():
        chosen = np.flatnonzero(big)
        found = group_percentiles(block, column.get("n"), picked, starts[chosen], per_group[chosen], qs,
                                  ordered=column.ordered)
        for arr, result in zip(out, found, strict=True):
            arr[chosen] = result
    return out


def _spread(values: F64, member: npt.NDArray[np.bool_], everyone: bool) -> F64:
    """Member rows' values laid out over every row (NaN for rows in no group)."""
    if everyone:
        return values
    out = np.full(member.size, np.nan)
    out[member] = values
    return out
