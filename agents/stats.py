"""Statistics for comparing policies over seeds: bootstrap intervals, paired differences, rank correlation.

Every interval here is a 95 % percentile bootstrap over episodes (seeds, or instance × seed cases)
drawn from a seeded generator, so a table is reproducible; paired statistics resample cases, not
policies, so the pairing (same seed, same instance) is kept (Agarwal et al., "Deep RL at the Edge
of the Statistical Precipice", NeurIPS 2021, argue for exactly these over point estimates).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_REPS = 2000
"""Bootstrap replicates of every interval."""


def bootstrap_ci(values: Sequence[float], reps: int = BOOTSTRAP_REPS, seed: int = 0
                 ) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of the mean of ``values`` by the percentile bootstrap."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if x.size == 1 or np.all(x == x[0]):
        return float(x.mean()), float(x.mean()), float(x.mean())
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (reps, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(x.mean()), float(lo), float(hi)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); nan if either side is constant."""
    from scipy import stats

    if len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def bootstrap_spearman(ret: np.ndarray, acc: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0
                       ) -> tuple[float, float]:
    """95 % percentile interval of the policy-level Spearman, resampling cases.

    ``ret`` and ``acc`` are (policies, cases) arrays; each replicate draws cases with replacement
    (the same draw for every policy, keeping the pairing) and ranks the policies' means.
    """
    rng = np.random.default_rng(seed)
    n = ret.shape[1]
    values = []
    for _ in range(reps):
        idx = rng.integers(0, n, n)
        v = spearman(list(ret[:, idx].mean(1)), list(acc[:, idx].mean(1)))
        if not math.isnan(v):
            values.append(v)
    if not values:
        return math.nan, math.nan
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)
