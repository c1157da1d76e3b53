"""The pure core of esper_env: lifecycle, gates, alpha, reward, actions, observation, governor.

Imports only the standard library and numpy (a test walks these sources to prove it), so every
rule of the environment can be tested with hand-made numbers.
"""

from esper_env.core.actions import Action, ActionCodec, ActionKind, legal_action_mask
from esper_env.core.alpha import AlphaController, schedule_value
from esper_env.core.gates import GateResult
from esper_env.core.lifecycle import TRANSITIONS, SeedEvent, SeedStage, next_stage
from esper_env.core.reward import RewardBreakdown, RewardInputs, compute_reward
from esper_env.core.state import EpochReport, SlotMetrics, SlotState

__all__ = [
    "TRANSITIONS", "Action", "ActionCodec", "ActionKind", "AlphaController", "EpochReport",
    "GateResult", "RewardBreakdown", "RewardInputs", "SeedEvent", "SeedStage", "SlotMetrics",
    "SlotState", "compute_reward", "legal_action_mask", "next_stage", "schedule_value",
]
