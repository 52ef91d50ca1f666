"""The command state machine: one device's command and the moves it may make, driven by answers and the clock.

A :class:`Command` starts ``pending`` and ends in exactly one terminal state. Every move goes through
:meth:`Command.move`, which refuses a move the table :data:`TRANSITIONS` does not allow (an
:class:`IllegalTransition` with the command, the state and the wanted state), so no code path can, say, turn a
``timed_out`` command into ``succeeded`` when a late answer arrives.

::

    pending --> sent --> acknowledged --> succeeded --> compensated
       |          |            |     \\-> failed | rejected | timed_out | expired
       |          |            \\------> pending (retry after backoff)
       |          \\-> succeeded | failed | rejected | timed_out | expired | pending (retry)
       \\-> expired | rejected (capability check) | cancelled (run stopped before it was sent)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..devices import Device
from ..errors import RuntimeDslError

__all__ = [
    "PENDING",
    "SENT",
    "ACKNOWLEDGED",
    "SUCCEEDED",
    "FAILED",
    "TIMED_OUT",
    "EXPIRED",
    "REJECTED",
    "COMPENSATED",
    "CANCELLED",
    "STATES",
    "TERMINAL",
    "TRANSITIONS",
    "Command",
    "IllegalTransition",
]

PENDING = "pending"
SENT = "sent"
ACKNOWLEDGED = "acknowledged"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
EXPIRED = "expired"
REJECTED = "rejected"
COMPENSATED = "compensated"
CANCELLED = "cancelled"

#: Every state, in the order reports list them.
STATES: tuple[str, ...] = (
    PENDING,
    SENT,
    ACKNOWLEDGED,
    SUCCEEDED,
    FAILED,
    TIMED_OUT,
    EXPIRED,
    REJECTED,
    COMPENSATED,
    CANCELLED,
)

#: States a command ends in (``succeeded`` may still become ``compensated`` when its step is undone).
TERMINAL: frozenset[str] = frozenset({SUCCEEDED, FAILED, TIMED_OUT, EXPIRED, REJECTED, COMPENSATED, CANCELLED})

#: state -> the states it may move to.
TRANSITIONS: Mapping[str, frozenset[str]] = {
    PENDING: frozenset({SENT, EXPIRED, REJECTED, CANCELLED}),
    SENT: frozenset({ACKNOWLEDGED, SUCCEEDED, FAILED, REJECTED, TIMED_OUT, EXPIRED, PENDING}),
    ACKNOWLEDGED: frozenset({SUCCEEDED, FAILED, REJECTED, TIMED_OUT, EXPIRED, PENDING}),
    SUCCEEDED: frozenset({COMPENSATED}),
    FAILED: frozenset(),
    TIMED_OUT: frozenset(),
    EXPIRED: frozenset(),
    REJECTED: frozenset(),
    COMPENSATED: frozenset(),
    CANCELLED: frozenset(),
}


class IllegalTransition(RuntimeDslError):
    """A command was asked to make a move its state machine does not allow."""

    code = "illegal_transition"

    def __init__(self, command_id: str, state: str, wanted: str) -> None:
        super().__init__(f"command {command_id}: cannot move from {state} to {wanted}")
        self.command_id = command_id
        self.state = state
        self.wanted = wanted


class Command:
    """One command to one device within a run: identity, payload, where it stands and when things happened.

    ``attempt`` counts sends (0 before the first); ``message_id`` correlates the current attempt's answer
    (``<id>#<attempt>``). ``owner`` is the step run that decides what an outcome means (retry, verify, barrier).
    """

    __slots__ = (
        "id",
        "device",
        "command",
        "payload",
        "key",
        "owner",
        "state",
        "attempt",
        "created_at",
        "first_sent_at",
        "finished_at",
        "expires_at",
        "reason",
        "undoes",
        "undone_by",
        "wave",
    )

    def __init__(
        self,
        command_id: str,
        device: Device,
        command: str,
        payload: dict[str, Any],
        key: str,
        owner: Any,
        created_at: float,
        expires_at: float | None = None,
        undoes: Command | None = None,
    ) -> None:
        self.id = command_id
        self.device = device
        self.command = command
        self.payload = payload
        self.key = key
        self.owner = owner
        self.state = PENDING
        self.attempt = 0
        self.created_at = created_at
        self.first_sent_at: float | None = None
        self.finished_at: float | None = None
        self.expires_at = expires_at
        self.reason: str | None = None
        #: for a compensating command: the command it undoes
        self.undoes = undoes
        #: for an undone command: the compensating command that undid it
        self.undone_by: Command | None = None
        #: index of the rollout wave that released it
        self.wave = 0

    @property
    def message_id(self) -> str:
        """The id the current attempt travels under (answers are matched on it)."""
        return f"{self.id}#{self.attempt}"

    @property
    def terminal(self) -> bool:
        """True once the command is in a terminal state."""
        return self.state in TERMINAL

    def move(self, to: str, now: float, reason: str | None = None) -> None:
        """Move to state ``to`` at ``now``; raise :class:`IllegalTransition` if the table forbids it."""
        if to not in TRANSITIONS[self.state]:
            raise IllegalTransition(self.id, self.state, to)
        self.state = to
        if to == SENT and self.first_sent_at is None:
            self.first_sent_at = now
        if to in TERMINAL:
            if to != COMPENSATED:
                self.finished_at = now
                self.reason = reason
        elif to == PENDING:
            self.reason = reason

    def __repr__(self) -> str:
        return f"Command({self.id!r}, {self.device.id!r}, {self.command!r}, {self.state})"
