"""Clocks, virtual timers, and time/duration parsing and formatting (iot_dsl.runtime.clock)."""

from __future__ import annotations

import math
import time
from functools import partial

import numpy as np
import pytest

from iot_dsl.runtime.clock import (
    MS_EPOCH_THRESHOLD,
    Clock,
    SystemClock,
    TimerHandle,
    VirtualClock,
    format_time,
    parse_duration,
    parse_time,
)

JAN_1_2026 = 1767225600.0


# -- SystemClock -----------------------------------------------------------------------------------------------


def test_system_clock_reads_wall_time() -> None:
    clock = SystemClock()
    before = time.time()
    now = clock.now()
    after = time.time()
    assert before <= now <= after
    assert isinstance(clock, Clock)
    assert repr(clock) == "SystemClock()"


def test_virtual_clock_satisfies_protocol() -> None:
    assert isinstance(VirtualClock(), Clock)


# -- VirtualClock ------------------------------------------------------------------------------------------------


def test_virtual_clock_starts_where_told_and_moves_only_when_advanced() -> None:
    clock = VirtualClock(100.0)
    assert clock.now() == 100.0
    assert clock.now() == 100.0
    clock.advance(2.5)
    assert clock.now() == 102.5
    clock.advance(0)
    assert clock.now() == 102.5
    assert VirtualClock().now() == 0.0


def test_timers_fire_in_deadline_order_with_now_at_their_deadline() -> None:
    clock = VirtualClock(0.0)
    seen: list[tuple[str, float]] = []
    clock.call_at(3.0, lambda: seen.append(("c", clock.now())))
    clock.call_at(1.0, lambda: seen.append(("a", clock.now())))
    clock.call_later(2.0, lambda: seen.append(("b", clock.now())))
    clock.advance(10.0)
    assert seen == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert clock.now() == 10.0


def test_timers_with_equal_deadlines_fire_in_insertion_order() -> None:
    clock = VirtualClock()
    seen: list[int] = []
    for i in range(20):
        clock.call_at(5.0, partial(seen.append, i))
    clock.advance(5.0)
    assert seen == list(range(20))


def test_advance_stops_before_later_timers() -> None:
    clock = VirtualClock()
    seen: list[float] = []
    clock.call_at(1.0, lambda: seen.append(clock.now()))
    clock.call_at(2.0, lambda: seen.append(clock.now()))
    clock.advance(1.5)
    assert seen == [1.0]
    assert clock.now() == 1.5
    assert clock.next_timer_at() == 2.0
    clock.advance_to(2.0)
    assert seen == [1.0, 2.0]
    assert clock.next_timer_at() is None


def test_cancelled_timer_does_not_fire_and_is_skipped_by_next_timer_at() -> None:
    clock = VirtualClock()
    seen: list[str] = []
    first = clock.call_at(1.0, lambda: seen.append("first"))
    clock.call_at(2.0, lambda: seen.append("second"))
    assert clock.pending() == 2
    first.cancel()
    assert first.cancelled
    assert clock.pending() == 1
    assert clock.next_timer_at() == 2.0
    clock.advance(5)
    assert seen == ["second"]
    assert "cancelled" in repr(first)


def test_cancel_after_firing_is_harmless() -> None:
    clock = VirtualClock()
    seen: list[int] = []
    handle = clock.call_later(1.0, lambda: seen.append(1))
    assert "pending" in repr(handle)
    clock.advance(1.0)
    assert handle.fired
    handle.cancel()
    assert not handle.cancelled
    assert seen == [1]
    assert "fired" in repr(handle)


def test_advance_to_the_past_is_a_no_op() -> None:
    clock = VirtualClock(50.0)
    clock.advance_to(10.0)
    assert clock.now() == 50.0
    clock.advance_to(60.0)
    assert clock.now() == 60.0
    clock.advance_to(59.999)
    assert clock.now() == 60.0


def test_timer_scheduled_in_the_past_fires_at_current_time_on_next_advance() -> None:
    clock = VirtualClock(10.0)
    seen: list[float] = []
    clock.call_at(5.0, lambda: seen.append(clock.now()))
    assert seen == []
    clock.advance_to(0.0)  # backwards: time stays, but due timers run
    assert seen == [10.0]
    assert clock.now() == 10.0


def test_timers_scheduled_by_timers_fire_within_the_same_advance_when_due() -> None:
    clock = VirtualClock()
    seen: list[tuple[str, float]] = []

    def tick() -> None:
        seen.append(("tick", clock.now()))
        if clock.now() < 3.0:
            clock.call_later(1.0, tick)

    clock.call_later(1.0, tick)
    clock.call_later(0.0, lambda: seen.append(("zero", clock.now())))
    clock.advance(10.0)
    assert seen == [("zero", 0.0), ("tick", 1.0), ("tick", 2.0), ("tick", 3.0)]


def test_advance_from_inside_a_timer_is_refused() -> None:
    clock = VirtualClock()
    clock.call_at(1.0, lambda: clock.advance(1.0))
    with pytest.raises(RuntimeError, match="inside one of its own timers"):
        clock.advance(2.0)
    # the clock is usable afterwards
    clock.advance(1.0)
    assert clock.now() == 2.0


def test_failing_timer_leaves_clock_at_its_deadline_and_keeps_later_timers() -> None:
    clock = VirtualClock()
    seen: list[float] = []

    def boom() -> None:
        raise KeyError("boom")

    clock.call_at(1.0, boom)
    clock.call_at(2.0, lambda: seen.append(clock.now()))
    with pytest.raises(KeyError):
        clock.advance(5.0)
    assert clock.now() == 1.0
    assert clock.next_timer_at() == 2.0
    clock.advance(4.0)
    assert seen == [2.0]


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "1s", True, None])
def test_advance_rejects_negative_and_non_numbers(bad: object) -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError):
        clock.advance(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [math.nan, -math.inf, "soon"])
def test_advance_to_and_call_at_reject_non_finite(bad: object) -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError):
        clock.advance_to(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        clock.call_at(bad, lambda: None)  # type: ignore[arg-type]


def test_call_later_rejects_negative_delay_and_bad_start() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match=">= 0"):
        clock.call_later(-0.5, lambda: None)
    with pytest.raises(ValueError):
        VirtualClock(math.nan)


def test_virtual_clock_repr_and_handle_fields() -> None:
    clock = VirtualClock(1.0)
    handle = clock.call_later(2.0, lambda: None)
    assert isinstance(handle, TimerHandle)
    assert handle.when == 3.0
    assert repr(clock) == "VirtualClock(now=1.0, pending=1)"


def test_virtual_clock_is_deterministic() -> None:
    def run() -> list[tuple[int, float]]:
        clock = VirtualClock(JAN_1_2026)
        out: list[tuple[int, float]] = []

        def record(n: int) -> None:
            out.append((n, clock.now()))

        rng = np.random.default_rng(7)
        for i, delay in enumerate(rng.integers(0, 5, size=50).tolist()):
            clock.call_later(float(delay), partial(record, i))
        clock.advance(10)
        return out

    first = run()
    assert first == run()
    assert [t for _, t in first] == sorted(t for _, t in first)


# -- parse_time ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0.0),
        (JAN_1_2026, JAN_1_2026),
        (1767225600, JAN_1_2026),
        (1767225605.25, 1767225605.25),
        (1767225605250, 1767225605.25),  # epoch milliseconds
        (1767225605250.0, 1767225605.25),
        (-1767225605250, -1767225605.25),
        (np.int64(1767225600000), JAN_1_2026),
        (np.float64(1767225600.5), 1767225600.5),
        (int(MS_EPOCH_THRESHOLD), MS_EPOCH_THRESHOLD),  # at the threshold: still seconds
        ("2026-01-01T00:00:00Z", JAN_1_2026),
        ("2026-01-01T00:00:00z", JAN_1_2026),
        ("2026-01-01 00:00:00Z", JAN_1_2026),
        ("  2026-01-01T00:00:00Z  ", JAN_1_2026),
        ("2026-01-01T01:00:00+01:00", JAN_1_2026),
        ("2025-12-31T19:00:00-05:00", JAN_1_2026),
        ("2026-01-01T05:30:00+0530", JAN_1_2026),
        ("2026-01-01T02:00:00+02", JAN_1_2026),
        ("2026-01-01T00:00:05.250Z", 1767225605.25),
        ("2026-01-01T00:00:05,250Z", 1767225605.25),
        ("2026-01-01T00:00:05.5Z", 1767225605.5),
        ("2026-01-01T00:00:05.123456789Z", 1767225605.123456789),
        ("2026-01-01T00:00:00", JAN_1_2026),  # no zone: UTC
        ("2026-01-01T00:00Z", JAN_1_2026),  # no seconds
        ("2026-01-01", JAN_1_2026),
        ("1970-01-01T00:00:00Z", 0.0),
        ("1969-12-31T23:59:59.500Z", -0.5),
        ("2024-02-29T12:00:00Z", 1709208000.0),
    ],
)
def test_parse_time_accepts_numbers_and_iso_text(value: object, expected: float) -> None:
    assert parse_time(value) == pytest.approx(expected, abs=1e-9)


def test_parse_time_millisecond_text_is_exact() -> None:
    assert parse_time("2026-01-01T00:00:05.250Z") == 1767225605.25
    assert parse_time("2026-01-01T00:00:00.001Z") == 1767225600001 / 1000
    assert parse_time("2026-01-01T00:00:00.999Z") == 1767225600999 / 1000


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (True, "cannot read True"),
        (None, "NoneType"),
        ([2026], "list"),
        (math.nan, "not finite"),
        (math.inf, "not finite"),
        ("", "ISO-8601"),
        ("yesterday", "ISO-8601"),
        ("2026-13-01T00:00:00Z", "month must be in 1..12"),
        ("2026-02-30T00:00:00Z", "day is out of range"),
        ("2026-01-01T24:00:00Z", "hour must be in 0..23"),
        ("2026-01-01T23:59:60Z", "second must be in 0..59"),
        ("2026-01-01T00:00:00+25:00", "offset '+25:00' is out of range"),
        ("2026-01-01T00:00:00+01:75", "out of range"),
        ("2026-01-01T00:00:00.1234567890123Z", "ISO-8601"),  # more than 12 fraction digits
        ("2026-01-01T00:00:00Zjunk", "ISO-8601"),
        ("1767225600", "ISO-8601"),  # numbers must be numbers, not text
    ],
)
def test_parse_time_rejects_with_clear_message(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match="cannot read") as info:
        parse_time(value)
    assert fragment in str(info.value)


# -- format_time -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (JAN_1_2026, "2026-01-01T00:00:00.000Z"),
        (1767225605.25, "2026-01-01T00:00:05.250Z"),
        (1767225605.2504, "2026-01-01T00:00:05.250Z"),
        (1767225605.2496, "2026-01-01T00:00:05.250Z"),
        (1767225659.9996, "2026-01-01T00:01:00.000Z"),  # rounding carries into the seconds
        (0, "1970-01-01T00:00:00.000Z"),
        (-0.5, "1969-12-31T23:59:59.500Z"),
        (np.float64(1767225600.001), "2026-01-01T00:00:00.001Z"),
        (253402300799.999, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_format_time_gives_utc_milliseconds(t: float, text: str) -> None:
    assert format_time(t) == text


def test_format_and_parse_round_trip_at_millisecond_precision() -> None:
    rng = np.random.default_rng(3)
    for ms in rng.integers(-(10**12), 4 * 10**12, size=2000).tolist():
        t = ms / 1000
        text = format_time(t)
        assert parse_time(text) == t
        assert format_time(parse_time(text)) == text
    # an arbitrary float comes back rounded to the millisecond
    assert parse_time(format_time(1767225605.123456)) == 1767225605.123


@pytest.mark.parametrize("bad", [math.nan, math.inf, "2026", None, True, 1e15, -1e15])
def test_format_time_rejects_non_finite_and_out_of_range(bad: object) -> None:
    with pytest.raises(ValueError):
        format_time(bad)  # type: ignore[arg-type]


# -- parse_duration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("250ms", 0.25),
        ("1ms", 0.001),
        ("1.5ms", 0.0015),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("5m", 300.0),
        ("0.5m", 30.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        (" 10s ", 10.0),
        ("10 s", 10.0),
        (0, 0.0),
        (7, 7.0),
        (2.5, 2.5),
        (np.float64(0.25), 0.25),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "5",
        "5x",
        "s",
        "-5s",
        "5 minutes",
        "1h30m",
        ".5s",
        "5S",
        "1e3s",
        -1,
        -0.001,
        math.nan,
        math.inf,
        True,
        None,
        [5],
    ],
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="as a duration"):
        parse_duration(bad)
