"""Quality gates G0-G5 at, just below and just above every GateConfig threshold (spec section 5)."""

from __future__ import annotations

import pytest

from esper_env.config import GateConfig
from esper_env.core.alpha import AlphaController
from esper_env.core.gates import GateResult, check_g0, check_g1, check_g2, check_g3, check_g5
from esper_env.core.lifecycle import SeedStage
from esper_env.core.state import SlotState

CFG = GateConfig()  # anchor defaults: 3 epochs, 10 violations, ratio 0.05, alpha 0.95, 1.0 pp


def training(**kw: object) -> SlotState:
    """A TRAINING slot that passes every G2 check unless ``kw`` says otherwise."""
    base: dict = dict(index=0, stage=SeedStage.TRAINING, blueprint="norm", seed_id="seed0",
                      epochs_in_stage=3, isolation_violations=0, gradient_ratio=1.0,
                      acc_at_stage_start=50.0, current_acc=50.0)
    base.update(kw)
    return SlotState(**base)


def test_gate_config_defaults_are_anchor_values() -> None:
    assert (CFG.min_training_epochs, CFG.max_isolation_violations, CFG.min_gradient_ratio,
            CFG.require_host_improvement, CFG.min_host_improvement, CFG.min_blend_alpha,
            CFG.min_probation_contribution, CFG.min_fossilize_contribution) == (
        3, 10, 0.05, False, 0.5, 0.95, 0.0, 1.0)


@pytest.mark.parametrize(("epochs", "passed"), [(2, False), (3, True), (4, True)])
def test_check_g2_training_epochs_threshold(epochs: int, passed: bool) -> None:
    r = check_g2(training(epochs_in_stage=epochs), CFG)
    assert r.gate == "G2"
    assert r.passed is passed
    assert r.failed == (() if passed else ("training_epochs",))


@pytest.mark.parametrize(("violations", "passed"), [(9, True), (10, True), (11, False)])
def test_check_g2_isolation_violations_threshold(violations: int, passed: bool) -> None:
    r = check_g2(training(isolation_violations=violations), CFG)
    assert r.passed is passed
    assert r.failed == (() if passed else ("isolation_violations",))


@pytest.mark.parametrize(("ratio", "passed"), [(0.0499, False), (0.05, True), (0.0501, True)])
def test_check_g2_gradient_ratio_threshold(ratio: float, passed: bool) -> None:
    r = check_g2(training(gradient_ratio=ratio), CFG)
    assert r.passed is passed
    assert r.failed == (() if passed else ("gradient_ratio",))


@pytest.mark.parametrize(("current", "passed"), [(50.49, False), (50.5, True), (50.51, True)])
def test_check_g2_host_improvement_threshold_when_required(current: float, passed: bool) -> None:
    cfg = GateConfig(require_host_improvement=True, min_host_improvement=0.5)
    r = check_g2(training(acc_at_stage_start=50.0, current_acc=current), cfg)
    assert r.passed is passed
    assert r.failed == (() if passed else ("host_improvement",))


def test_check_g2_host_improvement_ignored_by_default() -> None:
    r = check_g2(training(acc_at_stage_start=60.0, current_acc=40.0), CFG)
    assert r.passed
    assert "host_improvement" not in r.failed


def test_check_g2_reports_every_failed_check_in_order() -> None:
    cfg = GateConfig(require_host_improvement=True)
    r = check_g2(training(epochs_in_stage=0, isolation_violations=11, gradient_ratio=0.0,
                          current_acc=49.0), cfg)
    assert not r.passed
    assert r.failed == ("training_epochs", "isolation_violations", "gradient_ratio",
                        "host_improvement")


def test_check_g2_uses_configured_thresholds() -> None:
    cfg = GateConfig(min_training_epochs=1, max_isolation_violations=0, min_gradient_ratio=0.0)
    assert check_g2(training(epochs_in_stage=1, gradient_ratio=0.0), cfg).passed
    assert check_g2(training(isolation_violations=1), cfg).failed == ("isolation_violations",)


def blending(epochs: int, alpha: float, c: float | None = 2.0) -> SlotState:
    return SlotState(index=0, stage=SeedStage.BLENDING, blueprint="norm", seed_id="s",
                     epochs_in_stage=epochs, alpha=AlphaController(alpha=alpha), counterfactual=c)


@pytest.mark.parametrize(("epochs", "passed"), [(4, False), (5, True), (6, True)])
def test_check_g3_blending_epochs_threshold(epochs: int, passed: bool) -> None:
    r = check_g3(blending(epochs, 1.0), CFG, blending_epochs=5)
    assert r.gate == "G3"
    assert r.passed is passed
    assert r.failed == (() if passed else ("blending_epochs",))


@pytest.mark.parametrize(("alpha", "passed"), [(0.9499, False), (0.95, True), (0.9501, True)])
def test_check_g3_alpha_threshold(alpha: float, passed: bool) -> None:
    r = check_g3(blending(5, alpha), CFG, blending_epochs=5)
    assert r.passed is passed
    assert r.failed == (() if passed else ("alpha",))


def test_check_g3_reports_every_failure() -> None:
    assert check_g3(blending(0, 0.1, None), CFG, blending_epochs=5).failed == (
        "blending_epochs", "alpha", "counterfactual")


@pytest.mark.parametrize(("c", "passed"), [(None, False), (-2.0, False), (0.0, False),
                                           (1e-9, True), (0.3, True)])
def test_check_g3_needs_a_positive_counterfactual(c: float | None, passed: bool) -> None:
    """Issue 5: a seed whose removal would cost nothing never enters PROBATIONARY."""
    r = check_g3(blending(5, 1.0, c), CFG, blending_epochs=5)
    assert r.passed is passed
    assert r.failed == (() if passed else ("counterfactual",))


def test_check_g3_uses_configured_probation_contribution() -> None:
    cfg = GateConfig(min_probation_contribution=-1.0)
    assert check_g3(blending(5, 1.0, -0.5), cfg, blending_epochs=5).passed
    assert not check_g3(blending(5, 1.0, -1.0), cfg, blending_epochs=5).passed
    assert not check_g3(blending(5, 1.0, 0.5), GateConfig(min_probation_contribution=0.5),
                        blending_epochs=5).passed


def probationary(c: float | None) -> SlotState:
    return SlotState(index=0, stage=SeedStage.PROBATIONARY, blueprint="norm", seed_id="s",
                     counterfactual=c, alpha=AlphaController(alpha=1.0))


def test_check_g5_unknown_counterfactual_fails_both_checks() -> None:
    r = check_g5(probationary(None), CFG)
    assert r.gate == "G5" and not r.passed
    assert r.failed == ("counterfactual_known", "contribution")


@pytest.mark.parametrize(("c", "passed"), [(0.999, False), (1.0, True), (1.001, True),
                                           (-3.0, False)])
def test_check_g5_contribution_threshold(c: float, passed: bool) -> None:
    r = check_g5(probationary(c), CFG)
    assert r.passed is passed
    assert r.failed == (() if passed else ("contribution",))


def test_check_g5_uses_configured_threshold() -> None:
    assert check_g5(probationary(0.2), GateConfig(min_fossilize_contribution=0.1)).passed
    assert not check_g5(probationary(0.2), GateConfig(min_fossilize_contribution=2.0)).passed


@pytest.mark.parametrize(("seed_id", "blueprint", "shape_ok", "failed"), [
    ("seed0", "norm", True, ()),
    (None, "norm", True, ("seed_id",)),
    ("", "norm", True, ("seed_id",)),
    ("seed0", None, True, ("blueprint",)),
    ("seed0", "norm", False, ("shape_probe",)),
    (None, None, False, ("seed_id", "blueprint", "shape_probe")),
])
def test_check_g0_reports_missing_parts(seed_id, blueprint, shape_ok, failed) -> None:
    r = check_g0(seed_id, blueprint, shape_ok)
    assert r.gate == "G0"
    assert r.failed == failed
    assert r.passed is (failed == ())


@pytest.mark.parametrize("stage", list(SeedStage))
def test_check_g1_passes_only_for_germinated(stage: SeedStage) -> None:
    r = check_g1(SlotState(index=0, stage=stage))
    assert r.passed is (stage == SeedStage.GERMINATED)
    assert r.failed == (() if r.passed else ("stage",))


def test_gate_result_to_info_is_plain() -> None:
    info = GateResult("G5", False, ("contribution",)).to_info()
    assert info == {"gate": "G5", "passed": False, "failed": ["contribution"]}
