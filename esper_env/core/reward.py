"""Reward arithmetic (spec section 9). Pure: every term from plain records, reported by name.

Accuracies are in percentage points (pp); rewards are in pp too.

Modes:

* ``contribution`` (default): what growth added over the *no-growth world*. The env keeps a
  seedless twin of the host (same initial weights, same mini-batches, never touched by a seed);
  ``V = val_acc(model) - val_acc(twin)`` is the value growth has added so far. Terms:

  - ``value_added``: ``V(after) - V(before)``. It telescopes: over an episode it sums to the
    final value added, so a seed is paid exactly what it adds and charged exactly what it costs,
    whatever its counterfactual (removal cost) says. No growth earns exactly 0.
  - ``rent``: ``-(R(after) - R(before))`` with ``R = rent_pp_per_doubling * log2(1 + added/host)``;
    it telescopes to the final model's rent: a parameter price stated as pp of accuracy per
    doubling of the model, charged once (not per epoch), refunded when a seed is culled.
  - ``stage_shaping``: potential-based, ``w * (gamma * Phi(s') - Phi(s))`` summed over slots,
    with ``Phi = 0`` at termination, so its discounted sum over any episode is
    ``-Phi(s_0) = 0``: it speeds learning and cannot change which policy is optimal (with the
    agent's discount equal to ``reward.gamma``).
  - ``probation_wait``: ``-min(max, base ** (e - grace))`` for each PROBATIONARY seed left
    undecided ``e >= grace`` epochs while a decision was available (FOSSILIZE or CULL legal for
    that slot); only a legal FOSSILIZE that passes G5 or a legal CULL of that slot avoids it.

* ``delta``: ``accuracy_delta`` (val accuracy change; telescopes to final - initial accuracy)
  and the same telescoping ``rent``.
* ``sparse``: ``final_accuracy`` (final val accuracy) and ``rent`` (the final model's), both only
  on the last step.

Every mode also has ``illegal_action``, ``rollback`` and ``diverged`` penalties (0 unless they
happen; a masked-out action costs a little even in ``sparse`` mode, so agents without masking learn
the rules). Nothing is paid for a seed whose output cannot reach the model's output: a seed that
never blends leaves ``V`` at 0, and its rent and shaping can only cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from esper_env.core.actions import Action, ActionKind
from esper_env.core.lifecycle import MODULE_STAGES, SeedStage
from esper_env.core.state import SlotState, added_parameters

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

CONTRIBUTION_TERMS = ("value_added", "rent", "stage_shaping", "probation_wait")
DELTA_TERMS = ("accuracy_delta", "rent")
SPARSE_TERMS = ("final_accuracy", "rent")
PENALTY_TERMS = ("illegal_action", "rollback", "diverged")


def reward_terms(mode: str) -> tuple[str, ...]:
    """Names of the terms a mode reports, in order."""
    base = {"contribution": CONTRIBUTION_TERMS, "delta": DELTA_TERMS, "sparse": SPARSE_TERMS}[mode]
    return base + PENALTY_TERMS


def uses_twin(mode: str) -> bool:
    """True if the reward ``mode`` needs the seedless twin's accuracy."""
    return mode == "contribution"


@dataclass(frozen=True, slots=True)
class RewardInputs:
    """Everything the reward of one step depends on.

    ``slots_before`` is the state the agent saw; ``slots_after`` is the state after the step.
    ``value_added_before`` / ``value_added_after`` are ``V`` (pp) at those two moments (0.0 in
    modes without a twin). ``decisions`` says, per slot, whether the agent could FOSSILIZE or
    CULL that slot in the state it saw (from the action mask).
    """

    action: Action
    action_legal: bool
    slots_before: tuple[SlotState, ...]
    slots_after: tuple[SlotState, ...]
    val_acc_before: float
    val_acc_after: float
    host_params: int
    terminal: bool
    value_added_before: float = 0.0
    value_added_after: float = 0.0
    decisions: tuple[bool, ...] = ()
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
    """Rent of a model with ``added_params`` on a host of ``host_params``, in pp.

    ``rent_pp_per_doubling * log2(1 + added/host)``: a seed as large as the host (the model
    doubles) costs ``rent_pp_per_doubling`` pp; 0 with nothing added.
    """
    if added_params <= 0 or host_params <= 0:
        return 0.0
    return cfg.rent_pp_per_doubling * math.log2(1.0 + added_params / host_params)


def value_added(val_acc: float, twin_val_acc: float | None, previous: float) -> float:
    """``V = val_acc - twin_val_acc`` (pp).

    Before any seed has blended the model *is* the seedless host: pass its own accuracy as the
    twin's (V = 0). A twin that has been dropped (it diverged) passes None: V then holds its
    ``previous`` value, so nothing more is paid or charged.
    """
    if twin_val_acc is None:
        return previous
    return val_acc - twin_val_acc


def split_value_added(v: float, slots: Sequence[SlotState]) -> list[float | None]:
    """Split ``V`` across the slots by their counterfactual contributions (for ``info``).

    Slots with a counterfactual this epoch share V: a gain (V > 0) in proportion to their positive
    counterfactuals, a loss (V < 0) in proportion to their negative ones (equally if none has the
    matching sign). Slots without a counterfactual get None; if no slot has one, nothing is
    attributed (the residual effect of seeds already gone).
    """
    cands = [s for s in slots if s.counterfactual is not None]
    out: list[float | None] = [None] * len(slots)
    if not cands:
        return out
    sign = 1.0 if v >= 0.0 else -1.0
    weights = {s.index: max(sign * s.counterfactual, 0.0) for s in cands}  # type: ignore[operator]
    total = sum(weights.values())
    for k, s in enumerate(slots):
        if s.counterfactual is None:
            continue
        w = weights[s.index] / total if total > 0.0 else 1.0 / len(cands)
        out[k] = v * w
    return out


def stage_potential(slot: SlotState, cfg: RewardConfig) -> float:
    """Potential of a slot: stage potential plus a bounded bonus for epochs in the stage."""
    if slot.stage not in MODULE_STAGES:
        return 0.0
    return STAGE_POTENTIAL[slot.stage] + min(cfg.pbrs_epoch_bonus * slot.epochs_in_stage,
                                             cfg.pbrs_max_epoch_bonus)


def stage_shaping(before: Sequence[SlotState], after: Sequence[SlotState], terminal: bool,
                  cfg: RewardConfig) -> float:
    """``w * (gamma * Phi(after) - Phi(before))`` summed over slots; ``Phi(after) = 0`` at the end."""
    total = 0.0
    for b, a in zip(before, after, strict=True):
        phi_after = 0.0 if terminal else stage_potential(a, cfg)
        total += cfg.pbrs_weight * (cfg.gamma * phi_after - stage_potential(b, cfg))
    return total


def _capped_power(base: float, exponent: int, cap: float) -> float:
    """``min(cap, base ** exponent)`` for base >= 0, without overflow for long exponents."""
    if cap <= 0.0:
        return cap
    if base > 1.0 and exponent * math.log(base) >= math.log(cap):
        return cap
    return min(cap, base ** exponent)


def _resolves(x: RewardInputs, slot: int) -> bool:
    """True if this step's action settled slot ``slot``'s probation (legal, and it worked)."""
    a = x.action
    if not x.action_legal or a.slot != slot:
        return False
    if a.kind == ActionKind.CULL:
        return True
    return (a.kind == ActionKind.FOSSILIZE and x.fossilize_gate is not None
            and x.fossilize_gate.passed)


def probation_wait(x: RewardInputs, cfg: RewardConfig) -> float:
    """Penalty for PROBATIONARY seeds left undecided (see the module docstring)."""
    total = 0.0
    for s, b in enumerate(x.slots_before):
        if b.stage != SeedStage.PROBATIONARY or b.epochs_in_stage < cfg.probation_wait_grace:
            continue
        could_decide = x.decisions[s] if s < len(x.decisions) else True
        if could_decide and not _resolves(x, s):
            total -= _capped_power(cfg.probation_wait_base,
                                   b.epochs_in_stage - cfg.probation_wait_grace,
                                   cfg.probation_wait_max)
    return total


def compute_reward(mode: str, x: RewardInputs, cfg: RewardConfig) -> RewardBreakdown:
    """Reward of one step under ``mode``, as named terms (see the module docstring)."""
    rent_before = parameter_rent(added_parameters(x.slots_before), x.host_params, cfg)
    rent_after = parameter_rent(added_parameters(x.slots_after), x.host_params, cfg)
    if mode == "contribution":
        terms = {
            "value_added": x.value_added_after - x.value_added_before,
            "rent": -(rent_after - rent_before),
            "stage_shaping": stage_shaping(x.slots_before, x.slots_after, x.terminal, cfg),
            "probation_wait": probation_wait(x, cfg),
        }
    elif mode == "delta":
        terms = {"accuracy_delta": x.val_acc_after - x.val_acc_before,
                 "rent": -(rent_after - rent_before)}
    elif mode == "sparse":
        terms = {"final_accuracy": x.val_acc_after if x.terminal else 0.0,
                 "rent": -rent_after if x.terminal else 0.0}
    else:
        raise ValueError(f"unknown reward mode {mode!r}")
    terms["illegal_action"] = 0.0 if x.action_legal else -cfg.illegal_action_penalty
    terms["rollback"] = -cfg.rollback_penalty if x.rollback else 0.0
    terms["diverged"] = -cfg.diverged_penalty if x.diverged else 0.0
    return RewardBreakdown({k: float(v) for k, v in terms.items()})
