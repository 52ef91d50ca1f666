"""Closing windows on several threads (issue 4): a block's rows are split into parts that run side by side, and
the results are the same bits as on one thread -- per block, per operator, per engine run from the CLI.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from iot_dsl.cli import cli
from iot_dsl.compiler import compile_text
from iot_dsl.runtime import row_parts
from iot_dsl.runtime.engine import Engine
from iot_dsl.runtime.row_parts import MAX_AUTO_THREADS, MIN_CELLS, RowParts
from iot_dsl.runtime.telemetry_stats import ROW_KEYS, BlockColumn, StatSpec, block_stats, rollup_stats

from .test_telemetry_oracle import build_operator, feed, make_fleet

SPECS = [StatSpec("n", "count"), StatSpec("k", "count", "x"), StatSpec("s", "sum", "x"), StatSpec("m", "mean", "x"),
         StatSpec("lo", "min", "x"), StatSpec("hi", "max", "x"), StatSpec("v", "var", "x"), StatSpec("sd", "std", "x"),
         StatSpec("med", "median", "x", 0.5), StatSpec("p95", "percentile", "x", 0.95)]
ROOT = Path(__file__).resolve().parent.parent


def test_parts_cover_the_rows_once_and_run_on_other_threads() -> None:
    seen: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def kernel(rows: slice) -> None:
        time.sleep(0.05)  # long enough for every thread to take a part
        with lock:
            seen.append((rows.start, rows.stop, threading.get_ident()))

    RowParts(3).run(1000, 3 * MIN_CELLS, kernel)
    spans = sorted((a, b) for a, b, _ in seen)
    assert spans == [(0, 333), (333, 666), (666, 1000)]
    idents = {ident for _, _, ident in seen}
    assert threading.get_ident() in idents and len(idents) == 3  # the calling thread and two workers
    seen.clear()
    RowParts(2).run(1000, 100 * MIN_CELLS, kernel)  # two parts per thread
    assert sorted((a, b) for a, b, _ in seen) == [(0, 250), (250, 500), (500, 750), (750, 1000)]


def test_a_worker_that_starts_late_leaves_its_share_to_the_caller() -> None:
    release = threading.Event()
    parts = RowParts(2)
    parts.run(100, 2 * MIN_CELLS, lambda rows: None)  # the pool's one worker exists now
    busy = row_parts._pool(1).submit(release.wait, 30)  # ... and is kept busy elsewhere
    taken: list[int] = []
    parts.run(100, 4 * MIN_CELLS, lambda rows: taken.append(threading.get_ident()))
    release.set()
    busy.result()
    assert taken == [threading.get_ident()] * 4  # every part on the calling thread, without waiting


def test_small_blocks_and_one_thread_stay_on_the_calling_thread() -> None:
    for parts, cells in ((RowParts(4), MIN_CELLS + 1), (RowParts(1), 100 * MIN_CELLS)):
        idents: list[int] = []
        parts.run(10_000, cells, lambda rows: idents.append(threading.get_ident()))
        assert idents == [threading.get_ident()]


def test_automatic_thread_count_and_bad_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(row_parts.os, "cpu_count", lambda: 64)
    assert RowParts().threads == MAX_AUTO_THREADS
    monkeypatch.setattr(row_parts.os, "cpu_count", lambda: None)
    assert RowParts().threads == 1
    with pytest.raises(ValueError, match="at least 1"):
        RowParts(0)


def test_an_error_in_a_part_is_raised_once_every_part_has_finished() -> None:
    finished: list[int] = []

    def kernel(rows: slice) -> None:
        if rows.start == 0:
            raise RuntimeError("part 0 failed")
        finished.append(rows.start)

    with pytest.raises(RuntimeError, match="part 0 failed"):
        RowParts(2).run(100, 2 * MIN_CELLS, kernel)
    assert finished == [50]  # the other part still ran to its end

    def late(rows: slice) -> None:
        if rows.start:
            raise KeyError("worker part")

    with pytest.raises(KeyError, match="worker part"):
        RowParts(2).run(100, 2 * MIN_CELLS, late)


def _block(seed: int, missing: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 64, 6000)
    block = np.full((counts.size, 64), np.nan)
    for i, c in enumerate(counts.tolist()):
        block[i, :c] = rng.normal(40, 5, c)
    block[(rng.random(block.shape) < missing) & ~np.isnan(block)] = np.nan
    return block, counts


@pytest.mark.parametrize("sort", [False, True])
@pytest.mark.parametrize("missing", [0.0, 0.05])
def test_a_block_filled_and_reduced_in_parts_gives_the_same_bits(sort: bool, missing: float) -> None:
    block, counts = _block(3, missing)
    assert block.size >= 3 * MIN_CELLS  # large enough to be split
    slots = np.arange(counts.size) % 7
    plain_column = BlockColumn(block.copy(), counts, sort=sort)
    plain = block_stats(SPECS, {"x": plain_column}, counts)
    plain_groups = rollup_stats(SPECS, {"x": plain_column}, counts, slots)[1]
    for threads in (2, 3):
        empty = np.empty_like(block)

        def fill(rows: slice, empty: np.ndarray = empty) -> None:
            empty[rows] = block[rows]

        column = BlockColumn(empty, counts, sort=sort, fill=fill, prepare=ROW_KEYS, parts=RowParts(threads))
        got = block_stats(SPECS, {"x": column}, counts)
        groups = rollup_stats(SPECS, {"x": column}, counts, slots)[1]
        for name in plain:
            assert np.array_equal(got[name], plain[name], equal_nan=True), (threads, name)
            assert np.array_equal(groups[name], plain_groups[name], equal_nan=True), (threads, name)


def test_intermediates_not_prepared_are_computed_on_first_use() -> None:
    block, counts = _block(4, 0.02)
    column = BlockColumn(block.copy(), counts, prepare={"max"}, sort=True)
    assert set(column._cache) == {"n", "max"}  # a sorted row's maximum sits at its count
    reference = BlockColumn(block.copy(), counts, sort=True)
    for key in ("m2", "min", "sum"):
        assert np.array_equal(column.get(key), reference.get(key), equal_nan=True)


AGGREGATE = """
aggregates:
  stats:
    stream: telemetry
    group_by: [type]
    per_device: true
    window: {tumbling: 1m}
    compute: {n: "count()", mean: "mean(temp)", low: "min(temp)", high: "max(temp)", sd: "std(temp)",
              p95: "p95(temp)", p50: "median(temp)"}
"""


def _records(threads: int, fleet: Any) -> list[dict[str, Any]]:
    op, ctx = build_operator(AGGREGATE, fleet.registry)
    op._parts = RowParts(threads)
    op._dense.parts = op._parts  # type: ignore[union-attr]
    return feed(op, fleet)


def test_an_operator_closes_its_windows_alike_on_one_thread_and_on_several() -> None:
    fleet = make_fleet(3000, 130)  # 3,000 devices: blocks of about 180k cells, split in parts
    one = _records(1, fleet)
    assert sum(r["kind"] == "aggregate" for r in one) > 6000
    for threads in (2, 4):
        assert _records(threads, fleet) == one


def test_the_engine_passes_its_thread_count_to_operators() -> None:
    plan = compile_text((ROOT / "workflows" / "plant.yaml").read_text(), "plant.yaml")
    engine = Engine(plan, threads=3)
    aggregates = [op for seg in engine._segments.values() for op in seg.operators if op.kind == "aggregate"]
    assert aggregates and all(op._parts.threads == 3 for op in aggregates)


def test_cli_run_with_threads_writes_the_same_records(tmp_path: Path) -> None:
    outputs = []
    for threads in ("1", "2"):
        out = tmp_path / f"out{threads}.jsonl"
        result = CliRunner().invoke(cli, ["run", str(ROOT / "workflows" / "plant.yaml"), "--simulate", "--devices",
                                          "40", "--duration", "2m", "--threads", threads, "--out", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and b'"aggregate"' in outputs[0]
    bad = CliRunner().invoke(cli, ["run", str(ROOT / "workflows" / "plant.yaml"), "--simulate", "--threads", "0"])
    assert bad.exit_code != 0 and "--threads" in bad.output


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_worker_threads() -> None:
    parts = RowParts(2)
    parts.run(100, 2 * MIN_CELLS, lambda rows: None)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # the child: its inherited pool has no threads; it must not wait for them forever
        done: list[int] = []
        parts.run(100, 2 * MIN_CELLS, lambda rows: done.append(rows.start))
        os._exit(0 if sorted(done) == [0, 50] else 1)
    deadline = time.monotonic() + 30
    while True:
        done_pid, status = os.waitpid(pid, os.WNOHANG)
        if done_pid or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if not done_pid:  # the child waits for threads that do not exist
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done_pid and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_forgetting_the_pools_starts_new_worker_threads_on_next_use() -> None:
    parts = RowParts(2)
    parts.run(100, 2 * MIN_CELLS, lambda rows: None)
    before = dict(row_parts._pools)
    row_parts._forget_pools()  # what a forked child does first
    assert row_parts._pools == {}
    done: list[int] = []
    parts.run(100, 2 * MIN_CELLS, lambda rows: done.append(rows.start))
    assert sorted(done) == [0, 50] and row_parts._pools[1] is not before[1]
