"""Aggregate and anomaly history: records in, a SQLite table queryable by aggregate, group and time range out.

:class:`HistoryStore` keeps one row per aggregate window (``aggregate``, ``level``, ``group``, window ``start``
and ``end``; a revision replaces the row of the revision before it) and one row per anomaly. It lives in the
embedded SQLite database: the same file as a :class:`~iot_dsl.storage.sqlite.SqliteStore` when the engine
runs with one (``history_for(store)``), or a private in-memory database otherwise.
"""

from __future__ import annotations

import os
import sqlite3
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..runtime.clock import parse_time
from .sqlite import SqliteStore

__all__ = ["HistoryQuery", "HistoryStore", "history_for"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry_history (
    kind TEXT NOT NULL,
    aggregate TEXT NOT NULL,
    level TEXT NOT NULL,
    grp TEXT NOT NULL,
    device TEXT NOT NULL,
    start REAL NOT NULL,
    "end" REAL NOT NULL,
    revision INTEGER NOT NULL,
    method TEXT NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (kind, aggregate, level, grp, device, start, "end", method)
);
CREATE INDEX IF NOT EXISTS telemetry_history_by_time ON telemetry_history (aggregate, kind, start);
"""


@dataclass(frozen=True)
class HistoryQuery:
    """What to read: one aggregate; optionally a group key, a level, a device, a kind and a time range.

``group`` matches group-level rows with that key and the device-level rows of devices in that group.

    ``start``/``end`` select windows that overlap ``[start, end)`` (epoch seconds or ISO-8601 text).
    """

    aggregate: str
    group: str | None = None
    level: str | None = None
    device: str | None = None
    kind: str = "aggregate"
    start: float | str | None = None
    end: float | str | None = None
    limit: int | None = None


class HistoryStore:
    """Aggregate/anomaly history in SQLite (``path`` a file, or ``":memory:"``)."""

    def __init__(self, path: str | os.PathLike[str] = ":memory:", connection: sqlite3.Connection | None = None) -> None:
        self.path = os.fspath(path)
        self._owned = connection is None
        self._db = connection or sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self._owned and self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def write(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store aggregate and anomaly records (others are ignored); return how many were stored."""
        rows = []
        for record in records:
            kind = record.get("kind")
            if kind not in ("aggregate", "anomaly"):
                continue
            rows.append(
                (
                    kind,
                    str(record.get("aggregate", record.get("node"))),
                    str(record.get("level") or ""),
                    str(record.get("group") or ""),
                    str(record.get("device") or ""),
                    float(record["window_start"]),
                    float(record["window_end"]),
                    int(record.get("revision", 0)),
                    str(record.get("method") or ""),
                    orjson.dumps(record),
                )
            )
        if rows:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO telemetry_history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    'ON CONFLICT (kind, aggregate, level, grp, device, start, "end", method) DO UPDATE SET '
                    "revision = excluded.revision, record = excluded.record WHERE excluded.revision >= revision",
                    rows,
                )
        return len(rows)

    def query(self, query: HistoryQuery) -> list[dict[str, Any]]:
        """Records matching ``query``, ordered by window start, level, group and device."""
        sql = ["SELECT record FROM telemetry_history WHERE aggregate = ? AND kind = ?"]
        args: list[Any] = [query.aggregate, query.kind]
        if query.group is not None:
            sql.append("AND grp = ?")
            args.append(query.group)
        if query.device is not None:
            sql.append("AND device = ?")
            args.append(query.device)
        if query.level is not None:
            sql.append("AND level = ?")
            args.append(query.level)
        if query.start is not None:
            sql.append('AND "end" > ?')
            args.append(parse_time(query.start))
        if query.end is not None:
            sql.append("AND start < ?")
            args.append(parse_time(query.end))
        sql.append("ORDER BY start, level, grp, device, method")
        if query.limit is not None:
            sql.append("LIMIT ?")
            args.append(int(query.limit))
        rows = self._db.execute(" ".join(sql), args).fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def aggregates(self) -> list[str]:
        """Names of the aggregates with history."""
        return [row[0] for row in self._db.execute("SELECT DISTINCT aggregate FROM telemetry_history ORDER BY 1")]

    def close(self) -> None:
        """Close the database (when this object opened it)."""
        if self._owned:
            self._db.close()


_BY_STORE: weakref.WeakKeyDictionary[Any, HistoryStore] = weakref.WeakKeyDictionary()


def history_for(store: Any) -> HistoryStore:
    """The history that goes with an engine's store (one per store, so every aggregate shares it).

    A :class:`SqliteStore` keeps the history in its own database file; any other store (or none) gets a private
    in-memory database that lives as long as the store does.
    """
    found = _BY_STORE.get(store) if store is not None else None
    if found is not None:
        return found
    if isinstance(store, SqliteStore):
        if store.path != ":memory:":
            found = HistoryStore(store.path)
        else:
            found = HistoryStore(connection=store._db)
    else:
        found = HistoryStore()
    if store is not None:
        _BY_STORE[store] = found
    return found
