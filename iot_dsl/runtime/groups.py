"""Device groups: group definitions and device attributes in, per-device group keys (one array per level) out.

A :class:`Level` maps a device's attributes to a group key (a string) or to nothing (the device is not in the
level). An aggregate keys its readings by one or more levels: ``device`` (each device alone), ``all`` (every
device), attribute combinations (``by``), a filter (``where``), each prefix of a ``hierarchy``, geohash cells
and named regions (bounding boxes or polygons). :class:`Membership` interns device ids and group keys into
integers and keeps, per level, an array ``device index -> slot`` (-1: not a member) that is rebuilt whenever
the device registry changes, so membership follows devices as they join, leave or change attributes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALL_LEVEL",
    "DEVICE_LEVEL",
    "Level",
    "Membership",
    "geohash_encode",
    "in_bbox",
    "in_polygon",
    "levels_for",
]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

DEVICE_LEVEL = "device"
ALL_LEVEL = "all"
_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"

#: ``attributes -> group key or None`` (None: not a member of this level)
KeyFunction = Callable[[Mapping[str, Any]], "str | None"]


@dataclass(frozen=True)
class Level:
    """One way of keying devices: a name (carried by records as ``level``) and a key function."""

    name: str
    key: KeyFunction
    #: True for the per-device level (its key is the device id)
    per_device: bool = False


def geohash_encode(lat: F64, lon: F64, precision: int) -> list[str]:
    """Geohash strings (base32, ``precision`` characters) for arrays of latitudes and longitudes in degrees."""
    lat = np.clip(np.asarray(lat, dtype=np.float64), -90.0, 90.0)
    lon = np.clip(np.asarray(lon, dtype=np.float64), -180.0, 180.0)
    lat_lo, lat_hi = np.full(lat.shape, -90.0), np.full(lat.shape, 90.0)
    lon_lo, lon_hi = np.full(lon.shape, -180.0), np.full(lon.shape, 180.0)
    codes = np.zeros((precision, lat.size), dtype=np.int64)
    even = True
    for bit in range(precision * 5):
        if even:
            mid = (lon_lo + lon_hi) / 2
            up = lon >= mid
            lon_lo = np.where(up, mid, lon_lo)
            lon_hi = np.where(up, lon_hi, mid)
        else:
            mid = (lat_lo + lat_hi) / 2
            up = lat >= mid
            lat_lo = np.where(up, mid, lat_lo)
            lat_hi = np.where(up, lat_hi, mid)
        codes[bit // 5] = codes[bit // 5] * 2 + up
        even = not even
    alphabet = np.array(list(_BASE32))
    chars = alphabet[codes]  # (precision, n)
    return ["".join(column) for column in chars.T.tolist()]


def in_bbox(lat: F64, lon: F64, box: Sequence[float]) -> npt.NDArray[np.bool_]:
    """Whether each point lies in the box ``[lat1, lon1, lat2, lon2]`` (any two opposite corners, bounds inclusive)."""
    lat1, lon1, lat2, lon2 = (float(v) for v in box)
    return (
        (lat >= min(lat1, lat2)) & (lat <= max(lat1, lat2)) & (lon >= min(lon1, lon2)) & (lon <= max(lon1, lon2))
    )


def in_polygon(lat: F64, lon: F64, polygon: Sequence[Sequence[float]]) -> npt.NDArray[np.bool_]:
    """Whether each point lies inside the polygon (vertices ``[lat, lon]``; even-odd ray casting)."""
    inside = np.zeros(np.shape(lat), dtype=bool)
    vertices = [(float(p[0]), float(p[1])) for p in polygon]
    for (ya, xa), (yb, xb) in zip(vertices, vertices[1:] + vertices[:1], strict=True):
        if ya == yb:
            continue  # a horizontal edge never crosses the horizontal ray
        crosses = (ya > lat) != (yb > lat)
        x_at = xa + (lat - ya) * (xb - xa) / (yb - ya)
        inside ^= crosses & (lon < x_at)
    return inside


def _joined(attributes: Sequence[str]) -> KeyFunction:
    def key(attrs: Mapping[str, Any]) -> str | None:
        values = [attrs.get(a) for a in attributes]
        if any(v is None for v in values):
            return None
        return "/".join(str(v) for v in values)

    return key


def _filtered(inner: KeyFunction, where: Callable[[Any], Any] | None) -> KeyFunction:
    if where is None:
        return inner

    def key(attrs: Mapping[str, Any]) -> str | None:
        try:
            selected = bool(where(attrs))
        except Exception:  # noqa: BLE001 - a device the condition cannot be evaluated on is simply not a member
            return None
        return inner(attrs) if selected else None

    return key


def _position(attrs: Mapping[str, Any]) -> tuple[float, float] | None:
    lat, lon = attrs.get("lat"), attrs.get("lon")
    if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
        return None
    if math.isnan(lat) or math.isnan(lon):
        return None
    return float(lat), float(lon)


def _geohash_key(precision: int) -> KeyFunction:
    def key(attrs: Mapping[str, Any]) -> str | None:
        point = _position(attrs)
        if point is None:
            return None
        return geohash_encode(np.array([point[0]]), np.array([point[1]]), precision)[0]

    return key


def _region_key(regions: Mapping[str, Mapping[str, Any]]) -> KeyFunction:
    shapes = [(name, spec) for name, spec in regions.items()]

    def key(attrs: Mapping[str, Any]) -> str | None:
        point = _position(attrs)
        if point is None:
            return None
        lat, lon = np.array([point[0]]), np.array([point[1]])
        for name, spec in shapes:
            if "bbox" in spec and bool(in_bbox(lat, lon, spec["bbox"])[0]):
                return name
            if "polygon" in spec and bool(in_polygon(lat, lon, spec["polygon"])[0]):
                return name
        return None

    return key


def _constant(name: str) -> KeyFunction:
    return lambda attrs: name


def levels_for(
    config: Mapping[str, Any], compile_where: Callable[[str], Callable[[Any], Any]]
) -> list[Level]:
    """The levels an aggregate keys by, from its plan config (``group`` spec, ``group_by``, ``per_device``).

    ``compile_where`` turns a ``where`` text into a predicate over device attributes. Levels come outermost
    first; the device level (when ``per_device``) comes last.
    """
    levels: list[Level] = []
    spec = config.get("group_spec")
    group_name = str(config.get("group") or "")
    if spec:
        where = compile_where(spec["where"]) if spec.get("where") else None
        if spec.get("hierarchy"):
            path = [str(a) for a in spec["hierarchy"]]
            for depth in range(1, len(path) + 1):
                levels.append(Level(path[depth - 1], _filtered(_joined(path[:depth]), where)))
        elif spec.get("by"):
            levels.append(Level(group_name, _filtered(_joined([str(a) for a in spec["by"]]), where)))
        elif spec.get("geohash"):
            levels.append(Level(group_name, _filtered(_geohash_key(int(spec["geohash"])), where)))
        elif spec.get("regions"):
            levels.append(Level(group_name, _filtered(_region_key(spec["regions"]), where)))
        else:
            levels.append(Level(group_name, _filtered(_constant(group_name), where)))
    elif config.get("group_by"):
        attributes = [str(a) for a in config["group_by"]]
        levels.append(Level("/".join(attributes), _joined(attributes)))
    else:
        levels.append(Level(ALL_LEVEL, _constant(ALL_LEVEL)))
    if config.get("per_device"):
        levels.append(Level(DEVICE_LEVEL, lambda attrs: None, per_device=True))
    return levels


@dataclass
class _LevelSlots:
    level: Level
    #: device index -> slot (-1: not a member)
    slot_list: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    _array: I64 | None = None
    _key_array: npt.NDArray[np.object_] | None = None

    @property
    def slots(self) -> I64:
        if self._array is None or len(self._array) != len(self.slot_list):
            self._array = np.asarray(self.slot_list, dtype=np.int64)
        return self._array

    @property
    def key_array(self) -> npt.NDArray[np.object_]:
        """The keys by slot as an object array, with None last (where slot -1 indexes)."""
        if self._key_array is None or self._key_array.size != len(self.keys) + 1:
            self._key_array = np.empty(len(self.keys) + 1, dtype=object)
            self._key_array[:-1] = self.keys
        return self._key_array

    def slot(self, key: str) -> int:
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.keys)
            self.keys.append(key)
        return found


class Membership:
    """Device ids and group keys interned to integers; per level, ``device index -> slot`` arrays.

    ``attributes_of(device_id)`` gives the registry's attributes (empty for an unknown device);
    ``version()`` changes whenever the registry does, which triggers a rebuild of every level's slots.
    ``before_move()`` is called just before a rebuild moves a known device to another slot (the old slots are
    still in place then); registering new devices never changes the slots of known ones.
    Devices unknown to the registry are keyed by the attributes their first event carried (``type``, ``site``,
    ``group``).
    """

    def __init__(
        self,
        levels: Sequence[Level],
        attributes_of: Callable[[str], Mapping[str, Any]],
        version: Callable[[], Any] = lambda: None,
        before_move: Callable[[], None] = lambda: None,
    ) -> None:
        self.levels = [_LevelSlots(level) for level in levels]
        self.attributes_of = attributes_of
        self.version = version
        self.before_move = before_move
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self._fallback: dict[int, dict[str, Any]] = {}
        self._seen_version = version()
        #: bumped whenever a known device's slot changes (new devices only append slots)
        self.generation = 0

    def device_indices(self, devices: Sequence[str], events: Sequence[Mapping[str, Any]] | None = None) -> I64:
        """Indices of these device ids, registering new devices (and their group slots) on first sight."""
        index = self.index
        try:
            found = list(map(index.__getitem__, devices))
        except KeyError:
            found = [index.get(d, -1) for d in devices]
        if -1 in found:
            for position, device in enumerate(devices):
                if found[position] == -1:
                    found[position] = index.get(device, -1)
                    if found[position] == -1:
                        found[position] = self._register(device, events[position] if events is not None else None)
        self.refresh()
        return np.asarray(found, dtype=np.int64)

    def register_all(self, devices: Sequence[str]) -> I64:
        """Map a table of distinct device ids to indices (dictionary-encoded input)."""
        return self.device_indices(devices)

    def _register(self, device: str, event: Mapping[str, Any] | None) -> int:
        position = len(self.ids)
        self.ids.append(device)
        self.index[device] = position
        if event is not None:
            self._fallback[position] = {k: event[k] for k in ("type", "site", "group") if k in event}
        attrs = self._attributes(position)
        for entry in self.levels:
            slot = entry.slot(device) if entry.level.per_device else self._slot(entry, attrs)
            entry.slot_list.append(slot)
        return position

    def _attributes(self, position: int) -> Mapping[str, Any]:
        attrs = self.attributes_of(self.ids[position])
        if attrs:
            return attrs
        return {"id": self.ids[position], **self._fallback.get(position, {})}

    @staticmethod
    def _slot(entry: _LevelSlots, attrs: Mapping[str, Any]) -> int:
        key = entry.level.key(attrs)
        return -1 if key is None else entry.slot(key)

    def refresh(self) -> None:
        """Rebuild every level's slots when the registry changed since the last look."""
        current = self.version()
        if current == self._seen_version:
            return
        self._seen_version = current
        attributes = [self._attributes(position) for position in range(len(self.ids))]
        for entry in self.levels:
            if entry.level.per_device:
                continue
            slot_list = [self._slot(entry, attrs) for attrs in attributes]
            if slot_list != entry.slot_list:
                self.before_move()
                self.generation += 1
                entry.slot_list = slot_list
                entry._array = None

    def slots(self, level: int, devices: I64) -> I64:
        """The slot of each device index at ``level`` (-1: not a member)."""
        table = self.levels[level].slots
        out: I64 = table[devices]
        return out

    def key(self, level: int, slot: int) -> str:
        """The group key of a slot."""
        return self.levels[level].keys[slot]

    def keys(self, level: int) -> list[str]:
        """Every key of a level, by slot."""
        return self.levels[level].keys

    def keys_of(self, level: int, slots: I64) -> list[str | None]:
        """The group key of each slot at ``level`` (None for -1: not a member)."""
        keys: list[str | None] = self.levels[level].key_array[slots].tolist()
        return keys
