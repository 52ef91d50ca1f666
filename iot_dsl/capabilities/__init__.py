"""Capabilities plug into the compiler and interpreter here, without re-plumbing the spine.

A :class:`Capability` names the top-level workflow sections it reads, builds IR nodes from them, type-checks its
node kinds, and supplies the operators that run them. Each capability's JSON Schema lives in its own file under
``iot_dsl/schemas/`` and is referenced from ``workflow.schema.json``. The set is closed: :data:`MODULES` lists
every capability module; nothing is discovered from user input.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ir import Node, Workflow
    from ..runtime.operators import Builder

__all__ = ["Capability", "NodeCheck", "capabilities", "MODULES"]

#: ``check(workflow, node, input_fields, device_attributes)``: report errors in ``workflow.errors`` and set
#: ``node.fields`` (the fields of the events the node emits).
NodeCheck = Callable[["Workflow", "Node", dict[str, str], dict[str, str]], None]

#: Every capability module, in the order their sections are built. Each defines ``CAPABILITY``.
MODULES: tuple[str, ...] = (
    "iot_dsl.capabilities.patterns",
    "iot_dsl.capabilities.telemetry",
    "iot_dsl.capabilities.orchestration",
)


@dataclass(frozen=True)
class Capability:
    """What one capability contributes to the pipeline."""

    name: str
    #: top-level workflow keys this capability reads (its schema is in ``schemas/<name>.schema.json``)
    sections: tuple[str, ...]
    #: reads its sections from ``workflow.doc.data`` and adds nodes, edges, references and stream outputs
    build: Callable[["Workflow"], None]
    #: node kind -> type check
    checks: Mapping[str, NodeCheck] = field(default_factory=dict)
    #: node kind -> operator builder ``(plan_entry, BuildContext, device_key) -> Operator``
    operators: Mapping[str, "Builder"] = field(default_factory=dict)
    #: action keys (in a rule's ``do`` list) this capability handles, -> runtime handler factory
    actions: Mapping[str, Any] = field(default_factory=dict)


@cache
def capabilities() -> tuple[Capability, ...]:
    """Import every module in :data:`MODULES` and return their capabilities (cached)."""
    return tuple(importlib.import_module(name).CAPABILITY for name in MODULES)
