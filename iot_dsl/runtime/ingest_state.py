"""Ingestion state: per-stream counters and the de-duplication table (device, id) -> event time.

:class:`IngestCounters` holds what a source stream did with its input; every event a source operator receives
ends in exactly one of ``processed``, ``duplicates``, ``dead_letters`` or ``late`` (``future`` and
``dedup_evicted`` count flags and forgotten ids, not dispositions).

:class:`DedupTable` remembers the ids of recent events per device for an event-time window: an id is forgotten
once the stream's watermark has passed its event time by more than the window (swept in bulk, so an id may be
kept up to a quarter window longer). ``max_ids`` bounds the table: when it is exceeded the oldest ids are
forgotten first (equal times: by device, in the order devices were first seen, then ids in the order they came)
and counted in ``evicted``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import compress
from operator import is_not, itemgetter
from typing import Any

import numpy as np

__all__ = ["DEFAULT_MAX_IDS", "DedupTable", "IngestCounters"]

#: Default bound of a de-duplication table (ids remembered per stream).
DEFAULT_MAX_IDS = 1_000_000


@dataclass
class IngestCounters:
    """What a source stream did with its input (the dispositions add up to ``received``)."""

    received: int = 0
    processed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    late: int = 0
    #: events whose device clock ran ahead of the engine clock beyond the tolerance (any policy)
    future: int = 0
    #: ids forgotten before their window ended because the table reached ``max_ids``
    dedup_evicted: int = 0

    def add(self, other: IngestCounters) -> None:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def take(self) -> IngestCounters:
        """Return a copy of the counts and reset them to zero (after every batch: kept cheap)."""
        out = IngestCounters(**vars(self))
        self.__init__()  # type: ignore[misc]
        return out


class DedupTable:
    """Recently seen ``(device, id)`` keys with their event times, bounded by an event-time window and a size.

    Kept as one small ``id -> event time`` dict per device: no tuple per id, and dicts of ints or strings and
    floats that the garbage collector never has to walk (a flat table of a million tuple keys costs more in
    collections than in lookups).
    """

    def __init__(self, window: float, max_ids: int = DEFAULT_MAX_IDS) -> None:
        self.window = window
        self.max_ids = max_ids
        #: device -> id -> event time
        self.devices: defaultdict[str, dict[Any, float]] = defaultdict(dict)
        self.size = 0
        #: ids with event time below this have been swept
        self.cutoff = float("-inf")
        self.evicted = 0

    def __len__(self) -> int:
        return self.size

    @property
    def seen(self) -> dict[tuple[str, Any], float]:
        """The remembered ``(device, id) -> event time`` as one dict (built on each access: for inspection)."""
        return {(device, ident): t for device, ids in self.devices.items() for ident, t in ids.items()}

    def admit(self, keys: Sequence[tuple[str, Any]], times: Sequence[float] | np.ndarray) -> list[bool]:
        """Record the ``(device, id)`` keys; return for each whether it is a duplicate (see :meth:`admit_columns`)."""
        return self.admit_columns([k[0] for k in keys], [k[1] for k in keys], times)

    def admit_columns(
        self, devices: Sequence[str], ids: Sequence[Any], times: Sequence[float] | np.ndarray
    ) -> list[bool]:
        """Record the ids of a batch (parallel columns); return for each whether it is a duplicate (seen before,
        or earlier in this batch). A duplicate's event time replaces the one remembered for it (the last copy wins).
        """
        own = list(map(self.devices.__getitem__, devices))  # a device seen for the first time gets an empty table
        values = np.asarray(times, dtype=np.float64).tolist()  # fresh float objects: identity tells who was stored
        stored = list(map(dict.setdefault, own, ids, values))  # C loops throughout: this runs for every event
        dup = list(map(is_not, stored, values))
        duplicates = dup.count(True)
        if duplicates:
            for index in compress(range(len(dup)), dup):
                own[index][ids[index]] = values[index]
        self.size += len(dup) - duplicates
        if self.size > self.max_ids:
            self._evict()
        return dup

    def expire(self, watermark: float) -> None:
        """Forget ids whose event time is more than the window behind ``watermark`` (in bulk, amortised)."""
        cutoff = watermark - self.window
        if cutoff <= self.cutoff + self.window / 4:
            return
        self.cutoff = cutoff
        kept: defaultdict[str, dict[Any, float]] = defaultdict(dict)
        for device, ids in self.devices.items():
            if min(ids.values()) < cutoff:
                ids = {ident: t for ident, t in ids.items() if t >= cutoff}
            if ids:
                kept[device] = ids
        self.devices = kept
        self.size = sum(map(len, kept.values()))

    def _evict(self) -> None:
        # forget the oldest ids down to 90% of the bound, so eviction is amortised over many events
        keep = max(1, int(self.max_ids * 0.9))
        ordered = sorted(self._entries(), key=itemgetter(2))
        dropped = len(ordered) - keep
        self.evicted += dropped
        self._load(ordered[dropped:])

    def _entries(self) -> list[tuple[str, Any, float]]:
        return [(device, ident, t) for device, ids in self.devices.items() for ident, t in ids.items()]

    def _load(self, entries: Sequence[Sequence[Any]]) -> None:
        tables: defaultdict[str, dict[Any, float]] = defaultdict(dict)
        for device, ident, t in entries:
            tables[device][ident] = float(t)
        self.devices = tables
        self.size = sum(map(len, tables.values()))

    def snapshot(self) -> dict[str, Any]:
        """JSON-friendly state: the remembered keys with their times, and the sweep cutoff."""
        return {
            "cutoff": self.cutoff if self.cutoff > float("-inf") else None,
            "seen": [list(entry) for entry in self._entries()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take back :meth:`snapshot`'s state."""
        cutoff = state.get("cutoff")
        self.cutoff = float(cutoff) if cutoff is not None else float("-inf")
        self._load([(item[0], item[1], item[2]) for item in state.get("seen", [])])
