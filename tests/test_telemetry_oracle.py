"""Telemetry statistics against independent oracles (pandas, brute force) on synthetic fleets (issue 4).

A seeded fleet of 10,000 devices reporting at 1 Hz (with gaps, jitter and missing values), spread over device
types, sites and three geographic clusters, goes through the aggregate operator; every statistic of every window
type must equal the oracle's to a relative error of 1e-9.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.runtime.aggregates import AggregateOperator
from iot_dsl.runtime.operators import BuildContext
from iot_dsl.storage import MemoryStore

from .conftest import compile_yaml

T0 = 1767225600.0  # 2026-01-01T00:00:00Z
TYPES = ("boiler", "pump", "valve", "fan")
SITES = ("north", "south", "east")
CLUSTERS = ((52.37, 4.90), (48.85, 2.35), (51.51, -0.13))
RTOL = 1e-9

HEADER = """
workflow: oracle
devices:
  types:
    boiler: {telemetry: {temp: number, mode: string}}
streams:
  telemetry: {key: device, time: ts, fields: {temp: number, mode: string}}
"""

ALL_STATS = {
    "n": "count()",
    "present": "count(temp)",
    "total": "sum(temp)",
    "mean": "mean(temp)",
    "low": "min(temp)",
    "high": "max(temp)",
    "var": "var(temp)",
    "sd": "std(temp)",
    "p50": "p50(temp)",
    "p95": "p95(temp)",
    "p99": "p99(temp)",
    "med": "median(temp)",
    "p999": "percentile(temp, 99.9)",
    "first": "first(temp)",
    "last": "last(temp)",
    "rate": "rate(temp)",
    "slope": "slope(temp)",
    "modes": "distinct(mode)",
}


@dataclass
class Fleet:
    """A synthetic fleet: the registry and its readings (arrival order = event-time order)."""

    registry: DeviceRegistry
    ids: list[str]
    dev: np.ndarray
    t: np.ndarray
    temp: np.ndarray
    mode: np.ndarray
    frame: pd.DataFrame


def make_fleet(devices: int, seconds: int, seed: int = 7, gaps: float = 0.02, missing: float = 0.01) -> Fleet:
    """``devices`` devices at 1 Hz for ``seconds``: per-device phase and jitter, dropped and missing readings."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(TYPES), devices)
    site = rng.integers(0, len(SITES), devices)
    lat = np.array([CLUSTERS[s][0] for s in site]) + rng.normal(0, 0.03, devices)
    lon = np.array([CLUSTERS[s][1] for s in site]) + rng.normal(0, 0.03, devices)
    ids = [f"d{i:05d}" for i in range(devices)]
    registry = DeviceRegistry(
        Device(ids[i], TYPES[kind[i]], SITES[site[i]], f"line-{i % 5}", float(lat[i]), float(lon[i]), "1.0.0", {})
        for i in range(devices)
    )
    phase = rng.random(devices) * 0.8
    dev = np.tile(np.arange(devices), seconds)
    step = np.repeat(np.arange(seconds), devices)
    t = np.round((T0 + step + phase[dev] + rng.uniform(-0.1, 0.1, dev.size)) * 1000) / 1000
    base = np.array([70.0, 20.0, 50.0, 35.0])[kind[dev]]
    temp = np.round(base + rng.normal(0, 2.0, dev.size) + 0.01 * step, 4)
    temp[rng.random(dev.size) < missing] = np.nan
    mode = np.array(["auto", "manual", "eco"], dtype=object)[rng.integers(0, 3, dev.size)]
    keep = rng.random(dev.size) >= gaps
    order = np.argsort(t[keep], kind="stable")
    dev, t, temp, mode = dev[keep][order], t[keep][order], temp[keep][order], mode[keep][order]
    frame = pd.DataFrame({
        "device": np.array(ids, dtype=object)[dev], "t": t, "temp": temp, "mode": mode,
        "type": np.array(TYPES, dtype=object)[kind[dev]], "site": np.array(SITES, dtype=object)[site[dev]],
        "lat": lat[dev], "lon": lon[dev],
    })
    return Fleet(registry, ids, dev, t, temp, mode, frame)


def build_operator(
    yaml_text: str, registry: DeviceRegistry, allowed: float = 0.0, store: Any = None
) -> tuple[AggregateOperator, BuildContext]:
    """Compile a workflow and build its (first) aggregate operator by hand, with a watermark we control."""
    plan = compile_yaml(HEADER + yaml_text)
    data = plan.data
    if allowed:
        for segment in data["segments"]:
            for op in segment["operators"]:
                if op["kind"] == "source":
                    op["config"]["allowed_lateness"] = allowed
    spec = next(op for s in data["segments"] for op in s["operators"] if op["kind"] == "aggregate")
    ctx = BuildContext(
        segment="cloud", device_attributes=data["device_attributes"], device_types=data["device_types"],
        attributes_of=registry.attributes, devices_in_scope=lambda: iter(registry), now=lambda: 0.0,
        registry=registry, plan=data, store=store if store is not None else MemoryStore(), watermarks={}, source_of={spec["id"]: "telemetry"},
    )
    return AggregateOperator(spec, ctx, "device"), ctx


def feed(op: AggregateOperator, fleet: Fleet, batch_seconds: float = 1.0) -> list[dict[str, Any]]:
    """Push the fleet's readings in event-time batches through the columnar entry point; flush; return records."""
    records: list[dict[str, Any]] = []
    edges = np.searchsorted(fleet.t, np.arange(fleet.t[0], fleet.t[-1] + batch_seconds, batch_seconds), side="left")
    edges = np.unique(np.append(edges, fleet.t.size))
    names = fleet.ids
    for lo, hi in itertools.pairwise(edges):
        op.process_columns(fleet.t[lo:hi], (fleet.dev[lo:hi], names), {"temp": fleet.temp[lo:hi], "mode": fleet.mode[lo:hi]},
                           records)
    op.flush(records)
    return records


def by_key(records: Iterable[Mapping[str, Any]], level: str) -> dict[tuple[Any, float], dict[str, Any]]:
    """Aggregate records of one level keyed by (group or device, window start)."""
    out = {}
    for r in records:
        if r["kind"] == "aggregate" and r["level"] == level:
            who = r["device"] if level == "device" else r["group"]
            out[(who, round(r["window_start"], 6))] = r["values"]
    return out


def pandas_stats(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Every statistic of ALL_STATS per group of ``keys``, computed by pandas only."""
    g = frame.groupby(keys, sort=True)
    x = g["temp"]
    out = pd.DataFrame({
        "n": g.size(), "present": x.count(), "total": x.sum(), "mean": x.mean(), "low": x.min(), "high": x.max(),
        "var": x.var(), "sd": x.std(), "p50": x.quantile(0.5), "p95": x.quantile(0.95), "p99": x.quantile(0.99),
        "med": x.median(), "p999": x.quantile(0.999), "modes": g["mode"].nunique(),
    })
    present = frame.dropna(subset=["temp"]).sort_values([*keys, "t"], kind="stable")
    gp = present.groupby(keys, sort=True)
    first, last = gp["temp"].first(), gp["temp"].last()
    t_first, t_last = gp["t"].first(), gp["t"].last()
    out["first"], out["last"] = first, last
    out["rate"] = ((last - first) / (t_last - t_first)).where((gp.size() > 1) & (t_last > t_first))
    centred_t = present["t"] - gp["t"].transform("mean")
    centred_x = present["temp"] - gp["temp"].transform("mean")
    sxy = (centred_t * centred_x).groupby([present[k] for k in keys]).sum()
    sxx = (centred_t * centred_t).groupby([present[k] for k in keys]).sum()
    out["slope"] = (sxy / sxx).where(gp.size() > 1)
    return out


def assert_equal_stats(project: Mapping[tuple[Any, float], Mapping[str, Any]], oracle: pd.DataFrame,
                       stats: Iterable[str]) -> int:
    """Every oracle row has a project row with every statistic equal (rel. error <= 1e-9); return rows compared."""
    assert len(project) == len(oracle), (len(project), len(oracle))
    compared = 0
    for name in stats:
        expected = oracle[name].to_numpy(dtype=np.float64)
        got = np.array([_num(project[(who, round(start, 6))][name]) for who, start in oracle.index], dtype=np.float64)
        both_missing = np.isnan(expected) & np.isnan(got)
        close = np.isclose(got, expected, rtol=RTOL, atol=1e-12) | both_missing
        bad = np.flatnonzero(~close)
        assert bad.size == 0, f"{name}: {bad.size} differ, e.g. {oracle.index[bad[0]]}: {got[bad[0]]} != {expected[bad[0]]}"
        compared += got.size
    return compared


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _window_frame(frame: pd.DataFrame, size: float) -> pd.DataFrame:
    out = frame.copy()
    # brute force, independent of the operator's grid arithmetic: the start is the largest multiple <= t
    start = np.floor(out["t"] / size) * size
    start = np.where(start + size <= out["t"], start + size, start)
    out["start"] = np.where(start > out["t"], start - size, start)
    return out


# ------------------------------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def big_fleet() -> Fleet:
    return make_fleet(10_000, 150)


def test_tumbling_every_statistic_per_device_and_per_group_matches_pandas(big_fleet: Fleet) -> None:
    compute = ", ".join(f'{k}: "{v}"' for k, v in ALL_STATS.items())
    op, _ = build_operator(f"""
groups:
  plant: {{hierarchy: [site, type]}}
aggregates:
  stats:
    stream: telemetry
    group: plant
    per_device: true
    window: {{tumbling: 1m}}
    compute: {{{compute}}}
""", big_fleet.registry)
    records = feed(op, big_fleet)
    frame = _window_frame(big_fleet.frame, 60.0)
    assert {T0, T0 + 60, T0 + 120} <= set(frame["start"].unique().tolist())
    compared = assert_equal_stats(by_key(records, "device"), pandas_stats(frame, ["device", "start"]), ALL_STATS)
    assert compared >= len(ALL_STATS) * 30_000
    site = pandas_stats(frame, ["site", "start"])
    assert_equal_stats(by_key(records, "site"), site, ALL_STATS)
    frame["site_type"] = frame["site"] + "/" + frame["type"]
    assert_equal_stats(by_key(records, "type"), pandas_stats(frame, ["site_type", "start"]), ALL_STATS)
    # device records name the device's outermost group (its site)
    some = next(r for r in records if r["level"] == "device")
    assert some["group"] == big_fleet.registry.get(some["device"]).site


def _geohash(lat: float, lon: float, precision: int) -> str:
    """A textbook scalar geohash (the oracle for the vectorised one)."""
    alphabet = "0123456789bcdefghjkmnpqrstuvwxyz"
    lat_range, lon_range = [-90.0, 90.0], [-180.0, 180.0]
    bits, out, even, value = 0, [], True, 0
    while len(out) < precision:
        rng, v = (lon_range, lon) if even else (lat_range, lat)
        mid = (rng[0] + rng[1]) / 2
        if v >= mid:
            value, rng[0] = value * 2 + 1, mid
        else:
            value, rng[1] = value * 2, mid
        even = not even
        bits += 1
        if bits == 5:
            out.append(alphabet[value])
            bits, value = 0, 0
    return "".join(out)


def test_tumbling_by_geohash_cells_and_regions_matches_pandas() -> None:
    big_fleet = make_fleet(10_000, 70, seed=17)
    stats = {"n": "count()", "mean": "mean(temp)", "p95": "p95(temp)", "sd": "std(temp)"}
    compute = ", ".join(f'{k}: "{v}"' for k, v in stats.items())
    frame = _window_frame(big_fleet.frame, 60.0)
    for group, oracle_key in (
        ("cells: {geohash: 4}", frame["device"].map(
            {d.id: _geohash(d.lat, d.lon, 4) for d in big_fleet.registry})),
        (
            ("zones: {regions: {amsterdam: {bbox: [52.0, 4.5, 52.8, 5.3]}, "
            "paris: {polygon: [[48.5, 2.0], [49.2, 2.0], [49.2, 2.7], [48.5, 2.7]]}}}"),
            np.where((frame["lat"].between(52.0, 52.8)) & (frame["lon"].between(4.5, 5.3)), "amsterdam",
                     np.where(frame["lat"].between(48.5, 49.2) & frame["lon"].between(2.0, 2.7), "paris", None)),
        ),
    ):
        name = group.split(":")[0]
        op, _ = build_operator(f"""
groups:
  {group}
aggregates:
  geo:
    stream: telemetry
    group: {name}
    window: {{tumbling: 1m}}
    compute: {{{compute}}}
""", big_fleet.registry)
        records = feed(op, big_fleet)
        frame["cell"] = oracle_key
        oracle = pandas_stats(frame.dropna(subset=["cell"]), ["cell", "start"])
        assert len(oracle) >= 6
        assert_equal_stats(by_key(records, name), oracle, stats)


def test_hopping_windows_match_pandas_on_each_window() -> None:
    fleet = make_fleet(2_000, 100, seed=11)
    compute = ", ".join(f'{k}: "{v}"' for k, v in ALL_STATS.items())
    op, _ = build_operator(f"""
aggregates:
  hop:
    stream: telemetry
    group_by: [type]
    per_device: true
    window: {{hopping: 30s, every: 10s}}
    compute: {{{compute}}}
""", fleet.registry)
    records = feed(op, fleet)
    parts = []
    for start in np.arange(T0 - 30, T0 + 110, 10.0):
        inside = fleet.frame[(fleet.frame["t"] >= start) & (fleet.frame["t"] < start + 30)].copy()
        inside["start"] = start
        parts.append(inside)
    frame = pd.concat(parts)
    assert_equal_stats(by_key(records, "device"), pandas_stats(frame, ["device", "start"]), ALL_STATS)
    assert_equal_stats(by_key(records, "type"), pandas_stats(frame, ["type", "start"]), ALL_STATS)


def test_session_windows_match_pandas() -> None:
    fleet = make_fleet(1_000, 120, seed=5, gaps=0.0)
    # carve idle periods: each device goes quiet for a device-specific stretch (sessions split there)
    rng = np.random.default_rng(3)
    quiet_from = rng.uniform(20, 80, len(fleet.ids))
    quiet_for = rng.choice([3.0, 8.0, 20.0], len(fleet.ids))
    rel = fleet.t - T0
    keep = ~((rel >= quiet_from[fleet.dev]) & (rel < quiet_from[fleet.dev] + quiet_for[fleet.dev]))
    fleet = Fleet(fleet.registry, fleet.ids, fleet.dev[keep], fleet.t[keep], fleet.temp[keep], fleet.mode[keep],
                  fleet.frame[keep].reset_index(drop=True))
    compute = ", ".join(f'{k}: "{v}"' for k, v in ALL_STATS.items())
    op, _ = build_operator(f"""
aggregates:
  sessions:
    stream: telemetry
    per_device: true
    window: {{session: 5s}}
    compute: {{{compute}}}
""", fleet.registry)
    records = feed(op, fleet)
    frame = fleet.frame.sort_values(["device", "t"], kind="stable").copy()
    new = (frame["device"] != frame["device"].shift()) | (frame["t"] - frame["t"].shift() >= 5.0)
    frame["session"] = new.cumsum()
    frame["start"] = frame.groupby("session")["t"].transform("min")
    oracle = pandas_stats(frame, ["device", "start"])
    project = by_key(records, "device")
    assert_equal_stats(project, oracle, ALL_STATS)
    ends = {(r["device"], round(r["window_start"], 6)): r["window_end"] for r in records if r["level"] == "device"}
    last = frame.groupby(["device", "start"])["t"].max() + 5.0
    assert all(math.isclose(ends[(d, round(s, 6))], e) for (d, s), e in last.items())
    # the "all" level: sessions of the whole fleet (readings every second keep one session going)
    everything = [r for r in records if r["level"] == "all"]
    assert len(everything) == 1 and everything[0]["values"]["n"] == len(frame)


def test_sliding_windows_match_a_brute_force_oracle() -> None:
    fleet = make_fleet(80, 60, seed=9)
    stats = {k: v for k, v in ALL_STATS.items() if k not in ("rate",)}
    compute = ", ".join(f'{k}: "{v}"' for k, v in stats.items())
    op, _ = build_operator(f"""
aggregates:
  trailing:
    stream: telemetry
    per_device: true
    window: {{sliding: 10s}}
    compute: {{{compute}}}
""", fleet.registry)
    records = [r for r in feed(op, fleet) if r["level"] == "device"]
    frame = fleet.frame.sort_values(["device", "t"], kind="stable").reset_index(drop=True)
    assert len(records) == len(frame)
    got = {(r["device"], round(r["window_end"], 6)): r for r in records}
    checked = 0
    for device, rows in frame.groupby("device", sort=False):
        t, x, mode = rows["t"].to_numpy(), rows["temp"].to_numpy(), rows["mode"].to_numpy()
        for i in range(len(rows)):
            inside = (t > t[i] - 10.0) & (np.arange(len(rows)) <= i)
            values = x[inside]
            present = values[~np.isnan(values)]
            r = got[(device, round(t[i], 6))]["values"]
            assert r["n"] == inside.sum() and r["present"] == present.size
            assert r["modes"] == len(set(mode[inside]))
            if present.size:
                assert math.isclose(r["total"], present.sum(), rel_tol=RTOL, abs_tol=1e-12)
                assert math.isclose(r["mean"], present.mean(), rel_tol=RTOL)
                assert r["low"] == present.min() and r["high"] == present.max()
                for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("med", 50), ("p999", 99.9)):
                    assert math.isclose(r[name], float(np.percentile(present, q)), rel_tol=RTOL), name
                tt = t[inside][~np.isnan(values)]
                assert r["first"] == present[np.argmin(tt)] and r["last"] == present[np.argmax(tt)]
            if present.size > 1:
                assert math.isclose(r["var"], present.var(ddof=1), rel_tol=RTOL, abs_tol=1e-12)
                assert math.isclose(r["sd"], present.std(ddof=1), rel_tol=RTOL, abs_tol=1e-12)
                tt = t[inside][~np.isnan(values)]
                slope = ((tt - tt.mean()) * (present - present.mean())).sum() / ((tt - tt.mean()) ** 2).sum()
                assert math.isclose(r["slope"], slope, rel_tol=1e-9, abs_tol=1e-12)
            else:
                assert r["var"] is None and r["sd"] is None and r["slope"] is None
            checked += 1
    assert checked == len(frame)
