"""In-memory store: dicts and lists, for tests and short runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["MemoryStore"]


class MemoryStore:
    """Implements :class:`~iot_dsl.storage.base.Store` in process memory."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, Any]] = {}
        self._logs: dict[str, list[Mapping[str, Any]]] = {}

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` under (namespace, key)."""
        self._values.setdefault(namespace, {})[key] = value

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        """Return the stored value or ``default``."""
        return self._values.get(namespace, {}).get(key, default)

    def delete(self, namespace: str, key: str) -> None:
        """Remove a key if present."""
        self._values.get(namespace, {}).pop(key, None)

    def items(self, namespace: str) -> Iterator[tuple[str, Any]]:
        """Pairs of a namespace, by key."""
        yield from sorted(self._values.get(namespace, {}).items())

    def append(self, log: str, records: list[Mapping[str, Any]]) -> None:
        """Append records to a log."""
        self._logs.setdefault(log, []).extend(records)

    def read(self, log: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Mapping[str, Any]]]:
        """Records after sequence number ``after``."""
        rows = self._logs.get(log, [])[after:]
        if limit is not None:
            rows = rows[:limit]
        return [(after + i + 1, r) for i, r in enumerate(rows)]

    def close(self) -> None:
        """Nothing to release."""
