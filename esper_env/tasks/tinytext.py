"""``tinytext``: character-level language modelling on CPython's documentation topics.

The corpus is ``pydoc_data.topics`` (it ships with CPython: no download; its content follows the
running Python's version), split by position 90/5/5 into train/val/test and cut into
non-overlapping windows of ``block_size`` characters; the targets are the next characters. Host: a
nanoGPT-style transformer (:class:`esper_env.nn.transformer.TransformerHost`), gradient clipping
at 1.0 (nanoGPT's: without it an attention seed incubating at the seed learning rate can blow up
to NaN within an epoch) and the anchor's seed learning rate 0.01 (at the CNN tasks' 0.05 the
attention seeds hurt).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from esper_env.tasks.spec import LoadRequest, Splits, Task, TaskSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

SPEC = TaskSpec("tinytext", "transformer", 0, 0, 0, block_size=32, n_layer=2, n_head=2, n_embd=32,
                grad_clip=1.0, seed_lr=0.01)
"""``n_classes`` (the vocabulary size) is known once the corpus is read: see :func:`resolve`."""

SPLIT = (0.9, 0.05, 0.05)
"""Fractions of the corpus (by position) in train, val and test."""


@lru_cache(maxsize=1)
def corpus() -> str:
    """The corpus: CPython's ``pydoc_data.topics`` texts, joined in sorted key order.

    Results are comparable between runs on the same Python minor version.
    """
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def resolve(spec: TaskSpec) -> TaskSpec:
    """``spec`` with its vocabulary size (``n_classes``) read from the corpus."""
    return dataclasses.replace(spec, n_classes=len(set(corpus())))


def load(request: LoadRequest) -> Splits:
    """The windows of ``request.block_size`` characters (default: the spec's 32)."""
    windows, vocab = _tinytext_cpu(int(request.block_size or SPEC.block_size))
    return Splits(windows, vocab=vocab)


def host(spec: TaskSpec, bn_momentum: float) -> Any:
    """The transformer host of a sized spec (it has no BatchNorm: ``bn_momentum`` is unused)."""
    from esper_env.nn.transformer import TransformerHost

    return TransformerHost(spec.n_classes, spec.block_size, spec.n_layer, spec.n_head, spec.n_embd)


def _windows(ids: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of ``block_size`` tokens and their next-token targets."""
    import numpy as np
    import torch

    n = (len(ids) - 1) // block_size
    x = ids[:n * block_size].reshape(n, block_size)
    y = ids[1:n * block_size + 1].reshape(n, block_size)
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


@lru_cache(maxsize=2)
def _tinytext_cpu(block_size: int) -> tuple[tuple[torch.Tensor, ...], str]:
    import numpy as np

    text = corpus()
    vocab = "".join(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((lookup[ch] for ch in text), dtype=np.int64, count=len(text))
    n_train = int(SPLIT[0] * len(ids))
    n_val = int(SPLIT[1] * len(ids))
    out: list[torch.Tensor] = []
    for part in (ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:]):
        out += list(_windows(part, block_size))
    return tuple(out), vocab


TASK = Task(SPEC, load, host, resolve)
