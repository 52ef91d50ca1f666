"""Refuse cycles: a stream that (through others) reads itself can never be computed."""

from __future__ import annotations

import networkx as nx

from ..errors import CompileError
from ..ir import Workflow

__all__ = ["run"]


def run(wf: Workflow) -> None:
    """Report each cycle once, at the element that closes it, and cut it so later passes can go on."""
    while True:
        try:
            cycle = nx.find_cycle(wf.graph)
        except nx.NetworkXNoCycle:
            return
        names = [wf.node(u).name for u, _ in cycle]
        last_u, last_v = cycle[-1]
        node = wf.node(last_v)
        loop = " -> ".join([*names, names[0]])
        wf.errors.append(
            wf.doc.error(f"streams form a cycle: {loop}", (*node.path, "from"), code="cycle", cls=CompileError)
        )
        wf.graph.remove_edge(last_u, last_v)
