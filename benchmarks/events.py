"""Event-ingestion benchmark: 1M generated JSON lines from 10k devices in, throughput ratios out (last line JSON).

Workload (seeded numpy, identical for every contender): 10,000 devices x 100 readings at ~1 Hz, arriving with
up to 5 s of disorder; 10% of the devices run legacy firmware that reports ``temperature`` in Fahrenheit instead
of ``temp`` in Celsius; 0.2% of the lines are redelivered duplicates and 0.02% are truncated (corrupt).

Ingestion (``throughput_vs_*``): decode, normalise (legacy -> ``temp`` in C), de-duplicate by (device, seq),
drop corrupt lines, filter ``temp > 60`` and keep per-device count/min/max/last of ``temp``:

* project: ``Engine.push_raw`` over 2k-line batches of a compiled workflow (source stream with ``id``/``dedup``/
  ``lateness``/``allowed_lateness``/``normalize``, a derived stream with ``where``), decoding included. No project
  operator keeps per-device count/min/max/last yet, so the state is a numpy reducer hooked on the derived stream's
  output inside the engine: benchmark code, but its time counts as the project's (``project_reducer_seconds``
  says how much of it that was, ``project_time_includes_reducer`` that it is included);
* hand loop: ``orjson.loads`` per line, the same normalisation, a set for de-duplication, the predicate as a
  lambda, a dict of per-device ``[count, min, max, last]``;
* Bytewax 0.21: the same steps as a dataflow (``TestingSource``, ``filter_map``, ``stateful_map`` for
  de-duplication, ``filter_value``, ``fold_final`` for the state), run with ``run_main``, on the same whole
  stream; ``throughput_vs_bytewax`` compares it with the project in ``--bytewax-rounds`` alternating runs
  (``--bytewax-lines N`` runs both on a prefix instead, for a quick look: per-event costs grow with the state,
  so a prefix flatters whichever contender's costs grow more).

All three must compute the same per-device states (and the engine's counters must reconcile) before any speed is
reported.

Patterns (``pattern_vs_*``), only when ``benchmarks/pattern_workload.py`` exists and its ``PATTERN_YAML``
compiles: the same stream with every device sending ``temp`` in C (the pattern workflow does not normalise);
the project (``push_raw`` of its ``PATTERN_YAML``, then ``finish()``) vs its ``hand_matcher`` on the whole
stream, and vs Bytewax on the same stream. The Bytewax baseline is a streaming dataflow with a per-device stateful
operator: ``filter_map`` (decode), ``key_on`` (device), then ``op.stateful`` with a ``StatefulLogic`` that drops
redelivered ``seq`` values, buffers each device's readings and, as each one arrives, runs the pattern in
event-time order over those at or before the device's max seen ``ts`` minus ``PATTERN_YAML``'s ``lateness`` (as
the engine does), with ``hand_matcher``'s rules; ``on_eof`` flushes the rest at end of stream. Matches must be
identical.

The lines are compact byte strings (see :func:`compact`), as read from a file or a socket. Every contender's
time includes decoding the JSON lines (the hand loops call ``orjson.loads`` per line inside
the timed region, as the project decodes inside ``push_raw``). The workload itself (the lists of lines, the
registry, and the prefix lists the Bytewax comparisons run on) is frozen out of the garbage collector before
timing (``gc.freeze``): it belongs to the harness, and otherwise each full collection would walk its millions of
references and bill whichever contender happened to trigger it.

Run: ``.venv/bin/python benchmarks/events.py`` (``--events N`` for a smaller run, ``--rounds R``,
``--pattern-rounds R``, ``--batch LINES``, ``--bytewax-lines N``, ``--bytewax-rounds R``). Every ratio is the
median over alternating rounds of the paired ratio (baseline time / project time of the two runs of a round,
taken one right after the other), which this machine's drifting speed disturbs least; the metrics give the
median times of each contender too.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iot_dsl import DslErrors, Engine, compile_text
from iot_dsl.devices import Device, DeviceRegistry
from iot_dsl.runtime.clock import VirtualClock
from iot_dsl.runtime.operators import Operator

T0 = 1767225600.0
DEVICES = 10_000
THRESHOLD = 60.0
BATCH = 2_000
MEMORY_LINES = 100_000  # the ingest state's memory is measured on this prefix
F_FACTOR, F_OFFSET = 5.0 / 9.0, -32.0 * 5.0 / 9.0  # the engine's F_to_C: value * factor + offset

INGEST_YAML = """
workflow: events-bench
streams:
  telemetry:
    key: device
    time: ts
    id: seq
    dedup: {window: 2m, max_ids: 2000000}
    lateness: 5s
    allowed_lateness: 30s
    fields: {temp: number, status: string}
    normalize:
      - when: "device.firmware < '2.0'"
        rename: {temperature: temp}
        units: {temp: F_to_C}
  hot:
    from: telemetry
    where: "temp > 60"
"""

State = dict[str, list[float]]


# ------------------------------------------------------------------------------------------------- workload
def compact(line: bytes) -> bytes:
    """A copy of ``line`` that takes only its own size: ``orjson.dumps`` returns small outputs inside a 4 KiB
    allocation, and two million such lines (8 GiB, one line per page) would measure page walks, not the
    contenders. Lines read from a file or a socket are compact too."""
    return memoryview(line).tobytes()


def generate(n_events: int, seed: int = 7) -> tuple[list[bytes], list[bytes], DeviceRegistry]:
    """The seeded stream of JSON lines; the same stream with every device sending ``temp`` in C (for the
    pattern part, whose workflow does not normalise); a registry with the devices' firmware."""
    rng = np.random.default_rng(seed)
    per_device = max(1, n_events // DEVICES)
    n = per_device * DEVICES
    device = np.repeat(np.arange(DEVICES), per_device)
    seq = np.tile(np.arange(1, per_device + 1), DEVICES)
    phase = rng.uniform(0, 1, DEVICES)
    ts = np.round(T0 + seq + phase[device], 3)
    arrival = ts + rng.uniform(0, 5, n)  # up to 5 s of disorder
    order = np.argsort(arrival, kind="stable")
    temp = np.round(rng.normal(55, 15, n), 2)
    ack = rng.random(n) < 0.05
    legacy = np.arange(DEVICES) % 10 == 0
    names = [f"d{i:05d}" for i in range(DEVICES)]
    lines: list[bytes] = []
    plain: list[bytes] = []
    for i in order.tolist():
        d = int(device[i])
        event: dict[str, Any] = {"device": names[d], "ts": float(ts[i]), "seq": int(seq[i]), "temp": float(temp[i])}
        event["status"] = "ack" if ack[i] else "ok"
        plain.append(compact(orjson.dumps(event)))
        if legacy[d]:
            del event["temp"]
            event["temperature"] = round(float(temp[i]) * 9 / 5 + 32, 2)
        lines.append(compact(orjson.dumps(event)))
    # redelivered duplicates shortly after the original, and a few truncated lines
    dup_at = np.sort(rng.choice(len(lines) - 50, size=n // 500, replace=False))
    corrupt = set(rng.choice(len(lines), size=max(1, n // 5000), replace=False).tolist())
    out: list[bytes] = []
    out_plain: list[bytes] = []
    dups = iter(dup_at.tolist())
    next_dup = next(dups, None)
    pending: list[tuple[int, int]] = []
    for i, line in enumerate(lines):
        out.append(line[: len(line) // 2] if i in corrupt else line)
        out_plain.append(plain[i][: len(plain[i]) // 2] if i in corrupt else plain[i])
        while next_dup is not None and next_dup == i:
            pending.append((i + int(rng.integers(1, 50)), i))
            next_dup = next(dups, None)
        for item in [p for p in pending if p[0] == i]:
            out.append(lines[item[1]])
            out_plain.append(plain[item[1]])
            pending.remove(item)
    out.extend(lines[i] for _, i in pending)
    out_plain.extend(plain[i] for _, i in pending)
    registry = DeviceRegistry(
        Device(names[d], "sensor", f"site-{d % 20}", f"site-{d % 20}", 0.0, 0.0, "1.4.0" if legacy[d] else "2.2.0", {})
        for d in range(DEVICES)
    )
    return out, out_plain, registry


# ------------------------------------------------------------------------------------------------ contenders
class DeviceStateReducer(Operator):
    """Benchmark-side per-device count/min/max/last of ``temp`` over a batch, with numpy (see module docstring)."""

    def __init__(self, ctx: Any) -> None:
        super().__init__({"id": "bench:state", "kind": "bench", "name": "state"}, ctx)
        self.index: dict[str, int] = {}
        self.count = np.zeros(DEVICES, dtype=np.int64)
        self.low = np.full(DEVICES, np.inf)
        self.high = np.full(DEVICES, -np.inf)
        self.last = np.full(DEVICES, np.nan)
        #: time spent here (part of the project's time; reported so the reader can see the share)
        self.seconds = 0.0

    def process(self, batch: list[dict[str, Any]], records: list[Any]) -> list[dict[str, Any]]:
        start = time.perf_counter()
        self._reduce(batch)
        self.seconds += time.perf_counter() - start
        return []

    def _reduce(self, batch: list[dict[str, Any]]) -> None:
        index = self.index
        devices = [e["device"] for e in batch]
        if not set(devices) <= index.keys():
            for d in devices:
                index.setdefault(d, len(index))
        slots = np.fromiter(map(index.__getitem__, devices), dtype=np.int64, count=len(devices))
        values = np.fromiter((e["temp"] for e in batch), dtype=np.float64, count=len(batch))
        self.count += np.bincount(slots, minlength=len(self.count))
        np.minimum.at(self.low, slots, values)
        np.maximum.at(self.high, slots, values)
        reverse = slots[::-1]
        unique, first = np.unique(reverse, return_index=True)
        self.last[unique] = values[::-1][first]

    def state(self) -> State:
        return {
            d: [int(self.count[i]), float(self.low[i]), float(self.high[i]), float(self.last[i])]
            for d, i in self.index.items()
            if self.count[i]
        }


def project_engine(plan: Any, registry: DeviceRegistry) -> tuple[Engine, DeviceStateReducer]:
    engine = Engine(plan, clock=VirtualClock(T0 + 200), registry=registry)
    segment = engine._segments["cloud"]
    reducer = DeviceStateReducer(segment.operators[0].ctx)
    segment.operators.append(reducer)
    segment.local_successors["filter:hot"] = [reducer.id]
    return engine, reducer


REDUCER_SECONDS: list[float] = []


def run_project(lines: list[bytes], plan: Any, registry: DeviceRegistry) -> tuple[State, Engine]:
    engine, reducer = project_engine(plan, registry)
    for start in range(0, len(lines), BATCH):
        engine.push_raw(lines[start : start + BATCH])
    engine.finish()
    REDUCER_SECONDS.append(reducer.seconds)
    return reducer.state(), engine


def run_hand(lines: list[bytes]) -> State:
    loads = orjson.loads
    predicate: Callable[[dict[str, Any]], bool] = lambda e: e["temp"] > THRESHOLD
    seen: set[tuple[str, int]] = set()
    state: State = {}
    for line in lines:
        try:
            e = loads(line)
        except orjson.JSONDecodeError:
            continue
        key = (e["device"], e["seq"])
        if key in seen:
            continue
        seen.add(key)
        if "temperature" in e:
            e["temp"] = e.pop("temperature") * F_FACTOR + F_OFFSET
        if predicate(e):
            v = e["temp"]
            s = state.get(e["device"])
            if s is None:
                state[e["device"]] = [1, v, v, v]
            else:
                s[0] += 1
                s[1] = min(s[1], v)
                s[2] = max(s[2], v)
                s[3] = v
    return state


def run_bytewax(lines: list[bytes]) -> State:
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    def decode(line: bytes) -> dict[str, Any] | None:
        try:
            e: dict[str, Any] = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if "temperature" in e:
            e["temp"] = e.pop("temperature") * F_FACTOR + F_OFFSET
        return e

    def dedup(seen: set[int] | None, e: dict[str, Any]) -> tuple[set[int], dict[str, Any] | None]:
        seen = seen if seen is not None else set()
        if e["seq"] in seen:
            return seen, None
        seen.add(e["seq"])
        return seen, e

    def fold(s: list[float], e: dict[str, Any]) -> list[float]:
        v = e["temp"]
        if not s:
            return [1, v, v, v]
        s[0] += 1
        s[1] = min(s[1], v)
        s[2] = max(s[2], v)
        s[3] = v
        return s

    flow = Dataflow("events_bench")
    stream = op.input("in", flow, TestingSource(lines, batch_size=BATCH))
    events = op.filter_map("decode", stream, decode)
    keyed = op.key_on("device", events, lambda e: e["device"])
    fresh = op.filter_map_value("dedup_drop", op.stateful_map("dedup", keyed, dedup), lambda e: e)
    hot = op.filter_value("hot", fresh, lambda e: e["temp"] > THRESHOLD)
    folded = op.fold_final("state", hot, list, fold)
    out: list[tuple[str, list[float]]] = []
    op.output("out", folded, TestingSink(out))
    run_main(flow)
    return dict(out)


# --------------------------------------------------------------------------------------------------- checks
def same_state(a: State, b: State) -> bool:
    if a.keys() != b.keys():
        return False
    return all(a[k][0] == b[k][0] and np.allclose(a[k][1:], b[k][1:], rtol=0, atol=1e-9) for k in a)


def freeze_harness() -> None:
    """Move everything alive now (the workload and the harness's lists of it) out of the garbage collector's
    reach: a full collection would otherwise walk every line reference of it and bill whichever contender
    happened to trigger it."""
    gc.collect()
    gc.freeze()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def alternate(rounds: int, *contenders: Callable[[], Any]) -> tuple[list[list[float]], list[Any]]:
    """Run the contenders one after the other, ``rounds`` times: each one's seconds per round, and its last result."""
    times: list[list[float]] = [[] for _ in contenders]
    results: list[Any] = [None] * len(contenders)
    for _ in range(rounds):
        for i, fn in enumerate(contenders):
            dt, results[i] = timed(fn)
            times[i].append(dt)
    return times, results


def speedup(project: list[float], baseline: list[float]) -> float:
    """How many times faster the project is: the median over rounds of baseline time / project time, each round's
    two runs taken one right after the other (a paired comparison: this machine's speed drifts between rounds)."""
    return statistics.median(b / p for p, b in zip(project, baseline, strict=True))


def load_pattern_workload() -> Any:
    path = ROOT / "benchmarks" / "pattern_workload.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("pattern_workload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode_all(lines: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return out


def pattern_lateness(workload: Any) -> float:
    """The ``lateness`` (seconds) of the pattern's source stream in ``PATTERN_YAML``."""
    import yaml

    spec = yaml.safe_load(workload.PATTERN_YAML)
    stream = spec["patterns"][workload.PATTERN_NAME]["stream"]
    text = str(spec["streams"][stream]["lateness"]).strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def pattern_bytewax(lines: list[bytes], workload: Any) -> list[Any]:
    """Bytewax: a streaming dataflow with a per-device stateful operator (``op.stateful``).

    decode (``filter_map``) -> key by device (``key_on``) -> per-device ``StatefulLogic`` that drops redelivered
    ``seq`` values, buffers readings in a heap, and, as each reading arrives, runs the pattern in event-time order
    over the readings at or before the device's max seen ``ts`` minus the stream's lateness (as the engine does);
    ``on_eof`` flushes the rest. The pattern rules are ``hand_matcher``'s (deadlines, ack clearing, skip-past-last).
    """
    import copy
    import heapq

    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.operators import StatefulLogic
    from bytewax.testing import TestingSink, TestingSource, run_main

    within, quiet_for = float(workload.WITHIN), float(workload.QUIET)
    lateness = pattern_lateness(workload)
    heappush, heappop = heapq.heappush, heapq.heappop

    def decode(line: bytes) -> dict[str, Any] | None:
        try:
            event: dict[str, Any] = orjson.loads(line)
            return event
        except orjson.JSONDecodeError:
            return None

    class Overheat(StatefulLogic[dict[str, Any], tuple[float, float], Any]):
        def __init__(self, resume: Any) -> None:
            if resume is None:
                resume = (set(), [], float("-inf"), 0, 0, [], [])
            self.seen, self.buffer, self.max_ts, self.arrived, self.index, self.waiting, self.quiet = resume

        def _step(self, t: float, temp: float, ack: bool, out: list[tuple[float, float]]) -> None:
            index = self.index
            self.index += 1
            quiet, waiting = self.quiet, self.waiting
            while quiet and quiet[0][0] < t:  # the quiet period after 'hotter' passed without an ack: a match
                _, start, end, _, last = quiet.pop(0)
                out.append((start, end))
                waiting = [w for w in waiting if w[2] > last]  # skip-past-last
                quiet = [q for q in quiet if q[3] > last]
            if ack:
                quiet = []
            still = []
            for hot_t, hot_temp, hot_index in waiting:
                if hot_t + within <= t:
                    continue
                if temp > hot_temp + 2:
                    quiet.append((t + quiet_for, hot_t, t, hot_index, index))
                else:
                    still.append((hot_t, hot_temp, hot_index))
            if temp > 90:
                still.append((t, temp, index))
            self.waiting, self.quiet = still, quiet

        def on_item(self, value: dict[str, Any]) -> tuple[list[tuple[float, float]], bool]:
            seq = value.get("seq")
            if seq is not None:
                if seq in self.seen:
                    return [], StatefulLogic.RETAIN  # a redelivered duplicate
                self.seen.add(seq)
            t = float(value["ts"])
            heappush(self.buffer, (t, self.arrived, value["temp"], value["status"] == "ack"))  # ties: arrival order
            self.arrived += 1
            self.max_ts = max(self.max_ts, t)
            out: list[tuple[float, float]] = []
            release = self.max_ts - lateness
            buffer = self.buffer
            while buffer and buffer[0][0] <= release:
                t, _, temp, ack = heappop(buffer)
                self._step(t, temp, ack, out)
            return out, StatefulLogic.RETAIN

        def on_eof(self) -> tuple[list[tuple[float, float]], bool]:
            out: list[tuple[float, float]] = []
            buffer = self.buffer
            while buffer:
                t, _, temp, ack = heappop(buffer)
                self._step(t, temp, ack, out)
            quiet = self.quiet
            while quiet:  # end of stream: the pending quiet periods complete
                _, start, end, _, last = quiet.pop(0)
                out.append((start, end))
                quiet = [q for q in quiet if q[3] > last]
            self.quiet = quiet
            return out, StatefulLogic.DISCARD

        def snapshot(self) -> Any:
            return copy.deepcopy(
                (self.seen, self.buffer, self.max_ts, self.arrived, self.index, self.waiting, self.quiet)
            )

    flow = Dataflow("pattern_bench")
    events = op.filter_map("decode", op.input("in", flow, TestingSource(lines, batch_size=BATCH)), decode)
    keyed = op.key_on("device", events, lambda e: e["device"])
    matches = op.stateful("overheat", keyed, Overheat)
    out: list[tuple[str, tuple[float, float]]] = []
    op.output("out", matches, TestingSink(out))
    run_main(flow)
    return sorted((device, start, end) for device, (start, end) in out)


def pattern_part(
    plain: list[bytes], registry: DeviceRegistry, rounds: int, subset: int, bytewax_rounds: int
) -> dict[str, Any]:
    """Project vs hand matcher (vs Bytewax) on the pattern of benchmarks/pattern_workload.py, when it exists."""
    workload = load_pattern_workload()
    if workload is None:
        print("patterns: skipped (benchmarks/pattern_workload.py is not there yet)", file=sys.stderr)
        return {}
    try:
        plan = compile_text(workload.PATTERN_YAML, "pattern-bench.yaml")
    except DslErrors as exc:  # the pattern language may not compile yet: say so, measure the rest
        print(f"patterns: skipped (PATTERN_YAML does not compile: {str(exc).splitlines()[0]})", file=sys.stderr)
        return {}

    def project(lines: list[bytes]) -> list[tuple[Any, ...]]:
        engine = Engine(plan, clock=VirtualClock(T0 + 200), registry=registry)
        records: list[Any] = []
        for start in range(0, len(lines), BATCH):
            records.extend(engine.push_raw(lines[start : start + BATCH]))
        records.extend(engine.finish())
        return sorted(workload.project_matches(records))

    def hand(lines: list[bytes]) -> list[tuple[Any, ...]]:
        return sorted(workload.hand_matcher(decode_all(lines)))  # decoding included, as for the project

    project_times, hand_times = [], []
    project_out: Any = None
    hand_out: Any = None
    for _ in range(rounds):
        dt, project_out = timed(lambda: project(plain))
        project_times.append(dt)
        dt, hand_out = timed(lambda: hand(plain))
        hand_times.append(dt)
    print(f"patterns: project {statistics.median(project_times):.2f}s, hand {statistics.median(hand_times):.2f}s",
          file=sys.stderr)
    if project_out != hand_out:
        print(f"patterns: project ({len(project_out)}) and hand matcher ({len(hand_out)}) DISAGREE", file=sys.stderr)
        return {"pattern_agree": False}
    part = plain[:subset] if subset > 0 else plain
    freeze_harness()
    (sub_times, bytewax_times), (sub_project, sub_bytewax) = alternate(
        bytewax_rounds, lambda: project(part), lambda: pattern_bytewax(part, workload)
    )
    dt_project, dt_bytewax = statistics.median(sub_times), statistics.median(bytewax_times)
    agree_bytewax = sub_bytewax == sub_project == (hand_out if part is plain else hand(part))
    print(f"patterns beside bytewax, {len(part)} lines: project {dt_project:.2f}s, bytewax {dt_bytewax:.2f}s, "
          f"agree={agree_bytewax}",
          file=sys.stderr)
    n = len(plain)
    return {
        "pattern_matches": len(project_out),
        "pattern_project_events_per_s": n / statistics.median(project_times),
        "pattern_hand_events_per_s": n / statistics.median(hand_times),
        "pattern_bytewax_events_per_s": len(part) / dt_bytewax,
        "pattern_project_events_per_s_beside_bytewax": len(part) / dt_project,
        "pattern_vs_hand_loop": speedup(project_times, hand_times),
        "pattern_vs_bytewax": speedup(sub_times, bytewax_times),
        "pattern_agree": True,
        "pattern_bytewax_agree": agree_bytewax,
    }


# ----------------------------------------------------------------------------------------------------- main
def main() -> None:
    global BATCH
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=BATCH, help="lines per push_raw batch")
    parser.add_argument("--pattern-rounds", type=int, default=3)
    parser.add_argument("--bytewax-lines", type=int, default=0,
                        help="run the Bytewax comparisons on this prefix (default 0: the whole stream)")
    parser.add_argument("--bytewax-rounds", type=int, default=3, help="alternating rounds of project and Bytewax")
    args = parser.parse_args()
    BATCH = args.batch

    lines, plain, registry = generate(args.events, args.seed)
    # The workload (2M byte strings in lists, the registry) is the harness's, not a contender's: freeze it so that
    # no contender's garbage collections walk it (it would bill whoever allocates the most long-lived objects)
    freeze_harness()
    n = len(lines)
    plan = compile_text(INGEST_YAML, "events-bench.yaml")
    print(f"workload: {n} lines from {DEVICES} devices; batches of {BATCH} lines", file=sys.stderr)

    # ingestion: project and hand loop alternately on the whole stream
    project_times, hand_times, reducer_times = [], [], []
    project_state: State = {}
    hand_state: State = {}
    engine: Engine | None = None
    for round_ in range(args.rounds):
        REDUCER_SECONDS.clear()
        dt, (project_state, engine) = timed(lambda: run_project(lines, plan, registry))
        reducer_times.append(REDUCER_SECONDS[-1])
        project_times.append(dt)
        dt, hand_state = timed(lambda: run_hand(lines))
        hand_times.append(dt)
        print(f"round {round_ + 1}: project {project_times[-1]:.2f}s, hand {hand_times[-1]:.2f}s", file=sys.stderr)
    assert engine is not None
    stats = engine.stats
    # Bytewax, with the project alternately, on the same stream (or a prefix of it when asked)
    part = lines[: args.bytewax_lines] if args.bytewax_lines > 0 else lines
    freeze_harness()  # a prefix list is harness data too
    (sub_times, bytewax_times), ((sub_project, _), bytewax_state) = alternate(
        args.bytewax_rounds, lambda: run_project(part, plan, registry), lambda: run_bytewax(part)
    )
    dt_sub_project, dt_bytewax = statistics.median(sub_times), statistics.median(bytewax_times)
    print(f"ingest beside bytewax, {len(part)} lines: project {dt_sub_project:.2f}s, bytewax {dt_bytewax:.2f}s",
          file=sys.stderr)
    agree = same_state(project_state, hand_state) and same_state(sub_project, bytewax_state)
    agree = agree and same_state(sub_project, hand_state if part is lines else run_hand(part)) and stats.reconciles()
    if not agree:
        print("DISAGREE: project, hand loop and Bytewax computed different states (or counts do not reconcile)",
              file=sys.stderr)
        print(json.dumps({"benchmark": "events", "metrics": {"agree": False}, "ratios": {}}))
        sys.exit(1)

    # memory of the ingest state (de-duplication table), measured with tracemalloc on a prefix (tracing is slow)
    memory_part = lines[:MEMORY_LINES]
    tracemalloc.start()
    _, engine2 = run_project(memory_part, plan, registry)
    source = engine2._segments["cloud"].operators[0]
    dedup_bytes = sum(
        stat.size for stat in tracemalloc.take_snapshot().statistics("filename")
        if "ingest" in stat.traceback[0].filename
    )
    tracemalloc.stop()
    dedup_ids = len(source.dedup) if source.dedup is not None else 0

    project_rate = n / statistics.median(project_times)
    hand_rate = n / statistics.median(hand_times)
    metrics: dict[str, Any] = {
        "events": n,
        "devices": DEVICES,
        "batch_lines": BATCH,
        "project_events_per_s": round(project_rate),
        "hand_loop_events_per_s": round(hand_rate),
        "bytewax_events_per_s": round(len(part) / dt_bytewax),
        "project_events_per_s_beside_bytewax": round(len(part) / dt_sub_project),
        "project_time_includes_reducer": True,
        "project_reducer_seconds": round(statistics.median(reducer_times), 3),
        "project_seconds": round(statistics.median(project_times), 3),
        "bytewax_lines": len(part),
        "devices_with_state": len(project_state),
        "processed": stats.processed,
        "duplicates": stats.duplicates,
        "dead_letters": stats.dead_letters,
        "late": stats.late,
        "reconciles": stats.reconciles(),
        "ingest_state_bytes_per_10k_ids": round(dedup_bytes / max(dedup_ids, 1) * 10_000),
        "agree": True,
    }
    ratios: dict[str, float] = {
        "throughput_vs_hand_loop": round(speedup(project_times, hand_times), 3),
        "throughput_vs_bytewax": round(speedup(sub_times, bytewax_times), 3),
    }
    # the ingestion part's engines and states are done with: let them go before the pattern part, so that its
    # garbage collections do not walk them (they would bill whoever collects most)
    del engine, engine2, source, project_state, hand_state, bytewax_state, sub_project
    gc.collect()
    pattern = pattern_part(plain, registry, args.pattern_rounds, args.bytewax_lines, args.bytewax_rounds)
    paired = {name: pattern.pop(name) for name in ("pattern_vs_hand_loop", "pattern_vs_bytewax") if name in pattern}
    metrics.update({k: (round(v) if isinstance(v, float) else v) for k, v in pattern.items()})
    if pattern.get("pattern_agree"):
        ratios["pattern_vs_hand_loop"] = round(paired["pattern_vs_hand_loop"], 3)
        if pattern.get("pattern_bytewax_agree"):
            ratios["pattern_vs_bytewax"] = round(paired["pattern_vs_bytewax"], 3)
    print(f"parts run: ingestion=yes patterns={'yes' if pattern.get('pattern_agree') else 'no'}", file=sys.stderr)
    print(json.dumps({"benchmark": "events", "metrics": metrics, "ratios": ratios}))


if __name__ == "__main__":
    main()
