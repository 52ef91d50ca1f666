"""Embedded defaults behind the ports: memory transport, memory and SQLite stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from iot_dsl.storage import MemoryStore, SqliteStore
from iot_dsl.transports import MemoryTransport, topic_matches


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        ("#", "x/y", True),
        ("a/#/c", "a/b/c", False),
    ],
)
def test_topic_filters_follow_mqtt(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_memory_transport_delivers_in_order_and_cancel_stops_delivery() -> None:
    transport = MemoryTransport()
    got: list[tuple[str, int]] = []
    sub = transport.subscribe("x/+", lambda t, p: got.append((t, p)))
    transport.publish("x/1", 1)
    transport.publish("y/1", 2)
    sub.cancel()
    transport.publish("x/2", 3)
    assert got == [("x/1", 1)]
    assert transport.published == {"x/1": 1, "y/1": 1, "x/2": 1}


@pytest.mark.parametrize("make", [MemoryStore, lambda: SqliteStore(":memory:")], ids=["memory", "sqlite"])
def test_stores_keep_values_and_logs(make) -> None:
    store = make()
    store.put("ns", "b", {"v": 2})
    store.put("ns", "a", [1])
    store.put("ns", "a", [1, 2])
    assert store.get("ns", "a") == [1, 2] and store.get("ns", "zz", "dflt") == "dflt"
    assert list(store.items("ns")) == [("a", [1, 2]), ("b", {"v": 2})]
    store.delete("ns", "a")
    store.delete("ns", "never")
    assert list(store.items("ns")) == [("b", {"v": 2})]
    store.append("log", [{"n": 1}, {"n": 2}])
    store.append("log", [])
    store.append("log", [{"n": 3}])
    assert store.read("log") == [(1, {"n": 1}), (2, {"n": 2}), (3, {"n": 3})]
    assert store.read("log", after=1, limit=1) == [(2, {"n": 2})]
    store.close()


def test_sqlite_store_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    store.put("snap", "k", {"x": 1})
    store.append("records", [{"kind": "alert"}])
    store.close()
    again = SqliteStore(path)
    assert again.get("snap", "k") == {"x": 1} and again.read("records") == [(1, {"kind": "alert"})]
    again.close()
