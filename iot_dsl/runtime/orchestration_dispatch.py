"""Command dispatch over the Transport: commands in, published request messages out, answers correlated back.

The :class:`Dispatcher` publishes each batch of commands as one message on the workflow's commands topic and
listens on its results topic. Answers are matched to the attempt they answer by message id
(``<command id>#<attempt>``); an answer for an attempt that is no longer in flight (it timed out, expired or was
already answered) is counted in ``late_answers`` and otherwise ignored. Each attempt has a timeout: when it passes
without a final answer, the command's owner hears ``timed_out``.

Request message: ``{"id", "command_id", "device", "command", "payload", "key", "expires_at", "sent_at"}``.
Answer message: ``{"id", "device", "status", "reason"?, "reported"?}`` with ``status`` one of ``acknowledged``,
``succeeded``, ``failed``, ``rejected``, ``expired``.
"""

from __future__ import annotations

import re
from functools import partial
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .orchestration_state import ACKNOWLEDGED, EXPIRED, FAILED, REJECTED, SENT, SUCCEEDED, TIMED_OUT, Command
from .orchestration_timers import DeadlineQueue

__all__ = ["Dispatcher", "commands_topic", "results_topic", "progress_topic", "ANSWER_STATES"]

#: Final answer statuses a device may send.
ANSWER_STATES: frozenset[str] = frozenset({SUCCEEDED, FAILED, REJECTED, EXPIRED})

#: ``outcome(command, status, reason, reported, now)``: what the command's owner hears.
Outcome = Callable[[Command, str, "str | None", "Mapping[str, Any] | None", float], None]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def commands_topic(workflow: str) -> str:
    """The topic command requests travel on (devices, or their gateway, subscribe to it)."""
    return f"iot-dsl/{_safe(workflow)}/commands"


def results_topic(workflow: str) -> str:
    """The topic devices answer on."""
    return f"iot-dsl/{_safe(workflow)}/command-results"


def progress_topic(workflow: str) -> str:
    """The topic orchestration progress reports are published on (subscribe to follow long rollouts)."""
    return f"iot-dsl/{_safe(workflow)}/orchestration-progress"


class Dispatcher:
    """Send attempts, match answers to them by message id, and time out attempts that get no final answer."""

    def __init__(self, transport: Any, workflow: str, deadlines: DeadlineQueue, now: Callable[[], float]) -> None:
        self.transport = transport
        self.deadlines = deadlines
        self.now = now
        self.topic = commands_topic(workflow)
        #: message id -> the command whose current attempt it is
        self.in_flight: dict[str, Command] = {}
        self.late_answers = 0
        self._depth = 0
        self._deferred: dict[int, Callable[[], None]] = {}
        self.subscription = transport.subscribe(results_topic(workflow), self._on_answers)

    def send(
        self,
        commands: Iterable[Command],
        timeouts: Callable[[Command], float],
        now: float,
        announce: Callable[[], None] | None = None,
    ) -> None:
        """Send one attempt of each command (moving it to ``sent``) as one message; arm each attempt's timeout.

        ``announce()`` runs after the commands are marked sent and before the message is published (a device may
        answer synchronously, and records should say "sent" before "answered").
        """
        messages = []
        by_deadline: dict[float, list[tuple[str, Command]]] = {}
        in_flight = self.in_flight
        for command in commands:
            command.attempt += 1
            command.move(SENT, now)
            message_id = command.message_id
            in_flight[message_id] = command
            by_deadline.setdefault(now + timeouts(command), []).append((message_id, command))
            messages.append(
                {
                    "id": message_id,
                    "command_id": command.id,
                    "device": command.device.id,
                    "command": command.command,
                    "payload": command.payload,
                    "key": command.key,
                    "expires_at": command.expires_at,
                    "sent_at": now,
                }
            )
        if not messages:
            return
        for deadline, batch in by_deadline.items():
            self.deadlines.schedule(deadline, partial(self._time_out, batch))
        if announce is not None:
            announce()
        self.transport.publish(self.topic, messages)

    def forget(self, command: Command) -> None:
        """Stop waiting for the command's current attempt (it ended some other way, e.g. it expired)."""
        self.in_flight.pop(command.message_id, None)

    def defer(self, key: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the batch of outcomes being delivered is done (at once outside a batch); one ``fn`` per
        ``key``, so an owner refilling its queue does it once per batch rather than once per answer."""
        if self._depth:
            self._deferred[key] = fn
        else:
            fn()

    def _settle(self) -> None:
        self._depth -= 1
        while not self._depth and self._deferred:
            work = list(self._deferred.values())
            self._deferred.clear()
            for fn in work:
                fn()

    def _time_out(self, batch: list[tuple[str, Command]], when: float) -> None:
        in_flight = self.in_flight
        self._depth += 1
        for message_id, command in batch:
            if in_flight.get(message_id) is command:
                del in_flight[message_id]
                command.owner.outcome(command, TIMED_OUT, "no answer within the timeout", None, when)
        self._settle()

    def _on_answers(self, _topic: str, answers: Any) -> None:
        now = self.now()
        self.deadlines.poll(now)  # a deadline that passed before this answer arrived wins
        in_flight = self.in_flight
        self._depth += 1
        for answer in answers:
            command = in_flight.get(answer.get("id"))
            if command is None:
                self.late_answers += 1
                continue
            status = answer.get("status")
            if status == ACKNOWLEDGED:
                if command.state == SENT:
                    command.move(ACKNOWLEDGED, now)
                continue
            if status not in ANSWER_STATES:
                status, reason = FAILED, f"unknown answer status {status!r}"
            else:
                reason = answer.get("reason")
            del in_flight[answer["id"]]
            command.owner.outcome(command, status, reason, answer.get("reported"), now)
        self._settle()

    def close(self) -> None:
        """Stop listening for answers."""
        self.subscription.cancel()
