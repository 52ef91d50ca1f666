"""Bounded ingest queue: offers of raw events in, batches pushed through the engine out, overload declared.

A producer (a transport callback, a file reader) :meth:`IngestQueue.offer` s events (JSON lines as bytes/str,
or decoded dicts) faster or slower than the engine :meth:`IngestQueue.drain` s them. The queue holds at most
``max_events``; what happens to an offer that does not fit is the stream's declared ``queue.on_full``:

* ``backpressure`` (the default, and the only choice for ``critical`` streams): the queue takes what fits and
  the :class:`Offer` says how many it refused; the producer keeps those and offers them again later. Nothing is
  dropped.
* ``shed``: what does not fit is dropped, counted in ``engine.stats.shed``.
* ``sample``: while overloaded only every k-th offered event (``keep: 1/k``) is taken, when it fits; the rest is
  dropped and counted in ``engine.stats.shed``, so the engine sees an evenly spread sample.

Overload starts when an offer does not fit and ends when a drain brings the queue below half its capacity. Its
start and end are ``alert`` records (``reason: shedding_started`` / ``shedding_stopped``), never silent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .records import Record, make_record

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["QUEUE_POLICIES", "IngestQueue", "Offer"]

#: What a full queue does with what does not fit.
QUEUE_POLICIES = ("backpressure", "shed", "sample")


@dataclass
class Offer:
    """What became of an offer: taken into the queue, dropped (shed/sampled out), or refused (backpressure)."""

    accepted: int = 0
    shed: int = 0
    refused: int = 0
    records: list[Record] = field(default_factory=list)

    @property
    def backpressure(self) -> bool:
        """True when the producer must hold back and offer the refused events again."""
        return self.refused > 0


class IngestQueue:
    """The bounded queue in front of an engine for one source stream (default: the workflow's only stream)."""

    def __init__(self, engine: Engine, stream: str | None = None) -> None:
        sources = {
            op["name"]: op["config"] for seg in engine.plan.segments for op in seg["operators"] if op["kind"] == "source"
        }
        if stream is None:
            if len(sources) != 1:
                raise ValueError(f"name the stream the queue feeds (streams: {', '.join(sorted(sources)) or 'none'})")
            stream = next(iter(sources))
        if stream not in sources:
            raise ValueError(f"unknown stream {stream!r} (streams: {', '.join(sorted(sources))})")
        config = sources[stream].get("queue") or {}
        critical = bool(sources[stream].get("critical"))
        self.engine = engine
        self.stream = stream
        self.max_events = int(config.get("max_events", 100_000))
        self.policy: str = config.get("on_full", "backpressure" if critical else "shed")
        keep = float(config.get("keep", 0.1))
        self.every = max(1, round(1 / keep))
        self.items: deque[Any] = deque()
        self.overloaded = False
        self._episode_shed = 0
        self._sample_phase = 0

    def __len__(self) -> int:
        return len(self.items)

    def offer(self, items: Sequence[Any]) -> Offer:
        """Take what the policy allows of ``items`` (JSON lines or dicts); say what became of the rest."""
        room = self.max_events - len(self.items)
        result = Offer()
        if len(items) <= room and not (self.overloaded and self.policy == "sample"):
            self.items.extend(items)
            result.accepted = len(items)
            return result
        if self.policy == "backpressure":
            taken = max(room, 0)
            self.items.extend(items[:taken])
            result.accepted, result.refused = taken, len(items) - taken
            return result
        if not self.overloaded:
            self.overloaded = True
            self._episode_shed = 0
            self._alert(
                result.records, "shedding_started",
                f"ingest queue of stream '{self.stream}' is full ({self.max_events} events): {self.policy} started",
            )
        if self.policy == "shed":
            taken = max(room, 0)
            self.items.extend(items[:taken])
            result.accepted = taken
        else:  # sample: every k-th offered event, while there is room
            for item in items:
                self._sample_phase = (self._sample_phase + 1) % self.every
                if self._sample_phase == 0 and len(self.items) < self.max_events:
                    self.items.append(item)
                    result.accepted += 1
        result.shed = len(items) - result.accepted
        self._episode_shed += result.shed
        stats = self.engine.stats
        stats.shed += result.shed
        stats.events_in += result.shed
        stats.records["alert"] += len(result.records)
        return result

    def drain(self, max_events: int | None = None) -> list[Record]:
        """Push up to ``max_events`` queued events (all by default) through the engine, in order; its records."""
        count = len(self.items) if max_events is None else min(max_events, len(self.items))
        batch = [self.items.popleft() for _ in range(count)]
        records: list[Record] = []
        start = 0
        while start < len(batch):  # consecutive runs of lines and of dicts keep their order
            raw = isinstance(batch[start], (bytes, bytearray, str))
            end = start
            while end < len(batch) and isinstance(batch[end], (bytes, bytearray, str)) == raw:
                end += 1
            run = batch[start:end]
            records.extend(self.engine.push_raw(run) if raw else self.engine.push(run))
            start = end
        if self.overloaded and len(self.items) < self.max_events / 2:
            self.overloaded = False
            stopped: list[Record] = []
            self._alert(
                stopped, "shedding_stopped",
                f"ingest queue of stream '{self.stream}' recovered: {self._episode_shed} event(s) dropped by {self.policy}",
            )
            stopped[0]["shed"] = self._episode_shed
            self.engine.stats.records["alert"] += 1
            records.extend(stopped)
        return records

    def _alert(self, records: list[Record], reason: str, message: str) -> None:
        records.append(
            make_record(
                "alert", self.engine.clock.now(), self.stream, severity="warning", message=message, reason=reason,
                policy=self.policy, capacity=self.max_events,
            )
        )
