"""Event-time windows: a window spec and row event times in, window assignments (start, end, id) out.

Four kinds, all on event time (epoch seconds):

* ``tumbling: size`` -- back-to-back windows ``[k*size, (k+1)*size)`` aligned to the epoch;
* ``hopping: size, every: hop`` -- windows ``[k*hop, k*hop + size)``; a reading belongs to every window that
  contains it (``size / hop`` of them);
* ``session: gap`` -- per key, a session runs from its first reading to its last reading plus ``gap``; a reading
  less than ``gap`` after the previous one of the same key extends the session, ``[first, last + gap)``;
* ``sliding: size`` -- per key, a trailing window ends at each reading: ``(t - size, t]``, the reading itself
  and the same key's readings less than ``size`` before it (ties at ``t``: readings that arrived earlier).

Start is inclusive and end exclusive for tumbling, hopping and session windows; a sliding window is the one
exception (it must contain the reading that ends it), see docs/language.md.

:class:`DenseWindows` is the columnar buffer of open tumbling windows: readings go in as they arrive into one
dense (arrival x device) block per argument column and window, and come out as (device x reading) blocks, ready to
be reduced along axis 1. The block is laid out arrival-major because readings arrive about one per device per batch:
a batch then writes into a few adjacent rows of the block instead of one cache line per device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .clock import parse_duration
from .row_parts import RowParts

__all__ = ["WINDOW_KINDS", "DenseBlock", "DenseWindows", "WindowSpec", "grid_index", "grid_index_of"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

WINDOW_KINDS: tuple[str, ...] = ("tumbling", "hopping", "sliding", "session")


def grid_index(t: F64, step: float) -> I64:
    """``floor(t / step)`` corrected so that ``k*step <= t < (k+1)*step`` holds exactly in floating point."""
    k = np.floor(t / step).astype(np.int64)
    k = np.where((k + 1) * step <= t, k + 1, k)
    k = np.where(k * step > t, k - 1, k)
    return np.asarray(k, dtype=np.int64)


def grid_index_of(t: float, step: float) -> int:
    """:func:`grid_index` of one time (same arithmetic, without arrays)."""
    if not math.isfinite(t):
        return int(grid_index(np.array([t]), step)[0])
    k = math.floor(t / step)
    if (k + 1) * step <= t:
        k += 1
    if k * step > t:
        k -= 1
    return k


@dataclass(frozen=True)
class WindowSpec:
    """A window: ``kind`` plus ``size`` (the session gap for sessions) and ``every`` (the hop; = size when tumbling)."""

    kind: str
    size: float
    every: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WindowSpec:
        """Read ``{tumbling: 1m}``, ``{hopping: 5m, every: 1m}``, ``{sliding: 30s}`` or ``{session: 30s}``."""
        for kind in WINDOW_KINDS:
            if kind in config:
                size = parse_duration(config[kind])
                every = parse_duration(config["every"]) if kind == "hopping" else size
                return cls(kind, size, every)
        raise ValueError(f"a window needs one of {', '.join(WINDOW_KINDS)}")

    @property
    def grid(self) -> bool:
        """Tumbling and hopping windows sit on a fixed grid (identified by ``k``: start = ``k * every``)."""
        return self.kind in ("tumbling", "hopping")

    def grid_range(self, t: F64) -> tuple[I64, I64]:
        """Grid windows: the first and last ``k`` whose window ``[k*every, k*every + size)`` contains ``t``."""
        last = grid_index(t, self.every)
        if self.kind == "tumbling":
            return last, last
        # first k with k*every + size > t, i.e. k > (t - size) / every
        first = grid_index(t - self.size, self.every) + 1
        first = np.where(first * self.every + self.size <= t, first + 1, first)
        return np.minimum(first, last), last

    def first_end(self, t: F64) -> F64:
        """The end of the earliest window a reading at ``t`` can belong to."""
        if self.grid:
            first, _ = self.grid_range(t)
            return np.asarray(first * self.every + self.size, dtype=np.float64)
        if self.kind == "session":
            return t + self.size
        return t.astype(np.float64, copy=True)  # sliding: its own window ends at t

    def last_end(self, t: F64) -> F64:
        """The end of the latest window a reading at ``t`` belongs to (sessions: a lower bound)."""
        if self.grid:
            _, last = self.grid_range(t)
            return np.asarray(last * self.every + self.size, dtype=np.float64)
        if self.kind == "session":
            return t + self.size
        return t.astype(np.float64, copy=True)

    def last_end_at(self, t: float) -> float:
        """:meth:`last_end` of one time."""
        if self.grid:
            return grid_index_of(t, self.every) * self.every + self.size
        return t + self.size if self.kind == "session" else t

    def next_grid_end(self, after: float) -> float:
        """Grid windows: the smallest window end strictly after ``after``."""
        k = int(np.floor((after - self.size) / self.every)) + 1
        while k * self.every + self.size <= after:
            k += 1
        while (k - 1) * self.every + self.size > after:
            k -= 1
        return k * self.every + self.size

    def windows_of(self, t: F64) -> I64:
        """Grid windows: how many windows contain each reading."""
        first, last = self.grid_range(t)
        return np.asarray(last - first + 1, dtype=np.int64)


#: a block may hold at most this many cells per reading (beyond, a skewed device would waste memory) ...
_CELLS_PER_ROW = 8
#: ... plus this many cells whatever the number of readings
_CELLS_FREE = 1 << 16


@dataclass
class DenseBlock:
    """One open window: per device index, its number of readings (``counts``) and, per column, a 2-D block
    whose column ``d`` holds device ``d``'s values in arrival order (``cells[name][i, d]``: its ``i``-th reading;
    NaN: gap or missing value).

    ``usable`` turns False when the block would grow too sparse (one device with far more readings than the
    others); ``generation`` is the group-membership generation the block's readings were keyed under."""

    generation: int
    counts: I64
    cells: dict[str, F64]
    width: int
    #: number of device columns the cells have
    capacity: int = 0
    rows: int = 0
    usable: bool = True

    def active(self) -> I64:
        """Device indices with at least one reading, ascending."""
        return np.flatnonzero(self.counts).astype(np.int64, copy=False)

    def column(self, name: str, active: I64) -> F64:
        """One column as a new C-contiguous (device x reading) array: a row per ``active`` device, as many
        columns as the busiest device has readings (NaN after a device's last reading). The caller owns it."""
        out, fill = self.column_rows(name, active)
        fill(slice(0, active.size))
        return out

    def column_rows(self, name: str, active: I64) -> tuple[F64, Callable[[slice], None]]:
        """:meth:`column`'s array still empty, and a function copying a slice of its rows (devices ``active[rows]``)
        into it: the rows can be copied in parts, by several threads."""
        used = int(self.counts.max()) if self.counts.size else 0
        block = self.cells[name][:used]
        out = np.empty((active.size, used))
        if active.size and active.size == int(active[-1]) + 1:  # every device up to the last: a plain transpose

            def fill(rows: slice) -> None:
                out[rows] = block[:, rows].T

        else:

            def fill(rows: slice) -> None:
                out[rows] = block.T[active[rows]]

        return out, fill


@dataclass
class DenseWindows:
    """Open tumbling windows by grid index ``k``: readings (device indices and float columns) in, per window a
    :class:`DenseBlock` out."""

    columns: Sequence[str]
    blocks: dict[int, DenseBlock] = field(default_factory=dict)
    #: the width the last closed window needed: a new window starts that wide (no regrowth in steady state)
    width_hint: int = 4
    #: the memory of a closed window's cells, by column: the next block refills it instead of allocating
    #: (in steady state every window needs about as many cells as the previous one)
    spare: dict[str, F64] = field(default_factory=dict)
    #: threads for refilling a large spare memory (see :mod:`.row_parts`)
    parts: RowParts = field(default_factory=lambda: RowParts(1))

    def add(self, k: int, dev: I64, values: Mapping[str, F64], generation: int, devices: int | None = None) -> None:
        """Append readings of window ``k`` (device indices ``dev``; ``values`` by column) in arrival order.

        ``devices``, when given, bounds the device indices (every index is below it): once the block covers that
        many devices, no pass over ``dev`` looks for a larger index."""
        if dev.size == 0:
            return
        block = self.blocks.get(k)
        if block is None:
            block = self.blocks[k] = DenseBlock(generation, np.zeros(0, dtype=np.int64), {}, 0)
        if block.generation != generation:
            block.usable = False
        block.rows += int(dev.size)
        if not block.usable:
            return
        top = int(dev.max()) + 1 if devices is None or devices > block.counts.size else 0
        if top > block.counts.size:
            grown = np.zeros(max(top, 2 * block.counts.size), dtype=np.int64)
            grown[: block.counts.size] = block.counts
            block.counts = grown
        counts = block.counts
        pos = counts.take(dev)
        np.add.at(counts, dev, 1)
        added = counts.take(dev)
        added -= pos  # the device's readings in this batch
        repeated = (added > 1).nonzero()[0]  # only devices with several readings in the batch
        if repeated.size:
            _add_arrival_rank(pos, dev, repeated)
        need = int(pos.max()) + 1
        width = block.width
        if need > width:
            width = max(need, 2 * width, self.width_hint)
        if width != block.width or counts.size != block.capacity:
            if width > self.width_hint and width * counts.size > _CELLS_PER_ROW * block.rows + _CELLS_FREE:
                block.usable = False
                block.cells = {}
                return
            self._grow(block, width)
        flat = pos * counts.size
        flat += dev
        for name in self.columns:
            block.cells[name].ravel()[flat] = values[name]

    def _grow(self, block: DenseBlock, width: int) -> None:
        devices = block.counts.size
        for name in self.columns:
            cells = self._empty(name, (width, devices))
            old = block.cells.get(name)
            if old is not None:
                cells[: old.shape[0], : old.shape[1]] = old
            block.cells[name] = cells
        block.capacity, block.width = devices, width

    def _empty(self, name: str, shape: tuple[int, int]) -> F64:
        """A NaN-filled, C-contiguous cell array for column ``name``: in the spare memory when it is large
        enough, else new."""
        spare = self.spare.pop(name, None)
        if spare is None or spare.size < shape[0] * shape[1]:
            return np.full(shape, np.nan)
        cells = spare.reshape(-1)[: shape[0] * shape[1]].reshape(shape)
        self.parts.run(shape[0], cells.size, lambda rows: cells[rows].fill(np.nan))
        return cells

    def pop(self, k: int) -> DenseBlock:
        """Remove window ``k`` (closed); its width becomes the hint for the next windows."""
        block = self.blocks.pop(k)
        if block.usable and block.counts.size:
            self.width_hint = max(4, int(block.counts.max()))
        return block

    def recycle(self, block: DenseBlock) -> None:
        """Keep the memory of a popped block's cells, which nothing may use any more, for the next block."""
        for name, cells in block.cells.items():
            self.spare[name] = cells if cells.base is None else cells.base  # the whole array the cells are in
        block.cells = {}

    def ending_by(self, watermark: float, window: WindowSpec) -> list[int]:
        """The open windows that end at or before ``watermark``, ascending."""
        return sorted(k for k in self.blocks if k * window.every + window.size <= watermark)


def _add_arrival_rank(pos: I64, dev: I64, rows: I64) -> None:
    """Add to ``pos[rows]`` how many of ``rows`` (ascending row numbers) before each have the same device:
    its rank among the batch's readings of that device, in arrival order."""
    devices = dev.take(rows)
    order = devices.argsort(kind="stable")  # stable: a device's readings stay in arrival order
    ordered = devices.take(order)
    rank = np.arange(ordered.size, dtype=np.int64)
    rank -= ordered.searchsorted(ordered, side="left")  # position in device order minus where the device starts
    pos[rows.take(order)] += rank
