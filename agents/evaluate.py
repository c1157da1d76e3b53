"""Run seeded episodes of any policy with an SB3-like ``predict`` and summarise them."""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EpisodeResult:
    """Outcome of one episode."""

    policy: str
    seed: int
    episode_return: float
    final_val_acc: float
    final_test_acc: float
    params_added: int
    n_fossilized: int
    lifecycle: dict[str, int] = field(default_factory=dict)
    illegal_actions: int = 0
    rollbacks: int = 0
    length: int = 0
    instance: str | None = None


def _takes_masks(policy: Any) -> bool:
    try:
        return "action_masks" in inspect.signature(policy.predict).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def run_episode(env: Any, policy: Any, seed: int, name: str | None = None,
                options: dict[str, Any] | None = None) -> EpisodeResult:
    """Play one episode from ``reset(seed=seed, options=options)`` with ``policy.predict``.

    Policies whose ``predict`` takes ``action_masks`` (the baselines, sb3-contrib's MaskablePPO)
    get ``env.action_masks()``; others (SB3's PPO, DQN) are called without it. Deterministic
    actions; ``options={"instance": k}`` pins an instance of the env's instance split.
    """
    base = env.unwrapped
    masked = _takes_masks(policy)
    obs, info = env.reset(seed=seed, options=options)
    instance = info.get("instance")
    total, done, steps = 0.0, False, 0
    counts: Counter[str] = Counter()
    illegal = rollbacks = 0
    while not done:
        if masked:
            action, _ = policy.predict(obs, action_masks=base.action_masks(), deterministic=True)
        else:
            action, _ = policy.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(int(action))
        total += float(reward)
        steps += 1
        done = terminated or truncated
        illegal += int(info["illegal_action"])
        rollbacks += int(info["rollback"])
        for e in info["events"]:
            counts[e["to"].lower()] += 1
    return EpisodeResult(
        policy=name or getattr(policy, "name", type(policy).__name__), seed=seed,
        episode_return=total, final_val_acc=info["final_val_acc"],
        final_test_acc=info["final_test_acc"], params_added=info["params_added"],
        n_fossilized=info["n_fossilized"], lifecycle=dict(counts), illegal_actions=illegal,
        rollbacks=rollbacks, length=steps, instance=instance)


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95 % t confidence interval (0 for a single value)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), 0.0
    from scipy import stats  # scipy comes with scikit-learn

    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


def format_table(results: list[EpisodeResult]) -> str:
    """Per-episode text table: policy, seed, test/val accuracy, return, params, lifecycle."""
    head = (f"{'policy':<22} {'seed':>4} {'test acc':>8} {'val acc':>8} {'return':>8} "
            f"{'+params':>7}  lifecycle (germinated/fossilized/culled)")
    lines = [head, "-" * len(head)]
    for r in results:
        lc = r.lifecycle
        lines.append(
            f"{r.policy:<22} {r.seed:>4} {r.final_test_acc:>8.2f} {r.final_val_acc:>8.2f} "
            f"{r.episode_return:>8.2f} {r.params_added:>7}  "
            f"{lc.get('germinated', 0)}/{lc.get('fossilized', 0)}/{lc.get('culled', 0)}")
    return "\n".join(lines)
