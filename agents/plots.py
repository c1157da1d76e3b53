"""Pictures of an esper-bench run (matplotlib, Agg backend; ``pip install "esper-env[bench]"``).

Every picture but the timelines shows *gains*: a policy's test accuracy minus no-growth's on the
same episode (same seed, same instance), so the instance, whose accuracy ranges from 15 % to 90 %
across ``digits-mix``, does not decide where a policy lands.

* :func:`plot_forest` (the headline): each policy's paired gain over no-growth, mean and 95 %
  bootstrap interval, sorted.
* :func:`plot_gain_curves`: the gain per epoch of a chosen handful of policies, each episode
  aligned on its own budget (fraction of its epochs), mean with a 95 % bootstrap band.
* :func:`plot_gain_vs_params`: gain against parameters added relative to the host (log axis),
  one point per episode, with the front (most gain for the fewest parameters) per host size.
* :func:`plot_timelines`: one episode per policy: the stage of every slot per epoch, actions marked.

Each takes the episode records of :func:`agents.bench.play` (or the bench summary) and a file
path, writes a small PNG and returns a :class:`Picture` naming what its legend (or axis) shows.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def plot_timelines(episodes: list[dict[str, Any]], path: str | Path) -> Picture:
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
    return Picture(_save(fig, path), tuple(names))


@dataclass(frozen=True)
class Picture:
    """A written picture and the policies (and other entries) its legend or axis names."""

    path: Path
    labels: tuple[str, ...]


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _style(i: int) -> dict[str, Any]:
    """A distinct (colour, line style) for the i-th line: 10 colours x 4 styles before a repeat."""
    return {"color": COLOURS[i % len(COLOURS)], "ls": LINESTYLES[(i // len(COLOURS)) % 4]}


def _case(e: dict[str, Any]) -> tuple[int, str | None]:
    return e["seed"], e["instance"]


def _no_growth(episodes: list[dict[str, Any]]) -> dict[tuple[int, str | None], dict[str, Any]]:
    by = {_case(e): e for e in episodes if e["policy"] == "no-growth"}
    if not by:
        raise ValueError("the gain pictures need no-growth's episodes (add it to --policies)")
    return by


def plot_forest(summary: dict[str, Any], path: str | Path) -> Picture:
    """Each policy's paired gain over no-growth (test accuracy, pp): mean and 95 % bootstrap
    interval, sorted, static references in grey.
    """  # noqa: D205
    plt = _pyplot()
    rows = sorted(((p, m["final_test_acc_minus_no-growth"]) for p, m in summary["policies"].items()
                   if "final_test_acc_minus_no-growth" in m), key=lambda r: r[1]["mean"])
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * len(rows) + 1.3), dpi=100)
    for y, (p, d) in enumerate(rows):
        colour = "#7f7f7f" if p.startswith("static-") else "#1f77b4"
        ax.errorbar(d["mean"], y, xerr=[[d["mean"] - d["lo"]], [d["hi"] - d["mean"]]], fmt="o",
                    color=colour, ms=4, capsize=2, lw=1)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [p for p, _ in rows], fontsize=7)
    ax.set(xlabel="test accuracy − no-growth on the same episode (pp)",
           title=f"Gain over no-growth (mean, 95 % bootstrap interval; {summary['cases']} cases)")
    ax.grid(alpha=0.3, axis="x")
    return Picture(_save(fig, path), tuple(p for p, _ in rows))


GRID = np.linspace(0.05, 1.0, 20)
"""Fractions of an episode's budget the gain curves are read at."""


def gain_curves(episodes: list[dict[str, Any]], policy: str) -> np.ndarray:
    """``(episodes, len(GRID))``: ``policy``'s test-accuracy gain over no-growth on the same
    episode, at each fraction of the episode's own epochs (linear between epochs).
    """  # noqa: D205
    base = _no_growth(episodes)
    rows = []
    for e in episodes:
        if e["policy"] != policy or _case(e) not in base:
            continue
        mine = np.asarray(e["test_curve"], dtype=float)
        theirs = np.asarray(base[_case(e)]["test_curve"], dtype=float)
        n = min(len(mine), len(theirs))
        fraction = np.arange(1, n + 1) / n  # the reset's epoch is epoch 1 of n
        rows.append(np.interp(GRID, fraction, mine[:n] - theirs[:n]))
    if not rows:
        raise ValueError(f"no episode of {policy!r} to draw")
    return np.array(rows)


def plot_gain_curves(episodes: list[dict[str, Any]], path: str | Path, policies: list[str]
                     ) -> Picture:
    """The gain per epoch over no-growth of ``policies``, episodes aligned on their own budget."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    labels = []
    for i, name in enumerate(policies):
        arr = np.zeros((1, len(GRID))) if name == "no-growth" else gain_curves(episodes, name)
        style = {"color": "black", "ls": ":"} if name == "no-growth" else _style(i)
        ax.plot(GRID, arr.mean(0), label=name, lw=1.4, **style)
        if len(arr) > 1:
            lo, hi = bootstrap_band(arr)
            ax.fill_between(GRID, lo, hi, alpha=0.12, color=style["color"])
        labels.append(name)
    ax.set(xlabel="fraction of the episode's epochs", ylabel="test accuracy − no-growth (pp)",
           title="Gain over no-growth per epoch (mean, 95 % band)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return Picture(_save(fig, path), tuple(labels))


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the (cost, value) points that no other point dominates, sorted by cost.

    A point is dominated when another has no more cost and no less value, one strictly.
    """
    order = np.lexsort((-points[:, 1], points[:, 0]))
    front, best = [], -np.inf
    for i in order:
        if points[i, 1] > best:
            front.append(i)
            best = points[i, 1]
    return np.array(front, dtype=int)


ZERO = 1e-3
"""Where an episode that added no parameters sits on the log axis (marked "0")."""


def plot_gain_vs_params(episodes: list[dict[str, Any]], path: str | Path) -> Picture:
    """Gain over no-growth against parameters added / host parameters (log axis), one point per
    episode coloured by policy, and the front per instance family (episodes of the same host
    size), each in its own line style.
    """  # noqa: D205
    plt = _pyplot()
    base = _no_growth(episodes)
    fig, ax = plt.subplots(figsize=(7.4, 4.4), dpi=100)
    shown = [e for e in episodes if _case(e) in base]
    labels = []
    for i, name in enumerate(_policies(shown)):
        rows = [e for e in shown if e["policy"] == name]
        x = [max(e["params_added"] / max(e["host_params"], 1), ZERO) for e in rows]
        y = [e["final_test_acc"] - base[_case(e)]["final_test_acc"] for e in rows]
        ax.scatter(x, y, s=10, alpha=0.6, color=COLOURS[i % len(COLOURS)],
                   marker=MARKERS[(i // len(COLOURS)) % len(MARKERS)], label=name)
        labels.append(name)
    families = sorted({e["host_params"] for e in shown})
    for j, family in enumerate(families):
        rows = [e for e in shown if e["host_params"] == family]
        pts = np.array([[max(e["params_added"] / max(family, 1), ZERO),
                         e["final_test_acc"] - base[_case(e)]["final_test_acc"]] for e in rows])
        front = pts[pareto_front(pts)]
        label = f"front, host of {family} params"
        ax.step(front[:, 0], front[:, 1], where="post", color="black", lw=0.9,
                ls=LINESTYLES[j % len(LINESTYLES)], alpha=0.8, label=label)
        labels.append(label)
    ax.set_xscale("log")
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set(xlabel=f"parameters added / host parameters (log; {ZERO:g} = none added)",
           ylabel="test accuracy − no-growth (pp)",
           title="Gain against parameters added (one point per episode)")
    ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(alpha=0.3)
    return Picture(_save(fig, path), tuple(labels))


def _save(fig: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
