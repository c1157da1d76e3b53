"""Lifecycle operations on one slot: germinate, fossilize, cull and the per-epoch advance.

Pure module: every function takes a :class:`SlotState` and returns a new one (plus what happened),
using :func:`~esper_env.core.lifecycle.next_stage` for every stage change. The torch layer is told
about the results by the glue (``env.py``).

Timing (one env step = one epoch; the action is applied before the epoch trains):

* GERMINATE: DORMANT -> GERMINATED (G0) -> TRAINING (G1), both before the epoch, so the seed trains
  in the incubator from the very next epoch.
* TRAINING: after ``min_training_epochs`` epochs and G2 -> BLENDING, and alpha takes its first ramp
  value at once, so the first blending epoch already trains blended (the anchor lost that epoch).
* BLENDING: alpha advances once per epoch; after ``blending_epochs`` epochs alpha is exactly 1 and
  G3 -> PROBATIONARY, which needs this epoch's counterfactual above
  ``gates.min_probation_contribution`` (0 pp): a seed at the end of its ramp whose removal would
  not cost accuracy is culled instead (cause ``G3_counterfactual``).
* PROBATIONARY: FOSSILIZE only by action through G5; automatic cull at once when this epoch's
  counterfactual is <= ``gates.min_probation_contribution``, or after ``probation_timeout``
  epochs.
* CULLED lasts one epoch, EMBARGOED ``embargo_epochs`` epochs, RESETTING one epoch, then DORMANT.

A stage entered during an epoch's advance is not advanced again in the same epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from esper_env.core.alpha import AlphaController
from esper_env.core.gates import GateResult, check_g0, check_g1, check_g2, check_g3, check_g5
from esper_env.core.lifecycle import MODULE_STAGES, SeedEvent, SeedStage, next_stage
from esper_env.core.state import SlotMetrics, SlotState

if TYPE_CHECKING:  # pragma: no cover
    from esper_env.core.state import LifecycleRules


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """A stage change of one slot, for ``info`` and the episode record."""

    slot: int
    seed_id: str | None
    blueprint: str | None
    before: SeedStage
    after: SeedStage
    cause: str

    def to_info(self) -> dict[str, object]:
        """Plain dict for ``info``."""
        return {"slot": self.slot, "seed_id": self.seed_id, "blueprint": self.blueprint,
                "from": self.before.name, "to": self.after.name, "cause": self.cause}


def _enter(slot: SlotState, stage: SeedStage, **changes: object) -> SlotState:
    return replace(slot, stage=stage, epochs_in_stage=0, acc_at_stage_start=slot.current_acc,
                   **changes)


def germinate(slot: SlotState, *, blueprint: str, seed_id: str, seed_params: int, shape_ok: bool,
              val_acc: float, schedule: str) -> tuple[SlotState, GateResult, list[LifecycleEvent]]:
    """Put a new seed into a DORMANT slot: G0 into GERMINATED, then G1 into TRAINING at once.

    If G0 fails the slot is returned unchanged with the failed result.
    """
    g0 = check_g0(seed_id, blueprint, shape_ok)
    if not g0.passed:
        return replace(slot, last_gate=g0), g0, []
    germinated = replace(
        slot, stage=next_stage(slot.stage, SeedEvent.GERMINATE), blueprint=blueprint,
        seed_id=seed_id, seed_params=seed_params, epochs_in_stage=0, seed_age=0,
        alpha=AlphaController(schedule=schedule), acc_at_germination=val_acc,
        acc_at_stage_start=val_acc, current_acc=val_acc, counterfactual=None,
        gradient_ratio=0.0, isolation_violations=0, last_gate=g0)
    events = [LifecycleEvent(slot.index, seed_id, blueprint, slot.stage, germinated.stage, "action")]
    g1 = check_g1(germinated)
    if not g1.passed:  # pragma: no cover - G1 holds by construction right after G0
        return germinated, g1, events
    training = _enter(germinated, next_stage(germinated.stage, SeedEvent.ADVANCE), last_gate=g1)
    events.append(LifecycleEvent(slot.index, seed_id, blueprint, germinated.stage, training.stage,
                                 "G1"))
    return training, g1, events


def fossilize(slot: SlotState, cfg: LifecycleRules) -> tuple[SlotState, GateResult,
                                                          list[LifecycleEvent]]:
    """FOSSILIZE a PROBATIONARY seed if G5 passes; otherwise the slot is unchanged."""
    g5 = check_g5(slot, cfg.gates)
    if not g5.passed:
        return replace(slot, last_gate=g5), g5, []
    after = _enter(slot, next_stage(slot.stage, SeedEvent.FOSSILIZE), last_gate=g5)
    return after, g5, [LifecycleEvent(slot.index, slot.seed_id, slot.blueprint, slot.stage,
                                      after.stage, "action")]


def cull(slot: SlotState, cause: str) -> tuple[SlotState, list[LifecycleEvent]]:
    """CULL a live seed: the slot empties and enters CULLED (then the embargo cooldown)."""
    after = _enter(slot, next_stage(slot.stage, SeedEvent.CULL), blueprint=None, seed_id=None,
                   seed_params=0, seed_age=0, alpha=AlphaController(schedule=slot.alpha.schedule),
                   acc_at_germination=None, counterfactual=None, gradient_ratio=0.0,
                   isolation_violations=0)
    return after, [LifecycleEvent(slot.index, slot.seed_id, slot.blueprint, slot.stage,
                                  after.stage, cause)]


def record_epoch(slot: SlotState, metrics: SlotMetrics, val_acc: float) -> SlotState:
    """Record one trained epoch: counters, accuracy, counterfactual, gradient ratio, violations."""
    if slot.stage in MODULE_STAGES:
        return replace(slot, epochs_in_stage=slot.epochs_in_stage + 1, seed_age=slot.seed_age + 1,
                       current_acc=val_acc, counterfactual=metrics.counterfactual,
                       gradient_ratio=metrics.gradient_ratio,
                       isolation_violations=slot.isolation_violations
                       + metrics.isolation_violations)
    return replace(slot, epochs_in_stage=slot.epochs_in_stage + 1, current_acc=val_acc)


def auto_transition(slot: SlotState, cfg: LifecycleRules
                    ) -> tuple[SlotState, GateResult | None, list[LifecycleEvent]]:
    """Apply the automatic transitions to a slot whose epoch was just recorded.

    Returns the new state, the gate checked (if any) and the lifecycle events.
    """
    stage = slot.stage

    def advanced(gate: GateResult | None, cause: str, **changes: object
                 ) -> tuple[SlotState, GateResult | None, list[LifecycleEvent]]:
        after = _enter(slot, next_stage(stage, SeedEvent.ADVANCE), **changes)
        if gate is not None:
            after = replace(after, last_gate=gate)
        return after, gate, [LifecycleEvent(slot.index, slot.seed_id, slot.blueprint, stage,
                                            after.stage, cause)]

    if stage == SeedStage.TRAINING:
        g2 = check_g2(slot, cfg.gates)
        if not g2.passed:
            return replace(slot, last_gate=g2), g2, []
        ramp = slot.alpha.start_ramp(1.0, cfg.blending_epochs).step()
        return advanced(g2, "G2", alpha=ramp)
    if stage == SeedStage.BLENDING:
        g3 = check_g3(slot, cfg.gates, cfg.blending_epochs)
        if g3.passed:
            return advanced(g3, "G3")
        if g3.failed == ("counterfactual",):  # the ramp is done; the seed adds nothing
            after, events = cull(replace(slot, last_gate=g3), "G3_counterfactual")
            return after, g3, events
        return replace(slot, alpha=slot.alpha.step(), last_gate=g3), g3, []
    if stage == SeedStage.PROBATIONARY:
        c = slot.counterfactual
        if c is not None and c <= cfg.gates.min_probation_contribution:
            after, events = cull(slot, "negative_counterfactual")
            return after, None, events
        if slot.epochs_in_stage >= cfg.effective_probation_timeout:
            after, events = cull(slot, "probation_timeout")
            return after, None, events
        return slot, None, []
    if stage == SeedStage.CULLED:
        return advanced(None, "cooldown")
    if stage == SeedStage.EMBARGOED:
        if slot.epochs_in_stage >= cfg.embargo_epochs:
            return advanced(None, "cooldown")
        return slot, None, []
    if stage == SeedStage.RESETTING:
        return advanced(None, "cooldown")
    # DORMANT, FOSSILIZED (and GERMINATED, which never survives a step) have no automatic move.
    return slot, None, []


def advance_epoch(slot: SlotState, metrics: SlotMetrics, val_acc: float, cfg: LifecycleRules
                  ) -> tuple[SlotState, GateResult | None, list[LifecycleEvent]]:
    """:func:`record_epoch` then :func:`auto_transition`."""
    return auto_transition(record_epoch(slot, metrics, val_acc), cfg)
