"""Sequence matching: one key's events in event-time order in, matches, timeouts and absence timers out.

A non-deterministic automaton in the manner of Flink CEP, one set of partial matches ("runs") per key. Each run
waits to take one step: either the next repetition of the step it is in (a *loop* run) or the first event of a
later step (an *entry* run). How a run treats an event that does not advance it is its contiguity: ``next``
(strict) runs die, ``followed_by`` (relaxed) runs wait for the first event that satisfies the step and die when
they take it, ``followed_by_any`` runs keep waiting and branch on every event that satisfies the step. Every
event that satisfies a first step starts a new run. A run whose positive steps are complete is a match, or, when
the pattern ends with an absence, waits for its deadline; the caller fires deadlines in event-time order
(:meth:`SequenceMatcher.fire`), after every event at or before them.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .pattern_conditions import AggregateRef, Context, empty_context, extend_context
from .records import Record

__all__ = ["StepSpec", "SequenceMatcher", "STRICT", "RELAXED", "NONDETERMINISTIC", "CONTIGUITY"]

STRICT, RELAXED, NONDETERMINISTIC = 0, 1, 2
#: Workflow spelling of the contiguity modes.
CONTIGUITY: dict[str, int] = {"next": STRICT, "followed_by": RELAXED, "followed_by_any": NONDETERMINISTIC}

Event = dict[str, Any]
Condition = Callable[[Any], bool]
#: A taken event in a run's history: (step index, event, per-key event number, previous link).
Chain = tuple[int, Event, int, Any]


@dataclass(frozen=True)
class StepSpec:
    """A positive step, compiled: its condition, repetition bounds and contiguities."""

    name: str
    condition: Condition
    min: int
    max: float
    #: contiguity between repetitions (strict when ``consecutive``, else relaxed)
    loop_mode: int
    #: contiguity with the previous step
    entry_mode: int
    #: an absence between the previous step and this one: no event in between may satisfy it
    guard: Condition | None
    #: aggregates over this step that some condition reads (folded as the step takes events)
    aggregates: tuple[AggregateRef, ...]


class Run:
    """One partial match: what it took so far and the step it waits for."""

    __slots__ = ("chain", "ctx", "start_t", "start_n", "target", "entry", "mode", "count", "deadline", "alive", "seq")

    def __init__(
        self, chain: Chain, ctx: Context, start_t: float, start_n: int, target: int, entry: bool, mode: int,
        count: int, deadline: float | None = None, seq: int = 0,
    ) -> None:
        self.chain = chain
        self.ctx = ctx
        self.start_t = start_t
        self.start_n = start_n
        self.target = target
        self.entry = entry
        self.mode = mode
        self.count = count
        self.deadline = deadline
        self.alive = True
        self.seq = seq


class KeyState:
    """The runs of one key and the number of events the key has seen since it last had none."""

    __slots__ = ("runs", "n", "dropped")

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.n = 0
        self.dropped = 0


def _links(chain: Chain | None) -> list[Chain]:
    """The chain's links, oldest first."""
    links = []
    while chain is not None:
        links.append(chain)
        chain = chain[3]
    links.reverse()
    return links


def _order(run: Run) -> tuple[int, list[int]]:
    """Order of simultaneous completions: earliest start, then the events that come first, position by position."""
    return run.start_n, [link[2] for link in _links(run.chain)]


class SequenceMatcher:
    """The runs of every key of one sequence pattern, with its absence timers and bounds.

    ``emit(key, run, at, records, out)`` turns a completed run into a match record and a downstream event;
    ``timeout(key, run, records)`` reports an expired run (only called with ``emit_timeouts``).
    """

    def __init__(
        self,
        steps: Sequence[StepSpec],
        *,
        absent: Condition | None,
        absent_for: float | None,
        within: float | None,
        skip: bool,
        max_partial: int,
        drop_oldest: bool,
        aggregates: Sequence[AggregateRef],
        uses_context: bool,
        cell: list[Context],
        emit: Callable[[Any, Run, float, list[Record], list[Event]], None],
        timeout: Callable[[Any, Run, list[Record]], None] | None,
        overflow: Callable[[Any, KeyState, float, list[Record]], None],
    ) -> None:
        self.steps = list(steps)
        self.absent = absent
        self.absent_for = absent_for
        self.within = within
        self.skip = skip
        self.max_partial = max_partial
        self.drop_oldest = drop_oldest
        self.empty = empty_context(aggregates)
        self.uses_context = uses_context
        self.cell = cell
        cell[0] = self.empty
        self.emit = emit
        self.timeout = timeout
        self.overflow = overflow
        self.keys: dict[Any, KeyState] = {}
        #: absence deadlines: (deadline, seq, key, run)
        self.timers: list[tuple[float, int, Any, Run]] = []
        self.seq = 0
        self.starts = self._start_steps()
        first = [self.steps[j].condition for j in self.starts]
        #: whether an event can start a run (the quick test for keys without runs)
        self.may_start: Condition = first[0] if len(first) == 1 else (lambda e: any(c(e) for c in first))

    def _start_steps(self) -> list[int]:
        """The steps a run can start at: the first one and, past optional steps, up to the first required one."""
        first_required = next(index for index, step in enumerate(self.steps) if step.min > 0)
        return list(range(first_required + 1))

    # ------------------------------------------------------------------------------------------------ events
    def on_event(self, key: Any, event: Event, t: float, records: list[Record], out: list[Event]) -> None:
        """Advance ``key``'s runs with its next event (event-time order) and start new runs.

        Call it only for a key that has runs or an event that :attr:`may_start` one. A condition that fails to
        evaluate (e.g. a missing field) raises after the key's runs are put back as they were, so the caller can
        dead-letter the event and go on.
        """
        state = self.keys.get(key)
        if state is None:
            state = self.keys[key] = KeyState()
        state.n += 1
        spawned: list[Run] = []
        expired: list[Run] = []
        try:
            runs, done = self._advance(key, state.runs, event, t, state.n, spawned, expired)
        except Exception:
            self.cell[0] = self.empty
            for run in state.runs:
                run.alive = True
            for run in spawned:
                run.alive = False
            self._store(key, state, state.runs, t, records)
            raise
        for run in expired:
            self._expired(key, run, records)
        if done:
            runs = self._complete(key, done, state.n, runs, t, records, out)
        self._store(key, state, runs, t, records)

    def _advance(
        self, key: Any, live: list[Run], event: Event, t: float, n: int, spawned: list[Run], expired: list[Run]
    ) -> tuple[list[Run], list[Run]]:
        steps, cell, within = self.steps, self.cell, self.within
        kept: list[Run] = []
        done: list[Run] = []
        for run in live:
            cell[0] = run.ctx
            if run.deadline is not None:
                if self.absent(event):  # type: ignore[misc]
                    run.alive = False
                else:
                    kept.append(run)
                continue
            if within is not None and run.start_t + within <= t:
                run.alive = False
                expired.append(run)
                continue
            step = steps[run.target]
            took = step.condition(event)
            if took:
                self._take(key, run, run.target, event, t, n, spawned, done)
            mode = run.mode
            if mode == NONDETERMINISTIC or (mode == RELAXED and not took):
                guard = step.guard if run.entry else None
                if guard is None or not guard(event):
                    kept.append(run)
                    continue
            run.alive = False
        cell[0] = self.empty
        for j in self.starts:
            if steps[j].condition(event):
                self._take(key, None, j, event, t, n, spawned, done)
        return (kept + spawned if spawned else kept), done

    def _store(self, key: Any, state: KeyState, runs: list[Run], t: float, records: list[Record]) -> None:
        cap = self.max_partial
        if len(runs) > cap:
            excess = len(runs) - cap
            dropped, runs = (runs[:excess], runs[excess:]) if self.drop_oldest else (runs[cap:], runs[:cap])
            for run in dropped:
                run.alive = False
            first = state.dropped == 0
            state.dropped += excess
            if first:
                self.overflow(key, state, t, records)
        if runs:
            state.runs = runs
        else:
            del self.keys[key]

    def _take(
        self, key: Any, run: Run | None, j: int, event: Event, t: float, n: int, spawned: list[Run], done: list[Run]
    ) -> None:
        """``run`` (None: a new run) takes ``event`` into step ``j``; queue what can follow."""
        step = self.steps[j]
        chain: Chain
        ctx: Context
        if run is None:
            count, chain, start_t, start_n, ctx = 1, (j, event, n, None), t, n, self.empty
        else:
            count = 1 if run.entry else run.count + 1
            chain, start_t, start_n, ctx = (j, event, n, run.chain), run.start_t, run.start_n, run.ctx
        if self.uses_context:
            ctx = extend_context(ctx, step.name, event, step.aggregates)
        if count < step.max:
            spawned.append(Run(chain, ctx, start_t, start_n, j, False, step.loop_mode, count))
        if count < step.min:
            return
        steps = self.steps
        k = j + 1
        while k < len(steps):
            spawned.append(Run(chain, ctx, start_t, start_n, k, True, steps[k].entry_mode, count))
            if steps[k].min > 0:
                return
            k += 1
        finished = Run(chain, ctx, start_t, start_n, j, False, STRICT, count)
        if self.absent is None:
            done.append(finished)
            return
        self.seq += 1
        finished.seq = self.seq
        finished.deadline = t + self.absent_for if self.absent_for is not None else start_t + self.within  # type: ignore[operator]
        spawned.append(finished)
        heapq.heappush(self.timers, (finished.deadline, self.seq, key, finished))

    def _complete(
        self, key: Any, done: list[Run], last_n: int, runs: list[Run], at: float, records: list[Record],
        out: list[Event],
    ) -> list[Run]:
        """Emit the runs completed by one event (all of them, or under skip-past-last the first one)."""
        if len(done) > 1:
            done.sort(key=_order)
        if not self.skip:
            for run in done:
                self.emit(key, run, at, records, out)
            return runs
        self.emit(key, done[0], at, records, out)
        return self._prune(runs, last_n)

    @staticmethod
    def _prune(runs: list[Run], last_n: int) -> list[Run]:
        """Skip past the last event: drop every run that started at or before it."""
        kept = []
        for run in runs:
            if run.start_n <= last_n:
                run.alive = False
            else:
                kept.append(run)
        return kept

    def _expired(self, key: Any, run: Run, records: list[Record]) -> None:
        run.alive = False
        if self.timeout is not None:
            self.timeout(key, run, records)

    # ------------------------------------------------------------------------------------------------ time
    def fire(self, limit: float, records: list[Record], out: list[Event]) -> None:
        """Complete every run whose absence deadline is before ``limit`` (all events up to it were seen)."""
        timers = self.timers
        while timers and timers[0][0] < limit:
            deadline = timers[0][0]
            by_key: dict[Any, list[Run]] = {}
            while timers and timers[0][0] == deadline:
                _, _, key, run = heapq.heappop(timers)
                if run.alive:
                    by_key.setdefault(key, []).append(run)
            for key, due in by_key.items():
                if len(due) > 1:
                    due.sort(key=_order)
                for run in due:
                    if run.alive:
                        self._deadline(key, run, deadline, records, out)

    def _deadline(self, key: Any, run: Run, deadline: float, records: list[Record], out: list[Event]) -> None:
        state = self.keys[key]
        runs = self._expire(key, state.runs, deadline, records)
        run.alive = False
        self.emit(key, run, deadline, records, out)
        runs = [r for r in runs if r is not run]
        if self.skip:
            runs = self._prune(runs, run.chain[2])
        if runs:
            state.runs = runs
        else:
            del self.keys[key]

    def _expire(self, key: Any, runs: list[Run], now: float, records: list[Record]) -> list[Run]:
        """Drop the runs that can no longer complete within ``within`` once every event before ``now`` is seen."""
        within = self.within
        if within is None:
            return runs
        kept = []
        for run in runs:
            if run.deadline is None and run.start_t + within <= now:
                self._expired(key, run, records)
            else:
                kept.append(run)
        return kept

    def sweep(self, now: float, records: list[Record]) -> None:
        """Expire runs of every key (bounded memory); ``now`` is the watermark."""
        for key in list(self.keys):
            state = self.keys[key]
            runs = self._expire(key, state.runs, now, records)
            if runs:
                state.runs = runs
            else:
                del self.keys[key]

    # ------------------------------------------------------------------------------------------------ state
    def snapshot(self, saved: Callable[[Event], Event] = lambda event: event) -> dict[str, Any]:
        """Runs per key (each with the events it took, as ``saved`` keeps them) and the timer sequence:
        JSON-serializable."""
        keys = []
        for key, state in self.keys.items():
            runs = [
                {
                    "chain": [[link[0], link[2], saved(link[1])] for link in _links(run.chain)],
                    "start_t": run.start_t,
                    "target": run.target,
                    "entry": run.entry,
                    "mode": run.mode,
                    "count": run.count,
                    "deadline": run.deadline,
                    "seq": run.seq,
                }
                for run in state.runs
            ]
            keys.append({"key": list(key) if isinstance(key, tuple) else key, "n": state.n, "dropped": state.dropped, "runs": runs})
        return {"seq": self.seq, "keys": keys}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Rebuild runs, contexts and absence timers from :meth:`snapshot` output."""
        self.seq = int(state["seq"])
        self.keys = {}
        self.timers = []
        for saved in state["keys"]:
            key = tuple(saved["key"]) if isinstance(saved["key"], list) else saved["key"]
            keystate = self.keys[key] = KeyState()
            keystate.n, keystate.dropped = int(saved["n"]), int(saved["dropped"])
            for raw in saved["runs"]:
                chain: Any = None
                ctx: Context = self.empty
                for j, n, event in raw["chain"]:
                    chain = (j, event, n, chain)
                    if self.uses_context:
                        ctx = extend_context(ctx, self.steps[j].name, event, self.steps[j].aggregates)
                run = Run(
                    chain, ctx, float(raw["start_t"]), int(raw["chain"][0][1]), int(raw["target"]), bool(raw["entry"]),
                    int(raw["mode"]), int(raw["count"]), raw["deadline"], int(raw["seq"]),
                )
                keystate.runs.append(run)
                if run.deadline is not None:
                    heapq.heappush(self.timers, (run.deadline, run.seq, key, run))
