"""Orchestration reports from records: a stream of engine records in, one report per orchestration run out.

A run's ``orchestration`` record with ``event: finished`` (or ``unfinished`` at end of input) carries the report
the run built itself (:meth:`~iot_dsl.runtime.orchestration_run.Run.report`); that report is used as is. For a run
whose report record is missing (a filtered sink, a truncated file) a partial report is rebuilt from its
``command`` and ``command_result`` records, with status ``unknown``. :func:`format_report` renders a report for
people.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from .orchestration_spec import FAILURE_OUTCOMES
from .orchestration_state import STATES

__all__ = ["reports_from_records", "format_report"]

Record = dict[str, Any]


def reports_from_records(records: Iterable[Record], orchestration: str | None = None) -> list[dict[str, Any]]:
    """One report per run found in ``records`` (optionally only runs of ``orchestration``), in order of appearance."""
    order: list[str] = []
    seen: set[str] = set()
    reports: dict[str, dict[str, Any]] = {}
    partial: dict[str, dict[str, Any]] = {}
    for record in records:
        if not isinstance(record, dict) or "run" not in record:
            continue
        if orchestration is not None and record.get("node") != orchestration:
            continue
        run = str(record["run"])
        if run not in seen:
            seen.add(run)
            order.append(run)
        kind = record.get("kind")
        if kind == "orchestration" and record.get("event") in ("finished", "unfinished"):
            reports[run] = record["report"]
        elif kind in ("command", "command_result"):
            _collect(partial.setdefault(run, {"node": record.get("node"), "commands": {}, "attempts": 0}), record)
    return [reports[run] if run in reports else _rebuild(run, partial[run]) for run in order]


def _collect(state: dict[str, Any], record: Record) -> None:
    commands: dict[str, dict[str, Any]] = state["commands"]
    entry = commands.setdefault(
        record["command_id"], {"device": record.get("device"), "step": record.get("step"), "command": record.get("command")}
    )
    if record["kind"] == "command":
        state["attempts"] += 1
        if record.get("compensates"):
            entry["compensation"] = True
    elif record.get("final"):
        entry["status"] = record.get("status")
        entry["reason"] = record.get("reason")


def _rebuild(run: str, state: dict[str, Any]) -> dict[str, Any]:
    main = {cid: c for cid, c in state["commands"].items() if not c.get("compensation")}
    states: Counter[str] = Counter(c.get("status", "sent") for c in main.values())
    failures = [
        {"device": c["device"], "step": c["step"], "command": c["command"], "status": c["status"], "reason": c["reason"]}
        for c in main.values()
        if c.get("status") in FAILURE_OUTCOMES
    ]
    return {
        "orchestration": state["node"],
        "run": run,
        "status": "unknown",
        "reason": "no report record for this run; rebuilt from its command records",
        "commands": len(main),
        "attempts": state["attempts"],
        "states": {s: states[s] for s in STATES if states[s]},
        "failures": sorted(failures, key=lambda f: (str(f["step"]), str(f["device"]))),
    }


def format_report(report: dict[str, Any], *, limit: int = 20) -> str:
    """A report as text: headline, counts per state, per-step lines, failed devices (at most ``limit``)."""
    lines = [f"{report['orchestration']} {report['run']}: {report['status']}"]
    if report.get("reason"):
        lines[0] += f" ({report['reason']})"
    if report.get("started_at"):
        duration = report.get("duration_s")
        lines.append(
            f"  started {report['started_at']}, finished {report.get('finished_at') or '-'}"
            + (f", {duration:g} s" if duration is not None else "")
        )
    states = ", ".join(f"{state} {n}" for state, n in report["states"].items()) or "none"
    lines.append(f"  commands {report['commands']} ({report['attempts']} attempts): {states}")
    if report.get("not_reached"):
        lines.append(f"  not reached: {report['not_reached']} devices")
    for name, step in (report.get("steps") or {}).items():
        counts = ", ".join(f"{state} {n}" for state, n in step["states"].items()) or "no commands"
        lines.append(f"  step {name}: {step['status']}, {step['released']}/{step['targets']} released; {counts}")
    latency = report.get("latency_s")
    if latency:
        lines.append(f"  latency s: min {latency['min']:g}, p50 {latency['p50']:g}, p95 {latency['p95']:g}, max {latency['max']:g}")
    compensation = report.get("compensation")
    if compensation and compensation["status"] != "none":
        lines.append(f"  compensation {compensation['status']}: {compensation['undone']} undone, {len(compensation['failures'])} failed")
        for failure in compensation["failures"][:limit]:
            lines.append(f"    undo failed: {_failure_line(failure)}")
    failures = report["failures"]
    if failures:
        lines.append(f"  failed devices ({len(failures)}):")
        lines.extend(f"    {_failure_line(f)}" for f in failures[:limit])
        if len(failures) > limit:
            lines.append(f"    ... and {len(failures) - limit} more")
    return "\n".join(lines)


def _failure_line(failure: dict[str, Any]) -> str:
    reason = f": {failure['reason']}" if failure.get("reason") else ""
    return f"{failure['device']} step {failure['step']} {failure['command']} {failure['status']}{reason}"
