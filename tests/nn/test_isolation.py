"""Gradient isolation end to end: an incubating seed never changes the host's weights (spec 6)."""

from __future__ import annotations

import math

import pytest
import torch

from esper_env.config import EsperConfig
from esper_env.nn.data import load_task
from esper_env.nn.trainer import Trainer


def make_trainer(blend: str = "add") -> Trainer:
    return Trainer(EsperConfig(task="synthetic", n_slots=3, blend=blend),
                   load_task("synthetic", episode_seed=0, device="cpu"), model_seed=1, data_seed=2)


def host_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.host.state_dict().items()}


def any_differs(xs: list[torch.Tensor], ys: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, q) for p, q in zip(xs, ys, strict=True))


def seed_state(trainer: Trainer, slot: int) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.slots[slot].seed_parameters()]


@pytest.mark.parametrize("blend", ["add", "multiply", "gate"])
@pytest.mark.parametrize("slot", [0, 2])
def test_isolation_incubating_seed_leaves_host_weights_identical(blend: str, slot: int) -> None:
    seeded, bare = make_trainer(blend), make_trainer(blend)
    seeded.germinate(slot, "conv_heavy", module_seed=5)
    seeded.configure(slot, "incubate", 0.0, isolate=True)
    initial_seed = seed_state(seeded, slot)
    for _ in range(2):
        loss_s, acc_s, ratios, violations = seeded.train_epoch()
        loss_b, acc_b, _, _ = bare.train_epoch()
        assert (loss_s, acc_s) == (loss_b, acc_b)  # the incubator's forward equals the host's
        assert violations == [0, 0, 0]
        assert ratios[slot] > 0.0
    a, b = host_state(seeded), host_state(bare)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Non-vacuous: the host did train, and so did the seed.
    assert any_differs(bare.model.host_parameters(), make_trainer(blend).model.host_parameters())
    assert any_differs(initial_seed, seed_state(seeded, slot))


def test_isolation_off_lets_seed_path_change_host() -> None:
    """Control: the same comparison detects a leak when isolation is switched off."""
    seeded, bare = make_trainer(), make_trainer()
    seeded.germinate(1, "conv_heavy", module_seed=5)
    seeded.configure(1, "incubate", 0.0, isolate=False)
    seeded.train_epoch()
    bare.train_epoch()
    assert any_differs(seeded.model.host_parameters(), bare.model.host_parameters())


@pytest.mark.parametrize("blend", ["add", "gate"])
def test_isolation_leak_changes_host_weights_and_is_counted(
        blend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A seed fed the attached activation while isolated: the host drifts and G2 sees it."""
    seeded, bare = make_trainer(blend), make_trainer(blend)
    seeded.germinate(1, "conv_heavy", module_seed=5)
    seeded.configure(1, "incubate", 0.0, isolate=True)
    monkeypatch.setattr(seeded.model.slots[1], "_seed_input", lambda h: h)
    _, _, _, violations = seeded.train_epoch()
    bare.train_epoch()
    assert violations[0] == violations[2] == 0 and violations[1] > 0
    assert any_differs(seeded.model.host_parameters(), bare.model.host_parameters())


def test_isolation_seed_only_training_keeps_host_fixed() -> None:
    trainer = make_trainer()
    trainer.germinate(2, "conv_light", module_seed=5)
    trainer.configure(2, "incubate", 0.0, isolate=True)
    model, data = trainer.model, trainer.data
    host_before = [p.detach().clone() for p in model.host_parameters()]
    seed_before = seed_state(trainer, 2)
    opt = trainer.seed_opts[2]
    assert opt is not None
    model.train()
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        for p in model.host_parameters():
            p.grad = None
        loss = torch.nn.functional.cross_entropy(model(data.train_x), data.train_y)
        loss.backward()
        opt.step()
    for p, q in zip(host_before, model.host_parameters(), strict=True):
        assert torch.equal(p, q)
    assert any_differs(seed_before, seed_state(trainer, 2))
    assert model.slots[2].isolation_violations == 0


class _Exploding(torch.nn.Module):
    """A seed whose output is +inf, -inf and NaN in places (a diverged seed)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = h * self.w
        bad = torch.zeros_like(h)
        flat = bad.view(-1)
        flat[0::3], flat[1::3], flat[2::3] = math.inf, -math.inf, math.nan
        return out + bad


@pytest.mark.parametrize("blend", ["add", "multiply", "gate"])
def test_incubator_output_equals_host_even_for_a_non_finite_seed(blend: str) -> None:
    """TRAINING stage: the slot's output is h exactly (never NaN), whatever the seed outputs."""
    from esper_env.nn.slots import SeedGate, SeedSlot

    torch.manual_seed(0)
    slot = SeedSlot(4, 3, blend)
    slot.set_seed(_Exploding(), SeedGate(4) if blend == "gate" else None)
    slot.configure("incubate", 0.0, True)
    slot.train()
    h = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = slot(h)
    assert torch.equal(out, h) and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.equal(h.grad, torch.ones_like(h))  # the host's gradient is the identity's
    slot.configure("blend", 0.5, True)  # blended in, a non-finite seed does reach the output
    assert not torch.isfinite(slot(h)).all()
