"""Statistics for comparing policies over seeds: intervals, paired differences, rank correlation.

One convention for every interval of esper-eval, esper-bench, the callbacks and the benchmarks: a
**95 % percentile bootstrap of the mean over cases** (episodes: seeds, or instance × seed cases;
for the speed benchmarks, repeats), :data:`BOOTSTRAP_REPS` replicates drawn from a generator
seeded with 0, so a table is reproducible. A **paired difference** is taken on the same cases (same
seed, same instance) and bootstrapped as one sample of per-case differences, so the pairing is
kept; the policy-level rank correlation resamples cases, not policies, for the same reason (Agarwal
et al., "Deep RL at the Edge of the Statistical Precipice", NeurIPS 2021, argue for exactly these
over point estimates).

:func:`bootstrap_ci` gives the interval itself, ``(mean, lo, hi)``. Tables that print ``mean ± h``
use :func:`mean_ci95`: ``h`` is the larger distance from the mean to an end of that same interval,
so ``mean ± h`` contains it; a single case, or cases that all agree, give ``h = 0``. With few cases
(fewer than about 10) a percentile bootstrap is narrower than it should be: read such intervals as
a lower bound on the uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

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


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and ``h`` such that ``mean ± h`` contains the 95 % bootstrap interval of :func:`bootstrap_ci`."""
    m, lo, hi = bootstrap_ci(values)
    return m, max(hi - m, m - lo)


def bootstrap_band(curves: np.ndarray, reps: int = BOOTSTRAP_REPS, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise 2.5 % and 97.5 % bounds of the mean of ``curves`` (episodes, points), resampling episodes."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(curves), (reps, len(curves)))
    means = curves[idx].mean(axis=1)
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


def summarize(results: Iterable[Any], metrics: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per policy (``r.policy``) and metric (an attribute of each result): mean, ``ci95`` and n."""
    results = list(results)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in dict.fromkeys(r.policy for r in results):
        rows = [r for r in results if r.policy == name]
        out[name] = {}
        for metric in metrics:
            m, h = mean_ci95([float(getattr(r, metric)) for r in rows])
            out[name][metric] = {"mean": m, "ci95": h, "n": len(rows)}
    return out


def paired_differences(results: Iterable[Any], reference: str,
                       metric: str = "final_test_acc") -> dict[str, dict[str, float]]:
    """Per policy: mean and ``ci95`` of ``metric`` minus the reference's on the same episode.

    Episodes are matched on ``(r.seed, r.instance)``; a policy's episodes that the reference did
    not play are left out.
    """
    results = list(results)
    ref = {(r.seed, r.instance): float(getattr(r, metric)) for r in results if r.policy == reference}
    out = {}
    for name in dict.fromkeys(r.policy for r in results):
        if name == reference:
            continue
        diffs = [float(getattr(r, metric)) - ref[(r.seed, r.instance)]
                 for r in results if r.policy == name and (r.seed, r.instance) in ref]
        if diffs:
            m, h = mean_ci95(diffs)
            out[name] = {"mean": m, "ci95": h, "n": len(diffs)}
    return out


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
