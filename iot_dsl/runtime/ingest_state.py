"""Ingestion state: per-stream counters and the de-duplication table (device, id) -> event time.

:class:`IngestCounters` holds what a source stream did with its input; every event a source operator receives
ends in exactly one of ``processed``, ``duplicates``, ``dead_letters`` or ``late`` (``future`` and
``dedup_evicted`` count flags and forgotten ids, not dispositions).

:class:`DedupTable` remembers the ids of recent events per device for an event-time window: an id is forgotten
once the stream's watermark has passed its event time by more than the window (swept in bulk, so an id may be
kept up to a quarter window longer). ``max_ids`` bounds the table: when it is exceeded the oldest ids are
forgotten first and counted in ``evicted``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from operator import ne, or_
from typing import Any

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
        """Return a copy of the counts and reset them to zero."""
        out = IngestCounters(**asdict(self))
        for f in fields(self):
            setattr(self, f.name, 0)
        return out


class DedupTable:
    """Recently seen ``(device, id)`` keys with their event times, bounded by an event-time window and a size."""

    def __init__(self, window: float, max_ids: int = DEFAULT_MAX_IDS) -> None:
        self.window = window
        self.max_ids = max_ids
        self.seen: dict[tuple[str, Any], float] = {}
        #: ids with event time below this have been swept
        self.cutoff = float("-inf")
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.seen)

    def admit(self, keys: Sequence[tuple[str, Any]], times: Sequence[float]) -> list[bool]:
        """Record the keys; return for each whether it is a duplicate (seen before, or earlier in this batch)."""
        seen = self.seen
        dup = list(map(seen.__contains__, keys))  # C loops throughout: this runs for every event
        count = len(keys)
        first = dict(zip(reversed(keys), reversed(range(count))))  # key -> its first position in the batch
        if len(first) != count:  # the same key twice in this batch: later copies are duplicates too
            dup = list(map(or_, dup, map(ne, map(first.__getitem__, keys), range(count))))
        seen.update(zip(keys, times))
        if len(seen) > self.max_ids:
            self._evict()
        return dup

    def expire(self, watermark: float) -> None:
        """Forget ids whose event time is more than the window behind ``watermark`` (in bulk, amortised)."""
        cutoff = watermark - self.window
        if cutoff <= self.cutoff + self.window / 4:
            return
        self.cutoff = cutoff
        self.seen = {k: t for k, t in self.seen.items() if t >= cutoff}

    def _evict(self) -> None:
        # forget the oldest ids down to 90% of the bound, so eviction is amortised over many events
        keep = max(1, int(self.max_ids * 0.9))
        ordered = sorted(self.seen.items(), key=lambda item: item[1])
        dropped = len(ordered) - keep
        self.evicted += dropped
        self.seen = dict(ordered[dropped:])

    def snapshot(self) -> dict[str, Any]:
        """JSON-friendly state: the remembered keys with their times, and the sweep cutoff."""
        return {
            "cutoff": self.cutoff if self.cutoff > float("-inf") else None,
            "seen": [[device, ident, t] for (device, ident), t in self.seen.items()],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take back :meth:`snapshot`'s state."""
        cutoff = state.get("cutoff")
        self.cutoff = float(cutoff) if cutoff is not None else float("-inf")
        self.seen = {(item[0], item[1]): float(item[2]) for item in state.get("seen", [])}
