"""Pictures of an esper-bench run (matplotlib, Agg backend; ``pip install "esper-env[bench]"``).

* :func:`plot_accuracy_curves`: test accuracy per epoch per policy, mean with a 95 % bootstrap band.
* :func:`plot_timelines`: one episode per policy: the stage of every slot per epoch, actions marked.
* :func:`plot_pareto`: final test accuracy against parameters added, one point per episode, coloured
  by policy, with the Pareto front (most accuracy for the fewest parameters) drawn.

Each takes the episode records of :func:`agents.bench.play` and a file path, and writes a small PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agents.stats import bootstrap_band

STAGE_COLOURS = {"DORMANT": "#eeeeee", "GERMINATED": "#c6dbef", "TRAINING": "#6baed6",
                 "BLENDING": "#fdae6b", "PROBATIONARY": "#fd8d3c", "FOSSILIZED": "#31a354",
                 "CULLED": "#de2d26", "EMBARGOED": "#fcbba1", "RESETTING": "#bdbdbd"}
"""Colour of each lifecycle stage in the timelines."""
BENCH_EXTRA = 'pip install "esper-env[bench]"'


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(f"the esper-bench pictures need matplotlib: {BENCH_EXTRA}") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _policies(episodes: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(e["policy"] for e in episodes))


def plot_accuracy_curves(episodes: list[dict[str, Any]], path: str | Path) -> Path:
    """Test accuracy per epoch per policy: mean over episodes with a 95 % bootstrap band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name in _policies(episodes):
        curves = [e["test_curve"] for e in episodes if e["policy"] == name]
        n = min(len(c) for c in curves)  # instance sets mix budgets: plot the common epochs
        arr = np.array([c[:n] for c in curves], dtype=float)
        epochs = np.arange(1, n + 1)
        ax.plot(epochs, arr.mean(0), label=name, lw=1.2)
        if len(arr) > 1:
            lo, hi = bootstrap_band(arr)
            ax.fill_between(epochs, lo, hi, alpha=0.15)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy per epoch (mean, 95 % band)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_timelines(episodes: list[dict[str, Any]], path: str | Path) -> Path:
    """Lifecycle timeline of each policy's first episode: stage per slot per epoch, actions marked."""
    plt = _pyplot()
    names = _policies(episodes)
    firsts = [next(e for e in episodes if e["policy"] == n) for n in names]
    n_slots = len(firsts[0]["stages"][0])
    fig, ax = plt.subplots(figsize=(8.0, 0.35 * len(names) * n_slots + 1.2), dpi=100)
    row = 0
    ticks, labels = [], []
    for name, ep in zip(names, firsts, strict=True):
        for s in range(n_slots):
            for t, stages in enumerate(ep["stages"]):
                ax.barh(row, 1, left=t + 0.5, color=STAGE_COLOURS.get(stages[s], "white"), height=0.8,
                        edgecolor="none")
            for t, action in enumerate(ep["actions"], start=2):  # action t-1 is taken after epoch t-1
                if action != "WAIT" and action.endswith(f"@{s}"):
                    ax.text(t - 0.5, row, action.split("@")[0][:4].replace("GERM", "G"), ha="center",
                            va="center", fontsize=5)
            ticks.append(row)
            labels.append(f"{name} · slot {s}" if n_slots > 1 else name)
            row += 1
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="epoch", title="Lifecycle of one episode per policy (G=germinate, FOSS, CULL)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STAGE_COLOURS.values()]
    ax.legend(handles, [k.lower() for k in STAGE_COLOURS], fontsize=6, loc="center left",
              bbox_to_anchor=(1.01, 0.5), frameon=False)
    return _save(fig, path)


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the (params, accuracy) points that no other point dominates, sorted by params.

    A point is dominated when another has no more parameters and no less accuracy, one strictly.
    """
    order = np.lexsort((-points[:, 1], points[:, 0]))
    front, best = [], -np.inf
    for i in order:
        if points[i, 1] > best:
            front.append(i)
            best = points[i, 1]
    return np.array(front, dtype=int)


def plot_pareto(episodes: list[dict[str, Any]], path: str | Path) -> Path:
    """Final test accuracy against parameters added, one point per episode, Pareto front drawn."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name in _policies(episodes):
        rows = [e for e in episodes if e["policy"] == name]
        ax.scatter([e["params_added"] for e in rows], [e["final_test_acc"] for e in rows], s=12,
                   alpha=0.7, label=name)
    pts = np.array([[e["params_added"], e["final_test_acc"]] for e in episodes], dtype=float)
    front = pts[pareto_front(pts)]
    ax.step(front[:, 0], front[:, 1], where="post", color="black", lw=1, label="Pareto front")
    ax.set(xlabel="parameters added", ylabel="final test accuracy (%)",
           title="Accuracy against parameters added (one point per episode)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
