"""The bounded ingest queue: backpressure for critical streams, counted shedding or sampling for the others."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from iot_dsl import Engine
from iot_dsl.runtime.ingest_queue import IngestQueue

from .conftest import compile_yaml

T0 = 1767225600.0


def plan_with(queue: str, critical: bool = False) -> Any:
    return compile_yaml(
        f"""
        workflow: w
        streams:
          s:
            key: device
            time: ts
            critical: {str(critical).lower()}
            queue: {queue}
        rules:
          - {{name: r, when: s, do: [{{alert: "{{n}}"}}]}}
        """
    )


def line(n: int) -> bytes:
    return orjson.dumps({"device": "d", "ts": T0 + n, "n": n})


def messages(records: list[dict[str, Any]]) -> list[Any]:
    return [r["message"] for r in records if r["node"] == "r"]


def test_backpressure_refuses_what_does_not_fit_and_drops_nothing() -> None:
    engine = Engine(plan_with("{max_events: 3}", critical=True))
    queue = IngestQueue(engine)
    assert queue.policy == "backpressure"
    first = queue.offer([line(0), line(1)])
    assert (first.accepted, first.refused, first.backpressure) == (2, 0, False)
    second = queue.offer([line(2), line(3), line(4)])
    assert (second.accepted, second.refused, second.shed, second.backpressure) == (1, 2, 0, True)
    assert len(queue) == 3 and not second.records
    assert messages(queue.drain(2)) == ["0", "1"]
    retry = queue.offer([line(3), line(4)])  # the producer offers the refused events again
    assert retry.accepted == 2 and retry.refused == 0
    assert messages(queue.drain()) == ["2", "3", "4"]
    assert engine.stats.events_in == 5 and engine.stats.shed == 0 and engine.stats.reconciles()


def test_shedding_is_counted_and_announced_when_it_starts_and_stops() -> None:
    engine = Engine(plan_with("{max_events: 4, on_full: shed}"))
    queue = IngestQueue(engine)
    offer = queue.offer([line(i) for i in range(6)])
    assert (offer.accepted, offer.shed, offer.refused) == (4, 2, 0)
    (started,) = offer.records
    assert started["kind"] == "alert" and started["reason"] == "shedding_started" and started["node"] == "s"
    assert started["message"] == "ingest queue of stream 's' is full (4 events): shed started"
    again = queue.offer([line(6)])
    assert again.shed == 1 and not again.records  # one alert per episode
    records = queue.drain(1)
    assert messages(records) == ["0"] and not [r for r in records if r["node"] == "s"]  # 3 left: still >= half
    records = queue.drain()
    stopped = [r for r in records if r["node"] == "s"]
    assert [(r["reason"], r["shed"]) for r in stopped] == [("shedding_stopped", 3)]
    assert messages(records) == ["1", "2", "3"]
    stats = engine.stats
    assert (stats.events_in, stats.processed, stats.shed, stats.records["alert"]) == (7, 4, 3, 4 + 2)
    assert stats.reconciles()


def test_sampling_keeps_every_kth_event_while_overloaded() -> None:
    engine = Engine(plan_with("{max_events: 4, on_full: sample, keep: 0.25}"))
    queue = IngestQueue(engine)
    assert queue.offer([line(i) for i in range(3)]).accepted == 3
    offer = queue.offer([line(i) for i in range(3, 15)])
    # overloaded: only every 4th offered event is taken, and only while there is room (1 slot)
    assert (offer.accepted, offer.shed) == (1, 11)
    records = queue.drain()
    assert messages(records) == ["0", "1", "2", "6"]
    assert [(r["reason"], r["shed"]) for r in records if r["node"] == "s"] == [("shedding_stopped", 11)]
    offer = queue.offer([line(i) for i in range(15, 18)])  # recovered: everything fits again
    assert (offer.accepted, offer.shed) == (3, 0)
    # queued events are not "in" until drained: the counts reconcile at every point
    assert engine.stats.shed == 11 and engine.stats.events_in == 15 and engine.stats.reconciles()
    assert messages(queue.drain()) == ["15", "16", "17"]
    assert engine.stats.events_in == 18 and engine.stats.reconciles()


def test_a_queue_drains_decoded_events_and_lines_in_order() -> None:
    engine = Engine(plan_with("{max_events: 10}"))
    queue = IngestQueue(engine)
    queue.offer([line(0), {"device": "d", "ts": T0 + 1, "n": 1}, {"device": "d", "ts": T0 + 2, "n": 2}, line(3)])
    assert messages(queue.drain()) == ["0", "1", "2", "3"]
    assert queue.drain() == []


def test_a_queue_needs_a_known_stream() -> None:
    plan = compile_yaml(
        """
        workflow: w
        streams:
          a: {key: device, time: ts}
          b: {key: device, time: ts, queue: {max_events: 2}}
        """
    )
    engine = Engine(plan)
    with pytest.raises(ValueError, match=r"name the stream the queue feeds \(streams: a, b\)"):
        IngestQueue(engine)
    with pytest.raises(ValueError, match=r"unknown stream 'c' \(streams: a, b\)"):
        IngestQueue(engine, "c")
    queue = IngestQueue(engine, "a")
    assert (queue.max_events, queue.policy) == (100_000, "shed")  # no queue declared: defaults
    assert IngestQueue(engine, "b").max_events == 2
