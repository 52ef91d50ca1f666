"""The orchestration operator: trigger events in, orchestration runs out (commands, results, reports).

Each event a rule passes on (``do: [{orchestrate: <name>}]``) starts one :class:`~.orchestration_run.Run` at the
event's time. The operator owns the ports the runs share: a :class:`~.orchestration_timers.DeadlineQueue` on the
injected clock and a :class:`~.orchestration_dispatch.Dispatcher` on the Transport. Records produced between
engine calls (answers and deadlines handled while the clock advances) are buffered and handed to the engine at
its next ``process``/``on_time``/``flush``. When a run finishes, an event (the trigger event plus
``orchestration``, ``run``, ``status``, ``reason``, ``succeeded``, ``failed``) goes downstream, so a rule can
react to ``when: <orchestration>``.

Python API: :meth:`OrchestrationOperator.start` starts a run without a rule, :attr:`OrchestrationOperator.reports`
holds finished runs' reports, :func:`orchestration_operators` finds the operators of an engine and
:func:`follow_progress` subscribes a callback to progress on long rollouts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..devices import Device
from ..expr import Namespace, Scope, compile_expr, parse_expr, type_from_name
from .firmware import select_payload
from .operators import TIME_KEY, BuildContext, Event, Operator
from .orchestration_dispatch import Dispatcher, progress_topic
from .orchestration_run import CompiledStep, Run, RunHost
from .orchestration_spec import parse_spec
from .orchestration_state import SUCCEEDED
from .orchestration_timers import DeadlineQueue
from .records import Record

__all__ = ["OrchestrationOperator", "build_orchestration", "orchestration_operators", "follow_progress"]


class _Now:
    """A clock without timers around a ``now()`` function (deadlines are then polled by ``on_time``)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now


def _types(fields: Mapping[str, str]) -> dict[str, Any]:
    return {k: type_from_name(v) for k, v in fields.items()}


class OrchestrationOperator(Operator):
    """Start a run per trigger event; drive runs by answers and deadlines; emit their records and reports."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, key: str) -> None:
        super().__init__(spec, ctx)
        config = spec["config"]
        self.spec = parse_spec(config)
        self.key = key
        event_fields = dict(config.get("event_fields") or {})
        attributes = _types(ctx.device_attributes)
        events = _types(event_fields)
        attributes_of = ctx.attributes_of
        target_scope = Scope(fields=attributes, namespaces={"event": Namespace("event", events)})
        param_scope = Scope(
            fields=events,
            namespaces={"device": Namespace("device", attributes, getter=lambda row: attributes_of(row[key]))},
        )
        verify_scope = Scope(
            fields=_types(config.get("reported_fields") or {}),
            namespaces={"device": Namespace("device", attributes), "event": Namespace("event", events)},
            allow_unknown=True,
        )

        def compiled(text: str, scope: Scope) -> Callable[[Any], Any]:
            return compile_expr(parse_expr(text), scope)

        steps = {}
        for step in self.spec.steps:
            steps[step.name] = CompiledStep(
                spec=step,
                targets=compiled(step.targets, target_scope) if step.targets else None,
                params=tuple((name, compiled(text, param_scope)) for name, text in step.params),
                verify=compiled(step.verify, verify_scope) if step.verify else None,
                undo_params=tuple((name, compiled(text, param_scope)) for name, text in step.undo.params)
                if step.undo
                else (),
            )
        clock = ctx.clock if ctx.clock is not None else _Now(ctx.now)
        self.deadlines = DeadlineQueue(clock)
        if ctx.transport is None:
            from ..transports import MemoryTransport

            ctx.transport = MemoryTransport()  # a context built without ports (tests): keep the run self-contained
        self.transport = ctx.transport
        self.dispatcher = Dispatcher(self.transport, ctx.workflow, self.deadlines, ctx.now)
        self._payloads: dict[tuple[str, str, str], tuple[dict[str, Any] | None, str | None]] = {}
        self.host = RunHost(
            name=self.name,
            segment=self.segment,
            spec=self.spec,
            steps=steps,
            key_field=key,
            dispatcher=self.dispatcher,
            deadlines=self.deadlines,
            devices=ctx.devices_in_scope,
            payload=self._payload,
            emit=self._emit,
            finished=self._finished,
            progress=self._progress,
        )
        self._progress_topic = progress_topic(ctx.workflow)
        self.runs: dict[str, Run] = {}
        #: reports of finished runs, in the order they finished
        self.reports: list[dict[str, Any]] = []
        self.counter = 0
        self._records: list[Record] = []
        self._events: list[Event] = []

    # ------------------------------------------------------------------------------------------- python API
    def start(self, event: Mapping[str, Any] | None = None, at: float | None = None) -> str:
        """Start a run for ``event`` (None: no trigger) at ``at`` (default now; never before now); return its id."""
        self.counter += 1
        prefix = "" if self.segment == "cloud" else f"{self.segment}/"
        run_id = f"{prefix}{self.name}/{self.counter}"
        now = self.ctx.now()
        when = now if at is None else max(now, at)
        run = Run(self.host, run_id, event, when)
        self.runs[run_id] = run
        self.deadlines.schedule(when, run.start)
        self.deadlines.poll(now)
        return run_id

    def report(self, run_id: str) -> dict[str, Any]:
        """The report of a run, finished or not (KeyError for an unknown run)."""
        if run_id in self.runs:
            return self.runs[run_id].report()
        for report in self.reports:
            if report["run"] == run_id:
                return report
        raise KeyError(run_id)

    # --------------------------------------------------------------------------------------- operator hooks
    def process(self, batch: list[Event], records: list[Record]) -> list[Event]:
        """Start one run per trigger event."""
        for event in batch:
            self.start(event, event.get(TIME_KEY))
        return self._drain(records)

    def on_time(self, now: float, records: list[Record]) -> list[Event]:
        """Fire due deadlines (with a timer clock they already fired) and hand over buffered records."""
        self.deadlines.poll(now)
        return self._drain(records)

    def flush(self, records: list[Record]) -> list[Event]:
        """End of input: report every run still open as ``unfinished`` (nothing is left unexplained)."""
        now = self.ctx.now()
        for run in list(self.runs.values()):
            self._emit(_unfinished(run, now))
        return self._drain(records)

    def snapshot(self) -> Any:
        """The run counter (so run and command ids never repeat after a restart); open runs are not resumed."""
        return {"counter": self.counter} if self.counter else None

    def restore(self, state: Any) -> None:
        """Continue numbering runs after the snapshot's counter."""
        self.counter = int(state["counter"])

    # ------------------------------------------------------------------------------------------- internals
    def _drain(self, records: list[Record]) -> list[Event]:
        records.extend(self._records)
        self._records = []
        events, self._events = self._events, []
        return events

    def _emit(self, record: Record) -> None:
        self._records.append(record)

    def _payload(self, device: Device, command: str) -> tuple[dict[str, Any] | None, str | None]:
        """Capability check at dispatch: the payload variant for the device's firmware, or why it cannot run it.

        Cached per (type, firmware, command); the payload returned is shared and must not be modified.
        """
        cache_key = (device.type, device.firmware, command)
        found = self._payloads.get(cache_key)
        if found is None:
            commands = (self.ctx.device_types.get(device.type) or {}).get("commands") or {}
            if command not in commands:
                found = (None, f"device type '{device.type}' has no command '{command}'")
            else:
                payload = select_payload(commands[command], device.firmware)
                reason = None if payload is not None else f"firmware {device.firmware} does not support '{command}'"
                found = (payload, reason)
            self._payloads[cache_key] = found
        return found  # the payload is shared between commands: the run copies it before adding parameters

    def _finished(self, run: Run) -> None:
        report = run.report()
        self.reports.append(report)
        del self.runs[run.id]
        event: Event = dict(run.event)
        event.update(
            {
                "orchestration": self.name,
                "run": run.id,
                "status": run.status,
                "reason": run.reason,
                "succeeded": report["states"].get(SUCCEEDED, 0),
                "failed": len(report["failures"]),
                TIME_KEY: run.finished_at,
            }
        )
        self._events.append(event)

    def _progress(self, run: Run) -> None:
        self.transport.publish(self._progress_topic, run.progress())


def _unfinished(run: Run, now: float) -> Record:
    from .records import make_record

    return make_record(
        "orchestration", now, run.host.name, run=run.id, segment=run.host.segment, event="unfinished",
        status=run.status, reason=run.reason, report=run.report(),
    )


def build_orchestration(spec: Mapping[str, Any], ctx: BuildContext, key: str) -> OrchestrationOperator:
    """Operator builder registered by the orchestration capability."""
    return OrchestrationOperator(spec, ctx, key)


def orchestration_operators(engine: Any) -> list[OrchestrationOperator]:
    """The orchestration operators an :class:`~iot_dsl.runtime.engine.Engine` runs (every segment)."""
    segments: Iterable[Any] = engine._segments.values()
    return [op for seg in segments for op in seg.operators if isinstance(op, OrchestrationOperator)]


def follow_progress(transport: Any, workflow: str, callback: Callable[[dict[str, Any]], None]) -> Any:
    """Call ``callback(progress)`` on every progress report of ``workflow``'s runs; returns the subscription.

    A progress report is ``{"orchestration", "run", "status", "targets", "released", "finished", "states"}``,
    published when a wave is released, a step finishes and a run finishes.
    """
    return transport.subscribe(progress_topic(workflow), lambda _topic, payload: callback(payload))

