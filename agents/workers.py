"""Worker processes that end with their parent.

A ``ProcessPoolExecutor`` worker whose parent is killed (``kill``, an out-of-memory kill, a
scheduler's time limit) is not told: it finishes its task, then waits for the next one forever,
holding its memory and, for a training job, its cores. :func:`exit_with_parent`, run in each
worker (the pool's ``initializer``), ends the worker within about a second of its parent's death.
``esper-bench --workers`` and the benchmarks' ``--workers`` use it.
"""

from __future__ import annotations

import os
import threading


def exit_with_parent(poll_s: float = 1.0) -> None:
    """End this process (exit status 1) soon after its parent process ends.

    A daemon thread checks every ``poll_s`` seconds whether the process has been re-parented (its
    parent died). Call it once in a worker process, e.g. as a pool's ``initializer``.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            stop.wait(poll_s)
            if os.getppid() != parent:
                os._exit(1)  # nothing left to report to; skip cleanup that could block

    stop = threading.Event()  # never set: wait() is a sleep that a daemon thread may be stopped in
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def init_pool_worker(threads: int | None = None) -> None:
    """A pool ``initializer``: end with the parent and, if given, use ``threads`` torch threads."""
    exit_with_parent()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
