"""PER-DQN: SB3's DQN trained from a :class:`agents.per_buffer.PrioritizedReplayBuffer`.

SB3's ``DQN.train`` ignores importance weights and never updates priorities, so :class:`PERDQN`
overrides it (Schaul et al. 2016, Algorithm 1): the Huber loss of each sampled transition is
multiplied by its importance weight before averaging, |TD error| + ε is written back as its new
priority, and β is annealed linearly from the buffer's initial to its final value over training.
Targets and Q-values go through ``q_net_target`` / ``q_net`` exactly as in SB3, so policies that
change the Q-network (e.g. :class:`agents.masking.MaskedDQNPolicy`) keep working.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F  # noqa: N812
from stable_baselines3 import DQN

from agents.per_buffer import PrioritizedReplayBuffer


class PERDQN(DQN):
    """DQN with prioritized replay (default ``replay_buffer_class``: PrioritizedReplayBuffer).

    Takes DQN's arguments; ``replay_buffer_kwargs`` may set ``alpha``, ``beta``, ``final_beta``,
    ``eps`` and ``seed`` (default: the model's ``seed``).
    """

    def __init__(self, policy: Any, env: Any, *args: Any, replay_buffer_class: Any = None,
                 replay_buffer_kwargs: dict[str, Any] | None = None, seed: int | None = None,
                 **kwargs: Any) -> None:
        replay_buffer_class = replay_buffer_class or PrioritizedReplayBuffer
        if not (isinstance(replay_buffer_class, type)
                and issubclass(replay_buffer_class, PrioritizedReplayBuffer)):
            raise ValueError(f"PERDQN needs a PrioritizedReplayBuffer, got {replay_buffer_class!r}")
        replay_buffer_kwargs = dict(replay_buffer_kwargs or {})
        replay_buffer_kwargs.setdefault("seed", seed)
        super().__init__(policy, env, *args, replay_buffer_class=replay_buffer_class,
                         replay_buffer_kwargs=replay_buffer_kwargs, seed=seed, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """DQN's update with importance-weighted Huber loss and priority write-back."""
        buffer = self.replay_buffer
        assert isinstance(buffer, PrioritizedReplayBuffer)
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        buffer.anneal_beta(1.0 - self._current_progress_remaining)
        losses, priorities = [], []
        for _ in range(gradient_steps):
            data = buffer.sample(batch_size, env=self._vec_normalize_env)
            with th.no_grad():
                next_q = self.q_net_target(data.next_observations).max(dim=1).values.reshape(-1, 1)
                target = data.rewards + (1 - data.dones) * self.gamma * next_q
            current = th.gather(self.q_net(data.observations), dim=1, index=data.actions.long())
            per_sample = F.smooth_l1_loss(current, target, reduction="none")
            loss = (data.weights * per_sample).mean()
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            td = (current - target).detach().abs().cpu().numpy().ravel()
            buffer.update_priorities(data.indices, td)
            priorities.append(td.mean())
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))
        self.logger.record("train/beta", buffer.beta)
        self.logger.record("train/mean_abs_td", float(np.mean(priorities)))
