"""Plans: canonical JSON, checked on load (issue 2)."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from iot_dsl import PlanError, compile_file, load_plan

from .conftest import WORKFLOWS


@pytest.fixture
def plan_dict() -> dict:
    return orjson.loads(compile_file(WORKFLOWS / "plant.yaml").to_json())


def test_round_trip_through_a_file_is_exact(tmp_path: Path) -> None:
    plan = compile_file(WORKFLOWS / "plant.yaml")
    path = tmp_path / "plan.json"
    path.write_bytes(plan.to_json())
    again = load_plan(path)
    assert again.to_json() == plan.to_json()
    assert load_plan(again) is again and load_plan(path.read_bytes()).name == "plant"


def test_plan_records_source_position_and_digest(plan_dict: dict) -> None:
    assert plan_dict["workflow"]["file"].endswith("plant.yaml")
    assert len(plan_dict["workflow"]["sha256"]) == 64
    rule = next(op for s in plan_dict["segments"] for op in s["operators"] if op["id"] == "rule:pressure_trip")
    line = (WORKFLOWS / "plant.yaml").read_text().splitlines().index("  - name: pressure_trip") + 1
    assert rule["at"].endswith(f"plant.yaml:{line}:5")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "plan version 2 is not supported (this iot-dsl runs version 1); recompile the workflow"),
        (lambda d: d.update(format="other"), "not an iot-dsl plan"),
        (lambda d: d.pop("links"), "plan is missing 'links'"),
        (lambda d: d.update(segments=[]), "plan has no segments"),
        (lambda d: d["segments"][0].pop("name"), "segment without a name"),
        (lambda d: d["segments"][0].update(kind="moon"), "segment 'cloud' has an unknown kind"),
        (lambda d: d["segments"][0]["operators"][0].pop("config"), "segment 'cloud' has a malformed operator"),
        (lambda d: d["segments"][0]["operators"][0].update(kind="teleport"), "has unknown kind 'teleport'"),
        (lambda d: d["links"][0]["to"].update(segment="mars"), "names an unknown segment"),
        (lambda d: d["links"][0]["to"].update(node="rule:ghost"), "names an unknown operator"),
    ],
)
def test_load_plan_refuses_malformed_plans(plan_dict: dict, mutate, message: str) -> None:
    broken = copy.deepcopy(plan_dict)
    mutate(broken)
    with pytest.raises(PlanError, match=message.replace("(", "\\(").replace(")", "\\)")):
        load_plan(broken)


def test_load_plan_refuses_non_json_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="plan is not valid JSON"):
        load_plan(b"{nope")
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path / "missing.json")
    with pytest.raises(PlanError, match="a plan must be a JSON object"):
        load_plan(b"[1]")
