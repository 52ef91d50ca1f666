"""Envelope fields (issue 3, speed): a source skips ``type``/``site``/``group`` only when nothing can read them,
and records and snapshots carry them either way."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from iot_dsl import Engine
from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.runtime.ingest_envelope import (
    EnvelopeFiller,
    envelope_filler,
    envelope_needed,
    time_key_needed,
)
from iot_dsl.runtime.operators import TIME_KEY, SourceBatch, stamped

from .conftest import compile_yaml

T0 = 1767225600.0

STREAM = """
workflow: w
streams:
  telemetry: {key: device, time: ts, lateness: 2s, fields: {temp: number, status: string}}
"""


def registry() -> DeviceRegistry:
    return DeviceRegistry([Device("d1", "boiler", "north", "line-1", 0.0, 0.0, "1.0.0", {})])


def source_of(engine: Engine) -> Any:
    return engine._segments["cloud"].operators[0]


def ev(t: float, temp: Any = 50.0, **extra: Any) -> dict[str, Any]:
    return {"device": "d1", "ts": T0 + t, "temp": temp, "status": "ok", **extra}


@pytest.mark.parametrize(
    ("rest", "needed"),
    [
        ("", False),  # nothing reads the stream
        ("  hot: {from: telemetry, where: 'temp > 60'}\n", False),
        ("  hot: {from: telemetry, where: \"site == 'north'\"}\n", True),
        ("  hot: {from: telemetry, derive: {f: 'temp * 2'}}\n", False),
        ("  hot: {from: telemetry, derive: {f: 'type'}}\n", True),
        ("  hot: {from: telemetry, where: 'temp > 60'}\nrules:\n  - {when: hot, do: [{alert: 'x'}]}\n", True),
        ("patterns:\n  p: {stream: telemetry, condition: 'temp > 90', for: 10s}\n", False),
        ("patterns:\n  p: {stream: telemetry, per: site, condition: 'temp > 90', for: 10s}\n", True),
        ("patterns:\n  p: {stream: telemetry, condition: \"group == 'a'\", for: 10s}\n", True),
        (
            (
                "patterns:\n  p:\n    stream: telemetry\n    sequence:\n      - {name: a, when: 'temp > 90'}\n"
                "      - {name: b, when: 'temp > a.temp'}\n      - {absent: \"status == 'ack'\", for: 5s}\n"
            ),
            False,
        ),
        (
            (
                "patterns:\n  p:\n    stream: telemetry\n    sequence:\n      - {name: a, when: 'temp > 90'}\n"
                "      - {absent: \"site == 'x'\", for: 5s}\n"
            ),
            True,
        ),
    ],
)
def test_the_envelope_is_skipped_only_when_no_operator_downstream_can_read_it(rest: str, needed: bool) -> None:
    plan = compile_yaml(STREAM + rest)
    assert envelope_needed(plan.data, "source:telemetry") is needed
    assert source_of(Engine(plan)).fill_envelope is needed


def op(op_id: str, kind: str, outputs: list[str] = (), inputs: list[str] = (), **config: Any) -> dict[str, Any]:  # type: ignore[assignment]
    return {"id": op_id, "kind": kind, "config": config, "outputs": list(outputs), "inputs": list(inputs)}


def plan_of(*ops: dict[str, Any], links: list[Any] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    return {"segments": [{"name": "cloud", "operators": list(ops)}], "links": list(links)}


def test_plans_it_cannot_read_keep_the_envelope() -> None:
    src = op("source:s", "source", ["filter:f"])
    assert envelope_needed(None, "source:s") is True
    # an expression that does not parse, an output that names no operator, events that leave over a link
    assert envelope_needed(plan_of(src, op("filter:f", "filter", where="temp >")), "source:s") is True
    assert envelope_needed(plan_of(src), "source:s") is True
    link = {"from": {"segment": "cloud", "node": "filter:f"}, "to": {"segment": "gw", "node": "x"}}
    assert envelope_needed(plan_of(src, op("filter:f", "filter", where="temp > 1")), "source:s") is False
    assert envelope_needed(plan_of(src, op("filter:f", "filter", where="temp > 1"), links=[link]), "source:s") is True
    # a diamond (the same operator reached twice) is walked once
    diamond = plan_of(
        op("source:s", "source", ["filter:a", "filter:b"]),
        op("filter:a", "filter", ["filter:c"], where="temp > 1"),
        op("filter:b", "filter", ["filter:c"], where=None),
        op("filter:c", "filter", where="temp < 9"),
    )
    assert envelope_needed(diamond, "source:s") is False


def test_a_filler_is_built_only_for_operators_fed_by_a_source_that_skips_the_envelope() -> None:
    attrs = registry().attributes
    lazy = plan_of(op("source:s", "source", ["filter:f"]), op("filter:f", "filter", inputs=["source:s"], where="temp > 1"))
    eager = plan_of(op("source:s", "source", ["rule:r"]), op("rule:r", "rule", inputs=["source:s"]))
    assert isinstance(envelope_filler(lazy, "filter:f", "device", attrs), EnvelopeFiller)
    assert envelope_filler(eager, "rule:r", "device", attrs) is None
    assert envelope_filler(None, "filter:f", "device", attrs) is None
    # no source upstream: an unknown operator, one without inputs, a cycle
    assert envelope_filler(lazy, "filter:zz", "device", attrs) is None
    assert envelope_filler(plan_of(op("filter:f", "filter")), "filter:f", "device", attrs) is None
    cycle = plan_of(op("filter:a", "filter", inputs=["filter:b"]), op("filter:b", "filter", inputs=["filter:a"]))
    assert envelope_filler(cycle, "filter:a", "device", attrs) is None


def test_the_filler_copies_only_events_that_lack_known_fields() -> None:
    fill = EnvelopeFiller("device", registry().attributes)
    event = {"device": "d1", "site": "south"}
    filled = fill(event)
    assert filled == {"device": "d1", "site": "south", "group": "line-1", "type": "boiler"}
    assert event == {"device": "d1", "site": "south"}  # a copy
    assert fill(filled) is filled  # nothing missing
    unknown = {"device": "d9"}
    assert fill(unknown) is unknown  # the registry knows nothing
    for odd in ({"device": 5}, [1, 2], "text"):
        assert fill(odd) is odd


def force_envelope(engine: Engine) -> Engine:
    """The same engine with its source filling the envelope anyway (what the records must equal)."""
    source_of(engine).fill_envelope = True
    return engine


def test_events_of_a_source_that_skips_the_envelope_do_not_carry_it_but_dead_letters_do() -> None:
    text = STREAM + "  hot: {from: telemetry, where: 'temp > 60', derive: {f: 'temp * 2'}}\n"
    plan = compile_yaml(text)
    bad = [{"device": "d1", "ts": T0, "status": "ok"}, ev(2, 70.0)]  # no temp: the filter cannot evaluate
    engine = Engine(plan, registry=registry())
    assert source_of(engine).fill_envelope is False
    records = engine.push([dict(e) for e in bad])
    dead = [r for r in records if r["kind"] == "dead_letter"]
    assert dead and all(r["event"]["site"] == "north" and r["event"]["type"] == "boiler" for r in dead)
    assert records == force_envelope(Engine(plan, registry=registry())).push([dict(e) for e in bad])
    # what the source hands on has the event time but not the envelope
    source = source_of(Engine(plan, registry=registry()))
    (out,) = source.process([ev(0)], [])
    assert TIME_KEY in out and "site" not in out


def test_derive_dead_letters_carry_the_envelope_too() -> None:
    plan = compile_yaml(STREAM + "  hot: {from: telemetry, derive: {f: 'temp * 2'}}\n")
    engine = Engine(plan, registry=registry())
    (dead,) = [r for r in engine.push([{"device": "d1", "ts": T0, "status": "ok"}]) if r["kind"] == "dead_letter"]
    assert dead["event"]["group"] == "line-1"


HOLD = STREAM + """
patterns:
  sustained:
    stream: telemetry
    condition: "temp > 90"
    for: 30s
"""

SEQUENCE = STREAM + """
patterns:
  overheat:
    stream: telemetry
    within: 30s
    sequence:
      - {name: hot, when: "temp > 90"}
      - {name: hotter, when: "temp > hot.temp + 2"}
      - {absent: "status == 'ack'", for: 10s}
"""


@pytest.mark.parametrize("text", [HOLD, SEQUENCE], ids=["hold", "sequence"])
def test_pattern_snapshots_and_dead_letters_read_the_same_as_with_the_envelope(text: str) -> None:
    plan = compile_yaml(text)
    events = [ev(0, 91.0), ev(1, 95.0), {"device": "d1", "ts": T0 + 2, "status": "ok"}, ev(3, 99.0), ev(4, 50.0)]
    lazy, eager = Engine(plan, registry=registry()), force_envelope(Engine(plan, registry=registry()))
    assert source_of(lazy).fill_envelope is False
    assert lazy.push([dict(e) for e in events]) == eager.push([dict(e) for e in events])
    snapshot = lazy.snapshot()
    assert snapshot == eager.snapshot()
    assert "north" in orjson.dumps(snapshot).decode()
    restored = Engine(plan, registry=registry())
    restored.restore(orjson.loads(orjson.dumps(snapshot)))
    assert restored.finish() == eager.finish()


SEQUENCE_ONLY = STREAM + """
patterns:
  p:
    stream: telemetry
    sequence:
      - {name: hot, when: "temp > 90"}
      - {name: hotter, when: "temp > hot.temp + 2"}
      - {absent: "status == 'ack'", for: 10s}
"""


@pytest.mark.parametrize(
    ("rest", "needed"),
    [
        ("", True),  # nothing reads the stream: stamping is harmless
        ("patterns:\n  p: {stream: telemetry, condition: 'temp > 90', for: 10s}\n", False),
        (SEQUENCE_ONLY[len(STREAM):], False),
        ("  hot: {from: telemetry, where: 'temp > 60'}\n", True),
        ("patterns:\n  p: {stream: telemetry, condition: 'temp > 90', for: 10s}\n"
         "rules:\n  - {when: telemetry, do: [{alert: 'x'}]}\n", True),
    ],
)
def test_event_times_are_left_out_of_events_only_when_patterns_alone_read_them(rest: str, needed: bool) -> None:
    plan = compile_yaml(STREAM + rest)
    assert time_key_needed(plan.data, "source:telemetry") is needed
    assert source_of(Engine(plan)).stamp_events is needed


def test_plans_it_cannot_read_keep_event_times_in_events() -> None:
    src = op("source:s", "source", ["pattern:p"])
    pattern = op("pattern:p", "pattern")
    link = {"from": {"segment": "cloud", "node": "source:s"}, "to": {"segment": "gw", "node": "x"}}
    assert time_key_needed(None, "source:s") is True
    assert time_key_needed(plan_of(src, pattern), "source:s") is False
    assert time_key_needed(plan_of(src, pattern, links=[link]), "source:s") is True  # sent over a link
    assert time_key_needed(plan_of(src), "source:s") is True  # an output that names no operator
    assert time_key_needed(plan_of(pattern), "source:s") is True  # not in the plan


def test_a_source_batch_without_times_in_its_events_gets_them_when_another_reader_needs_them() -> None:
    events = [{"device": "d1"}, {"device": "d2"}]
    batch = SourceBatch(events, np.array([T0, T0 + 1]), ["d1", "d2"], stamped=False)
    assert stamped(batch) is batch and [e[TIME_KEY] for e in batch] == [T0, T0 + 1] and batch.stamped
    plain = [{"device": "d3"}]
    assert stamped(plain) is plain and TIME_KEY not in plain[0]


def test_unstamped_pattern_input_gives_the_same_records_and_snapshots_as_stamped_input() -> None:
    plan = compile_yaml(SEQUENCE_ONLY)
    events = [ev(0, 91.0), ev(1, 95.0), ev(2, 50.0), ev(3, 99.0), ev(30, 50.0), ev(31, 93.0)]
    lazy, eager = Engine(plan), Engine(plan)
    assert source_of(lazy).stamp_events is False
    source_of(eager).stamp_events = True
    for part in (events[:3], events[3:]):
        assert lazy.push([dict(e) for e in part]) == eager.push([dict(e) for e in part])
    snapshot = lazy.snapshot()
    assert snapshot["operators"]["cloud"]["pattern:p"]["buffer"]  # something was held back
    assert snapshot == eager.snapshot() and all(TIME_KEY in e for e in snapshot["operators"]["cloud"]["pattern:p"]["buffer"])
    restored = Engine(plan)
    restored.restore(orjson.loads(orjson.dumps(snapshot)))
    assert restored.finish() == eager.finish()
