"""The pattern benchmark's workload: a workflow with one 3-step pattern, and the same pattern hand-coded.

Imported by ``benchmarks/events.py`` (not a script). ``PATTERN_YAML`` is the workflow the engine runs;
:func:`hand_matcher` is the baseline (plain per-device dicts and lists, no engine) and a cross-check;
:func:`project_matches` turns the engine's ``match`` records into the same tuples so the two can be compared.

Redelivered duplicates (same device and ``seq``) are dropped first (the stream declares ``id: seq`` and
``dedup``). The pattern, per device: a reading over 90 (``hot``), then the first later reading more than 2 degrees hotter
(``hotter``, relaxed contiguity), both within 30 s, and then no acknowledgement (``status == 'ack'``) for 10 s
after ``hotter``; after a match, partial matches that started at or before its last event are dropped
(skip-past-last). Event times are the ``ts`` field in epoch seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["PATTERN_YAML", "PATTERN_NAME", "hand_matcher", "project_matches"]

PATTERN_NAME = "overheat"

PATTERN_YAML = """\
# yaml-language-server: $schema=../iot_dsl/schemas/workflow.schema.json
workflow: pattern-bench
streams:
  telemetry:
    key: device
    time: ts
    id: seq
    dedup: {window: 2m, max_ids: 2000000}
    lateness: 5s
    fields: {temp: number, status: string}
patterns:
  overheat:
    stream: telemetry
    per: device
    within: 30s
    sequence:
      - {name: hot, when: "temp > 90"}
      - {name: hotter, when: "temp > hot.temp + 2"}
      - {absent: "status == 'ack'", for: 10s}
"""

WITHIN = 30.0
QUIET = 10.0


def hand_matcher(events: list[dict[str, Any]]) -> list[tuple[Any, float, float]]:
    """The pattern hand-coded with per-device dicts: sorted ``(device, hot ts, hotter ts)`` tuples."""
    by_device: dict[Any, list[tuple[float, float, bool]]] = {}
    seen: set[tuple[Any, Any]] = set()
    for e in events:
        if "seq" in e:
            ident = (e["device"], e["seq"])
            if ident in seen:
                continue  # a redelivered duplicate
            seen.add(ident)
        by_device.setdefault(e["device"], []).append((float(e["ts"]), e["temp"], e["status"] == "ack"))
    found: list[tuple[Any, float, float]] = []
    for device, readings in by_device.items():
        readings.sort(key=lambda r: r[0])
        waiting: list[tuple[float, float, int]] = []  # (hot ts, hot temp, index)
        quiet: list[tuple[float, float, float, int, int]] = []  # (deadline, hot ts, hotter ts, hot index, index)
        for index, (t, temp, ack) in enumerate(readings):
            while quiet and quiet[0][0] < t:
                _, start, end, _, last = quiet.pop(0)
                found.append((device, start, end))
                waiting = [w for w in waiting if w[2] > last]
                quiet = [q for q in quiet if q[3] > last]
            if ack:
                quiet = []
            still = []
            for hot_t, hot_temp, hot_index in waiting:
                if hot_t + WITHIN <= t:
                    continue
                if temp > hot_temp + 2:
                    quiet.append((t + QUIET, hot_t, t, hot_index, index))
                else:
                    still.append((hot_t, hot_temp, hot_index))
            if temp > 90:
                still.append((t, temp, index))
            waiting = still
        while quiet:
            _, start, end, _, last = quiet.pop(0)
            found.append((device, start, end))
            quiet = [q for q in quiet if q[3] > last]
    return sorted(found)


def project_matches(records: Iterable[Mapping[str, Any]]) -> list[tuple[Any, float, float]]:
    """The engine's match records of the pattern as sorted ``(device, hot ts, hotter ts)`` tuples."""
    return sorted(
        (r["key"]["device"], r["steps"]["hot"][0]["ts"], r["steps"]["hotter"][0]["ts"])
        for r in records
        if r["kind"] == "match" and r["node"] == PATTERN_NAME
    )
