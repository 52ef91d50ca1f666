"""What happens to a command sent to a simulated device.

:func:`command_outcome` decides, deterministically for a (seed, device, command id), whether the device
rejects the command, never answers, fails or succeeds, and when the answer arrives; the result is a
:class:`CommandOutcome`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .population import stable_hash

__all__ = ["CommandOutcome", "CommandProfile", "command_outcome", "STATUSES"]

#: Every status a :class:`CommandOutcome` can have.
STATUSES: tuple[str, ...] = ("succeeded", "failed", "rejected", "silent", "offline")


@dataclass(frozen=True)
class CommandOutcome:
    """The fate of one command: ``device``, ``command_id``, ``status`` (one of :data:`STATUSES`), ``at`` (epoch
    seconds when the answer arrives; None for ``silent`` and ``offline``) and ``reason`` (None on success)."""

    device: str
    command_id: str
    status: str
    at: float | None
    reason: str | None = None

    @property
    def answered(self) -> bool:
        """True when the device sent an answer (``at`` is set)."""
        return self.at is not None


@dataclass(frozen=True)
class CommandProfile:
    """How a kind of device answers commands: latency range (seconds) and outcome probabilities."""

    latency_min: float = 0.1
    latency_max: float = 0.1
    reject_rate: float = 0.0
    silent_rate: float = 0.0
    failure_rate: float = 0.0


def command_outcome(
    profile: CommandProfile,
    *,
    seed: int,
    device: str,
    command: str,
    command_id: str,
    sent_at: float,
) -> CommandOutcome:
    """Decide the outcome of ``command`` (id ``command_id``) sent to ``device`` at ``sent_at``.

    Draws come from ``numpy.random.default_rng`` seeded with ``(seed, hash(device), hash(command_id))``, so the
    same inputs always give the same outcome. One uniform draw ``u`` picks the status: ``u < reject_rate`` ->
    ``rejected``; then ``silent_rate`` -> ``silent``; then ``failure_rate`` -> ``failed``; else ``succeeded``.
    The latency (uniform in ``[latency_min, latency_max]``, rounded to milliseconds) is added to ``sent_at``.
    """
    rng = np.random.default_rng([seed, stable_hash(device), stable_hash(command_id)])
    u, v = rng.random(2)
    latency = round(profile.latency_min + float(v) * (profile.latency_max - profile.latency_min), 3)
    at = sent_at + latency
    if u < profile.reject_rate:
        return CommandOutcome(device, command_id, "rejected", at, f"device rejected command {command!r}")
    if u < profile.reject_rate + profile.silent_rate:
        return CommandOutcome(device, command_id, "silent", None, "no answer from device")
    if u < profile.reject_rate + profile.silent_rate + profile.failure_rate:
        return CommandOutcome(device, command_id, "failed", at, f"command {command!r} failed on device")
    return CommandOutcome(device, command_id, "succeeded", at, None)
