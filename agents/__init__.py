"""Agents for Esper-v0: baseline policies and evaluation helpers.

Baselines: :class:`NoGrowthPolicy`, :class:`RandomPolicy`, :class:`ScriptedPolicy`. Each has an
SB3-like ``predict(obs, action_masks=None)``.
"""

from agents.evaluate import EpisodeResult, run_episode
from agents.policies import NoGrowthPolicy, RandomPolicy, ScriptedPolicy

__all__ = ["EpisodeResult", "NoGrowthPolicy", "RandomPolicy", "ScriptedPolicy", "run_episode"]
