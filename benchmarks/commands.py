"""Benchmark: device command orchestration against a raw asyncio fan-out loop, plus a 100k-device rollout's memory.

Workload (seeded): 10,000 simulated devices (latency 50-500 ms, 1% command failures). The orchestration has three
steps, each sending one command to every device: ``prepare`` (barrier: 95% must succeed within 60 s) ->
``apply`` -> ``confirm``; each attempt times out after 10 s.

* project: the workflow compiled by iot_dsl and run by the engine on a VirtualClock; the devices are played by a
  SimulatedEndpoint over the in-memory Transport (request/response correlated by message id, acknowledgements,
  state machine, records, idempotency keys, report).
* baseline: a raw asyncio fan-out loop on a virtual-time event loop (same process, same run): per step, one
  future per device, the same SimulatedFleet decides each outcome and its latency (same seed, same message ids),
  the device's acknowledgement is tracked in a dict, its answer resolves the future via ``loop.call_at``; the next
  step starts when 95% succeeded; a per-step timeout check.

Both must agree on the outcome counts per step before any time is reported. Rounds alternate project/baseline;
``overhead_vs_raw_loop`` is the median of the per-round ratios (each round compares the two under the same machine
load); the ratio of the median times is reported too. ``device_model_s`` is the time the shared device simulator
alone takes for the same 30,000 commands (part of both figures; measured in every round, for
``overhead_vs_raw_loop_excluding_device_model``). Finally one 100,000-device single-step rollout in waves (1%, 10%,
rest; 2,000 in flight) runs under tracemalloc; its peak (and the part already allocated by the set-up: fleet,
registry, engine, simulated devices) is reported.
Run: ``.venv/bin/python benchmarks/commands.py [--rounds 3] [--devices 10000] [--rollout-devices 100000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import selectors
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from iot_dsl import Engine, compile_text  # noqa: E402
from iot_dsl.devices import SimulatedFleet  # noqa: E402
from iot_dsl.devices.endpoint import SimulatedEndpoint  # noqa: E402
from iot_dsl.plan import Plan  # noqa: E402
from iot_dsl.runtime.clock import VirtualClock  # noqa: E402
from iot_dsl.runtime.orchestration import orchestration_operators  # noqa: E402
from iot_dsl.runtime.orchestration_rollout import rollout_order  # noqa: E402

SEED = 7
STEPS = ("prepare", "apply", "confirm")
QUORUM = 0.95
TIMEOUT = 10.0

WORKFLOW = """
workflow: bench
devices:
  types:
    node:
      commands:
        prepare: {payload: {cmd: prepare}}
        apply: {payload: {cmd: apply}}
        confirm: {payload: {cmd: confirm}}
streams:
  ops: {key: device, time: ts}
rules:
  - name: go
    when: ops
    do: [{orchestrate: upgrade}]
orchestrations:
  upgrade:
    steps:
      prepare: {command: prepare, targets: "type == 'node'", timeout: 10s, barrier: {quorum: 95%, timeout: 60s}}
      apply: {command: apply, targets: "type == 'node'", timeout: 10s, after: prepare}
      confirm: {command: confirm, targets: "type == 'node'", timeout: 10s, after: apply}
simulation:
  fleet:
    - {type: node, count: COUNT, firmware: "1.0", command_latency: {min: 50ms, max: 500ms}, failure_rate: 0.01}
"""

ROLLOUT = """
workflow: big
devices:
  types:
    node:
      commands:
        configure: {payload: {cmd: configure}}
streams:
  ops: {key: device, time: ts}
rules:
  - name: go
    when: ops
    do: [{orchestrate: rollout}]
orchestrations:
  rollout:
    steps:
      configure: {command: configure, targets: "type == 'node'", timeout: 10s}
    rollout: {waves: [1%, 10%, 100%]}
    concurrency: 2000
simulation:
  fleet:
    - {type: node, count: COUNT, firmware: "1.0", command_latency: {min: 50ms, max: 500ms}, failure_rate: 0.005}
"""


def plan_for(template: str, devices: int) -> Plan:
    return compile_text(template.replace("COUNT", str(devices)), "bench.yaml")


# ---------------------------------------------------------------------------------------------------- project
def run_project(plan: Plan, fleet_spec: dict[str, Any], until: float = 600.0) -> tuple[float, Counter[tuple[str, str]]]:
    """Run the orchestration to completion; (seconds, final outcome counts per (step, status))."""
    gc.collect()
    started = time.perf_counter()
    fleet = SimulatedFleet(fleet_spec, seed=SEED, stream="ops")
    clock = VirtualClock(fleet.start)
    engine = Engine(plan, clock=clock, registry=fleet.registry)
    SimulatedEndpoint(fleet, engine.transport, clock, plan.name)
    counts: Counter[tuple[str, str]] = Counter()
    batches = [engine.push([{"stream": "ops", "device": "node-0001", "ts": fleet.start}])]
    batches.append(engine.advance_to(fleet.start + until))
    for records in batches:
        for record in records:
            if record["kind"] == "command_result" and record["final"]:
                counts[(record["step"], record["status"])] += 1
    elapsed = time.perf_counter() - started
    (op,) = orchestration_operators(engine)
    assert op.reports and op.reports[0]["status"] == "completed", op.reports
    return elapsed, counts


# --------------------------------------------------------------------------------------------------- baseline
class _AdvancingSelector(selectors.SelectSelector):
    """Never waits: a select with a timeout moves the loop's virtual time to the next timer instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout:
            self._loop.virtual_now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose clock is virtual: timers fire in order without any real waiting."""

    def __init__(self, start: float) -> None:
        self.virtual_now = start
        super().__init__(selector=_AdvancingSelector(self))

    def time(self) -> float:
        return self.virtual_now


async def _fan_out(fleet: SimulatedFleet, step: str, devices: list[Any], first_seq: int, counts: Counter[tuple[str, str]]) -> None:
    loop = asyncio.get_running_loop()
    needed = math.ceil(round(QUORUM * len(devices), 9))
    acked: dict[str, bool] = {}
    pending: dict[str, asyncio.Future[str]] = {}
    quorum = asyncio.Event()
    succeeded = 0

    def done(future: asyncio.Future[str]) -> None:
        nonlocal succeeded
        status = future.result()
        counts[(step, status)] += 1
        if status == "succeeded":
            succeeded += 1
            if succeeded >= needed:
                quorum.set()

    now = loop.time()
    origin = fleet.start  # the loop counts seconds from the start (float steps stay exact near 0)
    payload = {"cmd": step}
    for index, device in enumerate(devices):
        message_id = f"upgrade/1/{first_seq + index}#1"
        future: asyncio.Future[str] = loop.create_future()
        future.add_done_callback(done)
        pending[message_id] = future
        outcome = fleet.command(device.id, step, payload, origin + now, message_id)
        acked[message_id] = outcome.at is not None  # the device acknowledges on receipt
        loop.call_at(outcome.at - origin, future.set_result, outcome.status)

    def time_out() -> None:
        for future in pending.values():
            if not future.done():
                future.set_result("timed_out")

    loop.call_at(now + TIMEOUT, time_out)
    await quorum.wait()


async def _raw_orchestration(fleet: SimulatedFleet, counts: Counter[tuple[str, str]]) -> None:
    devices = list(fleet.registry)
    sequence = 0
    tasks = []
    for step in STEPS:
        ordered = rollout_order(devices, f"upgrade/1/{step}")  # the same per-step order (hence message ids)
        tasks.append(asyncio.ensure_future(_fan_out(fleet, step, ordered, sequence + 1, counts)))
        sequence += len(ordered)
        await tasks[-1]
    await asyncio.sleep(TIMEOUT)  # let the stragglers of the last step answer


def run_baseline(fleet_spec: dict[str, Any]) -> tuple[float, Counter[tuple[str, str]]]:
    gc.collect()
    started = time.perf_counter()
    fleet = SimulatedFleet(fleet_spec, seed=SEED, stream="ops")
    loop = VirtualTimeLoop(0.0)
    counts: Counter[tuple[str, str]] = Counter()
    try:
        loop.run_until_complete(_raw_orchestration(fleet, counts))
    finally:
        loop.close()
    return time.perf_counter() - started, counts


def device_model_seconds(fleet_spec: dict[str, Any]) -> float:
    """What the shared device simulator alone costs for the same commands."""
    fleet = SimulatedFleet(fleet_spec, seed=SEED, stream="ops")
    devices = list(fleet.registry)
    started = time.perf_counter()
    sequence = 0
    for step in STEPS:
        for device in rollout_order(devices, f"upgrade/1/{step}"):
            sequence += 1
            fleet.command(device.id, step, {"cmd": step}, fleet.start, f"upgrade/1/{sequence}#1")
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------------- 100k memory
def rollout_peak(devices: int) -> tuple[int, int, float, dict[str, int]]:
    """(peak traced bytes during the whole rollout, traced bytes once fleet/engine/devices were set up, seconds,
    final outcome counts)."""
    plan = plan_for(ROLLOUT, devices)
    spec = dict(plan.data["simulation"])
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    fleet = SimulatedFleet(spec, seed=SEED, stream="ops")
    clock = VirtualClock(fleet.start)
    engine = Engine(plan, clock=clock, registry=fleet.registry)
    SimulatedEndpoint(fleet, engine.transport, clock, plan.name)
    setup, _ = tracemalloc.get_traced_memory()
    engine.push([{"stream": "ops", "device": "node-0001", "ts": fleet.start}])
    final: Counter[str] = Counter()
    for second in range(1, 601):  # stream the records out, as a sink would
        for record in engine.advance_to(fleet.start + second):
            if record["kind"] == "command_result" and record["final"]:
                final[record["status"]] += 1
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    (op,) = orchestration_operators(engine)
    assert op.reports and op.reports[0]["status"] == "completed" and sum(final.values()) == devices, final
    return peak, setup, elapsed, dict(final)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rollout-devices", type=int, default=100_000)
    args = parser.parse_args()

    plan = plan_for(WORKFLOW, args.devices)
    spec = dict(plan.data["simulation"])
    project_times, baseline_times, model_times = [], [], []
    expected: Counter[tuple[str, str]] | None = None
    for round_number in range(args.rounds):
        p_time, p_counts = run_project(plan, spec)
        b_time, b_counts = run_baseline(spec)
        if p_counts != b_counts:
            raise SystemExit(f"answers differ in round {round_number}: project {dict(p_counts)} vs raw loop {dict(b_counts)}")
        expected = expected or p_counts
        assert p_counts == expected
        m_time = device_model_seconds(spec)
        project_times.append(p_time)
        baseline_times.append(b_time)
        model_times.append(m_time)
        print(f"round {round_number + 1}: project {p_time:.3f} s, raw asyncio loop {b_time:.3f} s, device model alone "
              f"{m_time:.3f} s", file=sys.stderr)
    assert expected is not None
    model = statistics.median(model_times)
    shares = [(p - m) / (b - m) for p, b, m in zip(project_times, baseline_times, model_times, strict=True) if b > m]
    excluding = statistics.median(shares) if shares else float("nan")
    project, baseline = statistics.median(project_times), statistics.median(baseline_times)
    # rounds alternate project/baseline, so each round's ratio compares the two under the same machine load
    ratio = statistics.median(p / b for p, b in zip(project_times, baseline_times, strict=True))
    commands = sum(expected.values())
    failed = sum(n for (_, status), n in expected.items() if status != "succeeded")
    print(f"outcomes (identical in both): {dict(sorted(expected.items()))}", file=sys.stderr)
    peak, setup, rollout_s, rollout_final = rollout_peak(args.rollout_devices)
    print(f"{args.rollout_devices} device rollout: {rollout_s:.1f} s under tracemalloc, peak {peak / 2**20:.1f} MiB "
          f"(fleet, registry, engine and simulated devices set up: {setup / 2**20:.1f} MiB), {rollout_final}", file=sys.stderr)
    print(
        json.dumps(
            {
                "benchmark": "commands",
                "metrics": {
                    "devices": args.devices,
                    "commands": commands,
                    "failed_commands": failed,
                    "rounds": args.rounds,
                    "project_s": round(project, 4),
                    "raw_loop_s": round(baseline, 4),
                    "device_model_s": round(model, 4),
                    "project_commands_per_s": round(commands / project),
                    "rollout_devices": args.rollout_devices,
                    "rollout_peak_mib": round(peak / 2**20, 1),
                    "rollout_setup_mib": round(setup / 2**20, 1),
                    "rollout_s_under_tracemalloc": round(rollout_s, 1),
                    "rollout_peak_bytes_per_device": round(peak / args.rollout_devices),
                },
                "ratios": {
                    "overhead_vs_raw_loop": round(ratio, 3),
                    "overhead_vs_raw_loop_of_medians": round(project / baseline, 3),
                    "overhead_vs_raw_loop_excluding_device_model": round(excluding, 3),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
