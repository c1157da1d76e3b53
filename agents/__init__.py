"""Agents for Esper-v0: baselines, the heuristic, SB3 training and evaluation, PER and UCB1.

In layers, from the bottom:

* baselines, pure Python + numpy, with an SB3-like ``predict(obs, action_masks=None)``:
  :mod:`agents.policies` (:class:`NoGrowthPolicy`, :class:`RandomPolicy`, :class:`ScriptedPolicy`
  and ``make_baseline`` by name), :mod:`agents.heuristic` (:class:`HeuristicPolicy`,
  :class:`CurriculumHeuristicPolicy`), :mod:`agents.curriculum` (the UCB1 blueprint curriculum);
* playing and measuring: :mod:`agents.envs` (the env of a run, ``EnvSpec``), :mod:`agents.rollout`
  (the episode loop and plans), :mod:`agents.stats` (intervals, paired differences),
  :mod:`agents.provenance`, :mod:`agents.workers` (the process pool), :mod:`agents.plots`;
* Stable-Baselines3 parts: :mod:`agents.per_buffer` / :mod:`agents.dqn_per` (prioritized replay),
  :mod:`agents.masking` (masks for algorithms that cannot take them), :mod:`agents.wrappers` (the
  curriculum as a wrapper), :mod:`agents.vec_env` (``ThreadVecEnv``), :mod:`agents.callbacks`,
  :mod:`agents.algos` (algorithms and hyperparameters), :mod:`agents.runs` (run folders);
* the CLIs, their options declared once (:mod:`agents.cli`): ``esper-train`` (:mod:`agents.train`),
  ``esper-eval`` (:mod:`agents.evaluate`), ``esper-bench`` (:mod:`agents.bench`), ``esper-demo``
  (:mod:`agents.demo`).

Only the baselines and the episode loop are imported here (no SB3 or torch needed for them).
"""

from agents.heuristic import CurriculumHeuristicPolicy, HeuristicConfig, HeuristicPolicy
from agents.policies import NoGrowthPolicy, RandomPolicy, ScriptedPolicy
from agents.rollout import EpisodeResult, run_episode

__all__ = ["CurriculumHeuristicPolicy", "EpisodeResult", "HeuristicConfig", "HeuristicPolicy",
           "NoGrowthPolicy", "RandomPolicy", "ScriptedPolicy", "run_episode"]
