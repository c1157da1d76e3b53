"""Shared helpers of the benchmark scripts: result files (with provenance) and device timing.

Provenance (machine, torch, commit) is :func:`agents.provenance.provenance`, the record esper-train
and esper-bench write too; worker processes are :func:`agents.workers.run_tasks`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from agents.provenance import provenance

RESULTS = Path(__file__).resolve().parent / "results"
"""Tracked results (written only with ``--record``)."""
SCRATCH = Path(__file__).resolve().parent.parent / "results"
"""Untracked results of ordinary runs (``/results/`` is in .gitignore)."""


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
