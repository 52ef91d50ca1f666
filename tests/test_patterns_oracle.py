"""Pattern matches equal an independent brute-force oracle (issue 3 acceptance).

The oracle reads the documented semantics literally: it enumerates, offline and per key, every assignment of
events to steps that the contiguity, repetition, ``within``, absence and guard rules allow, then applies the
after-match strategy by walking the matches in completion order. It shares no code with the engine: conditions
are Python lambdas, there are no watermarks, buffers, runs or timers.
"""

from __future__ import annotations

import dataclasses
import random
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from iot_dsl import Engine
from iot_dsl.runtime.clock import format_time

from .conftest import compile_yaml

T0 = 1767225600.0
Cond = Callable[[dict[str, Any], dict[str, list[dict[str, Any]]]], bool]


@dataclass
class OStep:
    name: str
    cond: Cond
    min: int = 1
    max: float = 1
    consecutive: bool = False
    contiguity: str = "followed_by"
    guard: Cond | None = None


@dataclass
class OPattern:
    steps: list[OStep]
    within: float | None = None
    absent: Cond | None = None
    absent_for: float | None = None
    skip: bool = True
    starts: list[int] = field(default_factory=list)


def oracle_key(events: Sequence[dict[str, Any]], p: OPattern) -> list[tuple[float, list[tuple[str, dict[str, Any]]]]]:
    """All matches of one key's events (sorted by time): (completion time, [(step name, event), ...])."""
    E, N = events, len(events)
    T = [e["ts"] for e in E]
    steps = p.steps
    found: list[tuple[tuple[Any, ...], float, list[tuple[int, int]]]] = []

    def in_window(start_t: float, k: int) -> bool:
        return p.within is None or not (start_t + p.within <= T[k])

    def ctx_of(assign: list[tuple[int, int]]) -> dict[str, list[dict[str, Any]]]:
        ctx: dict[str, list[dict[str, Any]]] = {}
        for j, i in assign:
            ctx.setdefault(steps[j].name, []).append(E[i])
        return ctx

    def candidates(i: int, cond: Cond, mode: str, guard: Cond | None, ctx: Any, start_t: float) -> list[int]:
        horizon = [k for k in range(i + 1, N) if in_window(start_t, k)]  # times increase: a prefix
        if mode == "next":
            ks = [i + 1] if horizon[:1] == [i + 1] and cond(E[i + 1], ctx) else []
        elif mode == "followed_by":
            ks = [k for k in horizon if cond(E[k], ctx)][:1]
        else:
            ks = [k for k in horizon if cond(E[k], ctx)]
        if guard is not None:
            ks = [k for k in ks if not any(guard(E[m], ctx) for m in range(i + 1, k))]
        return ks

    def complete(assign: list[tuple[int, int]], start_t: float, ctx: Any) -> None:
        last = assign[-1][1]
        idxs = tuple(i for _, i in assign)
        if p.absent is None:
            found.append(((T[last], 0, last, assign[0][1], idxs), T[last], assign))
            return
        deadline = T[last] + p.absent_for if p.absent_for is not None else start_t + p.within  # type: ignore[operator]
        if any(p.absent(E[m], ctx) for m in range(last + 1, N) if T[m] <= deadline):
            return
        found.append(((deadline, 1, 0, assign[0][1], idxs), deadline, assign))

    def dfs(assign: list[tuple[int, int]], s: int, count: int, start_t: float) -> None:
        ctx = ctx_of(assign)
        i = assign[-1][1]
        step = steps[s]
        if count < step.max:
            mode = "next" if step.consecutive else "followed_by"
            for k in candidates(i, step.cond, mode, None, ctx, start_t):
                dfs([*assign, (s, k)], s, count + 1, start_t)
        if count < step.min:
            return
        j = s + 1
        while j < len(steps):
            nxt = steps[j]
            for k in candidates(i, nxt.cond, nxt.contiguity, nxt.guard, ctx, start_t):
                dfs([*assign, (j, k)], j, 1, start_t)
            if nxt.min > 0:
                return
            j += 1
        complete(assign, start_t, ctx)

    starts = []
    for j, step in enumerate(steps):
        starts.append(j)
        if step.min > 0:
            break
    for i in range(N):
        for j in starts:
            if steps[j].cond(E[i], {}):
                dfs([(j, i)], j, 1, T[i])
    found.sort(key=lambda f: f[0])
    kept = []
    past = -1
    for order, at, assign in found:
        if p.skip and assign[0][1] <= past:
            continue
        kept.append((at, [(steps[j].name, E[i]) for j, i in assign]))
        if p.skip:
            past = assign[-1][1]
    return kept


def oracle(events: Sequence[dict[str, Any]], p: OPattern, per: Sequence[str]) -> list[tuple[Any, ...]]:
    """Matches of every key as comparable tuples (key, completion time, ((step, device, seq), ...))."""
    by_key: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for e in events:
        by_key.setdefault(tuple(e[f] for f in per), []).append(e)
    out = []
    for key, evs in by_key.items():
        evs.sort(key=lambda e: e["ts"])
        for at, taken in oracle_key(evs, p):
            out.append((key, format_time(at), tuple((name, e["device"], e["seq"]) for name, e in taken)))
    return sorted(out)


def project(records: Sequence[dict[str, Any]], per: Sequence[str], node: str) -> list[tuple[Any, ...]]:
    """The engine's match records as the oracle's tuples."""
    out = []
    for r in records:
        if r["kind"] != "match" or r["node"] != node:
            continue
        taken = sorted((s["ts"], name, s["device"], s["seq"]) for name, items in r["steps"].items() for s in items)
        out.append((tuple(r["key"][f] for f in per), r["at"], tuple((n, d, q) for _, n, d, q in taken)))
    return sorted(out)


def last(ctx: dict[str, list[dict[str, Any]]], step: str, name: str) -> Any:
    events = ctx.get(step)
    return events[-1][name] if events else None


def gt(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a > b


# ---- the pattern library: workflow YAML and the oracle's reading of it -------------------------------------

LIBRARY: dict[str, tuple[str, OPattern]] = {
    "absence_at_end": (
        """
        within: 20s
        sequence:
          - {name: a, when: "temp >= 7"}
          - {name: b, when: "temp >= a.temp"}
          - {absent: "status == 'ack'", for: 5s}
        """,
        OPattern(
            [OStep("a", lambda e, c: e["temp"] >= 7), OStep("b", lambda e, c: e["temp"] >= last(c, "a", "temp"))],
            within=20, absent=lambda e, c: e["status"] == "ack", absent_for=5,
        ),
    ),
    "consecutive_range_then_next": (
        """
        sequence:
          - {name: a, when: "temp >= 6", times: {min: 2, max: 3}, consecutive: true}
          - {name: b, when: "temp <= 3", contiguity: next}
        """,
        OPattern(
            [OStep("a", lambda e, c: e["temp"] >= 6, 2, 3, consecutive=True),
             OStep("b", lambda e, c: e["temp"] <= 3, contiguity="next")],
        ),
    ),
    "one_or_more_any_with_avg": (
        """
        within: 10s
        sequence:
          - {name: a, when: "temp >= 5", times: "1+"}
          - {name: b, when: "temp < avg(a.temp) - 2", contiguity: followed_by_any}
        """,
        OPattern(
            [OStep("a", lambda e, c: e["temp"] >= 5, 1, float("inf")),
             OStep("b", lambda e, c: e["temp"] < sum(x["temp"] for x in c["a"]) / len(c["a"]) - 2,
                   contiguity="followed_by_any")],
            within=10,
        ),
    ),
    "optional_middle_with_count": (
        """
        within: 15s
        sequence:
          - {name: a, when: "temp >= 8"}
          - {name: b, when: "temp == 0", optional: true}
          - {name: c, when: "temp >= 7 and temp > count(b) + 6 and (b.seq == null or b.seq > a.seq)"}
        """,
        OPattern(
            [OStep("a", lambda e, c: e["temp"] >= 8),
             OStep("b", lambda e, c: e["temp"] == 0, 0, 1),
             OStep("c", lambda e, c: e["temp"] >= 7 and e["temp"] > len(c.get("b", [])) + 6
                   and (last(c, "b", "seq") is None or gt(last(c, "b", "seq"), last(c, "a", "seq"))))],
            within=15,
        ),
    ),
    "absence_in_the_middle": (
        """
        within: 10s
        sequence:
          - {name: a, when: "temp >= 7"}
          - {absent: "status == 'ack'"}
          - {name: b, when: "temp >= 7", contiguity: followed_by_any}
        """,
        OPattern(
            [OStep("a", lambda e, c: e["temp"] >= 7),
             OStep("b", lambda e, c: e["temp"] >= 7, contiguity="followed_by_any",
                   guard=lambda e, c: e["status"] == "ack")],
            within=10,
        ),
    ),
    "relaxed_times_then_absence_until_within": (
        """
        within: 8s
        sequence:
          - {name: a, when: "temp >= 5", times: 2}
          - {absent: "status == 'ack' or temp == min(a.temp)"}
        """,
        OPattern(
            [OStep("a", lambda e, c: e["temp"] >= 5, 2, 2)],
            within=8, absent=lambda e, c: e["status"] == "ack" or e["temp"] == min(x["temp"] for x in c["a"]),
        ),
    ),
    "optional_start_then_next": (
        """
        sequence:
          - {name: a, when: "temp == 9", optional: true}
          - {name: b, when: "temp >= 8 and (a.temp == null or temp <= a.temp)", contiguity: next}
          - {name: c, when: "temp <= 2 and last(b.temp) >= 8 and first(b.seq) == max(b.seq)", contiguity: next}
        """,
        OPattern(
            [OStep("a", lambda e, c: e["temp"] == 9, 0, 1),
             OStep("b", lambda e, c: e["temp"] >= 8 and (last(c, "a", "temp") is None or e["temp"] <= last(c, "a", "temp")),
                   contiguity="next"),
             OStep("c", lambda e, c: e["temp"] <= 2, contiguity="next")],
        ),
    ),
    "guarded_loop_sum_min_max": (
        """
        within: 12s
        sequence:
          - {name: a, when: "temp >= 4", times: {min: 1, max: 3}, consecutive: true}
          - {absent: "status == 'ack'"}
          - {name: b, when: "temp * 3 > sum(a.temp) and temp > min(a.temp) and temp >= max(a.temp)"}
        """,
        OPattern(
            [OStep("a", lambda e, c: e["temp"] >= 4, 1, 3, consecutive=True),
             OStep("b", lambda e, c: e["temp"] * 3 > sum(x["temp"] for x in c["a"])
                   and e["temp"] > min(x["temp"] for x in c["a"]) and e["temp"] >= max(x["temp"] for x in c["a"]),
                   guard=lambda e, c: e["status"] == "ack")],
            within=12,
        ),
    ),
}


def workflow(body: str, name: str, after: str, lateness: str = "3s", per: str = "") -> str:
    inner = textwrap.indent(textwrap.dedent(body).strip(), "    ")
    return f"""
workflow: oracle
streams:
  telemetry: {{key: device, time: ts, lateness: {lateness}, fields: {{temp: number, status: string}}}}
patterns:
  {name}:
    stream: telemetry
    after_match: {after}
    max_partial: 100000
{per}{inner}
"""


def random_events(seed: int, devices: int = 3, per_device: int = 40) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    events = []
    seq = 0
    for d in range(devices):
        t = T0 + d * 0.01
        for _ in range(per_device):
            t += rng.choice([0.5, 1.0, 1.5, 2.0, 3.0])
            seq += 1
            status = "ack" if rng.random() < 0.12 else "ok"
            events.append({"device": f"d{d}", "ts": round(t, 3), "seq": seq, "temp": rng.randint(0, 9), "status": status,
                           "site": f"s{d % 2}"})
    return events


def disorder(events: list[dict[str, Any]], bound: float, seed: int) -> list[dict[str, Any]]:
    """Arrival order: each event is delayed by up to ``bound`` seconds of event time."""
    rng = random.Random(seed)
    return [e for _, e in sorted(((e["ts"] + rng.uniform(0, bound * 0.999), e) for e in events), key=lambda p: p[0])]


def run_engine(text: str, arrivals: list[dict[str, Any]], seed: int, snapshot_at: int | None = None) -> list[dict[str, Any]]:
    plan = compile_yaml(text)
    engine = Engine(plan)
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    i = 0
    while i < len(arrivals):
        size = rng.randint(1, 12)
        records += engine.push(arrivals[i : i + size])
        i += size
        if snapshot_at is not None and i >= snapshot_at:
            engine2 = Engine(plan)
            engine2.restore(engine.snapshot())
            engine, snapshot_at = engine2, None
    records += engine.finish()
    return records


@pytest.mark.parametrize("after", ["skip_past_last", "all"])
@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_engine_equals_oracle_on_random_disordered_streams(name: str, after: str) -> None:
    body, opattern = LIBRARY[name]
    opattern = dataclasses.replace(opattern, skip=after == "skip_past_last")
    text = workflow(body, name, after)
    total = 0
    for seed in range(6):
        events = random_events(seed)
        expected = oracle(events, opattern, ["device"])
        got = project(run_engine(text, disorder(events, 3.0, seed), seed), ["device"], name)
        assert got == expected, f"seed {seed}"
        total += len(expected)
    assert total > 0  # the pattern does match on these streams


def test_disorder_within_lateness_does_not_change_the_matches_and_snapshot_restore_is_seamless() -> None:
    body, opattern = LIBRARY["absence_at_end"]
    text = workflow(body, "p", "skip_past_last")
    events = random_events(11, devices=4, per_device=60)
    in_order = project(run_engine(text, sorted(events, key=lambda e: e["ts"]), 1), ["device"], "p")
    for seed in range(3):
        arrivals = disorder(events, 3.0, seed)
        assert project(run_engine(text, arrivals, seed), ["device"], "p") == in_order
        assert project(run_engine(text, arrivals, seed, snapshot_at=100 + 40 * seed), ["device"], "p") == in_order
    assert in_order == oracle(events, opattern, ["device"])


def test_per_site_key_matches_across_devices_of_one_site_only() -> None:
    body = """
    per: [site]
    within: 6s
    sequence:
      - {name: a, when: "temp >= 8"}
      - {name: b, when: "temp >= 8 and device != a.device"}
    """
    opattern = OPattern(
        [OStep("a", lambda e, c: e["temp"] >= 8), OStep("b", lambda e, c: e["temp"] >= 8 and e["device"] != last(c, "a", "device"))],
        within=6,
    )
    text = workflow(body, "pair", "skip_past_last")
    events = random_events(5, devices=6, per_device=50)
    records = run_engine(text, disorder(events, 3.0, 5), 5)
    got = project(records, ["site"], "pair")
    assert got and got == oracle(events, opattern, ["site"])
    site_of = {e["device"]: e["site"] for e in events}
    for key, _, taken in got:
        assert {site_of[d] for _, d, _ in taken} == {key[0]}
        assert len({d for _, d, _ in taken}) == 2


# ---- a million events ---------------------------------------------------------------------------------------

MILLION_YAML = """
workflow: million
streams:
  telemetry: {key: device, time: ts, lateness: 5s, fields: {temp: number, status: string}}
patterns:
  overheat:
    stream: telemetry
    within: 30s
    sequence:
      - {name: hot, when: "temp > 90"}
      - {name: hotter, when: "temp > hot.temp + 2"}
      - {absent: "status == 'ack'", for: 10s}
  surge:
    stream: telemetry
    within: 20s
    after_match: all
    sequence:
      - {name: high, when: "temp > 88", times: {min: 2, max: 3}, consecutive: true}
      - {name: drop, when: "temp < avg(high.temp) - 15", contiguity: next}
  site_pair:
    stream: telemetry
    per: [site]
    within: 2s
    sequence:
      - {name: first, when: "temp > 95"}
      - {name: second, when: "temp > 95 and device != first.device"}
"""


def million_events(devices: int = 10_000, per_device: int = 100, seed: int = 42) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    n = devices * per_device
    dev = np.tile(np.arange(devices), per_device)
    step = np.repeat(np.arange(per_device), devices)
    ts = np.round(T0 + step * 1.0 + dev / devices, 4)  # unique per device: a phase below one second
    walk = rng.normal(0, 1, size=(per_device, devices)).cumsum(axis=0).ravel()
    temp = np.round(78 + 6 * np.sin(step / 7 + dev) + 2 * walk / np.sqrt(1 + step) + rng.normal(0, 5, n), 1)
    ack = rng.random(n) < 0.03
    names = [f"dev-{i:05d}" for i in range(devices)]
    sites = [f"site-{i % 100:03d}" for i in range(devices)]
    return [
        {"device": names[d], "site": sites[d], "type": "boiler", "group": "g", "ts": t, "seq": k, "temp": x,
         "status": "ack" if a else "ok"}
        for k, (d, t, x, a) in enumerate(zip(dev.tolist(), ts.tolist(), temp.tolist(), ack.tolist()))
    ]


def test_a_million_events_from_10k_devices_with_5s_disorder_equal_the_oracle() -> None:
    events = million_events()
    rng = np.random.default_rng(7)
    arrival = np.argsort(np.array([e["ts"] for e in events]) + rng.uniform(0, 4.999, len(events)), kind="stable")
    arrivals = [events[i] for i in arrival.tolist()]
    engine = Engine(compile_yaml(MILLION_YAML))
    records: list[dict[str, Any]] = []
    for i in range(0, len(arrivals), 50_000):
        records += engine.push(arrivals[i : i + 50_000])
    records += engine.finish()
    assert engine.stats.events_in == 1_000_000
    assert not [r for r in records if r["kind"] in ("dead_letter", "alert")]

    patterns = {
        "overheat": (OPattern(
            [OStep("hot", lambda e, c: e["temp"] > 90), OStep("hotter", lambda e, c: e["temp"] > c["hot"][-1]["temp"] + 2)],
            within=30, absent=lambda e, c: e["status"] == "ack", absent_for=10), ["device"]),
        "surge": (OPattern(
            [OStep("high", lambda e, c: e["temp"] > 88, 2, 3, consecutive=True),
             OStep("drop", lambda e, c: e["temp"] < sum(x["temp"] for x in c["high"]) / len(c["high"]) - 15,
                   contiguity="next")],
            within=20, skip=False), ["device"]),
        "site_pair": (OPattern(
            [OStep("first", lambda e, c: e["temp"] > 95),
             OStep("second", lambda e, c: e["temp"] > 95 and e["device"] != c["first"][-1]["device"])],
            within=2), ["site"]),
    }
    site_of = {e["device"]: e["site"] for e in events[:10_000]}
    for name, (opattern, per) in patterns.items():
        got = project(records, per, name)
        assert len(got) > 200, (name, len(got))
        assert got == oracle(events, opattern, per), name
        for key, _, taken in got:
            if per == ["device"]:
                assert {d for _, d, _ in taken} == {key[0]}
            else:
                assert {site_of[d] for _, d, _ in taken} == {key[0]}
