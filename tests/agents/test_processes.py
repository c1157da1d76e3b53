"""esper-demo, esper-train --vec-env subproc and esper-bench --workers leave no process behind.

Whether the command exits normally, exits on an error, or is SIGKILLed mid-run: every process
it started (vec-env and pool workers, the forkserver, resource trackers), found by a tag in its
environment (tests/proctree.py), has ended within a few seconds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_CLI
from proctree import kill_tagged, new_tag, tagged_env, wait_for, wait_until_gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc; re-parenting as on Linux")

GONE_S = 5.0
"""How long the processes a command started may take to end after it has."""

DEMO = ["--task", "synthetic", "--max-epochs", "4", "--total-timesteps", "8", "--episodes", "1",
        "--no-progress-bar"]
TRAIN = ["--vec-env", "subproc", "--n-envs", "2", "--total-timesteps", "16", "--eval-freq", "0",
         "--no-progress-bar", "--hyperparams", "n_steps=8", "--hyperparams", "batch_size=8",
         "--hyperparams", "n_epochs=1", *TINY_CLI]
BENCH = ["--workers", "2", "--seeds", "2", "--chunk", "2", "--policies", "no-growth,random",
         "--reward-modes", "contribution", "--no-plots", *TINY_CLI]


def _workers(procs: dict[int, str]) -> list[int]:
    """The spawned multiprocessing workers (not the resource tracker or a forkserver)."""
    return [pid for pid, cmd in procs.items() if "spawn_main" in cmd]


def _run(tmp_path: Path, module: str, args: list[str], how: str, *, ready, error: str,
         error_args=(), while_running=None) -> dict[int, str]:
    """Run ``python -m module args`` in a new session with a fresh tag; the processes it started
    that are still running ``GONE_S`` after it ended (all are killed before this returns).

    ``how``: ``"normal"`` (must exit 0), ``"error"`` (with ``error_args`` appended, or
    ``while_running(procs)`` called once ``ready(procs)`` holds; must exit non-zero with ``error``
    in its standard error), or
    ``"killed"`` (SIGKILLed once ``ready(procs)`` holds, ``procs`` being the tagged processes).
    """  # noqa: D205
    tag = new_tag()
    cmd = [sys.executable, "-m", module, *args, *(error_args if how == "error" else ())]
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=tagged_env(tag),
                                cwd=tmp_path, start_new_session=True)

    def when_ready() -> dict[int, str]:
        procs = wait_for(tag, lambda procs: proc.poll() is not None or ready(procs), 120)
        assert proc.poll() is None, f"ended ({proc.returncode}) too soon: {log.read_text()[-3000:]}"
        return procs

    try:
        if how == "killed":
            when_ready()
            proc.send_signal(signal.SIGKILL)
        elif how == "error" and while_running is not None:
            while_running(when_ready())
        rc = proc.wait(timeout=300)
        if how == "normal":
            assert rc == 0, log.read_text()[-3000:]
        elif how == "error":
            assert rc not in (0, -signal.SIGKILL) and error in log.read_text(), log.read_text()[-3000:]
        return wait_until_gone(tag, GONE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_tagged(tag)


@pytest.mark.parametrize("how", ["error", "killed"])  # "normal": test_demo.py (a whole demo run)
def test_esper_demo_leaves_no_process_behind(tmp_path, how):
    out = tmp_path / "demo"
    left = _run(tmp_path, "agents.demo", [*DEMO, "--output", str(out)], how,
                ready=lambda procs: (out / "tb").is_dir(),  # training has started
                error_args=["--task", "cifar10"], error="data_root is None")  # fails making the env
    assert left == {}


@pytest.mark.parametrize("how", ["normal", "error", "killed"])
def test_esper_train_with_subprocess_envs_leaves_no_process_behind(tmp_path, how):
    out = tmp_path / "run"
    left = _run(tmp_path, "agents.train", [*TRAIN, "--output", str(out)], how,
                # learn() has reset the envs in their workers (more processes than this one)
                ready=lambda procs: (out / "tb").is_dir() and len(procs) >= 3,
                # the algorithm refuses it, after the vec env has started its workers
                error_args=["--hyperparams", "no_such_option=1"], error="no_such_option")
    assert left == {}


def _kill_one_worker(procs: dict[int, str]) -> None:
    """An out-of-memory kill of a pool worker: esper-bench ends with BrokenProcessPool."""
    import os

    os.kill(_workers(procs)[0], signal.SIGKILL)


@pytest.mark.parametrize("how", ["normal", "error", "killed"])
def test_esper_bench_with_workers_leaves_no_process_behind(tmp_path, how):
    left = _run(tmp_path, "agents.bench", [*BENCH, "--out", str(tmp_path / "bench")], how,
                ready=lambda procs: len(_workers(procs)) >= 2, while_running=_kill_one_worker,
                error="BrokenProcessPool")
    assert left == {}
