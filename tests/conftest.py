"""Shared fixtures: paths to the example workflows and a helper to compile YAML text."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from iot_dsl import Plan, compile_text

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def compile_yaml(text: str, file: str = "test.yaml") -> Plan:
    """Compile dedented YAML text."""
    return compile_text(textwrap.dedent(text), file)


@pytest.fixture
def plant_path() -> Path:
    return WORKFLOWS / "plant.yaml"
