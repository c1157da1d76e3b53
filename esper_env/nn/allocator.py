"""Keep freed memory for reuse: the CPU allocator setting that makes stacked tensors cheap.

A batched step allocates and frees activations of a few MiB each, many times per mini-batch.
glibc's ``malloc`` serves blocks that large with fresh ``mmap`` pages and returns them to the
operating system on ``free``, so every such tensor is page-faulted in again, page by page, each
time (thousands of faults per mini-batch at K = 64 on digits; a fifth to a third of the step's
time). :func:`keep_freed_memory` raises glibc's two thresholds so that blocks up to
:data:`MMAP_THRESHOLD` come from the heap and freed heap memory up to :data:`TRIM_THRESHOLD` stays
with the process for the next allocation: what ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` in the environment do, set from inside the process.

It is process-wide and cannot be undone (the resident memory stays near its peak); it changes no
number any computation produces. :class:`~esper_env.vector.EsperVectorEnv` calls it on the CPU
unless built with ``tune_allocator=False``. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

MMAP_THRESHOLD = 32 * 2**20
"""Blocks up to this size (32 MiB, glibc's largest) come from the heap, not from ``mmap``."""
TRIM_THRESHOLD = 2**30
"""Freed heap memory up to this size (1 GiB) is kept for reuse, not returned to the system."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
_done = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring), once per process.

    Returns True where they are set (now or by an earlier call), False where the C library has
    no ``mallopt`` or refuses the values.
    """
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: its parameter numbers
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    _done = ok
    return ok
