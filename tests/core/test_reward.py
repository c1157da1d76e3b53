"""Reward arithmetic (spec section 9, issue 5): every term on hand-computed cases, telescoping and
potential-based properties, the probation-wait rule, the delta/sparse modes and the penalties."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esper_env.config import RewardConfig
from esper_env.core.actions import Action, ActionKind
from esper_env.core.alpha import AlphaController
from esper_env.core.gates import GateResult
from esper_env.core.lifecycle import MODULE_STAGES, SeedStage
from esper_env.core.reward import (
    RewardInputs,
    added_parameters,
    compute_reward,
    parameter_rent,
    reward_terms,
    split_value_added,
    stage_potential,
    stage_shaping,
    uses_twin,
    value_added,
)
from esper_env.core.seeds import cull
from esper_env.core.state import SlotState

S = SeedStage
K = ActionKind
CFG = RewardConfig()
WAIT = Action(K.WAIT)
HOST = 1000
PASS = GateResult("G5", True)
FAIL = GateResult("G5", False, ("contribution",))


def seed(stage: SeedStage, *, index: int = 0, c: float | None = None, eis: int = 0,
         params: int = 0, age: int = 5) -> SlotState:
    """A slot in ``stage`` (holding a seed module if the stage has one)."""
    holds = stage in MODULE_STAGES
    return SlotState(index=index, stage=stage, blueprint="norm" if holds else None,
                     seed_id="seed0" if holds else None, seed_params=params if holds else 0,
                     epochs_in_stage=eis, seed_age=age if holds else 0,
                     alpha=AlphaController(alpha=1.0 if stage in (S.PROBATIONARY, S.FOSSILIZED)
                                           else 0.0),
                     acc_at_germination=50.0 if holds else None, counterfactual=c)


def inputs(before, after=None, *, action=WAIT, legal=True, acc_before=50.0, acc_after=50.0,
           v_before=0.0, v_after=0.0, terminal=False, gate=None, decisions=None, rollback=False,
           diverged=False, host=HOST) -> RewardInputs:
    before = tuple(before)
    after = before if after is None else tuple(after)
    decisions = tuple(True for _ in before) if decisions is None else tuple(decisions)
    return RewardInputs(action=action, action_legal=legal, slots_before=before,
                        slots_after=after, val_acc_before=acc_before, val_acc_after=acc_after,
                        host_params=host, terminal=terminal, value_added_before=v_before,
                        value_added_after=v_after, decisions=decisions, fossilize_gate=gate,
                        rollback=rollback, diverged=diverged)


def terms(x: RewardInputs, mode: str = "contribution", cfg: RewardConfig = CFG) -> dict:
    return compute_reward(mode, x, cfg).terms


# -- value added -------------------------------------------------------------------------------

def test_value_added_term_is_the_change_of_v() -> None:
    t = terms(inputs([seed(S.BLENDING, c=3.0)], v_before=1.5, v_after=-0.25))
    assert t["value_added"] == -1.75


def test_value_added_ignores_the_counterfactual() -> None:
    """Issue 5: a seed is paid what it adds over the no-growth world, not its removal cost."""
    for c in (None, -5.0, 0.0, 2.0, 40.0):
        t = terms(inputs([seed(S.PROBATIONARY, c=c)], v_before=-4.0, v_after=-6.0))
        assert t["value_added"] == -2.0


@given(st.lists(st.floats(-50.0, 50.0), min_size=1, max_size=30))
def test_value_added_telescopes_to_final_value(vs: list[float]) -> None:
    levels = [0.0] + vs
    total = sum(terms(inputs([SlotState(index=0)], v_before=a, v_after=b))["value_added"]
                for a, b in zip(levels[:-1], levels[1:], strict=True))
    assert total == pytest.approx(levels[-1], abs=1e-9)


@pytest.mark.parametrize(("acc", "twin", "previous", "want"), [
    (80.0, 75.5, 0.0, 4.5),
    (70.0, 75.0, 3.0, -5.0),      # the twin's accuracy wins over the previous value
    (80.0, None, 0.0, 0.0),       # no twin yet: the model is the seedless host
    (80.0, None, 2.5, 2.5),       # twin dropped (diverged): V holds
])
def test_value_added_level(acc, twin, previous, want) -> None:
    assert value_added(acc, twin, previous) == want


def test_uses_twin_only_in_contribution_mode() -> None:
    assert uses_twin("contribution")
    assert not uses_twin("delta") and not uses_twin("sparse")


# -- split across slots ------------------------------------------------------------------------

def test_split_value_added_gain_by_positive_counterfactuals() -> None:
    slots = [seed(S.FOSSILIZED, index=0, c=3.0), seed(S.BLENDING, index=1, c=1.0),
             seed(S.BLENDING, index=2, c=-2.0), seed(S.TRAINING, index=3, c=None)]
    assert split_value_added(8.0, slots) == [6.0, 2.0, 0.0, None]


def test_split_value_added_loss_by_negative_counterfactuals() -> None:
    slots = [seed(S.FOSSILIZED, index=0, c=3.0), seed(S.BLENDING, index=1, c=-1.0),
             seed(S.BLENDING, index=2, c=-3.0)]
    assert split_value_added(-4.0, slots) == [0.0, -1.0, -3.0]


def test_split_value_added_equal_when_no_counterfactual_has_the_sign() -> None:
    slots = [seed(S.BLENDING, index=0, c=2.0), seed(S.BLENDING, index=1, c=0.0)]
    assert split_value_added(-3.0, slots) == [-1.5, -1.5]


def test_split_value_added_nothing_without_counterfactuals() -> None:
    assert split_value_added(5.0, [SlotState(index=0), seed(S.TRAINING, index=1)]) == [None, None]


@given(v=st.floats(-50, 50), cs=st.lists(st.one_of(st.none(), st.floats(-20, 20)), min_size=1,
                                         max_size=3))
def test_split_value_added_sums_to_v_when_attributed(v: float, cs) -> None:
    slots = [seed(S.BLENDING, index=i, c=c) for i, c in enumerate(cs)]
    parts = split_value_added(v, slots)
    shares = [p for p in parts if p is not None]
    if any(c is not None for c in cs):
        assert sum(shares) == pytest.approx(v, abs=1e-9)
        assert all(p == 0.0 or math.copysign(1, p) == math.copysign(1, v) for p in shares)
    else:
        assert shares == []


# -- rent --------------------------------------------------------------------------------------

def test_parameter_rent_is_pp_per_doubling() -> None:
    assert parameter_rent(1000, 1000, CFG) == pytest.approx(0.5)       # model doubles
    assert parameter_rent(3000, 1000, CFG) == pytest.approx(1.0)       # two doublings
    assert parameter_rent(500, 1000, CFG) == pytest.approx(0.5 * math.log2(1.5))
    assert parameter_rent(0, 1000, CFG) == 0.0
    assert parameter_rent(500, 0, CFG) == 0.0
    assert parameter_rent(1000, 1000, RewardConfig(rent_pp_per_doubling=2.0)) == 2.0


@pytest.mark.parametrize("mode", ["contribution", "delta"])
def test_rent_is_charged_once_and_refunded_on_cull(mode: str) -> None:
    empty = SlotState(index=0)
    grown = seed(S.TRAINING, params=1000)
    culled, _ = cull(grown, "action")
    germ = terms(inputs([empty], [grown], action=Action(K.GERMINATE, 0, "norm")), mode)
    assert germ["rent"] == pytest.approx(-0.5)
    assert terms(inputs([grown], [grown]), mode)["rent"] == 0.0         # not per epoch
    assert terms(inputs([grown], [culled], action=Action(K.CULL, 0)), mode)["rent"] == \
        pytest.approx(0.5)


def test_rent_counts_module_stages_and_each_fossil_once() -> None:
    after = [seed(S.TRAINING, index=0, params=300), seed(S.FOSSILIZED, index=1, params=200),
             SlotState(index=2, stage=S.EMBARGOED, seed_params=999)]
    assert added_parameters(after) == 500
    t = terms(inputs([SlotState(index=i) for i in range(3)], after))
    assert t["rent"] == pytest.approx(-0.5 * math.log2(1.5))
    fossil_before = [seed(S.PROBATIONARY, index=0, params=500)]
    fossil_after = [seed(S.FOSSILIZED, index=0, params=500)]
    assert terms(inputs(fossil_before, fossil_after, action=Action(K.FOSSILIZE, 0),
                        gate=PASS))["rent"] == 0.0


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=25),
       st.sampled_from(["contribution", "delta", "sparse"]))
def test_rent_sums_to_the_final_models_rent(params: list[int], mode: str) -> None:
    states = [[SlotState(index=0)]] + [[seed(S.TRAINING, params=p) if p else SlotState(index=0)]
                                       for p in params]
    total = 0.0
    for i, (b, a) in enumerate(zip(states[:-1], states[1:], strict=True)):
        total += terms(inputs(b, a, terminal=i == len(params) - 1), mode)["rent"]
    assert total == pytest.approx(-parameter_rent(params[-1], HOST, CFG), abs=1e-9)


# -- stage shaping -----------------------------------------------------------------------------

def test_stage_potential_values() -> None:
    assert stage_potential(seed(S.TRAINING, eis=1), CFG) == pytest.approx(2.3)
    assert stage_potential(seed(S.BLENDING, eis=5), CFG) == pytest.approx(5.0)
    assert stage_potential(seed(S.PROBATIONARY, eis=20), CFG) == pytest.approx(7.5)  # bonus cap 2
    assert stage_potential(seed(S.FOSSILIZED, eis=0), CFG) == 6.0
    for st_ in (S.DORMANT, S.CULLED, S.EMBARGOED, S.RESETTING):
        assert stage_potential(SlotState(index=0, stage=st_, epochs_in_stage=4), CFG) == 0.0


@pytest.mark.parametrize(("before", "after", "want"), [
    (seed(S.TRAINING, eis=1), seed(S.TRAINING, eis=2), 0.3 * (0.99 * 2.6 - 2.3)),
    (seed(S.BLENDING, eis=5), seed(S.PROBATIONARY, eis=0), 0.3 * (0.99 * 5.5 - 5.0)),
    (SlotState(index=0), seed(S.TRAINING, eis=1), 0.3 * 0.99 * 2.3),
    (SlotState(index=0), SlotState(index=0), 0.0),
    (seed(S.PROBATIONARY, eis=1), seed(S.FOSSILIZED, eis=0), 0.3 * (0.99 * 6.0 - 5.8)),
    (seed(S.PROBATIONARY, eis=1, age=12), cull(seed(S.PROBATIONARY, eis=1, age=12), "a")[0],
     -0.3 * 5.8),                                     # a cull pays the potential's drop
])
def test_stage_shaping_is_potential_difference(before, after, want) -> None:
    assert terms(inputs([before], [after]))["stage_shaping"] == pytest.approx(want)


def test_stage_shaping_potential_is_zero_at_termination() -> None:
    """Issue 5: ending FOSSILIZED (or in TRAINING) pays nothing extra at the end."""
    for before, after in [(seed(S.FOSSILIZED, eis=9), seed(S.FOSSILIZED, eis=10)),
                          (seed(S.TRAINING, eis=2), seed(S.TRAINING, eis=3))]:
        t = terms(inputs([before], [after], terminal=True))
        assert t["stage_shaping"] == pytest.approx(-0.3 * stage_potential(before, CFG))
        assert t["stage_shaping"] < 0.0


stage_slots = st.builds(lambda stage, eis: seed(stage, eis=eis),
                        st.sampled_from(list(SeedStage)), st.integers(0, 12))


@given(st.lists(st.tuples(stage_slots, stage_slots), min_size=1, max_size=30),
       st.floats(0.5, 1.0))
def test_stage_shaping_discounted_sum_is_minus_initial_potential(path, gamma: float) -> None:
    """sum_t gamma^t F_t = gamma^T Phi(s_T) - Phi(s_0) = -Phi(s_0): policy invariant."""
    cfg = RewardConfig(gamma=gamma)
    states = [(SlotState(index=0), SlotState(index=1))] + [tuple(
        replace(s, index=i) for i, s in enumerate(p)) for p in path]
    total = undiscounted = 0.0
    for t, (b, a) in enumerate(zip(states[:-1], states[1:], strict=True)):
        f = stage_shaping(b, a, t == len(path) - 1, cfg)
        total += gamma ** t * f
        undiscounted += f
    assert total == pytest.approx(0.0, abs=1e-9)
    assert undiscounted <= 1e-9  # Phi >= 0 and Phi(s_0) = 0: shaping can only cost, undiscounted


# -- probation wait ----------------------------------------------------------------------------

@pytest.mark.parametrize(("eis", "want"), [(0, 0.0), (1, 0.0), (2, -1.0), (3, -3.0), (4, -9.0),
                                           (5, -10.0), (8, -10.0)])
def test_probation_wait_penalty_grows_and_is_capped(eis: int, want: float) -> None:
    assert terms(inputs([seed(S.PROBATIONARY, c=2.0, eis=eis)]))["probation_wait"] == want


def test_probation_wait_cap_holds_for_very_long_probation() -> None:
    # 3.0 ** 998 does not fit in a float: the cap must be applied without computing it.
    assert terms(inputs([seed(S.PROBATIONARY, c=2.0, eis=1000)]))["probation_wait"] == -10.0


@pytest.mark.parametrize(("action", "legal", "gate", "charged"), [
    (Action(K.FOSSILIZE, 0), True, PASS, False),    # a FOSSILIZE that worked settles it
    (Action(K.CULL, 0), True, None, False),         # so does a legal CULL
    (Action(K.FOSSILIZE, 0), True, FAIL, True),     # a FOSSILIZE that failed G5 does not
    (Action(K.FOSSILIZE, 0), True, None, True),
    (Action(K.FOSSILIZE, 0), False, None, True),    # nor a masked-out (no-op) FOSSILIZE
    (Action(K.CULL, 0), False, None, True),         # nor a masked-out CULL
    (Action(K.FOSSILIZE, 1), True, PASS, True),     # nor acting on another slot
    (WAIT, True, None, True),
])
def test_probation_wait_avoided_only_by_a_real_decision(action, legal, gate, charged) -> None:
    """Issue 5: the penalty could be dodged by any action aimed at the slot, even a failing one."""
    slots = [seed(S.PROBATIONARY, index=0, c=2.0, eis=3), SlotState(index=1)]
    t = terms(inputs(slots, action=action, legal=legal, gate=gate))
    assert t["probation_wait"] == (-3.0 if charged else 0.0)


def test_probation_wait_not_charged_without_a_decision_to_make() -> None:
    slots = [seed(S.PROBATIONARY, index=0, c=0.5, eis=3), seed(S.PROBATIONARY, index=1, eis=2)]
    assert terms(inputs(slots, decisions=[False, True]))["probation_wait"] == -1.0
    assert terms(inputs(slots, decisions=[False, False]))["probation_wait"] == 0.0


def test_probation_wait_each_slot_separately() -> None:
    slots = [seed(S.PROBATIONARY, index=0, c=2.0, eis=3),
             seed(S.PROBATIONARY, index=1, c=2.0, eis=2)]
    assert terms(inputs(slots, action=Action(K.CULL, 0)))["probation_wait"] == -1.0
    assert terms(inputs(slots, action=Action(K.CULL, 1)))["probation_wait"] == -3.0
    assert terms(inputs(slots))["probation_wait"] == -4.0


# -- delta and sparse modes, penalties, term names ---------------------------------------------

@given(st.lists(st.floats(0.0, 100.0), min_size=2, max_size=30))
def test_delta_mode_accuracy_terms_telescope(accs: list[float]) -> None:
    total = 0.0
    for a, b in zip(accs[:-1], accs[1:], strict=True):
        total += terms(inputs([SlotState(index=0)], acc_before=a, acc_after=b),
                       mode="delta")["accuracy_delta"]
    assert total == pytest.approx(accs[-1] - accs[0], abs=1e-9)


def test_sparse_mode_zero_until_terminal() -> None:
    slots = [seed(S.FOSSILIZED, params=500)]
    mid = compute_reward("sparse", inputs(slots, acc_after=70.0), CFG)
    assert mid.total == 0.0 and all(v == 0.0 for v in mid.terms.values())
    end = terms(inputs(slots, acc_after=70.0, terminal=True), mode="sparse")
    assert end["final_accuracy"] == 70.0
    assert end["rent"] == pytest.approx(-0.5 * math.log2(1.5))


@pytest.mark.parametrize("mode", ["contribution", "delta", "sparse"])
def test_penalties_apply_in_every_mode(mode: str) -> None:
    base = inputs([SlotState(index=0)])
    assert terms(base, mode)["illegal_action"] == 0.0
    assert terms(base, mode)["rollback"] == 0.0 and terms(base, mode)["diverged"] == 0.0
    x = inputs([SlotState(index=0)], legal=False, rollback=True, diverged=True)
    cfg = RewardConfig(illegal_action_penalty=0.25, rollback_penalty=7.0, diverged_penalty=4.0)
    t = compute_reward(mode, x, cfg)
    assert (t.terms["illegal_action"], t.terms["rollback"], t.terms["diverged"]) == (
        -0.25, -7.0, -4.0)
    assert t.total == pytest.approx(sum(t.terms.values()))
    assert t.total == pytest.approx(-11.25)  # no seed, no accuracy change, not terminal


@pytest.mark.parametrize("mode", ["contribution", "delta", "sparse"])
def test_reward_terms_match_breakdown_keys(mode: str) -> None:
    x = inputs([seed(S.PROBATIONARY, c=2.0, eis=3, params=10)], terminal=True)
    assert tuple(compute_reward(mode, x, CFG).terms) == reward_terms(mode)
    assert reward_terms(mode)[-3:] == ("illegal_action", "rollback", "diverged")


def test_contribution_terms_are_exactly_these() -> None:
    assert reward_terms("contribution")[:4] == ("value_added", "rent", "stage_shaping",
                                                "probation_wait")


def test_compute_reward_unknown_mode_raises() -> None:
    with pytest.raises(ValueError, match="'dense'"):
        compute_reward("dense", inputs([SlotState(index=0)]), CFG)


def test_no_growth_earns_exactly_zero_in_contribution_mode() -> None:
    x = inputs([SlotState(index=0)], acc_before=40.0, acc_after=45.0)
    assert compute_reward("contribution", x, CFG).total == 0.0
    x = inputs([SlotState(index=0)], acc_before=40.0, acc_after=45.0, terminal=True)
    assert compute_reward("contribution", x, CFG).total == 0.0


# -- properties --------------------------------------------------------------------------------

finite = st.floats(-100.0, 100.0)


@st.composite
def slot_st(draw, index: int) -> SlotState:
    return SlotState(index=index, stage=draw(st.sampled_from(list(SeedStage))), blueprint="norm",
                     seed_id="s", seed_params=draw(st.integers(0, 10**7)),
                     epochs_in_stage=draw(st.integers(0, 60)), seed_age=draw(st.integers(0, 60)),
                     alpha=AlphaController(alpha=draw(st.floats(0.0, 1.0))),
                     acc_at_germination=draw(st.one_of(st.none(), finite)),
                     current_acc=draw(finite), counterfactual=draw(st.one_of(st.none(), finite)))


actions = st.one_of(st.just(WAIT), st.builds(Action, st.sampled_from([K.FOSSILIZE, K.CULL]),
                                             st.integers(0, 1)),
                    st.builds(Action, st.just(K.GERMINATE), st.integers(0, 1), st.just("norm")))


@given(before=st.tuples(slot_st(0), slot_st(1)), after=st.tuples(slot_st(0), slot_st(1)),
       action=actions, legal=st.booleans(), acc_before=finite, acc_after=finite,
       v_before=finite, v_after=finite, host=st.integers(1, 10**7), terminal=st.booleans(),
       gate=st.one_of(st.none(), st.builds(GateResult, st.just("G5"), st.booleans())),
       decisions=st.tuples(st.booleans(), st.booleans()),
       mode=st.sampled_from(["contribution", "delta", "sparse"]))
def test_compute_reward_finite_for_finite_inputs(before, after, action, legal, acc_before,
                                                 acc_after, v_before, v_after, host, terminal,
                                                 gate, decisions, mode) -> None:
    x = inputs(before, after, action=action, legal=legal, acc_before=acc_before,
               acc_after=acc_after, v_before=v_before, v_after=v_after, terminal=terminal,
               gate=gate, decisions=decisions, host=host)
    r = compute_reward(mode, x, CFG)
    assert tuple(r.terms) == reward_terms(mode)
    assert all(math.isfinite(v) for v in r.terms.values())
    assert math.isfinite(r.total)


@given(path=st.lists(st.tuples(stage_slots, st.integers(0, 3000), actions, st.booleans()),
                     min_size=1, max_size=25))
def test_growth_that_adds_nothing_never_out_earns_no_growth(path) -> None:
    """With V = 0 throughout (a seed that never blends, or adds nothing), the contribution return
    is at most 0 = the no-growth return: rent and shaping can only cost, whatever the actions."""
    states = [SlotState(index=0)] + [replace(s, seed_params=p if s.stage in MODULE_STAGES else 0)
                                     for s, p, _, _ in path]
    total = 0.0
    for t, ((_, _, action, legal), b, a) in enumerate(zip(path, states[:-1], states[1:],
                                                          strict=True)):
        gate = PASS if action.kind == K.FOSSILIZE else None
        total += compute_reward("contribution", inputs(
            [b], [a], action=action, legal=legal, gate=gate,
            terminal=t == len(path) - 1), CFG).total
    assert total <= 1e-9
