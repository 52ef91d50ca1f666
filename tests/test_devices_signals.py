"""Every signal shape produces its documented values (iot_dsl.devices.signals via SimulatedFleet.events)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pytest

from iot_dsl.devices import SimulatedFleet
from iot_dsl.devices import signals as signals_module
from iot_dsl.devices.random_streams import derive_keys, mix64, normal, purpose_tag, uniform
from iot_dsl.devices.signals import RandomWalk, signal_values

START = 1767225600.0


def fleet_with(signals: dict[str, Any], *, count: int = 1, seed: int = 0, **entry: Any) -> SimulatedFleet:
    spec = {"fleet": [{"type": "probe", "count": count, "signals": signals, **entry}]}
    return SimulatedFleet(spec, seed=seed)


def series(fleet: SimulatedFleet, duration: float, name: str, **kwargs: Any) -> dict[str, list[tuple[float, float]]]:
    """(seconds since start, value) per device."""
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for batch in fleet.events(duration, **kwargs):
        for event in batch:
            out[event["device"]].append((event["ts"] - fleet.start, event[name]))
    return out


def values_of(fleet: SimulatedFleet, duration: float, name: str) -> np.ndarray:
    return np.array([v for points in series(fleet, duration, name).values() for _, v in points])


def test_steady_is_constant() -> None:
    fleet = fleet_with({"level": {"shape": "steady", "value": 5}, "other": {"shape": "steady", "base": 2}}, count=3)
    assert set(values_of(fleet, 30, "level").tolist()) == {5.0}
    assert set(values_of(fleet, 30, "other").tolist()) == {2.0}
    assert set(values_of(fleet_with({"z": {"shape": "steady"}}), 5, "z").tolist()) == {0.0}


def test_sine_hits_base_plus_and_minus_amplitude_and_repeats_each_period() -> None:
    fleet = fleet_with({"temp": {"shape": "sine", "base": 70, "amplitude": 15, "period": "1m"}}, count=2)
    points = series(fleet, 180, "temp")
    for device_points in points.values():
        values = np.array([v for _, v in device_points])
        assert values.max() == pytest.approx(85.0, abs=0.05)
        assert values.min() == pytest.approx(55.0, abs=0.05)
        assert values.mean() == pytest.approx(70.0, abs=0.1)
        t0, v0 = device_points[3]
        t1, v1 = device_points[63]  # one period later at 1 s interval
        assert t1 - t0 == pytest.approx(60.0)
        assert v1 == pytest.approx(v0, abs=1e-3)
        for t, v in device_points[:5]:
            assert v == pytest.approx(70 + 15 * np.sin(2 * np.pi * t / 60), abs=1e-4)


def test_step_changes_exactly_at_at() -> None:
    fleet = fleet_with({"load": {"shape": "step", "base": 10, "to": 50, "at": "5m"}}, count=4)
    for device_points in series(fleet, 600, "load").values():
        assert all(v == 10.0 for t, v in device_points if t < 300)
        assert all(v == 50.0 for t, v in device_points if t >= 300)


def test_stuck_varies_before_at_and_is_constant_afterwards() -> None:
    fleet = fleet_with({"stuck": {"shape": "stuck", "base": 20, "noise": 1, "at": "3m"}}, count=5)
    for device_points in series(fleet, 400, "stuck").values():
        before = [v for t, v in device_points if t < 180]
        after = [v for t, v in device_points if t >= 180]
        assert len(set(before)) > 100
        assert 19 < np.mean(before) < 21
        assert len(set(after)) == 1
        assert after[0] == before[-1]  # frozen at the last reading before `at`


def test_stuck_at_zero_freezes_at_first_reading() -> None:
    fleet = fleet_with({"stuck": {"shape": "stuck", "base": 20, "noise": 1, "at": 0}}, count=3)
    for device_points in series(fleet, 60, "stuck").values():
        assert len({v for _, v in device_points}) == 1


def test_drift_grows_at_rate() -> None:
    fleet = fleet_with({"bias": {"shape": "drift", "base": 1, "rate": 0.1, "per": "1m"}}, count=2)
    for device_points in series(fleet, 600, "bias").values():
        t = np.array([p[0] for p in device_points])
        v = np.array([p[1] for p in device_points])
        slope, intercept = np.polyfit(t, v, 1)
        assert slope == pytest.approx(0.1 / 60, rel=1e-3)
        assert intercept == pytest.approx(1.0, abs=1e-3)
        assert v[-1] == pytest.approx(1 + 0.1 * t[-1] / 60, abs=1e-4)


def test_periodic_spikes_appear_in_their_windows_only() -> None:
    fleet = fleet_with({"vib": {"shape": "spike", "base": 1, "height": 20, "every": "2m", "width": "10s"}}, count=3)
    for device_points in series(fleet, 600, "vib").values():
        for t, v in device_points:
            in_window = t >= 120 and (t % 120) < 10
            assert v == (21.0 if in_window else 1.0)
        assert sum(1 for _, v in device_points if v == 21.0) == 40  # 4 windows x 10 readings


def test_random_spikes_have_their_probability() -> None:
    fleet = fleet_with({"vib": {"shape": "spike", "base": 0, "height": 1, "probability": 0.05}}, count=50)
    values = values_of(fleet, 200, "vib")
    assert set(values.tolist()) == {0.0, 1.0}
    assert values.mean() == pytest.approx(0.05, abs=0.01)


def test_random_walk_starts_at_base_moves_by_step_and_respects_bounds() -> None:
    fleet = fleet_with(
        {"pressure": {"shape": "random_walk", "base": 2.0, "step": 0.05, "min": 1.5, "max": 2.5}}, count=20
    )
    diffs: list[float] = []
    for device_points in series(fleet, 300, "pressure").values():
        values = np.array([v for _, v in device_points])
        assert values[0] == 2.0
        assert values.min() >= 1.5 and values.max() <= 2.5
        step = np.diff(values)
        diffs.extend(step[(values[1:] > 1.5) & (values[1:] < 2.5) & (values[:-1] > 1.5) & (values[:-1] < 2.5)])
    assert np.std(diffs) == pytest.approx(0.05, rel=0.1)
    assert len({round(d, 4) for d in diffs}) > 100


def test_random_walk_hits_its_bounds() -> None:
    fleet = fleet_with({"p": {"shape": "random_walk", "base": 0, "step": 1, "min": -2, "max": 2}}, count=5)
    values = values_of(fleet, 300, "p")
    assert values.min() == -2.0 and values.max() == 2.0


def test_random_walk_is_continuous_across_batches_and_windows() -> None:
    fleet = fleet_with({"p": {"shape": "random_walk", "base": 0, "step": 1}}, count=7, dropout=0.2)
    whole = [e for b in fleet.events(300) for e in b]
    chunked = [e for b in fleet.events(300, batch_seconds=13) for e in b]
    late = [e for b in fleet.events(100, start=START + 200) for e in b]
    assert whole == chunked
    assert late == [e for e in whole if e["ts"] >= START + 200]


def test_random_walk_replay_in_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = fleet_with({"p": {"shape": "random_walk", "base": 0, "step": 1, "max": 3}}, count=6)
    expected = [e for b in fleet.events(10, start=START + 500) for e in b]
    monkeypatch.setattr(signals_module, "_REPLAY_CHUNK", 5)
    again = [e for b in fleet.events(10, start=START + 500) for e in b]
    assert again == expected
    assert len(expected) == 60


def test_noise_has_its_standard_deviation_and_min_max_clamp() -> None:
    fleet = fleet_with({"temp": {"shape": "steady", "value": 10, "noise": 2}}, count=40)
    values = values_of(fleet, 100, "temp")
    assert values.mean() == pytest.approx(10, abs=0.1)
    assert values.std() == pytest.approx(2, rel=0.05)
    clamped = values_of(
        fleet_with({"t": {"shape": "steady", "value": 10, "noise": 2, "min": 9, "max": 11}}, count=20), 100, "t"
    )
    assert clamped.min() == 9.0 and clamped.max() == 11.0


def test_categorical_fields_follow_list_frequencies() -> None:
    fleet = fleet_with({}, count=50, fields={"status": ["ok", "ok", "warn"], "mode": [1]})
    counts = Counter(e["status"] for b in fleet.events(100) for e in b)
    assert set(counts) == {"ok", "warn"}
    assert counts["ok"] / sum(counts.values()) == pytest.approx(2 / 3, abs=0.02)
    assert {e["mode"] for b in fleet.events(3) for e in b} == {1}


def test_signal_values_needs_walk_state_for_random_walk() -> None:
    fleet = fleet_with({"p": {"shape": "random_walk", "step": 1}})
    population = fleet._populations[0]
    signal = population.entry.signals[0]
    empty = np.zeros(1, dtype=np.int64)
    with pytest.raises(ValueError, match="walk state"):
        signal_values(signal, population, empty, empty, empty + population.start_ms)
    walk = RandomWalk(signal, population)
    grid = walk.grid_values(np.array([[0, 1, 2]], dtype=np.int64), np.array([[True, True, False]]))
    assert grid[0, 0] == 0.0 and np.isnan(grid[0, 2])


# -- random streams ---------------------------------------------------------------------------------------------


def test_random_streams_are_pure_functions_of_key_and_counter() -> None:
    keys = derive_keys(np.arange(4, dtype=np.uint64), purpose_tag(1, 2))
    counters = np.arange(4, dtype=np.int64)
    assert np.array_equal(uniform(keys, counters), uniform(keys.copy(), counters.copy()))
    assert not np.array_equal(uniform(keys, counters), uniform(keys, counters + 1))
    assert purpose_tag(1, 2) != purpose_tag(2, 1)
    assert mix64(np.zeros(1, dtype=np.uint64))[0] == 0  # the finaliser fixes zero; keys are never raw zeros
    big_keys = np.repeat(keys, 50_000)
    big_counters = np.tile(np.arange(50_000, dtype=np.int64), 4)
    u = uniform(big_keys, big_counters)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert u.mean() == pytest.approx(0.5, abs=0.01)
    z = normal(big_keys, big_counters)
    assert z.mean() == pytest.approx(0.0, abs=0.02)
    assert z.std() == pytest.approx(1.0, abs=0.02)
