"""Observation layout and encoding (spec section 11): finite, bounded float32, named values."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from esper_env.core.alpha import AlphaController
from esper_env.core.catalog import BLUEPRINT_NAMES
from esper_env.core.lifecycle import SeedStage
from esper_env.core.observation import (
    EpisodeFacts,
    encode_observation,
    observation_bounds,
    observation_features,
)
from esper_env.core.state import EpochReport, SlotState
from esper_env.core.tracker import HISTORY, TrackerState

BPS = BLUEPRINT_NAMES["cnn"]
# Finite values stay inside float32 range here; the overflow case has its own test below.
any_float = st.one_of(st.floats(-1e30, 1e30),
                      st.sampled_from([math.nan, math.inf, -math.inf]))
acc_float = st.one_of(st.floats(-1e3, 1e3), any_float)


@pytest.mark.parametrize("n_slots", [1, 2, 3])
def test_observation_features_names_unique_and_bounds_ordered(n_slots: int) -> None:
    feats = observation_features(n_slots, BPS)
    names = [f.name for f in feats]
    assert len(names) == len(set(names))
    assert all(f.low < f.high for f in feats)
    assert all(f.description for f in feats)
    per_slot = len(SeedStage) + 10 + len(BPS)
    assert len(feats) == len(observation_features(0, BPS)) + n_slots * per_slot
    low, high = observation_bounds(feats)
    assert low.dtype == high.dtype == np.float32 and low.shape == (len(feats),)


def test_observation_features_per_slot_block_has_stage_and_blueprint_one_hots() -> None:
    names = {f.name for f in observation_features(2, BPS)}
    for s in (0, 1):
        assert {f"slot{s}_stage_{st.name.lower()}" for st in SeedStage} <= names
        assert {f"slot{s}_blueprint_{b}" for b in BPS} <= names
        assert f"slot{s}_counterfactual" in names and f"slot{s}_alpha" in names
    assert not any("shadowing" in n for n in names)


slot_states = st.builds(
    SlotState,
    index=st.just(0),
    stage=st.sampled_from(list(SeedStage)),
    blueprint=st.one_of(st.none(), st.sampled_from(BPS)),
    seed_id=st.one_of(st.none(), st.just("seed0")),
    seed_params=st.integers(0, 10**8),
    epochs_in_stage=st.integers(0, 500),
    seed_age=st.integers(0, 500),
    alpha=st.builds(AlphaController, alpha=st.floats(0.0, 1.0)),
    acc_at_germination=st.one_of(st.none(), acc_float),
    acc_at_stage_start=acc_float,
    current_acc=acc_float,
    counterfactual=st.one_of(st.none(), st.floats(-200, 200), any_float),
    gradient_ratio=st.one_of(st.floats(0, 100), any_float),
    isolation_violations=st.integers(0, 100),
)
histories = st.integers(0, HISTORY).flatmap(
    lambda n: st.tuples(st.lists(acc_float, min_size=n, max_size=n).map(tuple),
                        st.lists(any_float, min_size=n, max_size=n).map(tuple)))
trackers = st.builds(
    lambda hist, **kw: TrackerState(acc_history=hist[0], loss_history=hist[1], **kw),
    histories,
    epochs=st.integers(0, 100), val_loss=any_float, val_acc=acc_float, loss_delta=any_float,
    acc_delta=acc_float, plateau_epochs=st.integers(0, 500), stable_epochs=st.integers(0, 50),
    host_stabilized=st.booleans(), best_val_acc=acc_float,
)
reports = st.builds(EpochReport, train_loss=any_float, train_acc=acc_float, val_loss=any_float,
                    val_acc=acc_float)


@given(
    data=st.data(),
    n_slots=st.integers(1, 3),
    tracker=trackers,
    report=reports,
    max_epochs=st.integers(2, 200),
    n_classes=st.integers(2, 1000),
    host_params=st.integers(1, 10**7),
    germination_open=st.booleans(),
    host_lr=st.floats(1e-6, 10.0),
    budget=st.one_of(st.none(), st.floats(0.0, 1000.0)),
    fraction=st.floats(0.01, 1.0),
    noise=st.floats(0.0, 0.9),
)
def test_encode_observation_finite_and_within_bounds(data, n_slots, tracker, report, max_epochs,
                                                     n_classes, host_params, germination_open,
                                                     host_lr, budget, fraction, noise) -> None:
    slots = [replace(data.draw(slot_states), index=i) for i in range(n_slots)]
    facts = EpisodeFacts(host_params=host_params, host_lr=host_lr, train_fraction=fraction,
                         label_noise=noise, param_budget=budget,
                         slot_channels=tuple(data.draw(st.integers(1, 4096))
                                             for _ in range(n_slots)),
                         slot_depths=tuple(data.draw(st.floats(0.0, 1.0)) for _ in range(n_slots)))
    epoch = data.draw(st.integers(0, max_epochs + 5))
    feats = observation_features(n_slots, BPS)
    low, high = observation_bounds(feats)
    obs = encode_observation(report=report, tracker=tracker, slots=slots, blueprints=BPS,
                             epoch=epoch, max_epochs=max_epochs, n_classes=n_classes,
                             facts=facts, germination_open=germination_open,
                             low=low, high=high)
    assert obs.dtype == np.float32
    assert obs.shape == (len(feats),)
    assert np.isfinite(obs).all()
    assert (obs >= low).all() and (obs <= high).all()


def encode_one(slot: SlotState, report: EpochReport, tracker: TrackerState,
               **kw: object) -> dict[str, float]:
    feats = observation_features(1, BPS)
    low, high = observation_bounds(feats)
    facts = EpisodeFacts(host_params=int(kw.pop("host_params", 1000)),
                         **kw.pop("facts", {}))  # type: ignore[arg-type]
    opts: dict = dict(epoch=5, max_epochs=20, n_classes=10, germination_open=True, facts=facts)
    opts.update(kw)
    obs = encode_observation(report=report, tracker=tracker, slots=[slot], blueprints=BPS,
                             low=low, high=high, **opts)
    return {f.name: float(v) for f, v in zip(feats, obs, strict=True)}


def test_encode_observation_hand_computed_values() -> None:
    ln10 = math.log(10)
    slot = SlotState(index=0, stage=SeedStage.BLENDING, blueprint="depthwise", seed_id="seed0",
                     seed_params=250, epochs_in_stage=2, seed_age=6,
                     alpha=AlphaController(alpha=0.375), acc_at_germination=40.0,
                     acc_at_stage_start=50.0, current_acc=53.0, counterfactual=-2.5,
                     gradient_ratio=0.5)
    report = EpochReport(train_loss=ln10, train_acc=60.0, val_loss=ln10 / 2, val_acc=53.0)
    tracker = TrackerState(epochs=3, val_loss=ln10 / 2, val_acc=53.0, loss_delta=ln10 / 4,
                           acc_delta=3.0, plateau_epochs=4, host_stabilized=True,
                           best_val_acc=55.0, loss_history=(ln10, ln10 / 2),
                           acc_history=(30.0, 53.0))
    v = encode_one(slot, report, tracker)
    expected = {
        "epoch_fraction": 0.25, "train_loss": 1.0, "val_loss": 0.5, "train_acc": 0.6,
        "val_acc": 0.53, "val_loss_delta": 0.25, "val_acc_delta": 0.3, "plateau_epochs": 0.2,
        "best_val_acc": 0.55, "val_acc_hist_0": 0.0, "val_acc_hist_2": 0.0, "val_acc_hist_3": 0.3,
        "val_acc_hist_4": 0.53, "val_loss_hist_3": 1.0, "val_loss_hist_4": 0.5,
        "host_stabilized": 1.0, "germination_open": 1.0, "added_param_ratio": 0.25,
        "slot0_stage_blending": 1.0, "slot0_stage_dormant": 0.0, "slot0_alpha": 0.375,
        "slot0_epochs_in_stage": 0.1, "slot0_seed_age": 0.3, "slot0_improvement": 0.3,
        "slot0_counterfactual": -0.25, "slot0_has_counterfactual": 1.0,
        "slot0_gradient_ratio": 0.05, "slot0_param_share": 0.25,
        "slot0_blueprint_depthwise": 1.0, "slot0_blueprint_norm": 0.0,
        "host_size": math.log10(1000) / 6, "epochs_left": 0.15, "budget_left": 10.0,
        "has_budget": 0.0, "host_lr": 0.5, "train_fraction": 1.0, "label_noise": 0.0,
        "slot0_width": 0.0, "slot0_depth": 0.0,
    }
    for name, want in expected.items():
        assert v[name] == pytest.approx(want, abs=1e-6), name
    assert sum(v[f"slot0_stage_{s.name.lower()}"] for s in SeedStage) == 1.0
    assert sum(v[f"slot0_blueprint_{b}"] for b in BPS) == 1.0


def test_encode_observation_missing_values_and_clipping() -> None:
    slot = SlotState(index=0, stage=SeedStage.PROBATIONARY, blueprint="norm", seed_id="s",
                     seed_params=50_000, counterfactual=None, acc_at_stage_start=10.0,
                     current_acc=80.0)
    report = EpochReport(train_loss=float("nan"), train_acc=50.0, val_loss=float("inf"),
                         val_acc=150.0)
    v = encode_one(slot, report, TrackerState(), host_params=1000, epoch=40)
    # NaN/inf never reach the agent: NaN reads 0, an infinite loss reads as the worst bound
    assert v["train_loss"] == 0.0 and v["val_loss"] == 5.0
    assert v["val_acc"] == 1.0 and v["epoch_fraction"] == 1.0  # clipped to the bounds
    assert v["slot0_counterfactual"] == 0.0 and v["slot0_has_counterfactual"] == 0.0
    assert v["slot0_improvement"] == 1.0                      # 70 pp / 10 clipped to 1
    assert v["slot0_param_share"] == 10.0 and v["added_param_ratio"] == 10.0
    assert all(v[f"val_acc_hist_{i}"] == 0.0 for i in range(HISTORY))


def test_encode_observation_cooldown_slot_adds_no_params_or_improvement() -> None:
    slot = SlotState(index=0, stage=SeedStage.EMBARGOED, seed_params=300,
                     acc_at_stage_start=10.0, current_acc=30.0)
    v = encode_one(slot, EpochReport(1.0, 50.0, 1.0, 50.0), TrackerState())
    assert v["added_param_ratio"] == 0.0
    assert v["slot0_improvement"] == 0.0
    assert v["slot0_stage_embargoed"] == 1.0


def test_encode_observation_clips_finite_values_beyond_float32_range() -> None:
    # Spec 11: values are clipped to the declared bounds. A finite loss of 1e39 (beyond float32's
    # 3.4e38) is larger than 1e30, which clips to the bound 5; it must not come out as 0.
    ln10 = math.log(10)
    big = EpochReport(train_loss=1e39 * ln10, train_acc=50.0, val_loss=1e30, val_acc=50.0)
    slot = SlotState(index=0, stage=SeedStage.TRAINING, blueprint="norm", seed_id="s",
                     gradient_ratio=1e300)
    v = encode_one(slot, big, TrackerState())
    assert v["val_loss"] == 5.0
    assert v["train_loss"] == 5.0
    assert v["slot0_gradient_ratio"] == 1.0


def test_encode_observation_instance_features() -> None:
    slot = SlotState(index=0, stage=SeedStage.TRAINING, blueprint="norm", seed_id="s",
                     seed_params=300)
    facts = dict(host_lr=0.001, train_fraction=0.25, label_noise=0.2, param_budget=0.5,
                 slot_channels=(16,), slot_depths=(2 / 3,))
    v = encode_one(slot, EpochReport(1.0, 50.0, 1.0, 50.0), TrackerState(), host_params=2000,
                   facts=facts, epoch=8, max_epochs=30)
    assert v["host_size"] == pytest.approx(math.log10(2000) / 6)
    assert v["epochs_left"] == pytest.approx(0.22)
    assert v["budget_left"] == pytest.approx(0.5 - 300 / 2000)   # 1000 allowed, 300 used
    assert v["has_budget"] == 1.0
    assert v["host_lr"] == pytest.approx(0.25)
    assert (v["train_fraction"], v["label_noise"]) == (0.25, pytest.approx(0.2))
    assert v["slot0_width"] == pytest.approx(0.5) and v["slot0_depth"] == pytest.approx(2 / 3)
    over = dict(facts, param_budget=0.1)                           # already over the budget
    assert encode_one(slot, EpochReport(1.0, 50.0, 1.0, 50.0), TrackerState(), host_params=2000,
                      facts=over)["budget_left"] == 0.0
