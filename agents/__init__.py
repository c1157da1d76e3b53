"""Agents for Esper-v0: baselines, the heuristic, SB3 training and evaluation, PER and UCB1.

* Baselines with an SB3-like ``predict(obs, action_masks=None)``: :class:`NoGrowthPolicy`,
  :class:`RandomPolicy`, :class:`ScriptedPolicy`, :class:`HeuristicPolicy`,
  :class:`CurriculumHeuristicPolicy` (the heuristic with a UCB1 blueprint curriculum).
* ``esper-train`` (:mod:`agents.train`): PPO, MaskablePPO, DQN and PER-DQN with rl-zoo3-style
  hyperparameters, TensorBoard metrics and held-out evaluation; ``esper-eval``
  (:mod:`agents.evaluate`): seeded comparisons with 95 % confidence intervals.
* :mod:`agents.per_buffer` / :mod:`agents.dqn_per`: prioritized replay for SB3's DQN;
  :mod:`agents.curriculum` / :mod:`agents.wrappers`: the UCB1 blueprint curriculum;
  :mod:`agents.masking`: action masks for algorithms that cannot take them;
  :mod:`agents.vec_env`: ``ThreadVecEnv``, an SB3 vector env that steps its envs at once in
  threads of one process.

Only the baselines are imported here (no SB3 or torch needed for them).
"""

from agents.evaluate import EpisodeResult, run_episode
from agents.heuristic import CurriculumHeuristicPolicy, HeuristicConfig, HeuristicPolicy
from agents.policies import NoGrowthPolicy, RandomPolicy, ScriptedPolicy

__all__ = ["CurriculumHeuristicPolicy", "EpisodeResult", "HeuristicConfig", "HeuristicPolicy",
           "NoGrowthPolicy", "RandomPolicy", "ScriptedPolicy", "run_episode"]
