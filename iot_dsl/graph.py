"""Render a plan as a diagram: DOT (Graphviz) or Mermaid, one cluster per segment, links drawn dashed."""

from __future__ import annotations

import re

from .plan import Plan

__all__ = ["render_dot", "render_mermaid"]


def _ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _label(op: dict[str, object]) -> str:
    return f"{op['kind']}: {op['name']}"


def render_dot(plan: Plan) -> str:
    """DOT text: ``subgraph cluster_<segment>`` per segment, solid edges inside, dashed links across."""
    lines = [f'digraph "{plan.name}" {{', "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
    for seg in plan.segments:
        lines.append(f"  subgraph cluster_{_ident(seg['name'])} {{")
        lines.append(f'    label="{seg["kind"]}: {seg["name"]}";')
        for op in seg["operators"]:
            lines.append(f'    {_ident(seg["name"] + "__" + op["id"])} [label="{_label(op)}"];')
        members = {op["id"] for op in seg["operators"]}
        for op in seg["operators"]:
            for out in op.get("outputs", []):
                if out in members:
                    lines.append(f"    {_ident(seg['name'] + '__' + op['id'])} -> {_ident(seg['name'] + '__' + out)};")
        lines.append("  }")
    for link in plan.links:
        if link["from"]["node"] is None:
            continue
        a = _ident(link["from"]["segment"] + "__" + link["from"]["node"])
        b = _ident(link["to"]["segment"] + "__" + link["to"]["node"])
        lines.append(f'  {a} -> {b} [style=dashed, label="{link["kind"]}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_mermaid(plan: Plan) -> str:
    """Mermaid ``flowchart LR`` text with a ``subgraph`` per segment and dotted links across segments."""
    lines = ["flowchart LR"]
    for seg in plan.segments:
        lines.append(f'  subgraph {_ident(seg["name"])}["{seg["kind"]}: {seg["name"]}"]')
        for op in seg["operators"]:
            lines.append(f'    {_ident(seg["name"] + "__" + op["id"])}["{_label(op)}"]')
        lines.append("  end")
    for seg in plan.segments:
        members = {op["id"] for op in seg["operators"]}
        for op in seg["operators"]:
            for out in op.get("outputs", []):
                if out in members:
                    lines.append(f"  {_ident(seg['name'] + '__' + op['id'])} --> {_ident(seg['name'] + '__' + out)}")
    for link in plan.links:
        if link["from"]["node"] is None:
            continue
        a = _ident(link["from"]["segment"] + "__" + link["from"]["node"])
        b = _ident(link["to"]["segment"] + "__" + link["to"]["node"])
        lines.append(f"  {a} -. {link['kind']} .-> {b}")
    return "\n".join(lines) + "\n"
