"""Deadlines for orchestrations: callbacks keyed by time in, called in time order when the clock reaches them.

A :class:`DeadlineQueue` keeps its own heap and works with any clock. With a clock that has timers
(:class:`~iot_dsl.runtime.clock.VirtualClock`'s ``call_at``) it keeps exactly one timer armed at its earliest
deadline, so timeouts fire at their exact time while the clock advances; with any other clock the owner calls
:meth:`DeadlineQueue.poll` (the operator's ``on_time``). Each callback gets its own deadline as "now", so what it
records is stamped with the time it was due, whatever the polling granularity.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

__all__ = ["DeadlineQueue"]

Callback = Callable[[float], None]


class DeadlineQueue:
    """Run ``fn(deadline)`` once the clock reaches each scheduled deadline; ties run in scheduling order."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._call_at: Callable[[float, Callable[[], None]], Any] | None = getattr(clock, "call_at", None)
        self._heap: list[tuple[float, int, Callback]] = []
        self._counter = 0
        self._timer: Any = None
        self._timer_at: float | None = None
        self._polling = False

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, when: float, fn: Callback) -> None:
        """Call ``fn(when)`` once time reaches ``when``."""
        heapq.heappush(self._heap, (when, self._counter, fn))
        self._counter += 1
        self._arm()

    def next_deadline(self) -> float | None:
        """The earliest pending deadline, or None."""
        return self._heap[0][0] if self._heap else None

    def poll(self, now: float) -> None:
        """Run every callback due at or before ``now``, earliest first (callbacks may schedule more)."""
        if self._polling:
            return  # re-entered from a callback (e.g. a synchronous answer): the outer loop goes on
        self._polling = True
        try:
            heap = self._heap
            while heap and heap[0][0] <= now:
                when, _, fn = heapq.heappop(heap)
                fn(when)
        finally:
            self._polling = False
        self._arm()

    def _arm(self) -> None:
        if self._call_at is None or not self._heap or self._polling:
            return
        head = self._heap[0][0]
        if self._timer_at is not None and self._timer_at <= head:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = head
        self._timer = self._call_at(head, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.poll(self._clock.now())
