"""Build the intermediate graph: a validated workflow document in, a networkx DiGraph of typed nodes out.

Each workflow element becomes one or more :class:`Node` objects (a derived stream with ``where`` and ``derive``
becomes a ``filter`` node followed by a ``derive`` node). Edges run in the direction data flows. The builder is
tolerant: it skips what the schema already reported as broken, so later passes can still report their own errors
in the same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from .errors import DslError
from .source import SourceDoc

__all__ = ["Node", "NODE_KINDS", "Workflow", "build_workflow"]

#: Every kind of node the graph may hold. The spine fills in source/filter/derive/rule/sink; the capability
#: modules add pattern, window, aggregate, anomaly, orchestration and twin nodes.
NODE_KINDS: tuple[str, ...] = (
    "source",
    "filter",
    "derive",
    "pattern",
    "window",
    "aggregate",
    "anomaly",
    "rule",
    "orchestration",
    "twin",
    "sink",
)


@dataclass
class Node:
    """One typed node of the workflow graph.

    ``id`` is unique (``kind:name``); ``name`` is the workflow element's name (what records carry as ``node``);
    ``path`` is the YAML path of the element; ``config`` is JSON-serializable and goes into the plan as is.
    ``placement`` is what the author asked for; ``resolved`` is filled by the placement pass: ``"cloud"`` or the
    sorted tuple of gateways the node runs on.
    """

    id: str
    kind: str
    name: str
    path: tuple[str | int, ...]
    config: dict[str, Any] = field(default_factory=dict)
    placement: str = "auto"
    placement_path: tuple[str | int, ...] | None = None
    resolved: str | tuple[str, ...] | None = None
    #: fields (name -> type name) of the events this node emits; filled by the type pass
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class Workflow:
    """The document, its graph and what the passes learn about it."""

    doc: SourceDoc
    name: str
    graph: nx.DiGraph[str]
    #: stream name -> id of the node that produces that stream's events
    stream_outputs: dict[str, str] = field(default_factory=dict)
    device_types: dict[str, Any] = field(default_factory=dict)
    gateways: dict[str, Any] = field(default_factory=dict)
    simulation: dict[str, Any] | None = None
    errors: list[DslError] = field(default_factory=list)
    #: pending name references (from-node id, referenced stream name, YAML path) resolved by the names pass
    references: list[tuple[str, str, tuple[str | int, ...]]] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        """Return the node with this id."""
        found: Node = self.graph.nodes[node_id]["node"]
        return found

    def nodes(self) -> list[Node]:
        """All nodes, in a stable order (by id)."""
        return [self.graph.nodes[n]["node"] for n in sorted(self.graph.nodes)]

    def add(self, node: Node) -> Node:
        """Insert a node; a second node with the same id is reported, not silently replaced."""
        if node.id in self.graph:
            self.errors.append(
                self.doc.error(f"duplicate name '{node.name}'", node.path, code="duplicate_name", cls=_compile_error())
            )
            return self.node(node.id)
        self.graph.add_node(node.id, node=node)
        return node


def _compile_error() -> type[DslError]:
    from .errors import CompileError

    return CompileError


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _placement(raw: Mapping[str, Any], path: tuple[str | int, ...]) -> tuple[str, tuple[str | int, ...] | None]:
    value = raw.get("placement")
    if isinstance(value, str):
        return value, (*path, "placement")
    return "auto", None


def build_workflow(doc: SourceDoc) -> Workflow:
    """Turn the (possibly partly invalid) document into a :class:`Workflow` with its node graph."""
    data = _mapping(doc.data)
    name = data.get("workflow") if isinstance(data.get("workflow"), str) else "workflow"
    wf = Workflow(doc=doc, name=str(name), graph=nx.DiGraph())
    wf.device_types = {k: v for k, v in _mapping(_mapping(data.get("devices")).get("types")).items() if isinstance(v, Mapping)}
    wf.gateways = {k: v for k, v in _mapping(_mapping(data.get("edge")).get("gateways")).items() if isinstance(v, Mapping)}
    sim = data.get("simulation")
    wf.simulation = dict(sim) if isinstance(sim, Mapping) else None

    for stream_name, raw in _mapping(data.get("streams")).items():
        if isinstance(raw, Mapping):
            _add_stream(wf, str(stream_name), raw)
    rules = data.get("rules")
    if isinstance(rules, list):
        for index, raw in enumerate(rules):
            if isinstance(raw, Mapping):
                _add_rule(wf, index, raw)
    for sink_name, raw in _mapping(data.get("sinks")).items():
        if isinstance(raw, Mapping):
            _add_sink(wf, str(sink_name), raw)
    from .capabilities import capabilities

    for capability in capabilities():
        capability.build(wf)
    return wf


def _add_stream(wf: Workflow, name: str, raw: Mapping[str, Any]) -> None:
    path: tuple[str | int, ...] = ("streams", name)
    placement, placement_path = _placement(raw, path)
    if "from" not in raw:
        config = {
            "stream": name,
            "topic": raw.get("topic"),
            "device_type": raw.get("device_type"),
            "key": raw.get("key", "device"),
            "time": raw.get("time", "ts"),
            "lateness": raw.get("lateness", 0),
            "declared_fields": dict(_mapping(raw.get("fields"))),
            "critical": bool(raw.get("critical", False)),
            **_ingest_config(raw),
        }
        node = wf.add(Node(f"source:{name}", "source", name, path, config, placement, placement_path))
        wf.stream_outputs[name] = node.id
        return
    upstream = raw.get("from")
    previous: str | None = None
    if isinstance(raw.get("where"), str):
        node = wf.add(
            Node(f"filter:{name}", "filter", name, path, {"where": raw["where"]}, placement, placement_path)
        )
        previous = node.id
        if isinstance(upstream, str):
            wf.references.append((node.id, upstream, (*path, "from")))
    derive = raw.get("derive")
    if isinstance(derive, Mapping) and derive:
        node = wf.add(
            Node(
                f"derive:{name}",
                "derive",
                name,
                path,
                # a list of [field, expression] pairs: order matters (a field may use an earlier one) and plans
                # sort mapping keys
                {"derive": [[str(k), v] for k, v in derive.items()]},
                placement,
                placement_path,
            )
        )
        if previous is not None:
            wf.graph.add_edge(previous, node.id)
        elif isinstance(upstream, str):
            wf.references.append((node.id, upstream, (*path, "from")))
        previous = node.id
    if previous is None:
        # a pure alias of another stream: a filter that keeps everything
        node = wf.add(Node(f"filter:{name}", "filter", name, path, {"where": None}, placement, placement_path))
        previous = node.id
        if isinstance(upstream, str):
            wf.references.append((node.id, upstream, (*path, "from")))
    wf.stream_outputs[name] = previous


def _ingest_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The ingestion part of a source stream's config (see docs/language.md, "Ingestion"); durations as written."""
    dedup = raw.get("dedup")
    if isinstance(dedup, Mapping):
        dedup_config: dict[str, Any] | None = {"window": dedup.get("window", 0), "max_ids": dedup.get("max_ids")}
    elif dedup is not None and not isinstance(dedup, bool):
        dedup_config = {"window": dedup, "max_ids": None}
    else:
        dedup_config = None
    ident = raw.get("id")
    future = _mapping(raw.get("future"))
    checksum = _mapping(raw.get("checksum"))
    queue = _mapping(raw.get("queue"))
    critical = bool(raw.get("critical", False))
    normalize = raw.get("normalize")
    return {
        "id": ident if isinstance(ident, str) else ("seq" if dedup_config is not None else None),
        "dedup": dedup_config,
        "allowed_lateness": raw.get("allowed_lateness", 0),
        "future": {"tolerance": future.get("tolerance", 0), "policy": future.get("policy", "clamp")} if future else None,
        "checksum": (
            {"field": checksum.get("field"), "algorithm": checksum.get("algorithm", "crc32")} if checksum else None
        ),
        "normalize": [
            {
                "when": rule.get("when"),
                "rename": dict(_mapping(rule.get("rename"))),
                "scale": {str(k): dict(_mapping(v)) for k, v in _mapping(rule.get("scale")).items()},
                "units": dict(_mapping(rule.get("units"))),
            }
            for rule in (normalize if isinstance(normalize, list) else [])
            if isinstance(rule, Mapping)
        ],
        "queue": (
            {
                "max_events": queue.get("max_events", 100_000),
                "on_full": queue.get("on_full", "backpressure" if critical else "shed"),
                "keep": queue.get("keep", 0.1),
            }
            if queue
            else None
        ),
    }


def _add_rule(wf: Workflow, index: int, raw: Mapping[str, Any]) -> None:
    path: tuple[str | int, ...] = ("rules", index)
    name = raw.get("name") if isinstance(raw.get("name"), str) else f"rule-{index + 1}"
    placement, placement_path = _placement(raw, path)
    actions = [dict(a) for a in raw.get("do", []) if isinstance(a, Mapping)] if isinstance(raw.get("do"), list) else []
    config = {"if": raw.get("if"), "actions": actions, "when": raw.get("when"), "cooldown": raw.get("cooldown")}
    node = wf.add(Node(f"rule:{name}", "rule", str(name), path, config, placement, placement_path))
    if isinstance(raw.get("when"), str):
        wf.references.append((node.id, raw["when"], (*path, "when")))


def _add_sink(wf: Workflow, name: str, raw: Mapping[str, Any]) -> None:
    path: tuple[str | int, ...] = ("sinks", name)
    config = {
        "topic": raw.get("topic"),
        "kinds": list(raw.get("kinds", [])) if isinstance(raw.get("kinds"), list) else [],
        "nodes": list(raw.get("nodes", [])) if isinstance(raw.get("nodes"), list) else [],
    }
    wf.add(Node(f"sink:{name}", "sink", name, path, config, "cloud", None))
