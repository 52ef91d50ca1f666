"""Devices: the device model and registry, and a seeded simulated fleet for testing workflows.

* :class:`Device`, :class:`DeviceRegistry` -- what devices exist and their attributes (:mod:`.registry`).
* :class:`SimulatedFleet` -- deterministic telemetry and command outcomes from a ``simulation:`` section
  (:mod:`.simulator`), answering commands with a :class:`CommandOutcome` (:mod:`.commands`).
"""

from .commands import CommandOutcome
from .registry import Device, DeviceRegistry
from .simulator import SimulatedFleet

__all__ = ["Device", "DeviceRegistry", "SimulatedFleet", "CommandOutcome"]
