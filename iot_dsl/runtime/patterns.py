"""Pattern operators: a stream's events in, ``match`` records and match events for rules out, on event time.

Events are buffered until the stream's watermark passes them, then processed per key in event-time order, so
disorder up to the stream's ``lateness`` does not change what matches. Absence deadlines and ``for`` durations
fire when the watermark passes them, never on wall-clock time. Partial matches, buffered events and timers are
snapshotted and restored with the engine.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable, Mapping
from itertools import chain, compress, repeat
from operator import itemgetter
from typing import Any

import numpy as np

from ..errors import ExprError
from ..expr import BOOLEAN, Namespace, Scope, compile_expr, field_paths, parse_expr, type_from_name
from .clock import format_time
from .ingest_envelope import envelope_filler
from .operators import TIME_KEY, BuildContext, Operator, SourceBatch, write_times
from .pattern_conditions import AggregateRef, Context, compile_condition
from .pattern_sequence import CONTIGUITY, RELAXED, STRICT, KeyState, Run, SequenceMatcher, StepSpec, _links
from .records import Record, make_record

__all__ = ["PatternOperator", "HoldOperator", "build_pattern"]

INF = float("inf")
Event = dict[str, Any]
_time = itemgetter(TIME_KEY)


def _base_scope(fields: Mapping[str, str], ctx: BuildContext, key: str) -> Scope:
    attributes_of = ctx.attributes_of
    types = {k: type_from_name(v) for k, v in ctx.device_attributes.items()}
    return Scope(
        fields={k: type_from_name(v) for k, v in fields.items()},
        namespaces={"device": Namespace("device", types, getter=lambda row: attributes_of(row[key]))},
    )


class _Chunk:
    """One batch held back: its events sorted by event time (equal times in arrival order), with their times (a
    list of floats, which releases bisect), their keys and, when it could be computed at arrival, whether each
    may start state. Events before ``lo`` have been released. ``stamped``: whether the events carry their time
    under ``TIME_KEY`` (a source leaves it out when only patterns read its events; the chunk writes it into the
    events that leave it).

    ``owned`` is the batch as it came. The chunk holds the events until every one is released; when it is done,
    :meth:`drop` lets go of the sorted list first, so that the events are freed from ``owned``, in the order
    they were allocated (about twice as fast as freeing them in event-time order).
    """

    __slots__ = ("events", "times", "keys", "starts", "stamped", "lo", "owned")

    def __init__(
        self, events: list[Event], times: list[float], keys: list[Any], starts: Any, stamped: bool,
        owned: list[Event] | None = None,
    ) -> None:
        self.events = events
        self.times = times
        self.keys = keys
        self.starts = starts
        self.stamped = stamped
        self.lo = 0
        self.owned = owned

    def split(self, watermark: float) -> _Chunk | None:
        """Release and return the events before ``watermark`` not released yet (None: there are none)."""
        lo, times = self.lo, self.times
        if times[lo] >= watermark:
            return None
        cut = bisect_left(times, watermark, lo)
        self.lo = cut
        starts = self.starts
        return _Chunk(
            self.events[lo:cut], times[lo:cut], self.keys[lo:cut], None if starts is None else starts[lo:cut],
            self.stamped,
        )

    def done(self) -> bool:
        """Whether every event has been released."""
        return self.lo >= len(self.events)

    def drop(self) -> None:
        """Let go of the events (see the class doc)."""
        self.events = self.keys = []
        self.owned = None

    def pending(self) -> list[Event]:
        """The events not released yet, with their times under ``TIME_KEY``."""
        events = self.events[self.lo :]
        if not self.stamped:
            write_times(events, self.times[self.lo :])
        return events


class _EventTimeOperator(Operator):
    """Buffer events until the watermark passes them; process them per key in event-time order with timers.

    Most events cannot change anything: a key gets state only from an event that may start it, so only the
    events of keys with state, of keys with an event that may start state among those released, and of a
    missing key (a dead letter) are looked at one by one. Which events those are is found per batch with C
    loops and numpy (start conditions that read only the event's own fields are evaluated at arrival, while the
    batch is fresh in memory); only those events are sorted and fed to the per-key state.
    """

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, device_key: str) -> None:
        super().__init__(spec, ctx)
        config = spec["config"]
        self.device_key = device_key
        self.per: list[str] = list(config.get("per") or [device_key])
        self.fields: dict[str, str] = dict(config["input_fields"])
        self.scope = _base_scope(self.fields, ctx, device_key)
        self.source = ctx.source_of.get(self.id)
        #: held-back events: one chunk per batch
        self.chunks: list[_Chunk] = []
        #: fills the envelope fields into events that leave as records or snapshots (None: events carry them)
        self.envelope = envelope_filler(ctx.plan, self.id, device_key, ctx.attributes_of)
        #: the conditions that may start a key's state; set by :meth:`_start_tests`
        self._tests: list[Callable[[Any], bool]] = []
        #: whether the start conditions read only the event's own fields (then they are evaluated at arrival)
        self._early = False

    def _start_tests(self, conditions: list[tuple[str, Callable[[Any], bool]]]) -> None:
        """Declare the conditions (text, compiled closure) that may start a key's state."""
        self._tests = [scalar for _, scalar in conditions]
        self._early = all(
            len(path) == 1 and path[0] in self.fields for text, _ in conditions for path in field_paths(parse_expr(text))
        )

    def _dead(self, event: Any, reason: str, records: list[Record]) -> None:
        super()._dead(self.envelope(event) if self.envelope is not None else event, reason, records)

    def saved(self, event: Event) -> Event:
        """An event as a snapshot keeps it: with the envelope fields it would carry had its source set them."""
        return self.envelope(event) if self.envelope is not None else event

    def views(self) -> tuple[list[Any], Mapping[Any, Any], Callable[[Any], bool]]:
        """Pending timers (a heap of tuples starting with the deadline), the keys with state, and the test for an
        event of a key without state (whether it may start some)."""
        raise NotImplementedError

    def on_event(self, key: Any, event: Event, t: float, records: list[Record], out: list[Event]) -> None:
        """Process one key's next event."""
        raise NotImplementedError

    def fire(self, limit: float, records: list[Record], out: list[Event]) -> None:
        """Fire the timers due before ``limit``."""
        raise NotImplementedError

    def advance(self, watermark: float, records: list[Record]) -> None:
        """After a release: housekeeping at the watermark (expiry of partial matches)."""

    # the Operator protocol
    def process(self, batch: list[Event], records: list[Record]) -> list[Event]:
        """Hold the batch back until the watermark passes it."""
        if batch:
            self.chunks.append(self._chunk(batch, self._early))
        return []

    def on_time(self, now: float, records: list[Record]) -> list[Event]:
        """Process what the source stream's watermark has released."""
        watermark = self.ctx.watermarks.get(self.source, -INF)  # type: ignore[arg-type]
        return self._release(watermark, records)

    def flush(self, records: list[Record]) -> list[Event]:
        """End of input: the watermark is +inf; everything buffered is processed and every timer fires."""
        return self._release(INF, records)

    def _chunk(self, batch: list[Event], early: bool) -> _Chunk:
        if type(batch) is SourceBatch:  # straight from the source: times and device ids come as columns
            times, is_stamped = batch.times, batch.stamped
            keys = batch.devices if self.per == [self.device_key] else self._keys(batch)
        else:
            times, is_stamped = np.fromiter(map(_time, batch), dtype=np.float64, count=len(batch)), True
            keys = self._keys(batch)
        starts = self._starts(batch) if early else None
        events = batch
        if len(times) > 1 and not bool((times[1:] >= times[:-1]).all()):
            order = np.argsort(times, kind="stable")  # stable: equal times stay in arrival order
            times = times[order]
            pick = order.tolist()
            events = list(map(batch.__getitem__, pick))
            keys = list(map(keys.__getitem__, pick))
            starts = None if starts is None else starts[order]
        return _Chunk(events, times.tolist(), keys, starts, is_stamped, owned=batch)

    def _keys(self, events: list[Event]) -> list[Any]:
        """Each event's key: the ``per`` field's value, or a tuple of the ``per`` fields' values."""
        get = dict.get
        if len(self.per) == 1:
            return list(map(get, events, repeat(self.per[0])))
        return list(zip(*[map(get, events, repeat(f)) for f in self.per]))

    def _starts(self, events: list[Event]) -> Any:
        """Whether each event may start state (a boolean array), or None when a condition fails on some event."""
        flags: Any = None
        for test in self._tests:
            try:
                found = np.fromiter(map(test, events), dtype=bool, count=len(events))
            except Exception:  # noqa: BLE001 - the per-event loop reports the event it fails on
                return None
            flags = found if flags is None else flags | found
        return flags

    def _release(self, watermark: float, records: list[Record]) -> list[Event]:
        out: list[Event] = []
        ready = [piece for piece in map(_Chunk.split, self.chunks, repeat(watermark)) if piece is not None]
        if ready:
            self._process_ready(ready, records, out)
            ready.clear()  # the chunks are now the last owners of what they released
            kept = []
            for chunk in self.chunks:
                if chunk.done():
                    chunk.drop()
                else:
                    kept.append(chunk)
            self.chunks = kept
        self.fire(watermark, records, out)
        self.advance(watermark, records)
        return out

    def _process_ready(self, ready: list[_Chunk], records: list[Record], out: list[Event]) -> None:
        events, keys = self._candidates(ready)
        per = self.per
        multi = len(per) > 1
        (timers, live, may_start), on_event = self.views(), self.on_event
        for event, key in zip(events, keys):
            t = event[TIME_KEY]
            if timers and timers[0][0] < t:
                self.fire(t, records, out)
            try:
                if key is None or (multi and None in key):
                    self._dead(event, f"pattern '{self.name}': missing key field ({', '.join(per)})", records)
                elif key in live or may_start(event):
                    on_event(key, event, t, records, out)
            except ExprError as exc:
                self._dead(event, f"pattern '{self.name}' cannot evaluate its condition: {exc.message}", records)
            except TypeError:
                self._dead(event, f"pattern '{self.name}': key field ({', '.join(per)}) is not a plain value", records)

    def _candidates(self, ready: list[_Chunk]) -> tuple[list[Event], list[Any]]:
        """The released events that need a look, in event-time order (ties in arrival order), with their keys.

        When a start condition or a key cannot be computed for some event, every released event gets a look
        (the per-event loop reports it).
        """
        if len(ready) > 1:
            events = list(chain.from_iterable([piece.events for piece in ready]))
            keys = list(chain.from_iterable([piece.keys for piece in ready]))
            times = list(chain.from_iterable([piece.times for piece in ready]))
        else:
            events, keys, times = ready[0].events, ready[0].keys, ready[0].times
        starts = [piece.starts if piece.starts is not None else self._starts(piece.events) for piece in ready]
        try:
            if any(s is None for s in starts):
                raise LookupError  # some start condition failed: every event gets a look
            flags = np.concatenate(starts) if len(starts) > 1 else starts[0]
            wanted = set(compress(keys, flags.tolist()))
            if len(self.per) == 1:
                wanted.add(None)
            else:
                wanted.update(key for key in keys if None in key)
            wanted.update(self.views()[1])
            mask = np.fromiter(map(wanted.__contains__, keys), dtype=bool, count=len(keys))
        except (LookupError, TypeError):
            mask = np.ones(len(keys), dtype=bool)
        picked = np.flatnonzero(mask)
        if picked.size == 0:
            return [], []
        order = sorted(picked.tolist(), key=times.__getitem__)  # stable: equal times keep their order
        chosen = list(map(events.__getitem__, order))
        if not all(piece.stamped for piece in ready):  # only the events that go on get their time written in
            write_times(chosen, map(times.__getitem__, order))
        return chosen, list(map(keys.__getitem__, order))

    def buffered(self) -> list[Event]:
        """The held-back events in arrival order of their batches (what a snapshot keeps)."""
        return [self.saved(event) for chunk in self.chunks for event in chunk.pending()]

    def key_fields(self, key: Any) -> dict[str, Any]:
        """The key as ``{field: value}``."""
        values = key if isinstance(key, tuple) else (key,)
        return dict(zip(self.per, values))

    def summary(self, event: Event) -> dict[str, Any]:
        """How a match record lists an event: device, sequence number and event time (epoch seconds)."""
        return {"device": event.get(self.device_key), "seq": event.get("seq"), "ts": event[TIME_KEY]}

    def _match_event(self, last: Event, start: float, at: float) -> Event:
        event = dict(last)
        event[TIME_KEY] = at
        event["match_start"] = start
        event["match_end"] = last[TIME_KEY]
        return event


class PatternOperator(_EventTimeOperator):
    """A ``sequence`` pattern: ordered steps with repetition, contiguity, optional steps, absence and ``within``."""

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, device_key: str) -> None:
        super().__init__(spec, ctx, device_key)
        config = spec["config"]
        self.cell: list[Context] = [{}]
        names = [step["name"] for step in config["steps"]]
        self.names = names
        aggregates: dict[str, AggregateRef] = {}
        uses_context = False

        def condition(text: str, earlier: list[str]) -> Callable[[Any], bool]:
            nonlocal uses_context
            fn, plan = compile_condition(text, earlier, self.fields, self.scope, self.cell)
            aggregates.update({a.key: a for a in plan.aggregates})
            uses_context = uses_context or bool(plan.refers)
            return fn

        compiled = []
        for index, step in enumerate(config["steps"]):
            earlier = names[:index]
            compiled.append(
                (
                    step,
                    condition(step["when"], earlier),
                    condition(step["guard"], earlier) if step.get("guard") else None,
                )
            )
        absent = config.get("absent")
        absent_fn = condition(absent["when"], names) if absent else None
        steps = [
            StepSpec(
                name=step["name"],
                condition=when,
                min=int(step["min"]),
                max=INF if step.get("max") is None else float(step["max"]),
                loop_mode=STRICT if step.get("consecutive") else RELAXED,
                entry_mode=CONTIGUITY[step.get("contiguity") or "followed_by"],
                guard=guard,
                aggregates=tuple(a for a in aggregates.values() if a.step == step["name"]),
            )
            for step, when, guard in compiled
        ]
        self.counted = [step.name for step in steps if (step.min, step.max) != (1, 1)]
        within = config.get("within")
        self.within: float | None = float(within) if within is not None else None
        self.emit_timeouts = bool(config.get("emit_timeouts"))
        self.max_partial = int(config.get("max_partial") or 1000)
        self.overflow_policy = config.get("overflow") or "drop_oldest"
        self.matcher = SequenceMatcher(
            steps,
            absent=absent_fn,
            absent_for=float(absent["for"]) if absent and absent.get("for") is not None else None,
            within=self.within,
            skip=(config.get("after_match") or "skip_past_last") == "skip_past_last",
            max_partial=self.max_partial,
            drop_oldest=self.overflow_policy == "drop_oldest",
            aggregates=list(aggregates.values()),
            uses_context=uses_context,
            cell=self.cell,
            emit=self._emit,
            timeout=self._timeout if self.emit_timeouts else None,
            overflow=self._overflow,
        )
        self._start_tests([(config["steps"][j]["when"], steps[j].condition) for j in self.matcher.starts])
        self.next_sweep = -INF
        #: partial matches dropped by the per-key cap, all keys
        self.dropped = 0

    def views(self) -> tuple[list[Any], Mapping[Any, Any], Callable[[Any], bool]]:
        """The matcher's absence deadlines, the keys with partial matches, and whether an event may start one."""
        return self.matcher.timers, self.matcher.keys, self.matcher.may_start

    def on_event(self, key: Any, event: Event, t: float, records: list[Record], out: list[Event]) -> None:
        """Feed the matcher."""
        self.matcher.on_event(key, event, t, records, out)

    def fire(self, limit: float, records: list[Record], out: list[Event]) -> None:
        """Complete partial matches whose absence deadline is before ``limit``."""
        self.matcher.fire(limit, records, out)

    def advance(self, watermark: float, records: list[Record]) -> None:
        """Expire partial matches past ``within`` (at most every within/2 of event time)."""
        if self.within is not None and watermark >= self.next_sweep:
            self.matcher.sweep(watermark, records)
            self.next_sweep = watermark + self.within / 2

    def _steps_of(self, run: Run) -> dict[str, list[dict[str, Any]]]:
        steps: dict[str, list[dict[str, Any]]] = {name: [] for name in self.names}
        for j, event, _, _ in _links(run.chain):
            steps[self.names[j]].append(self.summary(event))
        return steps

    def _emit(self, key: Any, run: Run, at: float, records: list[Record], out: list[Event]) -> None:
        steps = self._steps_of(run)
        last = run.chain[1]
        records.append(
            make_record(
                "match", at, self.name, key=self.key_fields(key), start=format_time(run.start_t),
                end=format_time(last[TIME_KEY]), steps=steps, segment=self.segment,
            )
        )
        event = self._match_event(last, run.start_t, at)
        for name in self.counted:
            event[f"{name}_count"] = len(steps[name])
        out.append(event)

    def _timeout(self, key: Any, run: Run, records: list[Record]) -> None:
        assert self.within is not None
        records.append(
            make_record(
                "pattern_timeout", run.start_t + self.within, self.name, key=self.key_fields(key),
                start=format_time(run.start_t), steps=self._steps_of(run), waiting_for=self.names[run.target],
                segment=self.segment,
            )
        )

    def _overflow(self, key: Any, state: KeyState, t: float, records: list[Record]) -> None:
        self.dropped += state.dropped
        records.append(
            make_record(
                "alert", t, self.name, severity="warning", key=self.key_fields(key), dropped=state.dropped,
                message=f"pattern '{self.name}': more than {self.max_partial} partial matches for one key; "
                f"{self.overflow_policy.replace('_', ' ')} (counted)",
                segment=self.segment,
            )
        )

    def snapshot(self) -> Any:
        """Buffered events, partial matches (with the events they took) and absence timers."""
        return {
            "buffer": self.buffered(),
            "matcher": self.matcher.snapshot(self.saved),
            "next_sweep": self.next_sweep if self.next_sweep > -INF else None,
            "dropped": self.dropped,
        }

    def restore(self, state: Any) -> None:
        """Resume from :meth:`snapshot` output."""
        self.chunks = [self._chunk(list(state["buffer"]), self._early)] if state["buffer"] else []
        self.matcher.restore(state["matcher"])
        self.next_sweep = state["next_sweep"] if state["next_sweep"] is not None else -INF
        self.dropped = int(state["dropped"])


class HoldOperator(_EventTimeOperator):
    """``condition`` + ``for``: one match per key when the condition has held for the duration (event time).

    The hold starts at the first event for which the condition is true; an event for which it is false (at or
    before the deadline) ends it. A hold that reached its deadline matches once, at the deadline.
    """

    def __init__(self, spec: Mapping[str, Any], ctx: BuildContext, device_key: str) -> None:
        super().__init__(spec, ctx, device_key)
        config = spec["config"]
        self.condition = compile_expr(parse_expr(config["condition"]), self.scope, expect=BOOLEAN)
        self._start_tests([(config["condition"], self.condition)])
        self.duration = float(config["for"])
        #: key -> [start time, timer id, first event, last event, matched]
        self.holds: dict[Any, list[Any]] = {}
        self.timers: list[tuple[float, int, Any]] = []
        self.seq = 0

    def views(self) -> tuple[list[Any], Mapping[Any, Any], Callable[[Any], bool]]:
        """The hold deadlines, the keys whose condition holds, and the condition."""
        return self.timers, self.holds, self.condition

    def on_event(self, key: Any, event: Event, t: float, records: list[Record], out: list[Event]) -> None:
        """Start, extend or end ``key``'s hold."""
        hold = self.holds.get(key)
        if self.condition(event):
            if hold is None:
                self.seq += 1
                self.holds[key] = [t, self.seq, event, event, False]
                heapq.heappush(self.timers, (t + self.duration, self.seq, key))
            else:
                hold[3] = event
        else:
            del self.holds[key]  # only keys with a hold reach here when the condition is false

    def fire(self, limit: float, records: list[Record], out: list[Event]) -> None:
        """Match every hold whose deadline is before ``limit`` and that was not broken."""
        timers, holds = self.timers, self.holds
        while timers and timers[0][0] < limit:
            deadline, seq, key = heapq.heappop(timers)
            hold = holds.get(key)
            if hold is None or hold[1] != seq:
                continue
            start, _, first, last, _ = hold
            hold[4] = True
            steps = {"held": [self.summary(first)] + ([self.summary(last)] if last != first else [])}
            records.append(
                make_record(
                    "match", deadline, self.name, key=self.key_fields(key), start=format_time(start),
                    end=format_time(deadline), steps=steps, segment=self.segment,
                )
            )
            out.append(self._match_event(last, start, deadline))

    def snapshot(self) -> Any:
        """Buffered events and running holds (their timers are rebuilt from them)."""
        holds = [
            {"key": list(k) if isinstance(k, tuple) else k, "start": h[0], "seq": h[1], "first": self.saved(h[2]),
             "last": self.saved(h[3]), "matched": h[4]}
            for k, h in self.holds.items()
        ]
        return {"buffer": self.buffered(), "holds": holds, "seq": self.seq}

    def restore(self, state: Any) -> None:
        """Resume from :meth:`snapshot` output."""
        self.chunks = [self._chunk(list(state["buffer"]), self._early)] if state["buffer"] else []
        self.seq = int(state["seq"])
        self.holds, self.timers = {}, []
        for saved in state["holds"]:
            key = tuple(saved["key"]) if isinstance(saved["key"], list) else saved["key"]
            self.holds[key] = [float(saved["start"]), int(saved["seq"]), saved["first"], saved["last"], saved["matched"]]
            if not saved["matched"]:
                heapq.heappush(self.timers, (float(saved["start"]) + self.duration, int(saved["seq"]), key))


def build_pattern(spec: Mapping[str, Any], ctx: BuildContext, device_key: str) -> Operator:
    """The operator for a pattern plan entry: a hold (``condition`` + ``for``) or a sequence matcher."""
    if spec["config"].get("condition") is not None:
        return HoldOperator(spec, ctx, device_key)
    return PatternOperator(spec, ctx, device_key)
