"""The patterns capability: the ``patterns:`` section in, pattern nodes, their type checks and operators out.

Each pattern becomes one ``pattern`` node reading its ``stream``; its matches are a stream of their own (rules say
``when: <pattern>``). Structural mistakes (an absent step first, a bad ``times`` range, an absence at the end
without a duration, ...) are reported at their YAML position while building; expressions are type-checked with
the stream's fields plus one namespace per earlier step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import CompileError, ExprError, did_you_mean
from ..ir import Node, Workflow
from ..passes.check_types import stream_scope
from ..runtime.clock import parse_duration
from ..runtime.pattern_conditions import check_condition
from ..runtime.patterns import build_pattern
from . import Capability

__all__ = ["CAPABILITY", "build", "check"]

_AT_LEAST = re.compile(r"^([0-9]+)\+$")
Path = tuple[str | int, ...]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _error(wf: Workflow, message: str, path: Path, code: str, hint: str | None = None, key: bool = False) -> None:
    wf.errors.append(wf.doc.error(message, path, code=code, hint=hint, key=key, cls=CompileError))


def _duration(value: Any) -> float | None:
    try:
        return parse_duration(value) if value is not None else None
    except ValueError:
        return None  # the schema reported it


def build(workflow: Workflow) -> None:
    """Add one ``pattern`` node per entry of ``patterns:``."""
    for name, raw in _mapping(_mapping(workflow.doc.data).get("patterns")).items():
        if isinstance(raw, Mapping):
            _add_pattern(workflow, str(name), raw)


def _add_pattern(wf: Workflow, name: str, raw: Mapping[str, Any]) -> None:
    path: Path = ("patterns", name)
    per = raw.get("per")
    config: dict[str, Any] = {
        "stream": raw.get("stream"),
        "per": [per] if isinstance(per, str) else [str(p) for p in per] if isinstance(per, list) else None,
        "within": _duration(raw.get("within")),
        "after_match": raw.get("after_match", "skip_past_last"),
        "emit_timeouts": bool(raw.get("emit_timeouts", False)),
        "max_partial": raw.get("max_partial", 1000),
        "overflow": raw.get("overflow", "drop_oldest"),
        "steps": [],
        "absent": None,
        "condition": None,
        "for": None,
    }
    sequence, condition = raw.get("sequence"), raw.get("condition")
    if sequence is None and condition is None:
        _error(wf, f"pattern '{name}' needs a 'sequence' (or a 'condition' with 'for')", path, "pattern_shape", key=True)
    elif sequence is not None and condition is not None:
        _error(wf, "a pattern has either a 'sequence' or a 'condition', not both", (*path, "condition"), "pattern_shape", key=True)
    elif condition is not None:
        config["condition"], config["for"] = condition, _duration(raw.get("for"))
        if "for" not in raw:
            _error(wf, "a 'condition' needs 'for' (how long it must hold)", (*path, "condition"), "pattern_shape", key=True)
    else:
        if "for" in raw:
            _error(
                wf, "'for' on a pattern goes with 'condition'", (*path, "for"), "pattern_shape",
                "for an absence after the last step, put 'for' on the absent step", key=True,
            )
        if isinstance(sequence, list):
            _build_steps(wf, config, sequence, path)
    if config["within"] is not None and config["within"] <= 0:
        _error(wf, "'within' must be longer than 0", (*path, "within"), "range")
    placement = raw.get("placement")
    node = Node(
        f"pattern:{name}", "pattern", name, path, config,
        placement if isinstance(placement, str) else "auto", (*path, "placement") if isinstance(placement, str) else None,
    )
    if name in wf.stream_outputs:
        _error(wf, f"pattern '{name}' has the name of a stream", path, "duplicate_name", "patterns and streams share one namespace", key=True)
        return
    wf.add(node)
    wf.stream_outputs[name] = node.id
    if isinstance(raw.get("stream"), str):
        wf.references.append((node.id, raw["stream"], (*path, "stream")))


def _times(wf: Workflow, raw: Mapping[str, Any], path: Path) -> tuple[int, int | None]:
    times = raw.get("times", 1)
    low: int = 1
    high: int | None = 1
    if isinstance(times, bool):
        pass  # the schema reported it
    elif isinstance(times, int) and times >= 1:
        low = high = times
    elif isinstance(times, str) and _AT_LEAST.match(times):
        low, high = int(times[:-1]), None
    elif isinstance(times, Mapping) and isinstance(times.get("min"), int):
        low = times["min"]
        high = times.get("max") if isinstance(times.get("max"), int) else None
        if high is not None and high < low:
            _error(wf, f"bad times: max ({high}) is less than min ({low})", (*path, "times"), "times")
            high = low
    return low, high


def _build_steps(wf: Workflow, config: dict[str, Any], sequence: list[Any], path: Path) -> None:
    steps: list[dict[str, Any]] = config["steps"]
    names: dict[str, int] = {}
    guard: tuple[str, int] | None = None
    for index, raw in enumerate(sequence):
        if not isinstance(raw, Mapping):
            continue
        spath: Path = (*path, "sequence", index)
        if "absent" in raw:
            if "when" in raw:
                _error(wf, "a step has either 'when' or 'absent', not both", (*spath, "absent"), "step_shape", key=True)
                continue
            extra = [k for k in ("times", "optional", "consecutive", "name") if k in raw]
            if extra:
                _error(wf, f"an absent step takes no '{extra[0]}'", (*spath, extra[0]), "step_shape", key=True)
            if not steps:
                _error(wf, "a sequence cannot start with an absent step", spath, "absent_first")
            elif guard is not None:
                _error(wf, "two absent steps in a row", spath, "absent_twice", "merge them with 'or'")
            else:
                guard = (str(raw["absent"]), index)
            continue
        if "when" not in raw:
            _error(wf, "a step needs 'when' (or 'absent')", spath, "step_shape")
            continue
        if "for" in raw:
            _error(
                wf, "'for' belongs to an absent step", (*spath, "for"), "step_shape",
                "for a condition that must hold for a while use a pattern with 'condition' and 'for'", key=True,
            )
        name = str(raw.get("name", f"step{index + 1}"))
        if name in names:
            _error(wf, f"duplicate step name '{name}'", (*spath, "name"), "duplicate_name")
        names[name] = index
        low, high = _times(wf, raw, spath)
        if raw.get("optional"):
            low = 0
        if raw.get("consecutive") and high == 1:
            _error(wf, "'consecutive' needs a repeated step (times)", (*spath, "consecutive"), "step_shape", key=True)
        step = {
            "name": name, "when": raw["when"], "min": low, "max": high, "consecutive": bool(raw.get("consecutive")),
            "contiguity": raw.get("contiguity", "followed_by"), "at": index, "guard": None, "guard_at": None,
        }
        if guard is not None:
            step["guard"], step["guard_at"] = guard
            if low == 0:
                where = (*spath, "optional") if "optional" in raw else (*spath, "times")
                _error(wf, "the step after an absent step cannot be optional", where, "step_shape", key=True)
            guard = None
        steps.append(step)
    if steps and all(step["min"] == 0 for step in steps):
        _error(wf, "every step is optional: a pattern needs at least one required step", (*path, "sequence"), "step_shape")
    if guard is not None:
        text, index = guard
        raw_absent = sequence[index]
        duration = _duration(raw_absent.get("for"))
        if duration is None and config["within"] is None:
            _error(
                wf, "an absent step at the end needs 'for' (or the pattern's 'within')", (*path, "sequence", index),
                "absent_unbounded", "e.g. {absent: \"status == 'ack'\", for: 30s}",
            )
        config["absent"] = {"when": text, "for": duration, "at": index}
    for step in steps:
        index = step["guard_at"]
        if index is not None and "for" in sequence[index]:
            _error(
                wf, "'for' is only for an absent step at the end", (*path, "sequence", index, "for"), "step_shape",
                key=True,
            )


def _expr_error(wf: Workflow, exc: ExprError, path: Path) -> None:
    span = wf.doc.expr_span(path, exc.offset, exc.end_offset)
    wf.errors.append(
        ExprError(
            exc.message, span=span, path=path, code=exc.code, hint=exc.hint, source_line=wf.doc.line_text(span.line),
            offset=exc.offset, end_offset=exc.end_offset,
        )
    )


def check(wf: Workflow, node: Node, inputs: dict[str, str], attributes: dict[str, str]) -> None:
    """Type-check the pattern's expressions and key; set the fields of the match events it emits."""
    config, path = node.config, node.path
    if not inputs:
        return  # the stream is unknown: the names pass reported it
    base = stream_scope(inputs, attributes)
    per = config.get("per") or []
    for index, field in enumerate(per):
        if field not in inputs:
            guess = did_you_mean(field, inputs)
            listed = isinstance(_mapping(_mapping(_mapping(wf.doc.data).get("patterns")).get(node.name)).get("per"), list)
            where: Path = (*path, "per", index) if listed else (*path, "per")
            _error(wf, f"unknown key field '{field}'", where, "unknown_field", f"did you mean '{guess}'?" if guess else None)
    names = [step["name"] for step in config["steps"]]

    def checked(text: str, earlier: list[str], where: Path) -> None:
        try:
            check_condition(text, earlier, [n for n in names if n not in earlier], inputs, base)
        except ExprError as exc:
            _expr_error(wf, exc, where)

    seq: Path = (*path, "sequence")
    for index, step in enumerate(config["steps"]):
        checked(step["when"], names[:index], (*seq, step["at"], "when"))
        if step["guard"] is not None:
            checked(step["guard"], names[:index], (*seq, step["guard_at"], "absent"))
        if step["contiguity"] not in ("next", "followed_by", "followed_by_any"):
            step["contiguity"] = "followed_by"  # the schema reported it
    if config["absent"] is not None:
        checked(config["absent"]["when"], names, (*seq, config["absent"]["at"], "absent"))
    if config["condition"] is not None:
        checked(config["condition"], [], (*path, "condition"))
    fields = dict(inputs)
    fields.update({"match_start": "number", "match_end": "number"})
    for step in config["steps"]:
        if (step["min"], step["max"]) != (1, 1):
            fields[f"{step['name']}_count"] = "integer"
    node.fields = fields


CAPABILITY = Capability(
    name="patterns", sections=("patterns",), build=build, checks={"pattern": check}, operators={"pattern": build_pattern}
)
