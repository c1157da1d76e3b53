"""TransformerHost and the transformer seed modules (esper_env/nn/transformer.py)."""

from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
import warnings
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from esper_env.nn.hosts import InjectionPoint
from esper_env.nn.transformer import (
    HAS_FLEX_ATTENTION,
    TRANSFORMER_BLUEPRINTS,
    CausalAttentionSeed,
    FlexAttentionSeed,
    LoRASeed,
    MLPSeed,
    TransformerHost,
    TransformerNormSeed,
    alibi_slopes,
    seed_heads,
)

VOCAB, BLOCK, N_LAYER, N_HEAD, N_EMBD = 11, 16, 2, 2, 32
WIDTHS = (8, 16, 24, 32, 48, 64, 128)
NAMES = tuple(TRANSFORMER_BLUEPRINTS)
IDENTITY_AT_INIT = tuple(n for n in ("lora", "attention", "flex_attention", "mlp") if n in NAMES)
needs_flex = pytest.mark.skipif(not HAS_FLEX_ATTENTION, reason="torch has no FlexAttention")


@pytest.fixture(autouse=True)
def _quiet_flex_warning():
    """Eager flex_attention warns once that it is unfused; that is expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        yield


def built(factory, seed: int = 0):
    """``factory()`` with a fixed CPU seed, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def make_host(**overrides) -> TransformerHost:
    kw = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD)
    kw.update(overrides)
    return built(lambda: TransformerHost(**kw))


def make_seed(name: str, channels: int = N_EMBD, **options) -> nn.Module:
    cls = TRANSFORMER_BLUEPRINTS[name][0]
    return built(lambda: cls(channels, **options))


def perturb(module: nn.Module, seed: int = 1, scale: float = 0.3) -> nn.Module:
    """Add noise to every parameter, so zero-initialised projections are no longer zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def randn(*shape: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------------------------
# Host
# ----------------------------------------------------------------------------------------------


def test_host_forward_shape_and_composition():
    host = make_host()
    idx = torch.randint(0, VOCAB, (3, BLOCK), generator=torch.Generator().manual_seed(0))
    logits = host(idx)
    assert logits.shape == (3, BLOCK, VOCAB)
    h = host.forward_stem(idx)
    assert h.shape == (3, BLOCK, N_EMBD)
    for block in host.blocks:
        h = block(h)
    assert torch.equal(host.forward_head(h), logits)
    assert host.topology == "transformer" == TransformerHost.topology


def test_host_head_is_tied_to_token_embedding():
    host = make_host()
    assert host.head.weight is host.tok_emb.weight
    c, v, b, layers = N_EMBD, VOCAB, BLOCK, N_LAYER
    per_block = 2 * 2 * c + (3 * c * c + 3 * c) + (c * c + c) + (4 * c * c + 4 * c) + (4 * c * c + c)
    assert n_params(host) == v * c + b * c + layers * per_block + 2 * c  # the head adds nothing


def test_host_rejects_sequences_longer_than_block_size():
    host = make_host()
    with pytest.raises(ValueError, match=rf"T={BLOCK + 1}\b.*block_size={BLOCK}\b"):
        host(torch.zeros(2, BLOCK + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        host.forward_stem(torch.zeros(BLOCK, dtype=torch.long))


def test_host_shorter_sequence_matches_prefix_of_full_sequence():
    host = make_host()
    idx = torch.randint(0, VOCAB, (2, BLOCK), generator=torch.Generator().manual_seed(3))
    short = host(idx[:, :5])
    assert short.shape == (2, 5, VOCAB)
    torch.testing.assert_close(short, host(idx)[:, :5], rtol=0, atol=1e-6)


def test_host_injection_points():
    host = make_host(n_layer=3)
    assert host.injection_points == tuple(InjectionPoint(i, N_EMBD, (BLOCK, N_EMBD)) for i in range(3))
    assert [p.size for p in host.injection_points] == [BLOCK] * 3


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(n_embd=30, n_head=4), r"n_embd=30 .*n_head=4"),
    (dict(vocab_size=0), r"vocab_size=0\b"),
    (dict(block_size=-1), r"block_size=-1\b"),
    (dict(n_layer=0), r"n_layer=0\b"),
    (dict(n_head=2.0), r"n_head=2.0\b"),
])
def test_host_rejects_invalid_arguments(overrides, message):
    kw = dict(vocab_size=VOCAB, block_size=BLOCK, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD)
    kw.update(overrides)
    with pytest.raises(ValueError, match=message):
        TransformerHost(**kw)


def test_host_nanogpt_initialisation():
    host = make_host(n_embd=64, n_head=4)
    for name, p in host.named_parameters():
        if name.endswith("bias") and not name.split(".")[-2].startswith("ln"):
            assert torch.count_nonzero(p) == 0, name
    residual = 0.02 / math.sqrt(2 * N_LAYER)
    for block in host.blocks:
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual, rel=0.1)
        assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
        assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert host.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert host.pos_emb.weight.std().item() == pytest.approx(0.02, rel=0.15)


def test_host_is_causal():
    host = perturb(make_host())
    idx = torch.randint(0, VOCAB, (2, BLOCK), generator=torch.Generator().manual_seed(4))
    base = host(idx)
    for t in (0, 6, BLOCK - 2):
        changed = idx.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % VOCAB
        out = host(changed)
        torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


def test_host_extra_repr_and_meta_construction():
    assert make_host().extra_repr() == (f"vocab_size={VOCAB}, block_size={BLOCK}, n_layer={N_LAYER}, "
                                        f"n_head={N_HEAD}, n_embd={N_EMBD}")
    with torch.device("meta"):
        meta = TransformerHost(VOCAB, BLOCK, N_LAYER, N_HEAD, N_EMBD)
    assert n_params(meta) == n_params(make_host())


@pytest.mark.parametrize("name", IDENTITY_AT_INIT)
def test_identity_seed_after_a_block_leaves_host_output_unchanged(name):
    host, seed = make_host(), make_seed(name)
    idx = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(5))
    h = host.forward_stem(idx)
    for i, block in enumerate(host.blocks):
        h = block(h)
        if i == 0:
            h = seed(h)
    assert torch.equal(host.forward_head(h), host(idx))


# ----------------------------------------------------------------------------------------------
# Seeds: shape, causality, identity at init, gradients, RNG
# ----------------------------------------------------------------------------------------------


def test_catalog_order_and_entries():
    expected = ["norm", "lora", "attention"] + (["flex_attention"] if HAS_FLEX_ATTENTION else []) + ["mlp"]
    assert list(TRANSFORMER_BLUEPRINTS) == expected
    classes = {"norm": TransformerNormSeed, "lora": LoRASeed, "attention": CausalAttentionSeed,
               "flex_attention": FlexAttentionSeed, "mlp": MLPSeed}
    for name, (cls, description) in TRANSFORMER_BLUEPRINTS.items():
        assert cls is classes[name]
        assert isinstance(description, str) and description and "\n" not in description


def test_catalog_leaves_out_flex_attention_without_flex_support():
    code = ("import sys; sys.modules['torch.nn.attention.flex_attention'] = None\n"
            "import esper_env.nn.transformer as t\n"
            "assert t.HAS_FLEX_ATTENTION is False\n"
            "print(','.join(t.TRANSFORMER_BLUEPRINTS))\n"
            "try:\n    t.FlexAttentionSeed(16)\nexcept ImportError as e:\n    print('ImportError', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "norm,lora,attention,mlp"
    assert lines[1].startswith("ImportError") and "flex_attention" in lines[1]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t_len", [1, 7, BLOCK])
def test_seed_preserves_shape(name, t_len):
    x = randn(3, t_len, N_EMBD)
    assert make_seed(name)(x).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_seed_is_causal(name, grad):
    seed = perturb(make_seed(name))
    x = randn(2, 12, N_EMBD)
    with torch.set_grad_enabled(grad):
        base = seed(x)
        assert not torch.allclose(base, x)  # perturbed: not the identity
        for t in (0, 4, 10):
            changed = x.clone()
            changed[:, t + 1:] = randn(2, 11 - t, N_EMBD, seed=10 + t)
            out = seed(changed)
            torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


@pytest.mark.parametrize("name", IDENTITY_AT_INIT)
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_seed_is_identity_at_init(name, grad):
    x = randn(2, 9, N_EMBD)
    with torch.set_grad_enabled(grad):
        assert torch.equal(make_seed(name)(x), x)


def test_norm_seed_is_not_identity_at_init():
    seed = make_seed("norm")
    x = 3.0 + 2.0 * randn(2, 5, N_EMBD)
    expected = x + math.tanh(1.0) * (F.layer_norm(x, (N_EMBD,)) - x)
    torch.testing.assert_close(seed(x), expected)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name):
    seed = perturb(make_seed(name))
    x = randn(2, 10, N_EMBD).requires_grad_()
    (seed(x) * randn(2, 10, N_EMBD, seed=3)).sum().backward()
    for pname, p in seed.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, pname
    assert torch.count_nonzero(x.grad) > 0


@pytest.mark.parametrize(("name", "zero_init"), [
    ("lora", "up.weight"), ("attention", "proj.weight"), ("flex_attention", "proj.weight"),
    ("mlp", "fc2.weight"),
])
def test_zero_initialised_projection_gets_a_gradient_at_init(name, zero_init):
    if name not in NAMES:
        pytest.skip("torch has no FlexAttention")
    seed = make_seed(name)
    (seed(randn(2, 10, N_EMBD)) * randn(2, 10, N_EMBD, seed=3)).sum().backward()
    grad = dict(seed.named_parameters())[zero_init].grad
    assert grad is not None and torch.count_nonzero(grad) > 0


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_leave_global_rng_alone(name):
    seed = perturb(make_seed(name, **({"checkpoint": True} if name == "mlp" else {})))
    x = randn(2, 8, N_EMBD).requires_grad_()
    before = torch.random.get_rng_state()
    seed(x).sum().backward()
    with torch.no_grad():
        seed.eval()
        seed(x)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_host_forward_backward_leave_global_rng_alone():
    host = make_host()
    before = torch.random.get_rng_state()
    host(torch.zeros(2, BLOCK, dtype=torch.long)).sum().backward()
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("name", NAMES)
def test_seed_extra_repr_and_meta_construction(name):
    seed = make_seed(name)
    assert f"channels={N_EMBD}" in seed.extra_repr()
    with torch.device("meta"):
        meta = TRANSFORMER_BLUEPRINTS[name][0](N_EMBD)
    assert n_params(meta) == n_params(seed)


@pytest.mark.parametrize(("factory", "message"), [
    (lambda: TransformerNormSeed(0), r"channels=0\b"),
    (lambda: LoRASeed(16, rank=0), r"rank=0\b"),
    (lambda: CausalAttentionSeed(-4), r"channels=-4\b"),
    (lambda: MLPSeed(0), r"channels=0\b"),
])
def test_seed_rejects_invalid_arguments(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


# ----------------------------------------------------------------------------------------------
# Parameter counts
# ----------------------------------------------------------------------------------------------


def expected_params(name: str, c: int) -> int:
    return {
        "norm": 2 * c + 1,
        "lora": 16 * c,
        "attention": 4 * c * c + 6 * c,
        "flex_attention": 4 * c * c + 6 * c + seed_heads(c),
        "mlp": 8 * c * c + 7 * c,
    }[name]


@pytest.mark.parametrize("channels", WIDTHS)
def test_param_counts_match_formulas_and_ascend(channels):
    with torch.device("meta"):
        counts = [n_params(cls(channels)) for cls, _ in TRANSFORMER_BLUEPRINTS.values()]
    assert counts == [expected_params(name, channels) for name in NAMES]
    assert all(a < b for a, b in pairwise(counts)), counts


def test_param_counts_of_real_modules():
    for c in (16, 32):
        assert [n_params(make_seed(n, c)) for n in NAMES] == [expected_params(n, c) for n in NAMES]
    assert n_params(LoRASeed(32, rank=4)) == 2 * 4 * 32


@pytest.mark.parametrize(("channels", "heads"), [
    (1, 1), (8, 1), (15, 1), (16, 1), (24, 1), (32, 2), (40, 1), (48, 3), (64, 4), (128, 8),
])
def test_seed_heads(channels, heads):
    assert seed_heads(channels) == heads
    assert CausalAttentionSeed(channels).n_head == heads


# ----------------------------------------------------------------------------------------------
# FlexAttention
# ----------------------------------------------------------------------------------------------


def reference_flex_seed(seed: FlexAttentionSeed, x: torch.Tensor) -> torch.Tensor:
    """The flex seed's function, written out: softmax(q.k/sqrt(D) + slope[h](j - i), causal)."""
    n, t, c = x.shape
    h = seed.n_head
    q, k, v = (z.reshape(n, t, h, c // h).permute(0, 2, 1, 3) for z in seed.qkv(seed.ln(x)).chunk(3, -1))
    i = torch.arange(t).view(t, 1)
    j = torch.arange(t).view(1, t)
    scores = torch.einsum("nhid,nhjd->nhij", q, k) / math.sqrt(c // h)
    scores = scores + seed.slopes.view(h, 1, 1) * (j - i).to(x.dtype)
    scores = scores.masked_fill(j > i, float("-inf"))
    y = torch.einsum("nhij,nhjd->nhid", torch.softmax(scores, dim=-1), v)
    return x + seed.proj(y.permute(0, 2, 1, 3).reshape(n, t, c))


@needs_flex
def test_flex_slopes_start_as_alibi():
    seed = make_seed("flex_attention", 64)
    assert seed.n_head == 4
    torch.testing.assert_close(seed.slopes.detach(), torch.tensor([2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8]))
    assert alibi_slopes(1) == [2 ** -8]


@needs_flex
@pytest.mark.parametrize("channels", [16, 32])
def test_flex_matches_plain_reference(channels):
    seed = perturb(make_seed("flex_attention", channels))
    with torch.no_grad():
        seed.slopes.copy_(torch.linspace(-0.5, 0.7, seed.n_head))  # both signs of bias
    x = randn(3, 13, channels)
    with torch.no_grad():
        flex_calls = seed.flex_calls
        out = seed(x)
        assert seed.flex_calls == flex_calls + 1  # the no-grad CPU forward uses flex_attention
        ref = reference_flex_seed(seed, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    math_calls = seed.math_calls
    out_grad = seed(x)  # CPU with grad: the plain-tensor path (flex has no CPU backward)
    assert seed.math_calls == math_calls + 1
    torch.testing.assert_close(out_grad, ref, rtol=0, atol=1e-5)


@needs_flex
def test_flex_gradients_match_reference():
    seed = perturb(make_seed("flex_attention", 32))
    twin = copy.deepcopy(seed)
    x = randn(2, 11, 32)
    w = randn(2, 11, 32, seed=9)
    (seed(x) * w).sum().backward()
    (reference_flex_seed(twin, x) * w).sum().backward()
    for (name, p), q in zip(seed.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)
    assert torch.count_nonzero(seed.slopes.grad) == seed.n_head


@needs_flex
def test_flex_block_mask_cache_hits_and_misses():
    seed = make_seed("flex_attention", 16)
    with torch.no_grad():
        seed(randn(2, 6, 16))
        assert seed.cache_info() == (0, 1, 8, 1)
        seed(randn(2, 6, 16, seed=3))  # same (T, device, dtype): a hit
        assert seed.cache_info() == (1, 1, 8, 1)
        seed(randn(2, 9, 16))  # a new T: a miss
        assert seed.cache_info() == (1, 2, 8, 2)
    seed.block_mask(6, "cpu", torch.float64)  # dtype is part of the key
    assert seed.cache_info() == (1, 3, 8, 3)
    assert seed.block_mask(6, torch.device("cpu"), torch.float32) is seed.block_mask(6, "cpu", torch.float32)
    assert seed.cache_info().hits == 3


@needs_flex
def test_flex_block_mask_cache_is_lru():
    seed = make_seed("flex_attention", 16, maxsize=2)
    f32 = torch.float32

    def counts():
        info = seed.cache_info()
        return info.hits, info.misses, info.currsize

    seed.block_mask(4, "cpu", f32)
    seed.block_mask(8, "cpu", f32)
    seed.block_mask(4, "cpu", f32)  # hit: T=4 becomes the most recently used
    assert counts() == (1, 2, 2)
    seed.block_mask(12, "cpu", f32)  # miss at maxsize: evicts T=8 (FIFO would evict T=4)
    assert counts() == (1, 3, 2)
    assert list(k[0] for k in seed._block_masks) == [4, 12]
    seed.block_mask(4, "cpu", f32)
    assert counts() == (2, 3, 2)  # T=4 kept
    seed.block_mask(8, "cpu", f32)
    assert counts() == (2, 4, 2)  # T=8 was evicted


@needs_flex
def test_flex_block_mask_cache_cleared_by_apply():
    seed = make_seed("flex_attention", 16)
    x = randn(2, 5, 16)
    with torch.no_grad():
        seed(x)
        seed.to("cpu")  # through _apply, even though nothing moves
        assert seed.cache_info() == (0, 1, 8, 0)
        seed(x)
        assert seed.cache_info() == (0, 2, 8, 1)
        nn.Sequential(seed).to(torch.float64)  # a parent's .to() reaches the seed's _apply
        assert seed.cache_info().currsize == 0 and seed.slopes.dtype == torch.float64
        out = seed(x.double())
        assert out.dtype == torch.float64
        assert seed.cache_info() == (0, 3, 8, 1)
        assert next(iter(seed._block_masks))[2] == torch.float64
        torch.testing.assert_close(out, reference_flex_seed(seed, x.double()), rtol=0, atol=1e-10)
        seed.half()
        assert seed.cache_info().currsize == 0


@needs_flex
def test_flex_copies_start_with_an_empty_cache():
    seed = make_seed("flex_attention", 16)
    with torch.no_grad():
        seed(randn(2, 5, 16))
    for twin in (copy.deepcopy(seed), pickle.loads(pickle.dumps(seed))):
        assert twin.cache_info().currsize == 0
        with torch.no_grad():
            assert torch.equal(twin(randn(2, 5, 16)), seed(randn(2, 5, 16)))
    assert seed.cache_info().currsize == 1
    seed.cache_clear()
    assert seed.cache_info() == (0, 0, 8, 0)


@needs_flex
def test_flex_rejects_invalid_maxsize():
    with pytest.raises(ValueError, match=r"maxsize=0\b"):
        FlexAttentionSeed(16, maxsize=0)


# ----------------------------------------------------------------------------------------------
# MLP activation checkpointing
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def checkpoint_calls(monkeypatch):
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    return calls


def test_mlp_checkpointing_gives_identical_outputs_and_gradients(checkpoint_calls):
    plain = perturb(make_seed("mlp"))
    ckpt = MLPSeed(N_EMBD, checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    assert "checkpoint=True" in ckpt.extra_repr()
    x = randn(3, 10, N_EMBD)
    w = randn(3, 10, N_EMBD, seed=4)
    grads = []
    for module in (plain, ckpt):
        xi = x.clone().requires_grad_()
        out = module(xi)
        (out * w).sum().backward()
        grads.append((out.detach(), xi.grad, [p.grad for p in module.parameters()]))
    assert len(checkpoint_calls) == 1 and checkpoint_calls[0]["use_reentrant"] is False
    (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = grads
    assert torch.equal(out_a, out_b)
    assert torch.equal(gx_a, gx_b)
    assert all(torch.equal(a, b) for a, b in zip(gp_a, gp_b, strict=True))


def test_mlp_checkpointing_only_when_training_with_grad(checkpoint_calls):
    seed = MLPSeed(N_EMBD, checkpoint=True)
    x = randn(2, 4, N_EMBD)
    with torch.no_grad():
        seed(x)
    seed.eval()
    seed(x)
    MLPSeed(N_EMBD)(x)
    assert checkpoint_calls == []
    seed.train()
    seed(x)
    assert len(checkpoint_calls) == 1
