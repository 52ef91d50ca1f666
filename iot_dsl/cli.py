"""The ``iot-dsl`` command line: validate, compile, graph, schema and run workflows.

Exit codes: 0 success, 1 the workflow/plan/input has errors (printed to stderr with file:line:col), 2 usage.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
import orjson

from .cli_history import history
from .cli_orchestration import report as report_command
from .compiler import compile_file
from .errors import DslError
from .graph import render_dot, render_mermaid
from .plan import Plan, load_plan
from .runtime.clock import parse_duration
from .runtime.records import Record
from .runtime.runner import read_events, replay, simulate
from .schema import schema_text
from .storage import SqliteStore

__all__ = ["main", "cli"]


def _fail(error: DslError) -> None:
    click.echo(error.render(), err=True)
    sys.exit(1)


def _load(path: str) -> Plan:
    """A plan from a ``.json`` plan file, or compiled from a workflow file."""
    try:
        if path.endswith(".json"):
            return load_plan(path)
        return compile_file(path)
    except DslError as error:
        _fail(error)
        raise  # pragma: no cover - _fail exits


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="iot-dsl")
def cli() -> None:
    """Validate, compile and run IoT workflows written in YAML."""


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(files: tuple[str, ...]) -> None:
    """Check workflow FILES; print every error with file:line:col; exit 1 if any has errors."""
    failed = 0
    for path in files:
        try:
            compile_file(path)
        except DslError as error:
            failed += 1
            click.echo(error.render(), err=True)
            count = len(getattr(error, "errors", [error]))
            click.echo(f"{path}: {count} error{'s' if count != 1 else ''}", err=True)
            continue
        click.echo(f"{path}: ok")
    sys.exit(1 if failed else 0)


@cli.command(name="compile")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the plan here (default: stdout).")
def compile_command(file: str, output: str | None) -> None:
    """Compile FILE into a plan (JSON)."""
    plan = _load(file)
    data = plan.to_json()
    if output is None or output == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(output).write_bytes(data)
        segments = ", ".join(s["name"] for s in plan.segments)
        click.echo(f"{output}: {len(plan.segments)} segments ({segments}), {len(plan.links)} links", err=True)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid"]), default="dot", show_default=True)
def graph(file: str, fmt: str) -> None:
    """Print FILE's compiled graph, segments as clusters, links dashed."""
    plan = _load(file)
    click.echo(render_dot(plan) if fmt == "dot" else render_mermaid(plan), nl=False)


@cli.command()
def schema() -> None:
    """Print the workflow JSON Schema (for editors: yaml-language-server)."""
    click.echo(schema_text(), nl=False)


def _write_records(records: Iterator[Record], out: IO[bytes] | None, counts: Counter[str]) -> None:
    for record in records:
        counts[record["kind"]] += 1
        if out is not None:
            out.write(orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
            out.write(b"\n")


@cli.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--replay", "replay_file", type=click.Path(dir_okay=False, exists=True), help="Recorded events (JSON lines).")
@click.option("--simulate", "use_simulation", is_flag=True, help="Run against the workflow's simulated fleet.")
@click.option("--devices", type=click.IntRange(min=0), help="Scale the simulated fleet to N devices.")
@click.option("--duration", default="10m", show_default=True, help="Simulated event time (e.g. 90s, 10m, 1h).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for the simulated fleet.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Write records as JSON lines ('-': stdout).")
@click.option("--progress/--no-progress", default=None, help="Show progress (default: when stderr is a terminal).")
@click.option("--store", "store_path", type=click.Path(dir_okay=False), help="Keep history in this SQLite file.")
@click.option(
    "--state", "state_path", type=click.Path(dir_okay=False),
    help="With --replay: resume from this engine snapshot when it exists, and save the snapshot here at the end "
    "instead of finishing (partial matches, timers and open windows carry over to the next run).",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="Threads for closing large windows (default: the CPU count, at most 4; 1: none besides the main one).",
)
def run(
    source: str,
    replay_file: str | None,
    use_simulation: bool,
    devices: int | None,
    duration: str,
    seed: int,
    out_path: str | None,
    progress: bool | None,
    store_path: str | None,
    state_path: str | None,
    threads: int | None,
) -> None:
    """Run a workflow or plan SOURCE on recorded (--replay) or simulated (--simulate) events."""
    if bool(replay_file) == bool(use_simulation):
        raise click.UsageError("give exactly one of --replay EVENTS.jsonl or --simulate")
    if state_path and use_simulation:
        raise click.UsageError("--state goes with --replay (a simulation always starts from the beginning)")
    state = _read_state(state_path) if state_path else None
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--duration") from exc
    plan = _load(source)
    show = sys.stderr.isatty() if progress is None else progress
    counts: Counter[str] = Counter()
    seen = {"events": 0}
    started = time.perf_counter()
    bar = _ProgressBar(seconds if use_simulation else None) if show else None

    def tick(done: float, n: int) -> None:
        seen["events"] = n
        if bar is not None:
            bar.update(done, n)

    store = SqliteStore(store_path) if store_path else None
    try:
        if use_simulation:
            stream: Iterator[Record] = simulate(
                plan, seed=seed, devices=devices, duration=seconds, progress=tick, store=store, threads=threads
            )
        else:
            assert replay_file is not None
            events, bad = read_events(replay_file)
            keep = (lambda snapshot: _write_state(state_path, snapshot)) if state_path else None
            stream = _chain(
                iter(bad),
                replay(plan, events, seed=seed, progress=tick, store=store, state=state, keep=keep, threads=threads),
            )
        handle: IO[bytes] | None
        if out_path == "-":
            handle = sys.stdout.buffer
        elif out_path:
            handle = open(out_path, "wb")  # noqa: SIM115 - closed below
        else:
            handle = None
        try:
            _write_records(stream, handle, counts)
        finally:
            if handle is not None and handle is not sys.stdout.buffer:
                handle.close()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    except DslError as error:
        _fail(error)
    finally:
        if bar is not None:
            bar.close()
        if store is not None:
            store.close()
    events_in = seen["events"]
    elapsed = max(time.perf_counter() - started, 1e-9)
    summary = {
        "workflow": plan.name,
        "events_in": events_in,
        "records_out": sum(counts.values()),
        "records_by_kind": dict(sorted(counts.items())),
        "events_per_second": round(events_in / elapsed),
        "elapsed_seconds": round(elapsed, 3),
    }
    click.echo(_format_summary(summary), err=out_path == "-")


def _read_state(path: str) -> dict[str, Any] | None:
    """The engine snapshot saved at ``path`` (None when there is none yet); a clear error when it is not one."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot read the state file: {exc.strerror}") from exc
    try:
        state = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{path}: not an engine snapshot (invalid JSON: {exc.msg})") from exc
    if not isinstance(state, dict) or not isinstance(state.get("operators"), dict):
        raise click.ClickException(f"{path}: not an engine snapshot (no 'operators' object)")
    return state


def _write_state(path: str, snapshot: dict[str, Any]) -> None:
    """Save ``snapshot`` at ``path`` atomically (a crash leaves the previous state in place)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    try:
        partial.write_bytes(orjson.dumps(snapshot))
        partial.replace(target)
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot save the state file: {exc.strerror}") from exc


def _chain(first: Iterator[Record], second: Iterator[Record]) -> Iterator[Record]:
    yield from first
    yield from second


def _format_summary(summary: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k}={v}" for k, v in summary["records_by_kind"].items()) or "none"
    return (
        f"workflow {summary['workflow']}: {summary['events_in']} events in, {summary['records_out']} records out "
        f"({kinds}); {summary['events_per_second']} events/s over {summary['elapsed_seconds']} s"
    )


class _ProgressBar:
    """A rich progress bar on stderr (events so far, simulated time done)."""

    def __init__(self, total: float | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]running"),
            BarColumn(),
            TextColumn("{task.fields[events]} events"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("run", total=total, events=0)
        self.progress.start()

    def update(self, done: float, events: int) -> None:
        """Show ``done`` seconds of event time and ``events`` events so far."""
        self.progress.update(self.task, completed=done, events=events)

    def close(self) -> None:
        """Remove the bar."""
        self.progress.stop()


cli.add_command(history)
cli.add_command(report_command)


def main() -> None:
    """Console-script entry point."""
    cli()
