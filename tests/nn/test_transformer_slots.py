"""Transformer seeds inside SeedSlot on ``(N, T, C)`` activations: identity at alpha 0, the
incubator, gradient isolation and its measurement, causality of the whole model for every blend,
and the counterfactual forward pass (spec sections 6 and 7, transformer topology)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from esper_env.nn.blueprints import available_blueprints, build_blueprint
from esper_env.nn.model import MorphogeneticModel
from esper_env.nn.slots import SeedGate, SeedSlot
from esper_env.nn.transformer import TransformerHost

BLUEPRINTS = available_blueprints("transformer")
BLENDS = ("add", "multiply", "gate")
C, T, N = 16, 8, 3
VOCAB = 13
CASES = [(bp, blend) for bp in BLUEPRINTS for blend in BLENDS]
IDS = [f"{bp}-{blend}" for bp, blend in CASES]
cases = pytest.mark.parametrize(("blueprint", "blend"), CASES, ids=IDS)


@pytest.fixture(autouse=True)
def _quiet_flex_warning():
    """Eager flex_attention warns once that it is unfused; that is expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        yield


def perturbed_seed(blueprint: str, seed: int = 0) -> nn.Module:
    """``blueprint`` at width C with every parameter moved off its init (so no seed is the
    identity: the zero-initialised output projections become nonzero)."""  # noqa: D205
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build_blueprint("transformer", blueprint, C)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return module


def make_gate(blend: str, seed: int = 1) -> nn.Module | None:
    if blend != "gate":
        return None
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gate = SeedGate(C, sequence=True)
    with torch.no_grad():
        for p in gate.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return gate


def make_slot(blueprint: str, blend: str) -> SeedSlot:
    slot = SeedSlot(C, (T, C), blend)
    slot.set_seed(perturbed_seed(blueprint), make_gate(blend))
    return slot


def activation(seed: int = 2, grad: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, T, C, generator=g).requires_grad_(grad)


def upstream(seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, T, C, generator=g)


class Net(nn.Module):
    """A host layer (Linear on the features), the slot, a host head: ``h`` is a non-leaf."""

    def __init__(self, slot: SeedSlot) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(4)
            self.pre = nn.Linear(C, C)
            self.head = nn.Linear(C, VOCAB)
        self.slot = slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.slot(self.pre(x)))


def host_grads(net: Net, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of the host layers (pre, head) of a cross-entropy loss; seed grads cleared."""
    net.zero_grad(set_to_none=True)
    logits = net(x)
    nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)).backward()
    return {k: p.grad.clone() for k, p in net.named_parameters() if not k.startswith("slot.")}


def batch(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, T, C, generator=g), torch.randint(0, VOCAB, (N, T), generator=g)


def seed_grad_total(slot: SeedSlot) -> float:
    return sum(float(p.grad.abs().sum()) for p in slot.seed_parameters() if p.grad is not None)


# -- identity at alpha 0 ---------------------------------------------------------------------------
@cases
def test_alpha_zero_and_off_mode_are_the_exact_identity(blueprint: str, blend: str) -> None:
    slot = make_slot(blueprint, blend)
    h = activation()
    for isolate in (True, False):
        slot.configure("blend", 0.0, isolate=isolate)
        assert torch.equal(slot(h), h)
    slot.configure("off", 1.0, isolate=True)
    assert slot(h) is h and not slot.is_active
    # Control: the perturbed seed is not the identity, so alpha > 0 changes the activation.
    slot.configure("blend", 0.5, isolate=True)
    assert not torch.allclose(slot(h), h, atol=1e-4)


# -- the incubator ---------------------------------------------------------------------------------
@cases
def test_incubate_output_is_the_host_activation_and_the_seed_learns(blueprint: str,
                                                                     blend: str) -> None:
    slot = make_slot(blueprint, blend)
    slot.configure("incubate", 0.0, isolate=True)
    slot.train()
    h = activation(grad=True)
    out = slot(h)
    assert torch.equal(out, h)
    (out * upstream()).sum().backward()
    params = slot.seed_parameters()
    assert params
    for p in params:
        assert p.grad is not None and float(p.grad.abs().sum()) > 0.0
    # The host activation gets exactly dL/dout: nothing from the seed path.
    assert torch.equal(h.grad, upstream())
    assert slot.isolation_violations == 0


# -- isolation -------------------------------------------------------------------------------------
def direct_path_grad(slot: SeedSlot, h: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    """dL/dh of the slot's direct (host) path only: the seed's output treated as a constant."""
    with torch.no_grad():
        s = slot.seed(h)
    if slot.mode == "incubate" or slot.blend in ("add", "gate"):
        return g_out.clone()
    return g_out * (1.0 + slot.alpha * torch.tanh(s))


@cases
@pytest.mark.parametrize(("mode", "alpha"), [("incubate", 0.0), ("blend", 0.5), ("blend", 1.0)])
def test_isolated_slot_sends_back_only_the_direct_path_gradient(blueprint: str, blend: str,
                                                                mode: str, alpha: float) -> None:
    slot = make_slot(blueprint, blend)
    slot.configure(mode, alpha, isolate=True)
    slot.train()
    h = activation(grad=True)
    g_out = upstream()
    (slot(h) * g_out).sum().backward()
    torch.testing.assert_close(h.grad, direct_path_grad(slot, h.detach(), g_out), rtol=0,
                               atol=1e-6)
    assert slot.isolation_violations == 0
    assert seed_grad_total(slot) > 0.0


@cases
@pytest.mark.parametrize(("mode", "alpha"), [("incubate", 0.0), ("blend", 0.5)])
def test_isolation_check_counts_a_seed_fed_the_attached_activation(
        blueprint: str, blend: str, mode: str, alpha: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the same measurement sees a leak when the seed path gets the attached ``h``."""
    slot = make_slot(blueprint, blend)
    slot.configure(mode, alpha, isolate=True)
    slot.train()
    monkeypatch.setattr(slot, "_seed_input", lambda h: h)
    h = activation(grad=True)
    g_out = upstream()
    (slot(h) * g_out).sum().backward()
    assert slot.isolation_violations == 1
    assert not torch.allclose(h.grad, direct_path_grad(slot, h.detach(), g_out), atol=1e-6)


@cases
def test_incubating_seed_leaves_upstream_host_gradients_identical(blueprint: str, blend: str) -> None:
    x, y = batch()
    seeded = Net(make_slot(blueprint, blend))
    seeded.slot.configure("incubate", 0.0, isolate=True)
    bare = Net(SeedSlot(C, (T, C), blend))
    seeded.train()
    bare.train()
    a, b = host_grads(seeded, x, y), host_grads(bare, x, y)
    assert a.keys() == b.keys() == {"pre.weight", "pre.bias", "head.weight", "head.bias"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert seeded.slot.isolation_violations == 0
    assert seed_grad_total(seeded.slot) > 0.0
    # Control: with isolation off the seed path does reach the host layer before the slot.
    seeded.slot.configure("incubate", 0.0, isolate=False)
    leaky = host_grads(seeded, x, y)
    assert not torch.allclose(leaky["pre.weight"], b["pre.weight"], atol=1e-7)
    assert torch.equal(leaky["head.weight"], b["head.weight"])  # the output is still h


@cases
def test_blend_without_isolation_sends_host_gradient_through_the_seed(blueprint: str,
                                                                      blend: str) -> None:
    slot = make_slot(blueprint, blend)
    slot.configure("blend", 0.5, isolate=False)
    slot.train()
    h = activation(grad=True)
    g_out = upstream()
    (slot(h) * g_out).sum().backward()
    direct = direct_path_grad(slot, h.detach(), g_out)
    assert (h.grad - direct).abs().max() > 1e-4  # the seed path adds to the host's gradient
    assert slot.isolation_violations == 0  # the check is off: nothing is counted
    assert slot._violations is None  # ... and no check was even installed


# -- causality through the whole model -------------------------------------------------------------
def make_model(blueprint: str, blend: str, isolate: bool, gate: nn.Module | None = None,
               alpha: float = 0.5) -> MorphogeneticModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        host = TransformerHost(VOCAB, block_size=T, n_layer=2, n_head=2, n_embd=C)
    model = MorphogeneticModel(host, points=(0,), blend=blend)
    slot = model.slots[0]
    assert (slot.channels, slot.shape, slot.sequence) == (C, (T, C), True)
    slot.set_seed(perturbed_seed(blueprint), gate if gate is not None else make_gate(blend))
    slot.configure("blend", alpha, isolate)
    return model.eval()


def tokens(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (N, T), generator=g)


def future_leaks(model: nn.Module, grad: bool) -> list[int]:
    """Positions t where changing only the tokens after t changed a logit at or before t."""
    x = tokens(7)
    leaks = []
    with torch.set_grad_enabled(grad):
        base = model(x)
        for t in range(T - 1):
            x2 = x.clone()
            x2[:, t + 1:] = (x[:, t + 1:] + 1 + tokens(8 + t)[:, t + 1:] % (VOCAB - 1)) % VOCAB
            assert (x2[:, t + 1:] != x[:, t + 1:]).all()
            out = model(x2)
            if not torch.allclose(out[:, :t + 1], base[:, :t + 1], rtol=0, atol=1e-6):
                leaks.append(t)
            assert not torch.allclose(out[:, t + 1:], base[:, t + 1:], atol=1e-4)
    return leaks


@cases
@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_model_with_a_blended_seed_is_causal(blueprint: str, blend: str, isolate: bool,
                                             grad: bool) -> None:
    model = make_model(blueprint, blend, isolate)
    assert future_leaks(model, grad) == []
    # The seed does take part: the logits differ from the same model with the slot ablated.
    x = tokens(7)
    with torch.no_grad():
        real = model(x)
        with model.slots[0].ablated():
            ablated = model(x)
    assert not torch.allclose(real, ablated, atol=1e-4)


class PooledGate(nn.Module):
    """A gate that pools over the sequence (the mistake SeedGate(sequence=True) avoids)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x.mean(dim=1)))[:, None, :]


def test_causality_check_catches_a_gate_pooled_over_the_sequence() -> None:
    """Control: the causality measurement above can fail."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        gate = PooledGate()
    model = make_model("lora", "gate", isolate=True, gate=gate)
    assert future_leaks(model, grad=False) == list(range(T - 1))


# -- the counterfactual forward pass ---------------------------------------------------------------
@cases
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_forward_ablations_returns_the_real_and_the_ablated_logits(blueprint: str, blend: str,
                                                                   grad: bool) -> None:
    model = make_model(blueprint, blend, isolate=True)
    x = tokens(10)
    with torch.set_grad_enabled(grad):
        real, ablated = model.forward_ablations(x, [0])
        expected_real = model(x)
        with model.slots[0].ablated():
            expected_ablated = model(x)
    assert set(ablated) == {0}
    assert real.shape == ablated[0].shape == (N, T, VOCAB)
    torch.testing.assert_close(real, expected_real, rtol=0, atol=1e-6)
    torch.testing.assert_close(ablated[0], expected_ablated, rtol=0, atol=1e-6)
    assert not torch.allclose(real, ablated[0], atol=1e-4)
    assert model.slots[0].is_active  # the ablation was undone
