"""keep_freed_memory: freed blocks of a few MiB are reused instead of faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = """
import resource, sys
import torch
from esper_env.nn.allocator import keep_freed_memory
ok = keep_freed_memory() if sys.argv[1] == "on" else None
def cycle():  # what a training step does: activations kept for backward, then all freed
    kept = [torch.empty(n).fill_(1.0) for n in (1 << 20, 3 << 19, 1 << 21) * 2]
    del kept
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    # glibc's default thresholds adapt to what a process has freed before (its import of torch
    # included), so the baseline pins them at their starting values: every block of 128 KiB
    # or more mapped afresh. keep_freed_memory's mallopt calls override the variable.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True,
                         text=True, timeout=120, env=env).stdout.split()
    return out[0], int(out[1])


def test_freed_blocks_are_reused_after_keep_freed_memory() -> None:
    ok, faults_on = _faults("on")
    if ok != "True":
        pytest.skip("the C library is not glibc: keep_freed_memory does nothing here")
    _, faults_off = _faults("off")
    pages = 20 * 2 * (4 + 6 + 8) * 2**20 // 4096  # what 20 cycles touch
    assert faults_off > pages // 2  # glibc's starting thresholds map each block afresh
    assert faults_on < pages // 20  # kept: the pages are faulted in once, before the loop


def test_keep_freed_memory_is_idempotent() -> None:
    from esper_env.nn.allocator import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first
