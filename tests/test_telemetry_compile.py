"""The telemetry language: groups/aggregates compile into nodes; every mistake is a positioned error (issue 4)."""

from __future__ import annotations

import numpy as np
import pytest

from iot_dsl import DslErrors, Engine
from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.errors import ExprError
from iot_dsl.runtime.aggregates import parse_compute
from iot_dsl.runtime.groups import (
    Membership,
    geohash_encode,
    in_bbox,
    in_polygon,
    levels_for,
)
from iot_dsl.runtime.telemetry_stats import (
    Segments,
    StatSpec,
    compute_stats,
    percentile_of,
    stable_order,
)
from iot_dsl.runtime.windows import WindowSpec, grid_index

from .conftest import compile_yaml
from .test_telemetry_oracle import HEADER, T0

BASE = HEADER + """
groups:
  sites: {by: [site]}
  tree: {hierarchy: [site, group, id]}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(DslErrors) as caught:
        compile_yaml(text)
    return [f"{e.span.line}:{e.span.col}: {e.message}" + (f" ({e.hint})" if e.hint else "") for e in caught.value.errors]


def test_aggregate_and_anomaly_nodes_publish_streams_rules_can_use() -> None:
    plan = compile_yaml(BASE + """
aggregates:
  temps:
    stream: telemetry
    group: tree
    per_device: true
    window: {hopping: 1m, every: 30s}
    compute: {mean: "mean(temp)", n: "count()", modes: "distinct(mode)"}
    anomalies: [{on: mean, method: zscore}]
rules:
  - {when: temps, if: "mean > 90 and level == 'site'", do: [{alert: "hot {group}"}]}
  - {when: temps_anomalies, if: "score > 5", do: [{alert: "odd {device}"}]}
""")
    ops = {op["id"]: op for s in plan.segments for op in s["operators"]}
    aggregate = ops["aggregate:temps"]
    assert aggregate["config"]["window"] == {"hopping": 60.0, "every": 30.0}
    assert aggregate["config"]["group_spec"] == {"hierarchy": ["site", "group", "id"]}
    assert aggregate["fields"]["mean"] == "number" and aggregate["fields"]["modes"] == "integer"
    assert aggregate["fields"]["revision"] == "integer" and aggregate["fields"]["device"] == "string"
    assert ops["anomaly:temps"]["inputs"] == ["aggregate:temps"]
    assert ops["anomaly:temps"]["fields"]["score"] == "number"


def test_a_rule_on_anomalies_issues_commands_end_to_end() -> None:
    plan = compile_yaml(HEADER.replace("boiler: {telemetry: {temp: number, mode: string}}",
                                       "boiler: {telemetry: {temp: number, mode: string}, commands: {vent: {payload: {x: 1}}}}") + """
aggregates:
  temps:
    stream: telemetry
    per_device: true
    history: true
    window: {tumbling: 10s}
    compute: {mean: "mean(temp)"}
    anomalies: [{on: mean, method: zscore, baseline: 5, warmup: 5, level: device}]
rules:
  - {when: temps_anomalies, do: [{command: vent}]}
""")
    registry = DeviceRegistry([Device("a", "boiler", "north", "g", 0.0, 0.0, "1.0", {})])
    engine = Engine(plan, registry=registry)
    records = []
    for s in range(100):
        records += engine.push([{"device": "a", "ts": T0 + s, "temp": 20.0 + (s % 3) + (30 if s >= 80 else 0)}])
    records += engine.finish()
    (command,) = [r for r in records if r["kind"] == "command"][:1]
    assert command["device"] == "a" and command["at"] == "2026-01-01T00:01:30.000Z"
    from iot_dsl.storage.history import HistoryQuery, history_for

    stored = history_for(engine.store).query(HistoryQuery("temps", kind="anomaly"))
    assert [r["window_start"] - T0 for r in stored] == [80.0, 90.0]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(temp)\"}, gruop: sites}",
         "unknown key 'gruop' (did you mean 'group'?)"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbeling: 1m}, compute: {m: \"mean(temp)\"}}",
         "unknown key 'tumbeling' (did you mean 'tumbling'?)"),
        ("groups:\n  sites: {by: [site]}\naggregates:\n  a: {stream: telemetry, group: site, window: {tumbling: 1m}, compute: {m: \"mean(temp)\"}}",
         "unknown group 'site' (did you mean 'sites'?)"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"maen(temp)\"}}",
         "unknown statistic 'maen' (did you mean 'mean'?)"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(tmp)\"}}",
         "unknown field 'tmp'"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(mode)\"}}",
         "mean() needs numbers, got string"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"temp + 1\"}}",
         "a statistic looks like mean(temp), p95(temp) or count()"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"percentile(temp, 101)\"}}",
         "the percentile must be a number between 0 and 100"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"percentile(temp)\"}}",
         "percentile takes a value and a constant percentile: percentile(temp, 99.9)"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(temp, 2)\"}}",
         "mean() takes exactly one value"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(temp\"}}",
         "unexpected end of expression"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {group: \"count()\"}}",
         "'group' is a field every aggregate event carries; choose another name"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m, session: 5s}, compute: {n: \"count()\"}}",
         "a window has exactly one of tumbling, hopping, sliding or session"),
        ("aggregates:\n  a: {stream: telemetry, window: {every: 5s}, compute: {n: \"count()\"}}",
         "a window has exactly one of tumbling, hopping, sliding or session: none given"),
        ("aggregates:\n  a: {stream: telemetry, window: {hopping: 1m}, compute: {n: \"count()\"}}",
         "a hopping window needs 'every' (the hop), e.g. {hopping: 5m, every: 1m}"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m, every: 5s}, compute: {n: \"count()\"}}",
         "'every' applies to hopping windows only, not tumbling"),
        ("aggregates:\n  a: {stream: telemetry, window: {hopping: 1m, every: 2m}, compute: {n: \"count()\"}}",
         "'every' must be longer than 0 and at most the window size"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 0s}, compute: {n: \"count()\"}}",
         "the tumbling window must be longer than 0"),
        ("aggregates:\n  a: {stream: telemetry, group: sites, group_by: [site], window: {tumbling: 1m}, compute: {n: \"count()\"}}",
         "use either 'group' or 'group_by', not both"),
        ("aggregates:\n  a: {stream: telemetry, group_by: [stie], window: {tumbling: 1m}, compute: {n: \"count()\"}}",
         "unknown device attribute 'stie' (did you mean 'site'?)"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, where: \"temp\", compute: {n: \"count()\"}}",
         "condition must be boolean, got number"),
        ("aggregates:\n  telemetry: {stream: telemetry, window: {tumbling: 1m}, compute: {n: \"count()\"}}",
         "aggregate 'telemetry' publishes the stream 'telemetry', which already exists"),
        ("aggregates:\n  a: {stream: telemtry, window: {tumbling: 1m}, compute: {n: \"count()\"}}",
         "unknown stream 'telemtry' (did you mean 'telemetry'?)"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(temp)\"}, anomalies: [{on: maen, method: zscore}]}",
         "unknown computed value 'maen' (known: m)"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(temp)\"}, anomalies: [{method: mad}]}",
         "the mad detector needs 'on': the computed value it watches"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(temp)\"}, anomalies: [{on: m, method: zscore, alpha: 0.2}]}",
         "'alpha' applies to ewma detectors, not zscore"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(temp)\"}, anomalies: [{on: m, method: peer}]}",
         "peer comparison needs per_device: true and a group (group or group_by) on the aggregate"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"mean(temp)\"}, anomalies: [{on: m, method: mad, level: devcie}]}",
         "unknown level 'devcie' (known: all)"),
        ("aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: \"distinct(mode)\"}, anomalies: [{on: m, method: mad}]}",
         "__ok__"),
        ("groups:\n  g: {by: [site], geohash: 5}", "a group has at most one of by, hierarchy, geohash, regions; 'g' has by and geohash"),
        ("groups:\n  g: {description: nothing}", "group 'g' needs one of by, where, hierarchy, geohash or regions"),
        ("groups:\n  g: {hierarchy: [site, lien]}", "unknown device attribute 'lien' (known: firmware, group, id, lat, lon, site, type)"),
        ("groups:\n  g: {where: \"sight == 'x'\"}", "unknown field 'sight' (did you mean 'site'?)"),
        ("groups:\n  g: {regions: {r: {bbox: [1, 2, 3]}}}", "must not be empty (at least 4)"),
        ("groups:\n  g: {regions: {r: {bbox: [1, 2, 3, 4], polygon: [[0, 0], [1, 1], [0, 1]]}}}",
         "a region has exactly one of 'bbox' or 'polygon'"),
        ("groups:\n  g: {geohash: 13}", "number 13 must be <= 12"),
    ],
)
def test_mistakes_are_reported_with_their_position(snippet: str, expected: str) -> None:
    text = HEADER + snippet + "\n"
    if expected == "__ok__":
        compile_yaml(text)
        return
    messages = errors_of(text)
    assert any(expected in m for m in messages), messages
    line = next(m for m in messages if expected in m).split(":")[0]
    assert int(line) > HEADER.count("\n")  # positioned inside the snippet, not at the top of the file


def test_errors_point_inside_the_statistic_text() -> None:
    messages = errors_of(HEADER + 'aggregates:\n  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: "mean(tmp)"}}\n')
    line = HEADER.count("\n") + 2
    col = ['aggregates:', '  a: {stream: telemetry, window: {tumbling: 1m}, compute: {m: "mean(tmp)"}}'][1].index("tmp") + 1
    assert messages[0].startswith(f"{line}:{col}: unknown field 'tmp'")


def test_parse_compute_shapes() -> None:
    assert parse_compute("n", "count()").stat == StatSpec("n", "count")
    assert parse_compute("p", "p99(temp * 2)").stat == StatSpec("p", "percentile", "temp * 2", 0.99)
    assert parse_compute("p", "percentile(temp, 99.9)").stat.q == pytest.approx(0.999)
    assert parse_compute("m", "median(temp)").stat == StatSpec("m", "median", "temp", 0.5)
    with pytest.raises(ExprError) as caught:
        parse_compute("p", "percentile(temp, true)")
    assert caught.value.code == "percentile"
    assert percentile_of("p100") == 1.0 and percentile_of("p5") == 0.05 and percentile_of("p101") is None


def test_geohash_bbox_polygon_helpers() -> None:
    assert geohash_encode(np.array([57.64911]), np.array([10.40744]), 11) == ["u4pruydqqvj"]
    assert geohash_encode(np.array([-90.0, 90.0]), np.array([-180.0, 180.0]), 3) == ["000", "zzz"]
    lat, lon = np.array([0.5, 2.0, 1.0]), np.array([0.5, 2.0, 0.0])
    assert in_bbox(lat, lon, [1, 1, 0, 0]).tolist() == [True, False, True]
    lat, lon = np.array([0.5, 2.0, 1.5]), np.array([0.5, 2.0, 1.5])
    triangle = [[0, 0], [0, 2], [2, 0], [2, 0]]  # a repeated vertex makes a degenerate (horizontal) edge
    assert in_polygon(lat, lon, triangle).tolist() == [True, False, False]


def test_group_levels_and_membership_edge_cases() -> None:
    compile_where = lambda text: (lambda attrs: attrs["site"] == "n" if attrs["site"] != "boom" else 1 / 0)
    config = {"group": "g", "group_spec": {"where": "site == 'n'"}, "per_device": True}
    levels = levels_for(config, compile_where)
    assert [lv.name for lv in levels] == ["g", "device"]
    attrs = {"a": {"id": "a", "site": "n"}, "b": {"id": "b", "site": "s"}, "c": {"id": "c", "site": "boom"}}
    membership = Membership(levels, lambda d: attrs.get(d, {}))
    dev = membership.device_indices(["a", "b", "c", "z"], [{}, {}, {}, {"site": "n"}])
    assert membership.slots(0, dev).tolist() == [0, -1, -1, 0] and membership.keys(1) == ["a", "b", "c", "z"]
    geo = levels_for({"group": "cells", "group_spec": {"geohash": 2}}, compile_where)[0]
    assert geo.key({"lat": None, "lon": 1.0}) is None and geo.key({"lat": float("nan"), "lon": 0.0}) is None
    regions = levels_for({"group": "r", "group_spec": {"regions": {"x": {"polygon": [[0, 0], [0, 1], [1, 1], [1, 0]]}}}},
                         compile_where)[0]
    assert regions.key({"lat": 0.5, "lon": 0.5}) == "x" and regions.key({"lat": 5.0, "lon": 5.0}) is None
    assert regions.key({}) is None
    by = levels_for({"group_by": ["site", "type"]}, compile_where)[0]
    assert by.name == "site/type" and by.key({"site": "n", "type": "t"}) == "n/t" and by.key({"site": "n"}) is None
    assert levels_for({}, compile_where)[0].name == "all"


def test_window_grid_arithmetic_is_exact_on_boundaries() -> None:
    t = np.round(np.arange(0, 1000) * 0.001 * 7, 3)
    for step in (0.1, 0.3, 7.0 / 3):
        k = grid_index(t, step)
        assert np.all(k * step <= t) and np.all(t < (k + 1) * step)
    hop = WindowSpec("hopping", 0.3, 0.1)
    first, last = hop.grid_range(np.array([0.35]))
    assert (first.tolist(), last.tolist()) == ([1], [3])
    wide = WindowSpec("hopping", 30.0, 10.0)
    assert wide.next_grid_end(100.0) == 110.0 and wide.next_grid_end(105.0) == 110.0 and wide.next_grid_end(99.0) == 100.0
    with pytest.raises(ValueError, match="a window needs one of"):
        WindowSpec.from_config({"every": 5})


def test_statistics_edge_cases() -> None:
    seg = Segments(np.array([0, 2, 5]), np.array([2, 3, 1]), np.array([1.0, 1.0, 0.0, 1.0, 2.0, 5.0]),
                   {"x": np.array([np.nan, np.nan, 1.0, 1.0, 4.0, 7.0]),
                    "o": np.array([None, 1, "a", 1.0, [1], 3], dtype=object)})
    out = compute_stats([StatSpec("s", "sum", "x"), StatSpec("m", "mean", "x"), StatSpec("v", "var", "x"),
                         StatSpec("r", "rate", "x"), StatSpec("sl", "slope", "x"), StatSpec("d", "distinct", "o"),
                         StatSpec("lo", "min", "o"), StatSpec("f", "first", "x"), StatSpec("p", "percentile", "x", 0.5)],
                        seg)
    assert out["s"].tolist() == [0.0, 6.0, 7.0]
    assert np.isnan(out["m"][0]) and np.isnan(out["v"][2]) and np.isnan(out["r"][2]) and np.isnan(out["sl"][0])
    assert out["r"][1] == pytest.approx(1.5) and out["sl"][1] == pytest.approx(1.5)
    assert out["d"].tolist() == [1, 3, 1] and out["lo"].tolist() == [1.0, 1.0, 3.0]
    assert np.isnan(out["f"][0]) and out["f"][1] == 1.0 and np.isnan(out["p"][0]) and out["p"][1] == 1.0
    assert stable_order(np.array([70000, 3, 70000, 1])).tolist() == [3, 1, 0, 2]
    assert stable_order(np.array([1 << 33, 5, 1 << 33])).tolist() == [1, 0, 2]
    assert stable_order(np.zeros(0, dtype=np.int64)).tolist() == []
    big = Segments(np.array([0]), np.array([5000]), np.zeros(5000), {"x": np.arange(5000.0)})
    big_out = compute_stats([StatSpec("p", "percentile", "x", 0.95)], big)
    assert big_out["p"][0] == pytest.approx(np.percentile(np.arange(5000.0), 95))
    empty = Segments(np.array([0]), np.array([3000]), np.zeros(3000), {"x": np.full(3000, np.nan)})
    assert np.isnan(compute_stats([StatSpec("p", "median", "x", 0.5)], empty)["p"][0])
    none = Segments(np.array([0]), np.array([2]), np.zeros(2), {"o": np.array([None, None], dtype=object)})
    assert compute_stats([StatSpec("d", "distinct", "o")], none)["d"].tolist() == [0]
