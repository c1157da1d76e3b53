"""Where a result came from: the one provenance record of esper-train, esper-bench and the benchmarks.

:func:`provenance` is written into ``train_stats.json``, every ``bench.jsonl`` line and every
``benchmarks/results/*.jsonl`` line, and printed under their tables.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from esper_env.records import cpu_name

__all__ = ["ROOT", "cpu_name", "git_commit", "provenance"]

ROOT = Path(__file__).resolve().parent.parent
"""The checkout that holds this package (where ``git`` is asked for the commit)."""


def git_commit() -> str:
    """Short hash of HEAD (with '+dirty' if the tree has uncommitted changes), or 'unknown'."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               check=True, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance() -> dict[str, Any]:
    """Date, commit, machine and software of this run, as plain JSON values.

    Keys: ``date`` (UTC, ISO 8601), ``commit`` (:func:`git_commit`), ``machine`` (the CPU model,
    then the GPU's name after a comma when CUDA is available), its parts ``cpu`` and ``cuda``
    (None without CUDA), ``cores``, ``torch_threads`` (the process's torch thread count now),
    ``torch`` and ``python`` versions, and ``episode_version``
    (:data:`esper_env.core.episode.EPISODE_VERSION`: results of the same episode version are
    comparable episode for episode).
    """
    import torch

    from esper_env.core.episode import EPISODE_VERSION

    cpu = cpu_name()
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": cpu + (f", {cuda}" if cuda else ""),
        "cpu": cpu,
        "cuda": cuda,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "episode_version": EPISODE_VERSION,
    }
