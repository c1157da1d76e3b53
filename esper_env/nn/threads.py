"""``num_threads``: torch's intra-op thread count for the length of a ``with`` block."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

_F = TypeVar("_F", bound=Callable[..., Any])


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


def own_threads(method: _F) -> _F:
    """Run an env method with the env's ``config.runtime.torch_threads`` (if set), restoring the count after.

    Scoping the count to the env's own calls means that another env built (or the caller running)
    with another count does not change this env's results.
    """
    @functools.wraps(method)
    def scoped(self: Any, *args: Any, **kwargs: Any) -> Any:
        with num_threads(self.config.runtime.torch_threads):
            return method(self, *args, **kwargs)
    return scoped  # type: ignore[return-value]
