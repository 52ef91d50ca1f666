"""SQLite store (the embedded default for durable state): WAL mode, one file, JSON values via orjson."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ns, key));
CREATE TABLE IF NOT EXISTS log (log TEXT NOT NULL, seq INTEGER NOT NULL, record BLOB NOT NULL, PRIMARY KEY (log, seq));
"""


class SqliteStore:
    """Implements :class:`~iot_dsl.storage.base.Store` on a SQLite file (``":memory:"`` for a private database)."""

    def __init__(self, path: str | os.PathLike[str] = ":memory:") -> None:
        self.path = os.fspath(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def put(self, namespace: str, key: str, value: Any) -> None:
        """Store ``value`` as JSON under (namespace, key)."""
        self._db.execute(
            "INSERT INTO kv(ns, key, value) VALUES (?, ?, ?) ON CONFLICT(ns, key) DO UPDATE SET value=excluded.value",
            (namespace, key, orjson.dumps(value)),
        )

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        """Return the stored value or ``default``."""
        row = self._db.execute("SELECT value FROM kv WHERE ns=? AND key=?", (namespace, key)).fetchone()
        return default if row is None else orjson.loads(row[0])

    def delete(self, namespace: str, key: str) -> None:
        """Remove a key if present."""
        self._db.execute("DELETE FROM kv WHERE ns=? AND key=?", (namespace, key))

    def items(self, namespace: str) -> Iterator[tuple[str, Any]]:
        """Pairs of a namespace, by key."""
        rows = self._db.execute("SELECT key, value FROM kv WHERE ns=? ORDER BY key", (namespace,)).fetchall()
        for key, value in rows:
            yield key, orjson.loads(value)

    def append(self, log: str, records: list[Mapping[str, Any]]) -> None:
        """Append records to a log in one transaction."""
        if not records:
            return
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM log WHERE log=?", (log,)).fetchone()
        start = int(row[0])
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO log(log, seq, record) VALUES (?, ?, ?)",
                [(log, start + i + 1, orjson.dumps(r)) for i, r in enumerate(records)],
            )

    def read(self, log: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Mapping[str, Any]]]:
        """Records with sequence numbers greater than ``after``."""
        rows = self._db.execute(
            "SELECT seq, record FROM log WHERE log=? AND seq>? ORDER BY seq LIMIT ?",
            (log, after, -1 if limit is None else limit),
        ).fetchall()
        return [(int(seq), orjson.loads(rec)) for seq, rec in rows]

    def close(self) -> None:
        """Close the database."""
        self._db.close()
