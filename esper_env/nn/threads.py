"""``num_threads``: torch's intra-op thread count for the length of a ``with`` block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch threads and give the process its count back afterwards.

    The count is process-wide in torch, so scoping it keeps one caller's setting (an env's
    ``torch_threads``, a vector env's, a training run's) from changing another's results. ``None``,
    or the count already in force, leaves it alone.
    """
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
