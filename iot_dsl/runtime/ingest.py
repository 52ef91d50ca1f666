"""Ingestion: raw event batches (JSON lines or decoded dicts) in, admitted events stamped with event time out.

One batch path serves replay, the simulator and transports. :func:`decode_lines` turns JSON lines into dicts
(orjson, one call per batch when every line is valid) and undecodable lines into dead letters. The
:class:`SourceOperator` of a stream then runs, once per batch, mostly in C loops and numpy:

1. shape — device key (non-empty string) and event time (epoch s/ms or ISO-8601) present and readable;
2. checksum — the envelope checksum, when the stream declares one (:mod:`.ingest_rules`);
3. normalise — rename, scale and convert fields for the devices/events each rule selects;
4. types — declared field types;
5. future — device clocks ahead of the engine clock beyond ``future.tolerance``: clamp, dead-letter or accept;
   with a ``future`` policy the watermark never runs ahead of the engine clock;
6. dedup — ``(device, id)`` seen within the window is a duplicate: counted, dropped, no record;
7. late — an event more than ``lateness + allowed_lateness`` behind the highest event time seen before it (its
   watermark minus the allowed lateness) becomes a ``late`` record;
8. stamp — event time under ``TIME_KEY`` (unless only patterns read the events: they take the times from the
   :class:`~.operators.SourceBatch`); ``type``/``site``/``group`` filled from the device registry, unless
   nothing downstream can read them (:mod:`.ingest_envelope`).

Every event received ends in exactly one of processed, duplicate, dead letter or late (:class:`IngestCounters`).
After each batch the stream's watermark (highest event time minus ``lateness``) goes to ``ctx.watermarks``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from itertools import compress, repeat
from operator import itemgetter, not_
from typing import Any

import numpy as np
import orjson

from ..expr import Namespace, Scope, type_from_name
from .clock import format_time, parse_duration, parse_time
from .ingest_envelope import ENVELOPE, ENVELOPE_ORDER, envelope_needed, time_key_needed
from .ingest_rules import ChecksumVerifier, Normalizer
from .ingest_state import DEFAULT_MAX_IDS, DedupTable, IngestCounters
from .operators import TIME_KEY, BuildContext, Operator, SourceBatch, write_times
from .records import Record, dead_letter, make_record

__all__ = ["FUTURE_KEY", "FUTURE_POLICIES", "DecodedBatch", "SourceOperator", "build_source", "decode_lines"]

Event = dict[str, Any]

#: Key set on an event whose device clock ran ahead: how many seconds ahead of the engine clock it claimed to be.
#: Not a valid field name, so it never clashes with payload fields.
FUTURE_KEY = "@ahead"

#: What to do with an event whose time is ahead of the engine clock by more than ``future.tolerance``.
FUTURE_POLICIES = ("clamp", "dead_letter", "accept")

_NONE = type(None)
#: Python types a declared field type admits (None: the field is absent or null).
_ADMITS: dict[str, frozenset[type]] = {
    "number": frozenset({int, float, _NONE}),
    "integer": frozenset({int, _NONE}),
    "string": frozenset({str, _NONE}),
    "boolean": frozenset({bool, _NONE}),
}
_NUMERIC_TIME = frozenset({int, float})
_ID_TYPES = frozenset({int, str, _NONE})
_INF = float("inf")


class DecodedBatch(list[Event]):
    """Events the engine decoded from bytes: nobody else holds them, so ingestion may change them in place."""


def _decode_failure(line: Any, exc: orjson.JSONDecodeError) -> str:
    if not isinstance(line, (bytes, bytearray, memoryview, str)):
        return f"cannot decode a {type(line).__name__} (expected bytes or str)"
    msg = str(exc)
    if msg.startswith("unexpected end of data"):
        return f"truncated JSON ({msg})"
    if "empty" in exc.msg:
        return "empty input"
    if "UTF-8" in msg:
        return f"invalid UTF-8 ({msg})"
    return f"invalid JSON ({msg})"


def decode_lines(lines: Sequence[Any], at: float, node: str = "ingest") -> tuple[DecodedBatch, list[Record]]:
    """Decode JSON lines (bytes or str) with orjson: the decoded values, and a dead letter per bad line.

    A dead letter's ``event`` is the line's text (invalid UTF-8 replaced), its ``reason`` says whether the line
    was truncated, empty, not UTF-8 or otherwise invalid JSON, and ``line`` its 0-based index in the batch.
    """
    loads = orjson.loads
    out = DecodedBatch()
    bad: list[Record] = []
    rest = iter(lines)
    while True:
        try:
            out.extend(map(loads, rest))  # one C loop; on a bad line the lines before it are already in ``out``
            return out, bad
        except orjson.JSONDecodeError as exc:
            index = len(out) + len(bad)  # the bad line was consumed from ``rest``: go on after it
            line = lines[index]
            text = bytes(line).decode("utf-8", errors="replace") if isinstance(line, (bytes, bytearray, memoryview)) else line
            record = dead_letter(at, node, _decode_failure(line, exc), text if isinstance(text, str) else repr(text))
            record["line"] = index
            bad.append(record)


def _seconds(value: Any, default: float = 0.0) -> float:
    return parse_duration(value) if value is not None else default


def _type_ok(kind: str, value: Any) -> bool:
    """Whether a present (not None) value whose Python type the field's kind does not admit outright is still
    acceptable: an integer-valued float for ``integer``."""
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "string":
        return isinstance(value, str)
    return isinstance(value, bool)  # boolean


class SourceOperator(Operator):
    """Admit the events of one source stream (see the module docstring for the stages)."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext) -> None:
        super().__init__(spec, ctx)
        config = spec["config"]
        self.key: str = config["key"]
        self.time: str = config["time"]
        self.stream: str = config["stream"]
        fields: Mapping[str, str] = spec.get("fields") or {}
        declared = {k: v for k, v in fields.items() if k not in (self.key, self.time)}
        self.checks = [(k, v) for k, v in sorted(declared.items()) if v in _ADMITS]
        self.lateness = _seconds(config.get("lateness"))
        self.allowed_lateness = _seconds(config.get("allowed_lateness"))
        self.max_time = float("-inf")
        self.counters = IngestCounters()
        self.id_field: str | None = config.get("id")
        dedup = config.get("dedup")
        self.dedup = (
            DedupTable(_seconds(dedup.get("window")), int(dedup.get("max_ids") or DEFAULT_MAX_IDS))
            if isinstance(dedup, Mapping) and self.id_field
            else None
        )
        self._dedup_evicting = False
        future = config.get("future")
        self.future: tuple[float, str] | None = (
            (_seconds(future.get("tolerance")), str(future.get("policy", "clamp"))) if isinstance(future, Mapping) else None
        )
        checksum = config.get("checksum")
        self.checksum = (
            ChecksumVerifier(checksum["field"], checksum.get("algorithm", "crc32")) if isinstance(checksum, Mapping) else None
        )
        scope = Scope(
            fields={k: type_from_name(v) for k, v in (config.get("raw_fields") or fields).items()},
            namespaces={
                "device": Namespace(
                    "device",
                    {k: type_from_name(v) for k, v in ctx.device_attributes.items()},
                    getter=lambda row: ctx.attributes_of(row[self.key]),
                )
            },
        )
        self.normalizer = Normalizer(config.get("normalize") or [], scope, self.key, ctx.registry)
        #: whether admitted events get ``type``/``site``/``group`` from the registry (False: nothing reads them)
        self.fill_envelope = envelope_needed(ctx.plan, self.id)
        #: whether admitted events get their time under ``TIME_KEY`` (False: only patterns read them)
        self.stamp_events = time_key_needed(ctx.plan, self.id)
        self._envelope_cache: dict[str, dict[str, Any]] = {}
        self._envelope_version: Any = None

    # -------------------------------------------------------------------------------------------------- batch
    def process(self, batch: list[Event], records: list[Record]) -> list[Event]:
        """Admit the batch's well-formed, new, timely events; everything else becomes a record or a count."""
        counters = self.counters
        counters.received += len(batch)
        events, devices, times = self._shape(batch, records)
        if type(batch) is not DecodedBatch:
            events = list(map(dict, events))  # the caller's dicts are not ours to stamp or normalise
        if self.checksum is not None and events:
            verify = self.checksum.failure
            failures = {i: r for i, r in enumerate(map(verify, events)) if r is not None}
            events, devices, times = self._reject(failures, events, devices, times, records)
        if self.normalizer and events:
            bad: dict[int, str] = {}
            self.normalizer.apply(events, devices, bad.__setitem__)
            events, devices, times = self._reject(bad, events, devices, times, records)
        if self.checks and events:
            events, devices, times = self._reject(self._type_failures(events), events, devices, times, records)
        cap = _INF  # with a future policy the watermark never runs ahead of the engine clock
        if self.future is not None and events:
            events, devices, times, cap = self._future(events, devices, times, records)
        if self.dedup is not None and events:
            events, devices, times = self._deduplicate(events, devices, times, records)
        if events:
            events, devices, times = self._late(events, devices, times, cap, records)
        self._stamp(events, devices, times)
        counters.processed += len(events)
        if self.max_time > float("-inf"):
            watermark = self.max_time - self.lateness
            self.ctx.watermarks[self.stream] = watermark
            if self.dedup is not None:
                self.dedup.expire(watermark)
        return SourceBatch(events, times, devices, self.stamp_events) if events else []

    # ------------------------------------------------------------------------------------------------ stages
    def _shape(self, batch: list[Any], records: list[Record]) -> tuple[list[Event], list[str], np.ndarray]:
        key, time_field = self.key, self.time
        try:
            devices = list(map(itemgetter(key), batch))
            raw = list(map(itemgetter(time_field), batch))
            if set(map(type, devices)) == {str} and "" not in devices and set(map(type, raw)) <= _NUMERIC_TIME:
                times = np.array(raw, dtype=np.float64)
                if np.isfinite(times).all():
                    big = np.abs(times) > 1e11
                    if big.any():
                        times = np.where(big, times / 1000.0, times)
                    return batch, devices, times
        except (KeyError, TypeError, IndexError, OverflowError):
            pass  # something is off in this batch: check one event at a time
        return self._shape_slow(batch, records)

    def _shape_slow(self, batch: list[Any], records: list[Record]) -> tuple[list[Event], list[str], np.ndarray]:
        key, time_field = self.key, self.time
        events: list[Event] = []
        devices: list[str] = []
        times: list[float] = []
        for event in batch:
            if not isinstance(event, dict):
                self._dead_letter(event, "event is not a JSON object", records)
                continue
            device = event.get(key)
            if not isinstance(device, str) or not device:
                self._dead_letter(event, f"missing or invalid device key '{key}'", records)
                continue
            raw_time = event.get(time_field)
            if raw_time is None:
                self._dead_letter(event, f"missing event time '{time_field}'", records)
                continue
            try:
                at = parse_time(raw_time)
            except (ValueError, TypeError):
                self._dead_letter(event, f"invalid event time '{time_field}': {raw_time!r}", records)
                continue
            events.append(event)
            devices.append(device)
            times.append(at)
        return events, devices, np.array(times, dtype=np.float64)

    def _type_failures(self, events: list[Event]) -> dict[int, str]:
        bad: dict[int, str] = {}
        get = dict.get
        present = set().union(*events)  # declared fields no event of the batch carries (the envelope's) need no pass
        for name, kind in self.checks:
            admits = _ADMITS[kind]
            if name not in present or set(map(type, map(get, events, repeat(name)))) <= admits:
                continue  # one C pass per field (an absent field reads as None, which every type admits)
            # some value has another type: find which with C loops, then look closely at those only
            values = list(map(get, events, repeat(name)))
            admitted = np.fromiter(map(admits.__contains__, map(type, values)), dtype=bool, count=len(values))
            for index in np.flatnonzero(~admitted).tolist():
                value = values[index]
                if index not in bad and not _type_ok(kind, value):
                    bad[index] = f"field '{name}' should be {kind}, got {type(value).__name__}"
        return bad

    def _future(
        self, events: list[Event], devices: list[str], times: np.ndarray, records: list[Record]
    ) -> tuple[list[Event], list[str], np.ndarray, float]:
        assert self.future is not None
        tolerance, policy = self.future
        now = self.ctx.now()
        bound = now + tolerance
        ahead = np.flatnonzero(times > bound)
        if not len(ahead):
            return events, devices, times, now
        self.counters.future += len(ahead)
        offenders = sorted({devices[i] for i in ahead})
        most = float(times[ahead].max() - now)
        records.append(
            make_record(
                "alert", now, self.name, severity="warning",
                message=(
                    f"{len(ahead)} event(s) from {len(offenders)} device(s) ahead of the engine clock by up to "
                    f"{most:.3f}s (tolerance {tolerance:g}s): {policy}"
                ),
                reason="clock_ahead", policy=policy, count=len(ahead), devices=offenders[:20],
                segment=self.segment,
            )
        )
        if policy == "dead_letter":
            events, devices, times = self._reject(
                {
                    int(i): f"event time {format_time(float(times[i]))} is {float(times[i]) - now:.3f}s ahead of the "
                    f"engine clock (tolerance {tolerance:g}s)"
                    for i in ahead
                },
                events, devices, times, records,
            )
            return events, devices, times, now
        for i in ahead.tolist():
            events[i][FUTURE_KEY] = float(times[i]) - now
        if policy == "clamp":
            times = times.copy()
            times[ahead] = bound
        return events, devices, times, now

    def _deduplicate(
        self, events: list[Event], devices: list[str], times: np.ndarray, records: list[Record]
    ) -> tuple[list[Event], list[str], np.ndarray]:
        assert self.dedup is not None and self.id_field is not None
        id_field = self.id_field
        ids = list(map(dict.get, events, repeat(id_field)))
        kinds = set(map(type, ids))
        if not kinds <= _ID_TYPES:
            events, devices, times = self._reject(
                {
                    i: f"id '{id_field}' should be an integer or a string, got {type(v).__name__}"
                    for i, v in enumerate(ids)
                    if type(v) not in _ID_TYPES
                },
                events, devices, times, records,
            )
            ids = list(map(dict.get, events, repeat(id_field)))
        table = self.dedup
        evicted_before = table.evicted
        if _NONE in kinds:  # events without an id are not de-duplicated
            positions = [i for i, v in enumerate(ids) if v is not None]
            flags = table.admit_columns([devices[i] for i in positions], [ids[i] for i in positions], times[positions])
            duplicate = [False] * len(events)
            for position, flag in zip(positions, flags):
                duplicate[position] = flag
        else:
            duplicate = table.admit_columns(devices, ids, times)
        evicted = table.evicted - evicted_before
        if evicted:
            self.counters.dedup_evicted += evicted
            if not self._dedup_evicting:
                records.append(
                    make_record(
                        "alert", self.ctx.now(), self.name, severity="warning",
                        message=(
                            f"de-duplication table full ({table.max_ids} ids): forgetting the oldest ids before "
                            "their window ends"
                        ),
                        reason="dedup_full", evicted=evicted, segment=self.segment,
                    )
                )
        self._dedup_evicting = bool(evicted)
        if True not in duplicate:
            return events, devices, times
        drop = list(compress(range(len(duplicate)), duplicate))
        self.counters.duplicates += len(drop)
        if len(drop) > 32:
            keep = list(map(not_, duplicate))
            return list(compress(events, keep)), list(compress(devices, keep)), times[np.array(keep, dtype=bool)]
        # a few redeliveries: cheaper to take them out than to copy every list (the lists are this batch's own:
        # decoded by the engine, or copied in process)
        for i in reversed(drop):
            del events[i], devices[i]
        return events, devices, np.delete(times, drop)

    def _late(
        self, events: list[Event], devices: list[str], times: np.ndarray, cap: float, records: list[Record]
    ) -> tuple[list[Event], list[str], np.ndarray]:
        progress = np.minimum(times, cap) if cap < _INF else times
        before = np.empty_like(progress)
        before[0] = self.max_time
        if len(progress) > 1:
            np.maximum.accumulate(progress[:-1], out=before[1:])
            np.maximum(before[1:], self.max_time, out=before[1:])
        top = float(max(before[-1], progress[-1]))
        self.max_time = max(self.max_time, top)
        late = times < before - (self.lateness + self.allowed_lateness)
        if not late.any():
            return events, devices, times
        positions = np.flatnonzero(late)
        self.counters.late += len(positions)
        for i in positions.tolist():
            watermark = float(before[i]) - self.lateness
            records.append(
                make_record(
                    "late", float(times[i]), self.name, device=devices[i], watermark=format_time(watermark),
                    behind=round(watermark - float(times[i]), 6), event=events[i], segment=self.segment,
                )
            )
        keep = ~late
        return list(compress(events, keep.tolist())), list(compress(devices, keep.tolist())), times[keep]

    def _stamp(self, events: list[Event], devices: list[str], times: np.ndarray) -> None:
        if self.stamp_events:
            write_times(events, times.tolist())
        if self.fill_envelope:
            self._fill_envelope(events, devices)

    def _fill_envelope(self, events: list[Event], devices: list[str]) -> None:
        # type, site and group need not travel with every reading: fill them from the device registry
        bare = list(map(ENVELOPE.isdisjoint, events))
        if False in bare:
            partial = [i for i, e in enumerate(events) if not bare[i] and not ENVELOPE <= e.keys()]
            if True not in bare and not partial:
                return
        else:
            partial = []
        version = getattr(self.ctx.registry, "version", None)
        if version != self._envelope_version or self._envelope_version is None:
            self._envelope_cache = {}
            self._envelope_version = version
        cache = self._envelope_cache
        try:
            envelopes = list(map(cache.__getitem__, devices))
        except KeyError:
            attributes_of = self.ctx.attributes_of
            for device in set(devices).difference(cache):
                attrs = attributes_of(device)
                cache[device] = {name: attrs[name] for name in ENVELOPE_ORDER if name in attrs}
            envelopes = list(map(cache.__getitem__, devices))
        if True in bare:
            deque(map(dict.update, compress(events, bare), compress(envelopes, bare)), maxlen=0)
        for i in partial:
            event = events[i]
            for name, value in envelopes[i].items():
                if name not in event:
                    event[name] = value

    # ------------------------------------------------------------------------------------------------ helpers
    def _reject(
        self, bad: Mapping[int, str], events: list[Event], devices: list[str], times: np.ndarray, records: list[Record]
    ) -> tuple[list[Event], list[str], np.ndarray]:
        """Dead-letter the events at ``bad``'s indices; return the survivors."""
        if not bad:
            return events, devices, times
        for index in sorted(bad):
            self._dead_letter(events[index], bad[index], records)
        keep = [i not in bad for i in range(len(events))]
        return list(compress(events, keep)), list(compress(devices, keep)), times[np.array(keep, dtype=bool)]

    def _dead_letter(self, event: Any, reason: str, records: list[Record]) -> None:
        self.counters.dead_letters += 1
        self._dead(event, reason, records)

    # -------------------------------------------------------------------------------------------------- hooks
    def flush(self, records: list[Record]) -> list[Event]:
        """End of input: the stream is complete, its watermark goes to +inf."""
        self.ctx.watermarks[self.stream] = _INF
        return []

    def take_counters(self) -> IngestCounters:
        """The counts since the last call (the engine adds them to its stats after every batch)."""
        return self.counters.take()

    def snapshot(self) -> Any:
        """The highest event time seen (the watermark derives from it) and the de-duplication table."""
        if self.max_time == float("-inf") and not (self.dedup is not None and len(self.dedup)):
            return None
        state: dict[str, Any] = {"max_time": self.max_time if self.max_time > float("-inf") else None}
        if self.dedup is not None:
            state["dedup"] = self.dedup.snapshot()
        return state

    def restore(self, state: Any) -> None:
        """Resume the watermark and the de-duplication table where the snapshot left them."""
        max_time = state.get("max_time")
        self.max_time = float(max_time) if max_time is not None else float("-inf")
        if self.max_time > float("-inf"):
            self.ctx.watermarks[self.stream] = self.max_time - self.lateness
        if self.dedup is not None and isinstance(state.get("dedup"), Mapping):
            self.dedup.restore(state["dedup"])


def build_source(spec: Mapping[str, Any], ctx: BuildContext, key: str) -> Operator:
    """Operator builder for plan entries of kind ``source``."""
    return SourceOperator(spec, ctx)

