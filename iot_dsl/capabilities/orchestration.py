"""The orchestration capability: ``orchestrations:`` sections and ``orchestrate`` actions in, IR nodes, checks and
operators out.

:func:`build` turns each orchestration into one ``orchestration`` node whose config is normalized for the runtime
(durations in seconds, shares as ``{"count"}``/``{"percent"}``, failure rates as fractions, defaults filled), wires
every rule action ``{orchestrate: <name>}`` as a graph edge rule -> orchestration (unknown names are reported with a
guess), and refuses step dependencies that name unknown steps or form a cycle. :func:`check` type-checks the
expressions (``targets`` over device attributes and ``event.x``; ``params`` over the trigger event; ``verify``
over the reported state), checks commands and parameters against the device types, refuses commands that a
statically known target type does not support (see :func:`static_types`), checks the idempotency template and
records the fields the node emits downstream when a run finishes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import networkx as nx

from ..errors import CompileError, did_you_mean
from ..expr import BOOLEAN, Namespace, Scope, is_assignable, parse_expr, type_from_name, type_name
from ..expr import nodes as n
from ..ir import Node, Workflow
from ..passes.check_types import check_expression, stream_scope, target_scope
from ..runtime.clock import parse_duration
from ..runtime.orchestration import build_orchestration
from ..runtime.orchestration_spec import DEFAULT_TIMEOUT, KEY_NAMES, template_names
from . import Capability

__all__ = ["CAPABILITY", "build", "check", "normalize", "static_types", "RESULT_FIELDS"]

SECTION = "orchestrations"
#: Fields a finished run adds to the trigger event it sends downstream.
RESULT_FIELDS: dict[str, str] = {
    "orchestration": "string",
    "run": "string",
    "status": "string",
    "reason": "string",
    "succeeded": "integer",
    "failed": "integer",
}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _duration(value: Any, default: float | None) -> float | None:
    if value is None:
        return default
    try:
        return parse_duration(value)
    except ValueError:
        return default  # the schema reported it


def _share(value: Any) -> dict[str, Any] | None:
    if value == "all":
        return {"percent": 100.0}
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return {"count": value}
    if isinstance(value, str) and value.endswith("%"):
        try:
            return {"percent": float(value[:-1])}
        except ValueError:
            return None
    return None


def _params(value: Any) -> list[list[str]]:
    return [[str(k), v] for k, v in _mapping(value).items() if isinstance(v, str)]


def _rollout(raw: Any) -> dict[str, Any] | None:
    raw = _mapping(raw)
    if isinstance(raw.get("waves"), list):
        waves = [share for share in (_share(w) for w in raw["waves"]) if share is not None]
        return {"waves": waves} if waves else None
    rate = _mapping(raw.get("rate"))
    if isinstance(rate.get("start"), int) and not isinstance(rate.get("start"), bool) and rate["start"] >= 1:
        out: dict[str, Any] = {"start": rate["start"], "factor": float(rate.get("factor", 1.0))}
        if isinstance(rate.get("max_per_minute"), int):
            out["max_per_minute"] = rate["max_per_minute"]
        return {"rate": out}
    return None


def _retries(raw: Any) -> dict[str, Any]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return {"max": raw}
    raw = _mapping(raw)
    out: dict[str, Any] = {}
    if isinstance(raw.get("max"), int):
        out["max"] = raw["max"]
    backoff = _duration(raw.get("backoff"), None)
    if backoff is not None:
        out["backoff"] = backoff
    for key in ("factor", "jitter"):
        if isinstance(raw.get(key), (int, float)) and not isinstance(raw.get(key), bool):
            out[key] = float(raw[key])
    if isinstance(raw.get("on"), list):
        out["on"] = [str(o) for o in raw["on"]]
    return out


def _after(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def _step(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    timeout = _duration(raw.get("timeout"), DEFAULT_TIMEOUT)
    step: dict[str, Any] = {
        "name": name,
        "command": raw.get("command"),
        "targets": raw.get("targets") if isinstance(raw.get("targets"), str) else None,
        "after": _after(raw.get("after")),
        "params": _params(raw.get("params")),
        "timeout": timeout,
        "retries": _retries(raw.get("retries")),
        "expires": _duration(raw.get("expires"), None),
        "verify": raw.get("verify") if isinstance(raw.get("verify"), str) else None,
    }
    barrier = raw.get("barrier")
    if isinstance(barrier, Mapping):
        step["barrier"] = {
            "quorum": _share(barrier.get("quorum", "all")) or {"percent": 100.0},
            "timeout": _duration(barrier.get("timeout"), None),
        }
    undo = _mapping(raw.get("undo"))
    if isinstance(undo.get("command"), str):
        step["undo"] = {
            "command": undo["command"],
            "params": _params(undo.get("params")),
            "timeout": _duration(undo.get("timeout"), timeout),
        }
    rollout = _rollout(raw.get("rollout"))
    if rollout is not None:
        step["rollout"] = rollout
    return step


def normalize(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime config of one orchestration (JSON-serializable; tolerant of parts the schema refused)."""
    steps = [
        _step(str(step_name), body)
        for step_name, body in _mapping(raw.get("steps")).items()
        if isinstance(body, Mapping) and isinstance(body.get("command"), str)
    ]
    config: dict[str, Any] = {
        "orchestration": name,
        "steps": steps,
        "on_failure": raw.get("on_failure") if raw.get("on_failure") in ("stop", "compensate") else "stop",
        "idempotency": raw.get("idempotency") if isinstance(raw.get("idempotency"), str) else None,
    }
    rollout = _rollout(raw.get("rollout"))
    if rollout is not None:
        config["rollout"] = rollout
    if isinstance(raw.get("concurrency"), int) and not isinstance(raw.get("concurrency"), bool):
        config["concurrency"] = raw["concurrency"]
    abort = _mapping(raw.get("abort"))
    rate = _share(abort.get("failure_rate"))
    if rate is not None and "percent" in rate:
        config["abort"] = {
            "failure_rate": rate["percent"] / 100.0,
            "min_executions": abort["min_executions"] if isinstance(abort.get("min_executions"), int) else 1,
            "scope": list(abort["scope"]) if isinstance(abort.get("scope"), list) else ["overall"],
        }
        if isinstance(abort.get("outcomes"), list):
            config["abort"]["outcomes"] = list(abort["outcomes"])
    return config


def build(workflow: Workflow) -> None:
    """Add one node per orchestration, wire ``orchestrate`` actions to them, check the step DAGs."""
    section = _mapping(_mapping(workflow.doc.data).get(SECTION))
    ids: dict[str, str] = {}
    for name, raw in section.items():
        if not isinstance(raw, Mapping):
            continue
        path: tuple[str | int, ...] = (SECTION, str(name))
        placement = str(raw["placement"]) if isinstance(raw.get("placement"), str) else "auto"
        placement_path = (*path, "placement") if isinstance(raw.get("placement"), str) else None
        node = workflow.add(
            Node(f"orchestration:{name}", "orchestration", str(name), path, normalize(str(name), raw), placement, placement_path)
        )
        ids[str(name)] = node.id
        workflow.stream_outputs.setdefault(str(name), node.id)
        _check_dag(workflow, str(name), _mapping(raw.get("steps")))
    for rule in workflow.nodes():
        if rule.kind != "rule":
            continue
        for index, action in enumerate(rule.config["actions"]):
            target = action.get("orchestrate")
            if not isinstance(target, str):
                continue
            if target in ids:
                workflow.graph.add_edge(rule.id, ids[target])
                continue
            guess = did_you_mean(target, ids)
            hint = f"did you mean '{guess}'?" if guess else (f"known: {', '.join(sorted(ids))}" if ids else "no orchestrations are declared")
            workflow.errors.append(
                workflow.doc.error(
                    f"unknown orchestration '{target}'",
                    (*rule.path, "do", index, "orchestrate"),
                    code="unknown_orchestration",
                    hint=hint,
                    cls=CompileError,
                )
            )


def _check_dag(workflow: Workflow, name: str, steps: Mapping[str, Any]) -> None:
    """Unknown ``after`` names are reported with a guess; each cycle once, at the ``after`` that closes it."""
    graph: Any = nx.DiGraph()
    graph.add_nodes_from(steps)
    for step, body in steps.items():
        if not isinstance(body, Mapping):
            continue
        after = body.get("after")
        for index, dependency in enumerate(_after(after)):
            where: tuple[str | int, ...] = (SECTION, name, "steps", step, "after")
            if isinstance(after, list):
                where = (*where, index)
            if dependency not in steps:
                guess = did_you_mean(dependency, steps)
                workflow.errors.append(
                    workflow.doc.error(
                        f"unknown step '{dependency}' in orchestration '{name}'",
                        where,
                        code="unknown_step",
                        hint=f"did you mean '{guess}'?" if guess else f"steps: {', '.join(steps)}",
                        cls=CompileError,
                    )
                )
                continue
            graph.add_edge(dependency, step, path=where)
    while True:
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return
        names = [str(u) for u, _ in cycle]
        last_u, last_v = cycle[-1][0], cycle[-1][1]
        workflow.errors.append(
            workflow.doc.error(
                f"steps of orchestration '{name}' form a cycle: {' -> '.join([*names, names[0]])}",
                graph.edges[last_u, last_v]["path"],
                code="cycle",
                hint="a step cannot (directly or through others) come after itself",
                cls=CompileError,
            )
        )
        graph.remove_edge(last_u, last_v)


# ----------------------------------------------------------------------------------------------- type checks
def static_types(text: str) -> set[str] | None:
    """The device types a ``targets`` expression can select, when the expression pins them; None otherwise.

    Pinned means: ``type == 'valve'`` (either side), ``type in ['valve', 'pump']``, an ``and`` with at least one
    pinned operand (the intersection of those), or an ``or`` whose operands are all pinned (the union). Anything
    else (``id == 'x'``, ``site == event.site``, ``not ...``) leaves the types open: then the capability check
    happens at dispatch, per device.
    """
    try:
        tree = parse_expr(text)
    except Exception:  # noqa: BLE001 - the type check reports the syntax error
        return None
    return _pinned(tree)


def _is_type(node: n.Node) -> bool:
    return isinstance(node, n.Field) and node.path == ("type",)


def _string(node: n.Node) -> str | None:
    return node.value if isinstance(node, n.Literal) and isinstance(node.value, str) else None


def _pinned(node: n.Node) -> set[str] | None:
    if isinstance(node, n.Compare) and node.op == "==":
        if _is_type(node.left) and _string(node.right) is not None:
            return {str(_string(node.right))}
        if _is_type(node.right) and _string(node.left) is not None:
            return {str(_string(node.left))}
        return None
    if isinstance(node, n.In) and not node.negate and _is_type(node.item) and isinstance(node.container, n.ListLit):
        values = [_string(item) for item in node.container.items]
        return {v for v in values if v is not None} if all(v is not None for v in values) else None
    if isinstance(node, n.BoolOp):
        parts = [_pinned(operand) for operand in node.operands]
        known = [p for p in parts if p is not None]
        if node.op == "and":
            return set.intersection(*known) if known else None
        return set.union(*known) if len(known) == len(parts) else None
    return None


def _event_fields(workflow: Workflow, node: Node) -> dict[str, str]:
    """What ``event.x`` can read: the fields of the events every triggering rule fires on."""
    merged: dict[str, str] = {}
    for pred in sorted(workflow.graph.predecessors(node.id)):
        merged.update(workflow.node(pred).config.get("input_fields") or {})
    return merged


def _commands(workflow: Workflow) -> list[str]:
    return sorted({c for t in workflow.device_types.values() for c in _mapping(t.get("commands"))})


def _declared_params(workflow: Workflow, command: str) -> dict[str, str] | None:
    found: dict[str, str] | None = None
    for spec in workflow.device_types.values():
        entry = _mapping(spec.get("commands")).get(command)
        if isinstance(entry, Mapping) and isinstance(entry.get("params"), Mapping):
            found = {**(found or {}), **{str(k): str(v) for k, v in entry["params"].items()}}
    return found


def _error(workflow: Workflow, message: str, path: tuple[str | int, ...], code: str, hint: str | None = None, key: bool = False) -> None:
    workflow.errors.append(workflow.doc.error(message, path, code=code, hint=hint, key=key, cls=CompileError))


def _check_command(workflow: Workflow, command: str, path: tuple[str | int, ...], pinned: set[str] | None) -> bool:
    """The command exists; every statically targeted type supports it. True when it can be checked further."""
    known = _commands(workflow)
    if command not in known:
        guess = did_you_mean(command, known)
        _error(workflow, f"unknown command '{command}'", path, "unknown_command", f"did you mean '{guess}'?" if guess else f"known: {', '.join(known) or 'none'}")
        return False
    for kind in sorted(pinned or ()):
        spec = workflow.device_types.get(kind)
        if spec is not None and command not in _mapping(spec.get("commands")):
            offered = sorted(_mapping(spec.get("commands")))
            _error(
                workflow,
                f"device type '{kind}' does not support command '{command}' (the targets select only {', '.join(sorted(pinned or ()))})",
                path,
                "unsupported_command",
                f"'{kind}' offers: {', '.join(offered) or 'no commands'}",
            )
    return True


def _check_params(workflow: Workflow, command: str, params: Mapping[str, Any], path: tuple[str | int, ...], scope: Scope) -> None:
    declared = _declared_params(workflow, command)
    for key, text in params.items():
        result = check_expression(workflow, text, (*path, key), scope)
        if declared is None:
            continue
        if key not in declared:
            guess = did_you_mean(str(key), declared)
            hint = f"did you mean '{guess}'?" if guess else f"parameters: {', '.join(sorted(declared)) or 'none'}"
            _error(workflow, f"command '{command}' has no parameter '{key}'", (*path, key), "unknown_param", hint, key=True)
        elif result is not None and not is_assignable(result, type_from_name(declared[key])):
            _error(workflow, f"parameter '{key}' of '{command}' is {declared[key]}, got {type_name(result)}", (*path, key), "type")


def _reported_fields(workflow: Workflow) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in workflow.device_types.values():
        for key, kind in _mapping(spec.get("telemetry")).items():
            out.setdefault(str(key), str(kind))
    return dict(sorted(out.items()))


def check(workflow: Workflow, node: Node, input_fields: dict[str, str], attributes: dict[str, str]) -> None:
    """Type-check an orchestration's expressions, commands, parameters and key template; set its fields."""
    raw = _mapping(_mapping(_mapping(workflow.doc.data).get(SECTION)).get(node.name))
    events = _event_fields(workflow, node)
    node.config["event_fields"] = events
    reported = _reported_fields(workflow)
    node.config["reported_fields"] = reported
    targets_scope = target_scope(events, attributes)
    params_scope = stream_scope(events, attributes)
    verify_scope = Scope(
        fields={k: type_from_name(v) for k, v in reported.items()},
        namespaces={
            "device": Namespace("device", {k: type_from_name(v) for k, v in attributes.items()}),
            "event": Namespace("event", {k: type_from_name(v) for k, v in events.items()}),
        },
        allow_unknown=True,
    )
    for step in node.config["steps"]:
        base: tuple[str | int, ...] = (*node.path, "steps", step["name"])
        body = _mapping(_mapping(raw.get("steps")).get(step["name"]))
        pinned = static_types(step["targets"]) if step["targets"] else None
        if step["targets"]:
            check_expression(workflow, step["targets"], (*base, "targets"), targets_scope, BOOLEAN)
        if _check_command(workflow, step["command"], (*base, "command"), pinned):
            _check_params(workflow, step["command"], _mapping(body.get("params")), (*base, "params"), params_scope)
        if step["verify"]:
            check_expression(workflow, step["verify"], (*base, "verify"), verify_scope, BOOLEAN)
        undo = step.get("undo")
        if undo is not None and _check_command(workflow, undo["command"], (*base, "undo", "command"), pinned):
            _check_params(workflow, undo["command"], _mapping(_mapping(body.get("undo")).get("params")), (*base, "undo", "params"), params_scope)
        quorum = _mapping(step.get("barrier")).get("quorum") or {}
        if quorum.get("percent", 0) > 100:
            _error(workflow, f"a quorum of {quorum['percent']:g}% is more than all targets", (*base, "barrier", "quorum"), "range")
    abort = node.config.get("abort")
    if abort is not None and abort["failure_rate"] > 1:
        _error(workflow, "a failure rate above 100% can never be exceeded", (*node.path, "abort", "failure_rate"), "range")
    template = node.config.get("idempotency")
    if template is not None:
        _check_template(workflow, template, (*node.path, "idempotency"), events)
    node.fields = {**events, **RESULT_FIELDS}


def _check_template(workflow: Workflow, template: str, path: tuple[str | int, ...], events: Mapping[str, str]) -> None:
    allowed = [*KEY_NAMES, *(f"event.{f}" for f in events)]
    for name in template_names(template):
        if name in allowed:
            continue
        guess = did_you_mean(name, allowed)
        _error(
            workflow,
            f"unknown placeholder '{{{name}}}' in the idempotency key",
            path,
            "unknown_placeholder",
            f"did you mean '{{{guess}}}'?" if guess else f"use {', '.join('{' + a + '}' for a in KEY_NAMES)} or {{event.<field>}}",
        )


CAPABILITY = Capability(
    name="orchestration",
    sections=(SECTION,),
    build=build,
    checks={"orchestration": check},
    operators={"orchestration": build_orchestration},
)
