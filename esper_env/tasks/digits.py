"""``digits`` (the default task): scikit-learn's 1,797 8×8 greyscale digits, no network.

Stratified 60/20/20 train/val/test split with the fixed split seed (the same split in every
episode), standardised with the training split's statistics. Host: a CNN of widths 2-4-8.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from esper_env.tasks.spec import LoadRequest, Splits, Task, TaskSpec, cnn_host

if TYPE_CHECKING:
    import torch

SPEC = TaskSpec("digits", "cnn", 1, 8, 10, host_channels=(2, 4, 8), pool_layers=2)


def load(request: LoadRequest) -> Splits:
    """The digits splits (the same in every episode: ``request`` is not needed)."""
    return Splits(_digits_cpu())


@lru_cache(maxsize=1)
def _digits_cpu() -> tuple[torch.Tensor, ...]:
    import numpy as np
    import torch

    from esper_env.tasks.splits import SPLIT_SEED, global_rngs_kept, stratified_split

    with global_rngs_kept():
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:  # pragma: no cover - scikit-learn is a core dependency
            raise ImportError("the 'digits' task needs scikit-learn: pip install scikit-learn") from e
        bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32)[:, None]  # (N, 1, 8, 8), values 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, va, te = stratified_split(y, (0.6, 0.2, 0.2), SPLIT_SEED)
    mean, std = float(x[tr].mean()), float(x[tr].std())
    x = (x - mean) / std
    out = []
    for idx in (tr, va, te):
        out += [torch.from_numpy(x[idx].copy()), torch.from_numpy(y[idx].copy())]
    return tuple(out)


TASK = Task(SPEC, load, cnn_host)
