"""Fast conversion of column lists into event dicts.

:func:`row_builder` returns a function that takes a constant ``stream`` name and equal-length columns
(``device``, ``type``, ``site``, ``group``, ``seq``, ``ts``, then one per extra key) and returns one dict per row.
Building hundreds of thousands of dicts is the simulator's hot spot. The builder zips keys with rows; it never
generates code (key names come from workflow files, and no user text reaches ``exec``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["row_builder", "BASE_KEYS", "RowBuilder"]

#: The keys every event starts with, in order (``stream`` is a constant; the rest come from columns).
BASE_KEYS: tuple[str, ...] = ("stream", "device", "type", "site", "group", "seq", "ts")

RowBuilder = Callable[[str, Sequence[Sequence[Any]]], list[dict[str, Any]]]


@lru_cache(maxsize=256)
def row_builder(extra_keys: tuple[str, ...]) -> RowBuilder:
    """Return ``build(stream, columns) -> list[dict]`` for events with :data:`BASE_KEYS` plus ``extra_keys``.

    ``columns`` holds ``len(BASE_KEYS) - 1 + len(extra_keys)`` sequences of equal length, in key order (without
    ``stream``). Raises ValueError if a key repeats or is not a string.
    """
    keys = BASE_KEYS[1:] + extra_keys
    if len(set(BASE_KEYS + extra_keys)) != len(BASE_KEYS) + len(extra_keys):
        raise ValueError(f"event keys repeat: {list(BASE_KEYS + extra_keys)}")
    if not all(isinstance(key, str) for key in keys):
        raise ValueError(f"event keys must be strings: {list(extra_keys)}")
    all_keys = ("stream", *keys)

    def build(stream: str, columns: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        # no generated code: user-named keys never reach exec/compile
        return [dict(zip(all_keys, (stream, *row), strict=True)) for row in zip(*columns, strict=True)]

    return build
