"""Governor panic detection (spec section 12): NaN/inf, lobotomy, spike runs, min history."""

from __future__ import annotations

import math

import pytest

from esper_env.config import GovernorConfig
from esper_env.core.governor import GovernorState, Verdict, check_loss

CFG = GovernorConfig()  # min_history 10, window 20, 6 sigma, 3x mean, floor 12, 3 spikes, 0.065
LN10 = math.log(10)


def feed(losses, cfg: GovernorConfig = CFG, state: GovernorState | None = None,
         n_classes: int = 10) -> tuple[GovernorState, list[Verdict]]:
    state = GovernorState() if state is None else state
    verdicts = []
    for loss in losses:
        state, v = check_loss(state, loss, n_classes, cfg)
        verdicts.append(v)
    return state, verdicts


def learned(n: int = 10) -> GovernorState:
    state, verdicts = feed([0.5] * n)
    assert not any(v.panic for v in verdicts)
    return state


@pytest.mark.parametrize("loss", [math.nan, math.inf, -math.inf])
def test_check_loss_non_finite_panics_at_once(loss: float) -> None:
    state, v = check_loss(GovernorState(), loss, 10, CFG)  # even with no history
    assert v == Verdict(True, "nan")
    assert state.history == ()


def test_check_loss_nan_resets_spike_counter() -> None:
    state, _ = feed([20.0, 20.0], state=learned())
    assert state.spikes == 2
    state, v = check_loss(state, math.nan, 10, CFG)
    assert v.reason == "nan" and state.spikes == 0


def test_check_loss_lobotomy_after_learned_history() -> None:
    state, v = check_loss(learned(), LN10 - 0.1, 10, CFG)  # |d| = 0.1 < 0.065 * ln10 = 0.1497
    assert v == Verdict(True, "lobotomy")


def test_check_loss_lobotomy_tolerance_boundary() -> None:
    tol = 0.065 * LN10
    _, inside = check_loss(learned(), LN10 + 0.99 * tol, 10, CFG)
    _, outside = check_loss(learned(), LN10 + 1.01 * tol, 10, CFG)
    assert inside.reason == "lobotomy"
    assert not outside.panic


def test_check_loss_no_lobotomy_when_host_never_learned() -> None:
    # history mean 2.0 >= 0.6 * ln(10) = 1.38: chance-level loss is not a lobotomy
    state, verdicts = feed([2.0] * 10 + [LN10])
    assert not any(v.panic for v in verdicts)
    assert state.history[-1] == LN10


def test_check_loss_lobotomy_uses_n_classes() -> None:
    # ln(100) = 4.6: a loss at ln(10) is far from chance for 100 classes
    state = learned()
    _, v = check_loss(state, LN10, 100, CFG)
    assert not v.panic
    _, v = check_loss(state, math.log(100), 100, CFG)
    assert v.reason == "lobotomy"


def test_check_loss_nothing_before_min_history() -> None:
    # 9 learned losses: a chance-level loss is not yet a lobotomy (10 would be, see above)
    state, verdicts = feed([0.5] * 9 + [LN10])
    assert not any(v.panic for v in verdicts)
    assert state.history == (0.5,) * 9 + (LN10,)
    # a run of huge losses with a short history is recorded, not a spike panic
    state, verdicts = feed([0.5] * 5 + [50.0] * 4)
    assert not any(v.panic for v in verdicts)
    assert state.spikes == 0 and state.history[-4:] == (50.0,) * 4


def test_check_loss_min_history_configurable() -> None:
    cfg = GovernorConfig(min_history=3, consecutive_spikes=1)
    state, verdicts = feed([0.5] * 3 + [20.0], cfg)
    assert [v.panic for v in verdicts] == [False, False, False, True]


def test_check_loss_spikes_need_consecutive_run() -> None:
    state, verdicts = feed([20.0, 20.0, 20.0], state=learned())
    assert [v.panic for v in verdicts] == [False, False, True]
    assert verdicts[-1].reason == "spike"
    assert state.spikes == 0
    assert state.history == (0.5,) * 10  # spikes are not added to the history


def test_check_loss_normal_epoch_resets_spike_counter() -> None:
    state, verdicts = feed([20.0, 20.0, 0.5, 20.0, 20.0], state=learned())
    assert not any(v.panic for v in verdicts)
    assert state.spikes == 2
    _, v = check_loss(state, 20.0, 10, CFG)
    assert v.reason == "spike"


def test_check_loss_consecutive_spikes_configurable() -> None:
    cfg = GovernorConfig(consecutive_spikes=1)
    state, _ = feed([0.5] * 10, cfg)
    _, v = check_loss(state, 20.0, 10, cfg)
    assert v == Verdict(True, "spike")


@pytest.mark.parametrize(("loss", "spike"), [(11.9, False), (12.1, True)])
def test_check_loss_spike_needs_absolute_floor(loss: float, spike: bool) -> None:
    cfg = GovernorConfig(consecutive_spikes=1)
    state, _ = feed([0.5] * 10, cfg)
    _, v = check_loss(state, loss, 10, cfg)
    assert v.panic is spike


def test_check_loss_spike_needs_multiplier_and_sigma() -> None:
    cfg = GovernorConfig(consecutive_spikes=1, absolute_floor=0.0)
    flat, _ = feed([1.0] * 10, cfg)
    assert not check_loss(flat, 2.9, 10, cfg)[1].panic      # < 3x mean
    assert check_loss(flat, 3.1, 10, cfg)[1].panic          # std 0: 6 sigma is trivially met
    noisy, _ = feed([0.0, 2.0] * 5, cfg)                    # mean 1, std 1 -> need > 7
    assert not check_loss(noisy, 6.5, 10, cfg)[1].panic
    assert check_loss(noisy, 7.5, 10, cfg)[1].panic


def test_check_loss_history_window_bounded() -> None:
    state, _ = feed([0.5 + 0.01 * i for i in range(30)])
    assert len(state.history) == CFG.history_window
    assert state.history[-1] == pytest.approx(0.79)
