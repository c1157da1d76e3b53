"""Prioritized experience replay (Schaul et al., "Prioritized Experience Replay", ICLR 2016).

:class:`PrioritizedReplayBuffer` is an SB3 ``ReplayBuffer`` whose ``sample`` draws transition i with
probability P(i) = p_i^α / Σ_k p_k^α (proportional variant, α = 0.6) through a :class:`SumTree`, with
stratified sampling (one draw in each of ``batch_size`` equal slices of the total priority), and
returns importance-sampling weights w_i = (N·P(i))^(−β) / max_j w_j (normalised by the largest weight
in the batch, as in the paper's Algorithm 1, so weights lie in (0, 1]). β is annealed from 0.4 to 1
over training by :class:`agents.dqn_per.PERDQN`. New transitions get the largest priority seen so far,
so each is replayed at least once with high probability. All randomness comes from the buffer's own
seeded ``np.random.Generator`` (SB3's buffers draw from the global ``np.random``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize


class SumTree:
    """A binary sum tree over ``capacity`` non-negative leaves (array layout, root at index 1).

    ``update`` sets leaves and refreshes their ancestors; ``find_prefix_sum`` maps values in
    ``[0, total)`` to the leaf whose cumulative-sum interval holds them, in O(log capacity).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} is invalid; allowed: >= 1")
        self.capacity = int(capacity)
        self._depth = max(int(np.ceil(np.log2(self.capacity))), 0)
        self._size = 2 ** self._depth
        self.nodes = np.zeros(2 * self._size, dtype=np.float64)

    @property
    def total(self) -> float:
        """Sum of all leaves (the root)."""
        return float(self.nodes[1])

    @property
    def leaves(self) -> np.ndarray:
        """A copy of the ``capacity`` leaf values."""
        return self.nodes[self._size:self._size + self.capacity].copy()

    def __getitem__(self, index: Any) -> np.ndarray:
        idx = np.asarray(index)
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(f"leaf index out of range 0..{self.capacity - 1}: {index!r}")
        return self.nodes[self._size + idx]

    def update(self, indices: np.ndarray, values: np.ndarray) -> None:
        """Set ``leaf[indices] = values`` (for a repeated index the last value wins)."""
        idx = np.asarray(indices, dtype=np.int64).ravel()
        val = np.asarray(values, dtype=np.float64).ravel()
        if idx.shape != val.shape:
            raise ValueError(f"{idx.size} indices but {val.size} values")
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise ValueError(f"leaf index out of range 0..{self.capacity - 1}: {idx.min()}..{idx.max()}")
        bad = ~np.isfinite(val) | (val < 0)
        if bad.any():
            raise ValueError(f"priority {val[bad][0]!r} is invalid; allowed: finite and >= 0")
        nodes = idx + self._size
        self.nodes[nodes] = val  # numpy assignment: the last duplicate wins
        parents = np.unique(nodes // 2)
        while parents.size and parents[0] >= 1:
            self.nodes[parents] = self.nodes[2 * parents] + self.nodes[2 * parents + 1]
            parents = np.unique(parents // 2)
            parents = parents[parents >= 1]

    def find_prefix_sum(self, values: np.ndarray) -> np.ndarray:
        """Leaf index i with ``sum(leaf[:i]) <= v < sum(leaf[:i+1])`` for each value (vectorised)."""
        v = np.asarray(values, dtype=np.float64).copy()
        node = np.ones(v.shape, dtype=np.int64)
        for _ in range(self._depth):
            left = 2 * node
            go_right = v >= self.nodes[left]
            # never step into an empty right subtree because of rounding at the edge
            go_right &= self.nodes[left + 1] > 0
            v = np.where(go_right, v - self.nodes[left], v)
            node = np.where(go_right, left + 1, left)
        return np.minimum(node - self._size, self.capacity - 1)


class PrioritizedReplayBufferSamples(NamedTuple):
    """SB3's replay samples plus importance weights and the flat indices to update priorities."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    weights: th.Tensor
    """Importance-sampling weights, shape (batch, 1), in (0, 1]."""
    indices: np.ndarray
    """Flat transition indices ``pos * n_envs + env`` (for ``update_priorities``)."""


class PrioritizedReplayBuffer(ReplayBuffer):
    """SB3 ``ReplayBuffer`` with proportional prioritized sampling and importance weights.

    Args:
        buffer_size, observation_space, action_space, device, n_envs, handle_timeout_termination:
            as in SB3's ``ReplayBuffer``.
        optimize_memory_usage: must be False (not supported).
        alpha: priority exponent α (0 = uniform).
        beta: initial importance exponent β.
        final_beta: β at the end of training (see :meth:`anneal_beta`).
        eps: added to |TD error| so that no transition gets priority 0.
        seed: seed of the buffer's own ``np.random.Generator``.
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space,
                 device: th.device | str = "auto", n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True, alpha: float = 0.6, beta: float = 0.4,
                 final_beta: float = 1.0, eps: float = 1e-6, seed: int | None = None) -> None:
        if optimize_memory_usage:
            raise ValueError("PrioritizedReplayBuffer does not support optimize_memory_usage=True")
        for name, value, low, high in (("alpha", alpha, 0.0, np.inf), ("beta", beta, 0.0, 1.0),
                                       ("final_beta", final_beta, 0.0, 1.0), ("eps", eps, 0.0, np.inf)):
            if not low <= value <= high or (name == "eps" and value == 0):
                raise ValueError(f"{name}={value!r} is invalid; allowed: {low} <= {name} <= {high}"
                                 + (" and > 0" if name == "eps" else ""))
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs,
                         optimize_memory_usage=False,
                         handle_timeout_termination=handle_timeout_termination)
        self.alpha, self.initial_beta, self.final_beta, self.eps = alpha, beta, final_beta, eps
        self.beta = beta
        self.rng = np.random.default_rng(seed)
        self.tree = SumTree(self.buffer_size * self.n_envs)
        self.max_priority = 1.0

    def add(self, obs: np.ndarray, next_obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
            done: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Store one transition per env, each with the largest priority seen so far."""
        start = self.pos * self.n_envs
        super().add(obs, next_obs, action, reward, done, infos)
        leaves = np.arange(start, start + self.n_envs)
        self.tree.update(leaves, np.full(self.n_envs, self.max_priority ** self.alpha))

    def anneal_beta(self, progress: float) -> None:
        """Set β linearly between its initial and final value; ``progress`` in [0, 1]."""
        progress = float(np.clip(progress, 0.0, 1.0))
        self.beta = self.initial_beta + progress * (self.final_beta - self.initial_beta)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> PrioritizedReplayBufferSamples:
        """Stratified prioritized sample of ``batch_size`` transitions with importance weights."""
        n_stored = (self.buffer_size if self.full else self.pos) * self.n_envs
        if n_stored == 0:
            raise ValueError("cannot sample from an empty PrioritizedReplayBuffer")
        total = self.tree.total
        bounds = np.linspace(0.0, total, batch_size + 1)
        values = self.rng.uniform(bounds[:-1], bounds[1:])
        indices = self.tree.find_prefix_sum(values)
        probs = self.tree[indices] / total
        weights = (n_stored * probs) ** (-self.beta)
        weights /= weights.max()
        batch_inds, env_inds = np.divmod(indices, self.n_envs)
        data = (
            self._normalize_obs(self.observations[batch_inds, env_inds, :], env),
            self.actions[batch_inds, env_inds, :],
            self._normalize_obs(self.next_observations[batch_inds, env_inds, :], env),
            (self.dones[batch_inds, env_inds] * (1 - self.timeouts[batch_inds, env_inds])).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_inds].reshape(-1, 1), env),
        )
        obs, actions, next_obs, dones, rewards = map(self.to_torch, data)
        return PrioritizedReplayBufferSamples(obs, actions, next_obs, dones, rewards, None,
                                              self.to_torch(weights.reshape(-1, 1).astype(np.float32)),
                                              indices)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Write ``(|td_error| + eps)^α`` as the priorities of the sampled transitions."""
        priorities = np.abs(np.asarray(td_errors, dtype=np.float64).ravel()) + self.eps
        if not np.isfinite(priorities).all():
            raise ValueError(f"TD errors must be finite, got {td_errors!r}")
        self.tree.update(indices, priorities ** self.alpha)
        self.max_priority = max(self.max_priority, float(priorities.max()))
