"""Drive an engine over time: a simulated fleet or a replayed event file in, an ordered stream of records out.

Both drivers use a :class:`~iot_dsl.runtime.clock.VirtualClock`, so a ten-minute simulation or a day of recorded
events runs as fast as the engine can go, and the same inputs and seed give byte-identical records.
Commands rules issue are answered by the simulated devices after their latency, as ``command_result`` records (or
``timed_out`` when a device stays silent past the command timeout). Orchestrations talk to the same simulated
devices over the Transport (a :class:`~iot_dsl.devices.endpoint.SimulatedEndpoint` on the engine's clock), and
record the outcomes themselves.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..devices import DeviceRegistry, SimulatedFleet
from ..devices.endpoint import SimulatedEndpoint
from ..plan import Plan
from ..storage import Store
from .clock import VirtualClock, parse_time
from .engine import Engine
from .records import Record, dead_letter, make_record

__all__ = ["SimulatedResponder", "simulate", "replay", "read_events", "fleet_for", "scale_fleet", "DEFAULT_START"]

DEFAULT_START = "2026-01-01T00:00:00Z"
DEFAULT_COMMAND_TIMEOUT = 30.0


@dataclass(order=True)
class _Pending:
    at: float
    order: int
    record: Record


class SimulatedResponder:
    """Answers command records with the simulated fleet's outcomes, released when the clock reaches them."""

    def __init__(self, fleet: SimulatedFleet, timeout: float = DEFAULT_COMMAND_TIMEOUT) -> None:
        self.fleet = fleet
        self.timeout = timeout
        self._queue: list[_Pending] = []
        self._order = 0

    def observe(self, records: Iterable[Record], now: float) -> None:
        """Send every ``command`` record in ``records`` to its simulated device."""
        for record in records:
            if record["kind"] != "command" or "run" in record:
                continue  # orchestration commands travel over the Transport to the SimulatedEndpoint
            sent_at = parse_time(record["at"])
            outcome = self.fleet.command(
                record["device"], record["command"], record["payload"], sent_at, record["command_id"]
            )
            reason: str | None
            if outcome.at is None:
                at, status, reason = sent_at + self.timeout, "timed_out", f"no answer ({outcome.status})"
            else:
                at, status, reason = outcome.at, outcome.status, outcome.reason
            result = make_record(
                "command_result", at, record["node"], command_id=record["command_id"], command=record["command"],
                device=record["device"], status=status, segment=record.get("segment"),
            )
            if reason:
                result["reason"] = reason
            self._order += 1
            heapq.heappush(self._queue, _Pending(at, self._order, result))

    def due(self, until: float) -> list[Record]:
        """Results whose time is at or before ``until``, in time order."""
        out = []
        while self._queue and self._queue[0].at <= until:
            out.append(heapq.heappop(self._queue).record)
        return out

    def drain(self) -> list[Record]:
        """Every result still pending, in time order."""
        return self.due(float("inf"))


def scale_fleet(spec: Mapping[str, Any], devices: int | None) -> dict[str, Any]:
    """Copy a ``simulation`` section with its fleet counts scaled so they add up to ``devices`` (when given)."""
    out = dict(spec)
    fleet = [dict(entry) for entry in spec.get("fleet", [])]
    if devices is not None and fleet:
        total = sum(int(e.get("count", 0)) for e in fleet) or len(fleet)
        remaining = devices
        for index, entry in enumerate(fleet):
            share = remaining if index == len(fleet) - 1 else round(devices * int(entry.get("count", 1)) / total)
            entry["count"] = max(0, min(share, remaining))
            remaining -= entry["count"]
    out["fleet"] = fleet
    return out


def fleet_for(plan: Plan, seed: int = 0, devices: int | None = None) -> SimulatedFleet | None:
    """The simulated fleet a plan's ``simulation`` section declares (None when it declares none)."""
    spec = plan.data.get("simulation")
    if not spec:
        return None
    stream = spec.get("stream") or _first_stream(plan)
    return SimulatedFleet(scale_fleet(spec, devices), seed=seed, stream=stream)


def _first_stream(plan: Plan) -> str:
    names = sorted({op["name"] for s in plan.segments for op in s["operators"] if op["kind"] == "source"})
    return names[0] if names else "telemetry"


Progress = Callable[[float, int], None]


def simulate(
    plan: Plan,
    *,
    seed: int = 0,
    devices: int | None = None,
    duration: float = 600.0,
    batch_seconds: float = 1.0,
    engine: Engine | None = None,
    progress: Progress | None = None,
    store: Store | None = None,
    threads: int | None = None,
) -> Iterator[Record]:
    """Run ``plan`` against its simulated fleet for ``duration`` seconds of event time; yield records in order.

    ``store`` (default: in memory) keeps the engine's history, e.g. a :class:`~iot_dsl.storage.SqliteStore`;
    ``threads`` goes to the :class:`Engine`.
    """
    fleet = fleet_for(plan, seed, devices)
    if fleet is None:
        raise ValueError(f"workflow '{plan.name}' has no simulation section; add one or use replay")
    clock = VirtualClock(fleet.start)
    engine = engine or Engine(plan, clock=clock, registry=fleet.registry, store=store, threads=threads)
    responder = SimulatedResponder(fleet)
    endpoint = SimulatedEndpoint(fleet, engine.transport, engine.clock, plan.name)
    end = fleet.start + duration
    t = fleet.start
    for batch in fleet.events(duration, batch_seconds=batch_seconds):
        t = min(end, t + batch_seconds)
        yield from responder.due(clock.now())
        records = engine.push(batch)
        responder.observe(records, clock.now())
        yield from records
        yield from engine.advance_to(t)
        if progress is not None:
            progress(t - fleet.start, engine.stats.events_in)
    yield from engine.advance_to(end)
    yield from engine.finish()
    yield from responder.due(end)
    endpoint.close()
    if progress is not None:
        progress(duration, engine.stats.events_in)


def read_events(path: str | Path) -> tuple[list[Any], list[Record]]:
    """Read a JSON-lines file: (events, dead letters for lines that are not valid JSON)."""
    events: list[Any] = []
    bad: list[Record] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                events.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                text = line.decode("utf-8", errors="replace").rstrip("\n")
                bad.append(dead_letter(0.0, "replay", f"line {number}: invalid JSON ({exc.msg})", text))
    return events, bad


def replay(
    plan: Plan,
    events: list[Any],
    *,
    seed: int = 0,
    batch_seconds: float = 1.0,
    registry: DeviceRegistry | None = None,
    progress: Progress | None = None,
    store: Store | None = None,
    state: Mapping[str, Any] | None = None,
    keep: Callable[[dict[str, Any]], None] | None = None,
    threads: int | None = None,
) -> Iterator[Record]:
    """Replay recorded events in event-time order on a virtual clock; yield records in order.

    Events whose time cannot be read go first (they become dead letters); the sort is stable, so events with
    equal times keep their file order. ``state`` (an :meth:`Engine.snapshot`) is restored first: an ``alert``
    record names the operators whose definition changed (their state is left out). With ``keep``, the input is
    not finished at the end: open windows, partial matches and timers stay pending, and ``keep`` receives the
    engine's snapshot to resume from. ``threads`` goes to the :class:`Engine`.
    """
    fleet = fleet_for(plan, seed)
    if registry is None:
        registry = fleet.registry if fleet is not None else DeviceRegistry()
    probe = Engine(plan, registry=DeviceRegistry())
    timed = [(probe.event_time(e) if isinstance(e, dict) else None, i, e) for i, e in enumerate(events)]
    timed.sort(key=lambda item: (item[0] if item[0] is not None else float("-inf"), item[1]))
    start = next((t for t, _, _ in timed if t is not None), 0.0)
    clock = VirtualClock(start)
    engine = Engine(plan, clock=clock, registry=registry, store=store, threads=threads)
    if state is not None:
        changed = engine.restore(state)
        if changed:
            yield make_record(
                "alert", start, "replay", severity="warning", reason="state_not_restored", operators=changed,
                message=f"state not restored for {', '.join(changed)}: their definition changed since the snapshot",
            )
    responder = SimulatedResponder(fleet) if fleet is not None else None
    endpoint = SimulatedEndpoint(fleet, engine.transport, clock, plan.name) if fleet is not None else None
    batch: list[Any] = []
    batch_end = start + batch_seconds
    for t, _, event in timed:
        if t is not None and t >= batch_end:
            yield from _flush(engine, responder, batch, clock, batch_end)
            batch = []
            while t >= batch_end:
                batch_end += batch_seconds
            if progress is not None:
                progress(batch_end - start, engine.stats.events_in)
        batch.append(event)
    yield from _flush(engine, responder, batch, clock, batch_end)
    if keep is not None:
        keep(engine.snapshot())
    else:
        yield from engine.finish()
    if responder is not None:
        yield from responder.drain()
    if endpoint is not None:
        endpoint.close()
    if progress is not None:
        progress(batch_end - start, engine.stats.events_in)


def _flush(
    engine: Engine, responder: SimulatedResponder | None, batch: list[Any], clock: VirtualClock, until: float
) -> Iterator[Record]:
    if responder is not None:
        yield from responder.due(clock.now())
    records = engine.push(batch)
    if responder is not None:
        responder.observe(records, clock.now())
    yield from records
    yield from engine.advance_to(until)
