"""Records: what the engine emits. Every record is a JSON-serializable dict with ``kind``, ``at`` and ``node``.

``at`` is the event time the record is about, as ISO-8601 UTC with milliseconds; ``node`` is the name of the
workflow element that produced it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from .clock import format_time

#: Records of one batch share few distinct times: format each once. Kept small on purpose: every cached time
#: keeps its float (often an event's) and string alive, and thousands of such survivors scattered over the heap
#: keep the allocator from handing out compact memory to the events that follow (with 8,192 entries, runs after
#: a long one were visibly slower in profiles).
_format_at = lru_cache(maxsize=256)(format_time)

__all__ = ["Record", "make_record", "dead_letter", "RECORD_KINDS"]

Record = dict[str, Any]

#: Record kinds the engine emits (capability modules add theirs to this vocabulary).
RECORD_KINDS: tuple[str, ...] = (
    "event",
    "match",
    "pattern_timeout",
    "aggregate",
    "anomaly",
    "alert",
    "command",
    "command_result",
    "orchestration",
    "twin",
    "conflict",
    "late",
    "dead_letter",
)


def make_record(kind: str, at: float, node: str, **fields: Any) -> Record:
    """Build a record: ``{"kind", "at", "node", **fields}``."""
    record: Record = {"kind": kind, "at": _format_at(at), "node": node}
    record.update(fields)
    return record


def dead_letter(at: float, node: str, reason: str, event: Any, segment: str | None = None) -> Record:
    """A record for input the engine could not process; ``event`` keeps the original so nothing is lost."""
    record = make_record("dead_letter", at, node, reason=reason, event=event)
    if segment is not None:
        record["segment"] = segment
    return record
