"""The pattern benchmark's hand-coded matcher and the engine find the same matches on a generated stream."""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.pattern_workload import PATTERN_YAML, hand_matcher, project_matches
from iot_dsl import Engine

from .conftest import compile_yaml

T0 = 1767225600.0


def stream(devices: int, per_device: int, seed: int) -> list[dict[str, Any]]:
    """Readings with up to 5 s of disorder; some are redelivered."""
    rng = np.random.default_rng(seed)
    n = devices * per_device
    dev = np.tile(np.arange(devices), per_device)
    seq = np.repeat(np.arange(per_device), devices)
    ts = T0 + seq + rng.uniform(0, 0.9, n)
    temp = np.round(85 + 6 * rng.standard_normal(n), 1)
    ack = rng.random(n) < 0.05
    order = np.argsort(ts + rng.uniform(0, 4.9, n), kind="stable")
    events = []
    for i in order.tolist():
        d = int(dev[i])
        event = {"device": f"d{d}", "ts": float(ts[i]), "seq": int(seq[i]), "status": "ack" if ack[i] else "ok",
                 "temp": float(temp[i])}
        events.append(event)
        if i % 97 == 0:
            events.append(dict(event))  # redelivered right away
    return events


def test_engine_and_hand_matcher_agree_on_a_disordered_stream_with_duplicates() -> None:
    events = stream(devices=300, per_device=200, seed=1)
    engine = Engine(compile_yaml(PATTERN_YAML))
    records = []
    for i in range(0, len(events), 5000):
        records += engine.push(events[i : i + 5000])
    records += engine.finish()
    expected = hand_matcher(events)
    assert len(expected) > 500
    assert sum(r["kind"] == "dead_letter" for r in records) == 0
    assert project_matches(records) == expected


def test_hand_matcher_reads_the_pattern_as_documented() -> None:
    def e(t: float, temp: float, status: str = "ok", device: str = "d") -> dict[str, Any]:
        return {"device": device, "ts": T0 + t, "temp": temp, "status": status}

    # hot at 0, hotter at 5; an ack at 14 (within 10 s of 5) cancels; then hot 20 -> hotter 21, quiet until 31
    events = [e(0, 91), e(5, 94), e(14, 50, "ack"), e(20, 92), e(21, 95), e(40, 50), e(1, 91, device="x")]
    assert hand_matcher(events) == [("d", T0 + 20, T0 + 21)]
    # the hotter reading must come within 30 s of the hot one
    assert hand_matcher([e(0, 91), e(30, 99)]) == []
    assert hand_matcher([e(0, 91), e(29.5, 99)]) == [("d", T0, T0 + 29.5)]
    # a redelivered (device, seq) counts once: the copy (92 at 1) would otherwise take the hotter step
    dup = [{"device": "f", "ts": T0, "temp": 91, "status": "ok", "seq": 1},
           {"device": "f", "ts": T0 + 1, "temp": 99, "status": "ok", "seq": 1},
           {"device": "f", "ts": T0 + 2, "temp": 94, "status": "ok", "seq": 2}]
    assert hand_matcher(dup) == [("f", T0, T0 + 2)]
