"""Pattern step conditions: expression text in, checked trees and closures that see earlier steps out.

A step's condition reads the current event's fields bare, the last event of each earlier step as a namespace
(``hot.temp``) and aggregates over an earlier step (``avg(hot.temp)``, ``count(hot)``, ``sum``, ``min``, ``max``,
``first``, ``last``). Aggregate calls are rewritten, before type checking, into reads of a hidden ``@agg``
namespace whose values the matcher folds incrementally as a partial match grows; nothing is evaluated from text.
The matcher publishes the partial match's :data:`Context` in a one-slot ``cell`` that the namespace getters read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ExprError
from ..expr import BOOLEAN, INTEGER, NUMBER, Namespace, Scope, Type, compile_expr, parse_expr, type_from_name
from ..expr import nodes as n
from ..expr.check import check_expr

__all__ = [
    "AGGREGATES",
    "AggregateRef",
    "Context",
    "ConditionPlan",
    "NULLS",
    "plan_condition",
    "check_condition",
    "compile_condition",
    "empty_context",
    "extend_context",
]

#: Aggregate functions over the events of an earlier (repeated) step.
AGGREGATES: frozenset[str] = frozenset({"avg", "sum", "min", "max", "count", "first", "last"})
AGG_NAMESPACE = "@agg"
#: A partial match as conditions see it: step name -> its last event, plus ``@agg`` (values) and ``@state``.
Context = dict[str, Any]


class _Nulls(dict[str, Any]):
    """The fields of a step that took no event (an optional step that was skipped): every field is null."""

    def __missing__(self, key: str) -> None:
        return None


NULLS: Mapping[str, Any] = _Nulls()


@dataclass(frozen=True)
class AggregateRef:
    """One aggregate a condition reads: ``fn`` over ``field`` of the events ``step`` took (field None: count)."""

    key: str
    fn: str
    step: str
    field: str | None
    type: Type


@dataclass(frozen=True)
class ConditionPlan:
    """A condition rewritten for the matcher: the tree to check/compile and the aggregates it reads."""

    tree: n.Node
    aggregates: tuple[AggregateRef, ...]
    #: earlier steps the condition refers to (by namespace or aggregate)
    refers: frozenset[str]


def _rewrite(node: n.Node, replace: Callable[[n.Node], n.Node | None]) -> n.Node:
    """Copy ``node`` with every subtree for which ``replace`` returns a node swapped for it."""
    swapped = replace(node)
    if swapped is not None:
        return swapped
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, n.Node):
            changes[f.name] = _rewrite(value, replace)
        elif isinstance(value, tuple) and value and isinstance(value[0], n.Node):
            changes[f.name] = tuple(_rewrite(v, replace) for v in value)
    return dataclasses.replace(node, **changes) if changes else node


def _error(node: n.Node, message: str, code: str = "type", hint: str | None = None) -> ExprError:
    return ExprError(message, code=code, offset=node.start, end_offset=node.end, hint=hint)


def plan_condition(
    text: str, earlier: Sequence[str], later: Sequence[str], fields: Mapping[str, str]
) -> ConditionPlan:
    """Parse ``text`` and rewrite its aggregate calls; raises a positioned :class:`ExprError` on misuse.

    ``earlier`` are the step names the condition may refer to, ``later`` the pattern's other step names (a
    reference to one of them is reported as such), ``fields`` the stream's fields (name -> type name).
    """
    tree = parse_expr(text)
    aggregates: dict[str, AggregateRef] = {}
    refers: set[str] = set()
    for node in n.walk(tree):
        if isinstance(node, n.Field) and node.path[0] in later and node.path[0] not in fields:
            raise _error(
                node, f"step '{node.path[0]}' is not an earlier step", "unknown_field",
                "a condition may refer only to steps before it",
            )
        if isinstance(node, n.Field) and node.path[0] in earlier:
            refers.add(node.path[0])

    def replace(node: n.Node) -> n.Node | None:
        if not isinstance(node, n.Call) or node.name not in AGGREGATES:
            return None
        arg = node.args[0] if len(node.args) == 1 else None
        if not isinstance(arg, n.Field) or arg.path[0] not in earlier or len(arg.path) > 2:
            if node.name in ("min", "max"):
                return None  # the ordinary min()/max() of numbers
            raise _error(
                node, f"{node.name}() takes one earlier step's field, e.g. {node.name}(hot.temp)", "arity",
                f"earlier steps: {', '.join(earlier)}" if earlier else "no step comes before this one",
            )
        step = arg.path[0]
        field = arg.path[1] if len(arg.path) == 2 else None
        if field is None and node.name != "count":
            raise _error(node, f"{node.name}() needs a field of step '{step}', e.g. {node.name}({step}.temp)", "arity")
        if field is not None and field not in fields:
            raise _error(arg, f"unknown field '{field}' of '{step}'", "unknown_field")
        kind = type_from_name(fields[field]) if field is not None else INTEGER
        if node.name in ("avg", "sum") and kind.name not in ("number", "integer", "any"):
            raise _error(node, f"{node.name}() needs a numeric field, '{step}.{field}' is {kind}")
        result = {"count": INTEGER, "avg": NUMBER}.get(node.name, kind)
        key = f"{node.name}:{step}" + (f".{field}" if field else "")
        aggregates[key] = AggregateRef(key, node.name, step, field, result)
        refers.add(step)
        return n.Field((AGG_NAMESPACE, key), start=node.start, end=node.end)

    return ConditionPlan(_rewrite(tree, replace), tuple(aggregates.values()), frozenset(refers))


def _step_getter(cell: list[Context], step: str) -> Callable[[Any], Mapping[str, Any]]:
    """Read the last event ``step`` took in the partial match being evaluated (nulls when it took none)."""

    def get(row: Any) -> Mapping[str, Any]:
        found: Mapping[str, Any] = cell[0].get(step, NULLS)
        return found

    return get


def _scope(
    plan: ConditionPlan,
    earlier: Sequence[str],
    fields: Mapping[str, str],
    base: Scope,
    cell: list[Context],
) -> Scope:
    types = {k: type_from_name(v) for k, v in fields.items()}
    namespaces = dict(base.namespaces)
    for step in earlier:
        namespaces[step] = Namespace(step, types, getter=_step_getter(cell, step))
    if plan.aggregates:
        namespaces[AGG_NAMESPACE] = Namespace(
            AGG_NAMESPACE, {a.key: a.type for a in plan.aggregates}, getter=lambda row: cell[0]["@agg"]
        )
    return Scope(fields=types, namespaces=namespaces)


def check_condition(
    text: str, earlier: Sequence[str], later: Sequence[str], fields: Mapping[str, str], base: Scope
) -> ConditionPlan:
    """Plan and type-check a boolean condition (raises a positioned :class:`ExprError`)."""
    plan = plan_condition(text, earlier, later, fields)
    check_expr(plan.tree, _scope(plan, earlier, fields, base, [{}]), expect=BOOLEAN, text=text)
    return plan


def compile_condition(
    text: str, earlier: Sequence[str], fields: Mapping[str, str], base: Scope, cell: list[Context]
) -> tuple[Callable[[Any], bool], ConditionPlan]:
    """A closure ``event -> bool`` reading earlier steps from ``cell[0]``, and the plan it was built from."""
    plan = plan_condition(text, earlier, (), fields)
    scope = _scope(plan, earlier, fields, base, cell)
    return compile_expr(plan.tree, scope, expect=BOOLEAN, text=text), plan


def empty_context(aggregates: Sequence[AggregateRef]) -> Context:
    """The context before any step took an event: aggregates of empty steps (count 0, sum 0, others null)."""
    return {"@agg": {a.key: _result(a.fn, None) for a in aggregates}, "@state": {}}


def extend_context(ctx: Context, step: str, event: Mapping[str, Any], aggregates: Sequence[AggregateRef]) -> Context:
    """The context after ``step`` took ``event`` (a new dict; ``ctx`` is shared by other partial matches)."""
    new = dict(ctx)
    new[step] = event
    if aggregates:
        state, values = dict(ctx["@state"]), dict(ctx["@agg"])
        for agg in aggregates:
            folded = _fold(agg.fn, state.get(agg.key), event.get(agg.field) if agg.field else None)
            state[agg.key] = folded
            values[agg.key] = _result(agg.fn, folded)
        new["@state"], new["@agg"] = state, values
    return new


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fold(fn: str, state: Any, value: Any) -> Any:
    """One more event into an aggregate's state (non-numbers are skipped by sum/avg/min/max)."""
    if fn == "count":
        return (state or 0) + 1
    if fn == "first":
        return state if state is not None else [value]
    if fn == "last":
        return [value]
    if not _numeric(value):
        return state
    if fn in ("sum", "avg"):
        count, total = state or (0, 0)
        return [count + 1, total + value]
    if state is None:
        return value
    return min(state, value) if fn == "min" else max(state, value)


def _result(fn: str, state: Any) -> Any:
    if fn == "count":
        return state or 0
    if fn == "sum":
        return state[1] if state else 0
    if fn == "avg":
        return state[1] / state[0] if state else None
    if fn in ("first", "last"):
        return state[0] if state else None
    return state

