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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .clock import parse_duration

__all__ = ["WINDOW_KINDS", "WindowSpec", "grid_index"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

WINDOW_KINDS: tuple[str, ...] = ("tumbling", "hopping", "sliding", "session")


def grid_index(t: F64, step: float) -> I64:
    """``floor(t / step)`` corrected so that ``k*step <= t < (k+1)*step`` holds exactly in floating point."""
    k = np.floor(t / step).astype(np.int64)
    k = np.where((k + 1) * step <= t, k + 1, k)
    k = np.where(k * step > t, k - 1, k)
    return np.asarray(k, dtype=np.int64)


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
