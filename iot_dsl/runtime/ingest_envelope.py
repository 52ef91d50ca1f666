"""Envelope fields: a plan and an operator in, whether its events must carry ``type``/``site``/``group`` out.

The device registry knows every device's type, site and group, and a source operator copies them into the events
it admits (an event's own values win) so that expressions, rules, telemetry and records can read them. Writing
three keys into every event is a large share of ingestion's cost, so a source skips it when the plan shows that
nothing downstream can read them (:func:`envelope_needed`): every operator its events reach, transitively, is a
filter, a derive or a pattern whose expressions and ``per`` keys name none of them, and none of those operators
sends events over a link to another segment. Anything else (a rule, telemetry, an operator kind this module does
not know, a plan it cannot read) keeps the envelope.

The operators fed by such a stream fill the envelope in where an event leaves them other than as an event for the
next operator — dead letters and snapshots — with an :class:`EnvelopeFiller` (:func:`envelope_filler` builds one
only for those operators), so records and snapshots carry the same fields either way.

The event time under ``TIME_KEY`` is skipped the same way (:func:`time_key_needed`) when only pattern operators
read a source's events: they take the times from the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ExprError
from ..expr import parse_expr
from ..expr.nodes import field_paths

__all__ = ["ENVELOPE", "ENVELOPE_ORDER", "EnvelopeFiller", "envelope_filler", "envelope_needed", "time_key_needed"]

#: Envelope fields filled from the device registry when an event does not carry them (in the order they are set).
ENVELOPE_ORDER = ("group", "site", "type")
ENVELOPE = frozenset(ENVELOPE_ORDER)


def _texts(op: Mapping[str, Any]) -> list[Any] | None:
    """The expressions an operator evaluates on its events, or None when its kind may read any field."""
    kind, config = op.get("kind"), op.get("config") or {}
    if kind == "filter":
        return [config.get("where")]
    if kind == "derive":
        return [item[1] for item in config.get("derive") or ()]
    if kind == "pattern":
        texts = [config.get("condition"), (config.get("absent") or {}).get("when")]
        for step in config.get("steps") or ():
            texts += [step.get("when"), step.get("guard")]
        return texts
    return None


def _reads_envelope(op: Mapping[str, Any]) -> bool:
    """Whether an operator may read an envelope field of the events it receives (True when in doubt)."""
    texts = _texts(op)
    if texts is None:
        return True
    names = {str(p) for p in (op.get("config") or {}).get("per") or ()}
    try:
        for text in texts:
            if text:
                names.update(part for path in field_paths(parse_expr(text)) for part in path)
    except ExprError:
        return True
    return not ENVELOPE.isdisjoint(names)


def _operators(plan: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    ops: dict[str, list[Mapping[str, Any]]] = {}
    for segment in plan.get("segments") or ():
        for op in segment.get("operators") or ():
            ops.setdefault(op["id"], []).append(op)
    return ops


def envelope_needed(plan: Mapping[str, Any] | None, source_id: str) -> bool:
    """Whether the events of source ``source_id`` must carry the envelope fields (see the module docstring)."""
    if not isinstance(plan, Mapping):
        return True
    ops = _operators(plan)
    linked = {(link.get("from") or {}).get("node") for link in plan.get("links") or ()}
    todo, seen = [source_id], set()
    while todo:
        op_id = todo.pop()
        if op_id in seen:
            continue
        seen.add(op_id)
        if op_id in linked or op_id not in ops:
            return True
        for op in ops[op_id]:
            if op_id != source_id and _reads_envelope(op):
                return True
            todo.extend(op.get("outputs") or ())
    return False


def time_key_needed(plan: Mapping[str, Any] | None, source_id: str) -> bool:
    """Whether the events of source ``source_id`` must carry their event time under ``TIME_KEY``.

    Not when every operator the source feeds is a pattern (patterns read the times from the
    :class:`~.operators.SourceBatch` and write them into the events they keep) and the source sends nothing
    over a link; anything else, or a plan this function cannot read, needs them.
    """
    if not isinstance(plan, Mapping):
        return True
    ops = _operators(plan)
    linked = {(link.get("from") or {}).get("node") for link in plan.get("links") or ()}
    if source_id in linked or source_id not in ops:
        return True
    outputs = [output for op in ops[source_id] for output in op.get("outputs") or ()]
    return not outputs or any(o not in ops or any(op.get("kind") != "pattern" for op in ops[o]) for o in outputs)


def _source_of(ops: Mapping[str, list[Mapping[str, Any]]], op_id: str) -> str | None:
    """The source operator whose events reach ``op_id`` along first inputs, or None."""
    seen: set[str] = set()
    cursor = op_id
    while cursor in ops and cursor not in seen:
        seen.add(cursor)
        op = ops[cursor][0]
        if op.get("kind") == "source":
            return cursor
        inputs = op.get("inputs") or ()
        if not inputs:
            return None
        cursor = inputs[0]
    return None


class EnvelopeFiller:
    """Give an event the envelope fields it lacks from the device registry, as its source would have."""

    def __init__(self, key: str, attributes_of: Callable[[str], Mapping[str, Any]]) -> None:
        self.key = key
        self.attributes_of = attributes_of

    def __call__(self, event: Any) -> Any:
        """A copy of ``event`` with the missing fields set; ``event`` itself when none is missing or known, or
        when it is not a dict with a string device key."""
        if not isinstance(event, dict):
            return event
        device = event.get(self.key)
        if not isinstance(device, str):
            return event
        attrs = self.attributes_of(device)
        missing = [name for name in ENVELOPE_ORDER if name in attrs and name not in event]
        if not missing:
            return event
        filled = dict(event)
        for name in missing:
            filled[name] = attrs[name]
        return filled


def envelope_filler(
    plan: Mapping[str, Any] | None, op_id: str, key: str, attributes_of: Callable[[str], Mapping[str, Any]]
) -> EnvelopeFiller | None:
    """A filler for operator ``op_id`` when its events come from a source that skips the envelope, else None."""
    if not isinstance(plan, Mapping):
        return None
    source = _source_of(_operators(plan), op_id)
    if source is None or envelope_needed(plan, source):
        return None
    return EnvelopeFiller(key, attributes_of)
