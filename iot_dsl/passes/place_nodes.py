"""Place every node on the cloud or on edge gateways, and refuse edge nodes that need cloud-only inputs.

The rule for ``auto`` (documented in docs/language.md):

* with no gateways declared, everything runs in the cloud;
* a source stream runs on every gateway (each gateway ingests the devices it serves);
* any other node runs on the edge when all of its inputs run on the same set of gateways, so everything it
  needs is local to each of those gateways; otherwise it runs in the cloud;
* sinks always run in the cloud.

An explicit ``edge`` or ``edge:<gateway>`` node whose input runs only in the cloud (or on other gateways) is an
error pointing at its ``placement`` (or at the element when placement was inherited).
"""

from __future__ import annotations

import networkx as nx

from ..errors import CompileError
from ..ir import Node, Workflow

__all__ = ["run", "CLOUD"]

CLOUD = "cloud"


def _where(resolved: str | tuple[str, ...] | None) -> str:
    if resolved == CLOUD or resolved is None:
        return "only in the cloud"
    return "on " + ", ".join(resolved)


def run(wf: Workflow) -> None:
    """Resolve ``node.resolved`` for every node in data-flow order."""
    gateways = tuple(sorted(wf.gateways))
    for node_id in nx.lexicographical_topological_sort(wf.graph):
        node = wf.node(node_id)
        inputs = [wf.node(p) for p in sorted(wf.graph.predecessors(node_id))]
        node.resolved = _resolve(wf, node, inputs, gateways)


def _resolve(wf: Workflow, node: Node, inputs: list[Node], gateways: tuple[str, ...]) -> str | tuple[str, ...]:
    wanted = node.placement
    if node.kind == "sink" or wanted == CLOUD:
        return CLOUD
    if wanted == "auto":
        if not gateways:
            return CLOUD
        if not inputs:
            return gateways
        sets = {i.resolved for i in inputs}
        only = next(iter(sets))
        return only if len(sets) == 1 and only != CLOUD and only is not None else CLOUD
    # explicit edge placement
    target: tuple[str, ...] = gateways if wanted == "edge" else (wanted[5:],)
    path = node.placement_path or node.path
    if not gateways:
        wf.errors.append(
            wf.doc.error(
                f"'{node.name}' is placed at the edge but the workflow declares no gateways",
                path,
                code="placement",
                hint="declare gateways under edge.gateways",
                cls=CompileError,
            )
        )
        return CLOUD
    for source in inputs:
        if source.resolved is None or source.resolved == CLOUD or not set(target) <= set(source.resolved):
            wf.errors.append(
                wf.doc.error(
                    f"'{node.name}' is placed at the edge ({', '.join(target)}) but depends on "
                    f"'{source.name}', which runs {_where(source.resolved)}",
                    path,
                    code="placement",
                    hint=f"place '{source.name}' at the edge too, or '{node.name}' in the cloud",
                    cls=CompileError,
                )
            )
    return target
