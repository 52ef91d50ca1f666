"""The interpreter: a plan in, records out. Runs every segment in one process, or one named segment.

``Engine(plan)`` builds each segment's operators once from the plan, then ``push(batch)`` routes each event to
the segment that ingests it (the gateway serving its device, or the cloud), runs the operators in data-flow
order, carries events across segment cuts through the plan's links over the Transport, and returns the records
produced. Time comes only from the injected Clock; nothing here reads the wall clock.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import orjson

from ..devices import Device, DeviceRegistry
from ..errors import ExprError, PlanError
from ..expr import Scope, compile_expr, parse_expr, type_from_name
from ..plan import Plan, load_plan
from ..storage import MemoryStore, Store
from ..transports import MemoryTransport, Transport
from .clock import Clock, VirtualClock, parse_time
from .ingest import DecodedBatch, SourceOperator, decode_lines
from .ingest_state import IngestCounters
from .operators import BuildContext, Operator, build_operator, stamped
from .records import Record, dead_letter

__all__ = ["Engine", "EngineStats", "link_topic"]


def link_topic(workflow: str, link_id: str) -> str:
    """The transport topic a link's traffic travels on (safe for MQTT and NATS: no wildcard characters)."""
    return f"iot-dsl/{re.sub(r'[^A-Za-z0-9_-]', '_', workflow)}/link/{re.sub(r'[^A-Za-z0-9_-]', '_', link_id)}"


@dataclass
class EngineStats:
    """Counters a run reports: events in, what ingestion did with them, and records out by kind.

    Every event this engine takes in ends in exactly one disposition, so
    ``events_in == processed + duplicates + dead_letters + late + shed`` (:meth:`reconciles`). ``dead_letters``
    counts input events refused at ingestion (undecodable, unroutable or malformed); records about processed
    events that fail later (a filter or rule error) are counted in ``records["dead_letter"]`` only. ``future``
    counts events whose device clock ran ahead (whatever the policy did with them); ``dedup_evicted`` ids a full
    de-duplication table forgot early. Events for segments another process runs are not counted.
    """

    events_in: int = 0
    records: Counter[str] = field(default_factory=Counter)
    processed: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    late: int = 0
    shed: int = 0
    future: int = 0
    dedup_evicted: int = 0

    def absorb(self, counters: IngestCounters) -> None:
        """Add a source operator's counts."""
        self.processed += counters.processed
        self.duplicates += counters.duplicates
        self.dead_letters += counters.dead_letters
        self.late += counters.late
        self.future += counters.future
        self.dedup_evicted += counters.dedup_evicted

    def reconciles(self) -> bool:
        """Whether every event in is accounted for exactly once."""
        return self.events_in == self.processed + self.duplicates + self.dead_letters + self.late + self.shed

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "events_in": self.events_in,
            "processed": self.processed,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "late": self.late,
            "shed": self.shed,
            "future": self.future,
            "dedup_evicted": self.dedup_evicted,
            "records": dict(sorted(self.records.items())),
        }


@dataclass
class _Segment:
    name: str
    kind: str
    operators: list[Operator]
    #: operator id -> ids of successors in this segment
    local_successors: dict[str, list[str]]
    #: operator id -> link topics its output crosses
    outgoing: dict[str, list[str]]
    inbox: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Engine:
    """Run a plan: ``Engine(plan, clock=..., transport=..., store=..., registry=...)``, then ``push`` batches.

    ``threads`` bounds the threads an operator uses to close large windows (1: the caller's thread only; default:
    this machine's CPU count, at most 4); results do not depend on it."""

    def __init__(
        self,
        plan: Plan | Mapping[str, Any] | str,
        *,
        clock: Clock | None = None,
        transport: Transport | None = None,
        store: Store | None = None,
        registry: DeviceRegistry | None = None,
        segment: str | None = None,
        learn_devices: bool = True,
        threads: int | None = None,
    ) -> None:
        self.plan = load_plan(plan)
        #: threads operators may use for passes over large blocks (None: this machine's CPU count, capped)
        self.threads = threads
        self.clock: Clock = clock if clock is not None else VirtualClock()
        self.transport: Transport = transport if transport is not None else MemoryTransport()
        self.store: Store = store if store is not None else MemoryStore()
        self.registry = registry if registry is not None else DeviceRegistry()
        self.learn_devices = learn_devices
        self.stats = EngineStats()
        data = self.plan.data
        self.name = self.plan.name
        if segment is not None:
            self.plan.segment(segment)  # raises PlanError for an unknown segment
        self.running = [s["name"] for s in self.plan.segments if segment is None or s["name"] == segment]
        self._gateway_of_cache: dict[str, str | None] = {}
        self._gateways = self._compile_gateways(data["gateways"])
        self._key_of, self._source_of = self._device_keys()
        #: segment -> (source stream -> watermark). Each gateway keeps its own; the cloud's watermark for a stream
        #: ingested on gateways is the lowest among the gateways that have one (see _merge_edge_watermarks).
        self.watermarks: dict[str, dict[str, float]] = {}
        self._source_segments = self._sources()
        self._time_field = {
            op["name"]: op["config"]["time"] for s in self.plan.segments for op in s["operators"] if op["kind"] == "source"
        }
        self._default_stream = next(iter(sorted(self._source_segments)), None) if len(self._source_segments) == 1 else None
        self._segments = {name: self._build_segment(self.plan.segment(name)) for name in self.running}
        #: operator id -> fingerprint of what it does (kind and configuration): state is restored across a reload
        #: only when it is unchanged
        self._spec_sha = {
            op["id"]: hashlib.sha256(
                orjson.dumps({"kind": op["kind"], "config": op.get("config")}, option=orjson.OPT_SORT_KEYS)
            ).hexdigest()[:16]
            for seg in self.plan.segments
            for op in seg["operators"]
        }
        self._order = [n for n in self.running if n != "cloud"] + [n for n in self.running if n == "cloud"]
        self._sinks = [op for s in self.plan.segments if s["name"] in self.running for op in s["operators"] if op["kind"] == "sink"]
        self._subscribe_links()
        #: whether any operator reacts to time (then every push runs every segment's on_time)
        self._timed = any(
            type(op).on_time is not Operator.on_time for seg in self._segments.values() for op in seg.operators
        )

    # ----------------------------------------------------------------------------------------------- building
    def _compile_gateways(self, gateways: Mapping[str, Any]) -> list[tuple[str, Callable[[Any], Any]]]:
        scope = Scope(fields={k: type_from_name(v) for k, v in self.plan.data["device_attributes"].items()})
        return [(name, compile_expr(parse_expr(spec["devices"]), scope)) for name, spec in sorted(gateways.items())]

    def _device_keys(self) -> tuple[dict[str, str], dict[str, str]]:
        """For every operator: the device-key field and the name of the source stream its events come from."""
        keys: dict[str, str] = {}
        sources: dict[str, str] = {}
        ops = {op["id"]: op for seg in self.plan.segments for op in seg["operators"]}
        for op_id, op in ops.items():
            cursor = op
            while cursor["kind"] != "source" and cursor.get("inputs"):
                cursor = ops[cursor["inputs"][0]]
            keys[op_id] = cursor["config"].get("key", "device") if cursor["kind"] == "source" else "device"
            if cursor["kind"] == "source":
                sources[op_id] = cursor["name"]
        return keys, sources

    def _sources(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for seg in self.plan.segments:
            for op in seg["operators"]:
                if op["kind"] == "source":
                    out.setdefault(op["name"], []).append(seg["name"])
        return out

    def _build_segment(self, spec: Mapping[str, Any]) -> _Segment:
        name = spec["name"]
        ctx = BuildContext(
            segment=name,
            device_attributes=self.plan.data["device_attributes"],
            device_types=self.plan.data["device_types"],
            attributes_of=self.registry.attributes,
            devices_in_scope=(lambda: iter(self.registry)) if name == "cloud" else (lambda: self._served_by(name)),
            now=self.clock.now,
            workflow=self.name,
            clock=self.clock,
            transport=self.transport,
            store=self.store,
            registry=self.registry,
            plan=self.plan.data,
            watermarks=self.watermarks.setdefault(name, {}),
            source_of=self._source_of,
            threads=self.threads,
        )
        members = {op["id"] for op in spec["operators"]}
        operators = [
            build_operator(op, ctx, self._key_of[op["id"]]) for op in spec["operators"] if op["kind"] != "sink"
        ]
        local = {op["id"]: [o for o in op.get("outputs", []) if o in members] for op in spec["operators"]}
        outgoing: dict[str, list[str]] = {}
        for link in self.plan.links:
            if link["from"]["segment"] == name and link["from"]["node"] is not None:
                outgoing.setdefault(link["from"]["node"], []).append(link_topic(self.name, link["id"]))
        return _Segment(name, spec["kind"], operators, local, outgoing)

    def _subscribe_links(self) -> None:
        for link in self.plan.links:
            target = link["to"]["segment"]
            if target in self._segments and link["to"]["node"] is not None:
                segment, node = self._segments[target], link["to"]["node"]

                def deliver(_topic: str, batch: Any, segment: _Segment = segment, node: str = node) -> None:
                    segment.inbox.setdefault(node, []).extend(batch)

                self.transport.subscribe(link_topic(self.name, link["id"]), deliver)

    # ------------------------------------------------------------------------------------------------ devices
    def _served_by(self, gateway: str) -> Iterator[Device]:
        for device in self.registry:
            if self.gateway_of(device.id) == gateway:
                yield device

    def gateway_of(self, device_id: str, event: Mapping[str, Any] | None = None) -> str | None:
        """The gateway serving a device (first gateway whose ``devices`` expression holds), or None."""
        if device_id in self._gateway_of_cache:
            return self._gateway_of_cache[device_id]
        attrs: Mapping[str, Any] = self.registry.attributes(device_id)
        if not attrs and event is not None:
            attrs = {"id": device_id, **{k: event[k] for k in ("type", "site", "group") if k in event}}
        owner = None
        for name, predicate in self._gateways:
            try:
                if predicate(attrs):
                    owner = name
                    break
            except (ExprError, KeyError, TypeError):
                continue
        self._gateway_of_cache[device_id] = owner
        return owner

    def _learn(self, device_id: str, event: Mapping[str, Any]) -> None:
        if device_id in self.registry:
            return
        self.registry.add(
            Device(
                id=device_id,
                type=str(event.get("type", "unknown")),
                site=str(event.get("site", "")),
                group=str(event.get("group", event.get("site", ""))),
                lat=0.0,
                lon=0.0,
                firmware=str(event.get("firmware", "0.0.0")),
                attrs={},
            )
        )

    # ------------------------------------------------------------------------------------------------ running
    @property
    def segments(self) -> list[str]:
        """Names of the segments this engine runs."""
        return list(self.running)

    def push(self, events: Iterable[Any]) -> list[Record]:
        """Process one batch of events; return the records it produced (in a deterministic order)."""
        records: list[Record] = []
        self._admit(events if isinstance(events, list) else list(events), records)
        return self._run_batch(records)

    def push_raw(self, lines: Sequence[bytes | str]) -> list[Record]:
        """Decode a batch of JSON lines with orjson and process it like :meth:`push`.

        Lines that do not decode (invalid or truncated JSON, invalid UTF-8, empty) become dead letters with the
        reason and the line's text; the rest go through the same path as :meth:`push`.
        """
        records: list[Record] = []
        events, bad = decode_lines(lines, self.clock.now())
        if bad:
            self.stats.events_in += len(bad)
            self.stats.dead_letters += len(bad)
            records.extend(bad)
        self._admit(events, records)
        return self._run_batch(records)

    def _admit(self, events: list[Any], records: list[Record]) -> None:
        """Put each event in the inbox of the source operator that ingests it (dead letters for the rest)."""
        owned = type(events) is DecodedBatch
        target = self._whole_batch_target(events)
        if target is not None:
            self.stats.events_in += len(events)
            inbox = self._segments[target[0]].inbox
            inbox.setdefault(target[1], DecodedBatch() if owned else []).extend(events)
            return
        stats = self.stats
        for event in events:
            before = len(records)
            routed = self._route(event, records)
            if routed is not None:
                stats.events_in += 1
                segment, op_id = routed
                self._segments[segment].inbox.setdefault(op_id, DecodedBatch() if owned else []).append(event)
            elif len(records) > before:
                stats.events_in += 1
                stats.dead_letters += 1
            # else: the event belongs to a segment another process runs

    def _whole_batch_target(self, events: list[Any]) -> tuple[str, str] | None:
        """The one inbox a whole batch goes to when no event needs routing on its own, else None."""
        stream = self._default_stream
        if stream is None or not events:
            return None
        segments = self._source_segments[stream]
        if segments == ["cloud"] and "cloud" in self._segments:
            segment = "cloud"
        elif len(self.running) == 1 and self.running[0] in segments:
            segment = self.running[0]
        else:
            return None
        try:
            named = set(map(dict.get, events, repeat("stream")))  # TypeError: something that is not a dict
        except TypeError:
            return None
        if not named <= {None, stream}:
            return None
        return segment, f"source:{stream}"

    def _run_batch(self, records: list[Record]) -> list[Record]:
        now = self.clock.now()
        for name in self._order:
            self._run_segment(self._segments[name], records, lambda op, out: op.on_time(now, out))
        self._collect_ingest()
        self._finish(records)
        return records

    def _collect_ingest(self) -> None:
        sources = self.__dict__.get("_ingest_operators")
        if sources is None:
            sources = [op for seg in self._segments.values() for op in seg.operators if isinstance(op, SourceOperator)]
            self.__dict__["_ingest_operators"] = sources
        for op in sources:
            self.stats.absorb(op.take_counters())

    def advance_to(self, t: float) -> list[Record]:
        """Move the clock to ``t`` (never backwards) and let every operator fire what is due; return the records."""
        advance = getattr(self.clock, "advance_to", None)
        if advance is not None:
            advance(t)
        now = self.clock.now()
        records: list[Record] = []
        for name in self._order:
            self._run_segment(self._segments[name], records, lambda op, out: op.on_time(now, out), force=True)
        self._finish(records)
        return records

    def finish(self) -> list[Record]:
        """End of input: every operator emits what it still holds (open windows, pending timers)."""
        records: list[Record] = []
        for name in self._order:
            self._run_segment(self._segments[name], records, lambda op, out: op.flush(out), force=True)
        self._finish(records)
        return records

    def snapshot(self) -> dict[str, Any]:
        """State of every stateful operator, JSON-serializable, keyed by segment and operator id, with a
        fingerprint of each such operator's definition under ``"specs"`` (see :meth:`restore`)."""
        state: dict[str, Any] = {}
        specs: dict[str, Any] = {}
        for name in self._order:
            for op in self._segments[name].operators:
                value = op.snapshot()
                if value is not None:
                    state.setdefault(name, {})[op.id] = value
                    specs.setdefault(name, {})[op.id] = self._spec_sha[op.id]
        return {"plan_sha256": self.plan.data["workflow"]["sha256"], "operators": state, "specs": specs}

    def restore(self, snapshot: Mapping[str, Any]) -> list[str]:
        """Give operators back the state :meth:`snapshot` took; return the ids of the operators whose state was
        left out because their definition changed since (a reloaded workflow keeps the in-flight state of what
        it did not change). Operators absent from the plan are ignored; a snapshot without ``"specs"`` (an
        older one) restores every operator it names. Raises ``PlanError`` (code ``bad_snapshot``) for state that
        an operator cannot take back."""
        operators = snapshot.get("operators", {})
        specs = snapshot.get("specs")
        changed: list[str] = []
        for name in self._order:
            saved = operators.get(name, {})
            for op in self._segments[name].operators:
                if op.id not in saved:
                    continue
                if specs is not None and (specs.get(name) or {}).get(op.id) != self._spec_sha[op.id]:
                    changed.append(op.id)
                    continue
                try:
                    op.restore(saved[op.id])
                except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                    raise PlanError(
                        f"the snapshot's state of '{op.id}' does not fit it ({type(exc).__name__}: {exc})",
                        code="bad_snapshot", hint="restore a snapshot this engine's plan took",
                    ) from exc
        return changed

    def run(self, batches: Iterable[Iterable[Any]]) -> Iterator[Record]:
        """Push each batch in turn, yielding records as they are produced."""
        for batch in batches:
            yield from self.push(batch)

    def _route(self, event: Any, records: list[Record]) -> tuple[str, str] | None:
        now = self.clock.now()
        if not isinstance(event, dict):
            records.append(dead_letter(now, "ingest", "event is not a JSON object", event))
            return None
        stream = event.get("stream", self._default_stream)
        if not isinstance(stream, str) or (segments := self._source_segments.get(stream)) is None:
            known = ", ".join(sorted(self._source_segments)) or "none"
            reason = "event names no stream" if stream is None else f"unknown stream {stream!r}"
            records.append(dead_letter(now, "ingest", f"{reason} (streams: {known})", event))
            return None
        op_id = f"source:{stream}"
        if segments == ["cloud"]:
            return ("cloud", op_id) if "cloud" in self._segments else None
        if len(self.running) == 1:
            return (self.running[0], op_id) if self.running[0] in segments else None
        device = event.get(self._key_of.get(op_id, "device"))
        if not isinstance(device, str):
            records.append(dead_letter(now, stream, "missing or invalid device key", event))
            return None
        if self.learn_devices:
            self._learn(device, event)
        owner = self.gateway_of(device, event)
        if owner is None or owner not in segments:
            records.append(dead_letter(now, stream, f"device {device!r} is not served by any gateway", event))
            return None
        return owner, op_id

    def _merge_edge_watermarks(self, cloud: str) -> None:
        """Cloud operators fed over uplinks see, per stream, the lowest watermark among the gateways ingesting it.

        A gateway that has not reported yet does not hold the cloud back (it counts as idle).
        """
        target = self.watermarks.setdefault(cloud, {})
        for stream, segments in self._source_segments.items():
            if cloud in segments:
                continue
            marks = [self.watermarks[s][stream] for s in segments if stream in self.watermarks.get(s, {})]
            if marks:
                target[stream] = max(min(marks), target.get(stream, float("-inf")))

    def _run_segment(
        self,
        segment: _Segment,
        records: list[Record],
        hook: Callable[[Operator, list[Record]], list[dict[str, Any]]],
        force: bool = False,
    ) -> None:
        if segment.name == "cloud":
            self._merge_edge_watermarks(segment.name)
        if not segment.inbox and not force and not self._timed:
            return
        produced_before = len(records)
        for op in segment.operators:
            batch = segment.inbox.pop(op.id, None)
            out = op.process(batch, records) if batch else []
            extra = hook(op, records)
            if extra:
                out = [*stamped(out), *extra]
            if not out:
                continue
            for successor in segment.local_successors.get(op.id, ()):
                held = segment.inbox.get(successor)
                # the batch itself goes on (operators never change the lists they are given), so a SourceBatch
                # keeps its columns; batches from several producers are joined as plain, stamped lists
                segment.inbox[successor] = out if held is None else [*stamped(held), *stamped(out)]
            for topic in segment.outgoing.get(op.id, ()):
                self.transport.publish(topic, stamped(out))
        if segment.kind == "edge" and len(records) > produced_before:
            self.transport.publish(link_topic(self.name, f"{segment.name}->cloud:records"), records[produced_before:])

    def _finish(self, records: list[Record]) -> None:
        for record in records:
            self.stats.records[record["kind"]] += 1
        for sink in self._sinks:
            kinds, nodes = set(sink["config"]["kinds"]), set(sink["config"]["nodes"])
            chosen = [r for r in records if (not kinds or r["kind"] in kinds) and (not nodes or r["node"] in nodes)]
            if chosen:
                self.transport.publish(sink["config"]["topic"], orjson.dumps(chosen))

    def event_time(self, event: Mapping[str, Any]) -> float | None:
        """The event time of a raw event per its stream's ``time`` field, or None when it has none or is bad."""
        field_name = self._time_field.get(event.get("stream", self._default_stream))
        if field_name is None:
            return None
        try:
            return parse_time(event.get(field_name))
        except (ValueError, TypeError):
            return None

