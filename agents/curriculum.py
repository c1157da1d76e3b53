"""BlueprintCurriculum: UCB1 over blueprints (Auer, Cesa-Bianchi & Fischer, Machine Learning 2002).

Each blueprint is an arm. :meth:`BlueprintCurriculum.select` plays every arm once, in the given
order, then the arm maximising ``mean + c·√(ln N / n)`` (N: outcomes recorded over all arms, n: the
arm's); ties go to the curriculum's own seeded ``np.random.Generator``. :meth:`update` records a
seed's outcome as ``reward − complexity_penalty · complexity[arm]``: the penalty lowers the recorded
mean and never the exploration bonus.

Seeds take several epochs to resolve, so a selection is *pending* until its outcome arrives. The
"every arm once" phase counts pending selections (it does not plant the same untried blueprint in
two slots before hearing back), while the bonus counts recorded outcomes only. Pure Python + numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from esper_env.errors import unknown_name_message


class BlueprintCurriculum:
    """UCB1 over blueprint arms.

    Args:
        arms: blueprint names, in the order of the first round.
        c: exploration constant (≥ 0; √2 is UCB1's).
        complexity: per-arm complexity (e.g. parameter share of the host); default all 0.
        complexity_penalty: weight of the complexity in the recorded reward (≥ 0).
        seed: seed of the tie-breaking generator.
    """

    def __init__(self, arms: Sequence[str], c: float = math.sqrt(2.0),
                 complexity: Sequence[float] | None = None, complexity_penalty: float = 0.0,
                 seed: int | None = None) -> None:
        self.arms = tuple(arms)
        if not self.arms or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"arms={arms!r} is invalid; allowed: distinct names, at least one")
        if not (math.isfinite(c) and c >= 0):
            raise ValueError(f"c={c!r} is invalid; allowed: finite and >= 0")
        if not (math.isfinite(complexity_penalty) and complexity_penalty >= 0):
            raise ValueError(f"complexity_penalty={complexity_penalty!r} is invalid; allowed: >= 0")
        comp = [0.0] * len(self.arms) if complexity is None else [float(x) for x in complexity]
        if len(comp) != len(self.arms) or not all(math.isfinite(x) for x in comp):
            raise ValueError(f"complexity={complexity!r} is invalid; allowed: {len(self.arms)} finite "
                             "numbers, one per arm")
        self.c = float(c)
        self.complexity = dict(zip(self.arms, comp, strict=True))
        self.complexity_penalty = float(complexity_penalty)
        self.rng = np.random.default_rng(seed)
        self.pulls = dict.fromkeys(self.arms, 0)
        self.sums = dict.fromkeys(self.arms, 0.0)
        self.pending = dict.fromkeys(self.arms, 0)

    @property
    def total_pulls(self) -> int:
        """Outcomes recorded over all arms (N)."""
        return sum(self.pulls.values())

    def _check(self, arm: str) -> None:
        if arm not in self.pulls:
            raise ValueError(unknown_name_message("blueprint arm", arm, self.arms))

    def mean(self, arm: str) -> float:
        """Mean recorded (penalised) reward of ``arm`` (0 before any outcome)."""
        self._check(arm)
        n = self.pulls[arm]
        return self.sums[arm] / n if n else 0.0

    def ucb(self, arm: str) -> float:
        """``mean + c·√(ln N / n)``; +inf for an arm with no recorded outcome."""
        n = self.pulls[arm]
        if n == 0:
            return math.inf
        return self.mean(arm) + self.c * math.sqrt(math.log(self.total_pulls) / n)

    def select(self, allowed: Sequence[str] | None = None) -> str:
        """The arm to play among ``allowed`` (default: all), marked pending until :meth:`update`."""
        candidates = list(self.arms if allowed is None else allowed)
        if not candidates:
            raise ValueError(f"no arm allowed; arms are {', '.join(self.arms)}")
        for arm in candidates:
            self._check(arm)
        untried = [a for a in self.arms if a in candidates and self.pulls[a] + self.pending[a] == 0]
        if untried:
            choice = untried[0]
        else:
            scores = np.array([self.ucb(a) for a in candidates])
            best = np.flatnonzero(scores == scores.max())
            choice = candidates[int(best[0] if len(best) == 1 else self.rng.choice(best))]
        self.pending[choice] += 1
        return choice

    def update(self, arm: str, reward: float) -> float:
        """Record an outcome of ``arm``; returns the recorded (penalised) reward."""
        self._check(arm)
        if not math.isfinite(reward):
            raise ValueError(f"reward={reward!r} is invalid; allowed: finite")
        recorded = float(reward) - self.complexity_penalty * self.complexity[arm]
        self.pulls[arm] += 1
        self.sums[arm] += recorded
        self.pending[arm] = max(self.pending[arm] - 1, 0)
        return recorded

    def cancel(self, arm: str) -> None:
        """Drop one pending selection of ``arm`` without an outcome (e.g. the episode ended)."""
        self._check(arm)
        self.pending[arm] = max(self.pending[arm] - 1, 0)

    def stats(self) -> dict[str, dict[str, float]]:
        """Per arm: pulls, mean, ucb (inf if untried), pending and complexity (plain Python numbers)."""
        return {a: {"pulls": self.pulls[a], "mean": self.mean(a), "ucb": self.ucb(a),
                    "pending": self.pending[a], "complexity": self.complexity[a]} for a in self.arms}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the curriculum (JSON-compatible, RNG state included)."""
        return {"arms": list(self.arms), "c": self.c, "complexity": [self.complexity[a] for a in self.arms],
                "complexity_penalty": self.complexity_penalty, "pulls": dict(self.pulls),
                "sums": dict(self.sums), "pending": dict(self.pending),
                "rng": self.rng.bit_generator.state}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> BlueprintCurriculum:
        """Inverse of :meth:`state_dict`."""
        cur = cls(state["arms"], state["c"], state["complexity"], state["complexity_penalty"])
        cur.pulls = {a: int(v) for a, v in state["pulls"].items()}
        cur.sums = {a: float(v) for a, v in state["sums"].items()}
        cur.pending = {a: int(v) for a, v in state["pending"].items()}
        cur.rng.bit_generator.state = state["rng"]
        return cur
