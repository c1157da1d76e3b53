"""The flat action space: codec between ``Discrete`` indices and actions, and the legality mask.

Pure module. Layout of ``Discrete(1 + n_slots * (n_blueprints + 2))``: index 0 is WAIT; then for
each slot, GERMINATE_<blueprint> for every blueprint in catalog order, FOSSILIZE, CULL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

from esper_env.core.gates import check_g5
from esper_env.core.lifecycle import LIVE_STAGES, SeedStage
from esper_env.core.state import added_parameters

if TYPE_CHECKING:  # pragma: no cover
    from esper_env.core.state import LifecycleRules, SlotState
    from esper_env.core.tracker import TrackerState


class ActionKind(IntEnum):
    """The agent's verbs."""

    WAIT = 0
    GERMINATE = 1
    FOSSILIZE = 2
    CULL = 3


@dataclass(frozen=True, slots=True)
class Action:
    """A decoded action: kind, target slot (None for WAIT) and blueprint (GERMINATE only)."""

    kind: ActionKind
    slot: int | None = None
    blueprint: str | None = None


class ActionCodec:
    """Bijection between ``Discrete`` indices and :class:`Action` for a slot count and catalog."""

    def __init__(self, n_slots: int, blueprints: Sequence[str]) -> None:
        self.n_slots = int(n_slots)
        self.blueprints = tuple(blueprints)
        self.per_slot = len(self.blueprints) + 2
        self.n = 1 + self.n_slots * self.per_slot
        self._actions: list[Action] = [Action(ActionKind.WAIT)]
        for s in range(self.n_slots):
            self._actions += [Action(ActionKind.GERMINATE, s, b) for b in self.blueprints]
            self._actions += [Action(ActionKind.FOSSILIZE, s), Action(ActionKind.CULL, s)]
        self._index = {a: i for i, a in enumerate(self._actions)}

    def decode(self, index: int) -> Action:
        """Action for ``index`` (0 <= index < n)."""
        return self._actions[index]

    def encode(self, action: Action) -> int:
        """Index of ``action``; raises KeyError for an action not in this space."""
        return self._index[action]

    def name(self, index: int) -> str:
        """Human-readable name: ``WAIT``, ``GERMINATE_conv_light@1``, ``FOSSILIZE@0``, ``CULL@2``."""
        a = self._actions[index]
        if a.kind == ActionKind.WAIT:
            return "WAIT"
        if a.kind == ActionKind.GERMINATE:
            return f"GERMINATE_{a.blueprint}@{a.slot}"
        return f"{a.kind.name}@{a.slot}"

    def slot_actions(self, slot: int) -> tuple[int, int]:
        """Indices of (FOSSILIZE, CULL) for ``slot``."""
        base = 1 + slot * self.per_slot + len(self.blueprints)
        return base, base + 1

    @property
    def names(self) -> tuple[str, ...]:
        """Names of all actions in index order."""
        return tuple(self.name(i) for i in range(self.n))


def decisions_available(codec: ActionCodec, mask: np.ndarray) -> tuple[bool, ...]:
    """Per slot: could the agent FOSSILIZE or CULL it (under ``mask``)?"""
    return tuple(bool(mask[f] or mask[c]) for f, c in map(codec.slot_actions, range(codec.n_slots)))


def germination_gate_open(tracker: TrackerState, epoch: int, cfg: LifecycleRules) -> bool:
    """The host-side germination gate: epoch, plateau and stabilisation (or switched off)."""
    if not cfg.germination_gate:
        return True
    return (epoch >= cfg.min_germinate_epoch
            and tracker.plateau_epochs >= cfg.plateau_epochs_to_germinate
            and tracker.host_stabilized)


def budget_left(slots: Sequence[SlotState], host_params: int, cfg: LifecycleRules) -> float:
    """Parameters the seeds may still add under ``cfg.param_budget`` (inf without a budget)."""
    if cfg.param_budget is None:
        return math.inf
    return cfg.param_budget * host_params - added_parameters(slots)


def legal_action_mask(codec: ActionCodec, slots: Sequence[SlotState], tracker: TrackerState,
                      epoch: int, cfg: LifecycleRules,
                      germinate_costs: Sequence[Sequence[int]] | None = None,
                      host_params: int = 0) -> np.ndarray:
    """Boolean mask over the action space (MaskablePPO's convention). WAIT is always legal.

    GERMINATE_*: slot DORMANT, the germination gate open and, with a ``param_budget``, the seed
    fits in what is left of it (``germinate_costs[s][b]`` is blueprint b's parameter count at
    slot s). FOSSILIZE: slot PROBATIONARY and G5 passes on this epoch's counterfactual (so a legal
    FOSSILIZE always succeeds). CULL: seed in GERMINATED..PROBATIONARY with age >=
    ``min_cull_age``.
    """
    mask = np.zeros(codec.n, dtype=bool)
    mask[0] = True
    gate_open = germination_gate_open(tracker, epoch, cfg)
    nb = len(codec.blueprints)
    left = budget_left(slots, host_params, cfg)
    if left != math.inf and germinate_costs is None:
        raise ValueError("a param_budget needs the blueprints' germinate_costs")
    for s, slot in enumerate(slots):
        base = 1 + s * codec.per_slot
        if gate_open and slot.stage == SeedStage.DORMANT:
            if left == math.inf:
                mask[base:base + nb] = True
            else:
                assert germinate_costs is not None
                mask[base:base + nb] = [c <= left for c in germinate_costs[s]]
        mask[base + nb] = (slot.stage == SeedStage.PROBATIONARY
                           and check_g5(slot, cfg.gates).passed)
        mask[base + nb + 1] = slot.stage in LIVE_STAGES and slot.seed_age >= cfg.min_cull_age
    return mask
