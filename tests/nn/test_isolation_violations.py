"""Isolation violations: host gradient arriving through the seed path is counted (spec 6, G2).

Leaks are injected by overriding ``SeedSlot._seed_input`` (the seed fed the attached ``h``) or
``SeedSlot._blend`` (the gate, or the multiply seed, computed on the attached ``h``).
"""

from __future__ import annotations

import copy
import gc
import math
import weakref
from collections.abc import Callable

import pytest
import torch
from torch import nn

from esper_env.config import EsperConfig
from esper_env.nn.blueprints import build_blueprint
from esper_env.nn.data import load_task
from esper_env.nn.slots import SeedGate, SeedSlot, _count_violation
from esper_env.nn.trainer import Trainer

BLENDS = ("add", "multiply", "gate")
ACTIVE = [("incubate", 0.0), ("blend", 0.3), ("blend", 1.0)]
C, S, N = 4, 3, 5
STEPS = 3


class Net(nn.Module):
    """A 1x1 conv "host" layer, the slot, a linear head: ``h`` is a non-leaf like in the model."""

    def __init__(self, slot: SeedSlot) -> None:
        super().__init__()
        self.stem = nn.Conv2d(C, C, 1)
        self.slot = slot
        self.head = nn.Linear(C * S * S, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.slot(self.stem(x)).flatten(1))


def make_net(blend: str, mode: str, alpha: float, blueprint: str = "conv_light",
             isolate: bool = True) -> Net:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        slot = SeedSlot(C, S, blend)
        slot.set_seed(build_blueprint("cnn", blueprint, C), SeedGate(C) if blend == "gate" else None)
        net = Net(slot)
    slot.configure(mode, alpha, isolate)
    return net


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, C, S, S, generator=g), torch.randint(0, 3, (N,), generator=g)


def train(net: Net, steps: int = STEPS) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for i in range(steps):
        x, y = batch(i)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def grads(net: Net, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    for p in net.parameters():
        p.grad = None
    nn.functional.cross_entropy(net(x), y).backward()
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def leak_seed_input(slot: SeedSlot, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slot, "_seed_input", lambda h: h)


def leak_gate(slot: SeedSlot, monkeypatch: pytest.MonkeyPatch) -> None:
    def blend(h: torch.Tensor, hs: torch.Tensor, s: torch.Tensor, alpha: float) -> torch.Tensor:
        assert slot.gate is not None
        return h + alpha * slot.gate(h) * (s - hs)  # the bug: the gate sees the attached h

    monkeypatch.setattr(slot, "_blend", blend)


def leak_multiply(slot: SeedSlot, monkeypatch: pytest.MonkeyPatch) -> None:
    def blend(h: torch.Tensor, hs: torch.Tensor, s: torch.Tensor, alpha: float) -> torch.Tensor:
        assert slot.seed is not None
        return h * (1.0 + alpha * torch.tanh(slot.seed(h)))  # the bug: the seed sees h

    monkeypatch.setattr(slot, "_blend", blend)


class _Recorder(nn.Module):
    def __init__(self, inner: nn.Module | None, seen: list[torch.Tensor]) -> None:
        super().__init__()
        assert inner is not None
        self.inner, self.seen = inner, seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        self.seen.append(out)
        return out


# -- no leak -------------------------------------------------------------------------------------
@pytest.mark.parametrize("blueprint", ["attention", "conv_heavy"])
@pytest.mark.parametrize(("mode", "alpha"), ACTIVE)
@pytest.mark.parametrize("blend", BLENDS)
def test_violations_zero_without_leak(blend: str, mode: str, alpha: float, blueprint: str) -> None:
    net = make_net(blend, mode, alpha, blueprint)
    train(net)
    assert net.slot._violations is not None  # the check did run
    assert net.slot.isolation_violations == 0


# -- injected leaks ------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "alpha"), ACTIVE)
@pytest.mark.parametrize("blend", BLENDS)
def test_violations_counted_for_attached_seed_input(blend: str, mode: str, alpha: float,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net(blend, mode, alpha)
    leak_seed_input(net.slot, monkeypatch)
    train(net)
    assert net.slot.isolation_violations == STEPS


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_violations_counted_for_gate_on_attached_input(alpha: float,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net("gate", "blend", alpha)
    leak_gate(net.slot, monkeypatch)
    train(net)
    assert net.slot.isolation_violations == STEPS


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_violations_counted_for_multiply_seed_on_attached_input(
        alpha: float, monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net("multiply", "blend", alpha)
    leak_multiply(net.slot, monkeypatch)
    train(net)
    assert net.slot.isolation_violations == STEPS


def test_violations_gate_leak_is_a_real_host_gradient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-vacuous: the injected gate leak really changes d loss / d h (host gradient)."""
    x, y = batch(7)
    clean, leaky = make_net("gate", "blend", 1.0), make_net("gate", "blend", 1.0)
    leak_gate(leaky.slot, monkeypatch)
    g_clean, g_leaky = grads(clean, x, y), grads(leaky, x, y)
    assert not torch.allclose(g_clean["stem.weight"], g_leaky["stem.weight"])
    assert (clean.slot.isolation_violations, leaky.slot.isolation_violations) == (0, 1)


def test_violations_counted_when_only_the_seed_path_reaches_h(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss on the seed output alone: no gradient through the slot's output, all via the seed."""
    net = make_net("add", "incubate", 0.0)
    leak_seed_input(net.slot, monkeypatch)
    seen: list[torch.Tensor] = []
    monkeypatch.setattr(net.slot, "seed", _Recorder(net.slot.seed, seen))
    net.train()
    x, _ = batch(0)
    net(x)
    seen[0].square().sum().backward()
    assert net.slot.isolation_violations == 1


# -- where the check does not run ----------------------------------------------------------------
@pytest.mark.parametrize("blend", BLENDS)
def test_violations_not_counted_without_isolation(blend: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net(blend, "blend", 0.5, isolate=False)
    leak_seed_input(net.slot, monkeypatch)  # with isolate=False the input is attached anyway
    train(net)
    assert net.slot.isolation_violations == 0
    assert net.slot._violations is None


@pytest.mark.parametrize("context", ["eval", "no_grad", "inference_mode"])
def test_violations_no_hooks_in_eval_or_without_grad(context: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net("add", "incubate", 0.0)
    leak_seed_input(net.slot, monkeypatch)
    h = net.stem(batch(0)[0])
    if context == "eval":
        net.eval()
        net.slot(h).sum().backward()
    else:
        net.train()
        with torch.no_grad() if context == "no_grad" else torch.inference_mode():
            out = net.slot(h)
        assert not out.requires_grad
    assert net.slot.isolation_violations == 0 and net.slot._violations is None


@pytest.mark.parametrize("mode", ["off", "blend"])
def test_violations_no_hooks_when_slot_inactive(mode: str) -> None:
    net = make_net("add", mode, 0.0)  # off, or blend at alpha 0: the slot returns h itself
    net.train()
    h = net.stem(batch(0)[0])
    assert net.slot(h) is h
    with net.slot.ablated():
        net.slot.configure("blend", 1.0, isolate=True)
        assert net.slot(h) is h
    assert net.slot._violations is None


# -- the hooks change nothing --------------------------------------------------------------------
@pytest.mark.parametrize("leak", [None, leak_seed_input])
@pytest.mark.parametrize(("mode", "alpha"), ACTIVE)
@pytest.mark.parametrize("blend", BLENDS)
def test_violations_detector_leaves_gradients_bit_identical(
        blend: str, mode: str, alpha: float,
        leak: Callable[[SeedSlot, pytest.MonkeyPatch], None] | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks installed (train mode) vs not (eval mode; these seeds have no train-only layers)."""
    x, y = batch(3)
    net = make_net(blend, mode, alpha, "conv_heavy")
    if leak is not None:
        leak(net.slot, monkeypatch)
    net.eval()
    reference = grads(net, x, y)
    assert net.slot._violations is None
    net.train()
    checked = grads(net, x, y)
    assert net.slot._violations is not None
    assert net.slot.isolation_violations == (0 if leak is None else 1)
    assert reference.keys() == checked.keys()
    assert any(k.startswith("slot.") for k in checked)
    for k in reference:
        assert torch.equal(reference[k], checked[k]), k


def test_violations_detector_matches_plain_reimplementation() -> None:
    """d loss / d h and the seed's gradients equal a hand-written isolated add blend."""
    net = make_net("add", "blend", 0.6, "conv_heavy")
    net.train()
    x, y = batch(4)
    h = net.stem(x).detach().requires_grad_(True)
    nn.functional.cross_entropy(net.head(net.slot(h).flatten(1)), y).backward()
    got_h = h.grad
    got_seed = [p.grad.clone() for p in net.slot.seed_parameters()]
    for p in net.parameters():
        p.grad = None
    h2 = h.detach().requires_grad_(True)
    assert net.slot.seed is not None
    hd = h2.detach()
    ref = h2 + 0.6 * (net.slot.seed(hd) - hd)
    nn.functional.cross_entropy(net.head(ref.flatten(1)), y).backward()
    assert torch.equal(got_h, h2.grad)
    for a, b in zip(got_seed, [p.grad for p in net.slot.seed_parameters()], strict=True):
        assert torch.equal(a, b)
    assert net.slot.isolation_violations == 0


@pytest.mark.parametrize("blend", BLENDS)
def test_violations_hooks_keep_no_reference_cycle(blend: str) -> None:
    """The graph (and the activations) die by reference counting, as without the detector."""
    net = make_net(blend, "blend", 0.5)
    net.train()
    x, _ = batch(0)
    refs: list[weakref.ref] = []
    assert net.slot.seed is not None  # its convolution saves its input: alive while the graph is
    net.slot.seed.register_forward_pre_hook(lambda _, args: refs.append(weakref.ref(args[0])))
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for backward in (True, False):
            h = net.stem(x)
            out = net.slot(h)
            refs += [weakref.ref(h), weakref.ref(out)]
            if backward:
                out.square().sum().backward()
            del h, out
        assert all(r() is None for r in refs)
    finally:
        if was_enabled:
            gc.enable()
    assert net.slot.isolation_violations == 0


# -- the counter ---------------------------------------------------------------------------------
def test_violations_property_is_int_zero_before_forward_and_reset_by_set_seed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    slot = SeedSlot(C, S, "add")
    assert slot.isolation_violations == 0 and type(slot.isolation_violations) is int
    net = make_net("add", "blend", 0.5)
    leak_seed_input(net.slot, monkeypatch)
    train(net, 2)
    count = net.slot.isolation_violations
    assert count == 2 and type(count) is int
    counter = net.slot._violations
    assert counter is not None
    assert counter.dtype == torch.long and counter.dim() == 0 and counter.device.type == "cpu"
    net.slot.set_seed(build_blueprint("cnn", "norm", C))
    assert net.slot.isolation_violations == 0


def test_violations_counter_is_not_state_and_survives_deepcopy_and_dtype_move(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net("add", "incubate", 0.0)
    leak_seed_input(net.slot, monkeypatch)
    train(net, 1)
    assert not any("violation" in k for k in net.state_dict())
    twin = copy.deepcopy(net)
    assert twin.slot.isolation_violations == 1
    net.double()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = batch(5)
    opt.zero_grad()
    nn.functional.cross_entropy(net(x.double()), y).backward()
    assert net.slot.isolation_violations == 2
    assert twin.slot.isolation_violations == 1  # the copy counts on its own


def test_count_violation_tolerance() -> None:
    g = torch.tensor([[1.0, -2.0], [3.0, 1000.0]])
    count = torch.zeros((), dtype=torch.long)
    _count_violation(count, g, g.clone())
    _count_violation(count, g + 1e-4, g)  # 1e-4 <= 1e-6 * (1 + 1000): rounding, not a leak
    _count_violation(count, torch.zeros(2, 2), None)
    assert int(count) == 0
    _count_violation(count, g + 0.01, g)
    _count_violation(count, g * 1.01, g)
    _count_violation(count, torch.full((2, 2), 1e-3), None)
    assert int(count) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_violations_counter_follows_the_model_to_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    net = make_net("gate", "blend", 0.5)
    leak_gate(net.slot, monkeypatch)
    train(net, 1)
    net.cuda()
    x, y = batch(0)
    nn.functional.cross_entropy(net(x.cuda()), y.cuda()).backward()
    counter = net.slot._violations
    assert counter is not None and counter.is_cuda
    assert net.slot.isolation_violations == 2


# -- the count reaches the trainer ---------------------------------------------------------------
def make_trainer(blend: str = "add") -> Trainer:
    # batch_size 40 on the 96 synthetic training samples: 3 mini-batches, the last one partial.
    return Trainer(EsperConfig(task="synthetic", n_slots=3, blend=blend, batch_size=40),
                   load_task("synthetic", episode_seed=0, device="cpu"), model_seed=1, data_seed=2)


def n_batches(trainer: Trainer) -> int:
    return math.ceil(trainer.data.train_x.shape[0] / trainer.cfg.optimiser.batch_size)


@pytest.mark.parametrize("leak", [False, True])
def test_violations_reach_trainer_epoch_for_incubating_seed(
        leak: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer()
    trainer.germinate(1, "conv_heavy", module_seed=5)
    trainer.configure(1, "incubate", 0.0, isolate=True)
    if leak:
        leak_seed_input(trainer.model.slots[1], monkeypatch)
    for _ in range(2):
        violations = trainer.train_epoch()[3]
        assert violations == [0, n_batches(trainer) if leak else 0, 0]
    assert n_batches(trainer) == 3


def test_violations_reach_trainer_epoch_for_gate_leak_while_blending(
        monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer("gate")
    trainer.germinate(2, "attention", module_seed=5)
    trainer.configure(2, "blend", 0.5, isolate=True)
    leak_gate(trainer.model.slots[2], monkeypatch)
    assert trainer.train_epoch()[3] == [0, 0, n_batches(trainer)]
    trainer.configure(2, "blend", 0.5, isolate=False)  # FOSSILIZED: isolation lifted
    assert trainer.train_epoch()[3] == [0, 0, 0]
