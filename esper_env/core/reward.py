"""Reward arithmetic (spec section 9). Pure: every term from plain records, reported by name.

Modes:

* ``contribution`` (default): the anchor's counterfactual-primary reward with its defects fixed.
  Terms: ``attribution``, ``proxy``, ``blending_warning``, ``probation_wait``, ``stage_shaping``,
  ``rent``, ``action_shaping``, ``terminal``.
* ``delta``: ``accuracy_delta`` (val accuracy change in pp; telescopes to final - initial) and
  ``rent``.
* ``sparse``: ``final_accuracy`` (val accuracy in pp) and ``rent``, both only on the last step.

Every mode also has ``illegal_action``, ``rollback`` and ``diverged`` penalties (0 unless they
happen; a masked-out action costs a little even in ``sparse`` mode, so agents without masking learn
the rules). Accuracies and contributions are in percentage points.

Fixes of the anchor's defects (reference section 16), each pinned by a test:

* attribution is action-aware: a seed culled by the action collects no attribution that step (it
  gets only the cull shaping, which charges culling a helpful seed);
* a fossilised seed keeps earning its bounded attribution (``attribution_for_fossils``, default on;
  off reproduces the anchor), so fossilizing never pays less than waiting in PROBATIONARY;
* rent is computed from the live modules' parameter counts, a fossilised seed counted once;
* stage shaping is potential-based on explicit (before, after) stage pairs, so the drop of the
  potential on a cull is paid;
* the terminal bonus counts fossilised seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from esper_env.core.actions import Action, ActionKind
from esper_env.core.lifecycle import MODULE_STAGES, SeedStage
from esper_env.core.state import SlotState

if TYPE_CHECKING:  # pragma: no cover
    from esper_env.config import RewardConfig
    from esper_env.core.gates import GateResult

STAGE_POTENTIAL: dict[SeedStage, float] = {
    SeedStage.DORMANT: 0.0,
    SeedStage.GERMINATED: 1.0,
    SeedStage.TRAINING: 2.0,
    SeedStage.BLENDING: 3.5,
    SeedStage.PROBATIONARY: 5.5,
    SeedStage.FOSSILIZED: 6.0,
    SeedStage.CULLED: 0.0,
    SeedStage.EMBARGOED: 0.0,
    SeedStage.RESETTING: 0.0,
}
"""Anchor stage potentials for the shaping term."""

_LIVE_PAID = frozenset({SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.PROBATIONARY})
_FOSSIL_PAID = _LIVE_PAID | {SeedStage.FOSSILIZED}

CONTRIBUTION_TERMS = ("attribution", "proxy", "blending_warning", "probation_wait",
                      "stage_shaping", "rent", "action_shaping", "terminal")
DELTA_TERMS = ("accuracy_delta", "rent")
SPARSE_TERMS = ("final_accuracy", "rent")
PENALTY_TERMS = ("illegal_action", "rollback", "diverged")


def reward_terms(mode: str) -> tuple[str, ...]:
    """Names of the terms a mode reports, in order."""
    base = {"contribution": CONTRIBUTION_TERMS, "delta": DELTA_TERMS, "sparse": SPARSE_TERMS}[mode]
    return base + PENALTY_TERMS


@dataclass(frozen=True, slots=True)
class RewardInputs:
    """Everything the reward of one step depends on.

    ``slots_before`` is the state the agent saw; ``slots_measured`` is after the action and the
    epoch's measurements, before automatic transitions; ``slots_after`` is the state after the step.
    """

    action: Action
    action_legal: bool
    slots_before: tuple[SlotState, ...]
    slots_measured: tuple[SlotState, ...]
    slots_after: tuple[SlotState, ...]
    val_acc_before: float
    val_acc_after: float
    host_params: int
    terminal: bool
    fossilize_gate: GateResult | None = None
    rollback: bool = False
    diverged: bool = False


@dataclass(frozen=True, slots=True)
class RewardBreakdown:
    """Named reward terms and their sum."""

    terms: dict[str, float]

    @property
    def total(self) -> float:
        """Sum of all terms."""
        return float(sum(self.terms.values()))


def parameter_rent(added_params: int, host_params: int, cfg: RewardConfig) -> float:
    """``min(rent_weight * ln(1 + added/host), max_rent)`` (0 with nothing added)."""
    if added_params <= 0 or host_params <= 0:
        return 0.0
    return min(cfg.rent_weight * math.log1p(added_params / host_params), cfg.max_rent)


def added_parameters(slots: Sequence[SlotState]) -> int:
    """Parameters of the seed modules the model holds now (each module counted once)."""
    return sum(s.seed_params for s in slots if s.stage in MODULE_STAGES)


def bounded_attribution(contribution: float, progress: float) -> float:
    """Attribution for a seed with a counterfactual ``contribution`` (pp).

    A harmful seed (c < 0) is charged its damage. A helpful one is paid ``min(c, sqrt(P*c))`` where
    P is the val-accuracy progress since its germination: never more than the geometric mean of
    what its removal would cost and what the model actually gained, and nothing without progress.
    This caps "ransomware" seeds whose removal cost exceeds the value they added.
    """
    if contribution < 0.0:
        return contribution
    if progress <= 0.0:
        return 0.0
    return min(contribution, math.sqrt(progress * contribution))


def stage_potential(slot: SlotState, cfg: RewardConfig) -> float:
    """Potential of a slot: stage potential plus a bounded bonus for epochs in the stage."""
    if slot.stage not in MODULE_STAGES:
        return 0.0
    return STAGE_POTENTIAL[slot.stage] + min(cfg.pbrs_epoch_bonus * slot.epochs_in_stage,
                                             cfg.pbrs_max_epoch_bonus)


def _capped_power(base: float, exponent: int, cap: float) -> float:
    """``min(cap, base ** exponent)`` for base >= 0, without overflow for long exponents."""
    if cap <= 0.0:
        return cap
    if base > 1.0 and exponent * math.log(base) >= math.log(cap):
        return cap
    return min(cap, base ** exponent)


def _targets(action: Action, slot: int, kind: ActionKind) -> bool:
    return action.kind == kind and action.slot == slot


def _action_shaping(x: RewardInputs, cfg: RewardConfig) -> float:
    a = x.action
    if not x.action_legal or a.kind == ActionKind.WAIT or a.slot is None:
        return 0.0
    before = x.slots_before[a.slot]
    if a.kind == ActionKind.GERMINATE:
        return -cfg.germinate_cost
    if a.kind == ActionKind.FOSSILIZE:
        value = -cfg.fossilize_cost
        if x.fossilize_gate is None or not x.fossilize_gate.passed:
            return value - cfg.fossilize_noncontributing_penalty
        t = x.slots_measured[a.slot].total_improvement
        if t < 0.0:  # removal cost without progress: the ransomware signature
            return value - cfg.fossilize_ransomware_penalty - min(0.2 * abs(t), 1.0)
        c = before.counterfactual or 0.0
        return value + cfg.fossilize_base_bonus + cfg.fossilize_contribution_scale * c
    # CULL
    value = -cfg.cull_cost
    c = before.counterfactual
    if c is None:
        return value
    if c < cfg.cull_hurting_threshold:
        return value + cfg.cull_hurting_bonus
    if c < 0.0:
        return value + cfg.cull_acceptable_bonus
    return value - cfg.cull_good_seed_penalty - 0.05 * c


def _contribution_terms(x: RewardInputs, cfg: RewardConfig) -> dict[str, float]:
    acc_delta = x.val_acc_after - x.val_acc_before
    attribution = proxy = blending = probation = 0.0
    paid = _FOSSIL_PAID if cfg.attribution_for_fossils else _LIVE_PAID
    for s, m in enumerate(x.slots_measured):
        # A seed culled by this action is CULLED here and earns nothing (action-aware attribution).
        if m.stage in paid:
            if m.counterfactual is not None:
                attribution += cfg.contribution_weight * bounded_attribution(
                    m.counterfactual, m.total_improvement)
            elif acc_delta > 0.0 and m.stage in _LIVE_PAID:  # credit before a counterfactual
                proxy += cfg.proxy_weight * acc_delta
        if m.stage == SeedStage.BLENDING and m.total_improvement < 0.0:
            blending -= cfg.blending_warning_base + min(
                cfg.blending_warning_per_epoch * m.epochs_in_stage, cfg.blending_warning_max)
        b = x.slots_before[s]
        if (b.stage == SeedStage.PROBATIONARY and b.epochs_in_stage >= cfg.probation_wait_grace
                and not _targets(x.action, s, ActionKind.FOSSILIZE)
                and not _targets(x.action, s, ActionKind.CULL)):
            probation -= _capped_power(cfg.probation_wait_base,
                                       b.epochs_in_stage - cfg.probation_wait_grace,
                                       cfg.probation_wait_max)
    shaping = sum(cfg.pbrs_weight * (cfg.gamma * stage_potential(a, cfg) - stage_potential(b, cfg))
                  for b, a in zip(x.slots_before, x.slots_after, strict=True))
    terminal = 0.0
    if x.terminal:
        n_fossil = sum(1 for s in x.slots_after if s.stage == SeedStage.FOSSILIZED)
        terminal = cfg.terminal_acc_weight * x.val_acc_after + cfg.terminal_fossil_bonus * n_fossil
    return {
        "attribution": attribution,
        "proxy": proxy,
        "blending_warning": blending,
        "probation_wait": probation,
        "stage_shaping": shaping,
        "rent": -parameter_rent(added_parameters(x.slots_after), x.host_params, cfg),
        "action_shaping": _action_shaping(x, cfg),
        "terminal": terminal,
    }


def compute_reward(mode: str, x: RewardInputs, cfg: RewardConfig) -> RewardBreakdown:
    """Reward of one step under ``mode``, as named terms (see the module docstring)."""
    rent = parameter_rent(added_parameters(x.slots_after), x.host_params, cfg)
    if mode == "contribution":
        terms = _contribution_terms(x, cfg)
    elif mode == "delta":
        terms = {"accuracy_delta": x.val_acc_after - x.val_acc_before, "rent": -rent}
    elif mode == "sparse":
        terms = {"final_accuracy": x.val_acc_after if x.terminal else 0.0,
                 "rent": -rent if x.terminal else 0.0}
    else:
        raise ValueError(f"unknown reward mode {mode!r}")
    terms["illegal_action"] = 0.0 if x.action_legal else -cfg.illegal_action_penalty
    terms["rollback"] = -cfg.rollback_penalty if x.rollback else 0.0
    terms["diverged"] = -cfg.diverged_penalty if x.diverged else 0.0
    return RewardBreakdown({k: float(v) for k, v in terms.items()})
