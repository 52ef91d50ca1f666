"""The public test kit: a virtual clock, the memory transport, a simulated fleet and a run-and-collect helper.

Users test their own workflows with it::

    from iot_dsl.testing import run_workflow
    records = run_workflow("workflows/plant.yaml", duration="5m", seed=7)
    assert any(r["kind"] == "command" for r in records)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from .compiler import compile_file, compile_text
from .devices import DeviceRegistry, SimulatedFleet
from .plan import Plan, load_plan
from .runtime.clock import VirtualClock, parse_duration
from .runtime.engine import Engine
from .runtime.records import Record
from .runtime.runner import fleet_for, replay, simulate
from .storage import MemoryStore, SqliteStore
from .transports import MemoryTransport

__all__ = [
    "VirtualClock",
    "MemoryTransport",
    "MemoryStore",
    "SqliteStore",
    "SimulatedFleet",
    "DeviceRegistry",
    "Engine",
    "plan_of",
    "fleet_for",
    "run_workflow",
    "replay_events",
    "collect",
    "by_kind",
]


def plan_of(workflow: str | os.PathLike[str] | Plan | Mapping[str, Any]) -> Plan:
    """A plan from a workflow path, a plan path (``.json``), YAML text containing newlines, a dict or a Plan."""
    if isinstance(workflow, (Plan, Mapping)):
        return load_plan(workflow)
    text = os.fspath(workflow)
    if "\n" in text:
        return compile_text(text, "<test>")
    return load_plan(text) if text.endswith(".json") else compile_file(text)


def run_workflow(
    workflow: str | os.PathLike[str] | Plan | Mapping[str, Any],
    *,
    duration: str | float = "1m",
    seed: int = 0,
    devices: int | None = None,
) -> list[Record]:
    """Simulate a workflow's fleet for ``duration`` of event time and return every record, in order."""
    return list(simulate(plan_of(workflow), seed=seed, devices=devices, duration=parse_duration(duration)))


def replay_events(
    workflow: str | os.PathLike[str] | Plan | Mapping[str, Any], events: Iterable[Any], *, seed: int = 0
) -> list[Record]:
    """Replay recorded events (dicts) through a workflow in event-time order; return every record."""
    return list(replay(plan_of(workflow), list(events), seed=seed))


def collect(engine: Engine, batches: Iterable[Iterable[Any]]) -> list[Record]:
    """Push batches through an engine and return all records."""
    return list(engine.run(batches))


def by_kind(records: Iterable[Record], kind: str) -> list[Record]:
    """The records of one kind."""
    return [r for r in records if r["kind"] == kind]
