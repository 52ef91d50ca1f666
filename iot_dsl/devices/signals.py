"""Telemetry values of simulated signals, computed for many readings at once.

A reading is identified by its device (index into the :class:`~iot_dsl.devices.population.Population`), its
reading number ``k`` (0-based slot) and its time in epoch milliseconds. :func:`signal_values` returns one float
per reading for a :class:`~iot_dsl.devices.fleet_spec.SignalSpec`; every shape except ``random_walk`` is a pure
function of (device, k, time), so values never depend on how readings are batched. ``random_walk`` depends on
the path so far: a :class:`RandomWalk` carries each device's value from one batch to the next (and replays
the path from the simulation start when asked for a later slot first).

Shapes, with ``t`` = seconds since the simulation start:

* ``steady``: ``value`` (default ``base``)
* ``sine``: ``base + amplitude * sin(2*pi*t / period)``
* ``random_walk``: starts at ``base``; each later reading adds ``step * N(0, 1)``, clamped to ``[min, max]``
* ``step``: ``base`` before ``at``, ``to`` from ``at`` on
* ``spike``: ``base``, plus ``height`` during ``[n*every, n*every + width)`` for n >= 1 and/or with ``probability``
  per reading
* ``drift``: ``base + rate * t / per``
* ``stuck``: ``base`` (+ noise) until ``at``; from then on frozen at the device's last reading before ``at``

Every shape adds ``noise * N(0, 1)`` when ``noise`` > 0 and is then clamped to ``[min, max]`` when given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .fleet_spec import SignalSpec
from .population import Population, stable_hash
from .random_streams import normal, uniform

__all__ = ["signal_values", "RandomWalk", "NOISE", "WALK", "SPIKE", "FIELD", "DROPOUT"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

#: Purpose numbers of the random streams (combined with a hash of the signal/field name).
DROPOUT, FIELD, NOISE, WALK, SPIKE = 1, 2, 3, 4, 5

#: How many random draws a random-walk replay makes per chunk (bounds memory).
_REPLAY_CHUNK = 1 << 20


def signal_values(
    signal: SignalSpec,
    population: Population,
    dev: I64,
    k: I64,
    t_ms: I64,
    walk: F64 | None = None,
) -> F64:
    """Return the values of ``signal`` for readings (``dev[i]``, ``k[i]``, ``t_ms[i]``), before rounding.

    ``walk`` holds the random-walk values of these readings (required for ``random_walk``; see
    :class:`RandomWalk`). Noise and ``min``/``max`` clamping are applied.
    """
    shape = signal.shape
    t_rel_ms = t_ms - population.start_ms
    noise_k = k
    values: npt.NDArray[Any]
    if shape == "sine":
        values = signal.base + signal.amplitude * np.sin((2.0 * np.pi / signal.period) * (t_rel_ms / 1000.0))
    elif shape == "random_walk":
        if walk is None:
            raise ValueError(f"signal {signal.name!r}: random_walk values need the walk state")
        values = walk.copy()
    elif shape == "step":
        values = np.where(t_rel_ms < round(signal.at * 1000), signal.base, signal.to)
    elif shape == "spike":
        values = signal.base + signal.height * _spiking(signal, population, dev, k, t_rel_ms)
    elif shape == "drift":
        values = signal.base + (signal.rate / signal.per) * (t_rel_ms / 1000.0)
    elif shape == "stuck":
        values = np.full(dev.shape, signal.base)
        noise_k = np.minimum(k, _freeze_slot(signal, population)[dev])
    else:  # steady
        values = np.full(dev.shape, signal.value)
    out: F64 = values.astype(np.float64, copy=False)
    if signal.noise > 0:
        keys = population.keys_for(NOISE, stable_hash(signal.name))
        out = out + signal.noise * normal(keys[dev], noise_k)
    if signal.min is not None or signal.max is not None:
        out = np.clip(out, signal.min, signal.max)
    return out


def _spiking(signal: SignalSpec, population: Population, dev: I64, k: I64, t_rel_ms: I64) -> Bools:
    active = np.zeros(dev.shape, dtype=np.bool_)
    every_ms = round(signal.every * 1000)
    if every_ms > 0:
        active |= (t_rel_ms >= every_ms) & (t_rel_ms % every_ms < round(signal.width * 1000))
    if signal.probability > 0:
        keys = population.keys_for(SPIKE, stable_hash(signal.name))
        active |= uniform(keys[dev], k) < signal.probability
    return active


def _freeze_slot(signal: SignalSpec, population: Population) -> I64:
    """Per device: the last slot strictly before ``at`` (0 when the first reading is already at/after ``at``)."""
    at_ms = round(signal.at * 1000)
    first_at_or_after = -((population.phase_ms - at_ms) // population.interval_ms)  # ceil((at - phase) / interval)
    return np.maximum(first_at_or_after - 1, 0)


class RandomWalk:
    """The running value of one ``random_walk`` signal for every device of a population.

    Reading 0 of a device is ``base`` (clamped); reading ``k`` >= 1 is reading ``k-1`` plus ``step * N(0, 1)``
    (the draw keyed by device and ``k``), clamped to ``[min, max]``. Values are the same however readings are
    requested, as long as each device's slots are requested in increasing order.
    """

    def __init__(self, signal: SignalSpec, population: Population) -> None:
        self._signal = signal
        self._keys = population.keys_for(WALK, stable_hash(signal.name))
        low = -np.inf if signal.min is None else signal.min
        high = np.inf if signal.max is None else signal.max
        self._low, self._high = low, high
        start = float(np.clip(signal.base, low, high))
        self._value: F64 = np.full(population.count, start)
        self._slot: I64 = np.full(population.count, -1, dtype=np.int64)  # slot whose value _value holds

    def grid_values(self, slots: I64, valid: Bools) -> F64:
        """Return walk values for a ``(devices, columns)`` grid of increasing ``slots``; cells not ``valid`` hold
        NaN. ``slots[i, 0]`` must not be before a slot already returned for device ``i``."""
        out = np.full(slots.shape, np.nan)
        for column in range(slots.shape[1]):
            rows = valid[:, column]
            self._advance_to(np.where(rows, slots[:, column], self._slot))
            out[rows, column] = self._value[rows]
        return out

    def _advance_to(self, target: I64) -> None:
        while True:
            lag = target - self._slot
            active = np.nonzero(lag > 0)[0]
            if active.size == 0:
                return
            lag = lag[active]
            width = int(min(int(lag.max()), max(1, _REPLAY_CHUNK // active.size)))
            offsets = np.arange(1, width + 1, dtype=np.int64)
            slots = self._slot[active, None] + offsets[None, :]
            steps = self._signal.step * normal(self._keys[active, None], slots)
            steps[(slots <= 0) | (offsets[None, :] > lag[:, None])] = 0.0
            value = self._value[active]
            for column in range(width):
                value = np.clip(value + steps[:, column], self._low, self._high)
            self._value[active] = value
            self._slot[active] += np.minimum(lag, width)
