"""Every example workflow validates, carries the schema modeline, and runs on its simulated fleet."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from iot_dsl import compile_file
from iot_dsl.schema import bundled_schema
from iot_dsl.source import load_file
from iot_dsl.testing import by_kind, run_workflow

from .conftest import WORKFLOWS

EXAMPLES = sorted(WORKFLOWS.glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles_and_has_the_schema_modeline(path: Path) -> None:
    assert path.read_text().splitlines()[0] == "# yaml-language-server: $schema=../iot_dsl/schemas/workflow.schema.json"
    jsonschema.validate(load_file(path).data, bundled_schema())
    compile_file(path)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_on_its_simulated_fleet(path: Path) -> None:
    records = run_workflow(path, duration="10m", seed=3)
    assert by_kind(records, "command"), f"{path.name} issued no command in 10 simulated minutes"
    assert not by_kind(records, "dead_letter")


def test_modeline_points_at_the_shipped_schema() -> None:
    assert (WORKFLOWS / "../iot_dsl/schemas/workflow.schema.json").resolve().is_file()
