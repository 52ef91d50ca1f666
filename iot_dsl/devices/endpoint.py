"""Simulated device endpoints: command requests from the Transport in, acknowledgements and answers out.

A :class:`SimulatedEndpoint` plays every device of a :class:`~iot_dsl.devices.simulator.SimulatedFleet` on the
device side of the orchestration protocol (see :mod:`iot_dsl.runtime.orchestration_dispatch`). It answers after
the fleet's latency, on the clock's timers (:meth:`~iot_dsl.runtime.clock.VirtualClock.call_at`), with the
fleet's outcomes (reject, silence, failure rates), holds requests for offline devices until they reconnect,
refuses requests that arrive after their ``expires_at`` (they are never executed), and executes an idempotency
key at most once per device: a duplicate (a second delivery, or a retry of a command whose answer was lost)
gets the first execution's result instead of running again. Everything is deterministic for a fleet seed.

Counters tests read: ``executions[(device, key)]`` (times a command took effect), ``started[(device, key)]``
(times a device began executing it), ``deliveries``, ``duplicates``, ``expired_refused``, ``held_offline``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from ..runtime.orchestration_dispatch import commands_topic, results_topic
from .population import stable_hash
from .simulator import SimulatedFleet

__all__ = ["SimulatedEndpoint"]

Message = dict[str, Any]


def _draw(seed: int, text: str) -> float:
    return stable_hash(f"{seed}/{text}") / 2**64


class SimulatedEndpoint:
    """The devices of ``fleet`` answering command requests on ``transport`` for ``workflow``.

    ``duplicate_rate``: share of requests the network delivers twice (the copy ``duplicate_delay`` seconds later).
    ``reports``: command -> the state fields a device reports after executing it (default: the payload's fields).
    ``stuck_rate``: share of devices that answer ``succeeded`` but whose reported state does not change (what
    ``verify`` exists to catch). ``failing``: devices whose every execution fails (scripted failure injection,
    on top of the fleet's random rates).
    """

    def __init__(
        self,
        fleet: SimulatedFleet,
        transport: Any,
        clock: Any,
        workflow: str,
        *,
        duplicate_rate: float = 0.0,
        duplicate_delay: float = 0.05,
        reports: Mapping[str, Mapping[str, Any]] | None = None,
        stuck_rate: float = 0.0,
        failing: Collection[str] = (),
    ) -> None:
        self.fleet = fleet
        self.transport = transport
        self.clock = clock
        self.duplicate_rate = duplicate_rate
        self.duplicate_delay = duplicate_delay
        self.reports = reports or {}
        self.stuck_rate = stuck_rate
        self.failing = frozenset(failing)
        self.results = results_topic(workflow)
        self.executions: Counter[tuple[str, str]] = Counter()
        self.started: Counter[tuple[str, str]] = Counter()
        self.deliveries = 0
        self.duplicates = 0
        self.expired_refused = 0
        self.held_offline = 0
        #: device -> its reported state
        self.state: dict[str, dict[str, Any]] = {}
        #: (device, key) -> ("running", [message ids waiting]) or ("done", None)
        self._ledger: dict[tuple[str, str], tuple[str, Any]] = {}
        #: answer time -> work due then (answers that fall due in the same millisecond travel as one message)
        self._due: dict[float, list[Any]] = {}
        self.subscription = transport.subscribe(commands_topic(workflow), self._on_requests)

    def close(self) -> None:
        """Stop receiving requests."""
        self.subscription.cancel()

    # ------------------------------------------------------------------------------------------- receiving
    def _on_requests(self, _topic: str, messages: Any) -> None:
        now = self.clock.now()
        out: list[Message] = []
        for message in messages:
            self._receive(message, now, out)
            if self.duplicate_rate and _draw(self.fleet.seed, f"duplicate/{message['id']}") < self.duplicate_rate:
                self.clock.call_at(now + self.duplicate_delay, lambda m=message: self._later(m))
        self._publish(out)

    def _later(self, message: Message) -> None:
        out: list[Message] = []
        self._receive(message, self.clock.now(), out)
        self._publish(out)

    def _receive(self, message: Message, now: float, out: list[Message]) -> None:
        device = message["device"]
        back = self.fleet.online_at(device, now)
        if back > now:
            # held by the broker until the device reconnects
            self.held_offline += 1
            self.clock.call_at(back, lambda: self._later(message))
            return
        self._execute(message, now, out)

    def _execute(self, message: Message, now: float, out: list[Message]) -> None:
        self.deliveries += 1
        expires_at = message.get("expires_at")
        if expires_at is not None and now > expires_at:
            self.expired_refused += 1
            out.append(_answer(message, "expired", "the command expired before it reached the device"))
            return
        outcome = self.fleet.command(message["device"], message["command"], message["payload"], now, message["id"])
        if outcome.status == "rejected":
            assert outcome.at is not None  # a rejection is always answered
            self._at(outcome.at, [_answer(message, "rejected", outcome.reason)])
            return
        silent = outcome.at is None  # this delivery's answers are lost (the device may still execute it)
        key = (message["device"], message["key"])
        entry = self._ledger.get(key)
        if entry is not None:
            self.duplicates += 1
            kind, value = entry
            if silent:
                return
            if kind == "running":
                value.append(message["id"])
                out.append(_answer(message, "acknowledged"))
            else:
                reported = dict(self.state[message["device"]])
                out.append(_answer(message, "succeeded", "already executed (same idempotency key)", reported))
            return
        self.started[key] += 1
        if silent:
            self._done(key, message)
            return
        out.append(_answer(message, "acknowledged"))
        self._ledger[key] = ("running", [message["id"]])
        status, reason = outcome.status, outcome.reason
        assert outcome.at is not None  # not silent (handled above)
        if message["device"] in self.failing:
            status, reason = "failed", "injected failure"
        self._later_at(outcome.at, (key, message, status, reason))

    # ------------------------------------------------------------------------------------------- answering
    def _done(self, key: tuple[str, str], message: Message) -> dict[str, Any]:
        device = message["device"]
        state = self.state.setdefault(device, {})
        if not self.stuck_rate or _draw(self.fleet.seed, f"stuck/{device}") >= self.stuck_rate:
            state.update(self.reports.get(message["command"], message["payload"]))
        self.executions[key] += 1
        self._ledger[key] = ("done", None)
        return dict(state)

    def _later_at(self, when: float, work: Any) -> None:
        """Queue ``work`` (an answer, or an execution to finish) for ``when``; one timer per distinct time."""
        bucket = self._due.get(when)
        if bucket is None:
            bucket = self._due[when] = []
            self.clock.call_at(when, lambda: self._run_due(when))
        bucket.append(work)

    def _run_due(self, when: float) -> None:
        answers: list[Message] = []
        for work in self._due.pop(when):
            if isinstance(work, dict):
                answers.append(work)
            else:
                key, message, status, reason = work
                self._finish(key, message, status, reason, answers)
        self._publish(answers)

    def _finish(self, key: tuple[str, str], message: Message, status: str, reason: str | None, out: list[Message]) -> None:
        _, waiting = self._ledger[key]
        if status == "succeeded":
            reported = self._done(key, message)
            out.extend(_answer({"id": i, "device": message["device"]}, status, None, reported) for i in waiting)
        else:
            del self._ledger[key]  # it did not take effect: a retry may execute it
            out.extend(_answer({"id": i, "device": message["device"]}, status, reason) for i in waiting)

    def _at(self, when: float, answers: list[Message]) -> None:
        for answer in answers:
            self._later_at(when, answer)

    def _publish(self, answers: list[Message]) -> None:
        if answers:
            self.transport.publish(self.results, answers)


def _answer(message: Message, status: str, reason: str | None = None, reported: Any = None) -> Message:
    answer: Message = {"id": message["id"], "device": message["device"], "status": status}
    if reason is not None:
        answer["reason"] = reason
    if reported is not None:
        answer["reported"] = reported
    return answer

