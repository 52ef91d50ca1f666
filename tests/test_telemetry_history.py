"""Aggregate/anomaly history in SQLite: revisions replace, queries by aggregate/group/level/time; the CLI (issue 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from iot_dsl.cli_history import history
from iot_dsl.storage import MemoryStore, SqliteStore
from iot_dsl.storage.history import HistoryQuery, HistoryStore, history_for

from .test_telemetry_late import reading, registry
from .test_telemetry_oracle import T0, build_operator

SPEC = """
aggregates:
  temps:
    stream: telemetry
    group_by: [site]
    per_device: true
    history: true
    window: {tumbling: 10s}
    compute: {n: "count()", mean: "mean(temp)"}
"""


def record(start: float, group: str, n: int, revision: int = 0, kind: str = "aggregate", **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "node": "temps", "level": "site", "group": group, "device": None, "window_start": T0 + start,
            "window_end": T0 + start + 10, "start": f"s{start}", "end": f"e{start}", "revision": revision,
            "values": {"n": n}, **extra}


def test_revisions_replace_earlier_rows_and_queries_filter(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.db")
    assert store.write([record(0, "north", 5), record(0, "south", 2), record(10, "north", 4), {"kind": "late"}]) == 3
    store.write([record(0, "north", 6, revision=1)])
    store.write([record(0, "north", 5, revision=0)])  # an older revision never overwrites a newer one
    store.write([record(0, "north", 0, kind="anomaly", method="zscore", value=1.0, score=9.0)])
    rows = store.query(HistoryQuery("temps"))
    assert [(r["group"], r["window_start"] - T0, r["values"]["n"], r["revision"]) for r in rows] == [
        ("north", 0.0, 6, 1), ("south", 0.0, 2, 0), ("north", 10.0, 4, 0)]
    assert [r["values"]["n"] for r in store.query(HistoryQuery("temps", group="north"))] == [6, 4]
    assert [r["values"]["n"] for r in store.query(HistoryQuery("temps", start=T0 + 10))] == [4]
    assert [r["values"]["n"] for r in store.query(HistoryQuery("temps", end="2026-01-01T00:00:10Z"))] == [6, 2]
    assert len(store.query(HistoryQuery("temps", level="device"))) == 0
    assert len(store.query(HistoryQuery("temps", limit=1))) == 1
    assert [r["method"] for r in store.query(HistoryQuery("temps", kind="anomaly"))] == ["zscore"]
    assert store.aggregates() == ["temps"]
    store.close()


def test_the_operator_writes_its_history_into_the_engine_sqlite_store(tmp_path: Path) -> None:
    sqlite = SqliteStore(tmp_path / "engine.db")
    op, ctx = build_operator(SPEC, registry(("a", "north"), ("b", "south")), allowed=30.0, store=sqlite)
    records: list[dict[str, Any]] = []
    op.process([reading(d, T0 + s) for s in range(10) for d in "ab"], records)
    ctx.watermarks["telemetry"] = T0 + 10
    op.on_time(0, records)
    op.process([reading("a", T0 + 3, 80.0)], records)
    op.on_time(0, records)
    stored = history_for(sqlite).query(HistoryQuery("temps", device="a"))
    assert [(r["level"], r["group"], r["values"]["n"]) for r in stored] == [("device", "north", 11)]
    devices = history_for(sqlite).query(HistoryQuery("temps", level="device"))
    assert [(r["device"], r["revision"], r["values"]["n"]) for r in devices] == [("a", 1, 11), ("b", 0, 10)]
    assert history_for(sqlite) is history_for(sqlite)
    # the CLI reads the same file
    result = CliRunner().invoke(history, [str(tmp_path / "engine.db"), "--aggregate", "temps", "--level", "site",
                                          "--json"])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.output.splitlines()]
    assert [(r["group"], r["values"]["n"], r["revision"]) for r in lines] == [("north", 11, 1), ("south", 10, 0)]
    text = CliRunner().invoke(history, [str(tmp_path / "engine.db"), "--aggregate", "temps", "--group", "north"])
    assert text.exit_code == 0 and "n=11 mean=" in text.output and "(revision 1)" in text.output
    assert "device  a" in text.output  # the group's devices come along
    only = CliRunner().invoke(history, [str(tmp_path / "engine.db"), "--aggregate", "temps", "--device", "b"])
    assert only.exit_code == 0 and len(only.output.splitlines()) == 1 and "device  b  n=10" in only.output
    assert "2026-01-01T00:00:00.000Z  2026-01-01T00:00:10.000Z  site  north" in text.output


def test_memory_and_private_sqlite_stores_get_an_in_memory_history() -> None:
    memory = MemoryStore()
    history_for(memory).write([record(0, "north", 1)])
    assert len(history_for(memory).query(HistoryQuery("temps"))) == 1
    private = SqliteStore()
    history_for(private).write([record(0, "north", 1)])
    assert len(history_for(private).query(HistoryQuery("temps"))) == 1
    assert history_for(None).query(HistoryQuery("temps")) == []


def test_cli_reports_anomalies_bad_times_and_unknown_aggregates(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = HistoryStore(path)
    store.write([record(0, "north", 0, kind="anomaly", method="mad", metric="mean", value=9.5, score=12.25)])
    store.close()
    runner = CliRunner()
    shown = runner.invoke(history, [str(path), "--aggregate", "temps", "--anomalies", "--from", str(T0), "--to",
                                    "2026-01-01T01:00:00Z", "--limit", "5"])
    assert shown.exit_code == 0 and "mad mean=9.5 score=12.2" in shown.output
    missing = runner.invoke(history, [str(path), "--aggregate", "tmeps"])
    assert missing.exit_code == 1 and "no history for aggregate 'tmeps' (aggregates with history: temps)" in missing.output
    bad = runner.invoke(history, [str(path), "--aggregate", "temps", "--from", "yesterday"])
    assert bad.exit_code == 2 and "Invalid value" in bad.output
    assert runner.invoke(history, [str(tmp_path / "nope.db"), "--aggregate", "x"]).exit_code == 2
