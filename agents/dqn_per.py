"""PER-DQN: SB3's DQN trained from a :class:`agents.per_buffer.PrioritizedReplayBuffer`.

SB3's ``DQN.train`` ignores importance weights and never updates priorities, so :class:`PERDQN`
overrides it (Schaul et al., "Prioritized Experience Replay", ICLR 2016, Algorithm 1): the Huber
loss of each sampled transition is multiplied by its importance weight before averaging, |TD error|
+ ε is written back as its new priority, and β is annealed linearly from the buffer's initial to its
final value over training (progress = 1 − SB3's ``_current_progress_remaining``). Targets and
Q-values go through ``q_net_target`` / ``q_net`` exactly as in SB3, so policies that change the
Q-network (e.g. :class:`agents.masking.MaskedDQNPolicy`) keep working.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
import torch.nn.functional as F  # noqa: N812
from stable_baselines3 import DQN

from agents.per_buffer import PrioritizedReplayBuffer


class PERDQN(DQN):
    """DQN with prioritized replay (default ``replay_buffer_class``: :class:`PrioritizedReplayBuffer`).

    Takes DQN's arguments. ``replay_buffer_kwargs`` may set ``alpha``, ``beta``, ``final_beta``,
    ``eps`` and ``seed`` (default: the model's ``seed``, so a seeded PERDQN samples reproducibly).
    n-step returns (``n_steps > 1``) are not supported.

    Raises:
        ValueError: ``replay_buffer_class`` is not a PrioritizedReplayBuffer, or ``n_steps > 1``.
    """

    def __init__(self, policy: Any, env: Any, *args: Any, replay_buffer_class: Any = None,
                 replay_buffer_kwargs: dict[str, Any] | None = None, seed: int | None = None,
                 **kwargs: Any) -> None:
        cls = replay_buffer_class or PrioritizedReplayBuffer
        if not (isinstance(cls, type) and issubclass(cls, PrioritizedReplayBuffer)):
            raise ValueError(f"PERDQN needs a PrioritizedReplayBuffer, got replay_buffer_class={cls!r}")
        if kwargs.get("n_steps", 1) != 1:
            raise ValueError(f"PERDQN does not support n-step returns, got n_steps={kwargs['n_steps']!r}")
        replay_buffer_kwargs = dict(replay_buffer_kwargs or {})
        replay_buffer_kwargs.setdefault("seed", seed)
        super().__init__(policy, env, *args, replay_buffer_class=cls,
                         replay_buffer_kwargs=replay_buffer_kwargs, seed=seed, **kwargs)

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """SB3 DQN's update with an importance-weighted Huber loss and priority write-back.

        Args:
            gradient_steps: number of gradient steps (one sampled batch each).
            batch_size: transitions per batch.

        Raises:
            TypeError: the replay buffer is not a PrioritizedReplayBuffer (e.g. replaced by hand).
        """
        buffer = self.replay_buffer
        if not isinstance(buffer, PrioritizedReplayBuffer):
            raise TypeError(f"PERDQN.train needs a PrioritizedReplayBuffer, got {type(buffer).__name__}")
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        buffer.anneal_beta(1.0 - self._current_progress_remaining)
        losses, abs_td = [], []
        for _ in range(gradient_steps):
            replay_data = buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = replay_data.discounts if replay_data.discounts is not None else self.gamma
            with th.no_grad():
                next_q_values, _ = self.q_net_target(replay_data.next_observations).max(dim=1)
                next_q_values = next_q_values.reshape(-1, 1)
                target_q_values = replay_data.rewards + (1 - replay_data.dones) * discounts * next_q_values
            current_q_values = self.q_net(replay_data.observations)
            current_q_values = th.gather(current_q_values, dim=1, index=replay_data.actions.long())
            # importance-weighted Huber loss (Schaul et al. 2016, Algorithm 1, line 12)
            per_sample = F.smooth_l1_loss(current_q_values, target_q_values, reduction="none")
            loss = (replay_data.weights * per_sample).mean()
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
            td = (current_q_values - target_q_values).detach().abs().cpu().numpy().ravel()
            buffer.update_priorities(replay_data.indices, td)
            abs_td.append(td.mean())
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", float(np.mean(losses)))
        self.logger.record("train/beta", buffer.beta)
        self.logger.record("train/mean_abs_td", float(np.mean(abs_td)))
        self.logger.record("train/max_priority", buffer.max_priority)
