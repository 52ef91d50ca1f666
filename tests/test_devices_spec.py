"""Checking the ``simulation:`` section (iot_dsl.devices.fleet_spec) and its error messages."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from iot_dsl.devices import SimulatedFleet
from iot_dsl.devices.fleet_spec import DEFAULT_FIRMWARE, SHAPES, parse_simulation

JAN_1_2026 = 1767225600.0


def base_spec() -> dict[str, Any]:
    return {
        "fleet": [
            {
                "type": "boiler",
                "count": 3,
                "signals": {"temp": {"shape": "sine", "base": 70, "amplitude": 15, "period": "10m"}},
            }
        ]
    }


def with_entry(**changes: Any) -> dict[str, Any]:
    spec = base_spec()
    spec["fleet"][0].update(changes)
    return spec


def with_signal(**signal: Any) -> dict[str, Any]:
    return with_entry(signals={"temp": signal})


# -- defaults and accepted forms -------------------------------------------------------------------------------


def test_defaults() -> None:
    spec = parse_simulation(base_spec(), default_stream="readings")
    assert spec.start == JAN_1_2026
    assert spec.interval == 1.0
    assert spec.stream == "readings"
    entry = spec.fleet[0]
    assert entry.path == "simulation.fleet[0]"
    assert entry.id_prefix == "boiler"
    assert entry.sites == ("default",)
    assert entry.groups is None
    assert entry.geo is None
    assert entry.firmware.versions == (DEFAULT_FIRMWARE,)
    assert entry.interval == 1.0
    assert entry.dropout == 0.0
    assert entry.offline == ()
    assert (entry.latency_min, entry.latency_max) == (0.1, 0.1)
    assert (entry.failure_rate, entry.reject_rate, entry.silent_rate) == (0.0, 0.0, 0.0)
    assert entry.fields == ()


def test_accepted_forms() -> None:
    spec = parse_simulation(
        {
            "start": "2026-03-01T12:00:00+01:00",
            "interval": "500ms",
            "stream": "telemetry",
            "fleet": [
                {
                    "type": "pump",
                    "count": 2,
                    "sites": "plant",
                    "groups": ["a", "b"],
                    "firmware": ["1.0", "1.1"],
                    "command_latency": "250ms",
                    "interval": 2,
                    "offline": [{"from": 0, "to": "1m"}],
                    "signals": {
                        "level": {"shape": "steady", "base": 3},
                        "vib": {"shape": "spike", "height": 5, "probability": 0.1},
                        "walk": {"shape": "random_walk", "step": 1, "min": 0, "max": 10},
                        "bias": {"shape": "drift", "rate": 1},
                    },
                    "fields": {"status": ["ok", "warn"]},
                },
                {"type": "valve", "count": 0},
                {"type": "meter", "count": 1, "id_prefix": "m", "command_latency": {"max": "1s"}},
                {"type": "fan", "count": 0, "id_prefix": "pump"},  # unused prefix clash is fine (no devices)
            ],
        }
    )
    assert spec.start == JAN_1_2026 + 59 * 86400 + 11 * 3600
    assert spec.interval == 0.5
    pump = spec.fleet[0]
    assert pump.sites == ("plant",)
    assert pump.interval == 2.0
    assert pump.firmware.mode == "cycle" and pump.firmware.versions == ("1.0", "1.1")
    assert (pump.latency_min, pump.latency_max) == (0.25, 0.25)
    assert pump.offline[0].fraction == 1.0
    signals = {s.name: s for s in pump.signals}
    assert signals["level"].value == 3.0  # steady without value uses base
    assert signals["vib"].width == 2.0  # spike width defaults to the entry's interval
    assert signals["bias"].per == 1.0
    assert spec.fleet[1].interval == 0.5
    assert (spec.fleet[2].latency_min, spec.fleet[2].latency_max) == (0.0, 1.0)


def test_weighted_firmware_and_geo() -> None:
    spec = parse_simulation(
        with_entry(firmware={"2.1.0": 0.7, "1.9.3": 0.3}, geo={"lat": 52.5, "lon": 13.4}, attributes={"vendor": "x"})
    )
    entry = spec.fleet[0]
    assert entry.firmware.mode == "weighted"
    assert entry.firmware.weights == (0.7, 0.3)
    assert entry.geo is not None and entry.geo.spread_km == 0.0
    assert entry.attributes == {"vendor": "x"}


def test_shapes_table_is_the_documented_list() -> None:
    assert sorted(SHAPES) == ["drift", "random_walk", "sine", "spike", "steady", "step", "stuck"]


# -- errors ----------------------------------------------------------------------------------------------------


BAD_SPECS: list[tuple[str, Any, str]] = [
    (
        "unknown shape",
        with_signal(shape="sinus", base=1),
        "simulation.fleet[0].signals.temp: unknown shape 'sinus' "
        "(expected one of: drift, random_walk, sine, spike, steady, step, stuck)",
    ),
    ("shape missing", with_signal(base=1), "simulation.fleet[0].signals.temp: missing key 'shape'"),
    ("negative count", with_entry(count=-1), "simulation.fleet[0].count: must be an integer >= 0, got -1"),
    ("bool count", with_entry(count=True), "simulation.fleet[0].count: must be an integer >= 0"),
    ("float count", with_entry(count=2.5), "simulation.fleet[0].count: must be an integer >= 0"),
    (
        "bad duration",
        with_signal(shape="sine", amplitude=1, period="10 minutes"),
        "simulation.fleet[0].signals.temp.period: cannot read '10 minutes' as a duration",
    ),
    (
        "zero period",
        with_signal(shape="sine", amplitude=1, period=0),
        "simulation.fleet[0].signals.temp.period: must be a duration greater than 0",
    ),
    (
        "zero weights",
        with_entry(firmware={"1.0": 0, "2.0": 0}),
        "simulation.fleet[0].firmware: weights must sum to more than 0",
    ),
    ("negative weight", with_entry(firmware={"1.0": -1}), "simulation.fleet[0].firmware.1.0: must be >= 0.0"),
    ("empty weights", with_entry(firmware={}), "simulation.fleet[0].firmware: needs at least one version"),
    (
        "bad firmware list",
        with_entry(firmware=["1.0", 2]),
        "simulation.fleet[0].firmware[1]: must be a non-empty string",
    ),
    ("bad firmware", with_entry(firmware=3), "simulation.fleet[0].firmware: must be a non-empty list of strings"),
    ("bad version name", with_entry(firmware={1: 1.0}), "simulation.fleet[0].firmware (a version name)"),
    ("typo key", with_entry(cuont=3), "simulation.fleet[0]: unknown key 'cuont' (did you mean 'count'?)"),
    ("unrelated key", with_entry(zzz=3), "simulation.fleet[0]: unknown key 'zzz' (expected one of: attributes,"),
    ("missing type", {"fleet": [{"count": 1}]}, "simulation.fleet[0]: missing key 'type'"),
    ("missing count", {"fleet": [{"type": "x"}]}, "simulation.fleet[0]: missing key 'count'"),
    ("entry not mapping", {"fleet": ["boiler"]}, "simulation.fleet[0]: must be a mapping, got 'boiler'"),
    ("fleet not list", {"fleet": {"type": "x"}}, "simulation.fleet: must be a list of fleet entries, got dict"),
    ("fleet is text", {"fleet": "boiler"}, "simulation.fleet: must be a list of fleet entries"),
    ("spec not mapping", ["fleet"], "simulation: must be a mapping, got list"),
    ("top-level typo", {"fleet": [], "strat": "x"}, "simulation: unknown key 'strat' (did you mean 'start'?)"),
    ("bad start", {"fleet": [], "start": "tomorrow"}, "simulation.start: cannot read 'tomorrow' as a time"),
    ("zero interval", {"fleet": [], "interval": 0}, "simulation.interval: must be at least 1ms, got 0"),
    ("tiny interval", with_entry(interval=0.0001), "simulation.fleet[0].interval: must be at least 1ms"),
    ("stream not text", {"fleet": [], "stream": 5}, "simulation.stream: must be a non-empty string, got 5"),
    ("empty type", with_entry(type=""), "simulation.fleet[0].type: must be a non-empty string, got ''"),
    ("null type", with_entry(type=None), "simulation.fleet[0].type: must be a non-empty string, got null"),
    (
        "duplicate prefix",
        {"fleet": [{"type": "a", "count": 1, "id_prefix": "x"}, {"type": "b", "count": 1, "id_prefix": "x"}]},
        "simulation.fleet[1].id_prefix: prefix 'x' is already used by simulation.fleet[0]",
    ),
    (
        "duplicate type",
        {"fleet": [{"type": "a", "count": 1}, {"type": "a", "count": 2}]},
        "simulation.fleet[1].id_prefix: prefix 'a' is already used",
    ),
    ("sites empty", with_entry(sites=[]), "simulation.fleet[0].sites: must be a non-empty list of strings, got list"),
    ("sites mapping", with_entry(sites={"a": 1}), "simulation.fleet[0].sites: must be a non-empty list"),
    ("groups bad", with_entry(groups=[""]), "simulation.fleet[0].groups[0]: must be a non-empty string"),
    ("geo lat", with_entry(geo={"lat": 91, "lon": 0}), "simulation.fleet[0].geo.lat: must be between -90.0 and 90.0"),
    ("geo lon", with_entry(geo={"lat": 0}), "simulation.fleet[0].geo: missing key 'lon'"),
    ("geo spread", with_entry(geo={"lat": 0, "lon": 0, "spread_km": -1}), "geo.spread_km: must be >= 0.0"),
    ("geo key", with_entry(geo={"lat": 0, "lon": 0, "radius": 1}), "simulation.fleet[0].geo: unknown key 'radius'"),
    ("geo not mapping", with_entry(geo=[1, 2]), "simulation.fleet[0].geo: must be a mapping, got list"),
    ("attributes core", with_entry(attributes={"site": "x"}), "simulation.fleet[0].attributes.site: 'site' is a core"),
    ("attributes key", with_entry(attributes={1: "x"}), "simulation.fleet[0].attributes: attribute names must be"),
    ("attributes list", with_entry(attributes=["x"]), "simulation.fleet[0].attributes: must be a mapping"),
    ("dropout range", with_entry(dropout=1.5), "simulation.fleet[0].dropout: must be between 0.0 and 1.0, got 1.5"),
    ("dropout text", with_entry(dropout="1%"), "simulation.fleet[0].dropout: must be a finite number, got '1%'"),
    ("dropout nan", with_entry(dropout=float("nan")), "simulation.fleet[0].dropout: must be a finite number"),
    ("dropout bool", with_entry(dropout=False), "simulation.fleet[0].dropout: must be a finite number, got bool"),
    ("rates sum", with_entry(reject_rate=0.6, failure_rate=0.6), "reject_rate + silent_rate + failure_rate"),
    ("latency order", with_entry(command_latency={"min": "1s", "max": "10ms"}), "command_latency: max (0.01 s)"),
    ("latency key", with_entry(command_latency={"avg": 1}), "simulation.fleet[0].command_latency: unknown key 'avg'"),
    ("latency bad", with_entry(command_latency="fast"), "simulation.fleet[0].command_latency: cannot read 'fast'"),
    ("offline order", with_entry(offline=[{"from": "4m", "to": "2m"}]), "offline[0]: 'to' (120.0 s) is before"),
    ("offline missing", with_entry(offline=[{"from": "4m"}]), "simulation.fleet[0].offline[0]: missing key 'to'"),
    ("offline key", with_entry(offline=[{"from": 0, "to": 1, "share": 1}]), "offline[0]: unknown key 'share'"),
    ("offline fraction", with_entry(offline=[{"from": 0, "to": 1, "fraction": 2}]), "offline[0].fraction: must be"),
    ("offline not list", with_entry(offline={"from": 0}), "simulation.fleet[0].offline: must be a list"),
    ("signals not mapping", with_entry(signals=["temp"]), "simulation.fleet[0].signals: must be a mapping"),
    ("signal not mapping", with_entry(signals={"temp": "sine"}), "simulation.fleet[0].signals.temp: must be a mapping"),
    ("signal reserved", with_entry(signals={"ts": {"shape": "steady"}}), "signals.ts: the name 'ts' is reserved"),
    ("signal name", with_entry(signals={3: {"shape": "steady"}}), "signals: signal names must be non-empty strings"),
    ("needs key", with_signal(shape="sine", amplitude=1), "signals.temp: shape 'sine' needs key 'period'"),
    ("unused key", with_signal(shape="steady", amplitude=1), "signals.temp.amplitude: not used by shape 'steady'"),
    (
        "unknown signal key",
        with_signal(shape="steady", bsae=1),
        "signals.temp: unknown key 'bsae' (did you mean 'base'?)",
    ),
    ("min max", with_signal(shape="steady", min=5, max=1), "signals.temp: min (5.0) is greater than max (1.0)"),
    ("negative noise", with_signal(shape="steady", noise=-1), "signals.temp.noise: must be >= 0.0"),
    ("negative step", with_signal(shape="random_walk", step=-1), "signals.temp.step: must be >= 0.0"),
    ("probability", with_signal(shape="spike", height=1, probability=2), "signals.temp.probability: must be between"),
    ("spike trigger", with_signal(shape="spike", height=1), "signals.temp: shape 'spike' needs 'every' (> 0) or"),
    ("spike zero", with_signal(shape="spike", height=1, every=0), "shape 'spike' needs 'every' (> 0)"),
    ("bad at", with_signal(shape="step", to=1, at="-5s"), "signals.temp.at: cannot read '-5s' as a duration"),
    ("bad base", with_signal(shape="steady", base="hot"), "signals.temp.base: must be a finite number, got 'hot'"),
    ("fields not mapping", with_entry(fields=["a"]), "simulation.fleet[0].fields: must be a mapping"),
    ("field empty", with_entry(fields={"status": []}), "fields.status: must be a non-empty list of values"),
    ("field text", with_entry(fields={"status": "ok"}), "fields.status: must be a non-empty list of values"),
    ("field reserved", with_entry(fields={"device": ["a"]}), "fields.device: the name 'device' is reserved"),
    ("field clash", with_entry(fields={"temp": ["a"]}), "fields.temp: 'temp' is already a signal"),
    ("field name", with_entry(fields={"": ["a"]}), "fields: field names must be non-empty strings"),
]


@pytest.mark.parametrize(("spec", "message"), [(s, m) for _, s, m in BAD_SPECS], ids=[n for n, _, _ in BAD_SPECS])
def test_bad_specs_name_location_and_key(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_simulation(spec)
    with pytest.raises(ValueError, match=re.escape(message)):
        SimulatedFleet(spec)


def test_parse_does_not_modify_its_input() -> None:
    spec = with_entry(firmware={"2.1.0": 0.7, "1.9.3": 0.3}, offline=[{"from": "2m", "to": "4m"}])
    before = copy.deepcopy(spec)
    parse_simulation(spec)
    assert spec == before
