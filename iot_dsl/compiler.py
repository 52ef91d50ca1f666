"""Compile a workflow file into a plan: the whole pipeline, stage after stage, in one function.

In: a path to a workflow YAML file (or text). Out: a :class:`~iot_dsl.plan.Plan`, or :class:`DslErrors` holding
every problem found (schema, names, expressions, placement) so the author fixes them all in one go.
"""

from __future__ import annotations

import os

from .errors import DslError, DslErrors
from .ir import Workflow, build_workflow
from .partition import partition
from .passes import PASSES
from .plan import Plan, build_plan
from .schema import validate_document
from .source import Limits, SourceDoc, load_file, load_text

__all__ = ["compile_file", "compile_text", "compile_document", "check_document"]


def check_document(doc: SourceDoc) -> Workflow:
    """Validate and analyse a loaded document; raise :class:`DslErrors` listing every error."""
    errors: list[DslError] = list(validate_document(doc))  # 1. schema: keys, types, enums
    workflow = build_workflow(doc)  # 2. IR: typed nodes in a graph
    for run_pass in PASSES:  # 3. passes: names, cycles, types, placement
        run_pass(workflow)
    errors.extend(workflow.errors)
    if errors:
        raise DslErrors(_dedupe(errors))
    return workflow


def compile_document(doc: SourceDoc) -> Plan:
    """Validate, analyse, partition and emit the plan for a loaded document."""
    workflow = check_document(doc)
    segments, links = partition(workflow)  # 4. cloud segment + one per gateway, links across cuts
    return build_plan(workflow, segments, links)  # 5. versioned, canonical JSON plan


def compile_file(path: str | os.PathLike[str], limits: Limits | None = None) -> Plan:
    """Load (safely, with limits) and compile a workflow file."""
    return compile_document(load_file(path, limits or Limits()))


def compile_text(text: str, file: str = "<string>", limits: Limits | None = None) -> Plan:
    """Compile workflow text (tests and tools); ``file`` names it in error positions."""
    return compile_document(load_text(text, file, limits or Limits()))


def _dedupe(errors: list[DslError]) -> list[DslError]:
    seen: set[tuple[str, int, int, str]] = set()
    out = []
    for error in errors:
        key = error.sort_key()
        if key not in seen:
            seen.add(key)
            out.append(error)
    return out
