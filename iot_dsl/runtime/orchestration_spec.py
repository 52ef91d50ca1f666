"""Orchestration specs: the normalized ``config`` of an orchestration plan entry in, typed frozen dataclasses out.

The compiler (``iot_dsl.capabilities.orchestration``) writes the config with durations in seconds, percentages as
numbers and every default filled in; :func:`parse_spec` turns it into :class:`OrchestrationSpec` so the runtime
never re-reads YAML. :func:`share_count` and :func:`cumulative_waves` turn shares (a count or a percentage of the
targets) into device counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Share",
    "BarrierSpec",
    "RetrySpec",
    "UndoSpec",
    "RolloutSpec",
    "AbortSpec",
    "StepSpec",
    "OrchestrationSpec",
    "parse_spec",
    "share_count",
    "cumulative_waves",
    "DEFAULT_TIMEOUT",
    "FAILURE_OUTCOMES",
    "KeyTemplate",
    "template_names",
    "KEY_NAMES",
    "DEFAULT_IDEMPOTENCY",
]

#: Seconds one attempt waits for an answer when the step declares no ``timeout``.
DEFAULT_TIMEOUT = 30.0
#: Terminal states that count as failures (for abort criteria and reports).
FAILURE_OUTCOMES: tuple[str, ...] = ("failed", "timed_out", "rejected", "expired")


@dataclass(frozen=True)
class Share:
    """A number of devices: ``count`` devices, or ``percent`` of the targets (rounded up)."""

    count: int | None = None
    percent: float | None = None

    @staticmethod
    def of(raw: Mapping[str, Any]) -> Share:
        """From its config form ``{"count": 12}`` or ``{"percent": 10.0}``."""
        if "count" in raw:
            return Share(count=int(raw["count"]))
        return Share(percent=float(raw["percent"]))


def share_count(share: Share, total: int) -> int:
    """How many of ``total`` devices ``share`` means (a percentage is rounded up; never more than ``total``)."""
    if share.count is not None:
        return min(share.count, total)
    assert share.percent is not None
    # round first so 10% of 1200 is 120, not 121 from 120.00000000000001
    return min(total, math.ceil(round(share.percent * total / 100.0, 9)))


def cumulative_waves(shares: Sequence[Share], total: int) -> list[int]:
    """Wave boundaries (cumulative device counts, strictly increasing, ending at ``total``) for ``total`` targets.

    Shares are cumulative (``[1%, 10%, 100%]``); an empty wave is dropped; devices left after the last share form a
    final wave.
    """
    out: list[int] = []
    for share in shares:
        upto = share_count(share, total)
        if upto > (out[-1] if out else 0):
            out.append(upto)
    if not out or out[-1] < total:
        out.append(total)
    return out


@dataclass(frozen=True)
class BarrierSpec:
    """Dependents wait until ``quorum`` of the step's targets succeeded, within ``timeout`` seconds (None: none)."""

    quorum: Share
    timeout: float | None


@dataclass(frozen=True)
class RetrySpec:
    """Retry an attempt whose outcome is in ``on`` up to ``max`` times, waiting ``backoff * factor**(n-1)`` seconds
    (times ``1 +- jitter``) before retry ``n``."""

    max: int = 0
    backoff: float = 1.0
    factor: float = 2.0
    jitter: float = 0.0
    on: tuple[str, ...] = ("failed", "timed_out")


@dataclass(frozen=True)
class UndoSpec:
    """The compensating command of a step: ``command`` with ``params`` (name, expression), ``timeout`` seconds."""

    command: str
    params: tuple[tuple[str, str], ...]
    timeout: float


@dataclass(frozen=True)
class RolloutSpec:
    """Release targets in cumulative ``waves``, or at a ``rate``: ``start`` per minute, times ``factor`` each
    minute, at most ``max_per_minute``."""

    waves: tuple[Share, ...] = ()
    start: int = 0
    factor: float = 1.0
    max_per_minute: int | None = None

    @property
    def by_rate(self) -> bool:
        """True for a rate-based rollout."""
        return self.start > 0


@dataclass(frozen=True)
class AbortSpec:
    """Abort once more than ``failure_rate`` (a fraction) of at least ``min_executions`` finished commands ended in
    one of ``outcomes``, counted per wave and/or overall (``scope``)."""

    failure_rate: float
    min_executions: int = 1
    scope: tuple[str, ...] = ("overall",)
    outcomes: tuple[str, ...] = FAILURE_OUTCOMES


@dataclass(frozen=True)
class StepSpec:
    """One step: send ``command`` to the devices ``targets`` selects, once the ``after`` steps are satisfied."""

    name: str
    command: str
    targets: str | None
    after: tuple[str, ...]
    params: tuple[tuple[str, str], ...]
    barrier: BarrierSpec | None
    timeout: float
    retries: RetrySpec
    expires: float | None
    undo: UndoSpec | None
    verify: str | None
    rollout: RolloutSpec | None


@dataclass(frozen=True)
class OrchestrationSpec:
    """A whole orchestration: ``steps`` in declaration order plus run-wide policies."""

    name: str
    steps: tuple[StepSpec, ...]
    concurrency: int | None
    abort: AbortSpec | None
    on_failure: str
    idempotency: str

    def step(self, name: str) -> StepSpec:
        """The step called ``name`` (KeyError when there is none)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


def _rollout(raw: Mapping[str, Any] | None) -> RolloutSpec | None:
    if not raw:
        return None
    if "rate" in raw:
        rate = raw["rate"]
        cap = rate.get("max_per_minute")
        return RolloutSpec(start=int(rate["start"]), factor=float(rate.get("factor", 1.0)), max_per_minute=cap)
    return RolloutSpec(waves=tuple(Share.of(w) for w in raw["waves"]))


def _params(raw: Sequence[Sequence[str]] | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in raw or ())


def _step(raw: Mapping[str, Any], rollout: RolloutSpec | None) -> StepSpec:
    barrier = raw.get("barrier")
    retries = raw.get("retries") or {}
    undo = raw.get("undo")
    timeout = float(raw.get("timeout", DEFAULT_TIMEOUT))
    return StepSpec(
        name=str(raw["name"]),
        command=str(raw["command"]),
        targets=raw.get("targets"),
        after=tuple(raw.get("after", ())),
        params=_params(raw.get("params")),
        barrier=BarrierSpec(Share.of(barrier["quorum"]), barrier.get("timeout")) if barrier else None,
        timeout=timeout,
        retries=RetrySpec(
            max=int(retries.get("max", 0)),
            backoff=float(retries.get("backoff", 1.0)),
            factor=float(retries.get("factor", 2.0)),
            jitter=float(retries.get("jitter", 0.0)),
            on=tuple(retries.get("on", ("failed", "timed_out"))),
        ),
        expires=raw.get("expires"),
        undo=UndoSpec(str(undo["command"]), _params(undo.get("params")), float(undo.get("timeout", timeout)))
        if undo
        else None,
        verify=raw.get("verify"),
        rollout=_rollout(raw.get("rollout")) or rollout,
    )


def parse_spec(config: Mapping[str, Any]) -> OrchestrationSpec:
    """Build the spec from a plan entry's normalized ``config`` (see ``capabilities.orchestration.normalize``)."""
    rollout = _rollout(config.get("rollout"))
    abort = config.get("abort")
    return OrchestrationSpec(
        name=str(config["orchestration"]),
        steps=tuple(_step(raw, rollout) for raw in config["steps"]),
        concurrency=config.get("concurrency"),
        abort=AbortSpec(
            failure_rate=float(abort["failure_rate"]),
            min_executions=int(abort.get("min_executions", 1)),
            scope=tuple(abort.get("scope", ("overall",))),
            outcomes=tuple(abort.get("outcomes", FAILURE_OUTCOMES)),
        )
        if abort
        else None,
        on_failure=str(config.get("on_failure", "stop")),
        idempotency=str(config.get("idempotency") or DEFAULT_IDEMPOTENCY),
    )


_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)?)\}")

#: Names an idempotency key template may use besides ``event.<field>``.
KEY_NAMES: tuple[str, ...] = ("orchestration", "run", "step", "device", "command")

#: The key template used when an orchestration declares none: unique per run, step and device.
DEFAULT_IDEMPOTENCY = "{run}/{step}/{device}"


def template_names(template: str) -> list[str]:
    """The placeholders of a key template, in order (``{event.seq}`` -> ``event.seq``)."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(template)]


class KeyTemplate:
    """An idempotency key template compiled once: ``render(values, event)`` fills ``{name}`` and ``{event.x}``.

    Unknown names and missing event fields render as written, so a key is always produced (the compiler refuses
    unknown names up front). Never ``str.format``: user text cannot reach attributes.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self._parts: list[tuple[str, str]] = []
        position = 0
        for match in _PLACEHOLDER.finditer(template):
            self._parts.append(("text", template[position : match.start()]))
            self._parts.append(("name", match.group(1)))
            position = match.end()
        self._parts.append(("text", template[position:]))

    def render(self, values: Mapping[str, Any], event: Mapping[str, Any]) -> str:
        """The key for one command."""
        out = []
        for kind, text in self._parts:
            if kind == "text":
                out.append(text)
            elif text.startswith("event."):
                field = text[6:]
                out.append(str(event[field]) if field in event else "{" + text + "}")
            else:
                out.append(str(values[text]) if text in values else "{" + text + "}")
        return "".join(out)
