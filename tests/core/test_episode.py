"""The pure episode transition (esper_env/core/episode.py) with hand-made epoch reports."""

from __future__ import annotations

import dataclasses
import math

import pytest

from esper_env.config import EsperConfig
from esper_env.core import episode as ep
from esper_env.core.catalog import BLUEPRINT_NAMES
from esper_env.core.lifecycle import SeedStage
from esper_env.core.observation import EpisodeFacts
from esper_env.core.state import EpochReport, Germination, SlotMetrics, TwinReading

S = SeedStage
NAN = float("nan")


def params(**overrides: object) -> ep.EpisodeParams:
    kw: dict = dict(n_slots=2, max_epochs=12, germination_gate=False, min_cull_age=2,
                    blending_epochs=2, embargo_epochs=1,
                    gates={"min_training_epochs": 1, "min_gradient_ratio": 0.0,
                           "min_fossilize_contribution": 0.5})
    kw.update(overrides)
    return ep.EpisodeParams.from_config(EsperConfig(**kw), BLUEPRINT_NAMES["cnn"], 10, False)


def report(val_acc: float = 50.0, val_loss: float = 1.0, *, n: int = 2, cf=None, ratio: float = 1.0,
           **fields: object) -> EpochReport:
    slots = tuple(SlotMetrics(ratio, 0, cf) for _ in range(n))
    return EpochReport(1.0, val_acc, val_loss, val_acc, slots, **fields)


def setup(p: ep.EpisodeParams) -> ep.EpisodeSetup:
    costs = tuple((10, 20, 30, 40, 50) for _ in range(p.n_slots))
    return ep.EpisodeSetup(1234, EpisodeFacts(host_params=100, slot_channels=(4, 8)), costs)


def start(p: ep.EpisodeParams, first: EpochReport | None = None) -> ep.EpisodeState:
    state, outcome = ep.start_episode(setup(p), first or report(n=p.n_slots), p)
    assert outcome.settle.checkpoint == p.governor.enabled
    return state


def step(state: ep.EpisodeState, index: int, p: ep.EpisodeParams, rep: EpochReport,
         restored: EpochReport | None = None) -> tuple[ep.EpisodeState, ep.StepOutcome]:
    state, pending = ep.apply_action(state, index, p)
    state, outcome = ep.after_epoch(state, pending, rep, p)
    if outcome.restore is not None:
        assert restored is not None, "the governor asked for a rollback"
        state, outcome = ep.after_restore(state, outcome, restored, p)
    return state, outcome


def test_module_seed_scheme_is_base_plus_a_prime_stride() -> None:
    assert ep.MODULE_SEED_STRIDE == 7919
    assert [ep.module_seed(5, k) for k in range(3)] == [5, 5 + 7919, 5 + 2 * 7919]
    assert ep.module_seed(2**31 - 2, 1) == (2**31 - 2 + 7919) % (2**31 - 1)
    seeds = ep.episode_seeds(42)
    assert seeds == ep.episode_seeds(42) and seeds != ep.episode_seeds(43)
    assert len({seeds.model, seeds.data, seeds.module_base}) == 3


def test_params_take_what_the_rules_need_and_no_device_or_paths() -> None:
    p = params(probation_timeout=None, max_epochs=40)
    assert p.effective_probation_timeout == 4
    names = {f.name for f in dataclasses.fields(p)}
    assert not names & {"device", "data_root", "torch_threads", "download", "channels_last"}
    assert p.twin and not params(reward_mode="delta").twin


def test_start_episode_records_the_first_epoch() -> None:
    p = params()
    state = start(p)
    assert state.epoch == 1 and not state.done and not state.reset_diverged
    assert [s.stage for s in state.slots] == [S.DORMANT, S.DORMANT]
    assert state.slots[0].epochs_in_stage == 1 and state.slots[0].current_acc == 50.0
    assert state.checkpoint_slots == state.slots
    assert state.twin_val_acc == 50.0 and state.value_added == 0.0
    assert state.mask[0] and sum(state.mask) == 1 + 2 * 5  # germination open, nothing to decide
    assert state.curve == ((50.0, (S.DORMANT, S.DORMANT)),)


def test_germinate_asks_for_a_module_and_applies_g0_from_the_report() -> None:
    p = params(gates={"min_training_epochs": 3})
    state = start(p)
    index = p.codec.encode(ep.Action(ep.ActionKind.GERMINATE, 1, "conv_light"))
    after_action, pending = ep.apply_action(state, index, p)
    req = pending.request
    assert req.germinate == ep.GerminateRequest(1, "conv_light", ep.module_seed(1234, 0))
    assert req.slots == (None, ep.SlotPlan("incubate", 0.0, True))
    assert after_action.seeds_made == 1 and after_action.epoch == 2
    assert after_action.slots[1].stage == S.DORMANT  # G0 needs the torch side's shape probe
    ok, outcome = ep.after_epoch(after_action, pending, report(germination=Germination(77, True)), p)
    assert ok.slots[1].stage == S.TRAINING and ok.slots[1].seed_params == 77
    assert ok.slots[1].seed_id == "seed0" and ok.slots[1].acc_at_germination == 50.0
    assert [(e.before, e.after, e.cause) for e in outcome.events][:2] == [
        (S.DORMANT, S.GERMINATED, "action"), (S.GERMINATED, S.TRAINING, "G1")]
    assert outcome.settle.slots[1] == ep.SlotPlan("incubate", 0.0, True)
    bad, outcome = ep.after_epoch(after_action, pending, report(germination=Germination(0, False)), p)
    assert bad.slots[1].stage == S.DORMANT and outcome.gates[1].failed == ("shape_probe",)
    assert outcome.settle.slots[1] is None and bad.seeds_made == 1  # the seed number is spent


def test_a_masked_out_action_is_a_no_op_with_a_penalty() -> None:
    p = params()
    state = start(p)
    fossilize = p.codec.slot_actions(0)[0]
    assert not state.mask[fossilize]
    after, outcome = step(state, fossilize, p, report())
    assert after.slots[0].stage == S.DORMANT and outcome.pending.request.germinate is None
    assert outcome.reward.terms["illegal_action"] == -p.reward.illegal_action_penalty


def test_a_panic_rolls_back_once_then_diverges() -> None:
    p = params(governor={"max_rollbacks": 1})
    state = start(p)
    state, pending = ep.apply_action(state, 0, p)
    state, outcome = ep.after_epoch(state, pending, report(val_loss=NAN, val_acc=0.0), p)
    assert outcome.restore == (None, None) and outcome.rollback and state.rollbacks == 1
    state, outcome = ep.after_restore(state, outcome, report(val_acc=48.0), p)
    assert outcome.rollback and not outcome.diverged and not outcome.terminated
    assert outcome.reward.terms["rollback"] == -p.reward.rollback_penalty
    assert state.slots[0].epochs_in_stage == 1  # a rolled-back epoch is not recorded
    assert not outcome.settle.checkpoint
    state, outcome = step(state, 0, p, report(val_loss=math.inf))
    assert outcome.diverged and outcome.terminated and state.done
    assert state.mask == (True,) + (False,) * (len(state.mask) - 1)
    assert outcome.settle.test and outcome.settle.twin_test


def test_a_restored_model_that_cannot_run_ends_the_episode() -> None:
    p = params()
    state, pending = ep.apply_action(start(p), 0, p)
    state, outcome = ep.after_epoch(state, pending, report(val_loss=NAN), p)
    state, outcome = ep.after_restore(state, outcome, report(val_loss=NAN, fault="ValueError: x"), p)
    assert outcome.rollback and outcome.diverged and outcome.terminated


def test_the_governor_off_ends_the_episode_on_a_nan_loss() -> None:
    p = params(governor={"enabled": False})
    state, outcome = step(start(p), 0, p, report(val_loss=NAN))
    assert outcome.diverged and not outcome.rollback and outcome.restore is None


def test_a_first_epoch_that_diverged_makes_the_first_step_terminal() -> None:
    p = params()
    state = start(p, report(val_loss=NAN, val_acc=0.0))
    assert state.reset_diverged and state.mask == (True,) + (False,) * (len(state.mask) - 1)
    state, pending = ep.apply_action(state, 0, p)
    assert not pending.request.train and not pending.request.poison
    state, outcome = ep.after_epoch(state, pending, report(val_acc=99.0, twin=TwinReading(None, True)), p)
    assert outcome.diverged and outcome.terminated and state.report.val_acc == 0.0
    assert not state.reset_diverged


def test_checkpoints_follow_the_schedule_and_a_fossilization() -> None:
    p = params(governor={"snapshot_every": 3})
    state = start(p)
    epochs = []
    for _ in range(5):
        state, outcome = step(state, 0, p, report())
        epochs.append((state.epoch, outcome.settle.checkpoint))
    assert epochs == [(2, False), (3, True), (4, False), (5, False), (6, True)]


def test_fossilize_checkpoints_before_the_epoch_and_keeps_the_records() -> None:
    p = params()
    state = start(p)
    germ = p.codec.encode(ep.Action(ep.ActionKind.GERMINATE, 0, "norm"))
    state, _ = step(state, germ, p, report(germination=Germination(5, True)))
    for _ in range(4):  # TRAINING 1 epoch, BLENDING 2 epochs, then PROBATIONARY
        state, _ = step(state, 0, p, report(cf=2.0))
    assert state.slots[0].stage == S.PROBATIONARY
    fossilize = p.codec.slot_actions(0)[0]
    assert state.mask[fossilize]
    after, pending = ep.apply_action(state, fossilize, p)
    assert pending.request.checkpoint and after.slots[0].stage == S.FOSSILIZED
    assert after.checkpoint_slots == after.slots
    assert pending.request.slots[0] == ep.SlotPlan("blend", 1.0, False)


def test_slot_plans_follow_the_stage_and_the_topology() -> None:
    p = params()
    state = start(p)
    germ = p.codec.encode(ep.Action(ep.ActionKind.GERMINATE, 0, "norm"))
    state, outcome = step(state, germ, p, report(germination=Germination(5, True)))
    assert state.slots[0].stage == S.BLENDING
    cnn = ep.slot_plan(state.slots[0], transformer=False)
    text = ep.slot_plan(state.slots[0], transformer=True)
    assert cnn.isolate and not text.isolate and cnn.mode == text.mode == "blend"
    assert 0.0 < cnn.alpha < 1.0 and outcome.settle.slots[0] == cnn


def test_value_added_uses_the_twin_and_the_model_before_a_fork() -> None:
    p = params()
    state = start(p)
    state, outcome = step(state, 0, p, report(val_acc=60.0, twin=TwinReading(None, True)))
    assert state.value_added == 0.0 and state.twin_val_acc == 60.0  # no twin yet: V = 0
    state, outcome = step(state, 0, p, report(val_acc=60.0, twin=TwinReading(55.0, True)))
    assert state.value_added == pytest.approx(5.0)
    assert outcome.reward.terms["value_added"] == pytest.approx(5.0)
    state, outcome = step(state, 0, p, report(val_acc=70.0, twin=TwinReading(None, False)))
    assert state.twin_val_acc is None and state.value_added == pytest.approx(5.0)  # V frozen


def test_no_growth_accuracy() -> None:
    assert ep.no_growth_accuracy(TwinReading(40.0, True), 50.0) == 40.0
    assert ep.no_growth_accuracy(TwinReading(None, True), 50.0) == 50.0
    assert ep.no_growth_accuracy(TwinReading(None, False), 50.0) is None


def test_the_last_epoch_terminates_and_asks_for_test_accuracy() -> None:
    p = params(max_epochs=3)
    state = start(p)
    state, outcome = step(state, 0, p, report())
    assert not outcome.terminated and not outcome.settle.test
    state, outcome = step(state, 0, p, report())
    assert outcome.terminated and outcome.settle.test and state.done and not outcome.diverged


def test_fault_epochs_poison_the_host_before_that_epoch() -> None:
    p = params(fault_epochs=(3,))
    state = start(p)
    state, pending = ep.apply_action(state, 0, p)
    assert not pending.request.poison
    state, _ = ep.after_epoch(state, pending, report(), p)
    _, pending = ep.apply_action(state, 0, p)
    assert pending.request.poison
