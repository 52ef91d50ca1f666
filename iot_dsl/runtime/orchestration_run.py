"""One orchestration run: a trigger event and the compiled steps in, commands, results and a report out.

A :class:`Run` walks the step DAG: a step starts once every step it comes ``after`` is satisfied (its barrier is
met, or, without a barrier, all its commands have finished). A started step resolves its targets against the
registry, orders them for the rollout and releases them wave by wave; the run keeps at most ``concurrency``
commands in flight. Each outcome goes through the command state machine; retries (declared outcomes only,
backoff with jitter), verification and expiry are applied here. Abort criteria and a failed barrier stop the run:
nothing more is sent, queued commands are cancelled, commands in flight are waited for, and with
``on_failure: compensate`` the completed steps are undone in reverse order. Everything that happens becomes a
record (``command``, ``command_result``, ``orchestration``); :meth:`Run.report` summarises the run.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..devices import Device
from ..devices.population import stable_hash
from ..errors import ExprError
from .orchestration_dispatch import Dispatcher
from .orchestration_rollout import RolloutPlan, plan_rollout, rollout_order
from .orchestration_spec import FAILURE_OUTCOMES, KeyTemplate, OrchestrationSpec, StepSpec, share_count
from .orchestration_state import (
    ACKNOWLEDGED,
    CANCELLED,
    COMPENSATED,
    EXPIRED,
    FAILED,
    PENDING,
    REJECTED,
    SENT,
    STATES,
    SUCCEEDED,
    TIMED_OUT,
    Command,
)
from .orchestration_timers import DeadlineQueue
from .clock import format_time
from .records import Record

__all__ = ["Run", "RunHost", "CompiledStep", "StepRun", "RUN_STATUSES"]

#: What a run can end as: every step finished, a barrier failed, or the abort criteria tripped.
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed", "aborted")

Evaluator = Callable[[Any], Any]


@dataclass(frozen=True)
class CompiledStep:
    """A step's spec with its expressions compiled: ``targets(row)``, ``params`` and ``verify(row)``."""

    spec: StepSpec
    targets: Evaluator | None = None
    params: tuple[tuple[str, Evaluator], ...] = ()
    verify: Evaluator | None = None
    undo_params: tuple[tuple[str, Evaluator], ...] = ()


@dataclass
class RunHost:
    """What a run uses from the operator that owns it: identity, ports, registry and where records go."""

    name: str
    segment: str
    spec: OrchestrationSpec
    steps: Mapping[str, CompiledStep]
    key_field: str
    dispatcher: Dispatcher
    deadlines: DeadlineQueue
    devices: Callable[[], Iterable[Device]]
    #: ``payload(device, command)`` -> (payload, None) or (None, why the device cannot run it); the payload may be
    #: shared between commands (never modified)
    payload: Callable[[Device, str], tuple[dict[str, Any] | None, str | None]]
    emit: Callable[[Record], None]
    finished: Callable[[Run], None] = lambda run: None
    progress: Callable[[Run], None] = lambda run: None
    seed: int = 0
    key: KeyTemplate = field(init=False)

    def __post_init__(self) -> None:
        self.key = KeyTemplate(self.spec.idempotency)


def _jitter(seed: int, text: str) -> float:
    """A deterministic draw in [-1, 1) for ``text`` (no shared generator, so runs do not disturb each other)."""
    return (stable_hash(f"{seed}/{text}") / 2**64) * 2.0 - 1.0


class _Owner:
    """Base of what owns commands: the retry/verify/timeout policy and the hook for finished commands."""

    run: Run
    name: str
    timeout: float
    #: compiled verification and its text (steps with ``verify`` only)
    verify: Evaluator | None = None
    verify_text: str | None = None

    def outcome(self, command: Command, status: str, reason: str | None, reported: Any, now: float) -> None:
        """A final answer (or timeout) for the command's current attempt."""
        self.run.outcome(self, command, status, reason, reported, now)

    def retry_policy(self) -> Any:
        """The step's :class:`RetrySpec`."""
        raise NotImplementedError

    def finalized(self, command: Command, now: float) -> None:
        """The command reached a terminal state."""
        raise NotImplementedError


class StepRun(_Owner):
    """One step of one run: its targets, waves, commands and counters."""

    def __init__(self, run: Run, compiled: CompiledStep) -> None:
        self.run = run
        self.compiled = compiled
        self.spec = compiled.spec
        self.name = compiled.spec.name
        self.timeout = compiled.spec.timeout
        self.verify = compiled.verify
        self.verify_text = compiled.spec.verify
        self.status = "waiting"  # waiting | running | done | failed | skipped
        self.targets: list[Device] = []
        self.plan = RolloutPlan((0,))
        self.wave = -1
        self.released = 0
        self.commands: list[Command] = []
        self.wave_total: list[int] = []
        self.wave_terminal: list[int] = []
        self.wave_failures: list[int] = []
        self.terminal = 0
        self.succeeded = 0
        self.needed: int | None = None
        self.barrier_met = False
        self.params: dict[str, Any] = {}
        self.started_at: float | None = None
        self.finished_at: float | None = None

    @property
    def satisfied(self) -> bool:
        """Whether dependents may start: barrier met, or (without a barrier) every command finished."""
        return self.barrier_met if self.spec.barrier is not None else self.status == "done"

    def retry_policy(self) -> Any:
        return self.spec.retries

    def finalized(self, command: Command, now: float) -> None:
        self.run.step_command_finished(self, command, now)


class UndoRun(_Owner):
    """The compensation of one step: undo commands for the devices whose command succeeded."""

    def __init__(self, run: Run, step: StepRun) -> None:
        self.run = run
        self.step = step
        self.name = step.name
        undo = step.spec.undo
        assert undo is not None
        self.timeout = undo.timeout
        self.commands: list[Command] = []
        self.terminal = 0

    def retry_policy(self) -> Any:
        return self.step.spec.retries

    def finalized(self, command: Command, now: float) -> None:
        self.run.undo_finished(self, command, now)


class Run:
    """One execution of an orchestration, from its trigger to its report."""

    def __init__(self, host: RunHost, run_id: str, event: Mapping[str, Any] | None, created_at: float) -> None:
        self.host = host
        self.id = run_id
        self.event: Mapping[str, Any] = event or {}
        self.trigger = self.event.get(host.key_field)
        self.created_at = created_at
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.status = "running"
        self.reason: str | None = None
        self.stopping = False
        self.steps = {name: StepRun(self, compiled) for name, compiled in host.steps.items()}
        self.started: list[StepRun] = []
        self.queue: deque[Command] = deque()
        self.in_flight = 0
        self.backing_off: set[Command] = set()
        self.counts: Counter[str] = Counter()
        self.executions = 0
        self.failures = 0
        self.attempts = 0
        self.sequence = 0
        self.to_undo: list[StepRun] = []
        self.undoing: UndoRun | None = None
        self.undone = 0
        self.undo_failures: list[dict[str, Any]] = []
        self.compensation = "none"
        abort = host.spec.abort
        self.failure_outcomes = frozenset(abort.outcomes if abort is not None else FAILURE_OUTCOMES)

    # ---------------------------------------------------------------------------------------------- records
    def _record(self, kind: str, at: float, **fields: Any) -> None:
        record: Record = {"kind": kind, "at": iso_time(at), "node": self.host.name, "run": self.id, "segment": self.host.segment}
        record.update(fields)
        self.host.emit(record)

    def _event(self, at: float, event: str, **fields: Any) -> None:
        self._record("orchestration", at, event=event, **fields)

    # -------------------------------------------------------------------------------------------- lifecycle
    @property
    def active(self) -> bool:
        """True until the run has finished (and compensated, if it had to)."""
        return self.finished_at is None

    def start(self, now: float) -> None:
        """Start every step that depends on no other."""
        self.started_at = now
        self._event(now, "started", trigger=self.trigger, steps=[s.name for s in self.host.spec.steps])
        self._start_ready(now)
        self._maybe_finish(now)

    def _start_step(self, step: StepRun, now: float) -> None:
        step.status = "running"
        step.started_at = now
        self.started.append(step)
        try:
            step.params = {name: fn(self.event) for name, fn in step.compiled.params}
            targets = self._resolve(step)
        except (ExprError, KeyError, TypeError) as exc:
            step.status = "failed"
            self._stop("failed", f"step '{step.name}' cannot start: {_reason(exc)}", now)
            return
        step.targets = rollout_order(targets, f"{self.id}/{step.name}")
        step.plan = plan_rollout(step.spec.rollout, len(step.targets))
        barrier = step.spec.barrier
        self._event(now, "step", step=step.name, targets=len(step.targets), waves=list(step.plan.boundaries))
        if barrier is not None:
            step.needed = share_count(barrier.quorum, len(step.targets))
            if barrier.quorum.count is not None and barrier.quorum.count > len(step.targets):
                step.status = "failed"
                self._stop(
                    "failed",
                    f"barrier of step '{step.name}' needs {barrier.quorum.count} successes but only "
                    f"{len(step.targets)} devices are targeted",
                    now,
                )
                return
            if barrier.timeout is not None:
                self.host.deadlines.schedule(now + barrier.timeout, lambda when: self._barrier_due(step, when))
        self._release(step, now)
        if step.plan.period is not None:
            for index in range(1, len(step.plan.boundaries)):
                self.host.deadlines.schedule(now + index * step.plan.period, lambda when: self._timed_release(step, when))
        self._advance(step, now)

    def _resolve(self, step: StepRun) -> list[Device]:
        targets = step.compiled.targets
        if targets is None:
            return [d for d in self.host.devices() if d.id == self.trigger]
        event = self.event
        chosen = []
        for device in self.host.devices():
            # a fresh row rather than Device.as_attributes(), which would keep a cached dict on every device
            row = {
                "id": device.id, "type": device.type, "site": device.site, "group": device.group,
                "lat": device.lat, "lon": device.lon, "firmware": device.firmware, **device.attrs, "event": event,
            }
            try:
                if targets(row):
                    chosen.append(device)
            except (ExprError, KeyError, TypeError):
                continue  # a device lacking an attribute the expression reads is not a target
        return chosen

    def _timed_release(self, step: StepRun, now: float) -> None:
        if not self.stopping:
            self._release(step, now)
            self._advance(step, now)
            self._maybe_finish(now)

    def _release(self, step: StepRun, now: float) -> None:
        """Release the step's next wave: build its commands (capability check first) and queue them."""
        step.wave += 1
        upto = step.plan.boundaries[step.wave]
        devices = step.targets[step.released : upto]
        step.released = upto
        step.wave_total.append(len(devices))
        step.wave_terminal.append(0)
        step.wave_failures.append(0)
        if len(step.plan.boundaries) > 1:
            self._event(now, "wave", step=step.name, wave=step.wave + 1, devices=len(devices), released=upto)
        expires = step.spec.expires
        expires_at = now + expires if expires is not None else None
        fresh: list[Command] = []
        for device in devices:
            command = self._command(step, device, step.spec.command, step.params, now, expires_at)
            command.wave = step.wave
            step.commands.append(command)
            fresh.append(command)
        if expires_at is not None and fresh:
            self.host.deadlines.schedule(expires_at, lambda when: self._expire(fresh, when))
        for command in fresh:
            if command.state == PENDING:
                self.queue.append(command)
            else:
                self._finalize(command, now)
        self.host.progress(self)
        self._pump(now)

    def _command(
        self,
        owner: _Owner,
        device: Device,
        name: str,
        params: Mapping[str, Any],
        now: float,
        expires_at: float | None,
        undoes: Command | None = None,
    ) -> Command:
        self.sequence += 1
        host = self.host
        if undoes is not None:
            key = f"{undoes.key}/undo"
        else:
            values = {"orchestration": host.name, "run": self.id, "step": owner.name, "device": device.id, "command": name}
            key = host.key.render(values, self.event)
        payload, why = host.payload(device, name)
        command = Command(
            f"{self.id}/{self.sequence}", device, name, {}, key, owner, now, expires_at, undoes=undoes
        )
        if payload is None:
            command.move(REJECTED, now, why)
        else:
            command.payload = {**payload, **params} if params else payload
        return command

    # ------------------------------------------------------------------------------------------- dispatching
    def _pump(self, now: float) -> None:
        """Send queued commands while the concurrency limit allows."""
        limit = self.host.spec.concurrency
        batch: list[Command] = []
        queue = self.queue
        while queue and (limit is None or self.in_flight + len(batch) < limit):
            command = queue.popleft()
            if command.state == PENDING:
                batch.append(command)
        if not batch:
            return
        self.in_flight += len(batch)
        self.attempts += len(batch)
        self.host.dispatcher.send(batch, _timeout_of, now, announce=lambda: self._announce(batch, now))

    def _announce(self, batch: list[Command], now: float) -> None:
        """``command`` records for a batch, written before it is published (answers may come back at once)."""
        record = self._record
        for command in batch:
            fields: dict[str, Any] = {}
            if command.expires_at is not None:
                fields["expires_at"] = command.expires_at
            if command.undoes is not None:
                fields["compensates"] = command.undoes.id
            record(
                "command",
                now,
                command_id=command.id,
                command=command.command,
                device=command.device.id,
                payload=command.payload,
                step=command.owner.name,
                attempt=command.attempt,
                key=command.key,
                trigger=self.trigger,
                **fields,
            )

    def outcome(self, owner: _Owner, command: Command, status: str, reason: str | None, reported: Any, now: float) -> None:
        """Apply a final answer or timeout: verify, retry when declared, else finish the command."""
        self.in_flight -= 1
        if status == TIMED_OUT:
            reason = f"no answer within {owner.timeout:g}s"
        elif status == SUCCEEDED:
            status, reason = self._verified(owner, command, reported, reason)
        policy = owner.retry_policy()
        if not (
            status in policy.on
            and command.attempt <= policy.max
            and (not self.stopping or command.undoes is not None)
            and self._retry(policy, command, status, reason, now)
        ):
            command.move(status, now, reason)
            self._finalize(command, now)
        self.host.dispatcher.defer(id(self), lambda: self._settle(now))

    def _settle(self, now: float) -> None:
        """After a batch of outcomes: refill the in-flight window, then see whether the run is over."""
        self._pump(now)
        self._maybe_finish(now)

    def _verified(self, owner: _Owner, command: Command, reported: Any, reason: str | None) -> tuple[str, str | None]:
        verify = owner.verify
        if verify is None:
            return SUCCEEDED, reason
        row = dict(reported) if isinstance(reported, Mapping) else {}
        row["device"] = command.device.as_attributes()
        row["event"] = self.event
        try:
            confirmed = verify(row)
        except (ExprError, KeyError, TypeError) as exc:
            return FAILED, f"cannot verify the reported state: {_reason(exc)}"
        if not confirmed:
            return FAILED, f"reported state does not confirm '{owner.verify_text}'"
        return SUCCEEDED, reason

    def _retry(self, policy: Any, command: Command, status: str, reason: str | None, now: float) -> bool:
        delay = policy.backoff * policy.factor ** (command.attempt - 1)
        if policy.jitter:
            delay *= 1.0 + policy.jitter * _jitter(self.host.seed, command.message_id)
        delay = round(delay, 3)
        if command.expires_at is not None and now + delay >= command.expires_at:
            return False  # the retry could only run after the command expired
        command.move(PENDING, now, reason)
        self.backing_off.add(command)
        self._command_result(command, now, status, final=False, reason=reason, retry_in=delay)
        self.host.deadlines.schedule(now + delay, lambda when: self._requeue(command, when))
        return True

    def _requeue(self, command: Command, now: float) -> None:
        if command not in self.backing_off:
            return  # it expired or was cancelled while backing off
        self.backing_off.discard(command)
        self.queue.appendleft(command)
        self._pump(now)

    def _expire(self, commands: list[Command], now: float) -> None:
        """The commands' expiry time has come: none of those still open may ever run."""
        for command in commands:
            if command.terminal:
                continue
            if command.state in (SENT, ACKNOWLEDGED):
                self.host.dispatcher.forget(command)
                self.in_flight -= 1
                reason = "no final answer before the command expired"
            else:
                self.backing_off.discard(command)
                reason = "not sent before the command expired"
            command.move(EXPIRED, now, reason)
            self._finalize(command, now)
        self._pump(now)
        self._maybe_finish(now)

    # --------------------------------------------------------------------------------------------- outcomes
    def _finalize(self, command: Command, now: float) -> None:
        state = command.state
        if command.undoes is None:
            self.counts[state] += 1
        fields: dict[str, Any] = {}
        if command.reason is not None:
            fields["reason"] = command.reason
        if command.first_sent_at is not None:
            fields["latency"] = round(now - command.first_sent_at, 3)
        if command.undoes is not None:
            fields["compensates"] = command.undoes.id
        self._command_result(command, now, state, final=True, **fields)
        command.owner.finalized(command, now)

    def _command_result(self, command: Command, now: float, status: str, *, final: bool, **fields: Any) -> None:
        """Record a ``command_result`` for ``command`` (its step and attempt included)."""
        self._record(
            "command_result",
            now,
            command_id=command.id,
            command=command.command,
            device=command.device.id,
            status=status,
            step=command.owner.name,
            attempt=command.attempt,
            final=final,
            **fields,
        )

    def step_command_finished(self, step: StepRun, command: Command, now: float) -> None:
        """Count a step's finished command: abort criteria, barrier, waves and dependents."""
        state = command.state
        wave = command.wave
        step.terminal += 1
        step.wave_terminal[wave] += 1
        if state == SUCCEEDED:
            step.succeeded += 1
        if state != CANCELLED:
            self.executions += 1
            if state in self.failure_outcomes:
                self.failures += 1
                step.wave_failures[wave] += 1
        if not self.stopping:
            self._check_abort(step, wave, now)
            self._advance(step, now)

    def _check_abort(self, step: StepRun, wave: int, now: float) -> None:
        abort = self.host.spec.abort
        if abort is None:
            return
        checks = []
        if "overall" in abort.scope:
            checks.append(("overall", self.failures, self.executions))
        if "wave" in abort.scope:
            checks.append((f"wave {wave + 1} of step '{step.name}'", step.wave_failures[wave], step.wave_terminal[wave]))
        for where, failures, executions in checks:
            if executions >= abort.min_executions and failures > abort.failure_rate * executions:
                self._stop(
                    "aborted",
                    f"failure rate {failures}/{executions} ({100.0 * failures / executions:.1f}%) in {where} "
                    f"exceeds {100.0 * abort.failure_rate:g}%",
                    now,
                )
                return

    def _advance(self, step: StepRun, now: float) -> None:
        """After a change in ``step``: check its barrier, release its next wave, finish it, start dependents."""
        if self.stopping or step.status != "running":
            return
        total = len(step.targets)
        if step.needed is not None and not step.barrier_met:
            if step.succeeded >= step.needed:
                step.barrier_met = True
                self._event(now, "barrier", step=step.name, succeeded=step.succeeded, needed=step.needed)
                self._start_ready(now)
                if self.stopping:
                    return
            elif total - (step.terminal - step.succeeded) < step.needed:
                step.status = "failed"
                self._stop(
                    "failed",
                    f"barrier of step '{step.name}' cannot be met: {step.succeeded} of {total} succeeded, "
                    f"{total - step.terminal} still open, {step.needed} needed",
                    now,
                )
                return
        if (
            step.plan.period is None
            and step.released < total
            and step.wave_terminal[step.wave] == step.wave_total[step.wave]
        ):
            self._release(step, now)
            return  # _release ends in _pump; the next finished command comes back here
        if step.released == total and step.terminal == total:
            step.status = "done"
            step.finished_at = now
            self._event(now, "step_done", step=step.name, succeeded=step.succeeded, targets=total)
            self.host.progress(self)
            self._start_ready(now)

    def _start_ready(self, now: float) -> None:
        for step in list(self.steps.values()):
            if self.stopping:
                return
            if step.status == "waiting" and all(self.steps[name].satisfied for name in step.spec.after):
                self._start_step(step, now)

    def _barrier_due(self, step: StepRun, now: float) -> None:
        if self.stopping or step.barrier_met or step.status != "running":
            return
        step.status = "failed"
        barrier = step.spec.barrier
        assert barrier is not None and barrier.timeout is not None
        self._stop(
            "failed",
            f"barrier of step '{step.name}' not met within {barrier.timeout:g}s: {step.succeeded} of "
            f"{len(step.targets)} succeeded, {step.needed} needed",
            now,
        )
        self._maybe_finish(now)

    # ------------------------------------------------------------------------------------- stop, compensate
    def _stop(self, status: str, reason: str, now: float) -> None:
        """Stop sending: cancel what is queued or backing off, skip steps not started; in-flight commands finish.

        Called at most once per run: every caller runs only while the run is not stopping.
        """
        self.stopping = True
        self.status = status
        self.reason = reason
        self._event(now, status, reason=reason)
        cancelled = [c for c in self.queue if c.state == PENDING] + sorted(self.backing_off, key=lambda c: c.id)
        self.queue.clear()
        self.backing_off.clear()
        for command in cancelled:
            command.move(CANCELLED, now, f"run {status}: not sent")
            self._finalize(command, now)
        for step in self.steps.values():
            if step.status == "waiting":
                step.status = "skipped"

    def _maybe_finish(self, now: float) -> None:
        # (nothing is ever left queued with nothing in flight: every queue change ends in _pump)
        if not self.active or self.in_flight or self.backing_off or self.undoing is not None:
            return
        if not self.stopping:
            if all(step.status == "done" for step in self.steps.values()):
                self._finish("completed", now)
            return
        for step in self.started:
            if step.status == "running":
                step.status = "stopped"
        if self.host.spec.on_failure == "compensate" and self.compensation == "none":
            self.compensation = "running"
            self.to_undo = [
                s for s in reversed(self.started) if s.spec.undo is not None and any(c.state == SUCCEEDED for c in s.commands)
            ]
            self._event(now, "compensating", steps=[s.name for s in self.to_undo])
            self._undo_next(now)
            return
        self._finish(self.status, now)

    def _undo_next(self, now: float) -> None:
        if self.to_undo:
            step = self.to_undo.pop(0)
            undo = step.spec.undo
            assert undo is not None
            owner = UndoRun(self, step)
            params = {name: fn(self.event) for name, fn in step.compiled.undo_params}
            for original in step.commands:
                if original.state == SUCCEEDED:
                    command = self._command(owner, original.device, undo.command, params, now, None, undoes=original)
                    owner.commands.append(command)
            self.undoing = owner
            for command in owner.commands:
                if command.state == PENDING:
                    self.queue.append(command)
                else:
                    self._finalize(command, now)
            self._pump(now)
            return
        self.compensation = "partial" if self.undo_failures else "done"
        self._finish(self.status, now)

    def undo_finished(self, owner: UndoRun, command: Command, now: float) -> None:
        """Count a finished undo command; move on to the previous step when this step is undone."""
        owner.terminal += 1
        original = command.undoes
        assert original is not None
        if command.state == SUCCEEDED:
            original.move(COMPENSATED, now)
            original.undone_by = command
            self.undone += 1
            self.counts[SUCCEEDED] -= 1
            self.counts[COMPENSATED] += 1
            self._command_result(original, now, COMPENSATED, final=True, compensated_by=command.id)
        else:
            self.undo_failures.append(_failure(owner.name, command))
        if owner.terminal == len(owner.commands):
            self.undoing = None
            self._undo_next(now)

    def _finish(self, status: str, now: float) -> None:
        self.status = status
        self.finished_at = now
        self._event(now, "finished", status=status, reason=self.reason, report=self.report())
        self.host.progress(self)
        self.host.finished(self)

    # ------------------------------------------------------------------------------------------------ report
    def progress(self) -> dict[str, Any]:
        """A small snapshot for progress displays: released and finished commands, counts by state."""
        targets = sum(len(s.targets) for s in self.steps.values())
        released = sum(s.released for s in self.steps.values())
        finished = sum(s.terminal for s in self.steps.values())
        return {
            "orchestration": self.host.name,
            "run": self.id,
            "status": self.status,
            "targets": targets,
            "released": released,
            "finished": finished,
            "states": {state: n for state, n in sorted(self.counts.items()) if n},
        }

    def report(self) -> dict[str, Any]:
        """The run's report: status, counts per terminal state, per-step figures, failed devices, durations."""
        steps = {}
        failures = []
        latencies = []
        for step in self.steps.values():
            states: Counter[str] = Counter(c.state for c in step.commands)
            steps[step.name] = {
                "status": step.status,
                "targets": len(step.targets),
                "released": step.released,
                "states": {state: states[state] for state in STATES if states[state]},
            }
            for command in step.commands:
                if command.state in FAILURE_OUTCOMES:
                    failures.append(_failure(step.name, command))
                if command.first_sent_at is not None and command.finished_at is not None:
                    latencies.append(command.finished_at - command.first_sent_at)
        not_reached = sum(len(s.targets) - s.released for s in self.steps.values())
        duration = (self.finished_at - self.started_at) if self.finished_at is not None and self.started_at is not None else None
        return {
            "orchestration": self.host.name,
            "run": self.id,
            "segment": self.host.segment,
            "status": self.status,
            "reason": self.reason,
            "trigger": self.trigger,
            "started_at": format_time(self.started_at) if self.started_at is not None else None,
            "finished_at": format_time(self.finished_at) if self.finished_at is not None else None,
            "duration_s": round(duration, 3) if duration is not None else None,
            "commands": sum(len(s.commands) for s in self.steps.values()),
            "attempts": self.attempts,
            "not_reached": not_reached,
            "states": {state: self.counts[state] for state in STATES if self.counts[state]},
            "steps": steps,
            "failures": sorted(failures, key=lambda f: (f["step"], f["device"])),
            "compensation": {
                "status": self.compensation,
                "undone": self.undone,
                "failures": sorted(self.undo_failures, key=lambda f: (f["step"], f["device"])),
            },
            "latency_s": latency_summary(latencies),
        }


_SECONDS: dict[int, str] = {}


def iso_time(t: float) -> str:
    """:func:`~iot_dsl.runtime.clock.format_time`, with the date and time of each whole second cached (records are
    stamped by the thousand within the same few seconds)."""
    millis = round(t * 1000)
    whole, ms = divmod(millis, 1000)
    prefix = _SECONDS.get(whole)
    if prefix is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        prefix = _SECONDS[whole] = format_time(float(whole))[:-5]
    return f"{prefix}.{ms:03d}Z"


def _timeout_of(command: Command) -> float:
    return command.owner.timeout  # type: ignore[no-any-return]


def _failure(step: str, command: Command) -> dict[str, Any]:
    return {
        "device": command.device.id,
        "step": step,
        "command": command.command,
        "status": command.state,
        "reason": command.reason,
    }


def latency_summary(values: list[float]) -> dict[str, float] | None:
    """min / p50 / p95 / max of command durations (seconds, nearest rank), or None without any."""
    if not values:
        return None
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))], 3)

    return {"min": round(ordered[0], 3), "p50": rank(0.5), "p95": rank(0.95), "max": round(ordered[-1], 3)}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ExprError):
        return exc.message
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)
