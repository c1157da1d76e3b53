"""Alpha schedules and the alpha controller (spec section 6)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esper_env.core.alpha import AlphaController, schedule_value
from esper_env.errors import ConfigError, InvalidTransition

SCHEDULES = ("linear", "cosine", "sigmoid")


def test_schedule_value_sigmoid_matches_anchor_values_for_five_epochs() -> None:
    # 0.5 * (1 + tanh((k - 2.5) / 2)): tanh(0.75) = 0.63515, tanh(0.25) = 0.24492
    got = [schedule_value("sigmoid", k, 5) for k in range(1, 6)]
    assert got[:4] == pytest.approx([0.1824, 0.3775, 0.6225, 0.8176], abs=1e-4)
    assert got[4] == 1.0


def test_schedule_value_linear_is_step_over_total() -> None:
    assert [schedule_value("linear", k, 4) for k in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert schedule_value("linear", 1, 3) == pytest.approx(1 / 3)


def test_schedule_value_cosine_at_hand_computed_points() -> None:
    # (1 - cos(pi k / 4)) / 2: k=1 -> (1 - 0.70711)/2, k=2 -> 0.5, k=3 -> (1 + 0.70711)/2
    got = [schedule_value("cosine", k, 4) for k in (1, 2, 3)]
    assert got == pytest.approx([0.1464466, 0.5, 0.8535534], abs=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("total", [1, 2, 5, 9])
def test_schedule_value_zero_at_start_and_exactly_one_at_end(schedule: str, total: int) -> None:
    assert schedule_value(schedule, 0, total) == 0.0
    assert schedule_value(schedule, -3, total) == 0.0
    assert schedule_value(schedule, total, total) == 1.0
    assert schedule_value(schedule, total + 7, total) == 1.0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_value_strictly_increasing_inside_ramp(schedule: str) -> None:
    values = [schedule_value(schedule, k, 8) for k in range(9)]
    assert all(a < b for a, b in zip(values[:-1], values[1:], strict=True))
    assert all(0.0 <= v <= 1.0 for v in values)


def test_schedule_value_non_positive_total_is_treated_as_one_step() -> None:
    assert schedule_value("linear", 1, 0) == 1.0
    assert schedule_value("sigmoid", 0, 0) == 0.0


def test_schedule_value_unknown_schedule_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="'step'"):
        schedule_value("step", 1, 5)


def test_alpha_controller_default_holds_at_zero() -> None:
    a = AlphaController()
    assert a.alpha == 0.0 and not a.is_ramping
    assert a.step() is a


def test_alpha_controller_start_ramp_mid_ramp_raises() -> None:
    a = AlphaController().start_ramp(1.0, 5).step()
    assert a.is_ramping
    with pytest.raises(InvalidTransition):
        a.start_ramp(0.5, 3)


def test_alpha_controller_ramp_follows_schedule_and_snaps_to_target() -> None:
    a = AlphaController(alpha=0.2, schedule="linear").start_ramp(0.7, 4)
    values = []
    for _ in range(4):
        a = a.step()
        values.append(a.alpha)
    # start + (target - start) * k/4 = 0.2 + 0.5 * k / 4
    assert values[:3] == pytest.approx([0.325, 0.45, 0.575])
    assert values[3] == 0.7  # exact snap, not approximately
    assert not a.is_ramping


def test_alpha_controller_sigmoid_ramp_ends_exactly_at_one() -> None:
    a = AlphaController().start_ramp(1.0, 5)
    seen = []
    for _ in range(5):
        a = a.step()
        seen.append(a.alpha)
    assert seen[:4] == pytest.approx([0.1824, 0.3775, 0.6225, 0.8176], abs=1e-4)
    assert seen[4] == 1.0


def test_alpha_controller_ramp_down_ends_exactly_at_zero() -> None:
    a = AlphaController(alpha=1.0, schedule="cosine").start_ramp(0.0, 3)
    for _ in range(3):
        a = a.step()
    assert a.alpha == 0.0


def test_alpha_controller_holding_step_is_noop() -> None:
    a = AlphaController().start_ramp(0.6, 2).step().step()
    assert not a.is_ramping and a.alpha == 0.6
    assert a.step() == a
    assert a.step().step().alpha == 0.6


def test_alpha_controller_new_ramp_allowed_once_holding() -> None:
    a = AlphaController(schedule="linear").start_ramp(1.0, 1).step()
    assert a.alpha == 1.0
    b = a.start_ramp(0.0, 2)
    assert b.start == 1.0 and b.target == 0.0 and b.is_ramping
    assert b.step().alpha == pytest.approx(0.5)


@pytest.mark.parametrize(("target", "clamped"), [(1.5, 1.0), (-0.5, 0.0)])
def test_alpha_controller_target_is_clamped(target: float, clamped: float) -> None:
    a = AlphaController().start_ramp(target, 2)
    assert a.target == clamped
    assert a.step().step().alpha == clamped


def test_alpha_controller_zero_steps_becomes_one_step_ramp() -> None:
    a = AlphaController().start_ramp(0.8, 0)
    assert a.is_ramping
    assert a.step().alpha == 0.8


@given(
    schedule=st.sampled_from(SCHEDULES),
    ops=st.lists(st.one_of(
        st.tuples(st.floats(-3.0, 3.0, allow_nan=False), st.integers(-2, 8)),
        st.just("step")), max_size=40),
)
def test_alpha_controller_alpha_stays_in_unit_interval(schedule: str, ops: list) -> None:
    a = AlphaController(schedule=schedule)
    target = None
    for op in ops:
        if op == "step":
            was_ramping = a.is_ramping
            a = a.step()
            if was_ramping and not a.is_ramping:
                assert a.alpha == target  # snapped exactly to the clamped target
        elif a.is_ramping:
            with pytest.raises(InvalidTransition):
                a.start_ramp(*op)
        else:
            a = a.start_ramp(*op)
            target = min(1.0, max(0.0, op[0]))
            assert a.is_ramping
        assert 0.0 <= a.alpha <= 1.0
        assert math.isfinite(a.alpha)
