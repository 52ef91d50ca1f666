"""Compiler passes over the workflow graph, applied in order by :data:`PASSES`.

Each pass is one small function ``run(workflow) -> None`` in a module of its own. A pass reads the
:class:`~iot_dsl.ir.Workflow`, annotates nodes, adds edges, and appends every problem it finds to
``workflow.errors`` (it never stops at the first one).
"""

from __future__ import annotations

from collections.abc import Callable

from ..ir import Workflow
from . import check_cycles, check_types, place_nodes, resolve_names

__all__ = ["PASSES", "Pass"]

Pass = Callable[[Workflow], None]

#: The passes, in the order they run: names before cycles (edges exist), cycles before types (a topological
#: order exists), types before placement (placement looks at what each expression reads).
PASSES: tuple[Pass, ...] = (
    resolve_names.run,
    check_cycles.run,
    check_types.run,
    place_nodes.run,
)
