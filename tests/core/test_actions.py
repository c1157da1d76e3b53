"""Action codec, layout, names, legality mask and germination gate (spec section 10)."""

from __future__ import annotations

import pytest
from conftest import rules

from esper_env.config import EsperConfig
from esper_env.core.actions import (
    Action,
    ActionCodec,
    ActionKind,
    decisions_available,
    germination_gate_open,
    legal_action_mask,
)
from esper_env.core.catalog import BLUEPRINT_NAMES
from esper_env.core.lifecycle import SeedStage
from esper_env.core.state import SlotState
from esper_env.core.tracker import TrackerState

BPS = BLUEPRINT_NAMES["cnn"]
K = ActionKind


def test_catalog_cnn_order_matches_spec() -> None:
    assert BPS == ("norm", "attention", "depthwise", "conv_light", "conv_heavy")


@pytest.mark.parametrize("n_slots", [1, 2, 3])
def test_action_codec_round_trip_every_index(n_slots: int) -> None:
    codec = ActionCodec(n_slots, BPS)
    assert codec.n == 1 + n_slots * (len(BPS) + 2)
    decoded = [codec.decode(i) for i in range(codec.n)]
    assert len(set(decoded)) == codec.n  # a bijection
    for i, a in enumerate(decoded):
        assert codec.encode(a) == i


def test_action_codec_layout_two_slots() -> None:
    codec = ActionCodec(2, BPS)
    assert codec.n == 15 and codec.per_slot == 7
    expected = [Action(K.WAIT)]
    for s in (0, 1):
        expected += [Action(K.GERMINATE, s, b) for b in BPS]
        expected += [Action(K.FOSSILIZE, s), Action(K.CULL, s)]
    assert [codec.decode(i) for i in range(15)] == expected
    assert codec.decode(4) == Action(K.GERMINATE, 0, "conv_light")
    assert codec.decode(13) == Action(K.FOSSILIZE, 1)


def test_action_codec_names() -> None:
    codec = ActionCodec(2, ("a", "b"))
    assert codec.names == ("WAIT", "GERMINATE_a@0", "GERMINATE_b@0", "FOSSILIZE@0", "CULL@0",
                           "GERMINATE_a@1", "GERMINATE_b@1", "FOSSILIZE@1", "CULL@1")
    assert len(set(ActionCodec(3, BPS).names)) == ActionCodec(3, BPS).n


def test_action_codec_encode_unknown_action_raises_key_error() -> None:
    codec = ActionCodec(1, BPS)
    with pytest.raises(KeyError):
        codec.encode(Action(K.CULL, 1))
    with pytest.raises(KeyError):
        codec.encode(Action(K.GERMINATE, 0, "mlp"))


# -- germination gate --------------------------------------------------------------------------

GATED = EsperConfig(germination_gate=True, min_germinate_epoch=5, plateau_epochs_to_germinate=3)
OPEN_TRACKER = TrackerState(plateau_epochs=3, host_stabilized=True)


@pytest.mark.parametrize(("epoch", "plateau", "stable", "open_"), [
    (5, 3, True, True),
    (6, 4, True, True),
    (4, 3, True, False),   # epoch just below
    (5, 2, True, False),   # plateau just below
    (5, 3, False, False),  # host not stabilised
])
def test_germination_gate_open_thresholds(epoch, plateau, stable, open_) -> None:
    t = TrackerState(plateau_epochs=plateau, host_stabilized=stable)
    assert germination_gate_open(t, epoch, rules(GATED)) is open_


def test_germination_gate_switched_off_is_always_open() -> None:
    cfg = GATED.replace(germination_gate=False)
    assert germination_gate_open(TrackerState(), 0, rules(cfg)) is True


# -- mask --------------------------------------------------------------------------------------

def slot(i: int, stage: SeedStage, age: int = 0, c: float | None = 5.0) -> SlotState:
    return SlotState(index=i, stage=stage, seed_age=age, counterfactual=c,
                     blueprint=None if stage == SeedStage.DORMANT else "norm")


def test_legal_action_mask_only_wait_when_nothing_possible() -> None:
    codec = ActionCodec(2, BPS)
    slots = [slot(0, SeedStage.EMBARGOED), slot(1, SeedStage.FOSSILIZED, age=30)]
    mask = legal_action_mask(codec, slots, OPEN_TRACKER, 10, rules(GATED))
    assert mask.dtype == bool and mask.tolist() == [True] + [False] * 14


def test_legal_action_mask_germinate_needs_dormant_and_open_gate() -> None:
    codec = ActionCodec(2, BPS)
    slots = [slot(0, SeedStage.DORMANT), slot(1, SeedStage.TRAINING, age=1)]
    closed = legal_action_mask(codec, slots, OPEN_TRACKER, 4, rules(GATED))
    assert closed.tolist() == [True] + [False] * 14
    opened = legal_action_mask(codec, slots, OPEN_TRACKER, 5, rules(GATED))
    assert [codec.name(i) for i in range(codec.n) if opened[i]] == [
        "WAIT"] + [f"GERMINATE_{b}@0" for b in BPS]


@pytest.mark.parametrize(("age", "legal"), [(9, False), (10, True), (11, True)])
@pytest.mark.parametrize("stage", [SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING,
                                   SeedStage.PROBATIONARY])
def test_legal_action_mask_cull_needs_live_stage_and_min_age(stage, age, legal) -> None:
    codec = ActionCodec(1, BPS)
    mask = legal_action_mask(codec, [slot(0, stage, age)], OPEN_TRACKER, 10, rules(GATED))
    assert bool(mask[codec.encode(Action(K.CULL, 0))]) is legal
    assert mask[codec.encode(Action(K.FOSSILIZE, 0))] == (stage == SeedStage.PROBATIONARY)


@pytest.mark.parametrize(("c", "legal"), [(None, False), (-1.0, False), (0.5, False),
                                          (0.999, False), (1.0, True), (4.0, True)])
def test_legal_action_mask_fossilize_only_when_g5_passes(c: float | None, legal: bool) -> None:
    """Issue 5: FOSSILIZE is never unmasked for a seed that cannot pass G5 this epoch."""
    codec = ActionCodec(1, BPS)
    mask = legal_action_mask(codec, [slot(0, SeedStage.PROBATIONARY, 3, c)], OPEN_TRACKER, 10,
                             rules(GATED))
    assert bool(mask[codec.encode(Action(K.FOSSILIZE, 0))]) is legal
    cfg = GATED.replace(gates={"min_fossilize_contribution": 0.25})
    mask = legal_action_mask(codec, [slot(0, SeedStage.PROBATIONARY, 3, 0.5)], OPEN_TRACKER, 10,
                             rules(cfg))
    assert mask[codec.encode(Action(K.FOSSILIZE, 0))]


def test_decisions_available_reads_fossilize_and_cull_per_slot() -> None:
    codec = ActionCodec(3, BPS)
    slots = [slot(0, SeedStage.PROBATIONARY, 3, 5.0), slot(1, SeedStage.PROBATIONARY, 3, 0.5),
             slot(2, SeedStage.TRAINING, 12)]
    mask = legal_action_mask(codec, slots, OPEN_TRACKER, 10, rules(GATED))
    assert decisions_available(codec, mask) == (True, False, True)
    assert codec.slot_actions(1) == (codec.encode(Action(K.FOSSILIZE, 1)),
                                     codec.encode(Action(K.CULL, 1)))


@pytest.mark.parametrize("stage", [SeedStage.DORMANT, SeedStage.FOSSILIZED, SeedStage.CULLED,
                                   SeedStage.EMBARGOED, SeedStage.RESETTING])
def test_legal_action_mask_no_cull_or_fossilize_outside_live_stages(stage) -> None:
    codec = ActionCodec(1, BPS)
    mask = legal_action_mask(codec, [slot(0, stage, 99)], OPEN_TRACKER, 10, rules(GATED))
    assert not mask[codec.encode(Action(K.CULL, 0))]
    assert not mask[codec.encode(Action(K.FOSSILIZE, 0))]
    assert mask[0]


def test_legal_action_mask_min_cull_age_zero_allows_fresh_seed() -> None:
    codec = ActionCodec(1, BPS)
    cfg = GATED.replace(min_cull_age=0)
    mask = legal_action_mask(codec, [slot(0, SeedStage.TRAINING, 0)], TrackerState(), 0, rules(cfg))
    assert mask.tolist() == [True, False, False, False, False, False, False, True]
