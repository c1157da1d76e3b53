"""The pure core of esper_env: the episode's state and transition, and every rule it applies.

``episode`` holds the state record and the transition (gymnax style: state, params, pure step);
``lifecycle``, ``gates``, ``seeds``, ``alpha``, ``governor``, ``tracker``, ``reward`` and
``actions`` the rules it applies; ``observation`` and ``view`` what the agent and the user see.
Imports only the standard library and numpy (a test walks these sources to prove it), so every
rule of the environment can be tested with hand-made numbers.
"""

from esper_env.core.actions import Action, ActionCodec, ActionKind, legal_action_mask
from esper_env.core.alpha import AlphaController, schedule_value
from esper_env.core.episode import (
    EPISODE_VERSION,
    EpisodeParams,
    EpisodeState,
    after_epoch,
    after_restore,
    apply_action,
    start_episode,
)
from esper_env.core.lifecycle import TRANSITIONS, SeedEvent, SeedStage, next_stage
from esper_env.core.reward import RewardBreakdown, RewardInputs, compute_reward
from esper_env.core.state import EpochReport, GateResult, SlotMetrics, SlotState

__all__ = [
    "EPISODE_VERSION", "TRANSITIONS", "Action", "ActionCodec", "ActionKind", "AlphaController",
    "EpisodeParams", "EpisodeState", "EpochReport", "GateResult", "RewardBreakdown",
    "RewardInputs", "SeedEvent", "SeedStage", "SlotMetrics", "SlotState", "after_epoch",
    "after_restore", "apply_action", "compute_reward", "legal_action_mask", "next_stage",
    "schedule_value", "start_episode",
]
