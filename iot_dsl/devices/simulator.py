"""A deterministic simulated fleet: telemetry events and command outcomes on virtual time.

:class:`SimulatedFleet` is built from a workflow's ``simulation:`` section (plain data, see
:mod:`iot_dsl.devices.fleet_spec`) and a seed. It fills a :class:`~iot_dsl.devices.registry.DeviceRegistry`
with the fleet's devices and then answers two questions:

* :meth:`SimulatedFleet.events` -- which telemetry events the fleet emits over a time span, as batches of plain
  dicts in event-time order;
* :meth:`SimulatedFleet.command` -- what happens to a command sent to a device (a
  :class:`~iot_dsl.devices.commands.CommandOutcome`).

Everything is a function of (spec, seed): the same inputs give identical events and outcomes, whatever the
batch size, the window asked for, or the order devices are visited in (see :mod:`~iot_dsl.devices.random_streams`).
Events are generated with numpy per fleet entry per batch; dicts are built only at the end.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from iot_dsl.runtime.clock import parse_duration, parse_time

from .commands import CommandOutcome, CommandProfile, command_outcome
from .event_rows import row_builder
from .fleet_spec import SimulationSpec, parse_simulation
from .population import Population, build_population, stable_hash
from .random_streams import uniform
from .registry import DeviceRegistry
from .signals import DROPOUT, FIELD, RandomWalk, signal_values

__all__ = ["SimulatedFleet"]

I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Objects = npt.NDArray[np.object_]
Event = dict[str, Any]

_DEFAULT_PROFILE = CommandProfile()


@dataclass
class _EntryView:
    """Per-device arrays of one population as the registry currently describes it (refreshed on change)."""

    ids: Objects
    rank: I64
    types: Objects
    sites: Objects
    groups: Objects
    active: Bools
    all_active: bool


@dataclass
class _EntryBatch:
    """One population's share of a batch: event times (ms), device ranks and the event dicts, all sorted."""

    t_ms: I64
    rank: I64
    rows: list[Event]


class SimulatedFleet:
    """A seeded, deterministic fleet of simulated devices described by a ``simulation:`` section.

    ``spec`` is the section as plain data; ``seed`` (int >= 0) picks the random world; ``stream`` is the event
    stream name when the section names none. Raises ValueError for a bad spec or seed, naming the location
    (``simulation.fleet[0].signals.temp: unknown shape 'sinus' ...``).

    Attributes: ``registry`` (the fleet's devices; removing a device or changing its type/site/group there is
    reflected in later events), ``start`` (simulation start, epoch seconds), ``stream``, ``seed`` and ``spec``
    (the checked :class:`~iot_dsl.devices.fleet_spec.SimulationSpec`).
    """

    def __init__(self, spec: Mapping[str, Any], seed: int = 0, stream: str = "telemetry") -> None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.seed: int = int(seed)
        self.spec: SimulationSpec = parse_simulation(spec, default_stream=stream)
        self.start: float = self.spec.start
        self.stream: str = self.spec.stream
        self._start_ms: int = round(self.start * 1000)
        self._populations: tuple[Population, ...] = tuple(
            build_population(entry, self.seed, self._start_ms) for entry in self.spec.fleet
        )
        self.registry: DeviceRegistry = DeviceRegistry(chain.from_iterable(pop.devices for pop in self._populations))
        self._where: dict[str, tuple[Population, int]] = {
            device.id: (pop, index) for pop in self._populations for index, device in enumerate(pop.devices)
        }
        ranks = {device_id: rank for rank, device_id in enumerate(sorted(self._where))}
        self._ids: list[Objects] = [np.array([d.id for d in pop.devices], dtype=object) for pop in self._populations]
        self._ranks: list[I64] = [
            np.array([ranks[d.id] for d in pop.devices], dtype=np.int64) for pop in self._populations
        ]
        self._views: list[_EntryView] = []
        self._views_version: int = -1

    def __repr__(self) -> str:
        return f"SimulatedFleet({len(self._where)} devices, seed={self.seed}, stream={self.stream!r})"

    # -- telemetry -------------------------------------------------------------------------------------------

    def events(
        self,
        duration: float | str,
        *,
        start: float | str | None = None,
        batch_seconds: float | str = 1.0,
    ) -> Iterator[list[Event]]:
        """Yield the telemetry of ``[start, start + duration)`` as consecutive batches of ``batch_seconds`` each.

        ``duration`` and ``batch_seconds`` are seconds or duration text (``"60s"``); ``start`` is epoch seconds or
        ISO-8601 text (default: the simulation start). Times are handled in whole milliseconds. Every batch is
        yielded, empty or not, and covers ``[t, t + batch_seconds)`` (the last one may be shorter). Events in a
        batch are sorted by ``(ts, device)`` and look like::

            {"stream": "telemetry", "device": "boiler-0001", "type": "boiler", "site": "north",
             "group": "line-1", "seq": 1, "ts": 1767225600.123, "temp": 70.1234, "status": "ok"}

        ``seq`` is the device's reading number since the simulation start (1-based; a reading lost to
        ``dropout`` or an offline window leaves a gap). ``ts`` is epoch seconds at millisecond precision;
        signal values are rounded to 4 decimals. A device reports every ``interval`` from a per-device phase.
        Raises ValueError (immediately) for a negative duration or a batch shorter than 1 ms.
        """
        length = parse_duration(duration)
        batch = parse_duration(batch_seconds)
        batch_ms = round(batch * 1000)
        if batch_ms < 1:
            raise ValueError(f"batch_seconds must be at least 0.001 s, got {batch_seconds!r}")
        begin_ms = self._start_ms if start is None else round(parse_time(start) * 1000)
        return self._batches(begin_ms, begin_ms + round(length * 1000), batch_ms)

    def _batches(self, begin_ms: int, end_ms: int, batch_ms: int) -> Iterator[list[Event]]:
        walks = [
            {sig.name: RandomWalk(sig, pop) for sig in pop.entry.signals if sig.shape == "random_walk"}
            for pop in self._populations
        ]
        for lo in range(begin_ms, end_ms, batch_ms):
            hi = min(lo + batch_ms, end_ms)
            views = self._current_views()
            parts = [
                part
                for pop, view, walk in zip(self._populations, views, walks, strict=True)
                if (part := self._entry_batch(pop, view, walk, lo, hi)) is not None
            ]
            yield _merge(parts)

    def _entry_batch(
        self, pop: Population, view: _EntryView, walks: dict[str, RandomWalk], lo: int, hi: int
    ) -> _EntryBatch | None:
        if pop.count == 0:
            return None
        interval = pop.interval_ms
        first = -((pop.start_ms + pop.phase_ms - lo) // interval)  # ceil((lo - start - phase) / interval)
        slots = np.maximum(first, 0)[:, None] + np.arange(-(-(hi - lo) // interval), dtype=np.int64)[None, :]
        times = pop.start_ms + pop.phase_ms[:, None] + slots * interval
        valid = times < hi
        dev = np.nonzero(valid)[0]
        k = slots[valid]
        t_ms = times[valid]
        walk_values = {name: walk.grid_values(slots, valid)[valid] for name, walk in walks.items()}
        send = self._send_mask(pop, view, dev, k, t_ms)
        rank = view.rank[dev]
        order = np.lexsort((rank, t_ms)) if send is None else np.flatnonzero(send)[np.lexsort((rank[send], t_ms[send]))]
        dev, k, t_ms, rank = dev[order], k[order], t_ms[order], rank[order]
        columns: list[list[Any]] = [
            view.ids[dev].tolist(),
            view.types[dev].tolist(),
            view.sites[dev].tolist(),
            view.groups[dev].tolist(),
            (k + 1).tolist(),
            (t_ms / 1000).tolist(),
        ]
        entry = pop.entry
        for sig in entry.signals:
            walk = walk_values[sig.name][order] if sig.name in walk_values else None
            values = signal_values(sig, pop, dev, k, t_ms, walk)
            columns.append((np.round(values, 4) + 0.0).tolist())  # + 0.0 turns -0.0 into 0.0
        for name, choices in entry.fields:
            options = np.empty(len(choices), dtype=object)
            options[:] = choices
            draws = uniform(pop.keys_for(FIELD, stable_hash(name))[dev], k)
            columns.append(options[(draws * len(choices)).astype(np.int64)].tolist())
        build = row_builder(tuple(sig.name for sig in entry.signals) + tuple(name for name, _ in entry.fields))
        return _EntryBatch(t_ms=t_ms, rank=rank, rows=build(self.stream, columns))

    def _send_mask(self, pop: Population, view: _EntryView, dev: I64, k: I64, t_ms: I64) -> Bools | None:
        """Which readings are actually sent (None = all): the device is registered, not dropped, not offline."""
        send: Bools | None = None if view.all_active else view.active[dev]
        if pop.entry.dropout > 0:
            kept = uniform(pop.keys_for(DROPOUT)[dev], k) >= pop.entry.dropout
            send = kept if send is None else send & kept
        for window in pop.offline:
            if window.start_ms >= window.end_ms or not window.members.any():
                continue
            silent = window.members[dev] & (t_ms >= window.start_ms) & (t_ms < window.end_ms)
            send = ~silent if send is None else send & ~silent
        return send

    def _current_views(self) -> list[_EntryView]:
        if self._views_version != self.registry.version:
            self._views = [
                self._view(pop, ids, rank)
                for pop, ids, rank in zip(self._populations, self._ids, self._ranks, strict=True)
            ]
            self._views_version = self.registry.version
        return self._views

    def _view(self, pop: Population, ids: Objects, rank: I64) -> _EntryView:
        current = [self.registry.get(device.id) for device in pop.devices]
        shown = [now if now is not None else device for now, device in zip(current, pop.devices, strict=True)]
        active = np.array([now is not None for now in current], dtype=np.bool_)
        return _EntryView(
            ids=ids,
            rank=rank,
            types=_objects([d.type for d in shown]),
            sites=_objects([d.site for d in shown]),
            groups=_objects([d.group for d in shown]),
            active=active,
            all_active=bool(active.all()),
        )

    # -- commands and availability ------------------------------------------------------------------------------

    def command(
        self,
        device_id: str,
        command: str,
        payload: Mapping[str, Any],
        sent_at: float,
        command_id: str,
    ) -> CommandOutcome:
        """Return what happens to ``command`` (``payload`` is accepted but does not affect the outcome) sent to
        ``device_id`` at ``sent_at`` (epoch seconds) under the id ``command_id``.

        A device not in the registry -> ``rejected`` (reason ``"unknown device"``, ``at`` = ``sent_at``); a
        device in an offline window at ``sent_at`` -> ``offline`` (``at`` None). Otherwise the device's fleet
        entry decides (``reject_rate``, ``silent_rate``, ``failure_rate``, ``command_latency``); devices added to
        the registry by hand always succeed after 100 ms. Deterministic per (seed, device, command id).
        """
        if isinstance(sent_at, bool) or not isinstance(sent_at, numbers.Real) or not math.isfinite(sent_at):
            raise ValueError(f"sent_at must be finite epoch seconds, got {sent_at!r}")
        if device_id not in self.registry:
            return CommandOutcome(device_id, command_id, "rejected", float(sent_at), "unknown device")
        if self.is_offline(device_id, sent_at):
            return CommandOutcome(device_id, command_id, "offline", None, "device offline")
        located = self._where.get(device_id)
        profile = _DEFAULT_PROFILE if located is None else _profile(located[0])
        return command_outcome(
            profile, seed=self.seed, device=device_id, command=command, command_id=command_id, sent_at=float(sent_at)
        )

    def is_offline(self, device_id: str, t: float) -> bool:
        """True if ``device_id`` is inside one of its fleet entry's offline windows at ``t`` (epoch seconds).

        Devices the simulation did not create are never offline.
        """
        located = self._where.get(device_id)
        if located is None:
            return False
        pop, index = located
        return pop.is_offline(index, round(t * 1000))

    def online_at(self, device_id: str, t: float) -> float:
        """The first time at or after ``t`` (epoch seconds) when ``device_id`` is outside every offline window.

        That is ``t`` itself for a device that is online (or that the simulation did not create), else the end of
        the (possibly chained) offline windows it is in: when a device that was offline reconnects.
        """
        located = self._where.get(device_id)
        if located is None:
            return t
        pop, index = located
        start_ms = t_ms = round(t * 1000)
        moved = True
        while moved:
            moved = False
            for window in pop.offline:
                if window.start_ms <= t_ms < window.end_ms and bool(window.members[index]):
                    t_ms = window.end_ms
                    moved = True
        return t if t_ms == start_ms else t_ms / 1000


def _profile(pop: Population) -> CommandProfile:
    entry = pop.entry
    return CommandProfile(
        latency_min=entry.latency_min,
        latency_max=entry.latency_max,
        reject_rate=entry.reject_rate,
        silent_rate=entry.silent_rate,
        failure_rate=entry.failure_rate,
    )


def _objects(values: list[str]) -> Objects:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _merge(parts: list[_EntryBatch]) -> list[Event]:
    """Merge per-population sorted batches into one list sorted by (ts, device)."""
    if not parts:
        return []
    if len(parts) == 1:
        return parts[0].rows
    order = np.lexsort((np.concatenate([p.rank for p in parts]), np.concatenate([p.t_ms for p in parts])))
    rows = list(chain.from_iterable(p.rows for p in parts))
    return [rows[i] for i in order.tolist()]
