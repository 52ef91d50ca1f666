"""The ``iot-dsl history`` command: a SQLite database and a query in, aggregate/anomaly history as text or JSON out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from .storage.history import HistoryQuery, HistoryStore

__all__ = ["history"]


def _line(record: dict[str, Any]) -> str:
    who = record.get("device") or record.get("group") or ""
    if record.get("kind") == "anomaly":
        detail = f"{record.get('method')} {record.get('metric')}={record.get('value')} score={record.get('score'):.3g}"
    else:
        values = record.get("values") or {}
        detail = " ".join(f"{k}={v}" for k, v in values.items())
        if record.get("revision"):
            detail += f" (revision {record['revision']})"
    return f"{record.get('start')}  {record.get('end')}  {record.get('level')}  {who}  {detail}"


@click.command()
@click.argument("database", type=click.Path(dir_okay=False, exists=True))
@click.option("--aggregate", "aggregate", required=True, help="The aggregate's name.")
@click.option("--group", help="Only this group key (and the per-device rows of its devices).")
@click.option("--device", help="Only this device's per-device rows.")
@click.option("--level", help="Only this level (device, all, or a group level).")
@click.option("--anomalies", is_flag=True, help="Show anomalies instead of aggregates.")
@click.option("--from", "start", help="Windows ending after this time (ISO-8601 or epoch seconds).")
@click.option("--to", "end", help="Windows starting before this time (ISO-8601 or epoch seconds).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many records.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def history(
    database: str, aggregate: str, group: str | None, device: str | None, level: str | None, anomalies: bool, start: str | None,
    end: str | None, limit: int | None, as_json: bool,
) -> None:
    """Query the aggregate and anomaly history kept in DATABASE (an engine's SQLite store)."""
    store = HistoryStore(Path(database))
    try:
        query = HistoryQuery(
            aggregate=aggregate, group=group, device=device, level=level, kind="anomaly" if anomalies else "aggregate",
            start=_time(start), end=_time(end), limit=limit,
        )
        try:
            records = store.query(query)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        if not records and aggregate not in store.aggregates():
            known = ", ".join(store.aggregates()) or "none"
            click.echo(f"no history for aggregate '{aggregate}' (aggregates with history: {known})", err=True)
            sys.exit(1)
        for record in records:
            click.echo(orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode() if as_json else _line(record))
    finally:
        store.close()


def _time(value: str | None) -> float | str | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value
