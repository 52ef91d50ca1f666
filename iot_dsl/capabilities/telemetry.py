"""The telemetry capability: ``groups`` and ``aggregates`` sections in, aggregate/anomaly IR nodes, checks and operators out.

Every aggregate becomes an ``aggregate`` node fed by its stream; its events (one per closed window and group)
form a stream named like the aggregate, so rules can say ``when: site_temp``. An aggregate with ``anomalies``
also gets an ``anomaly`` node after it, whose events form the stream ``<aggregate>_anomalies``. Groups are not
nodes: an aggregate carries the definition of the group it uses in its config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import CompileError, ExprError, did_you_mean
from ..expr import BOOLEAN, Scope, annotate, is_assignable, type_from_name, type_name
from ..expr.types import is_numeric
from ..ir import Node, Workflow
from ..passes.check_types import check_expression, device_attribute_types, stream_scope
from ..runtime.aggregates import AggregateOperator, parse_compute
from ..runtime.anomalies import DEFAULTS, AnomalyOperator
from ..runtime.clock import parse_duration
from ..runtime.groups import ALL_LEVEL, DEVICE_LEVEL
from ..runtime.telemetry_stats import INTEGER_STATS
from ..runtime.windows import WINDOW_KINDS
from . import Capability

__all__ = ["AGGREGATE_FIELDS", "ANOMALY_SUFFIX", "CAPABILITY"]

#: an aggregate ``x`` with anomalies publishes its anomaly events as the stream ``x_anomalies``
ANOMALY_SUFFIX = "_anomalies"
#: fields every aggregate event carries besides the computed values (and the device key)
AGGREGATE_FIELDS: dict[str, str] = {
    "aggregate": "string",
    "group": "string",
    "level": "string",
    "window_start": "number",
    "window_end": "number",
    "revision": "integer",
}
ANOMALY_FIELDS: dict[str, str] = {
    "aggregate": "string",
    "anomaly": "string",
    "method": "string",
    "metric": "string",
    "value": "number",
    "score": "number",
    "baseline": "number",
    "threshold": "number",
    "level": "string",
    "group": "string",
    "window_start": "number",
    "window_end": "number",
}
_GROUP_KINDS = ("by", "hierarchy", "geohash", "regions")
_METHOD_KEYS = {"alpha": ("ewma",), "limits": ("ewma",), "baseline": ("zscore", "mad"), "min_peers": ("peer",),
                "threshold": ("zscore", "mad", "peer")}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _error(wf: Workflow, message: str, path: tuple[str | int, ...], code: str, hint: str | None = None,
           key: bool = False) -> None:
    wf.errors.append(wf.doc.error(message, path, code=code, hint=hint, key=key, cls=CompileError))


def _unknown(wf: Workflow, what: str, name: str, known: list[str], path: tuple[str | int, ...]) -> None:
    guess = did_you_mean(name, known)
    hint = f"did you mean '{guess}'?" if guess else (f"known: {', '.join(sorted(known))}" if known else None)
    _error(wf, f"unknown {what} '{name}'", path, f"unknown_{what.replace(' ', '_')}", hint)


def _report(wf: Workflow, exc: ExprError, path: tuple[str | int, ...]) -> None:
    """Append an expression error positioned inside the text at ``path``."""
    span = wf.doc.expr_span(path, exc.offset, exc.end_offset)
    wf.errors.append(
        ExprError(exc.message, span=span, path=path, code=exc.code, hint=exc.hint,
                  source_line=wf.doc.line_text(span.line), offset=exc.offset, end_offset=exc.end_offset)
    )


# ---------------------------------------------------------------------------------------------------- building
def build(workflow: Workflow) -> None:
    """Add an ``aggregate`` node (and an ``anomaly`` node) per aggregate; check the groups they use."""
    data = _mapping(workflow.doc.data)
    groups = {str(k): v for k, v in _mapping(data.get("groups")).items() if isinstance(v, Mapping)}
    attributes = device_attribute_types(workflow.device_types)
    for name, spec in sorted(groups.items()):
        _check_group(workflow, name, spec, attributes)
    for name, raw in _mapping(data.get("aggregates")).items():
        if isinstance(raw, Mapping):
            _add_aggregate(workflow, str(name), raw, groups, attributes)


def _check_group(wf: Workflow, name: str, spec: Mapping[str, Any], attributes: dict[str, str]) -> None:
    path: tuple[str | int, ...] = ("groups", name)
    kinds = [k for k in _GROUP_KINDS if k in spec]
    if len(kinds) > 1:
        _error(wf, f"a group has at most one of {', '.join(_GROUP_KINDS)}; '{name}' has {' and '.join(kinds)}",
               (*path, kinds[1]), "group_kind", key=True)
    elif not kinds and "where" not in spec:
        _error(wf, f"group '{name}' needs one of by, where, hierarchy, geohash or regions", path, "group_kind")
    for kind in ("by", "hierarchy"):
        for index, attribute in enumerate(spec.get(kind) or []):
            if isinstance(attribute, str) and attribute not in attributes:
                _unknown(wf, "device attribute", attribute, sorted(attributes), (*path, kind, index))
    scope = Scope(fields={k: type_from_name(v) for k, v in attributes.items()})
    check_expression(wf, spec.get("where"), (*path, "where"), scope, BOOLEAN)


def _window(wf: Workflow, raw: Any, path: tuple[str | int, ...]) -> dict[str, Any] | None:
    window = _mapping(raw)
    kinds = [k for k in WINDOW_KINDS if k in window]
    if len(kinds) != 1:
        message = "a window has exactly one of tumbling, hopping, sliding or session"
        _error(wf, message if kinds else f"{message}: none given", (*path, kinds[1]) if kinds else path,
               "window_kind", key=bool(kinds))
        return None
    kind = kinds[0]
    if kind == "hopping" and "every" not in window:
        _error(wf, "a hopping window needs 'every' (the hop), e.g. {hopping: 5m, every: 1m}", path, "window_every")
        return None
    if kind != "hopping" and "every" in window:
        _error(wf, f"'every' applies to hopping windows only, not {kind}", (*path, "every"), "window_every", key=True)
        return None
    try:
        size = parse_duration(window[kind])
        every = parse_duration(window["every"]) if kind == "hopping" else size
    except ValueError:
        return None  # the schema reported the malformed duration
    if size <= 0:
        _error(wf, f"the {kind} window must be longer than 0", (*path, kind), "window_size")
        return None
    if every <= 0 or every > size:
        _error(wf, "'every' must be longer than 0 and at most the window size", (*path, "every"), "window_every")
        return None
    return {kind: size, **({"every": every} if kind == "hopping" else {})}


def _add_aggregate(wf: Workflow, name: str, raw: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any]],
                   attributes: dict[str, str]) -> None:
    path: tuple[str | int, ...] = ("aggregates", name)
    placement = str(raw["placement"]) if isinstance(raw.get("placement"), str) else "auto"
    placement_path = (*path, "placement") if isinstance(raw.get("placement"), str) else None
    window = _window(wf, raw.get("window"), (*path, "window"))
    group = raw.get("group") if isinstance(raw.get("group"), str) else None
    group_spec = None
    if group is not None:
        if group in groups:
            group_spec = dict(groups[group])
        else:
            _unknown(wf, "group", group, sorted(groups), (*path, "group"))
    group_by = [str(a) for a in raw.get("group_by", []) if isinstance(a, str)] if isinstance(raw.get("group_by"), list) else []
    if group is not None and group_by:
        _error(wf, "use either 'group' or 'group_by', not both", (*path, "group_by"), "group_conflict", key=True)
    for index, attribute in enumerate(group_by):
        if attribute not in attributes:
            _unknown(wf, "device attribute", attribute, sorted(attributes), (*path, "group_by", index))
    compute = [[str(k), v] for k, v in _mapping(raw.get("compute")).items() if isinstance(v, str)]
    anomalies = [dict(a) for a in raw.get("anomalies", []) if isinstance(a, Mapping)] if isinstance(raw.get("anomalies"), list) else []
    config = {
        "stream": raw.get("stream"),
        "where": raw.get("where") if isinstance(raw.get("where"), str) else None,
        "group": group,
        "group_spec": group_spec,
        "group_by": group_by,
        "per_device": bool(raw.get("per_device", False)),
        "window": window or {"tumbling": 60.0},
        "compute": compute,
        "history": bool(raw.get("history", False)),
        "anomalies": anomalies,
    }
    for output in (name, *([name + ANOMALY_SUFFIX] if anomalies else [])):
        if output in wf.stream_outputs:
            _error(wf, f"aggregate '{name}' publishes the stream '{output}', which already exists", path,
                   "duplicate_name", key=True)
            return
    node = wf.add(Node(f"aggregate:{name}", "aggregate", name, path, config, placement, placement_path))
    wf.stream_outputs[name] = node.id
    if isinstance(raw.get("stream"), str):
        wf.references.append((node.id, raw["stream"], (*path, "stream")))
    if anomalies:
        detectors = Node(
            f"anomaly:{name}", "anomaly", name, (*path, "anomalies"),
            {"aggregate": name, "anomalies": anomalies, "history": config["history"]}, placement, placement_path,
        )
        wf.add(detectors)
        wf.graph.add_edge(node.id, detectors.id)
        wf.stream_outputs[name + ANOMALY_SUFFIX] = detectors.id


# ------------------------------------------------------------------------------------------------------ checks
def _device_key(wf: Workflow, node: Node) -> str:
    cursor = node
    while cursor.kind != "source":
        preds = sorted(wf.graph.predecessors(cursor.id))
        if not preds:
            return "device"
        cursor = wf.node(preds[0])
    return str(cursor.config.get("key", "device"))


def level_names(config: Mapping[str, Any]) -> list[str]:
    """The ``level`` values an aggregate's records can carry."""
    spec = config.get("group_spec")
    if spec:
        names = [str(a) for a in spec["hierarchy"]] if spec.get("hierarchy") else [str(config.get("group"))]
    elif config.get("group_by"):
        names = ["/".join(config["group_by"])]
    else:
        names = [ALL_LEVEL]
    return names + ([DEVICE_LEVEL] if config.get("per_device") else [])


def check_aggregate(wf: Workflow, node: Node, inputs: dict[str, str], attributes: dict[str, str]) -> None:
    """Type-check ``where`` and every statistic; set the fields of aggregate events."""
    scope = stream_scope(inputs, attributes)
    check_expression(wf, node.config.get("where"), (*node.path, "where"), scope, BOOLEAN)
    key = _device_key(wf, node)
    fields: dict[str, str] = {key: "string", **AGGREGATE_FIELDS}
    for name, text in node.config["compute"]:
        path = (*node.path, "compute", name)
        if name in fields:
            _error(wf, f"'{name}' is a field every aggregate event carries; choose another name", path, "reserved",
                   key=True)
            continue
        try:
            item = parse_compute(name, text)
            if item.argument is not None:
                result = annotate(item.argument, scope, None, text).type_of(item.argument)
                numeric = item.stat.function not in ("count", "distinct")
                if numeric and not (is_numeric(result) or result.name == "any"):
                    raise ExprError(f"{item.stat.function}() needs numbers, got {type_name(result)}", code="type",
                                    offset=item.argument.start, end_offset=item.argument.end)
        except ExprError as exc:
            _report(wf, exc, path)
            fields[name] = "number"
            continue
        fields[name] = "integer" if item.stat.function in INTEGER_STATS else "number"
    node.fields = fields


def check_anomaly(wf: Workflow, node: Node, inputs: dict[str, str], attributes: dict[str, str]) -> None:
    """Check every detector's ``on``, method-specific keys and level; set the fields of anomaly events."""
    (aggregate_id,) = list(wf.graph.predecessors(node.id))
    aggregate = wf.node(aggregate_id)
    computed = [str(name) for name, _ in aggregate.config["compute"]]
    levels = level_names(aggregate.config)
    for index, raw in enumerate(node.config["anomalies"]):
        path = (*node.path, index)
        method = raw.get("method")
        if method not in DEFAULTS:
            continue  # the schema reported it
        on = raw.get("on")
        if on is None:
            _error(wf, f"the {method} detector needs 'on': the computed value it watches", path, "missing_key")
        elif on not in computed:
            _unknown(wf, "computed value", str(on), computed, (*path, "on"))
        elif not is_assignable(type_from_name(inputs.get(str(on), "any")), type_from_name("number")):
            _error(wf, f"'{on}' is not a number", (*path, "on"), "type")
        for key_name, methods in _METHOD_KEYS.items():
            if key_name in raw and method not in methods:
                _error(wf, f"'{key_name}' applies to {' and '.join(methods)} detectors, not {method}",
                       (*path, key_name), "detector_key", key=True)
        if method == "peer" and not (aggregate.config.get("per_device") and (aggregate.config.get("group") or
                                                                            aggregate.config.get("group_by"))):
            _error(wf, "peer comparison needs per_device: true and a group (group or group_by) on the aggregate",
                   (*path, "method"), "peer_needs_groups")
        level = raw.get("level")
        if isinstance(level, str) and level not in levels:
            _unknown(wf, "level", level, levels, (*path, "level"))
    node.fields = {_device_key(wf, node): "string", **ANOMALY_FIELDS}


CAPABILITY = Capability(
    name="telemetry",
    sections=("groups", "aggregates"),
    build=build,
    checks={"aggregate": check_aggregate, "anomaly": check_anomaly},
    operators={"aggregate": AggregateOperator, "anomaly": AnomalyOperator},
)
