"""The checked, typed form of a workflow's ``simulation:`` section.

:func:`parse_simulation` takes the plain data (mappings, lists, strings, numbers) and returns a
:class:`SimulationSpec`: durations turned into seconds, defaults filled in, every value range-checked. A problem
raises ValueError naming where it is, e.g.
``simulation.fleet[0].signals.temp: unknown shape 'sinus' (expected one of: drift, random_walk, ...)``.
The workflow compiler's JSON Schema checks the same section; this module keeps the simulator safe on its own.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from iot_dsl.errors import did_you_mean
from iot_dsl.runtime.clock import parse_duration, parse_time

from .registry import CORE_ATTRIBUTES, FrozenAttributes

__all__ = [
    "SHAPES",
    "EVENT_KEYS",
    "DEFAULT_START",
    "DEFAULT_FIRMWARE",
    "SignalSpec",
    "FirmwareSpec",
    "GeoSpec",
    "OfflineWindow",
    "FleetEntrySpec",
    "SimulationSpec",
    "parse_simulation",
]

#: ``simulation.start`` when none is given.
DEFAULT_START = "2026-01-01T00:00:00Z"

#: ``firmware`` of devices whose fleet entry names none.
DEFAULT_FIRMWARE = "unknown"

#: Keys every event carries; signal and field names may not reuse them.
EVENT_KEYS: tuple[str, ...] = ("stream", "device", "type", "site", "group", "seq", "ts")

_COMMON_SIGNAL_KEYS = ("shape", "noise", "min", "max")

#: Signal shapes, with the keys each one uses (besides ``shape``, ``noise``, ``min``, ``max``) and those it needs.
SHAPES: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = MappingProxyType(
    {
        "drift": (("base", "rate", "per"), ("rate",)),
        "random_walk": (("base", "step"), ("step",)),
        "sine": (("base", "amplitude", "period"), ("amplitude", "period")),
        "spike": (("base", "height", "every", "width", "probability"), ("height",)),
        "steady": (("base", "value"), ()),
        "step": (("base", "to", "at"), ("to", "at")),
        "stuck": (("base", "at"), ("at",)),
    }
)

_ALL_SIGNAL_KEYS = frozenset(_COMMON_SIGNAL_KEYS).union(*(uses for uses, _ in SHAPES.values()))
_SIMULATION_KEYS = ("start", "interval", "stream", "fleet")
_ENTRY_KEYS = (
    "type",
    "count",
    "id_prefix",
    "sites",
    "groups",
    "geo",
    "firmware",
    "attributes",
    "interval",
    "signals",
    "fields",
    "dropout",
    "offline",
    "command_latency",
    "failure_rate",
    "reject_rate",
    "silent_rate",
)
_RATE_KEYS = ("failure_rate", "reject_rate", "silent_rate")
_DEFAULT_LATENCY = 0.1


@dataclass(frozen=True)
class SignalSpec:
    """One telemetry signal: its ``name``, ``shape`` and the shape's parameters (durations in seconds).

    Unused parameters keep their defaults. ``width`` defaults to the reporting interval; ``every`` of 0 and
    ``probability`` of 0 mean "no periodic spikes" and "no random spikes".
    """

    name: str
    shape: str
    base: float = 0.0
    value: float = 0.0
    amplitude: float = 0.0
    period: float = 1.0
    noise: float = 0.0
    step: float = 0.0
    min: float | None = None
    max: float | None = None
    to: float = 0.0
    at: float = 0.0
    height: float = 0.0
    every: float = 0.0
    width: float = 0.0
    probability: float = 0.0
    rate: float = 0.0
    per: float = 1.0


@dataclass(frozen=True)
class FirmwareSpec:
    """How firmware versions are handed out: ``mode`` is ``"cycle"`` (round-robin over ``versions``; a single
    version is a one-item cycle) or ``"weighted"`` (random choice with ``weights``)."""

    mode: str
    versions: tuple[str, ...]
    weights: tuple[float, ...] = ()


@dataclass(frozen=True)
class GeoSpec:
    """Where devices sit: uniformly within ``spread_km`` of (``lat``, ``lon``)."""

    lat: float
    lon: float
    spread_km: float = 0.0


@dataclass(frozen=True)
class OfflineWindow:
    """From ``start`` to ``end`` seconds after the simulation start, ``fraction`` of the entry's devices are offline."""

    start: float
    end: float
    fraction: float = 1.0


@dataclass(frozen=True)
class FleetEntrySpec:
    """One ``simulation.fleet[i]`` entry, checked: ``count`` devices of ``type`` and how they behave."""

    index: int
    type: str
    count: int
    id_prefix: str
    sites: tuple[str, ...]
    groups: tuple[str, ...] | None
    geo: GeoSpec | None
    firmware: FirmwareSpec
    attributes: Mapping[str, Any]
    interval: float
    signals: tuple[SignalSpec, ...]
    fields: tuple[tuple[str, tuple[Any, ...]], ...]
    dropout: float
    offline: tuple[OfflineWindow, ...]
    latency_min: float
    latency_max: float
    failure_rate: float
    reject_rate: float
    silent_rate: float

    @property
    def path(self) -> str:
        """The entry's location in the workflow, e.g. ``simulation.fleet[2]``."""
        return f"simulation.fleet[{self.index}]"


@dataclass(frozen=True)
class SimulationSpec:
    """The whole checked ``simulation:`` section: ``start`` (epoch seconds), default ``interval`` (seconds),
    event ``stream`` name and the ``fleet`` entries."""

    start: float
    interval: float
    stream: str
    fleet: tuple[FleetEntrySpec, ...]


def parse_simulation(spec: Mapping[str, Any], *, default_stream: str = "telemetry") -> SimulationSpec:
    """Check the plain-data ``simulation:`` section ``spec`` and return it as a :class:`SimulationSpec`.

    ``default_stream`` is used when the section names no ``stream``. Raises ValueError naming the offending
    location and key for any problem (unknown keys, wrong types, out-of-range values, bad durations).
    """
    path = "simulation"
    body = _mapping(spec, path)
    _known_keys(body, _SIMULATION_KEYS, path)
    start = _time(body.get("start", DEFAULT_START), f"{path}.start")
    interval = _interval(body.get("interval", 1.0), f"{path}.interval")
    stream = _text(body.get("stream", default_stream), f"{path}.stream")
    fleet_raw = body.get("fleet", [])
    if isinstance(fleet_raw, (str, bytes)) or not isinstance(fleet_raw, Sequence):
        raise ValueError(f"{path}.fleet: must be a list of fleet entries, got {_kind(fleet_raw)}")
    fleet = tuple(_entry(raw, index, interval) for index, raw in enumerate(fleet_raw))
    _check_unique_prefixes(fleet)
    return SimulationSpec(start=start, interval=interval, stream=stream, fleet=fleet)


def _entry(raw: object, index: int, default_interval: float) -> FleetEntrySpec:
    path = f"simulation.fleet[{index}]"
    body = _mapping(raw, path)
    _known_keys(body, _ENTRY_KEYS, path)
    if "type" not in body:
        raise ValueError(f"{path}: missing key 'type'")
    if "count" not in body:
        raise ValueError(f"{path}: missing key 'count'")
    type_name = _text(body["type"], f"{path}.type")
    count = body["count"]
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
        raise ValueError(f"{path}.count: must be an integer >= 0, got {count!r}")
    interval = _interval(body.get("interval", default_interval), f"{path}.interval")
    sites = _names(body.get("sites", ["default"]), f"{path}.sites")
    groups = _names(body["groups"], f"{path}.groups") if "groups" in body else None
    latency_min, latency_max = _latency(body.get("command_latency", _DEFAULT_LATENCY), f"{path}.command_latency")
    rates = {key: _number(body.get(key, 0.0), f"{path}.{key}", low=0.0, high=1.0) for key in _RATE_KEYS}
    if sum(rates.values()) > 1.0 + 1e-12:
        raise ValueError(
            f"{path}: reject_rate + silent_rate + failure_rate must be at most 1, got {sum(rates.values())!r}"
        )
    signals = _signals(body.get("signals", {}), f"{path}.signals", interval)
    fields = _fields(body.get("fields", {}), f"{path}.fields", {s.name for s in signals})
    return FleetEntrySpec(
        index=index,
        type=type_name,
        count=int(count),
        id_prefix=_text(body.get("id_prefix", type_name), f"{path}.id_prefix"),
        sites=sites,
        groups=groups,
        geo=_geo(body["geo"], f"{path}.geo") if "geo" in body else None,
        firmware=_firmware(body.get("firmware", DEFAULT_FIRMWARE), f"{path}.firmware"),
        attributes=_attributes(body.get("attributes", {}), f"{path}.attributes"),
        interval=interval,
        signals=signals,
        fields=fields,
        dropout=_number(body.get("dropout", 0.0), f"{path}.dropout", low=0.0, high=1.0),
        offline=_offline(body.get("offline", []), f"{path}.offline"),
        latency_min=latency_min,
        latency_max=latency_max,
        failure_rate=rates["failure_rate"],
        reject_rate=rates["reject_rate"],
        silent_rate=rates["silent_rate"],
    )


def _signals(raw: object, path: str, interval: float) -> tuple[SignalSpec, ...]:
    body = _mapping(raw, path)
    out: list[SignalSpec] = []
    for name, value in body.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: signal names must be non-empty strings, got {name!r}")
        if name in EVENT_KEYS:
            raise ValueError(f"{where}: the name {name!r} is reserved for every event ({', '.join(EVENT_KEYS)})")
        out.append(_signal(name, value, where, interval))
    return tuple(out)


def _signal(name: str, raw: object, path: str, interval: float) -> SignalSpec:
    body = _mapping(raw, path)
    if "shape" not in body:
        raise ValueError(f"{path}: missing key 'shape' (expected one of: {', '.join(SHAPES)})")
    shape = body["shape"]
    if not isinstance(shape, str) or shape not in SHAPES:
        raise ValueError(f"{path}: unknown shape {shape!r} (expected one of: {', '.join(SHAPES)})")
    uses, needs = SHAPES[shape]
    allowed = _COMMON_SIGNAL_KEYS + uses
    for key in body:
        if key in _ALL_SIGNAL_KEYS and key not in allowed:
            raise ValueError(f"{path}.{key}: not used by shape {shape!r} (it uses: {', '.join(allowed[1:])})")
    _known_keys(body, allowed, path)
    for key in needs:
        if key not in body:
            raise ValueError(f"{path}: shape {shape!r} needs key {key!r}")
    values: dict[str, Any] = {"name": name, "shape": shape}
    for key in ("base", "value", "amplitude", "to", "height", "rate"):
        if key in body:
            values[key] = _number(body[key], f"{path}.{key}")
    for key in ("noise", "step"):
        if key in body:
            values[key] = _number(body[key], f"{path}.{key}", low=0.0)
    if "probability" in body:
        values["probability"] = _number(body["probability"], f"{path}.probability", low=0.0, high=1.0)
    for key in ("period", "per"):
        if key in body:
            values[key] = _duration(body[key], f"{path}.{key}", positive=True)
    for key in ("at", "every", "width"):
        if key in body:
            values[key] = _duration(body[key], f"{path}.{key}")
    for key in ("min", "max"):
        if key in body:
            values[key] = _number(body[key], f"{path}.{key}")
    if "min" in values and "max" in values and values["min"] > values["max"]:
        raise ValueError(f"{path}: min ({values['min']!r}) is greater than max ({values['max']!r})")
    if shape == "steady" and "value" not in values:
        values["value"] = values.get("base", 0.0)
    if shape == "spike":
        if not values.get("every") and not values.get("probability"):
            raise ValueError(f"{path}: shape 'spike' needs 'every' (> 0) or 'probability' (> 0)")
        values.setdefault("width", interval)
    return SignalSpec(**values)


def _fields(raw: object, path: str, signal_names: set[str]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    body = _mapping(raw, path)
    out: list[tuple[str, tuple[Any, ...]]] = []
    for name, choices in body.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{path}: field names must be non-empty strings, got {name!r}")
        if name in EVENT_KEYS:
            raise ValueError(f"{where}: the name {name!r} is reserved for every event ({', '.join(EVENT_KEYS)})")
        if name in signal_names:
            raise ValueError(f"{where}: {name!r} is already a signal of this fleet entry")
        if isinstance(choices, (str, bytes, Mapping)) or not isinstance(choices, Sequence) or not choices:
            raise ValueError(f"{where}: must be a non-empty list of values to choose from, got {_kind(choices)}")
        out.append((name, tuple(choices)))
    return tuple(out)


def _geo(raw: object, path: str) -> GeoSpec:
    body = _mapping(raw, path)
    _known_keys(body, ("lat", "lon", "spread_km"), path)
    for key in ("lat", "lon"):
        if key not in body:
            raise ValueError(f"{path}: missing key {key!r}")
    return GeoSpec(
        lat=_number(body["lat"], f"{path}.lat", low=-90.0, high=90.0),
        lon=_number(body["lon"], f"{path}.lon", low=-180.0, high=180.0),
        spread_km=_number(body.get("spread_km", 0.0), f"{path}.spread_km", low=0.0),
    )


def _firmware(raw: object, path: str) -> FirmwareSpec:
    if isinstance(raw, str):
        return FirmwareSpec(mode="cycle", versions=(raw,))
    if isinstance(raw, Mapping):
        if not raw:
            raise ValueError(f"{path}: needs at least one version")
        versions = tuple(_text(key, f"{path} (a version name)") for key in raw)
        weights = tuple(_number(raw[key], f"{path}.{key}", low=0.0) for key in raw)
        if not sum(weights) > 0:
            raise ValueError(f"{path}: weights must sum to more than 0, got {sum(weights)!r}")
        return FirmwareSpec(mode="weighted", versions=versions, weights=weights)
    return FirmwareSpec(mode="cycle", versions=_names(raw, path))


def _attributes(raw: object, path: str) -> Mapping[str, Any]:
    body = _mapping(raw, path)
    for key in body:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{path}: attribute names must be non-empty strings, got {key!r}")
        if key in CORE_ATTRIBUTES:
            raise ValueError(f"{path}.{key}: {key!r} is a core device attribute and is set by the simulator")
    return FrozenAttributes(body)


def _offline(raw: object, path: str) -> tuple[OfflineWindow, ...]:
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence):
        raise ValueError(f"{path}: must be a list of {{from, to, fraction}} windows, got {_kind(raw)}")
    out: list[OfflineWindow] = []
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        body = _mapping(item, where)
        _known_keys(body, ("from", "to", "fraction"), where)
        for key in ("from", "to"):
            if key not in body:
                raise ValueError(f"{where}: missing key {key!r}")
        begin = _duration(body["from"], f"{where}.from")
        end = _duration(body["to"], f"{where}.to")
        if end < begin:
            raise ValueError(f"{where}: 'to' ({end!r} s) is before 'from' ({begin!r} s)")
        fraction = _number(body.get("fraction", 1.0), f"{where}.fraction", low=0.0, high=1.0)
        out.append(OfflineWindow(start=begin, end=end, fraction=fraction))
    return tuple(out)


def _latency(raw: object, path: str) -> tuple[float, float]:
    if isinstance(raw, Mapping):
        _known_keys(raw, ("min", "max"), path)
        low = _duration(raw.get("min", 0.0), f"{path}.min")
        high = _duration(raw.get("max", low), f"{path}.max")
        if high < low:
            raise ValueError(f"{path}: max ({high!r} s) is less than min ({low!r} s)")
        return low, high
    single = _duration(raw, path)
    return single, single


def _check_unique_prefixes(fleet: tuple[FleetEntrySpec, ...]) -> None:
    owner: dict[str, int] = {}
    for entry in fleet:
        if entry.count == 0:
            continue
        first = owner.setdefault(entry.id_prefix, entry.index)
        if first != entry.index:
            raise ValueError(
                f"{entry.path}.id_prefix: prefix {entry.id_prefix!r} is already used by simulation.fleet[{first}] "
                "(device ids would repeat; set a distinct id_prefix)"
            )


def _mapping(raw: object, path: str) -> Mapping[Any, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: must be a mapping, got {_kind(raw)}")
    return raw


def _known_keys(body: Mapping[Any, Any], allowed: Sequence[str], path: str) -> None:
    for key in body:
        if key not in allowed:
            hint = did_you_mean(str(key), allowed)
            extra = f" (did you mean {hint!r}?)" if hint else f" (expected one of: {', '.join(sorted(allowed))})"
            raise ValueError(f"{path}: unknown key {key!r}{extra}")


def _text(raw: object, path: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{path}: must be a non-empty string, got {_kind(raw)}")
    return raw


def _names(raw: object, path: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        return (_text(raw, path),)
    if isinstance(raw, (bytes, Mapping)) or not isinstance(raw, Sequence) or not raw:
        raise ValueError(f"{path}: must be a non-empty list of strings, got {_kind(raw)}")
    return tuple(_text(item, f"{path}[{i}]") for i, item in enumerate(raw))


def _number(raw: object, path: str, *, low: float | None = None, high: float | None = None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, numbers.Real) or not math.isfinite(float(raw)):
        raise ValueError(f"{path}: must be a finite number, got {_kind(raw)}")
    value = float(raw)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}" if low is not None else f"<= {high}"
        raise ValueError(f"{path}: must be {bounds}, got {raw!r}")
    return value


def _duration(raw: object, path: str, *, positive: bool = False) -> float:
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if positive and seconds <= 0:
        raise ValueError(f"{path}: must be a duration greater than 0, got {raw!r}")
    return seconds


def _interval(raw: object, path: str) -> float:
    seconds = _duration(raw, path)
    if seconds < 0.001:
        raise ValueError(f"{path}: must be at least 1ms, got {raw!r}")
    return seconds


def _time(raw: object, path: str) -> float:
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _kind(raw: object) -> str:
    if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        return repr(raw)
    return type(raw).__name__ if raw is not None else "null"
