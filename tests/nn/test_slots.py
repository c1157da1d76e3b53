"""SeedSlot: identity at alpha 0, the incubator, blend values, ablation and isolation (spec 6)."""

from __future__ import annotations

import pytest
import torch

from esper_env.nn.blueprints import build_blueprint
from esper_env.nn.slots import SeedGate, SeedSlot

BLENDS = ("add", "multiply", "gate")
C, S = 4, 3


def make_slot(blend: str, blueprint: str = "conv_light", seed: int = 0) -> SeedSlot:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        slot = SeedSlot(C, S, blend)
        gate = SeedGate(C) if blend == "gate" else None
        slot.set_seed(build_blueprint("cnn", blueprint, C), gate)
    return slot


def activation(seed: int = 1, grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, C, S, S, generator=g).requires_grad_(grad)


def upstream(seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, C, S, S, generator=g)


def grad_wrt_input(slot: SeedSlot, h: torch.Tensor) -> torch.Tensor:
    h = h.detach().clone().requires_grad_(True)
    (slot(h) * upstream()).sum().backward()
    assert h.grad is not None
    return h.grad


@pytest.mark.parametrize("blend", BLENDS)
def test_slot_blend_alpha_zero_is_exact_identity(blend: str) -> None:
    slot = make_slot(blend)
    slot.configure("blend", 0.0, isolate=True)
    h = activation()
    assert torch.equal(slot(h), h)
    slot.configure("blend", 0.0, isolate=False)
    assert torch.equal(slot(h), h)
    # Control: the same slot at a positive alpha does change the activation.
    slot.configure("blend", 0.5, isolate=True)
    assert not torch.allclose(slot(h), h)


@pytest.mark.parametrize("blend", BLENDS)
def test_slot_off_mode_is_identity(blend: str) -> None:
    slot = make_slot(blend)
    slot.configure("off", 1.0, isolate=True)
    h = activation()
    assert slot(h) is h
    assert not slot.is_active


def test_slot_without_seed_is_identity() -> None:
    slot = SeedSlot(C, S, "add")
    slot.configure("blend", 1.0, isolate=True)
    h = activation()
    assert torch.equal(slot(h), h)
    assert slot.seed_parameters() == []


@pytest.mark.parametrize("blend", BLENDS)
def test_slot_incubate_output_equals_input_and_seed_gets_gradient(blend: str) -> None:
    slot = make_slot(blend)
    slot.configure("incubate", 0.0, isolate=True)
    slot.train()
    h = activation(grad=True)
    out = slot(h)
    assert torch.equal(out, h)
    (out * upstream()).sum().backward()
    params = slot.seed_parameters()
    assert params
    for p in params:
        assert p.grad is not None
    total = sum(p.grad.abs().sum().item() for p in params)
    assert total > 0.0
    assert slot.isolation_violations == 0


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.6, 1.0])
def test_slot_add_equals_lerp(alpha: float) -> None:
    slot = make_slot("add", "conv_heavy")
    slot.configure("blend", alpha, isolate=True)
    h = activation()
    with torch.no_grad():
        expected = (1 - alpha) * h + alpha * slot.seed(h)
        out = slot(h)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_slot_multiply_value(alpha: float) -> None:
    slot = make_slot("multiply", "attention")
    slot.configure("blend", alpha, isolate=True)
    h = activation()
    with torch.no_grad():
        expected = h * (1 + alpha * torch.tanh(slot.seed(h)))
        torch.testing.assert_close(slot(h), expected, atol=1e-6, rtol=0)


def test_slot_configure_clamps_alpha_and_rejects_bad_mode() -> None:
    slot = make_slot("add")
    slot.configure("blend", 1.7, isolate=True)
    assert slot.alpha == 1.0
    slot.configure("blend", -0.2, isolate=True)
    assert slot.alpha == 0.0
    with pytest.raises(ValueError, match="mode='fossil'"):
        slot.configure("fossil", 0.5, isolate=True)
    with pytest.raises(ValueError, match="blend='mix'"):
        SeedSlot(C, S, "mix")


@pytest.mark.parametrize("mode", ["blend", "incubate"])
def test_slot_ablated_is_identity_and_restores(mode: str) -> None:
    slot = make_slot("add", "conv_heavy")
    slot.configure(mode, 0.8, isolate=True)
    h = activation()
    before = slot(h).detach()
    with slot.ablated():
        assert not slot.is_active
        assert torch.equal(slot(h), h)
        with slot.ablated():  # nested: the inner exit must not re-enable the slot
            assert torch.equal(slot(h), h)
        assert not slot.is_active
        assert torch.equal(slot(h), h)
    assert slot.is_active
    assert torch.equal(slot(h), before)
    assert (slot.mode, slot.alpha, slot.isolate) == (mode, 0.8, True)


def test_slot_ablated_restores_on_exception() -> None:
    slot = make_slot("add", "conv_heavy")
    slot.configure("blend", 0.8, isolate=True)
    h = activation()
    before = slot(h).detach()
    with pytest.raises(RuntimeError, match="boom"), slot.ablated():
        assert torch.equal(slot(h), h)
        raise RuntimeError("boom")
    assert slot.is_active
    assert torch.equal(slot(h), before)
    assert not torch.equal(before, h)


@pytest.mark.parametrize("blend", BLENDS)
def test_slot_incubate_isolated_input_gradient_equals_identity_path(blend: str) -> None:
    h = activation()
    bare = SeedSlot(C, S, blend)  # no seed: the identity path
    g_identity = grad_wrt_input(bare, h)
    torch.testing.assert_close(g_identity, upstream(), atol=0, rtol=0)

    slot = make_slot(blend, "conv_heavy")
    slot.configure("incubate", 0.0, isolate=True)
    slot.train()
    g_seed = grad_wrt_input(slot, h)
    assert torch.equal(g_seed, g_identity)
    assert slot.isolation_violations == 0


@pytest.mark.parametrize("blend", ["add", "gate"])
def test_slot_incubate_without_isolation_leaks_gradient(blend: str) -> None:
    """Control for the isolation test: with isolate=False the seed path does reach h."""
    h = activation()
    slot = make_slot(blend, "conv_heavy")
    slot.configure("incubate", 0.0, isolate=False)
    g = grad_wrt_input(slot, h)
    assert not torch.allclose(g, upstream())


@pytest.mark.parametrize("blend", ["add", "gate"])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_slot_isolated_blend_keeps_full_host_gradient(blend: str, alpha: float) -> None:
    """d out / d h is the identity: the layers before the slot are not starved (anchor bug)."""
    h = activation()
    slot = make_slot(blend, "conv_heavy")
    slot.configure("blend", alpha, isolate=True)
    slot.train()
    g = grad_wrt_input(slot, h)
    torch.testing.assert_close(g, upstream(), atol=0, rtol=0)
    assert slot.isolation_violations == 0


def test_slot_isolated_add_alpha_one_trains_seed_and_host_path() -> None:
    slot = make_slot("add", "conv_light")
    slot.configure("blend", 1.0, isolate=True)
    slot.train()
    h = activation(grad=True)
    (slot(h) * upstream()).sum().backward()
    assert h.grad is not None and h.grad.abs().sum().item() > 0
    assert all(p.grad is not None for p in slot.seed_parameters())


@pytest.mark.parametrize("blend", BLENDS)
def test_slot_isolation_violations_stay_zero_in_every_mode(blend: str) -> None:
    slot = make_slot(blend, "conv_light")
    slot.train()
    for mode, alpha in (("incubate", 0.0), ("blend", 0.5), ("blend", 1.0)):
        slot.configure(mode, alpha, isolate=True)
        for _ in range(2):
            grad_wrt_input(slot, activation())  # forward and backward: the check runs
    assert slot._violations is not None
    assert slot.isolation_violations == 0
    slot.configure("blend", 0.5, isolate=False)
    grad_wrt_input(slot, activation())  # the seed path does reach h now, but it is allowed
    assert slot.isolation_violations == 0


@pytest.mark.parametrize("mode", ["incubate", "blend"])
@pytest.mark.parametrize("blend", BLENDS)
def test_slot_isolation_violations_count_attached_seed_input(
        blend: str, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the test above: a seed fed the attached h is counted once per backward."""
    slot = make_slot(blend, "conv_light")
    slot.configure(mode, 0.5, isolate=True)
    slot.train()
    monkeypatch.setattr(slot, "_seed_input", lambda h: h)
    for _ in range(3):
        grad_wrt_input(slot, activation())
    assert slot.isolation_violations == 3
    slot.set_seed(slot.seed, slot.gate)
    assert slot.isolation_violations == 0


def test_slot_set_seed_resets_state() -> None:
    slot = make_slot("gate")
    slot.configure("blend", 0.7, isolate=False)
    assert slot.is_active
    slot.set_seed(None)
    assert (slot.mode, slot.alpha, slot.isolate) == ("off", 0.0, True)
    assert slot.seed is None and slot.gate is None
    assert slot.seed_parameters() == []
    assert not slot.is_active
