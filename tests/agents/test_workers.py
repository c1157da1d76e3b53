"""Pool workers end with their parent (no orphans blocked forever after a kill).

Every process the parent started is checked, found by a tag in its environment
(tests/proctree.py): the workers that ran tasks, the ones that ran none, the resource tracker.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from proctree import kill_tagged, new_tag, tagged, tagged_env, wait_until_gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc; re-parenting as on Linux")

PARENT = textwrap.dedent("""
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context, parent_process
    from agents.workers import exit_with_parent, init_pool_worker

    def pid(_):
        return os.getpid()

    def after_the_parent_died():
        # the race of a slow start: the parent is killed before the worker's initializer runs
        while os.getppid() == parent_process().pid:
            time.sleep(0.02)
        exit_with_parent()

    if __name__ == "__main__":
        init = {"none": None, "exit": exit_with_parent, "pool": init_pool_worker,
                "late": after_the_parent_died}[sys.argv[1]]
        pool = ProcessPoolExecutor(2, mp_context=get_context(sys.argv[2]), initializer=init)
        if sys.argv[1] == "late":
            pool.submit(pid, 0), pool.submit(pid, 1)  # starts both workers; no result will come
            pids = sorted(pool._processes)
        else:
            pids = sorted(set(pool.map(pid, range(8))))
        print(" ".join(map(str, pids)), flush=True)
        time.sleep(600)  # killed by the test
""")


def _left_after_kill(tmp_path: Path, init: str, method: str = "spawn", wait_s: float = 5.0
                     ) -> dict[int, str]:
    """Start a parent with a 2-worker pool (start ``method``), SIGKILL it; the processes it
    started still running ``wait_s`` later (all are killed before this returns)."""  # noqa: D205
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    tag = new_tag()
    proc = subprocess.Popen([sys.executable, str(script), init, method], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL, env=tagged_env(tag), start_new_session=True)
    try:
        try:
            pids = [int(p) for p in proc.stdout.readline().split()]
            seen = tagged(tag)
            deadline = time.monotonic() + 10.0
            while not set(pids) <= set(seen) and time.monotonic() < deadline:
                time.sleep(0.05)  # a worker just started may not be readable in /proc yet
                seen = tagged(tag)
            assert pids and set(pids) <= set(seen), (pids, seen)  # the scan sees the workers
            assert any("resource_tracker" in cmd for cmd in seen.values()), seen
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        return wait_until_gone(tag, wait_s)
    finally:
        kill_tagged(tag)


@pytest.mark.parametrize(("init", "method"), [("exit", "spawn"), ("pool", "spawn"), ("exit", "forkserver")])
def test_pool_workers_end_soon_after_their_parent_is_killed(tmp_path, init, method):
    """Also under forkserver, where the workers' OS parent is the forkserver, which outlives the
    pool's owner while the workers run."""  # noqa: D205
    assert _left_after_kill(tmp_path, init, method) == {}


def test_pool_workers_whose_parent_died_before_their_initializer_ran_end_too(tmp_path):
    """The watchdog knows the parent from multiprocessing, not from os.getppid() at the call (by
    then init, for a worker still importing when its parent was killed)."""  # noqa: D205
    assert _left_after_kill(tmp_path, "late") == {}


def test_without_the_watchdog_the_workers_outlive_a_killed_parent(tmp_path):
    """The failure the watchdog prevents: plain pool workers stay, blocked, after a kill (here at
    least one of the two always has), and so does the resource tracker they hold open."""  # noqa: D205
    left = _left_after_kill(tmp_path, "none", wait_s=2.0)
    assert any("spawn_main" in cmd for cmd in left.values()), left
    assert any("resource_tracker" in cmd for cmd in left.values()), left
