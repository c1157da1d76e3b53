"""Reward arithmetic (spec section 9): every term on hand-computed cases, the fixed anchor defects,
the delta/sparse modes, penalties, and properties (finite, monotone in the counterfactual)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esper_env.config import EsperConfig, RewardConfig
from esper_env.core.actions import Action, ActionKind
from esper_env.core.alpha import AlphaController
from esper_env.core.gates import GateResult
from esper_env.core.lifecycle import SeedStage
from esper_env.core.reward import (
    RewardInputs,
    added_parameters,
    bounded_attribution,
    compute_reward,
    parameter_rent,
    reward_terms,
    stage_potential,
)
from esper_env.core.seeds import auto_transition, cull, record_epoch
from esper_env.core.state import SlotMetrics, SlotState

S = SeedStage
K = ActionKind
CFG = RewardConfig()
WAIT = Action(K.WAIT)
HOST = 1000


def seed(stage: SeedStage, *, index: int = 0, c: float | None = None, germ: float | None = 50.0,
         acc: float = 50.0, eis: int = 0, params: int = 0, age: int = 5) -> SlotState:
    """A slot holding a seed (``germ`` = acc at germination, ``acc`` = current val acc)."""
    holds = stage in (S.GERMINATED, S.TRAINING, S.BLENDING, S.PROBATIONARY, S.FOSSILIZED)
    return SlotState(index=index, stage=stage, blueprint="norm" if holds else None,
                     seed_id="seed0" if holds else None, seed_params=params, epochs_in_stage=eis,
                     seed_age=age if holds else 0,
                     alpha=AlphaController(alpha=1.0 if stage in (S.PROBATIONARY, S.FOSSILIZED)
                                           else 0.0),
                     acc_at_germination=germ if holds else None, acc_at_stage_start=acc,
                     current_acc=acc, counterfactual=c)


def inputs(before, measured=None, after=None, *, action=WAIT, legal=True, acc_before=50.0,
           acc_after=50.0, terminal=False, gate=None, rollback=False, diverged=False,
           host=HOST) -> RewardInputs:
    before = tuple(before)
    measured = before if measured is None else tuple(measured)
    after = measured if after is None else tuple(after)
    return RewardInputs(action=action, action_legal=legal, slots_before=before,
                        slots_measured=measured, slots_after=after, val_acc_before=acc_before,
                        val_acc_after=acc_after, host_params=host, terminal=terminal,
                        fossilize_gate=gate, rollback=rollback, diverged=diverged)


def terms(x: RewardInputs, mode: str = "contribution", cfg: RewardConfig = CFG) -> dict:
    return compute_reward(mode, x, cfg).terms


# -- bounded attribution -----------------------------------------------------------------------

@pytest.mark.parametrize(("c", "p", "want"), [
    (-2.0, 5.0, -2.0),          # harmful seed charged its damage
    (-2.0, -5.0, -2.0),
    (3.0, 0.0, 0.0),            # no progress, no pay
    (3.0, -1.0, 0.0),
    (8.0, 2.0, 4.0),            # c >= P: sqrt(2 * 8)
    (4.0, 4.0, 4.0),            # c == P: sqrt(16)
    (9.0, 1.0, 3.0),
    (1.0, 4.0, 1.0),            # c < P: c
    (0.0, 5.0, 0.0),
])
def test_bounded_attribution_hand_computed(c: float, p: float, want: float) -> None:
    assert bounded_attribution(c, p) == pytest.approx(want)


def test_attribution_term_uses_total_improvement_and_weight() -> None:
    m = seed(S.PROBATIONARY, c=8.0, germ=50.0, acc=52.0)  # P = 2 -> sqrt(16) = 4
    assert terms(inputs([m]))["attribution"] == pytest.approx(4.0)
    assert terms(inputs([m]), cfg=RewardConfig(contribution_weight=2.5))["attribution"] == \
        pytest.approx(10.0)


def test_attribution_term_sums_slots_and_pays_fossils_by_default() -> None:
    a = seed(S.BLENDING, index=0, c=1.0, germ=50.0, acc=54.0)      # c < P -> 1
    b = seed(S.TRAINING, index=1, c=-0.5, germ=50.0, acc=54.0)     # -0.5
    f = seed(S.FOSSILIZED, index=2, c=6.0, germ=40.0, acc=54.0)    # P = 14: min(6, sqrt(84)) = 6
    assert terms(inputs([a, b, f]))["attribution"] == pytest.approx(6.5)
    anchor = RewardConfig(attribution_for_fossils=False)            # the anchor paid no fossil
    assert terms(inputs([a, b, f]), cfg=anchor)["attribution"] == pytest.approx(0.5)


def test_attribution_ignores_slots_without_a_seed() -> None:
    slots = [SlotState(index=0, stage=S.DORMANT, counterfactual=5.0, current_acc=60.0),
             SlotState(index=1, stage=S.EMBARGOED, counterfactual=5.0, current_acc=60.0)]
    assert terms(inputs(slots))["attribution"] == 0.0


def test_attribution_negative_total_improvement_pays_nothing() -> None:
    m = seed(S.BLENDING, c=3.0, germ=55.0, acc=50.0)
    assert terms(inputs([m]))["attribution"] == 0.0


# -- proxy, blending warning, probation wait ---------------------------------------------------

def test_proxy_for_training_seed_without_counterfactual() -> None:
    m = seed(S.TRAINING, c=None)
    t = terms(inputs([m], acc_before=50.0, acc_after=50.5))
    assert t["proxy"] == pytest.approx(0.3 * 0.5)
    assert t["attribution"] == 0.0


def test_proxy_zero_when_accuracy_drops_or_counterfactual_known_or_no_seed() -> None:
    assert terms(inputs([seed(S.TRAINING)], acc_before=50.0, acc_after=49.0))["proxy"] == 0.0
    assert terms(inputs([seed(S.TRAINING, c=0.2)], acc_after=52.0))["proxy"] == 0.0
    assert terms(inputs([SlotState(index=0)], acc_after=52.0))["proxy"] == 0.0
    assert terms(inputs([seed(S.FOSSILIZED)], acc_after=52.0))["proxy"] == 0.0


def test_proxy_counts_each_training_seed() -> None:
    slots = [seed(S.TRAINING, index=0), seed(S.BLENDING, index=1)]
    assert terms(inputs(slots, acc_before=50.0, acc_after=51.0))["proxy"] == pytest.approx(0.6)


@pytest.mark.parametrize(("eis", "want"), [(0, -0.1), (2, -0.2), (6, -0.4), (20, -0.4)])
def test_blending_warning_for_negative_total_improvement(eis: int, want: float) -> None:
    m = seed(S.BLENDING, c=None, germ=50.0, acc=49.0, eis=eis)
    assert terms(inputs([m]))["blending_warning"] == pytest.approx(want)


def test_blending_warning_absent_without_loss_or_outside_blending() -> None:
    assert terms(inputs([seed(S.BLENDING, germ=50.0, acc=50.0, eis=3)]))["blending_warning"] == 0.0
    assert terms(inputs([seed(S.TRAINING, germ=50.0, acc=45.0, eis=3)]))["blending_warning"] == 0.0


@pytest.mark.parametrize(("eis", "want"), [(0, 0.0), (1, 0.0), (2, -1.0), (3, -3.0), (4, -9.0),
                                           (5, -10.0), (8, -10.0)])
def test_probation_wait_penalty_grows_and_is_capped(eis: int, want: float) -> None:
    b = seed(S.PROBATIONARY, c=2.0, eis=eis)
    assert terms(inputs([b]))["probation_wait"] == want


def test_probation_wait_cap_holds_for_very_long_probation() -> None:
    # A long probation (probation_timeout may be configured large) must stay capped at -10,
    # never overflow: 3.0 ** 998 does not fit in a float.
    b = seed(S.PROBATIONARY, c=2.0, eis=1000)
    assert terms(inputs([b]))["probation_wait"] == -10.0


@pytest.mark.parametrize("kind", [K.FOSSILIZE, K.CULL])
def test_probation_wait_not_charged_when_action_resolves_that_slot(kind: ActionKind) -> None:
    slots = [seed(S.PROBATIONARY, index=0, c=2.0, eis=3),
             seed(S.PROBATIONARY, index=1, c=2.0, eis=2)]
    # acting on slot 0 spares slot 0 only; slot 1 still pays 3**0 = 1
    assert terms(inputs(slots, action=Action(kind, 0)))["probation_wait"] == -1.0
    assert terms(inputs(slots, action=Action(kind, 1)))["probation_wait"] == -3.0
    assert terms(inputs(slots))["probation_wait"] == -4.0


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
])
def test_stage_shaping_is_potential_difference(before, after, want) -> None:
    t = terms(inputs([before], [before], [after]))
    assert t["stage_shaping"] == pytest.approx(want)


# -- rent --------------------------------------------------------------------------------------

def test_parameter_rent_hand_computed_and_capped() -> None:
    assert parameter_rent(500, 1000, CFG) == pytest.approx(0.5 * math.log(1.5))
    assert parameter_rent(0, 1000, CFG) == 0.0
    assert parameter_rent(500, 0, CFG) == 0.0
    assert parameter_rent(10**12, 1, CFG) == 8.0  # 0.5 * ln(1e12 + 1) = 13.8 -> capped
    assert parameter_rent(10**12, 1, RewardConfig(max_rent=3.0)) == 3.0


def test_rent_term_counts_module_stages_of_slots_after() -> None:
    after = [seed(S.TRAINING, index=0, params=300), seed(S.FOSSILIZED, index=1, params=200),
             SlotState(index=2, stage=S.EMBARGOED, seed_params=999)]
    assert added_parameters(after) == 500
    t = terms(inputs([SlotState(index=i) for i in range(3)], after=after))
    assert t["rent"] == pytest.approx(-0.5 * math.log(1.5))


# -- action shaping ----------------------------------------------------------------------------

def test_action_shaping_germinate_and_wait() -> None:
    empty = [SlotState(index=0)]
    g = Action(K.GERMINATE, 0, "norm")
    assert terms(inputs(empty, after=[seed(S.TRAINING)], action=g))["action_shaping"] == -0.02
    assert terms(inputs(empty))["action_shaping"] == 0.0


def test_action_shaping_fossilize_pass() -> None:
    before = seed(S.PROBATIONARY, c=3.0, germ=50.0, acc=54.0, eis=2)
    measured = seed(S.FOSSILIZED, c=3.0, germ=50.0, acc=54.0)
    x = inputs([before], [measured], action=Action(K.FOSSILIZE, 0),
               gate=GateResult("G5", True))
    assert terms(x)["action_shaping"] == pytest.approx(-0.01 + 0.5 + 0.1 * 3.0)


@pytest.mark.parametrize("gate", [None, GateResult("G5", False, ("contribution",))])
def test_action_shaping_fossilize_fail(gate) -> None:
    before = seed(S.PROBATIONARY, c=0.5, germ=50.0, acc=54.0)
    x = inputs([before], action=Action(K.FOSSILIZE, 0), gate=gate)
    assert terms(x)["action_shaping"] == pytest.approx(-0.01 - 0.2)


@pytest.mark.parametrize(("acc", "want"), [(48.0, -0.01 - 0.5 - 0.4),    # T = -2
                                           (40.0, -0.01 - 0.5 - 1.0)])   # T = -10, capped at 1
def test_action_shaping_fossilize_negative_total_improvement(acc: float, want: float) -> None:
    before = seed(S.PROBATIONARY, c=5.0, germ=50.0, acc=acc)
    measured = seed(S.FOSSILIZED, c=5.0, germ=50.0, acc=acc)
    x = inputs([before], [measured], action=Action(K.FOSSILIZE, 0),
               gate=GateResult("G5", True))
    assert terms(x)["action_shaping"] == pytest.approx(want)


@pytest.mark.parametrize(("c", "want"), [
    (None, -0.005),
    (-3.0, -0.005 + 0.3),        # c < -0.5: culling a hurting seed
    (-0.51, -0.005 + 0.3),
    (-0.5, -0.005 + 0.1),        # -0.5 <= c < 0: acceptable
    (-0.1, -0.005 + 0.1),
    (0.0, -0.005 - 0.3),         # c >= 0: culling a good seed
    (4.0, -0.005 - 0.3 - 0.2),
])
def test_action_shaping_cull(c, want) -> None:
    before = seed(S.BLENDING, c=c, age=12)
    after, _ = cull(before, "action")
    x = inputs([before], [after], action=Action(K.CULL, 0))
    assert terms(x)["action_shaping"] == pytest.approx(want)


def test_action_shaping_zero_for_illegal_action() -> None:
    before = seed(S.BLENDING, c=4.0)
    x = inputs([before], action=Action(K.CULL, 0), legal=False)
    t = terms(x)
    assert t["action_shaping"] == 0.0 and t["illegal_action"] == -0.1


# -- terminal ----------------------------------------------------------------------------------

def test_terminal_bonus_accuracy_and_fossils() -> None:
    after = [seed(S.FOSSILIZED, index=0), seed(S.FOSSILIZED, index=1), SlotState(index=2)]
    t = terms(inputs(after, terminal=True, acc_after=80.0))
    assert t["terminal"] == pytest.approx(0.05 * 80.0 + 3.0 * 2)
    assert terms(inputs(after, terminal=False, acc_after=80.0))["terminal"] == 0.0


# -- the fixed anchor defects ------------------------------------------------------------------

def _cull_step(c: float) -> tuple[RewardInputs, RewardInputs]:
    """The same PROBATIONARY seed, one step with CULL and one with WAIT (env.py's ordering)."""
    cfg = EsperConfig(embargo_epochs=3)
    before = seed(S.PROBATIONARY, c=c, germ=50.0, acc=55.0, eis=1, params=400, age=12)
    culled, _ = cull(before, "action")
    measured = record_epoch(culled, SlotMetrics(), 55.0)
    after, _, _ = auto_transition(measured, cfg)
    cull_x = inputs([before], [measured], [after], action=Action(K.CULL, 0), acc_before=55.0,
                    acc_after=55.0)
    kept = record_epoch(before, SlotMetrics(counterfactual=c, gradient_ratio=1.0), 55.0)
    wait_x = inputs([before], [kept], [kept], acc_before=55.0, acc_after=55.0)
    return cull_x, wait_x


def test_defect_cull_never_collects_positive_attribution() -> None:
    cull_x, wait_x = _cull_step(c=20.0)
    t = terms(cull_x)
    assert t["attribution"] <= 0.0
    assert t["proxy"] == 0.0
    assert t["action_shaping"] < 0.0
    assert t["action_shaping"] == pytest.approx(-0.005 - 0.3 - 0.05 * 20.0)
    # the same seed kept would have been paid sqrt(5 * 20) = 10
    assert terms(wait_x)["attribution"] == pytest.approx(10.0)


def test_defect_rent_counts_fossilized_seed_once() -> None:
    live = [seed(S.PROBATIONARY, index=0, params=500), seed(S.TRAINING, index=1, params=300)]
    fossil = [seed(S.FOSSILIZED, index=0, params=500), seed(S.TRAINING, index=1, params=300)]
    r_live = terms(inputs(live))["rent"]
    r_fossil = terms(inputs(fossil))["rent"]
    assert r_live == r_fossil == pytest.approx(-0.5 * math.log(1 + 800 / HOST))


@pytest.mark.parametrize("eis", [0, 1, 4, 10])
def test_defect_stage_shaping_pays_potential_drop_on_cull(eis: int) -> None:
    before = seed(S.PROBATIONARY, c=1.0, eis=eis, params=100, age=12)
    culled, _ = cull(before, "action")
    phi = 5.5 + min(0.3 * eis, 2.0)
    t = terms(inputs([before], [culled], [culled], action=Action(K.CULL, 0)))
    assert t["stage_shaping"] == pytest.approx(-0.3 * phi)
    assert t["stage_shaping"] < 0.0
    # after the automatic CULLED -> EMBARGOED move the drop is the same (both potentials are 0)
    cull_x, _ = _cull_step(c=1.0)
    assert cull_x.slots_after[0].stage == S.EMBARGOED
    assert terms(cull_x)["stage_shaping"] == pytest.approx(-0.3 * (5.5 + 0.3))


def test_defect_terminal_bonus_grows_per_fossilized_seed() -> None:
    cfg = RewardConfig(terminal_fossil_bonus=2.5)
    values = []
    for n in range(4):
        after = [seed(S.FOSSILIZED, index=i) for i in range(n)] + \
                [SlotState(index=i) for i in range(n, 3)]
        values.append(terms(inputs(after, terminal=True, acc_after=70.0), cfg=cfg)["terminal"])
    assert values[0] == pytest.approx(0.05 * 70.0)
    steps = [b - a for a, b in zip(values[:-1], values[1:], strict=True)]
    assert steps == pytest.approx([2.5, 2.5, 2.5])


# -- delta and sparse modes, penalties, term names ---------------------------------------------

@given(st.lists(st.floats(0.0, 100.0), min_size=2, max_size=30))
def test_delta_mode_accuracy_terms_telescope(accs: list[float]) -> None:
    total = 0.0
    for a, b in zip(accs[:-1], accs[1:], strict=True):
        total += terms(inputs([SlotState(index=0)], acc_before=a, acc_after=b),
                       mode="delta")["accuracy_delta"]
    assert total == pytest.approx(accs[-1] - accs[0], abs=1e-9)


def test_delta_mode_charges_rent() -> None:
    t = terms(inputs([seed(S.TRAINING, params=500)], acc_before=40.0, acc_after=42.5),
              mode="delta")
    assert t["accuracy_delta"] == 2.5
    assert t["rent"] == pytest.approx(-0.5 * math.log(1.5))


def test_sparse_mode_zero_until_terminal() -> None:
    slots = [seed(S.FOSSILIZED, params=500)]
    mid = compute_reward("sparse", inputs(slots, acc_after=70.0), CFG)
    assert mid.total == 0.0 and all(v == 0.0 for v in mid.terms.values())
    end = terms(inputs(slots, acc_after=70.0, terminal=True), mode="sparse")
    assert end["final_accuracy"] == 70.0
    assert end["rent"] == pytest.approx(-0.5 * math.log(1.5))


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


def test_compute_reward_unknown_mode_raises() -> None:
    with pytest.raises(ValueError, match="'dense'"):
        compute_reward("dense", inputs([SlotState(index=0)]), CFG)


def test_no_seed_wait_earns_exactly_zero() -> None:
    x = inputs([SlotState(index=0)], acc_before=40.0, acc_after=45.0)
    assert compute_reward("contribution", x, CFG).total == 0.0


# -- properties --------------------------------------------------------------------------------

finite = st.floats(-100.0, 100.0)
stages = st.sampled_from(list(SeedStage))


@st.composite
def slot_st(draw, index: int) -> SlotState:
    return SlotState(index=index, stage=draw(stages), blueprint="norm", seed_id="s",
                     seed_params=draw(st.integers(0, 10**7)),
                     epochs_in_stage=draw(st.integers(0, 60)), seed_age=draw(st.integers(0, 60)),
                     alpha=AlphaController(alpha=draw(st.floats(0.0, 1.0))),
                     acc_at_germination=draw(st.one_of(st.none(), finite)),
                     acc_at_stage_start=draw(finite), current_acc=draw(finite),
                     counterfactual=draw(st.one_of(st.none(), finite)))


actions = st.one_of(st.just(WAIT), st.builds(Action, st.sampled_from([K.FOSSILIZE, K.CULL]),
                                             st.integers(0, 1)),
                    st.builds(Action, st.just(K.GERMINATE), st.integers(0, 1), st.just("norm")))


@given(before=st.tuples(slot_st(0), slot_st(1)), measured=st.tuples(slot_st(0), slot_st(1)),
       after=st.tuples(slot_st(0), slot_st(1)), action=actions, legal=st.booleans(),
       acc_before=finite, acc_after=finite, host=st.integers(1, 10**7), terminal=st.booleans(),
       gate=st.one_of(st.none(), st.builds(GateResult, st.just("G5"), st.booleans())),
       mode=st.sampled_from(["contribution", "delta", "sparse"]))
def test_compute_reward_finite_for_finite_inputs(before, measured, after, action, legal,
                                                 acc_before, acc_after, host, terminal, gate,
                                                 mode) -> None:
    x = inputs(before, measured, after, action=action, legal=legal, acc_before=acc_before,
               acc_after=acc_after, terminal=terminal, gate=gate, host=host)
    r = compute_reward(mode, x, CFG)
    assert tuple(r.terms) == reward_terms(mode)
    assert all(math.isfinite(v) for v in r.terms.values())
    assert math.isfinite(r.total)
    assert -8.0 <= r.terms["rent"] <= 0.0


@given(c1=finite, c2=finite, p=finite)
def test_bounded_attribution_monotone_in_counterfactual(c1: float, c2: float, p: float) -> None:
    lo, hi = min(c1, c2), max(c1, c2)
    assert bounded_attribution(lo, p) <= bounded_attribution(hi, p)


@given(c=finite, p=finite)
def test_bounded_attribution_never_exceeds_contribution_or_progress_bound(c: float,
                                                                          p: float) -> None:
    a = bounded_attribution(c, p)
    assert a <= max(c, 0.0)
    if c > 0 and p > 0:
        assert a <= math.sqrt(p * c) + 1e-12


@given(p=finite, params=st.integers(0, 10**6), eis=st.integers(0, 10))
def test_zero_contribution_seed_never_earns_positive_attribution_net_of_rent(p, params,
                                                                              eis) -> None:
    m = seed(S.PROBATIONARY, c=0.0, germ=50.0, acc=50.0 + p, eis=eis, params=params)
    t = terms(inputs([m], [m], [m]))
    assert t["attribution"] + t["rent"] <= 0.0


@given(c=st.floats(-20, 20), gain=st.floats(-10, 30))
def test_fossilizing_forfeits_no_attribution_anchor_defect_4(c: float, gain: float) -> None:
    # Anchor defect #4: waiting in PROBATIONARY out-earned FOSSILIZE because a fossil stopped
    # collecting attribution. Now the same seed earns the same attribution in either stage.
    prob = seed(S.PROBATIONARY, c=c, germ=50.0, acc=50.0 + gain)
    fossil = seed(S.FOSSILIZED, c=c, germ=50.0, acc=50.0 + gain)
    assert terms(inputs([fossil]))["attribution"] == terms(inputs([prob]))["attribution"]
    anchor = RewardConfig(attribution_for_fossils=False)
    assert terms(inputs([fossil]), cfg=anchor)["attribution"] == 0.0
