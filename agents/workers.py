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

    A daemon thread checks every ``poll_s`` seconds whether the parent has ended. Call it once in
    a worker process, e.g. as a pool's ``initializer``.

    In a process started by :mod:`multiprocessing` (any start method) the parent is the process
    that started it, known from the start (:func:`multiprocessing.parent_process`), and its end is
    seen on the sentinel multiprocessing gives each child: a pipe whose other end only the parent
    holds. So a worker whose parent was killed while the worker was still starting up (a spawned
    worker imports for a second or more before its initializer runs) exits at once, instead of
    taking its new parent (init) for its parent and waiting forever. Where that parent is also
    the operating system's parent (not a forkserver), a change of :func:`os.getppid` counts too
    (a process the parent forks later holds the sentinel's pipe open as well); outside
    multiprocessing, it is the only check.
    """
    from multiprocessing import parent_process
    from multiprocessing.connection import wait

    ppid = os.getppid()
    parent = parent_process()
    sentinel = parent.sentinel if parent is not None else None
    check_ppid = parent is None or parent.pid == ppid

    def gone() -> bool:
        if sentinel is None:
            stop.wait(poll_s)
        elif wait([sentinel], timeout=poll_s):  # readable (end of file): the parent has ended
            return True
        return check_ppid and os.getppid() != ppid

    def watch() -> None:
        while not gone():
            pass
        os._exit(1)  # nothing left to report to; skip cleanup that could block

    stop = threading.Event()  # never set: wait() is a sleep that a daemon thread may be stopped in
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def init_pool_worker(threads: int | None = None) -> None:
    """A pool ``initializer``: end with the parent and, if given, use ``threads`` torch threads."""
    exit_with_parent()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
