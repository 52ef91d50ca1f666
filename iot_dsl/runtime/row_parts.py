"""Row-parallel work on a block: a row count and a kernel in; the kernel run on contiguous parts of the rows, on
worker threads and the calling thread at once, out.

numpy releases the GIL inside a large copy, sort, comparison or reduction, so on a machine with several cores
the parts of one closing window's block (a few MB) really run side by side. A kernel given here must compute
each row on its own (and write only its own rows): the result is then the same bits whatever the number of
parts. Below :data:`MIN_CELLS` cells per part the whole block goes to one call on the calling thread -- handing
a part over costs more than it saves.

``threads`` bounds the number of parts (the calling thread included): 1 never starts a thread; ``None`` means
this machine's CPU count, at most :data:`MAX_AUTO_THREADS`. Worker threads start on first use and are shared by
every user of the same count (a forked child starts its own).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

__all__ = ["MAX_AUTO_THREADS", "MIN_CELLS", "RowParts"]

#: fewer cells than this per part are not worth a thread hand-off
MIN_CELLS = 1 << 16
#: the automatic thread count stops here: a window's blocks are not large enough to gain from more
MAX_AUTO_THREADS = 4

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
    """Run a kernel over a block's rows in up to ``threads`` contiguous parts (see the module doc)."""

    def __init__(self, threads: int | None = None) -> None:
        if threads is None:
            threads = min(os.cpu_count() or 1, MAX_AUTO_THREADS)
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads

    def run(self, rows: int, cells: int, kernel: Callable[[slice], object]) -> None:
        """Call ``kernel(part)`` on contiguous slices covering ``range(rows)``; ``cells`` (the block's size)
        decides how many parts are worth it. Returns when every part is done; a part's error is raised here,
        after the other parts have finished."""
        parts = min(self.threads, rows, cells // MIN_CELLS)
        if parts <= 1:
            kernel(slice(0, rows))
            return
        bounds = [rows * i // parts for i in range(parts + 1)]
        pool = _pool(self.threads - 1)
        futures = [pool.submit(kernel, slice(bounds[i], bounds[i + 1])) for i in range(1, parts)]
        try:
            kernel(slice(bounds[0], bounds[1]))
        finally:
            wait(futures)  # no part may still be writing when the caller goes on, even after an error
        for future in futures:
            future.result()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="iot-dsl-rows")
        return pool
