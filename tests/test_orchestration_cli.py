"""``iot-dsl report``: orchestration reports from a records file, as text or JSON; and the runner wiring that
lets ``simulate`` drive orchestrations against the simulated devices (issue 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from iot_dsl import compile_file
from iot_dsl.cli_orchestration import report
from iot_dsl.runtime.orchestration_report import format_report, reports_from_records
from iot_dsl.runtime.runner import replay, simulate
from iot_dsl.testing import by_kind

from .conftest import WORKFLOWS
from .test_orchestration_scenarios import VALVES, Scenario


@pytest.fixture(scope="module")
def failed_shutdown() -> list[dict[str, Any]]:
    s = Scenario(VALVES)
    s.trigger("pump-0001", site="north")
    s.run_for(120)
    return s.records


def write(path: Path, records: list[dict[str, Any]], extra: bytes = b"") -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + extra)
    return path


def test_report_prints_the_runs_status_counts_and_failing_devices(tmp_path: Path, failed_shutdown: list[dict[str, Any]]) -> None:
    path = write(tmp_path / "records.jsonl", failed_shutdown, b"not json\n\n")
    result = CliRunner().invoke(report, [str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "safe_shutdown safe_shutdown/1: failed (barrier of step 'close_valves' cannot be met: 39 of 40 succeeded, "
        "0 still open, 40 needed)"
    )
    assert lines[1].startswith("  started 2026-01-01T00:00:00.000Z, finished 2026-01-01T00:00:1")
    assert "  commands 40 (79 attempts): timed_out 1, compensated 39" in lines
    assert "  step close_valves: failed, 40/40 released; timed_out 1, compensated 39" in lines
    assert "  step start_pump: skipped, 0/0 released; no commands" in lines
    assert "  compensation done: 39 undone, 0 failed" in lines
    assert lines[-2:] == ["  failed devices (1):", "    stuck-valve-0001 step close_valves close timed_out: no answer within 10s"]
    assert f"skipped 1 line(s) that are not JSON (line {len(failed_shutdown) + 1})" in result.stderr


def test_report_as_json_equals_the_runs_own_report(tmp_path: Path, failed_shutdown: list[dict[str, Any]]) -> None:
    path = write(tmp_path / "records.jsonl", failed_shutdown, b"{bad\n" * 6)
    result = CliRunner().invoke(report, [str(path), "--json", "--orchestration", "safe_shutdown"])
    assert result.stderr.endswith(f"line {len(failed_shutdown) + 1}, {len(failed_shutdown) + 2}, "
                                  f"{len(failed_shutdown) + 3}, {len(failed_shutdown) + 4}, {len(failed_shutdown) + 5} ...)\n")
    (finished,) = [r for r in failed_shutdown if r.get("event") == "finished"]
    assert orjson.loads(result.stdout) == [finished["report"]]
    result = CliRunner().invoke(report, [str(path), "--orchestration", "other"])
    assert result.exit_code == 1 and result.stderr.strip().endswith("no runs of orchestration 'other'")
    result = CliRunner().invoke(report, [str(write(tmp_path / "none.jsonl", []))])
    assert result.exit_code == 1 and "no runs of any orchestration" in result.stderr


def test_a_run_without_its_report_record_is_rebuilt_from_its_commands(failed_shutdown: list[dict[str, Any]]) -> None:
    commands = [r for r in failed_shutdown if r["kind"] in ("command", "command_result")] + [{"kind": "alert"}, "junk"]
    (rebuilt,) = reports_from_records(commands)  # type: ignore[arg-type]
    (own,) = [r["report"] for r in failed_shutdown if r.get("event") == "finished"]
    assert rebuilt["status"] == "unknown" and rebuilt["reason"].startswith("no report record")
    for key in ("orchestration", "run", "commands", "attempts", "states", "failures"):
        assert rebuilt[key] == own[key], key
    text = format_report(rebuilt)
    assert text.splitlines()[0].startswith("safe_shutdown safe_shutdown/1: unknown (no report record")
    in_flight = [r for r in commands if isinstance(r, dict) and r["kind"] == "command"][:1]
    retrying = {**in_flight[0], "kind": "command_result", "final": False, "status": "failed"}
    (partial,) = reports_from_records([*in_flight, retrying])
    assert partial["states"] == {"sent": 1} and partial["failures"] == []
    assert format_report(partial).splitlines()[1:] == ["  commands 1 (1 attempts): sent 1"]


def test_long_failure_lists_are_cut_and_reasons_are_optional() -> None:
    failures = [{"device": f"d{i}", "step": "s", "command": "c", "status": "failed", "reason": None} for i in range(3)]
    text = format_report(
        {"orchestration": "o", "run": "o/1", "status": "aborted", "reason": None, "commands": 3, "attempts": 3,
         "states": {"failed": 3}, "failures": failures, "not_reached": 9, "started_at": "t0", "finished_at": None,
         "duration_s": None, "latency_s": {"min": 0.1, "p50": 0.2, "p95": 0.3, "max": 0.4},
         "compensation": {"status": "partial", "undone": 0, "failures": failures[:1]}},
        limit=2,
    )
    assert text.splitlines() == [
        "o o/1: aborted",
        "  started t0, finished -",
        "  commands 3 (3 attempts): failed 3",
        "  not reached: 9 devices",
        "  latency s: min 0.1, p50 0.2, p95 0.3, max 0.4",
        "  compensation partial: 0 undone, 1 failed",
        "    undo failed: d0 step s c failed",
        "  failed devices (3):",
        "    d0 step s c failed",
        "    d1 step s c failed",
        "    ... and 1 more",
    ]


def test_simulate_and_replay_drive_orchestrations_against_the_simulated_devices() -> None:
    plan = compile_file(WORKFLOWS / "orchestration-safe-shutdown.yaml")
    records = list(simulate(plan, seed=3, duration=300))
    finished = [r for r in by_kind(records, "orchestration") if r["event"] == "finished"]
    assert finished and all(r["status"] == "completed" for r in finished)
    # the rule-level responder left orchestration commands alone: one final result per command, from the run
    commands = by_kind(records, "command")
    results = by_kind(records, "command_result")
    assert all("run" in r for r in results)
    assert {r["command_id"] for r in results if r["final"]} == {r["command_id"] for r in commands}
    events = [{"stream": "telemetry", "device": "boiler-0001", "ts": "2026-01-01T00:00:00Z", "temp": 99.0,
               "type": "boiler", "site": "north"},
              {"stream": "telemetry", "device": "boiler-0001", "ts": "2026-01-01T00:00:40Z", "temp": 20.0,
               "type": "boiler", "site": "north"}]
    replayed = list(replay(plan, events, seed=3))
    (done,) = [r for r in by_kind(replayed, "orchestration") if r["event"] in ("finished", "unfinished")]
    assert done["event"] == "finished" and done["report"]["steps"]["close_valves"]["targets"] == 20
