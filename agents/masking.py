"""Invalid-action masking for algorithms that know nothing of masks (SB3's PPO and DQN).

sb3-contrib's MaskablePPO asks the env for ``action_masks()``; SB3's PPO and DQN never do, and left
alone they mostly pick masked-out actions (the env's −0.1 no-op). Three pieces fix that without
changing the algorithms:

* :class:`ActionMaskObservation` appends the legal-action mask (0/1) to the observation, so the mask
  is part of the state every algorithm sees (also what the replay buffer stores for DQN).
* :class:`MaskedActorCriticPolicy` (for PPO) gives masked-out actions a logit of −1e8, read from that
  tail of the observation: invalid action masking in the policy head (Huang & Ontañón, "A Closer
  Look at Invalid Action Masking in Policy Gradient Algorithms", FLAIRS 2022). The gradient is that
  of the masked distribution, which is exactly what MaskablePPO computes.
* :class:`MaskedDQNPolicy` (for DQN and PER-DQN) gives masked-out actions a Q-value of −1e8, so the
  greedy action *and* the target's max over the next state's actions range over legal actions only;
  :class:`MaskedDQN` / :class:`MaskedPERDQN` also draw their ε-greedy and warm-up actions among the
  legal ones.

``esper-train`` uses them for ``ppo``, ``dqn`` and ``per-dqn`` by default (``--no-policy-mask``
keeps only the mask feature and the env's illegal-action penalty).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.dqn.policies import DQNPolicy, QNetwork

from agents.dqn_per import PERDQN

MASKED_VALUE = -1e8
"""Logit / Q-value given to masked-out actions (finite, so no NaN reaches a loss)."""


def find_action_masks(env: gym.Env) -> np.ndarray:
    """The legal-action mask of ``env``, from the outermost wrapper that defines ``action_masks``."""
    return np.asarray(env.get_wrapper_attr("action_masks")(), dtype=bool)


class ActionMaskObservation(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Append the legal-action mask (``action_masks()`` as 0/1 floats) to a ``Box`` observation.

    The mask is that of the wrapped env's outermost ``action_masks`` (so it works on top of
    :class:`agents.wrappers.BlueprintCurriculumWrapper` too); ``action_masks()`` is passed through.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        box = env.observation_space
        if not isinstance(box, spaces.Box) or len(box.shape) != 1:
            raise ValueError(f"ActionMaskObservation needs a 1-D Box observation space, got {box}")
        if not isinstance(env.action_space, spaces.Discrete):
            raise ValueError(f"ActionMaskObservation needs a Discrete action space, got {env.action_space}")
        n = int(env.action_space.n)
        self.n_actions = n
        self.observation_space = spaces.Box(
            np.concatenate([box.low, np.zeros(n, dtype=np.float32)]),
            np.concatenate([box.high, np.ones(n, dtype=np.float32)]), dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """The observation with the current mask appended."""
        mask = find_action_masks(self.env).astype(np.float32)
        return np.concatenate([np.asarray(observation, dtype=np.float32), mask])

    def action_masks(self) -> np.ndarray:
        """The wrapped env's mask (for MaskablePPO or evaluation)."""
        return find_action_masks(self.env)


def mask_from_observation(obs: th.Tensor | np.ndarray, n_actions: int) -> Any:
    """The boolean mask stored in the last ``n_actions`` entries of (a batch of) observations."""
    return obs[..., -n_actions:] > 0.5


def _legal_random_actions(action_space: spaces.Discrete, obs: np.ndarray) -> np.ndarray:
    masks = mask_from_observation(np.asarray(obs).reshape(-1, obs.shape[-1]), int(action_space.n))
    return np.array([action_space.sample(mask=m.astype(np.int8)) for m in masks])


class MaskedActorCriticPolicy(ActorCriticPolicy):
    """``ActorCriticPolicy`` whose categorical head gives masked-out actions a logit of −1e8.

    The mask is read from the observation's tail (:class:`ActionMaskObservation`).
    """

    _obs_mask: th.Tensor | None = None

    def _masked(self, obs: th.Tensor) -> None:
        self._obs_mask = mask_from_observation(obs, int(self.action_space.n))

    def _get_action_dist_from_latent(self, latent_pi: th.Tensor) -> Distribution:
        dist = super()._get_action_dist_from_latent(latent_pi)
        if self._obs_mask is None or not isinstance(dist, CategoricalDistribution):
            raise RuntimeError("MaskedActorCriticPolicy needs a Discrete action space and the mask "
                               "in the observation (ActionMaskObservation)")
        logits = dist.distribution.logits.masked_fill(~self._obs_mask, MASKED_VALUE)
        return dist.proba_distribution(action_logits=logits)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """As ``ActorCriticPolicy.forward``, over legal actions only."""
        self._masked(obs)
        return super().forward(obs, deterministic)

    def evaluate_actions(self, obs: Any, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """As ``ActorCriticPolicy.evaluate_actions``, under the masked distribution."""
        self._masked(obs)
        return super().evaluate_actions(obs, actions)

    def get_distribution(self, obs: Any) -> Distribution:
        """The masked action distribution."""
        self._masked(obs)
        return super().get_distribution(obs)


class MaskedQNetwork(QNetwork):
    """``QNetwork`` whose masked-out actions have a Q-value of −1e8 (mask from the observation)."""

    def forward(self, obs: Any) -> th.Tensor:
        """Q-values, masked."""
        q = super().forward(obs)
        return q.masked_fill(~mask_from_observation(obs, q.shape[-1]), MASKED_VALUE)


class MaskedDQNPolicy(DQNPolicy):
    """``DQNPolicy`` (MLP) built from :class:`MaskedQNetwork`: greedy actions and targets are legal."""

    def make_q_net(self) -> QNetwork:
        """A masked Q-network (used for both the online and the target network)."""
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return MaskedQNetwork(**net_args).to(self.device)


class _LegalExploration:
    """ε-greedy and warm-up actions drawn among the legal ones (mask from the observation)."""

    action_space: spaces.Discrete
    exploration_rate: float

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """DQN's ε-greedy ``predict``, with the random branch restricted to legal actions."""
        if not deterministic and np.random.rand() < self.exploration_rate:
            actions = _legal_random_actions(self.action_space, observation)
            vectorized = self.policy.is_vectorized_observation(observation)  # type: ignore[attr-defined]
            return (actions if vectorized else actions[0]), state
        return self.policy.predict(observation, state, episode_start, deterministic)  # type: ignore[attr-defined]

    def _sample_action(self, learning_starts: int, action_noise: Any = None,
                       n_envs: int = 1) -> tuple[np.ndarray, np.ndarray]:
        if self.num_timesteps < learning_starts:  # type: ignore[attr-defined]
            actions = _legal_random_actions(self.action_space, self._last_obs)  # type: ignore[attr-defined]
        else:
            actions, _ = self.predict(self._last_obs, deterministic=False)  # type: ignore[attr-defined]
        return actions, actions


class MaskedDQN(_LegalExploration, DQN):
    """SB3 DQN with :class:`MaskedDQNPolicy` ("MlpPolicy") and legal-only exploration."""

    policy_aliases = {**DQN.policy_aliases, "MlpPolicy": MaskedDQNPolicy}


class MaskedPERDQN(_LegalExploration, PERDQN):
    """:class:`agents.dqn_per.PERDQN` with :class:`MaskedDQNPolicy` and legal-only exploration."""

    policy_aliases = {**PERDQN.policy_aliases, "MlpPolicy": MaskedDQNPolicy}
