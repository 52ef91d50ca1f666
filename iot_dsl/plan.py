"""Build, serialize and check plans: the versioned JSON document the interpreter runs.

In: a compiled :class:`~iot_dsl.ir.Workflow` with its segments and links. Out: a :class:`Plan` whose
``to_json()`` is byte-identical for the same workflow (sorted keys, stable operator order, no timestamps).
``load_plan`` takes a path, bytes or a dict and checks format, version and references before anything runs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .errors import PlanError
from .ir import NODE_KINDS, Workflow
from .partition import Link, Segment

__all__ = ["PLAN_FORMAT", "PLAN_VERSION", "Plan", "build_plan", "load_plan"]

PLAN_FORMAT = "iot-dsl-plan"
PLAN_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """A checked plan document (a plain dict) with accessors the engine and CLI use."""

    data: Mapping[str, Any]

    @property
    def name(self) -> str:
        """The workflow's name."""
        return str(self.data["workflow"]["name"])

    @property
    def segments(self) -> list[Mapping[str, Any]]:
        """Segments in order: cloud first, then gateways by name."""
        return list(self.data["segments"])

    @property
    def links(self) -> list[Mapping[str, Any]]:
        """Links between segments."""
        return list(self.data["links"])

    def segment(self, name: str) -> Mapping[str, Any]:
        """The segment called ``name``; :class:`PlanError` when there is none."""
        for seg in self.data["segments"]:
            if seg["name"] == name:
                return seg  # type: ignore[no-any-return]
        known = ", ".join(s["name"] for s in self.data["segments"])
        raise PlanError(f"plan has no segment '{name}' (segments: {known})", code="unknown_segment")

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, two-space indent, trailing newline."""
        return orjson.dumps(self.data, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _operator(wf: Workflow, node_id: str, segment: Segment) -> dict[str, Any]:
    node = wf.node(node_id)
    span = wf.doc.span(node.path)
    inputs = sorted(wf.graph.predecessors(node_id))
    return {
        "id": node.id,
        "kind": node.kind,
        "name": node.name,
        "inputs": inputs,
        "outputs": sorted(wf.graph.successors(node_id)),
        "config": node.config,
        "fields": node.fields,
        "at": f"{span.file}:{span.line}:{span.col}",
    }


def _link(link: Link) -> dict[str, Any]:
    return {
        "id": link.id,
        "kind": link.kind,
        "channel": link.channel,
        "from": {"segment": link.from_segment, "node": link.from_node},
        "to": {"segment": link.to_segment, "node": link.to_node},
        "delivery": "store_and_forward" if link.kind == "uplink" else "expiring",
    }


def build_plan(wf: Workflow, segments: list[Segment], links: list[Link]) -> Plan:
    """Assemble the plan document from the compiled workflow."""
    data: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "workflow": {
            "name": wf.name,
            "file": wf.doc.file,
            "sha256": hashlib.sha256(wf.doc.text.encode("utf-8")).hexdigest(),
        },
        "device_types": wf.device_types,
        "device_attributes": wf.graph.graph.get("device_attributes", {}),
        "gateways": {
            name: {"devices": spec.get("devices"), "buffer": spec.get("buffer", {})}
            for name, spec in sorted(wf.gateways.items())
        },
        "segments": [
            {"name": s.name, "kind": s.kind, "operators": [_operator(wf, n, s) for n in s.node_ids]} for s in segments
        ],
        "links": [_link(link) for link in links],
        "simulation": wf.simulation,
    }
    # round-trip through JSON so the in-memory plan equals what load_plan would read back
    return Plan(orjson.loads(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)))


def _require(cond: bool, message: str, code: str = "invalid") -> None:
    if not cond:
        raise PlanError(message, code=code)


def load_plan(source: str | os.PathLike[str] | bytes | Mapping[str, Any] | Plan) -> Plan:
    """Read and check a plan from a path, JSON bytes, a dict or a :class:`Plan`; raise :class:`PlanError`."""
    if isinstance(source, Plan):
        return source
    if isinstance(source, Mapping):
        data: Any = source
    else:
        raw: bytes
        if isinstance(source, bytes):
            raw = source
        else:
            try:
                raw = Path(source).read_bytes()
            except OSError as exc:
                raise PlanError(f"cannot read plan {os.fspath(source)}: {exc.strerror}", code="unreadable") from exc
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise PlanError(f"plan is not valid JSON: {exc}", code="json") from exc
    _require(isinstance(data, Mapping), "a plan must be a JSON object")
    _require(data.get("format") == PLAN_FORMAT, f"not an iot-dsl plan (format must be '{PLAN_FORMAT}')", "format")
    version = data.get("version")
    _require(
        version == PLAN_VERSION,
        f"plan version {version!r} is not supported (this iot-dsl runs version {PLAN_VERSION}); recompile the workflow",
        "version",
    )
    for key in ("workflow", "segments", "links", "gateways", "device_types", "device_attributes"):
        _require(key in data, f"plan is missing '{key}'", "missing")
    _require(isinstance(data["segments"], list) and bool(data["segments"]), "plan has no segments", "missing")
    names = set()
    operator_ids: set[str] = set()
    for seg in data["segments"]:
        _require(isinstance(seg, Mapping) and isinstance(seg.get("name"), str), "segment without a name")
        _require(seg.get("kind") in ("cloud", "edge"), f"segment '{seg['name']}' has an unknown kind", "kind")
        names.add(seg["name"])
        for op in seg.get("operators", []):
            _require(
                isinstance(op, Mapping) and {"id", "kind", "name", "config"} <= set(op),
                f"segment '{seg['name']}' has a malformed operator",
            )
            _require(op["kind"] in NODE_KINDS, f"operator '{op['id']}' has unknown kind '{op['kind']}'", "kind")
            operator_ids.add(op["id"])
    for link in data["links"]:
        ends = (link.get("from", {}), link.get("to", {}))
        for end in ends:
            _require(end.get("segment") in names, f"link '{link.get('id')}' names an unknown segment", "link")
            node = end.get("node")
            _require(node is None or node in operator_ids, f"link '{link.get('id')}' names an unknown operator", "link")
    return Plan(data)
