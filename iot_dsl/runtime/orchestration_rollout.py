"""Rollout planning: a step's target devices and its rollout spec in, the order and the waves they are released in out.

Targets are put in a seeded, stable order (by a hash of the run id and the device id) so the first waves are a
spread sample of the fleet rather than the first ids. Fixed waves release the next wave when the previous one has
finished; a rate rollout releases ``start`` devices in the first minute, ``factor`` times more each following
minute, at most ``max_per_minute``, whether or not earlier releases have finished (like AWS IoT Jobs'
exponential rate).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..devices import Device
from ..devices.population import stable_hash
from .orchestration_spec import RolloutSpec, cumulative_waves

__all__ = ["RolloutPlan", "plan_rollout", "rollout_order", "RATE_PERIOD"]

#: Seconds between releases of a rate rollout.
RATE_PERIOD = 60.0


@dataclass(frozen=True)
class RolloutPlan:
    """Cumulative wave boundaries over the ordered targets; ``period`` (seconds) when waves are released by time,
    None when each wave waits for the previous one to finish."""

    boundaries: tuple[int, ...]
    period: float | None = None


def rollout_order(devices: Iterable[Device], salt: str) -> list[Device]:
    """The devices in rollout order: sorted by a stable hash of ``salt`` and the device id (ties by id)."""
    return sorted(devices, key=lambda d: (stable_hash(f"{salt}/{d.id}"), d.id))


def plan_rollout(spec: RolloutSpec | None, total: int) -> RolloutPlan:
    """The waves for ``total`` targets: one wave without a rollout, cumulative shares, or per-minute releases."""
    if spec is None or total == 0:
        return RolloutPlan((total,))
    if not spec.by_rate:
        return RolloutPlan(tuple(cumulative_waves(spec.waves, total)))
    boundaries: list[int] = []
    released = 0
    rate = float(spec.start)
    while released < total:
        per_minute = int(rate) if spec.max_per_minute is None else min(int(rate), spec.max_per_minute)
        released = min(total, released + max(per_minute, 1))
        boundaries.append(released)
        rate *= spec.factor
    return RolloutPlan(tuple(boundaries), RATE_PERIOD)
