"""The iot-dsl command line (issue 2): validate, compile, graph, schema, run --simulate / --replay."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from iot_dsl.cli import cli

from .conftest import FIXTURES, WORKFLOWS

PLANT = str(WORKFLOWS / "plant.yaml")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_validate_all_examples_exits_zero(runner: CliRunner) -> None:
    files = sorted(str(p) for p in WORKFLOWS.glob("*.yaml"))
    result = runner.invoke(cli, ["validate", *files])
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok") == len(files) >= 3


def test_validate_reports_every_error_and_exits_one(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["validate", str(FIXTURES / "workflows" / "four_errors.yaml")])
    assert result.exit_code == 1
    assert "4 errors" in result.stderr


def test_compile_writes_a_plan_and_is_byte_identical(runner: CliRunner, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert runner.invoke(cli, ["compile", PLANT, "-o", str(a)]).exit_code == 0
    result = runner.invoke(cli, ["compile", PLANT, "-o", str(b)])
    assert result.exit_code == 0
    assert "3 segments (cloud, gw-north, gw-south)" in result.stderr
    assert a.read_bytes() == b.read_bytes()
    stdout = runner.invoke(cli, ["compile", PLANT])
    assert stdout.stdout_bytes == a.read_bytes()


def test_compile_of_a_bad_file_prints_positioned_errors(runner: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow: w\nstreams:\n  s: {key: device, tim: ts}\n")
    result = runner.invoke(cli, ["compile", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3:20: unknown key 'tim' (did you mean 'time'?)" in result.stderr


def test_graph_dot_and_mermaid_show_segments_and_links(runner: CliRunner) -> None:
    dot = runner.invoke(cli, ["graph", PLANT]).output
    assert dot.startswith('digraph "plant" {') and "subgraph cluster_gw_north" in dot
    assert 'style=dashed, label="uplink"' in dot
    mermaid = runner.invoke(cli, ["graph", PLANT, "--format", "mermaid"]).output
    assert mermaid.startswith("flowchart LR") and 'subgraph gw_south["edge: gw-south"]' in mermaid
    assert "-. uplink .->" in mermaid


def test_schema_prints_the_json_schema(runner: CliRunner) -> None:
    schema = json.loads(runner.invoke(cli, ["schema"]).output)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert "rules" in schema["properties"]


def test_run_simulate_twice_gives_identical_files_and_a_summary(runner: CliRunner, tmp_path: Path) -> None:
    outs = []
    for name in ("a.jsonl", "b.jsonl"):
        out = tmp_path / name
        result = runner.invoke(cli, ["run", PLANT, "--simulate", "--seed", "7", "--devices", "60", "--duration", "10m", "--out", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(out.read_bytes())
        assert "workflow plant: " in result.output and "events/s" in result.output
    assert outs[0] == outs[1]
    records = [orjson.loads(line) for line in outs[0].splitlines()]
    kinds = {r["kind"] for r in records}
    assert {"command", "alert", "command_result"} <= kinds
    assert all({"kind", "at", "node"} <= set(r) for r in records)
    other = tmp_path / "c.jsonl"
    runner.invoke(cli, ["run", PLANT, "--simulate", "--seed", "8", "--devices", "60", "--duration", "10m", "--out", str(other)])
    assert other.read_bytes() != outs[0]


def test_run_replay_is_deterministic_and_keeps_bad_lines(runner: CliRunner, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        {"stream": "telemetry", "device": "boiler-0001", "ts": "2026-01-01T00:00:03Z", "type": "boiler", "site": "north", "temp": 97.0, "pressure": 6.0},
        {"stream": "telemetry", "device": "boiler-0002", "ts": "2026-01-01T00:00:01Z", "type": "boiler", "site": "south", "temp": 99.0, "pressure": 6.0},
    ]
    events.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n{truncated\n\n")
    outs = []
    for name in ("a.jsonl", "b.jsonl"):
        out = tmp_path / name
        result = runner.invoke(cli, ["run", PLANT, "--replay", str(events), "--out", str(out)])
        assert result.exit_code == 0, result.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    records = [orjson.loads(line) for line in outs[0].splitlines()]
    assert records[0]["kind"] == "dead_letter" and records[0]["reason"].startswith("line 3: invalid JSON")
    alerts = [r for r in records if r["kind"] == "alert"]
    # replayed in event-time order: boiler-0002 (t=1s) before boiler-0001 (t=3s)
    assert [a["device"] for a in alerts] == ["boiler-0002", "boiler-0001"]


def test_run_a_compiled_plan_to_stdout(runner: CliRunner, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    runner.invoke(cli, ["compile", str(WORKFLOWS / "filter-derive.yaml"), "-o", str(plan)])
    result = runner.invoke(cli, ["run", str(plan), "--simulate", "--duration", "30m", "--out", "-", "--progress"])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(x) for x in result.stdout.splitlines()]
    assert lines and all(r["kind"] in {"command", "command_result"} for r in lines)
    assert "workflow cold-room" in result.stderr


def test_run_usage_errors(runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(cli, ["run", PLANT]).exit_code == 2
    assert "--duration" in runner.invoke(cli, ["run", PLANT, "--simulate", "--duration", "soon"]).output
    no_sim = tmp_path / "nosim.yaml"
    no_sim.write_text("workflow: w\nstreams:\n  s: {key: device, time: ts}\n")
    result = runner.invoke(cli, ["run", str(no_sim), "--simulate"])
    assert result.exit_code == 1 and "has no simulation section" in result.output
    bad_plan = tmp_path / "p.json"
    bad_plan.write_text('{"format": "iot-dsl-plan", "version": 9}')
    result = runner.invoke(cli, ["run", str(bad_plan), "--simulate"])
    assert result.exit_code == 1 and "plan version 9 is not supported" in result.stderr


def test_run_with_a_store_keeps_aggregate_history_for_the_history_command(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    workflow = str(WORKFLOWS / "telemetry-fleet.yaml")
    result = runner.invoke(cli, ["run", workflow, "--simulate", "--duration", "3m", "--store", str(db)])
    assert result.exit_code == 0, result.output
    from iot_dsl.source import load_file

    aggregate = next(iter(load_file(WORKFLOWS / "telemetry-fleet.yaml").data["aggregates"]))
    listed = runner.invoke(cli, ["history", str(db), "--aggregate", aggregate, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [orjson.loads(line) for line in listed.output.splitlines() if line.strip()]
    assert rows and all(r["kind"] == "aggregate" and r["node"] == aggregate for r in rows)


def _boiler_lines(times_temps: list[tuple[float, float]]) -> bytes:
    return b"".join(
        orjson.dumps({"device": "boiler-0001", "ts": 1767225600 + t, "temp": temp, "status": "ok"}) + b"\n"
        for t, temp in times_temps
    )


def test_run_replay_with_state_resumes_partial_matches_and_timers_across_runs(runner: CliRunner, tmp_path: Path) -> None:
    workflow = str(WORKFLOWS / "patterns-boiler-overheat.yaml")
    temps = [96, 97, 97, 97, 97, 97, 97, 97, 80, 80, 91, 92, 93, 95, 96, 97, 97, 97, 97, 97, 97, 80, 80, 80, 80]
    readings = [(5.0 * i, float(temp)) for i, temp in enumerate(temps)]
    whole, first, second = tmp_path / "all.jsonl", tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    whole.write_bytes(_boiler_lines(readings))
    # the first part already commanded (a vent): the second part's command ids go on from there; it is cut in
    # the middle of the overheat sequence and of the second hold
    first.write_bytes(_boiler_lines(readings[:15]))
    second.write_bytes(_boiler_lines(readings[15:]))
    state = tmp_path / "state.json"

    def run(events: Path, *extra: str) -> list[dict[str, object]]:
        out = tmp_path / "out.jsonl"
        result = runner.invoke(cli, ["run", workflow, "--replay", str(events), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        return [orjson.loads(line) for line in out.read_bytes().splitlines()]

    expected = run(whole)
    assert {r["node"] for r in expected if r["kind"] == "match"} == {"overheat", "sustained_high"}
    resumed = run(first, "--state", str(state))
    assert [r["node"] for r in resumed if r["kind"] == "match"] == ["sustained_high"] and state.exists()
    resumed += run(second, "--state", str(state))
    assert resumed == expected
    ids = [r["command_id"] for r in resumed if r["kind"] == "command"]
    assert len(ids) == len(set(ids)) == 3


def test_run_state_errors_are_clear(runner: CliRunner, tmp_path: Path) -> None:
    workflow = str(WORKFLOWS / "patterns-boiler-overheat.yaml")
    events = tmp_path / "e.jsonl"
    events.write_bytes(_boiler_lines([(0.0, 91.0)]))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(cli, ["run", workflow, "--replay", str(events), "--state", str(bad)])
    assert result.exit_code == 1 and "not an engine snapshot (invalid JSON" in result.output
    bad.write_text('{"something": 1}')
    result = runner.invoke(cli, ["run", workflow, "--replay", str(events), "--state", str(bad)])
    assert result.exit_code == 1 and "no 'operators' object" in result.output
    result = runner.invoke(cli, ["run", workflow, "--simulate", "--state", str(bad)])
    assert result.exit_code == 2 and "--state goes with --replay" in result.output
    result = runner.invoke(cli, ["run", workflow, "--replay", str(events), "--state", str(tmp_path)])
    assert result.exit_code != 0


def test_a_resumed_run_of_a_changed_pattern_says_whose_state_it_left_out(runner: CliRunner, tmp_path: Path) -> None:
    original = (WORKFLOWS / "patterns-boiler-overheat.yaml").read_text()
    changed = tmp_path / "changed.yaml"
    changed.write_text(original.replace('condition: "temp > 95"', 'condition: "temp > 94"'))
    events = tmp_path / "e.jsonl"
    events.write_bytes(_boiler_lines([(0.0, 96.0), (5.0, 96.0)]))
    state = tmp_path / "state.json"
    assert runner.invoke(cli, ["run", str(WORKFLOWS / "patterns-boiler-overheat.yaml"), "--replay", str(events),
                               "--state", str(state)]).exit_code == 0
    out = tmp_path / "out.jsonl"
    result = runner.invoke(cli, ["run", str(changed), "--replay", str(events), "--state", str(state), "--out", str(out)])
    assert result.exit_code == 0, result.output
    first = orjson.loads(out.read_bytes().splitlines()[0])
    assert first["kind"] == "alert" and first["reason"] == "state_not_restored"
    assert first["operators"] == ["pattern:sustained_high"]


def test_a_state_file_that_does_not_fit_or_cannot_be_saved_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    workflow = str(WORKFLOWS / "patterns-boiler-overheat.yaml")
    events = tmp_path / "e.jsonl"
    events.write_bytes(_boiler_lines([(0.0, 91.0)]))
    state = tmp_path / "state.json"
    state.write_text('{"operators": {"cloud": {"pattern:overheat": {"buffer": 5}}}}')
    result = runner.invoke(cli, ["run", workflow, "--replay", str(events), "--state", str(state)])
    assert result.exit_code == 1 and "the snapshot's state of 'pattern:overheat' does not fit it" in result.output
    assert state.read_text().startswith('{"operators"')  # a refused state file is left as it was
    missing_dir = tmp_path / "no" / "such" / "dir" / "state.json"
    result = runner.invoke(cli, ["run", workflow, "--replay", str(events), "--state", str(missing_dir)])
    assert result.exit_code == 1 and "cannot save the state file" in result.output
