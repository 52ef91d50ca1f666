"""The seeded fleet simulator: devices, event stream, availability and commands (iot_dsl.devices.simulator)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pytest

from iot_dsl.devices import CommandOutcome, Device, DeviceRegistry, SimulatedFleet
from iot_dsl.devices.event_rows import BASE_KEYS, row_builder
from iot_dsl.devices.population import KM_PER_DEGREE, stable_hash
from iot_dsl.runtime.clock import format_time, parse_time

START = 1767225600.0


def plant_spec(count: int = 20) -> dict[str, Any]:
    """The documented example section."""
    return {
        "start": "2026-01-01T00:00:00Z",
        "interval": "1s",
        "stream": "telemetry",
        "fleet": [
            {
                "type": "boiler",
                "count": count,
                "id_prefix": "boiler",
                "sites": ["north", "south"],
                "groups": ["line-1", "line-2", "line-3"],
                "geo": {"lat": 52.5, "lon": 13.4, "spread_km": 5},
                "firmware": {"2.1.0": 0.7, "1.9.3": 0.3},
                "attributes": {"vendor": "acme"},
                "signals": {
                    "temp": {"shape": "sine", "base": 70, "amplitude": 15, "period": "10m", "noise": 0.5},
                    "pressure": {"shape": "random_walk", "base": 2.0, "step": 0.05, "min": 0, "max": 10},
                    "level": {"shape": "steady", "value": 5},
                    "load": {"shape": "step", "base": 10, "to": 50, "at": "5m"},
                    "vib": {"shape": "spike", "base": 1, "height": 20, "every": "2m", "width": "10s"},
                    "bias": {"shape": "drift", "base": 0, "rate": 0.1, "per": "1m"},
                    "stuck": {"shape": "stuck", "base": 20, "noise": 1, "at": "3m"},
                },
                "fields": {"status": ["ok", "ok", "warn"]},
                "dropout": 0.01,
                "offline": [{"from": "2m", "to": "4m", "fraction": 0.1}],
                "command_latency": {"min": "50ms", "max": "300ms"},
                "failure_rate": 0.1,
                "reject_rate": 0.05,
                "silent_rate": 0.05,
            },
            {
                "type": "pump",
                "count": 5,
                "interval": "250ms",
                "firmware": ["1.0", "1.1"],
                "signals": {"rpm": {"shape": "random_walk", "base": 1000, "step": 5}},
            },
        ],
    }


def flatten(fleet: SimulatedFleet, duration: float, **kwargs: Any) -> list[dict[str, Any]]:
    return [event for batch in fleet.events(duration, **kwargs) for event in batch]


# -- devices ---------------------------------------------------------------------------------------------------


def test_fleet_registers_its_devices() -> None:
    fleet = SimulatedFleet(plant_spec(), seed=3)
    assert isinstance(fleet.registry, DeviceRegistry)
    assert len(fleet.registry) == 25
    ids = [d.id for d in fleet.registry]
    assert ids[:3] == ["boiler-0001", "boiler-0002", "boiler-0003"]
    assert ids[-1] == "pump-0005"
    first = fleet.registry.get("boiler-0001")
    assert isinstance(first, Device)
    assert (first.type, first.site, first.group) == ("boiler", "north", "line-1")
    second = fleet.registry.get("boiler-0002")
    assert second is not None and (second.site, second.group) == ("south", "line-2")
    fourth = fleet.registry.get("boiler-0004")
    assert fourth is not None and (fourth.site, fourth.group) == ("south", "line-1")
    assert first.attrs == {"vendor": "acme"}
    pumps = [fleet.registry.get(f"pump-000{i}") for i in range(1, 6)]
    assert [p.firmware for p in pumps if p] == ["1.0", "1.1", "1.0", "1.1", "1.0"]
    assert {p.site for p in pumps if p} == {"default"}
    assert {p.group for p in pumps if p} == {"default"}  # groups default to the site
    assert {(p.lat, p.lon) for p in pumps if p} == {(0.0, 0.0)}
    assert fleet.start == START
    assert fleet.stream == "telemetry"
    assert "25 devices" in repr(fleet)


def test_positions_lie_within_spread() -> None:
    fleet = SimulatedFleet(plant_spec(count=500), seed=1)
    boilers = fleet.registry.select(lambda a: a["type"] == "boiler")
    distances = [
        math.hypot((d.lat - 52.5) * KM_PER_DEGREE, (d.lon - 13.4) * KM_PER_DEGREE * math.cos(math.radians(52.5)))
        for d in boilers
    ]
    assert max(distances) <= 5.001
    assert np.median(distances) > 2.5  # uniform over the disc, not bunched at the centre


def test_weighted_firmware_shares() -> None:
    fleet = SimulatedFleet(plant_spec(count=4000), seed=1)
    counts = Counter(d.firmware for d in fleet.registry.select(lambda a: a["type"] == "boiler"))
    assert set(counts) == {"2.1.0", "1.9.3"}
    assert counts["2.1.0"] / 4000 == pytest.approx(0.7, abs=0.03)


def test_single_firmware_string_and_geo_near_pole() -> None:
    spec = {
        "fleet": [{"type": "buoy", "count": 3, "firmware": "9.9", "geo": {"lat": 90, "lon": 179.99, "spread_km": 1}}]
    }
    fleet = SimulatedFleet(spec)
    for device in fleet.registry:
        assert device.firmware == "9.9"
        assert -90 <= device.lat <= 90
        assert -180 <= device.lon < 180


def test_devices_of_an_entry_do_not_depend_on_other_entries() -> None:
    alone = SimulatedFleet({"fleet": [plant_spec()["fleet"][1]]}, seed=4)
    together = SimulatedFleet(plant_spec(), seed=4)
    assert [together.registry.get(d.id) for d in alone.registry] == list(alone.registry)
    pump_events = [e for e in flatten(together, 20) if e["type"] == "pump"]
    assert pump_events == flatten(alone, 20)


def test_stable_hash_is_stable() -> None:
    assert stable_hash("boiler") == stable_hash("boiler")
    assert stable_hash("boiler") != stable_hash("pump")
    assert 0 <= stable_hash("boiler") < 2**64


# -- events ----------------------------------------------------------------------------------------------------


def test_event_shape() -> None:
    fleet = SimulatedFleet(plant_spec(), seed=3)
    events = flatten(fleet, 2)
    boiler = next(e for e in events if e["type"] == "boiler")
    assert list(boiler) == [
        "stream", "device", "type", "site", "group", "seq", "ts",
        "temp", "pressure", "level", "load", "vib", "bias", "stuck", "status",
    ]  # fmt: skip
    assert boiler["stream"] == "telemetry"
    assert isinstance(boiler["seq"], int) and isinstance(boiler["ts"], float)
    assert all(isinstance(boiler[k], float) for k in ("temp", "pressure", "level", "load", "vib", "bias", "stuck"))
    assert boiler["status"] in {"ok", "warn"}
    pump = next(e for e in events if e["type"] == "pump")
    assert list(pump) == ["stream", "device", "type", "site", "group", "seq", "ts", "rpm"]
    for event in events:
        assert round(event["ts"], 3) == event["ts"]
        assert parse_time(format_time(event["ts"])) == event["ts"]
        for key in ("temp", "pressure", "stuck", "rpm"):
            if key in event:
                assert round(event[key], 4) == event[key]


def test_same_seed_same_events_and_different_seed_different_events() -> None:
    first = flatten(SimulatedFleet(plant_spec(), seed=11), 60)
    again = flatten(SimulatedFleet(plant_spec(), seed=11), 60)
    other = flatten(SimulatedFleet(plant_spec(), seed=12), 60)
    assert first == again
    assert first != other
    assert [d.lat for d in SimulatedFleet(plant_spec(), seed=11).registry] != [
        d.lat for d in SimulatedFleet(plant_spec(), seed=12).registry
    ]


def test_events_are_sorted_by_time_then_device_and_batches_cover_their_window() -> None:
    fleet = SimulatedFleet(plant_spec(), seed=5)
    batches = list(fleet.events(10, batch_seconds=2))
    assert len(batches) == 5
    for index, batch in enumerate(batches):
        lo, hi = START + 2 * index, START + 2 * index + 2
        assert all(lo <= e["ts"] < hi for e in batch)
        keys = [(e["ts"], e["device"]) for e in batch]
        assert keys == sorted(keys)
    everything = [e for b in batches for e in b]
    assert [(e["ts"], e["device"]) for e in everything] == sorted((e["ts"], e["device"]) for e in everything)


def test_sorting_uses_device_id_order_beyond_9999_devices() -> None:
    spec = {"fleet": [{"type": "t", "count": 10_001, "interval": "1s", "signals": {}}]}
    fleet = SimulatedFleet(spec, seed=0)
    events = flatten(fleet, 2)
    keys = [(e["ts"], e["device"]) for e in events]
    assert keys == sorted(keys)
    assert "t-10001" in {e["device"] for e in events}


def test_seq_counts_readings_per_device_and_reports_follow_the_interval() -> None:
    fleet = SimulatedFleet(plant_spec(), seed=5)
    per_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in flatten(fleet, 30):
        per_device[event["device"]].append(event)
    for device, events in per_device.items():
        interval = 0.25 if device.startswith("pump") else 1.0
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and seqs[0] >= 1
        phase = events[0]["ts"] - START - (seqs[0] - 1) * interval
        assert 0 <= phase < interval
        for event in events:
            assert event["ts"] == pytest.approx(START + phase + (event["seq"] - 1) * interval, abs=1e-6)
    pump = per_device["pump-0001"]
    assert [e["seq"] for e in pump] == list(range(1, 121))  # no dropout for pumps: no gaps


def test_batching_and_window_do_not_change_events() -> None:
    fleet = SimulatedFleet(plant_spec(), seed=8)
    whole = flatten(fleet, 400)
    assert flatten(fleet, 400, batch_seconds=37) == whole
    assert flatten(fleet, 400, batch_seconds="7s") == whole
    later = flatten(fleet, 100, start=START + 250.5)
    assert later == [e for e in whole if START + 250.5 <= e["ts"] < START + 350.5]
    assert flatten(fleet, 100, start="2026-01-01T00:04:10.500Z") == later


def test_every_batch_is_yielded_even_when_empty() -> None:
    spec = {"fleet": [{"type": "slow", "count": 2, "interval": "10s"}]}
    fleet = SimulatedFleet(spec)
    sizes = [len(b) for b in fleet.events(30, batch_seconds=1)]
    assert len(sizes) == 30
    assert sum(sizes) == 6
    assert 0 in sizes
    assert [len(b) for b in fleet.events(2.5, batch_seconds=1)] == [sum(sizes[:1]), sum(sizes[1:2]), sum(sizes[2:3])]
    assert list(fleet.events(0)) == []


def test_window_before_the_start_is_empty() -> None:
    fleet = SimulatedFleet(plant_spec(), seed=1)
    assert [len(b) for b in fleet.events(5, start=START - 5)] == [0, 0, 0, 0, 0]
    assert flatten(fleet, 10, start=START - 5) == flatten(fleet, 5)


def test_empty_fleets_and_stream_names() -> None:
    assert [len(b) for b in SimulatedFleet({"fleet": []}).events(3)] == [0, 0, 0]
    fleet = SimulatedFleet({"fleet": [{"type": "a", "count": 0}, {"type": "b", "count": 1}]}, stream="readings")
    events = flatten(fleet, 3)
    assert {e["stream"] for e in events} == {"readings"}
    assert {e["device"] for e in events} == {"b-0001"}
    named = SimulatedFleet({"stream": "metrics", "fleet": [{"type": "b", "count": 1}]}, stream="readings")
    assert {e["stream"] for e in flatten(named, 2)} == {"metrics"}


def test_dropout_rate_is_roughly_right() -> None:
    spec = {"fleet": [{"type": "t", "count": 200, "dropout": 0.1, "signals": {"x": {"shape": "steady"}}}]}
    fleet = SimulatedFleet(spec, seed=2)
    events = flatten(fleet, 100)
    assert len(events) / 20_000 == pytest.approx(0.9, abs=0.01)
    seqs = _seqs(events)
    assert len(seqs) == 200
    for numbers in seqs.values():
        assert numbers == sorted(set(numbers))  # lost readings leave gaps, never repeats
        assert numbers[-1] <= 100
    assert any(len(numbers) < numbers[-1] for numbers in seqs.values())


def _seqs(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for event in events:
        out[event["device"]].append(event["seq"])
    return out


def test_offline_windows_silence_a_fraction_of_devices() -> None:
    spec = {
        "fleet": [
            {
                "type": "t",
                "count": 50,
                "offline": [{"from": "2m", "to": "4m", "fraction": 0.1}, {"from": "5m", "to": "5m"}],
                "signals": {"x": {"shape": "steady"}},
            }
        ]
    }
    fleet = SimulatedFleet(spec, seed=9)
    events = flatten(fleet, 360)
    silent = {d.id for d in fleet.registry if fleet.is_offline(d.id, START + 150)}
    assert len(silent) == 5
    for event in events:
        if event["device"] in silent:
            assert not (START + 120 <= event["ts"] < START + 240)
    reports = Counter(e["device"] for e in events if START + 120 <= e["ts"] < START + 240)
    assert set(reports) == {d.id for d in fleet.registry} - silent
    assert all(count == 120 for count in reports.values())
    for device_id in silent:
        assert not fleet.is_offline(device_id, START + 119.999)
        assert fleet.is_offline(device_id, START + 120)
        assert fleet.is_offline(device_id, START + 239.999)
        assert not fleet.is_offline(device_id, START + 240)
        assert not fleet.is_offline(device_id, START + 300)  # the empty window silences nobody
    assert Counter(e["device"] for e in events)[next(iter(silent))] == 360 - 120
    assert not fleet.is_offline("nope", START + 150)


def test_whole_fleet_offline_by_default_fraction() -> None:
    spec = {"fleet": [{"type": "t", "count": 4, "offline": [{"from": 0, "to": "10s"}]}]}
    fleet = SimulatedFleet(spec)
    assert flatten(fleet, 10) == []
    assert len(flatten(fleet, 12)) == 8


def test_registry_changes_show_in_later_events() -> None:
    fleet = SimulatedFleet(plant_spec(), seed=1)
    fleet.registry.remove("boiler-0003")
    fleet.registry.update("boiler-0001", site="west", group="line-9", extra=True)
    events = flatten(fleet, 5)
    assert "boiler-0003" not in {e["device"] for e in events}
    first = [e for e in events if e["device"] == "boiler-0001"]
    assert first and all(e["site"] == "west" and e["group"] == "line-9" for e in first)
    fleet.registry.add(Device("manual-1", "boiler", "x", "y", 0.0, 0.0, "1"))  # not simulated: no events
    assert "manual-1" not in {e["device"] for e in flatten(fleet, 5)}


def test_bad_event_arguments() -> None:
    fleet = SimulatedFleet(plant_spec())
    with pytest.raises(ValueError, match="duration"):
        fleet.events(-1)
    with pytest.raises(ValueError, match="batch_seconds"):
        fleet.events(10, batch_seconds=0)
    with pytest.raises(ValueError, match="duration"):
        fleet.events(10, batch_seconds="soon")
    with pytest.raises(ValueError, match="cannot read"):
        fleet.events(10, start="later")


@pytest.mark.parametrize("seed", [-1, 1.5, True, "1"])
def test_bad_seed(seed: Any) -> None:
    with pytest.raises(ValueError, match="seed"):
        SimulatedFleet(plant_spec(), seed=seed)


def test_large_fleet_generates_every_reading_slot() -> None:
    # 2,000 devices x 30 s at 1 Hz: every slot is either an event or a counted gap in its device's seq
    fleet = SimulatedFleet(plant_spec(count=2000), seed=0)
    events = [e for batch in fleet.events(30) for e in batch]
    assert len(events) > 55_000
    assert len({(e["device"], e["seq"]) for e in events}) == len(events)


# -- event rows ------------------------------------------------------------------------------------------------


def test_row_builder() -> None:
    build = row_builder(("x",))
    assert build is row_builder(("x",))
    rows = build("s", [["d"], ["t"], ["site"], ["g"], [1], [2.0], [3.5]])
    assert rows == [
        {"stream": "s", "device": "d", "type": "t", "site": "site", "group": "g", "seq": 1, "ts": 2.0, "x": 3.5}
    ]
    assert build("s", [[], [], [], [], [], [], []]) == []
    with pytest.raises(ValueError, match="repeat"):
        row_builder(("ts",))
    with pytest.raises(ValueError, match="strings"):
        row_builder((1,))
    quoted = row_builder(('it\'s "odd"\n',))
    assert list(quoted("s", [[1]] * 7)[0])[-1] == 'it\'s "odd"\n'
    assert BASE_KEYS[0] == "stream"


# -- commands --------------------------------------------------------------------------------------------------


def test_command_to_unknown_device_is_rejected() -> None:
    fleet = SimulatedFleet(plant_spec())
    outcome = fleet.command("ghost", "reboot", {}, START, "c-1")
    assert outcome == CommandOutcome("ghost", "c-1", "rejected", START, "unknown device")


def test_command_outcomes_are_deterministic_and_distributed_by_rates() -> None:
    fleet = SimulatedFleet(plant_spec(count=200), seed=6)
    boilers = [d.id for d in fleet.registry if d.type == "boiler"]
    sent_at = START + 30  # outside the offline window
    outcomes = [fleet.command(boilers[i % 200], "setpoint", {"value": 1}, sent_at, f"cmd-{i}") for i in range(6000)]
    again = [fleet.command(boilers[i % 200], "setpoint", {"value": 2}, sent_at, f"cmd-{i}") for i in range(6000)]
    assert outcomes == again
    other_seed = SimulatedFleet(plant_spec(count=200), seed=7)
    assert outcomes != [other_seed.command(boilers[i % 200], "setpoint", {}, sent_at, f"cmd-{i}") for i in range(6000)]
    shares = Counter(o.status for o in outcomes)
    assert shares["rejected"] / 6000 == pytest.approx(0.05, abs=0.015)
    assert shares["silent"] / 6000 == pytest.approx(0.05, abs=0.015)
    assert shares["failed"] / 6000 == pytest.approx(0.10, abs=0.02)
    assert shares["succeeded"] / 6000 == pytest.approx(0.80, abs=0.02)
    assert "offline" not in shares
    for outcome in outcomes:
        assert isinstance(outcome, CommandOutcome)
        if outcome.status == "silent":
            assert outcome.at is None and not outcome.answered
            assert outcome.reason == "no answer from device"
        else:
            assert outcome.at is not None and outcome.answered
            assert 0.05 - 1e-6 <= outcome.at - sent_at <= 0.3 + 1e-6
        if outcome.status == "succeeded":
            assert outcome.reason is None
        elif outcome.status == "failed":
            assert outcome.reason == "command 'setpoint' failed on device"
        elif outcome.status == "rejected":
            assert outcome.reason == "device rejected command 'setpoint'"
    latencies = [o.at - sent_at for o in outcomes if o.at is not None]
    assert np.mean(latencies) == pytest.approx(0.175, abs=0.01)


def test_command_to_offline_device() -> None:
    fleet = SimulatedFleet(plant_spec(count=50), seed=1)
    offline = [d.id for d in fleet.registry if fleet.is_offline(d.id, START + 150)]
    assert len(offline) == 5
    outcome = fleet.command(offline[0], "reboot", {}, START + 150, "c-9")
    assert outcome == CommandOutcome(offline[0], "c-9", "offline", None, "device offline")
    assert fleet.command(offline[0], "reboot", {}, START + 300, "c-9").status != "offline"


def test_command_with_fixed_latency_and_hand_added_device() -> None:
    fleet = SimulatedFleet({"fleet": [{"type": "t", "count": 2, "command_latency": "2s"}]})
    outcome = fleet.command("t-0001", "ping", {}, START, "c-1")
    assert outcome.status == "succeeded" and outcome.at == START + 2
    fleet.registry.add(Device("extra-1", "t", "s", "g", 0.0, 0.0, "1"))
    extra = fleet.command("extra-1", "ping", {}, START, "c-2")
    assert extra.status == "succeeded" and extra.at == pytest.approx(START + 0.1)
    fleet.registry.remove("t-0002")
    assert fleet.command("t-0002", "ping", {}, START, "c-3").reason == "unknown device"


@pytest.mark.parametrize("sent_at", [math.nan, "now", True])
def test_command_needs_a_finite_time(sent_at: Any) -> None:
    fleet = SimulatedFleet({"fleet": [{"type": "t", "count": 1}]})
    with pytest.raises(ValueError, match="sent_at"):
        fleet.command("t-0001", "ping", {}, sent_at, "c-1")
