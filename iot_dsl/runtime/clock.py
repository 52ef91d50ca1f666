"""Clocks and time values: what "now" is, timers on virtual time, and parsing/formatting of times and durations.

* :class:`Clock` is the one-method protocol the runtime reads time through (epoch seconds as ``float``).
* :class:`SystemClock` answers with the wall clock.
* :class:`VirtualClock` answers with a time that only moves when told to (:meth:`VirtualClock.advance`,
  :meth:`VirtualClock.advance_to`) and runs timers deterministically as it moves: in deadline order, ties in the
  order they were scheduled, each with ``now()`` equal to its deadline while it runs.
* :func:`parse_time` turns epoch seconds, epoch milliseconds or ISO-8601 text into epoch seconds;
  :func:`format_time` turns epoch seconds into ISO-8601 UTC text with milliseconds (``2026-01-01T00:00:05.250Z``).
* :func:`parse_duration` turns ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"2d"`` or a number into seconds.
"""

from __future__ import annotations

import calendar
import heapq
import math
import numbers
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

__all__ = [
    "Clock",
    "SystemClock",
    "VirtualClock",
    "TimerHandle",
    "parse_time",
    "format_time",
    "parse_duration",
    "MS_EPOCH_THRESHOLD",
]

#: Numbers whose magnitude exceeds this are read as epoch *milliseconds* by :func:`parse_time`
#: (1e11 seconds is the year 5138; 1e11 milliseconds is March 1973).
MS_EPOCH_THRESHOLD = 1e11


@runtime_checkable
class Clock(Protocol):
    """Anything that can say what time it is."""

    def now(self) -> float:
        """Return the current time as epoch seconds (UTC)."""
        ...


class SystemClock:
    """The wall clock: :meth:`now` is :func:`time.time`."""

    def now(self) -> float:
        """Return the current wall-clock time as epoch seconds."""
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


class TimerHandle:
    """A scheduled callback on a :class:`VirtualClock`; :meth:`cancel` stops it from running.

    ``when`` is the deadline (epoch seconds). ``cancelled`` is true once cancelled; ``fired`` once it has run.
    """

    __slots__ = ("when", "_fn", "cancelled", "fired")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self._fn: Callable[[], None] = fn
        self.cancelled = False
        self.fired = False

    def cancel(self) -> None:
        """Stop the callback from running (no effect if it already ran or was cancelled)."""
        if not self.fired:
            self.cancelled = True
        self._fn = _noop  # drop the reference so the callback's closure can be freed

    def _run(self) -> None:
        fn, self._fn = self._fn, _noop
        self.fired = True
        fn()

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "fired" if self.fired else "pending"
        return f"TimerHandle(when={self.when!r}, {state})"


def _noop() -> None:
    """The callback of a timer that has run or was cancelled."""


class VirtualClock:
    """Time that moves only when told to, running timers deterministically as it passes their deadlines.

    ``start`` is the initial epoch time in seconds. Timers scheduled in the past (``call_at`` with a deadline
    before ``now()``) run at the next :meth:`advance`/:meth:`advance_to` with ``now()`` unchanged, since this
    clock never goes backwards. If a callback raises, the exception propagates out of ``advance`` with the clock
    left at that timer's deadline; timers not yet run stay scheduled.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = _finite(start, "start")
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._counter = 0
        self._firing = False

    def now(self) -> float:
        """Return the current virtual time (epoch seconds)."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0), running every timer that falls due, in order."""
        step = _finite(seconds, "seconds")
        if step < 0:
            raise ValueError(f"cannot advance a clock by a negative amount ({seconds!r} s)")
        self._run_until(self._now + step)

    def advance_to(self, t: float) -> None:
        """Move time forward to ``t``, running due timers; a ``t`` in the past runs due timers and keeps ``now()``."""
        self._run_until(max(self._now, _finite(t, "t")))

    def call_at(self, t: float, fn: Callable[[], None]) -> TimerHandle:
        """Schedule ``fn()`` to run when time reaches ``t``; return a handle that can cancel it."""
        handle = TimerHandle(_finite(t, "t"), fn)
        heapq.heappush(self._heap, (handle.when, self._counter, handle))
        self._counter += 1
        return handle

    def call_later(self, delay: float, fn: Callable[[], None]) -> TimerHandle:
        """Schedule ``fn()`` to run ``delay`` (>= 0) seconds from now; return a handle that can cancel it."""
        wait = _finite(delay, "delay")
        if wait < 0:
            raise ValueError(f"timer delay must be >= 0 seconds, got {delay!r}")
        return self.call_at(self._now + wait, fn)

    def next_timer_at(self) -> float | None:
        """Return the deadline of the earliest pending (not cancelled) timer, or None when there is none."""
        self._drop_cancelled()
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        """Return how many timers are scheduled and not cancelled."""
        return sum(1 for _, _, handle in self._heap if not handle.cancelled)

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)

    def _run_until(self, target: float) -> None:
        if self._firing:
            raise RuntimeError("a VirtualClock cannot be advanced from inside one of its own timers")
        self._firing = True
        try:
            while True:
                self._drop_cancelled()
                if not self._heap or self._heap[0][0] > target:
                    break
                when, _, handle = heapq.heappop(self._heap)
                self._now = max(self._now, when)
                handle._run()
            self._now = max(self._now, target)
        finally:
            self._firing = False

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now!r}, pending={self.pending()})"


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


_ISO_RE = re.compile(
    r"""
    (?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})
    (?:
        [Tt\ ]
        (?P<hour>\d{2}):(?P<minute>\d{2})
        (?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,12}))?)?
        (?P<zone>[Zz]|[+-]\d{2}(?::?\d{2})?)?
    )?
    """,
    re.VERBOSE,
)

_TIME_HELP = (
    "expected epoch seconds, epoch milliseconds, or ISO-8601 text such as "
    "'2026-01-01T00:00:00Z', '2026-01-01T01:00:00+01:00' or '2026-01-01T00:00:05.250Z'"
)


def parse_time(value: object) -> float:
    """Turn a time value into epoch seconds (``float``).

    Accepts a number of epoch seconds; a number whose magnitude exceeds :data:`MS_EPOCH_THRESHOLD` (1e11) is read
    as epoch milliseconds. Accepts ISO-8601 text: a date (``2026-01-01``, midnight UTC) or a date and time with
    optional seconds, optional fraction (up to 12 digits) and optional zone (``Z`` or ``+hh:mm``/``+hhmm``/``+hh``);
    text without a zone is read as UTC. Raises ValueError with the reason for anything else (bools, NaN,
    infinities, malformed or out-of-range text).
    """
    if isinstance(value, bool):
        raise ValueError(f"cannot read {value!r} as a time: {_TIME_HELP}")
    if isinstance(value, numbers.Real):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"cannot read {value!r} as a time: it is not finite")
        if abs(seconds) > MS_EPOCH_THRESHOLD:
            if isinstance(value, numbers.Integral):
                return int(value) / 1000
            return seconds / 1000
        return seconds
    if isinstance(value, str):
        return _parse_iso(value)
    raise ValueError(f"cannot read {value!r} ({type(value).__name__}) as a time: {_TIME_HELP}")


def _parse_iso(text: str) -> float:
    match = _ISO_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"cannot read {text!r} as a time: {_TIME_HELP}")
    parts = match.groupdict()
    offset = timedelta(0)
    zone = parts["zone"]
    if zone and zone not in ("Z", "z"):
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"cannot read {text!r} as a time: UTC offset {zone!r} is out of range")
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if zone[0] == "-" else 1)
    try:
        moment = datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            tzinfo=timezone(offset),
        )
    except ValueError as exc:
        raise ValueError(f"cannot read {text!r} as a time: {exc}") from None
    whole = calendar.timegm(moment.utctimetuple())
    fraction = parts["fraction"]
    if not fraction:
        return float(whole)
    scale: int = 10 ** len(fraction)
    # int / int is correctly rounded in Python, so millisecond text round-trips exactly.
    return (whole * scale + int(fraction)) / scale


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_time(t: float) -> str:
    """Turn epoch seconds into ISO-8601 UTC text with millisecond precision, e.g. ``2026-01-01T00:00:05.250Z``.

    The time is rounded to the nearest millisecond, so ``parse_time(format_time(t))`` equals ``t`` rounded to
    milliseconds and ``format_time(parse_time(s)) == s`` for any such text. Raises ValueError for non-numbers,
    NaN/infinities and times outside years 1-9999.
    """
    seconds = _finite(t, "time")
    millis = round(seconds * 1000)
    whole, ms = divmod(millis, 1000)
    try:
        moment = _EPOCH + timedelta(seconds=whole)
    except OverflowError:
        raise ValueError(f"time {t!r} is outside the years 1-9999") from None
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms:03d}Z"


_DURATION_RE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Turn a duration into seconds (``float``).

    Accepts a non-negative number (seconds) or text ``<number><unit>`` with unit ``ms``, ``s``, ``m``, ``h`` or
    ``d`` (``"500ms"`` -> 0.5, ``"1.5s"`` -> 1.5, ``"5m"`` -> 300.0, ``"2d"`` -> 172800.0). Raises ValueError for
    anything else (negative or non-finite numbers, bools, missing or unknown units).
    """
    if isinstance(value, bool):
        raise ValueError(f"cannot read {value!r} as a duration: a duration looks like 500ms, 30s, 5m, 1h or 2d")
    if isinstance(value, numbers.Real):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"cannot read {value!r} as a duration: it must be a finite number of seconds >= 0")
        return seconds
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match is not None:
            number = match["number"]
            unit = match["unit"]
            if unit == "ms":
                return float(number) / 1000  # exact decimal -> nearest double, e.g. 250ms -> 0.25
            return float(number) * _UNIT_SECONDS[unit]
    raise ValueError(f"cannot read {value!r} as a duration: a duration looks like 500ms, 30s, 5m, 1h or 2d")
