"""The ``iot-dsl report`` command: a JSON-lines records file in, orchestration run reports out (text or JSON)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import click
import orjson

from .runtime.orchestration_report import format_report, reports_from_records

__all__ = ["report"]


def _records(path: str, bad: list[int]) -> Iterator[Any]:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                bad.append(number)


@click.command(name="report")
@click.argument("records", type=click.Path(dir_okay=False, exists=True))
@click.option("--orchestration", "name", help="Only runs of this orchestration.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as one JSON array.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=0), help="Failed devices listed per run.")
def report(records: str, name: str | None, as_json: bool, limit: int) -> None:
    """Print the orchestration report of every run in RECORDS (JSON lines written by `iot-dsl run --out`)."""
    bad: list[int] = []
    reports = reports_from_records(_records(records, bad), name)
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (" ..." if len(bad) > 5 else "")
        click.echo(f"{records}: skipped {len(bad)} line(s) that are not JSON (line {shown})", err=True)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(reports, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        return
    if not reports:
        which = f"orchestration '{name}'" if name else "any orchestration"
        click.echo(f"{records}: no runs of {which}", err=True)
        sys.exit(1)
    click.echo("\n\n".join(format_report(r, limit=limit) for r in reports))
