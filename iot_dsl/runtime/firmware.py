"""Firmware ranges and command variants: which payload a device of a given firmware receives.

A range is ``*`` or comma-separated comparisons (``>=2.0``, ``<2.0``, ``>=1.2,<2.0``, ``==2.1.0``, ``!=1.9``);
versions compare as semantic versions (2.10 > 2.9).
"""

from __future__ import annotations

import re
from functools import lru_cache
from collections.abc import Callable, Mapping
from typing import Any

from ..expr import Version

__all__ = ["parse_range", "select_payload"]

_CLAUSE = re.compile(r"^\s*(>=|<=|==|!=|>|<|=)?\s*([vV]?[0-9][0-9A-Za-z.+-]*)\s*$")
_OPS: dict[str, Callable[[Version, Version], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@lru_cache(maxsize=1024)
def parse_range(text: str) -> Callable[[str], bool]:
    """Compile a firmware range into a predicate over version strings; ``ValueError`` with the reason if bad."""
    if text.strip() == "*":
        return lambda _v: True
    tests: list[tuple[Callable[[Version, Version], bool], Version]] = []
    for clause in text.split(","):
        found = _CLAUSE.match(clause)
        if not found:
            raise ValueError(f"'{clause.strip()}' is not a firmware comparison (like >=2.0 or <1.5.3)")
        tests.append((_OPS[found.group(1) or "=="], Version.parse(found.group(2))))

    def matches(firmware: str) -> bool:
        try:
            version = Version.parse(firmware)
        except ValueError:
            return False
        return all(op(version, bound) for op, bound in tests)

    return matches


def select_payload(command: Mapping[str, Any] | None, firmware: str) -> dict[str, Any] | None:
    """The payload for a device running ``firmware``: the first matching variant, else the default payload.

    Returns None when the command declares variants and none matches (the firmware does not support it).
    """
    spec = command or {}
    variants = spec.get("variants") or []
    for variant in variants:
        if parse_range(str(variant["firmware"]))(firmware):
            return dict(variant.get("payload") or {})
    if variants and "payload" not in spec:
        return None
    return dict(spec.get("payload") or {})
