"""Semantic versions: ``2.10.1``, ``2.10`` (= ``2.10.0``), ``v2.9.7``, ``2.0.0-rc1`` (pre-release sorts first).

Ordering follows SemVer 2.0: numeric fields numerically, a pre-release before its release, pre-release
identifiers compared field by field (numeric ones numerically and before alphanumeric ones); ``+build``
metadata is accepted and ignored.
"""

from __future__ import annotations

import functools
import re
from typing import Any

__all__ = ["Version", "VersionError", "parse_version", "to_version"]

_VERSION_RE = re.compile(
    r"^[vV]?(0|[1-9][0-9]{0,8})(?:\.(0|[1-9][0-9]{0,8}))?(?:\.(0|[1-9][0-9]{0,8}))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
_MAX_TEXT = 128


class VersionError(ValueError):
    """A string is not a semantic version."""


class Version:
    """An immutable, hashable, totally ordered semantic version. Build with :meth:`parse` (or ``Version("1.2")``)."""

    __slots__ = ("major", "minor", "patch", "pre", "_key")

    major: int
    minor: int
    patch: int
    pre: tuple[str | int, ...]
    #: what equality, hashing and order compare
    _key: tuple[Any, ...]

    def __init__(self, text: str) -> None:
        match = _VERSION_RE.match(text) if isinstance(text, str) and len(text) <= _MAX_TEXT else None
        if match is None:
            raise VersionError(f"invalid version {text!r} (expected e.g. '2.10.1', '2.10' or '2.0.0-rc1')")
        major, minor, patch, pre = match.groups()
        parts: tuple[str | int, ...] = ()
        if pre is not None:
            parts = tuple(int(p) if p.isdigit() else p for p in pre.split("."))
        object.__setattr__(self, "major", int(major))
        object.__setattr__(self, "minor", int(minor or 0))
        object.__setattr__(self, "patch", int(patch or 0))
        object.__setattr__(self, "pre", parts)
        # release sorts after every pre-release; numeric pre fields sort before alphanumeric ones
        pre_key = (1,) if not parts else (0, *((0, p, "") if isinstance(p, int) else (1, 0, p) for p in parts))
        object.__setattr__(self, "_key", (self.major, self.minor, self.patch, pre_key))

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse ``text`` (cached); raises :class:`VersionError` when it is not a version."""
        return parse_version(text)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Version is immutable")

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}.{self.patch}"
        return f"{base}-{'.'.join(str(p) for p in self.pre)}" if self.pre else base

    def __repr__(self) -> str:
        return f"Version({str(self)!r})"

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key == other._key

    def __lt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return bool(self._key < other._key)

    def __le__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return bool(self._key <= other._key)

    def __gt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return bool(self._key > other._key)

    def __ge__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return bool(self._key >= other._key)


@functools.lru_cache(maxsize=4096)
def parse_version(text: str) -> Version:
    """``text`` -> :class:`Version` (cached); raises :class:`VersionError` for anything else."""
    return Version(text)


def to_version(value: Any) -> Version | None:
    """Run-time coercion: a Version passes, a valid version string is parsed, anything else becomes None (null)."""
    if value.__class__ is Version:
        return value
    if isinstance(value, str):
        try:
            return parse_version(value)
        except VersionError:
            return None
    return None
