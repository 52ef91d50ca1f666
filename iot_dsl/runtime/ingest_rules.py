"""Ingestion rules: a source stream's ``normalize`` and ``checksum`` config in, batch functions out.

* :class:`Normalizer` applies the stream's normalisation rules to decoded events in place: for the events a rule's
  ``when`` selects (an expression over the event and the ``device.`` namespace), it renames fields, then applies
  ``scale`` (``value * factor + offset``) and named ``units`` conversions. Rules apply in order; each sees the
  output of the previous one. A ``when`` that reads only ``device.*`` attributes is evaluated once per device and
  cached until the device registry changes.
* :class:`ChecksumVerifier` checks an envelope checksum: the checksum field holds the digest of the canonical
  JSON of the event without that field (orjson, keys sorted, no whitespace, UTF-8).
* :data:`UNIT_CONVERSIONS` is the closed set of named unit conversions.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any

import orjson

from ..errors import ExprError
from ..expr import compile_expr, parse_expr
from ..expr.nodes import field_paths
from ..expr.types import Scope

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "UNIT_CONVERSIONS",
    "ChecksumVerifier",
    "NormalizeRule",
    "Normalizer",
    "checksum_of",
]

Event = dict[str, Any]

#: Named unit conversions for ``normalize[].units``: name -> (factor, offset), i.e. ``value * factor + offset``.
UNIT_CONVERSIONS: dict[str, tuple[float, float]] = {
    "F_to_C": (5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "C_to_F": (9.0 / 5.0, 32.0),
    "K_to_C": (1.0, -273.15),
    "C_to_K": (1.0, 273.15),
    "ms_to_s": (0.001, 0.0),
    "s_to_ms": (1000.0, 0.0),
    "kPa_to_bar": (0.01, 0.0),
    "bar_to_kPa": (100.0, 0.0),
    "psi_to_bar": (0.0689475729, 0.0),
    "bar_to_psi": (14.503773773, 0.0),
    "mbar_to_bar": (0.001, 0.0),
    "percent_to_ratio": (0.01, 0.0),
    "ratio_to_percent": (100.0, 0.0),
}

_NUMBER = (int, float)


@dataclass
class NormalizeRule:
    """One compiled ``normalize`` entry."""

    #: None: applies to every event
    when: Callable[[Any], Any] | None
    #: whether ``when`` reads only the device key and ``device.*`` (then it is cached per device)
    per_device: bool
    renames: list[tuple[str, str]]
    #: field -> (factor, offset), scale and units merged (units after scale when both name a field)
    linear: list[tuple[str, float, float]]


def _linear(rule: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for name, spec in (rule.get("scale") or {}).items():
        out[name] = (float(spec.get("factor", 1.0)), float(spec.get("offset", 0.0)))
    for name, unit in (rule.get("units") or {}).items():
        factor, offset = UNIT_CONVERSIONS[unit]
        if name in out:  # scale first, then the unit conversion: compose the two linear maps
            f0, o0 = out[name]
            out[name] = (f0 * factor, o0 * factor + offset)
        else:
            out[name] = (factor, offset)
    return [(k, f, o) for k, (f, o) in out.items()]


class Normalizer:
    """Apply a stream's ``normalize`` rules to a batch of events in place."""

    def __init__(self, rules: Sequence[Mapping[str, Any]], scope: Scope, key: str, registry: Any = None) -> None:
        self.key = key
        self.registry = registry
        self.rules: list[NormalizeRule] = []
        for rule in rules:
            text = rule.get("when")
            when = None
            per_device = False
            if text:
                node = parse_expr(text)
                when = compile_expr(node, scope)
                per_device = all(p == (key,) or (len(p) > 1 and p[0] == "device") for p in field_paths(node))
            self.rules.append(
                NormalizeRule(when, per_device, [(a, b) for a, b in (rule.get("rename") or {}).items()], _linear(rule))
            )
        self._cache: list[dict[str, bool]] = [{} for _ in self.rules]
        self._version: Any = None

    def __bool__(self) -> bool:
        return bool(self.rules)

    def apply(self, events: list[Event], devices: list[str], fail: Callable[[int, str], None]) -> None:
        """Normalise ``events`` (parallel to ``devices``) in place; ``fail(index, reason)`` reports a bad event.

        An event whose rule cannot be evaluated, or whose scaled field is not a number, is reported and left as
        it is (the caller drops it).
        """
        version = getattr(self.registry, "version", None)
        if version != self._version:
            self._version = version
            self._cache = [{} for _ in self.rules]
        failed: set[int] = set()
        for rule, cache in zip(self.rules, self._cache):
            selected = self._select(rule, cache, events, devices, failed, fail)
            renames, linear = rule.renames, rule.linear
            for index in selected:
                event = events[index]
                for old, new in renames:
                    if old in event:
                        event[new] = event.pop(old)
                for name, factor, offset in linear:
                    value = event.get(name)
                    if value is None:
                        continue
                    if type(value) not in _NUMBER:  # bool is not a number here
                        failed.add(index)
                        fail(index, f"cannot normalise field '{name}': expected a number, got {type(value).__name__}")
                        break
                    event[name] = value * factor + offset

    def _select(
        self,
        rule: NormalizeRule,
        cache: dict[str, bool],
        events: list[Event],
        devices: list[str],
        failed: set[int],
        fail: Callable[[int, str], None],
    ) -> list[int]:
        when = rule.when
        if when is None:
            return [i for i in range(len(events)) if i not in failed]
        if rule.per_device:
            flags = list(map(cache.get, devices))
            if None in flags:
                key = self.key
                for index, device in enumerate(devices):
                    if flags[index] is None:
                        flag = cache.get(device)
                        if flag is None:
                            try:
                                flag = bool(when({key: device}))
                            except (ExprError, KeyError, TypeError):
                                flag = False  # a device attribute the rule needs is unknown: the rule does not apply
                            cache[device] = flag
                        flags[index] = flag
            selected = list(compress(range(len(flags)), flags))
            return [i for i in selected if i not in failed] if failed else selected
        selected = []
        for index, event in enumerate(events):
            if index in failed:
                continue
            try:
                if when(event):
                    selected.append(index)
            except (ExprError, KeyError, TypeError) as exc:
                failed.add(index)
                fail(index, f"cannot evaluate normalisation rule 'when': {_reason(exc)}")
        return selected


def _reason(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ExprError) else repr(exc)


def _crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _adler32(data: bytes) -> int:
    return zlib.adler32(data) & 0xFFFFFFFF


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: Checksum algorithms: name -> digest of the canonical bytes (an unsigned 32-bit integer, or lowercase hex text).
CHECKSUM_ALGORITHMS: dict[str, Callable[[bytes], int | str]] = {
    "crc32": _crc32,
    "adler32": _adler32,
    "sha256": _sha256,
}


def checksum_of(event: Mapping[str, Any], field: str, algorithm: str = "crc32") -> int | str:
    """The checksum an envelope must carry in ``field``: the digest of the event's canonical JSON without it.

    Canonical JSON is ``orjson.dumps(event_without_field, option=OPT_SORT_KEYS)``: keys sorted, no whitespace,
    UTF-8. crc32 and adler32 give an unsigned 32-bit integer, sha256 lowercase hex text.
    """
    body = {k: v for k, v in event.items() if k != field}
    return CHECKSUM_ALGORITHMS[algorithm](orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


class ChecksumVerifier:
    """Check the envelope checksum of each event of a batch."""

    def __init__(self, field: str, algorithm: str = "crc32") -> None:
        self.field = field
        self.algorithm = algorithm
        self._digest = CHECKSUM_ALGORITHMS[algorithm]

    def failure(self, event: Mapping[str, Any]) -> str | None:
        """None when the checksum holds, else the dead-letter reason."""
        claimed = event.get(self.field)
        if claimed is None:
            return f"missing checksum '{self.field}'"
        try:
            actual = self._digest(
                orjson.dumps({k: v for k, v in event.items() if k != self.field}, option=orjson.OPT_SORT_KEYS)
            )
        except TypeError as exc:  # a pushed dict may hold values JSON cannot carry
            return f"cannot compute checksum: {exc}"
        if isinstance(actual, int):
            if isinstance(claimed, str):
                try:
                    claimed = int(claimed, 16)
                except ValueError:
                    return f"checksum '{self.field}' is not a number: {event.get(self.field)!r}"
            ok = type(claimed) is int and claimed == actual
        else:
            ok = isinstance(claimed, str) and claimed.lower() == actual
        if ok:
            return None
        return f"checksum mismatch: '{self.field}' is {event.get(self.field)!r}, {self.algorithm} of the payload is {actual!r}"
