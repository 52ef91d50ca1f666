"""Split the placed workflow graph into segments: one cloud segment plus one segment per edge gateway.

In: a :class:`~iot_dsl.ir.Workflow` whose nodes the placement pass resolved. Out: :class:`Segment` objects
(operators in a stable data-flow order) and :class:`Link` objects for every graph edge that crosses a cut:

* ``uplink`` (gateway -> cloud): events an edge node feeds to a cloud node, and the gateway's records; delivered
  by store-and-forward, so an outage loses nothing;
* ``downlink`` (cloud -> gateway): commands a cloud rule sends to devices a gateway serves, with expiry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .ir import Workflow
from .passes.place_nodes import CLOUD

__all__ = ["Segment", "Link", "partition"]


@dataclass
class Segment:
    """Operators that run together in one place (``cloud`` or a gateway)."""

    name: str
    kind: str  # "cloud" | "edge"
    node_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Link:
    """One explicit crossing between segments."""

    id: str
    kind: str  # "uplink" | "downlink"
    channel: str  # "events" | "records" | "commands"
    from_segment: str
    to_segment: str
    from_node: str | None
    to_node: str | None


def _segments_of(resolved: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if resolved is None or resolved == CLOUD:
        return (CLOUD,)
    assert isinstance(resolved, tuple)
    return resolved


def partition(wf: Workflow) -> tuple[list[Segment], list[Link]]:
    """Return the segments (cloud first, then gateways by name) and the links between them."""
    gateways = sorted(wf.gateways)
    segments = {CLOUD: Segment(CLOUD, "cloud")}
    for name in gateways:
        segments[name] = Segment(name, "edge")
    order = list(nx.lexicographical_topological_sort(wf.graph))
    for node_id in order:
        for seg in _segments_of(wf.node(node_id).resolved):
            segments[seg].node_ids.append(node_id)

    links: list[Link] = []
    for u, v in sorted(wf.graph.edges):
        from_segs, to_segs = _segments_of(wf.node(u).resolved), _segments_of(wf.node(v).resolved)
        for seg in from_segs:
            if seg in to_segs:
                continue
            for target in to_segs:
                kind = "uplink" if target == CLOUD else "downlink"
                links.append(Link(f"{seg}->{target}:{u}->{v}", kind, "events", seg, target, u, v))
    cloud_commands = any(
        any("command" in a for a in wf.node(n).config.get("actions", []))
        for n in segments[CLOUD].node_ids
        if wf.node(n).kind == "rule"
    )
    for name in gateways:
        links.append(Link(f"{name}->cloud:records", "uplink", "records", name, CLOUD, None, None))
        if cloud_commands:
            links.append(Link(f"cloud->{name}:commands", "downlink", "commands", CLOUD, name, None, None))
    links.sort(key=lambda link: link.id)
    return [segments[CLOUD], *(segments[g] for g in gateways)], links
