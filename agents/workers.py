"""Worker processes that end with their parent.

A ``ProcessPoolExecutor`` worker whose parent is killed (``kill``, an out-of-memory kill, a
scheduler's time limit) is not told: it finishes its task, then waits for the next one forever,
holding its memory and, for a training job, its cores. :func:`exit_with_parent`, run in each
worker (the pool's ``initializer``), ends the worker within about a second of its parent's death.
``esper-bench --workers`` and the benchmarks' ``--workers`` use it.

The one pool of esper-bench and the benchmarks: :func:`run_tasks` maps a function over tasks here
or in spawned worker processes that end with their parent; :func:`run_on_ray` does it on Ray.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any


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


def run_tasks(worker: Callable[[Any], Any], tasks: list[Any], workers: int, threads: int | None,
              progress: Callable[[int], None] | None = None) -> list[Any]:
    """``[worker(t) for t in tasks]``, in this process or in ``workers`` spawned processes.

    Each process uses ``threads`` torch threads (this one too, without workers; None: leave the
    count alone); results come back in task order. Worker processes end with this one
    (:func:`exit_with_parent`). ``worker`` must be a module-level function of an importable module
    (spawned workers import it). ``progress(i)``, if given, is called here as task ``i`` finishes
    (in the order they finish; e.g. :meth:`agents.progress.TaskProgress.done`).
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    def tell(i: int) -> None:
        if progress is not None:
            progress(i)

    if workers <= 1:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        out = []
        for i, t in enumerate(tasks):
            out.append(worker(t))
            tell(i)
        return out
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_pool_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(worker, t): i for i, t in enumerate(tasks)}
        results: list[Any] = [None] * len(tasks)
        for f in as_completed(futures):
            results[futures[f]] = f.result()
            tell(futures[f])
        return results


def run_on_ray(worker: Callable[[Any], Any], tasks: list[Any], address: str | None, cpus: int,
               progress: Callable[[int], None] | None = None) -> list[Any]:
    """``[worker(t) for t in tasks]`` as Ray tasks of one CPU each; results come back in task order.

    Connects to the cluster at ``address`` (e.g. ``auto``), or starts a local Ray instance with
    ``cpus`` CPUs, shut down afterwards. ``progress(i)`` as in :func:`run_tasks`.
    """
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError('esper-bench --ray needs Ray: pip install "esper-env[ray]"') from e
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=max(cpus, 1), include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(worker)
        refs = [remote.remote(t) for t in tasks]
        index = {r: i for i, r in enumerate(refs)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for r in ready:
                if progress is not None:
                    progress(index[r])
        return ray.get(refs)
    finally:
        if started:
            ray.shutdown()
