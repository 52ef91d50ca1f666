"""The Store port: namespaced key/value state (snapshots) and append-only record history."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

__all__ = ["Store"]


class Store(Protocol):
    """Keeps JSON-serializable values under (namespace, key) and appends records to named logs."""

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` (replacing any previous one)."""

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        """Return the stored value or ``default``."""

    def delete(self, namespace: str, key: str) -> None:
        """Remove a key (no error when absent)."""

    def items(self, namespace: str) -> Iterator[tuple[str, Any]]:
        """All (key, value) pairs of a namespace, ordered by key."""

    def append(self, log: str, records: list[Mapping[str, Any]]) -> None:
        """Append records to a log, in order."""

    def read(self, log: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Mapping[str, Any]]]:
        """Records of a log with sequence numbers greater than ``after`` (sequence numbers start at 1)."""

    def close(self) -> None:
        """Release resources."""
