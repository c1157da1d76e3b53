"""Pool workers end with their parent (no orphans blocked forever after a kill)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

PARENT = textwrap.dedent("""
    import sys, time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from agents.workers import exit_with_parent, init_pool_worker

    def pid(_):
        import os
        return os.getpid()

    if __name__ == "__main__":
        init = {"none": None, "exit": exit_with_parent, "pool": init_pool_worker}[sys.argv[1]]
        pool = ProcessPoolExecutor(2, mp_context=get_context("spawn"), initializer=init)
        pids = sorted(set(pool.map(pid, range(8))))
        print(" ".join(map(str, pids)), flush=True)
        time.sleep(600)  # killed by the test
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie (exited, not yet reaped) counts as gone
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _orphans(tmp_path: Path, init: str) -> list[int]:
    """Start a parent with a 2-worker pool, SIGKILL it, return the workers still alive after 5 s."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, str(script), init], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and all(_alive(p) for p in pids)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    for p in left:  # clean up what the test found
        os.kill(p, signal.SIGKILL)
    return left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; re-parenting as on Linux")
@pytest.mark.parametrize("init", ["exit", "pool"])
def test_pool_workers_end_soon_after_their_parent_is_killed(tmp_path, init):
    assert _orphans(tmp_path, init) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; re-parenting as on Linux")
def test_without_the_watchdog_the_workers_outlive_a_killed_parent(tmp_path):
    """The failure the watchdog prevents: plain pool workers stay, blocked, after a kill (here one
    of the two always has; the other one has always ended)."""  # noqa: D205
    assert len(_orphans(tmp_path, "none")) >= 1
