"""Prioritized experience replay (Schaul et al., "Prioritized Experience Replay", ICLR 2016).

:class:`PrioritizedReplayBuffer` is an SB3 ``ReplayBuffer`` whose ``sample`` draws transition i with
probability P(i) = p_i^α / Σ_k p_k^α (proportional variant, α = 0.6) through a :class:`SumTree`, with
stratified sampling (one draw in each of ``batch_size`` equal slices of the total priority), and
returns importance-sampling weights w_i = (N·P(i))^(−β) / max_j w_j, normalised by the largest weight
*in the batch* (the paper's Algorithm 1), so weights lie in (0, 1]. β is annealed from 0.4 to 1 over
training by :class:`agents.dqn_per.PERDQN`. New transitions get the largest priority seen so far, so
each is replayed at least once with high probability. All randomness comes from the buffer's own
seeded ``np.random.Generator`` (SB3's buffers draw from the global ``np.random``).

Transition ``(pos, env)`` of SB3's ``(buffer_size, n_envs, ...)`` arrays is leaf ``pos * n_envs + env``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize


class SumTree:
    """A binary sum tree over ``capacity`` leaves (array layout: root at 1, children of i at 2i, 2i+1).

    Leaves start at 0 (empty); :meth:`update` sets them to positive priorities and refreshes their
    ancestors; :meth:`find_prefix_sum` maps values in ``[0, total)`` to the leaf whose cumulative-sum
    interval holds them, in O(log capacity) per value.

    Args:
        capacity: number of leaves (>= 1).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} is invalid; allowed: >= 1")
        self.capacity = int(capacity)
        self._depth = int(np.ceil(np.log2(self.capacity))) if self.capacity > 1 else 0
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
        """Leaf value(s) at ``index`` (an int or an integer array)."""
        idx = np.asarray(index)
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise IndexError(f"leaf index out of range 0..{self.capacity - 1}: {index!r}")
        return self.nodes[self._size + idx]

    def update(self, leaf_indices: np.ndarray, priorities: np.ndarray) -> None:
        """Set ``leaf[leaf_indices] = priorities`` (for a repeated index the last value wins).

        Raises:
            ValueError: an index is out of range, the shapes differ, or a priority is not finite and > 0.
        """
        idx = np.asarray(leaf_indices, dtype=np.int64).ravel()
        val = np.asarray(priorities, dtype=np.float64).ravel()
        if idx.shape != val.shape:
            raise ValueError(f"{idx.size} indices but {val.size} priorities")
        if idx.size and (idx.min() < 0 or idx.max() >= self.capacity):
            raise ValueError(f"leaf index out of range 0..{self.capacity - 1}: {idx.min()}..{idx.max()}")
        bad = np.flatnonzero(~(np.isfinite(val) & (val > 0)))
        if bad.size:
            raise ValueError(f"priority {float(val[bad[0]])!r} (leaf {idx[bad[0]]}) is invalid; "
                             "allowed: finite and > 0")
        nodes = idx + self._size
        self.nodes[nodes] = val  # numpy fancy assignment: the last duplicate wins
        parents = np.unique(nodes // 2)
        while parents.size and parents[0] >= 1:
            self.nodes[parents] = self.nodes[2 * parents] + self.nodes[2 * parents + 1]
            parents = np.unique(parents[parents > 1] // 2)

    def find_prefix_sum(self, values: np.ndarray) -> np.ndarray:
        """Leaf index i with ``sum(leaf[:i]) <= v < sum(leaf[:i+1])`` for each value (vectorised descent).

        Values are clipped to ``[0, total]``; the descent never enters a subtree of sum 0, so with a
        positive total only leaves of positive priority are returned (even for ``v == total``).
        """
        v = np.clip(np.asarray(values, dtype=np.float64), 0.0, self.total)
        node = np.ones(v.shape, dtype=np.int64)
        for _ in range(self._depth):
            left = 2 * node
            go_right = ((v >= self.nodes[left]) & (self.nodes[left + 1] > 0)) | (self.nodes[left] <= 0)
            v = np.where(go_right, v - self.nodes[left], v)
            node = np.where(go_right, left + 1, left)
        return np.minimum(node - self._size, self.capacity - 1)


class PrioritizedReplayBufferSamples(NamedTuple):
    """SB3's ``ReplayBufferSamples`` plus importance weights and the leaf indices of the batch."""

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    """Always None here (no n-step returns): the learner uses its own γ."""
    weights: th.Tensor
    """Importance-sampling weights, shape (batch, 1), in (0, 1]."""
    indices: np.ndarray
    """Flat leaf indices ``pos * n_envs + env``, shape (batch,) (for ``update_priorities``)."""


class PrioritizedReplayBuffer(ReplayBuffer):
    """SB3 ``ReplayBuffer`` with proportional prioritized sampling and importance weights.

    Args:
        buffer_size: capacity in transitions, over all envs (as in SB3: ``buffer_size // n_envs`` rows).
        observation_space: observation space.
        action_space: action space.
        device: PyTorch device of the sampled tensors.
        n_envs: number of parallel environments.
        optimize_memory_usage: must be False (not supported).
        handle_timeout_termination: as in SB3: a ``TimeLimit.truncated`` transition is not terminal.
        alpha: priority exponent α (0 = uniform sampling).
        beta: initial importance-sampling exponent β0.
        final_beta: β at the end of training (see :meth:`anneal_beta`).
        eps: added to |TD error| so that no transition gets priority 0.
        seed: seed of the buffer's own ``np.random.Generator`` (``self.rng``).
    """

    def __init__(self, buffer_size: int, observation_space: spaces.Space, action_space: spaces.Space,
                 device: th.device | str = "auto", n_envs: int = 1, optimize_memory_usage: bool = False,
                 handle_timeout_termination: bool = True, alpha: float = 0.6, beta: float = 0.4,
                 final_beta: float = 1.0, eps: float = 1e-6, seed: int | None = None) -> None:
        if optimize_memory_usage:
            raise ValueError("PrioritizedReplayBuffer does not support optimize_memory_usage=True")
        for name, value, low, high in (("alpha", alpha, 0.0, np.inf), ("beta", beta, 0.0, 1.0),
                                       ("final_beta", final_beta, 0.0, 1.0)):
            if not low <= value <= high:
                raise ValueError(f"{name}={value!r} is invalid; allowed: {low} <= {name} <= {high}")
        if not eps > 0:
            raise ValueError(f"eps={eps!r} is invalid; allowed: > 0")
        super().__init__(buffer_size, observation_space, action_space, device, n_envs=n_envs,
                         optimize_memory_usage=False, handle_timeout_termination=handle_timeout_termination)
        self.alpha, self.initial_beta, self.final_beta, self.eps = alpha, beta, final_beta, eps
        self.beta = beta
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Empty the buffer: position, sum tree and max priority (back to 1)."""
        super().reset()
        self.tree = SumTree(self.buffer_size * self.n_envs)
        self.max_priority = 1.0

    @property
    def n_stored(self) -> int:
        """Number of stored transitions (over all envs)."""
        return (self.buffer_size if self.full else self.pos) * self.n_envs

    def add(self, obs: np.ndarray, next_obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
            done: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """Store one transition per env (as SB3 does), each at priority ``max_priority ** alpha``."""
        start = self.pos * self.n_envs
        super().add(obs, next_obs, action, reward, done, infos)
        leaves = np.arange(start, start + self.n_envs)
        self.tree.update(leaves, np.full(self.n_envs, self.max_priority ** self.alpha))

    def anneal_beta(self, progress: float) -> None:
        """Set β = β0 + progress · (final_beta − β0); ``progress`` is clipped to [0, 1]."""
        progress = float(np.clip(progress, 0.0, 1.0))
        self.beta = self.initial_beta + progress * (self.final_beta - self.initial_beta)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> PrioritizedReplayBufferSamples:
        """Stratified prioritized sample of ``batch_size`` transitions, with importance weights.

        Args:
            batch_size: number of transitions (with replacement).
            env: ``VecNormalize`` to normalise observations and rewards with, as in SB3.

        Returns:
            The batch, with ``weights`` = (N·P(i))^(−β) / max over the batch, and leaf ``indices``.
        """
        if self.n_stored == 0:
            raise ValueError("cannot sample from an empty PrioritizedReplayBuffer")
        total = self.tree.total
        bounds = np.linspace(0.0, total, batch_size + 1)
        indices = self.tree.find_prefix_sum(self.rng.uniform(bounds[:-1], bounds[1:]))
        weights = (self.n_stored * self.tree[indices] / total) ** (-self.beta)
        weights = (weights / weights.max()).astype(np.float32)[:, None]
        batch_inds, env_inds = np.divmod(indices, self.n_envs)
        samples = self._get_samples(batch_inds, env=env, env_indices=env_inds)
        return PrioritizedReplayBufferSamples(*samples, weights=self.to_torch(weights), indices=indices)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None,
                     env_indices: np.ndarray | None = None) -> ReplayBufferSamples:
        """SB3's ``_get_samples`` with explicit env indices (drawn from ``self.rng`` when None)."""
        if env_indices is None:
            env_indices = self.rng.integers(0, self.n_envs, size=len(batch_inds))
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            self._normalize_obs(self.next_observations[batch_inds, env_indices, :], env),
            # only dones that are not due to timeouts (timeouts stay 0 without handle_timeout_termination)
            (self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices]))[:, None],
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*map(self.to_torch, data))

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Set the priorities of leaves ``indices`` to ``(|td_error| + eps)^α`` and update ``max_priority``.

        Raises:
            ValueError: a TD error is not finite.
        """
        priorities = np.abs(np.asarray(td_errors, dtype=np.float64).ravel()) + self.eps
        if not np.isfinite(priorities).all():
            raise ValueError(f"TD errors must be finite, got {td_errors!r}")
        self.tree.update(indices, priorities ** self.alpha)
        self.max_priority = max(self.max_priority, float(priorities.max()))
