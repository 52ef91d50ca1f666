"""Type-check every expression against the fields each stream carries; infer the fields each node emits.

Streams carry an envelope (``device``/key, ``ts``/time, ``seq``, ``type``, ``site``, ``group``) plus the fields
the stream or its device type declares; derived streams add their derived fields. Expressions in ``where`` and
``if`` must be boolean. Errors point inside the expression text, mapped to the workflow file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from ..errors import CompileError, ExprError, did_you_mean
from ..expr import BOOLEAN, Namespace, Scope, check_expr, is_assignable, parse_expr, type_from_name, type_name
from ..ir import Node, Workflow
from ..runtime.firmware import parse_range

__all__ = ["run", "check_expression", "device_attribute_types", "stream_scope", "target_scope", "ENVELOPE_FIELDS"]

#: Fields every source stream may carry besides its declared ones (the simulator and transports fill them).
ENVELOPE_FIELDS: dict[str, str] = {"seq": "integer", "type": "string", "site": "string", "group": "string"}

#: Attributes every device has in the registry.
DEVICE_ATTRIBUTES: dict[str, str] = {
    "id": "string",
    "type": "string",
    "site": "string",
    "group": "string",
    "firmware": "version",
    "lat": "number",
    "lon": "number",
}


def device_attribute_types(device_types: Mapping[str, Any]) -> dict[str, str]:
    """All attributes a device may have: the registry's own plus every type's declared ``attributes``."""
    out = dict(DEVICE_ATTRIBUTES)
    for spec in device_types.values():
        for key, kind in (spec.get("attributes") or {}).items():
            out.setdefault(str(key), str(kind))
    return dict(sorted(out.items()))


def _types(fields: Mapping[str, str]) -> dict[str, Any]:
    return {k: type_from_name(v) for k, v in fields.items()}


def stream_scope(fields: Mapping[str, str], device_attributes: Mapping[str, str]) -> Scope:
    """Scope for expressions over a stream's events: bare names are event fields, ``device.x`` the sender's attributes."""
    return Scope(fields=_types(fields), namespaces={"device": Namespace("device", _types(device_attributes))})


def target_scope(event_fields: Mapping[str, str], device_attributes: Mapping[str, str]) -> Scope:
    """Scope for ``targets``: bare names are a candidate device's attributes, ``event.x`` the triggering event."""
    return Scope(fields=_types(device_attributes), namespaces={"event": Namespace("event", _types(event_fields))})


def check_expression(wf: Workflow, text: Any, path: tuple[str | int, ...], scope: Scope, expect: Any = None) -> Any:
    """Parse and type-check the expression at ``path``; on error append a positioned ExprError and return None."""
    if not isinstance(text, str):
        return None
    try:
        return check_expr(parse_expr(text), scope, expect=expect, text=text)
    except ExprError as exc:
        span = wf.doc.expr_span(path, exc.offset, exc.end_offset)
        wf.errors.append(
            ExprError(
                exc.message,
                span=span,
                path=path,
                code=exc.code,
                hint=exc.hint,
                source_line=wf.doc.line_text(span.line),
                offset=exc.offset,
                end_offset=exc.end_offset,
            )
        )
        return None


def _source_fields(wf: Workflow, node: Node) -> dict[str, str]:
    """Fields a source stream's events carry after normalisation (``normalize`` renames add their targets).

    Also records ``raw_fields`` (the fields before normalisation, which ``normalize[].when`` reads) in the node's
    config and checks the ingestion settings: ``when`` must be boolean, ``scale``/``units`` need number fields,
    and a critical stream may not shed.
    """
    config = node.config
    fields: dict[str, str] = {str(config["key"]): "string", str(config["time"]): "any", **ENVELOPE_FIELDS}
    device_type = wf.device_types.get(str(config.get("device_type")))
    if device_type:
        fields.update({str(k): str(v) for k, v in (device_type.get("telemetry") or {}).items()})
    fields.update({str(k): str(v) for k, v in config["declared_fields"].items()})
    rules = config.get("normalize") or []
    if not rules and not config.get("queue"):
        return fields
    raw = dict(fields)
    for rule in rules:
        for old, new in rule["rename"].items():
            raw.setdefault(str(old), fields.get(str(new), "any"))
            fields.setdefault(str(new), raw[str(old)])
    config["raw_fields"] = dict(sorted(raw.items()))
    attributes = device_attribute_types(wf.device_types)
    for index, rule in enumerate(rules):
        path = (*node.path, "normalize", index)
        check_expression(wf, rule.get("when"), (*path, "when"), stream_scope(raw, attributes), BOOLEAN)
        for section in ("scale", "units"):
            for name in rule[section]:
                kind = fields.get(str(name), "any")
                if kind not in ("number", "integer", "any"):
                    wf.errors.append(
                        wf.doc.error(
                            f"cannot {'scale' if section == 'scale' else 'convert'} field '{name}': it is {kind}, "
                            "not a number",
                            (*path, section, name), code="type", key=True, cls=CompileError,
                        )
                    )
    queue = config.get("queue")
    if queue and config.get("critical") and queue.get("on_full") in ("shed", "sample"):
        wf.errors.append(
            wf.doc.error(
                f"a critical stream cannot {queue['on_full']}: use on_full: backpressure, or drop critical: true",
                (*node.path, "queue", "on_full"), code="critical_shedding", cls=CompileError,
            )
        )
    return fields


def _input_fields(wf: Workflow, node: Node) -> dict[str, str]:
    merged: dict[str, str] = {}
    for pred in sorted(wf.graph.predecessors(node.id)):
        merged.update(wf.node(pred).fields)
    return merged


def run(wf: Workflow) -> None:
    """Check each node's expressions in data-flow order and record the fields it emits."""
    attributes = device_attribute_types(wf.device_types)
    wf.graph.graph["device_attributes"] = attributes
    attr_scope = Scope(fields=_types(attributes))
    _check_firmware_ranges(wf)
    for name, gateway in sorted(wf.gateways.items()):
        check_expression(wf, gateway.get("devices"), ("edge", "gateways", name, "devices"), attr_scope, BOOLEAN)

    for node_id in nx.lexicographical_topological_sort(wf.graph):
        node = wf.node(node_id)
        if node.kind == "source":
            node.fields = _source_fields(wf, node)
            continue
        inputs = _input_fields(wf, node)
        node.config["input_fields"] = inputs
        if node.kind == "filter":
            check_expression(wf, node.config.get("where"), (*node.path, "where"), stream_scope(inputs, attributes), BOOLEAN)
            node.fields = dict(inputs)
        elif node.kind == "derive":
            fields = dict(inputs)
            for key, text in node.config["derive"]:
                result = check_expression(wf, text, (*node.path, "derive", key), stream_scope(fields, attributes))
                fields[str(key)] = type_name(result) if result is not None else "any"
            node.fields = fields
        elif node.kind == "rule":
            _check_rule(wf, node, inputs, attributes)
        else:
            check = _capability_checks().get(node.kind)
            if check is not None:
                check(wf, node, inputs, attributes)


def _capability_checks() -> dict[str, Any]:
    from ..capabilities import capabilities

    return {kind: fn for cap in capabilities() for kind, fn in cap.checks.items()}


def _check_rule(wf: Workflow, node: Node, inputs: dict[str, str], attributes: dict[str, str]) -> None:
    scope = stream_scope(inputs, attributes)
    check_expression(wf, node.config.get("if"), (*node.path, "if"), scope, BOOLEAN)
    for index, action in enumerate(node.config["actions"]):
        base = (*node.path, "do", index)
        if "targets" in action:
            check_expression(wf, action["targets"], (*base, "targets"), target_scope(inputs, attributes), BOOLEAN)
        declared = _declared_params(wf, action.get("command"))
        for key, text in (action.get("params") or {}).items():
            result = check_expression(wf, text, (*base, "params", key), scope)
            if declared is None:
                continue
            if key not in declared:
                guess = did_you_mean(str(key), declared)
                hint = f"did you mean '{guess}'?" if guess else f"parameters: {', '.join(sorted(declared)) or 'none'}"
                wf.errors.append(
                    wf.doc.error(
                        f"command '{action['command']}' has no parameter '{key}'",
                        (*base, "params", key),
                        code="unknown_param",
                        hint=hint,
                        key=True,
                        cls=CompileError,
                    )
                )
            elif result is not None and not is_assignable(result, type_from_name(declared[key])):
                wf.errors.append(
                    wf.doc.error(
                        f"parameter '{key}' of '{action['command']}' is {declared[key]}, got {type_name(result)}",
                        (*base, "params", key),
                        code="type",
                        cls=CompileError,
                    )
                )


def _declared_params(wf: Workflow, command: Any) -> dict[str, str] | None:
    """Union of the parameters device types declare for ``command``; None when none declares any."""
    found: dict[str, str] | None = None
    for spec in wf.device_types.values():
        entry = (spec.get("commands") or {}).get(command)
        if isinstance(entry, Mapping) and isinstance(entry.get("params"), Mapping):
            found = {**(found or {}), **{str(k): str(v) for k, v in entry["params"].items()}}
    return found


def _check_firmware_ranges(wf: Workflow) -> None:
    for type_name_, spec in sorted(wf.device_types.items()):
        for command, entry in sorted((spec.get("commands") or {}).items()):
            variants = entry.get("variants") if isinstance(entry, Mapping) else None
            for index, variant in enumerate(variants if isinstance(variants, list) else []):
                text = variant.get("firmware") if isinstance(variant, Mapping) else None
                if not isinstance(text, str):
                    continue
                try:
                    parse_range(text)
                except ValueError as exc:
                    path = ("devices", "types", type_name_, "commands", command, "variants", index, "firmware")
                    wf.errors.append(wf.doc.error(str(exc), path, code="firmware_range", cls=CompileError))
