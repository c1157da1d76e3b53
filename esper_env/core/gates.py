"""Quality gates G0-G5 (spec section 5): pure predicates over slot records and a GateConfig.

Each gate returns a :class:`GateResult` naming every failed check, so ``info`` can say why a seed
did not advance. G4 belonged to the retired SHADOWING stage and does not exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esper_env.core.lifecycle import SeedStage
from esper_env.core.state import GateResult, SlotState

if TYPE_CHECKING:  # pragma: no cover
    from esper_env.config import GateConfig

__all__ = ["GateResult", "check_g0", "check_g1", "check_g2", "check_g3", "check_g5"]


def _result(gate: str, checks: dict[str, bool]) -> GateResult:
    failed = tuple(name for name, ok in checks.items() if not ok)
    return GateResult(gate, not failed, failed)


def check_g0(seed_id: str | None, blueprint: str | None, shape_ok: bool) -> GateResult:
    """G0 (into GERMINATED): seed id and blueprint present, shape probe passed."""
    return _result("G0", {"seed_id": bool(seed_id), "blueprint": bool(blueprint),
                          "shape_probe": bool(shape_ok)})


def check_g1(slot: SlotState) -> GateResult:
    """G1 (into TRAINING): the seed is GERMINATED."""
    return _result("G1", {"stage": slot.stage == SeedStage.GERMINATED})


def check_g2(slot: SlotState, cfg: GateConfig) -> GateResult:
    """G2 (into BLENDING): training age, isolation, gradient ratio, optional host improvement."""
    checks = {
        "training_epochs": slot.epochs_in_stage >= cfg.min_training_epochs,
        "isolation_violations": slot.isolation_violations <= cfg.max_isolation_violations,
        "gradient_ratio": slot.gradient_ratio >= cfg.min_gradient_ratio,
    }
    if cfg.require_host_improvement:
        checks["host_improvement"] = slot.improvement_since_stage_start >= cfg.min_host_improvement
    return _result("G2", checks)


def check_g3(slot: SlotState, cfg: GateConfig, blending_epochs: int) -> GateResult:
    """G3 (into PROBATIONARY): blended for ``blending_epochs``, alpha >= ``min_blend_alpha``, and
    this epoch's counterfactual above ``min_probation_contribution`` (a seed whose removal would
    cost nothing has nothing to be decided in PROBATIONARY).
    """  # noqa: D205
    c = slot.counterfactual
    return _result("G3", {"blending_epochs": slot.epochs_in_stage >= blending_epochs,
                          "alpha": slot.alpha.alpha >= cfg.min_blend_alpha,
                          "counterfactual": c is not None and c > cfg.min_probation_contribution})


def check_g5(slot: SlotState, cfg: GateConfig) -> GateResult:
    """G5 (into FOSSILIZED): counterfactual known and >= ``min_fossilize_contribution`` pp."""
    c = slot.counterfactual
    return _result("G5", {"counterfactual_known": c is not None,
                          "contribution": c is not None and c >= cfg.min_fossilize_contribution})
