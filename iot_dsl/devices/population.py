"""The devices of one fleet entry, with the per-device draws that stay fixed for the whole simulation.

:func:`build_population` turns a checked :class:`~iot_dsl.devices.fleet_spec.FleetEntrySpec` and a seed into a
:class:`Population`: the :class:`~iot_dsl.devices.registry.Device` records (ids ``<prefix>-0001`` ...; sites,
groups and list firmware round-robin; weighted firmware and positions drawn), each device's reporting phase,
its 64-bit random-stream key and which devices are in each offline window. All draws come from
``numpy.random.default_rng`` generators spawned from the seed sequence ``(seed, hash of the entry's id prefix)``,
so a fleet entry's devices do not change when other entries are added, removed or reordered.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .fleet_spec import FleetEntrySpec, GeoSpec
from .random_streams import U64, derive_keys, purpose_tag
from .registry import Device

__all__ = ["Population", "OfflineSet", "build_population", "stable_hash", "KM_PER_DEGREE"]

#: Kilometres per degree of latitude (and of longitude at the equator).
KM_PER_DEGREE = 111.32

I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


def stable_hash(text: str) -> int:
    """Return a 64-bit integer hash of ``text`` that is the same in every process (unlike :func:`hash`)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class OfflineSet:
    """An offline window in absolute epoch milliseconds ``[start_ms, end_ms)`` and which devices it silences."""

    start_ms: int
    end_ms: int
    members: Bools


@dataclass
class Population:
    """One fleet entry's devices (index ``i`` everywhere is the device's position in ``devices``).

    ``phase_ms[i]``: offset of device ``i``'s first report after the simulation start, in ``[0, interval_ms)``;
    its reading ``k`` (0-based) is at ``start_ms + phase_ms[i] + k * interval_ms``.
    ``device_keys[i]``: the base key of the device's counter-based random streams (see :meth:`keys_for`).
    """

    entry: FleetEntrySpec
    devices: tuple[Device, ...]
    start_ms: int
    interval_ms: int
    phase_ms: I64
    device_keys: U64
    offline: tuple[OfflineSet, ...]
    _keys: dict[tuple[int, ...], U64] = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        """How many devices the entry has."""
        return len(self.devices)

    def keys_for(self, *purpose: int) -> U64:
        """Return the per-device stream keys for one use of randomness (cached), e.g. ``keys_for(3, name_hash)``."""
        keys = self._keys.get(purpose)
        if keys is None:
            keys = derive_keys(self.device_keys, purpose_tag(*purpose))
            self._keys[purpose] = keys
        return keys

    def is_offline(self, index: int, t_ms: int) -> bool:
        """True if device ``index`` is inside one of its offline windows at ``t_ms`` (epoch milliseconds)."""
        return any(w.start_ms <= t_ms < w.end_ms and bool(w.members[index]) for w in self.offline)


def build_population(entry: FleetEntrySpec, seed: int, start_ms: int) -> Population:
    """Create the devices of ``entry`` and their fixed draws for ``seed``; ``start_ms`` is the simulation start."""
    n = entry.count
    # One child generator per purpose, so e.g. adding `geo` does not change phases or offline membership.
    keys_rng, phase_rng, geo_rng, firmware_rng, offline_rng = (
        np.random.default_rng(child) for child in np.random.SeedSequence([seed, stable_hash(entry.id_prefix)]).spawn(5)
    )
    interval_ms = max(1, round(entry.interval * 1000))
    device_keys = keys_rng.integers(0, 2**64, size=n, dtype=np.uint64)
    phase_ms = phase_rng.integers(0, interval_ms, size=n, dtype=np.int64)
    lat, lon = _positions(entry.geo, geo_rng, n)
    firmware = _firmware(entry, firmware_rng, n)
    offline = tuple(
        OfflineSet(
            start_ms=start_ms + round(window.start * 1000),
            end_ms=start_ms + round(window.end * 1000),
            members=_members(offline_rng, n, window.fraction),
        )
        for window in entry.offline
    )
    sites = entry.sites
    groups = entry.groups
    devices = tuple(
        Device(
            id=f"{entry.id_prefix}-{i + 1:04d}",
            type=entry.type,
            site=sites[i % len(sites)],
            group=groups[i % len(groups)] if groups else sites[i % len(sites)],
            lat=lat[i],
            lon=lon[i],
            firmware=firmware[i],
            attrs=entry.attributes,
        )
        for i in range(n)
    )
    return Population(
        entry=entry,
        devices=devices,
        start_ms=start_ms,
        interval_ms=interval_ms,
        phase_ms=phase_ms,
        device_keys=device_keys,
        offline=offline,
    )


def _positions(geo: GeoSpec | None, rng: np.random.Generator, n: int) -> tuple[list[float], list[float]]:
    if geo is None:
        return [0.0] * n, [0.0] * n
    radius = geo.spread_km * np.sqrt(rng.random(n))
    angle = 2.0 * np.pi * rng.random(n)
    lat = np.clip(geo.lat + radius * np.cos(angle) / KM_PER_DEGREE, -90.0, 90.0)
    shrink = max(math.cos(math.radians(geo.lat)), 1e-6)
    lon = (geo.lon + radius * np.sin(angle) / (KM_PER_DEGREE * shrink) + 180.0) % 360.0 - 180.0
    return np.round(lat, 6).tolist(), np.round(lon, 6).tolist()


def _firmware(entry: FleetEntrySpec, rng: np.random.Generator, n: int) -> list[str]:
    spec = entry.firmware
    if spec.mode == "weighted":
        weights = np.asarray(spec.weights, dtype=np.float64)
        picks = rng.choice(len(spec.versions), size=n, p=weights / weights.sum())
        return [spec.versions[int(i)] for i in picks]
    return [spec.versions[i % len(spec.versions)] for i in range(n)]


def _members(rng: np.random.Generator, n: int, fraction: float) -> Bools:
    chosen = rng.permutation(n)[: math.floor(fraction * n + 0.5)]
    members = np.zeros(n, dtype=np.bool_)
    members[chosen] = True
    return members
