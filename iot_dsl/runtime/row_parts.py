"""Row-parallel work on a block: a row count and a kernel in; the kernel run on contiguous parts of the rows, on
worker threads and the calling thread at once, out.

numpy releases the GIL inside a large copy, sort, comparison or reduction, so on a machine with several cores
the parts of one closing window's block (a few MB) really run side by side. A kernel given here must compute
each row on its own (and write only its own rows): the result is then the same bits whatever the number of
parts. Below :data:`MIN_CELLS` cells per part the whole block goes to one call on the calling thread -- handing
a part over costs more than it saves.

``threads`` bounds the number of threads (the calling thread included): 1 never starts one; ``None`` means
this machine's CPU count, at most :data:`MAX_AUTO_THREADS`. Worker threads start on first use and are shared by
every user of the same count (a forked child starts its own).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["MAX_AUTO_THREADS", "MIN_CELLS", "PARTS_PER_THREAD", "RowParts"]

#: fewer cells than this per part are not worth a thread hand-off
MIN_CELLS = 1 << 16
#: the automatic thread count stops here: a window's blocks are not large enough to gain from more
MAX_AUTO_THREADS = 4
#: parts per thread (at most): enough for the threads to even out their loads, few enough to cost little
PARTS_PER_THREAD = 2

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _forget_pools() -> None:
    """In a forked child: the parent's worker threads do not exist here, so start new ones on next use."""
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # pragma: no branch (POSIX)
    os.register_at_fork(after_in_child=_forget_pools)


class RowParts:
    """Run a kernel over a block's rows in contiguous parts on up to ``threads`` threads (see the module doc)."""

    def __init__(self, threads: int | None = None) -> None:
        if threads is None:
            threads = min(os.cpu_count() or 1, MAX_AUTO_THREADS)
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads

    def run(self, rows: int, cells: int, kernel: Callable[[slice], object]) -> None:
        """Call ``kernel(part)`` on contiguous slices covering ``range(rows)``; ``cells`` (the block's size)
        decides how many parts are worth it. Returns when every part is done; a part's error is raised here,
        once the other parts have finished.

        There are up to :data:`PARTS_PER_THREAD` parts per thread, each taken by whichever thread is free, the
        calling thread included: a worker the system starts late (another process on its core) leaves its share
        to the others, and the call never waits for a worker that has not started a part."""
        parts = min(self.threads * PARTS_PER_THREAD, rows, cells // MIN_CELLS)
        if parts <= 1 or self.threads == 1:
            kernel(slice(0, rows))
            return
        bounds = [rows * i // parts for i in range(parts + 1)]
        pending = iter([slice(bounds[i], bounds[i + 1]) for i in range(parts)])
        finished = threading.Condition()
        done: list[int] = []
        errors: list[BaseException] = []

        def take_parts() -> None:
            while True:
                with finished:
                    part = next(pending, None)
                if part is None:
                    return
                try:
                    kernel(part)
                except BaseException as exc:  # handed to the caller below, once every part is done
                    errors.append(exc)
                finally:
                    with finished:
                        done.append(part.start)
                        finished.notify_all()

        pool = _pool(self.threads - 1)
        for _ in range(min(self.threads, parts) - 1):
            pool.submit(take_parts)
        take_parts()
        with finished:
            finished.wait_for(lambda: len(done) == parts)
        if errors:
            raise errors[0]


def _pool(workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="iot-dsl-rows")
        return pool
