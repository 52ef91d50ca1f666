"""Operators: plan operator entries in, objects that turn an event batch into an output batch plus records.

Every operator is built once from its plan entry (expressions compiled to closures at build time) and then
called with batches. ``process(batch, records)`` returns the events for downstream operators and appends any
records (commands, alerts, dead letters) to ``records``. A bad event never raises: it becomes a dead letter.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from ..devices import Device
from ..errors import ExprError
from ..expr import Namespace, Scope, compile_expr, parse_expr, type_from_name
from .firmware import select_payload
from .records import Record, dead_letter, make_record

__all__ = ["Operator", "BuildContext", "OPERATOR_BUILDERS", "SourceBatch", "build_operator", "stamped", "write_times", "TIME_KEY"]

#: Key under which the engine keeps an event's parsed event time (epoch seconds). Not a valid field name, so it
#: never clashes with payload fields; it is dropped from records.
TIME_KEY = "@t"

Event = dict[str, Any]


class SourceBatch(list[Event]):
    """The events a source operator admitted, with their event times (an array) and device ids as columns.

    ``stamped`` says whether every event also carries its time under :data:`TIME_KEY`. A source leaves that out
    only when each operator its events go to takes the times from here (pattern operators: they write the time
    into the few events they keep); :func:`stamped` writes it into all of them for any other reader.
    """

    __slots__ = ("times", "devices", "stamped")

    def __init__(self, events: list[Event], times: Any, devices: list[Any], stamped: bool) -> None:
        super().__init__(events)
        self.times = times
        self.devices = devices
        self.stamped = stamped


def write_times(events: Iterable[Event], times: Iterable[float]) -> None:
    """Write each event's time under :data:`TIME_KEY`, in place (one C loop: this runs for every event)."""
    deque(map(dict.__setitem__, events, repeat(TIME_KEY), times), maxlen=0)


def stamped(batch: list[Event]) -> list[Event]:
    """``batch`` with every event carrying its time under :data:`TIME_KEY` (written in place when missing)."""
    if type(batch) is SourceBatch and not batch.stamped:
        write_times(batch, batch.times.tolist())
        batch.stamped = True
    return batch


@dataclass
class BuildContext:
    """What operators may use besides their own plan entry: the ports and the device registry."""

    segment: str
    device_attributes: Mapping[str, str]
    device_types: Mapping[str, Any]
    attributes_of: Callable[[str], Mapping[str, Any]]
    devices_in_scope: Callable[[], Iterable[Device]]
    now: Callable[[], float]
    workflow: str = ""
    clock: Any = None
    transport: Any = None
    store: Any = None
    registry: Any = None
    plan: Mapping[str, Any] | None = None
    #: source stream name -> its current watermark (event time up to which the stream is complete). Source
    #: operators advance it after each batch; event-time operators read it in ``on_time``. ``flush`` means +inf.
    watermarks: dict[str, float] = field(default_factory=dict)
    #: operator id -> name of the source stream its events come from
    source_of: Mapping[str, str] = field(default_factory=dict)
    #: threads an operator may use for its passes over large blocks: 1 none but the caller's, None this
    #: machine's CPU count, capped (see :mod:`.row_parts`)
    threads: int | None = None


class Operator:
    """Base class: ``process`` passes the batch through unchanged."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext) -> None:
        self.id: str = spec["id"]
        self.kind: str = spec["kind"]
        self.name: str = spec["name"]
        self.segment = ctx.segment
        self.ctx = ctx

    def process(self, batch: list[Event], records: list[Record]) -> list[Event]:
        """Return the events to pass on; append produced records to ``records``."""
        return batch

    def on_time(self, now: float, records: list[Record]) -> list[Event]:
        """Called after every batch and whenever the engine's clock advances: fire what is due at ``now``."""
        return []

    def flush(self, records: list[Record]) -> list[Event]:
        """End of input (the final watermark): emit everything still held back."""
        return []

    def snapshot(self) -> Any:
        """JSON-serializable state to restore after a restart (None: stateless)."""
        return None

    def restore(self, state: Any) -> None:
        """Take back state produced by :meth:`snapshot`."""

    def _dead(self, event: Any, reason: str, records: list[Record]) -> None:
        at = event.get(TIME_KEY) if isinstance(event, dict) else None
        original = {k: v for k, v in event.items() if k != TIME_KEY} if isinstance(event, dict) else event
        records.append(dead_letter(at if at is not None else self.ctx.now(), self.name, reason, original, self.segment))


def _types(fields: Mapping[str, str]) -> dict[str, Any]:
    return {k: type_from_name(v) for k, v in fields.items()}


def _stream_scope(fields: Mapping[str, str], ctx: BuildContext, key: str) -> Scope:
    attributes_of = ctx.attributes_of
    return Scope(
        fields=_types(fields),
        namespaces={
            "device": Namespace("device", _types(ctx.device_attributes), getter=lambda row: attributes_of(row[key]))
        },
    )


def _compile(text: str, scope: Scope) -> Callable[[Any], Any]:
    return compile_expr(parse_expr(text), scope)


class _EnvelopeAware(Operator):
    """An operator whose events may lack the envelope fields (their source skips them when nothing reads them):
    its dead letters get them back, so they read the same either way (see :mod:`.ingest_envelope`)."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, key: str) -> None:
        super().__init__(spec, ctx)
        from .ingest_envelope import envelope_filler  # ingestion builds on this module

        self.envelope = envelope_filler(ctx.plan, self.id, key, ctx.attributes_of)

    def _dead(self, event: Any, reason: str, records: list[Record]) -> None:
        super()._dead(self.envelope(event) if self.envelope is not None else event, reason, records)


class FilterOperator(_EnvelopeAware):
    """Keep events for which the ``where`` condition holds."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, key: str) -> None:
        super().__init__(spec, ctx, key)
        where = spec["config"].get("where")
        self.predicate = _compile(where, _stream_scope(spec["config"]["input_fields"], ctx, key)) if where else None

    def process(self, batch: list[Event], records: list[Record]) -> list[Event]:
        """Filter the batch; events the condition cannot be evaluated on become dead letters."""
        predicate = self.predicate
        if predicate is None:
            return batch
        try:
            return [e for e in batch if predicate(e)]
        except (ExprError, KeyError, TypeError):
            pass  # fall back to one event at a time to find the bad ones
        out = []
        for event in batch:
            try:
                if predicate(event):
                    out.append(event)
            except (ExprError, KeyError, TypeError) as exc:
                self._dead(event, f"cannot evaluate 'where': {_reason(exc)}", records)
        return out


class DeriveOperator(_EnvelopeAware):
    """Add derived fields, in declaration order (a later field may use an earlier one)."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, key: str) -> None:
        super().__init__(spec, ctx, key)
        fields = dict(spec["config"]["input_fields"])
        self.derivations: list[tuple[str, Callable[[Any], Any]]] = []
        for name, text in spec["config"]["derive"]:
            self.derivations.append((name, _compile(text, _stream_scope(fields, ctx, key))))
            fields[name] = spec["fields"].get(name, "any")

    def process(self, batch: list[Event], records: list[Record]) -> list[Event]:
        """Return copies of the events with the derived fields set."""
        out = []
        for event in batch:
            derived = dict(event)
            try:
                for name, fn in self.derivations:
                    derived[name] = fn(derived)
            except (ExprError, KeyError, TypeError) as exc:
                self._dead(event, f"cannot derive '{name}': {_reason(exc)}", records)
                continue
            out.append(derived)
        return out


_TEMPLATE = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")


def render_template(text: str, event: Mapping[str, Any]) -> str:
    """Replace ``{field}`` with the event's value (unknown names stay as written). Never ``str.format``."""
    return _TEMPLATE.sub(lambda m: str(event[m.group(1)]) if m.group(1) in event else m.group(0), text)


class _TargetRow:
    """A candidate device's attributes with the triggering event under ``event`` (no per-device dict copy)."""

    __slots__ = ("attrs", "event")

    def __init__(self, attrs: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        self.attrs = attrs
        self.event = event

    def __getitem__(self, name: str) -> Any:
        return self.event if name == "event" else self.attrs[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.event if name == "event" else self.attrs.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name == "event" or name in self.attrs


class RuleOperator(Operator):
    """When an event satisfies ``if``, run the actions: command records per target device, or an alert."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, key: str) -> None:
        super().__init__(spec, ctx)
        config = spec["config"]
        fields = config["input_fields"]
        self.key = key
        scope = _stream_scope(fields, ctx, key)
        self.condition = _compile(config["if"], scope) if config.get("if") else None
        target_scope = Scope(
            fields=_types(ctx.device_attributes), namespaces={"event": Namespace("event", _types(fields))}
        )
        self.actions: list[dict[str, Any]] = []
        for action in config["actions"]:
            built: dict[str, Any] = {"spec": action}
            if "command" in action:
                built["targets"] = _compile(action["targets"], target_scope) if action.get("targets") else None
                built["params"] = [(k, _compile(v, scope)) for k, v in (action.get("params") or {}).items()]
                expires = action.get("expires")
                built["expires"] = _seconds(expires) if expires is not None else None
            self.actions.append(built)
        self.counter = 0
        cooldown = config.get("cooldown")
        self.cooldown = _seconds(cooldown) if cooldown is not None else None
        #: device -> event time the rule last fired for it (only with a cooldown)
        self.last_fired: dict[Any, float] = {}

    def process(self, batch: list[Event], records: list[Record]) -> list[Event]:
        """Evaluate the rule on each event; pass the events that fired on (for chaining)."""
        fired = []
        cooldown, last_fired, key = self.cooldown, self.last_fired, self.key
        for event in batch:
            try:
                if self.condition is not None and not self.condition(event):
                    continue
                if cooldown is not None:
                    previous = last_fired.get(event[key])
                    if previous is not None and event[TIME_KEY] - previous < cooldown:
                        continue
                    last_fired[event[key]] = event[TIME_KEY]
                for action in self.actions:
                    self._run(action, event, records)
            except (ExprError, KeyError, TypeError) as exc:
                self._dead(event, f"rule '{self.name}' failed: {_reason(exc)}", records)
                continue
            fired.append(event)
        return fired

    def snapshot(self) -> Any:
        """The command counter (command ids never repeat after a restart) and, with a cooldown, when the rule
        last fired per device."""
        if not self.counter and not self.last_fired:
            return None
        return {"counter": self.counter, "last_fired": [[k, t] for k, t in self.last_fired.items()]}

    def restore(self, state: Any) -> None:
        """Take back :meth:`snapshot`'s state."""
        self.counter = int(state["counter"])
        self.last_fired = {k: float(t) for k, t in state["last_fired"]}

    def _run(self, action: Mapping[str, Any], event: Event, records: list[Record]) -> None:
        spec = action["spec"]
        if "command" not in spec and "alert" not in spec:
            return  # e.g. ``orchestrate``: realized by the graph edge to the orchestration node
        at = event[TIME_KEY]
        device = event.get(self.key)
        if "alert" in spec:
            records.append(
                make_record(
                    "alert",
                    at,
                    self.name,
                    severity=spec.get("severity", "warning"),
                    message=render_template(spec["alert"], event),
                    device=device,
                    segment=self.segment,
                )
            )
            return
        params = {name: fn(event) for name, fn in action["params"]}
        targets = action["targets"]
        if targets is None:
            # without targets a command goes to the device that sent the event (known or not to the registry)
            records.append(self._command(spec, action, self._sender(device, event), params, at, device))
            return
        for target in self.ctx.devices_in_scope():
            if targets(_TargetRow(target.as_attributes(), event)):
                records.append(self._command(spec, action, target, params, at, device))

    def _sender(self, device: Any, event: Event) -> Device:
        """The registry's entry for the sending device, or one described by the event's envelope fields."""
        registry = self.ctx.registry
        known = registry.get(device) if registry is not None else None
        if known is not None:
            return known  # type: ignore[no-any-return]
        return Device(
            id=str(device),
            type=str(event.get("type", "unknown")),
            site=str(event.get("site", "")),
            group=str(event.get("group", event.get("site", ""))),
            lat=0.0,
            lon=0.0,
            firmware=str(event.get("firmware", "0.0.0")),
            attrs={},
        )

    def _command(
        self, spec: Mapping[str, Any], action: Mapping[str, Any], target: Device, params: dict[str, Any], at: float,
        trigger: Any,
    ) -> Record:
        self.counter += 1
        command = spec["command"]
        command_id = f"{self.segment}/{self.name}/{self.counter}"
        type_spec = self.ctx.device_types.get(target.type) or {}
        commands = type_spec.get("commands") or {}
        if command not in commands:
            return make_record(
                "command_result", at, self.name, command_id=command_id, command=command, device=target.id,
                status="rejected", reason=f"device type '{target.type}' has no command '{command}'",
                segment=self.segment,
            )
        payload = select_payload(commands[command], target.firmware)
        if payload is None:
            return make_record(
                "command_result", at, self.name, command_id=command_id, command=command, device=target.id,
                status="rejected", reason=f"firmware {target.firmware} does not support '{command}'",
                segment=self.segment,
            )
        payload.update(params)
        record = make_record(
            "command", at, self.name, command_id=command_id, command=command, device=target.id, payload=payload,
            trigger=trigger, segment=self.segment,
        )
        if action["expires"] is not None:
            record["expires_in"] = action["expires"]
        return record


def _seconds(value: Any) -> float:
    from .clock import parse_duration

    return parse_duration(value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ExprError):
        return exc.message
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)


Builder = Callable[[Mapping[str, Any], BuildContext, str], Operator]


def _build_source(spec: Mapping[str, Any], ctx: BuildContext, key: str) -> Operator:
    # imported here: the ingestion module builds on this one (Operator, BuildContext, TIME_KEY)
    from .ingest import build_source

    return build_source(spec, ctx, key)

#: The closed registry of operator kinds the interpreter can run (capability modules add theirs).
OPERATOR_BUILDERS: dict[str, Builder] = {
    "source": lambda spec, ctx, key: _build_source(spec, ctx, key),
    "filter": FilterOperator,
    "derive": DeriveOperator,
    "rule": RuleOperator,
}


def build_operator(spec: Mapping[str, Any], ctx: BuildContext, key: str) -> Operator:
    """Build the operator for a plan entry; ``key`` is the device-key field of the stream it reads."""
    from ..capabilities import capabilities

    builder = OPERATOR_BUILDERS.get(spec["kind"])
    for capability in capabilities():
        builder = builder or capability.operators.get(spec["kind"])
    if builder is None:
        from ..errors import PlanError

        raise PlanError(f"operator kind '{spec['kind']}' is not supported by this engine", code="unsupported")
    return builder(spec, ctx, key)
