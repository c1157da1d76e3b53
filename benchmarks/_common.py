"""Shared helpers of the study and speed runners: result files (with provenance), device timing.

Provenance (machine, torch, commit) is :func:`agents.provenance.provenance`, the record esper-train
and esper-bench write too; worker processes are :func:`agents.workers.run_tasks`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from agents.provenance import provenance
from agents.stats import mean_ci95

RESULTS = Path(__file__).resolve().parent / "results"
"""Tracked results (written only with ``--record``)."""
SCRATCH = Path(__file__).resolve().parent.parent / "results"
"""Untracked results of ordinary runs (``/results/`` is in .gitignore)."""


class OptionError(ValueError):
    """A recipe cannot run with these options (the runners report it as a usage error)."""


QUIET = False
"""No progress lines (``python -m benchmarks.speed RECIPE --quiet`` sets it)."""


def rounds(n: int, label: str) -> Iterator[int]:
    """``range(n)`` of a benchmark's rounds, with progress (a bar on a terminal, else one line per
    finished round on stderr: rounds done of total, rate, time left)."""  # noqa: D205
    from agents.progress import TaskProgress

    with TaskProgress([1] * n, label, quiet=QUIET, unit="rounds") as bar:
        for r in range(n):
            yield r
            bar.done(r)


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


def grow_actions(env: Any, policy: str, steps: int) -> list[int]:
    """``steps`` actions: WAIT throughout (``wait``), or GERMINATE ``conv_heavy`` into slot 0 at the
    first, then WAIT (``grow``)."""  # noqa: D205
    from esper_env.core.actions import Action, ActionKind

    grow = env.unwrapped.codec.encode(Action(ActionKind.GERMINATE, 0, "conv_heavy"))
    return [grow if policy == "grow" and i == 0 else 0 for i in range(steps)]


def paired_ratios(name: str, a: list[float], b: list[float]) -> dict[str, Any]:
    """Per-round ratios ``a/b``: their median (``name``), mean and 95 % bootstrap half-width
    (``name_mean``, ``name_ci95``, :func:`agents.stats.mean_ci95`) and the list (``name_ratios``)."""  # noqa: D205
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    mean, half = mean_ci95(ratios)
    return {name: statistics.median(ratios), f"{name}_mean": mean, f"{name}_ci95": half,
            f"{name}_ratios": ratios}
