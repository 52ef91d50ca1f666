"""Resolve names: turn every ``from``/``when`` reference into a graph edge; report unknown names with a guess."""

from __future__ import annotations

from ..errors import CompileError, did_you_mean
from ..ir import Workflow

__all__ = ["run"]


def _unknown(wf: Workflow, what: str, name: str, known: list[str], path: tuple[str | int, ...]) -> None:
    guess = did_you_mean(name, known)
    hint = f"did you mean '{guess}'?" if guess else (f"known: {', '.join(sorted(known))}" if known else None)
    wf.errors.append(wf.doc.error(f"unknown {what} '{name}'", path, code=f"unknown_{what.replace(' ', '_')}", hint=hint, cls=CompileError))


def run(wf: Workflow) -> None:
    """Add data-flow edges for stream references and check every named reference exists."""
    streams = sorted(wf.stream_outputs)
    for node_id, name, path in wf.references:
        source = wf.stream_outputs.get(name)
        if source is None:
            _unknown(wf, "stream", name, streams, path)
            continue
        wf.graph.add_edge(source, node_id)

    types = sorted(wf.device_types)
    commands = sorted({c for t in wf.device_types.values() for c in (t.get("commands") or {})})
    gateways = sorted(wf.gateways)
    element_names = sorted({n.name for n in wf.nodes()})
    for node in wf.nodes():
        if node.kind == "source" and isinstance(node.config.get("device_type"), str):
            if node.config["device_type"] not in wf.device_types:
                _unknown(wf, "device type", node.config["device_type"], types, (*node.path, "device_type"))
        if node.placement.startswith("edge:") and node.placement[5:] not in wf.gateways:
            assert node.placement_path is not None
            _unknown(wf, "gateway", node.placement[5:], gateways, node.placement_path)
        if node.kind == "rule":
            for index, action in enumerate(node.config["actions"]):
                command = action.get("command")
                if isinstance(command, str) and command not in commands:
                    _unknown(wf, "command", command, commands, (*node.path, "do", index, "command"))
        if node.kind == "sink":
            for index, name in enumerate(node.config["nodes"]):
                if name not in element_names:
                    _unknown(wf, "element", name, element_names, (*node.path, "nodes", index))
    if wf.simulation is not None:
        fleet = wf.simulation.get("fleet")
        for index, entry in enumerate(fleet if isinstance(fleet, list) else []):
            kind = entry.get("type") if isinstance(entry, dict) else None
            if isinstance(kind, str) and kind not in wf.device_types:
                _unknown(wf, "device type", kind, types, ("simulation", "fleet", index, "type"))
        stream = wf.simulation.get("stream")
        if isinstance(stream, str) and stream not in wf.stream_outputs:
            _unknown(wf, "stream", stream, streams, ("simulation", "stream"))
