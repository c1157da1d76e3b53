"""Trainer: learning, gradient ratios, counterfactuals, germinate/cull, snapshots, determinism."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch
from torch import nn

import esper_env.nn.trainer as trainer_module
from esper_env.config import EsperConfig
from esper_env.nn.blueprints import blueprint_param_count
from esper_env.nn.data import load_task
from esper_env.nn.trainer import Trainer


def make_trainer(n_slots: int = 3, model_seed: int = 1, data_seed: int = 2, twin: bool = False,
                 **cfg: object) -> Trainer:
    return Trainer(EsperConfig(task="synthetic", n_slots=n_slots, **cfg),
                   load_task("synthetic", episode_seed=0, device="cpu"),
                   model_seed=model_seed, data_seed=data_seed, twin=twin)


def host_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.host.state_dict().items()}


def any_differs(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, q) for p, q in zip(xs, ys, strict=True))


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_trainer_train_epoch_lowers_loss() -> None:
    trainer = make_trainer()
    losses = []
    for _ in range(10):
        loss, acc, ratios, violations = trainer.train_epoch()
        assert math.isfinite(loss) and 0.0 <= acc <= 100.0
        assert ratios == [0.0, 0.0, 0.0] and violations == [0, 0, 0]
        losses.append(loss)
    assert losses[-1] < losses[0] - 0.05, losses
    assert sum(b < a for a, b in pairwise(losses)) >= 7, losses


def test_trainer_gradient_ratio_positive_for_active_seed_zero_for_empty_slot() -> None:
    trainer = make_trainer()
    trainer.germinate(1, "conv_light", module_seed=5)
    trainer.configure(1, "incubate", 0.0, isolate=True)
    _, _, ratios, violations = trainer.train_epoch()
    assert ratios[1] > 0.0 and math.isfinite(ratios[1])
    assert ratios[0] == 0.0 and ratios[2] == 0.0
    assert violations == [0, 0, 0]


def test_trainer_gradient_ratio_zero_for_dormant_seed() -> None:
    trainer = make_trainer()
    trainer.germinate(2, "conv_light", module_seed=5)  # mode stays "off"
    _, _, ratios, _ = trainer.train_epoch()
    assert ratios == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("slot", [0, 1, 2])
def test_trainer_validate_counterfactual_equals_two_pass(slot: int) -> None:
    trainer = make_trainer(host_lr=0.1, seed_lr=0.1)
    trainer.germinate(slot, "conv_heavy", module_seed=10 + slot)
    trainer.configure(slot, "blend", 0.6, isolate=True)
    for _ in range(3):
        trainer.train_epoch()
    _, acc, contributions = trainer.validate(counterfactual_slots=[slot])
    _, acc_real = trainer.evaluate("val")
    _, acc_ablated = trainer.evaluate("val", ablate_slot=slot)
    assert acc == acc_real
    assert set(contributions) == {slot}
    assert abs(contributions[slot] - (acc_real - acc_ablated)) <= 1e-9


def test_trainer_validate_counterfactuals_of_all_slots_equal_two_pass() -> None:
    trainer = make_trainer(host_lr=0.1, seed_lr=0.1)  # a host that learns within 3 epochs
    for k in range(3):
        trainer.germinate(k, "conv_heavy", module_seed=10 + k)
        trainer.configure(k, "blend", 0.6, isolate=True)
    for _ in range(3):
        trainer.train_epoch()
    _, acc, contributions = trainer.validate(counterfactual_slots=[0, 1, 2])
    assert set(contributions) == {0, 1, 2}
    for k in range(3):
        expected = trainer.evaluate("val")[1] - trainer.evaluate("val", ablate_slot=k)[1]
        assert abs(contributions[k] - expected) <= 1e-9, k
    # Non-vacuous: at least one seed changes validation accuracy.
    assert any(c != 0.0 for c in contributions.values()), contributions


def test_trainer_validate_leaves_slot_state_and_weights_unchanged() -> None:
    trainer = make_trainer()
    trainer.germinate(0, "conv_light", module_seed=3)
    trainer.configure(0, "blend", 0.6, isolate=True)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.validate(counterfactual_slots=[0])
    trainer.evaluate("val", ablate_slot=0)
    slot = trainer.model.slots[0]
    assert (slot.mode, slot.alpha, slot.isolate, slot.is_active) == ("blend", 0.6, True, True)
    assert trainer.model.training
    after = trainer.model.state_dict()
    for k, v in before.items():  # eval mode: BatchNorm running stats untouched
        assert torch.equal(after[k], v), k


@pytest.mark.parametrize("was_training", [True, False])
def test_trainer_validate_restores_training_mode(was_training: bool) -> None:
    trainer = make_trainer()
    trainer.model.train(was_training)
    trainer.validate()
    assert trainer.model.training is was_training
    assert all(m.training is was_training for m in trainer.model.modules())


@pytest.mark.parametrize("was_training", [True, False])
def test_trainer_validate_restores_state_when_forward_ablations_raises(
        monkeypatch: pytest.MonkeyPatch, was_training: bool) -> None:
    trainer = make_trainer()
    trainer.germinate(1, "conv_light", module_seed=3)
    trainer.configure(1, "blend", 0.6, isolate=True)
    trainer.model.train(was_training)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("forward exploded")

    monkeypatch.setattr(trainer.model, "forward_ablations", boom)
    with pytest.raises(RuntimeError, match="forward exploded"):
        trainer.validate(counterfactual_slots=[1])
    assert trainer.model.training is was_training
    with pytest.raises(RuntimeError, match="forward exploded"):
        trainer.evaluate("val", ablate_slot=1)
    assert trainer.model.training is was_training
    assert trainer.model.slots[1].is_active


def test_trainer_evaluate_restores_ablation_when_seed_forward_raises(
        monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer()
    for k in (0, 2):
        trainer.germinate(k, "conv_light", module_seed=3 + k)
        trainer.configure(k, "blend", 0.6, isolate=True)
    reference = trainer.evaluate("val", ablate_slot=2)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("seed exploded")

    monkeypatch.setattr(trainer.model.slots[0].seed, "forward", boom)
    with pytest.raises(RuntimeError, match="seed exploded"):
        trainer.evaluate("val", ablate_slot=2)
    assert trainer.model.training
    assert trainer.model.slots[2].is_active  # the ablation was undone
    monkeypatch.undo()
    assert trainer.evaluate("val", ablate_slot=2) == reference
    assert trainer.evaluate("val") != reference


def test_trainer_validate_rejects_unknown_split() -> None:
    trainer = make_trainer()
    with pytest.raises(ValueError, match="split='dev'"):
        trainer.validate(split="dev")


def test_trainer_validate_splits_differ() -> None:
    trainer = make_trainer()
    trainer.train_epoch()
    results = {s: trainer.validate(split=s)[:2] for s in ("train", "val", "test")}
    assert len({r[0] for r in results.values()}) == 3


@pytest.mark.parametrize("blend", ["add", "gate"])
@pytest.mark.parametrize("blueprint", ["norm", "attention", "depthwise", "conv_light",
                                       "conv_heavy"])
def test_trainer_germinate_returns_true_count_and_creates_optimizer(blueprint: str,
                                                                    blend: str) -> None:
    trainer = make_trainer(blend=blend)
    k = 2
    slot = trainer.model.slots[k]
    assert trainer.seed_opts[k] is None
    n, ok = trainer.germinate(k, blueprint, module_seed=7)
    assert ok
    real = sum(p.numel() for p in slot.seed_parameters())
    assert n == real
    gate = sum(p.numel() for p in slot.gate.parameters()) if blend == "gate" else 0
    assert n == blueprint_param_count("cnn", blueprint, slot.channels) + gate
    assert slot.mode == "off"
    opt = trainer.seed_opts[k]
    assert opt is not None
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert opt_ids == {id(p) for p in slot.seed_parameters()}
    assert trainer.seed_opts[0] is None and trainer.seed_opts[1] is None

    trainer.cull(k)
    assert trainer.seed_opts[k] is None
    assert slot.seed is None and slot.gate is None and slot.seed_parameters() == []


def test_trainer_germinate_same_module_seed_same_weights() -> None:
    a, b = make_trainer(), make_trainer()
    a.germinate(1, "depthwise", module_seed=4)
    b.germinate(1, "depthwise", module_seed=4)
    assert not any_differs(a.model.slots[1].seed_parameters(), b.model.slots[1].seed_parameters())
    b.germinate(1, "depthwise", module_seed=5)
    assert any_differs(a.model.slots[1].seed_parameters(), b.model.slots[1].seed_parameters())


def test_trainer_germinate_failed_shape_probe_leaves_slot_empty(
        monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer()
    monkeypatch.setattr(trainer_module, "build_blueprint",
                        lambda topology, name, channels: nn.Conv2d(channels, channels + 1, 1))
    assert trainer.germinate(0, "conv_light", module_seed=1) == (0, False)
    assert trainer.model.slots[0].seed is None
    assert trainer.seed_opts[0] is None


def _opt_state(opt: torch.optim.Optimizer) -> dict:
    return {k: {n: v.clone() for n, v in st.items()} for k, st in opt.state_dict()["state"].items()}


def test_trainer_rollback_restores_host_and_optimiser_exactly() -> None:
    trainer = make_trainer()
    trainer.train_epoch()
    good, good_opt = host_state(trainer), _opt_state(trainer.host_opt)
    assert good_opt  # momentum buffers exist after an epoch
    trainer.checkpoint()
    trainer.train_epoch()
    trainer.poison_host()
    assert not trainer.parameters_finite()
    trainer.restore_checkpoint()
    assert trainer.parameters_finite()
    assert_states_equal(host_state(trainer), good)
    restored = _opt_state(trainer.host_opt)
    assert restored.keys() == good_opt.keys()
    assert all(torch.equal(restored[k][n], good_opt[k][n]) for k in good_opt for n in good_opt[k])
    # the restored optimiser drives the restored parameters, and only the host's
    assert [id(p) for g in trainer.host_opt.param_groups for p in g["params"]] == \
        [id(p) for p in trainer.model.host_parameters()]
    loss, *_ = trainer.train_epoch()  # and it trains again
    assert math.isfinite(loss)


def test_trainer_snapshot_is_a_copy() -> None:
    trainer = make_trainer()
    trainer.checkpoint()
    snap = trainer._checkpoint["model"].host.state_dict()
    saved = {k: v.clone() for k, v in snap.items()}
    trainer.train_epoch()
    for k, v in snap.items():
        assert not v.requires_grad
        assert torch.equal(v, saved[k]), k  # training did not write through into the snapshot
    assert trainer._checkpoint["model"] is not trainer.model


def test_trainer_rollback_without_snapshot_raises() -> None:
    with pytest.raises(RuntimeError, match="without a checkpoint"):
        make_trainer().restore_checkpoint()


def test_trainer_snapshot_holds_a_live_seed_with_its_optimiser_and_alpha() -> None:
    """The good state includes the blended seed the host had adapted to (issue: rollback)."""
    trainer = make_trainer()
    trainer.germinate(2, "conv_heavy", module_seed=9)
    trainer.configure(2, "blend", 0.6, isolate=True)
    trainer.train_epoch()
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    good_seed_opt = _opt_state(trainer.seed_opts[2])
    good_val = trainer.validate([2])
    trainer.checkpoint()
    assert trainer.checkpoint_slots == (2,)

    trainer.train_epoch()
    trainer.configure(2, "blend", 1.0, isolate=True)
    trainer.cull(2)
    trainer.poison_host()
    trainer.restore_checkpoint()
    assert_states_equal(trainer.model.state_dict(), good)
    slot = trainer.model.slots[2]
    assert (slot.mode, slot.alpha, slot.isolate) == ("blend", 0.6, True)
    restored = _opt_state(trainer.seed_opts[2])
    assert all(torch.equal(restored[k][n], good_seed_opt[k][n])
               for k in good_seed_opt for n in good_seed_opt[k])
    assert {id(p) for g in trainer.seed_opts[2].param_groups for p in g["params"]} == \
        {id(p) for p in slot.seed_parameters()}
    assert trainer.validate([2]) == good_val
    trainer.restore_checkpoint()  # a snapshot can be restored again: the first rollback copied it
    assert_states_equal(trainer.model.state_dict(), good)


def test_trainer_snapshot_rollback_restores_fossil_seed() -> None:
    trainer = make_trainer(blend="gate")
    trainer.germinate(1, "conv_light", module_seed=9)
    trainer.configure(1, "blend", 1.0, isolate=False)
    trainer.train_epoch()
    fossil = [p.detach().clone() for p in trainer.model.slots[1].seed_parameters()]
    trainer.checkpoint()
    assert trainer.checkpoint_slots == (1,)
    trainer.train_epoch()
    with torch.no_grad():
        for p in trainer.model.slots[1].seed_parameters():
            p.fill_(float("nan"))
    trainer.restore_checkpoint()
    assert trainer.parameters_finite()
    for a, b in zip(fossil, trainer.model.slots[1].seed_parameters(), strict=True):
        assert torch.equal(a, b)
    opt = trainer.seed_opts[1]
    assert {id(p) for g in opt.param_groups for p in g["params"]} == \
        {id(p) for p in trainer.model.slots[1].seed_parameters()}


def test_trainer_germinate_a_module_whose_forward_raises_fails_the_shape_probe(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from esper_env.nn import trainer as trainer_module

    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("broken seed")

    monkeypatch.setattr(trainer_module, "build_blueprint", lambda *a: Broken())
    trainer = make_trainer()
    assert trainer.germinate(0, "conv_light", module_seed=1) == (0, False)
    assert trainer.model.slots[0].seed is None and trainer.seed_opts[0] is None


def test_trainer_same_seeds_same_weights_and_epochs() -> None:
    a, b = make_trainer(), make_trainer()
    assert_states_equal(a.model.state_dict(), b.model.state_dict())
    for t in (a, b):
        t.germinate(2, "conv_light", module_seed=4)
        t.configure(2, "incubate", 0.0, isolate=True)
    for _ in range(2):
        assert a.train_epoch() == b.train_epoch()
    assert a.validate([2]) == b.validate([2])
    assert_states_equal(a.model.state_dict(), b.model.state_dict())


def test_trainer_seeds_change_weights_and_data_order() -> None:
    base = make_trainer()
    other_model = make_trainer(model_seed=11)
    assert any_differs(base.model.host_parameters(), other_model.model.host_parameters())
    other_data = make_trainer(data_seed=12)
    assert not any_differs(base.model.host_parameters(), other_data.model.host_parameters())
    assert base.train_epoch() != other_data.train_epoch()


def test_trainer_leaves_global_rng_untouched(rng_guard) -> None:
    trainer = make_trainer()
    trainer.germinate(0, "conv_heavy", module_seed=3)
    trainer.configure(0, "incubate", 0.0, isolate=True)
    trainer.train_epoch()
    trainer.validate([0])
    trainer.checkpoint()
    trainer.restore_checkpoint()


def test_trainer_does_not_reseed_accelerator_generators(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spec 13: the env never touches a global torch RNG, on CUDA/MPS/XPU machines either.

    ``fork_rng(devices=[])`` only saves the CPU state, so seeding inside it must not go through
    ``torch.manual_seed`` (which also reseeds every accelerator's global generator). Recording
    the accelerator seeding calls makes this checkable on a CPU-only machine.
    """
    calls: list[tuple[str, int]] = []
    for module, name in ((torch.cuda, "manual_seed_all"), (torch.cuda, "manual_seed"),
                         (torch.mps, "manual_seed"), (torch.xpu, "manual_seed_all")):
        monkeypatch.setattr(module, name,
                            lambda seed, _n=f"{module.__name__}.{name}": calls.append((_n, seed)))
    trainer = make_trainer(blend="gate")
    trainer.germinate(0, "conv_light", module_seed=3)
    assert calls == []


def test_build_seeded_is_safe_from_several_threads(rng_guard) -> None:
    """Envs stepped in threads build modules at the same time: each build must see only its own
    seed (not another thread's), and the global generator must come back as it was.

    The factory draws, yields the GIL, and draws again, so unlocked builds would interleave.
    """  # noqa: D205
    import threading
    import time

    def factory() -> nn.Module:
        m = nn.Linear(4, 4)
        time.sleep(0.01)  # another thread's build would run here, on the same global generator
        nn.init.uniform_(m.bias)
        return m

    expected = {s: trainer_module.build_seeded(s, factory).state_dict() for s in range(6)}
    start, built = threading.Barrier(6), {}

    def build(s: int) -> None:
        start.wait()
        built[s] = trainer_module.build_seeded(s, factory).state_dict()

    threads = [threading.Thread(target=build, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in range(6):
        assert all(torch.equal(built[s][k], expected[s][k]) for k in expected[s]), s


def test_trainer_rejects_more_slots_than_injection_points() -> None:
    """Spec 4: n_slots is at most the host's injection points (3 here).

    Built directly (without the env's own check), n_slots=4 yields points (-1, 0, 1, 2): slot 0
    sits at index -1, which ``forward`` never reaches, so its seed would be silently dead.
    """
    with pytest.raises((ValueError, IndexError)):
        make_trainer(n_slots=4)


# -- G2's gradient ratio over the whole epoch (issue 5) ---------------------------------------------

def _record_grads(trainer: Trainer, slot: int) -> list[tuple[float, float]]:
    """Record (host |g|^2, seed |g|^2) of every mini-batch, read when the host optimiser steps."""
    seen: list[tuple[float, float]] = []
    host_step = trainer.host_opt.step

    def step(*args, **kwargs):
        sq = lambda ps: sum(float(p.grad.pow(2).sum()) for p in ps if p.grad is not None)  # noqa: E731
        seen.append((sq(trainer.model.host_parameters()),
                     sq(trainer.model.slots[slot].seed_parameters())))
        return host_step(*args, **kwargs)

    trainer.host_opt.step = step
    return seen


@pytest.mark.parametrize("blueprint", ["attention", "conv_light"])
def test_trainer_gradient_ratio_uses_every_batch_of_the_epoch(blueprint: str) -> None:
    trainer = make_trainer(batch_size=16)
    trainer.germinate(1, blueprint, module_seed=5)
    trainer.configure(1, "incubate", 0.0, isolate=True)
    seen = _record_grads(trainer, 1)
    _, _, ratios, _ = trainer.train_epoch()
    assert len(seen) > 3
    n_host = sum(p.numel() for p in trainer.model.host_parameters())
    n_seed = sum(p.numel() for p in trainer.model.slots[1].seed_parameters())
    host = math.sqrt(sum(h for h, _ in seen))
    seed = math.sqrt(sum(s for _, s in seen))
    expected = (seed / math.sqrt(n_seed)) / (host / math.sqrt(n_host))
    assert ratios[1] == pytest.approx(expected, rel=1e-4)
    last = (math.sqrt(seen[-1][1]) / math.sqrt(n_seed)) / (math.sqrt(seen[-1][0]) /
                                                           math.sqrt(n_host))
    assert abs(ratios[1] - last) > 1e-3 * expected  # not the last mini-batch's ratio


# -- the seedless twin -------------------------------------------------------------------------------

def test_trainer_twin_is_forked_only_when_a_seed_blends() -> None:
    trainer = make_trainer(twin=True)
    trainer.train_epoch()
    assert trainer.twin is None and trainer.twin_validate() is None
    trainer.germinate(1, "conv_light", module_seed=5)
    trainer.configure(1, "incubate", 0.0, isolate=True)
    trainer.train_epoch()
    assert trainer.twin is None  # the incubator leaves the model's function the host's
    trainer.configure(1, "blend", 0.0, isolate=True)
    assert not trainer.blends_a_seed
    trainer.configure(1, "blend", 0.2, isolate=True)
    assert trainer.blends_a_seed
    trainer.train_epoch()
    assert trainer.twin is not None
    assert make_trainer().twin is None and not make_trainer().twin_enabled


@pytest.mark.parametrize("incubate_epochs", [0, 2])
def test_trainer_twin_follows_the_seedless_host_bit_for_bit(incubate_epochs: int) -> None:
    grown, alone = make_trainer(twin=True), make_trainer()
    for t in (grown, alone):
        t.train_epoch()
    grown.germinate(2, "conv_heavy", module_seed=3)
    grown.configure(2, "incubate", 0.0, isolate=True)
    for _ in range(incubate_epochs):
        grown.train_epoch()
        alone.train_epoch()
    assert_states_equal(host_state(grown), host_state(alone))  # the incubator is invisible
    grown.configure(2, "blend", 0.5, isolate=True)
    for _ in range(3):
        grown.train_epoch()
        alone.train_epoch()
        assert grown.twin_validate() == alone.validate()[:2]
        assert grown.twin_validate("test") == alone.validate(split="test")[:2]
    twin = {k: v for k, v in grown.twin.state_dict().items()}
    assert_states_equal(twin, host_state(alone))
    assert any_differs(list(grown.model.host_parameters()), list(grown.twin.parameters()))


def test_trainer_twin_has_its_own_momentum_buffers() -> None:
    trainer = make_trainer(twin=True)
    trainer.train_epoch()
    trainer.germinate(0, "norm", module_seed=1)
    trainer.configure(0, "blend", 1.0, isolate=True)
    trainer.train_epoch()
    host_bufs = {id(s["momentum_buffer"]) for s in trainer.host_opt.state.values()}
    twin_bufs = {id(s["momentum_buffer"]) for s in trainer.twin_opt.state.values()}
    assert host_bufs and twin_bufs and host_bufs.isdisjoint(twin_bufs)
    twin_ids = {id(p) for g in trainer.twin_opt.param_groups for p in g["params"]}
    assert twin_ids == {id(p) for p in trainer.twin.parameters()}


def test_trainer_drop_twin_stops_it_for_the_episode() -> None:
    trainer = make_trainer(twin=True)
    trainer.germinate(0, "norm", module_seed=1)
    trainer.configure(0, "blend", 1.0, isolate=True)
    trainer.train_epoch()
    trainer.drop_twin()
    trainer.train_epoch()
    assert trainer.twin is None and trainer.twin_validate() is None and not trainer.twin_enabled


# -- gradient clipping ------------------------------------------------------------------------------

def _param_change(trainer: Trainer) -> float:
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_epoch()
    return max(float((p.detach() - b).abs().max()) for p, b in zip(trainer.model.parameters(), before,
                                                          strict=True))


def test_grad_clip_bounds_every_update() -> None:
    free = make_trainer(n_slots=1, host_weight_decay=0.0)
    clipped = make_trainer(n_slots=1, host_weight_decay=0.0, grad_clip=1e-9)
    assert free.grad_clip is None and clipped.grad_clip == 1e-9
    assert _param_change(free) > 1e-3
    assert _param_change(clipped) < 1e-6  # lr 0.01 x a gradient norm of at most 1e-9 per step


def test_grad_clip_clips_each_seed_and_leaves_the_ratio_raw() -> None:
    trainer = make_trainer(n_slots=1, host_weight_decay=0.0, grad_clip=1e-9)
    trainer.germinate(0, "conv_heavy", module_seed=3)
    trainer.configure(0, "incubate", 0.0, isolate=True)
    seed = trainer.model.slots[0].seed
    before = [p.detach().clone() for p in seed.parameters()]
    _, _, ratios, _ = trainer.train_epoch()
    assert ratios[0] > 0.05  # G2 measures the gradients before clipping
    assert max(float((p.detach() - b).abs().max()) for p, b in zip(seed.parameters(), before,
                                                          strict=True)) < 1e-6


def test_grad_clip_defaults_by_task_and_inf_turns_it_off() -> None:
    text = load_task("tinytext", episode_seed=0, device="cpu", block_size=8, train_subset=4)
    small = dict(block_size=8, n_embd=16, n_head=2)
    assert Trainer(EsperConfig(task="tinytext", **small), text, 1, 2).grad_clip == 1.0  # nanoGPT's
    off = EsperConfig(task="tinytext", grad_clip=float("inf"), **small)
    assert Trainer(off, text, 1, 2).grad_clip is None
    assert make_trainer().grad_clip is None  # CNN tasks: no clipping unless asked


def test_seed_lr_defaults_by_task_and_the_config_overrides_it() -> None:
    trainer = make_trainer(n_slots=1)
    assert trainer.seed_lr == 0.05  # CNN tasks: calibrated on digits
    trainer.germinate(0, "norm", module_seed=3)
    assert trainer.seed_opts[0].param_groups[0]["lr"] == 0.05
    assert make_trainer(n_slots=1, seed_lr=0.2).seed_lr == 0.2
    text = load_task("tinytext", episode_seed=0, device="cpu", block_size=8, train_subset=4)
    small = dict(block_size=8, n_embd=16, n_head=2)
    assert Trainer(EsperConfig(task="tinytext", **small), text, 1, 2).seed_lr == 0.01  # the anchor's


# -- the optimiser ----------------------------------------------------------------------------------

def _sgd_run(opt_factory, steps: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3, generator=gen)), nn.Parameter(torch.randn(3, generator=gen))]
    opt = opt_factory(params)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    return [p.detach().clone() for p in params]


def test_sgd_is_fused_and_matches_the_unfused_update() -> None:
    kw = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}
    probe = trainer_module.sgd([nn.Parameter(torch.zeros(2))], **kw)
    assert probe.defaults["fused"] is True  # this torch fuses SGD on the CPU
    fused = _sgd_run(lambda ps: trainer_module.sgd(ps, **kw))
    plain = _sgd_run(lambda ps: torch.optim.SGD(ps, **kw))
    moved = _sgd_run(lambda ps: torch.optim.SGD(ps, lr=0.1))
    for f, p, m in zip(fused, plain, moved, strict=True):
        torch.testing.assert_close(f, p, rtol=1e-6, atol=1e-6)
        assert not torch.allclose(f, m, atol=1e-3)  # momentum and decay did something


def test_sgd_falls_back_to_unfused_where_torch_cannot_fuse(monkeypatch: pytest.MonkeyPatch) -> None:
    real = torch.optim.SGD

    def no_fusion(params, **kw):
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be on a supported device")
        return real(params, **kw)

    monkeypatch.setattr(trainer_module.torch.optim, "SGD", no_fusion)
    opt = trainer_module.sgd(iter([nn.Parameter(torch.zeros(2))]), lr=0.1, momentum=0.9)
    assert not opt.defaults.get("fused") and len(opt.param_groups[0]["params"]) == 1


def test_trainer_optimisers_are_fused() -> None:
    trainer = make_trainer(twin=True)
    trainer.germinate(0, "norm", module_seed=1)
    trainer.configure(0, "blend", 1.0, isolate=True)
    trainer.train_epoch()
    for opt in (trainer.host_opt, trainer.seed_opts[0], trainer.twin_opt):
        assert opt.defaults["fused"] is True
