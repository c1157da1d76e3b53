"""Shared helpers of the benchmark scripts: provenance (machine, torch, commit) and result files."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from agents.workers import init_pool_worker

RESULTS = Path(__file__).resolve().parent / "results"
"""Tracked results (written only with ``--record``)."""
SCRATCH = Path(__file__).resolve().parent.parent / "results"
"""Untracked results of ordinary runs (``/results/`` is in .gitignore)."""


def git_commit() -> str:
    """Short hash of HEAD (with '+dirty' if the tree has uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               check=True, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance() -> dict[str, Any]:
    """Machine, software and commit of this run."""
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def add_output_args(parser: Any) -> None:
    """``--record`` and ``--out``, shared by every benchmark script."""
    parser.add_argument("--record", action="store_true",
                        help="append the results to the tracked benchmarks/results/ "
                             "(default: the untracked results/ folder at the repository root)")
    parser.add_argument("--out", default=None,
                        help="results folder (overrides both defaults)")


def save(name: str, record: dict[str, Any], out_dir: Path | str | None = None,
         tracked: bool = False) -> Path:
    """Append ``record`` plus provenance as one JSON line to ``<folder>/<name>.jsonl``.

    The folder is ``out_dir`` if given, else ``benchmarks/results/`` (tracked, only when
    ``tracked``, i.e. ``--record``), else the untracked ``results/`` at the repository root.
    """
    if out_dir is not None:
        out = Path(out_dir)
    else:
        out = RESULTS if tracked else SCRATCH
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.jsonl"
    with path.open("a") as f:
        f.write(json.dumps({**provenance(), **record}) + "\n")
    return path


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA), so that a timer stopped next counts all of it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_steps(env: Any, actions: list[int], device: str) -> tuple[int, float, dict]:
    """Step ``env`` through ``actions`` until they or the episode end: steps taken, wall seconds
    (after the device finished their work), the last info."""  # noqa: D205
    t0 = time.perf_counter()
    done, info = 0, {}
    for a in actions:
        _, _, terminated, truncated, info = env.step(a)
        done += 1
        if terminated or truncated:
            break
    sync(device)
    return done, time.perf_counter() - t0, info


def init_worker(threads: int) -> None:
    """Set the torch thread count of a worker process (and of this one, without workers)."""
    torch.set_num_threads(threads)


def run_tasks(worker: Callable[[Any], Any], tasks: list[Any], workers: int, threads: int,
              chunksize: int = 4, progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """``[worker(t) for t in tasks]``, in this process or in ``workers`` spawned processes.

    Each process uses ``threads`` torch threads; results come back in task order. ``worker`` must
    be a module-level function of an importable module (spawned workers import it).
    ``progress(done, total)``, if given, is called here as each result arrives (in task order).
    """
    def collect(results: Any) -> list[Any]:
        out = []
        for r in results:
            out.append(r)
            if progress is not None:
                progress(len(out), len(tasks))
        return out

    if workers <= 1:
        init_worker(threads)
        return collect(worker(t) for t in tasks)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_pool_worker,
                             initargs=(threads,)) as pool:  # workers end if this process is killed
        return collect(pool.map(worker, tasks, chunksize=chunksize))
