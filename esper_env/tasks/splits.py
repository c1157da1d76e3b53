"""What the task loaders share: the fixed split seed, stratified splits, global-RNG protection."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

SPLIT_SEED = 20251210
"""Seed of the fixed splits and subsets (digits, CIFAR-10, ``train_subset``): one in every episode."""


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float], seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a per-class shuffled train/val/test split with the given fractions."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train:n_train + n_val])
        parts[2].append(idx[n_train + n_val:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


@contextmanager
def global_rngs_kept() -> Iterator[None]:
    """Restore Python's global ``random``, NumPy's global RNG and torch's CPU RNG on exit.

    For third-party code that draws from them where it need not, at import or otherwise: the env
    promises never to change them. (Importing ``sklearn.datasets`` imports ``rich`` when it is
    installed, and ``rich.style`` calls ``random.getrandbits`` at import.)
    """
    import torch

    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(th)
