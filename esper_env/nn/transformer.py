"""The transformer topology: a small GPT host and its seed modules (spec sections 4, 6 and 7).

Host
    :class:`TransformerHost` is a nanoGPT-style pre-norm decoder without dropout: token and
    position embeddings, ``n_layer`` :class:`TransformerBlock` s (``x + attn(ln_1(x))`` then
    ``x + mlp(ln_2(x))``, causal attention through ``F.scaled_dot_product_attention``), a final
    LayerNorm and a head tied to the token embedding. An injection point sits after every block;
    the model wrapper calls :meth:`~TransformerHost.forward_stem`, the blocks one by one with seed
    slots in between, then :meth:`~TransformerHost.forward_head`.

Seeds (blueprints)
    Every seed maps ``(N, T, C) -> (N, T, C)``, is built as ``Cls(channels)`` and is **causal**:
    the output at position ``t`` depends only on inputs at positions ``<= t`` (the position-wise
    seeds trivially, the attention seeds through a causal mask), so a seed never lets a language
    model see the token it must predict. :data:`TRANSFORMER_BLUEPRINTS` lists them in the action
    order, which is ascending parameter count at every width::

        norm            x + tanh(g) * (LN(x) - x)                 2C + 1
        lora            x + up(down(x)), rank 8                   16C
        attention       x + proj(causal_attn(LN(x)))              4C^2 + 6C
        flex_attention  the same through FlexAttention, with a
                        learned per-head relative-position bias   4C^2 + 6C + n_head
        mlp             x + fc2(gelu(fc1(LN(x)))), 4x hidden      8C^2 + 7C

    ``lora``, ``attention``, ``flex_attention`` and ``mlp`` zero-initialise their output
    projection, so they are exactly the identity when built; ``norm`` is not (its gain starts at
    1, as the CNN ``norm`` seed's does). Weights other than the zero-initialised ones use PyTorch's
    default initialisation, as the CNN seeds do.

FlexAttention (found on torch 2.13.0, CPU build)
    :data:`HAS_FLEX_ATTENTION` says whether ``torch.nn.attention.flex_attention`` imports (torch
    >= 2.5); without it the ``flex_attention`` blueprint is left out of the catalog. Called
    without ``torch.compile`` ("eager"), ``flex_attention`` still traces itself with dynamo and
    runs an unfused implementation that materialises the score matrix, warning once that it does
    so. On the CPU that path runs **forward only**: any ``q``/``k``/``v`` that requires grad raises
    ``NotImplementedError: FlexAttention does not support backward on CPU`` (MPS likewise), with
    or without ``torch.compile``. :class:`FlexAttentionSeed` therefore computes the same
    function (same scale, causal mask and bias) with plain tensor operations whenever autograd
    would need a backward on CPU or MPS, i.e. while training there; on CPU, validation and
    inference under ``torch.no_grad()`` do go through ``flex_attention``, as does everything on
    CUDA. Its ``flex_calls`` / ``math_calls`` counters say which path ran. The first
    ``flex_attention`` call in a process costs one to three seconds (dynamo warm-up, first block
    mask), a new head layout or dtype about 0.3 s more (a retrace). Eager ``flex_attention`` is
    slow: about 11 ms for one forward at N=8, T=64, C=32 on one CPU thread, where the SDPA seed
    takes 0.5 ms. On CUDA (checked on an H200, torch 2.11) it trains through ``flex_attention``
    and matches the plain path, but eager it is about 35x slower than the SDPA seed in a
    forward-backward; ``torch.compile(flex_attention)`` brings that to about 1.5x. This module is
    written for eager use: torch.compile of a model holding this seed is untested.

Block-mask cache
    :class:`FlexAttentionSeed` keeps the causal ``BlockMask`` of each sequence length in a
    least-recently-used cache keyed by ``(seq_len, device, dtype)``: a hit moves the key to the
    most-recent end, a miss builds the mask and, past ``maxsize`` entries, evicts the least
    recently used one. The mask itself does not depend on the dtype; the dtype is part of the key
    so that masks of modules in different precisions never mix. The cache is emptied whenever the
    module goes through ``nn.Module._apply`` (``.to()``, ``.cuda()``, ``.cpu()``, ``.half()``,
    ``.double()`` ...; also when the call changes nothing), and copies and pickles start empty.
    ``cache_info()`` reports hits, misses, maxsize and current size like ``functools.lru_cache``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from esper_env.errors import ConfigError
from esper_env.nn.hosts import InjectionPoint

try:
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # torch < 2.5
    HAS_FLEX_ATTENTION = False
else:
    HAS_FLEX_ATTENTION = True

__all__ = [
    "HAS_FLEX_ATTENTION",
    "TRANSFORMER_BLUEPRINTS",
    "CacheInfo",
    "CausalAttentionSeed",
    "CausalSelfAttention",
    "FlexAttentionSeed",
    "LoRASeed",
    "MLPSeed",
    "TransformerBlock",
    "TransformerHost",
    "TransformerMLP",
    "TransformerNormSeed",
    "alibi_slopes",
    "seed_heads",
]


def _check_positive(name: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} is invalid; allowed: an integer >= 1")


def _split_heads(qkv: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(N, T, 3C)`` -> q, k, v each ``(N, n_head, T, C / n_head)``."""
    n, t, c3 = qkv.shape
    return tuple(z.view(n, t, n_head, c3 // (3 * n_head)).transpose(1, 2)
                 for z in qkv.split(c3 // 3, dim=2))  # type: ignore[return-value]


def _merge_heads(y: torch.Tensor) -> torch.Tensor:
    """``(N, n_head, T, D)`` -> ``(N, T, n_head * D)``."""
    n, h, t, d = y.shape
    return y.transpose(1, 2).reshape(n, t, h * d)


# ----------------------------------------------------------------------------------------------
# Host
# ----------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (nanoGPT's): one ``c_attn`` for q, k, v, then ``c_proj``.

    Shape:
        Input and output: ``(N, T, n_embd)``.
    """

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        q, k, v = _split_heads(self.c_attn(x), self.n_head)
        return self.c_proj(_merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True)))


class TransformerMLP(nn.Module):
    """Position-wise MLP: ``c_proj(gelu(c_fc(x)))`` with a 4x hidden width.

    Shape:
        Input and output: ``(N, T, n_embd)``.
    """

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.c_proj(self.gelu(self.c_fc(x)))


class TransformerBlock(nn.Module):
    """Pre-norm decoder block: ``x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))``.

    Shape:
        Input and output: ``(N, T, n_embd)``.
    """

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = TransformerMLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TransformerHost(nn.Module):
    """A small GPT: embeddings, ``n_layer`` pre-norm blocks, final LayerNorm, tied head.

    nanoGPT's initialisation: every Linear and Embedding weight ~ N(0, 0.02), biases 0, and the
    residual output projections (``c_proj``) ~ N(0, 0.02 / sqrt(2 n_layer)). ``head.weight`` is
    the same Parameter as ``tok_emb.weight``. No dropout. An injection point sits after every
    block.

    Args:
        vocab_size: tokens (the logits' width).
        block_size: the longest sequence (positions of ``pos_emb``).
        n_layer: decoder blocks.
        n_head: attention heads per block; must divide ``n_embd``.
        n_embd: the residual width ``C``.

    Shape:
        Input ``(N, T)`` token indices with ``T <= block_size``; output ``(N, T, vocab_size)``
        logits.
    """

    topology = "transformer"

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int,
                 n_embd: int) -> None:
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size),
                            ("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd)):
            _check_positive(name, value)
        if n_embd % n_head:
            raise ConfigError(f"n_embd={n_embd} is invalid with n_head={n_head}; "
                              f"allowed: a multiple of n_head")
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.blocks = nn.ModuleList(TransformerBlock(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying (one Parameter)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
        self.injection_points: tuple[InjectionPoint, ...] = tuple(
            InjectionPoint(i, n_embd, (block_size, n_embd)) for i in range(n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward_stem(self, idx: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings: ``(N, T)`` indices -> ``(N, T, n_embd)``.

        Raises:
            ValueError: ``idx`` is not 2-D, or ``T > block_size``.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be (N, T) token indices; got shape {tuple(idx.shape)}")
        t = idx.size(1)
        if t > self.block_size:
            raise ValueError(f"sequence length T={t} exceeds block_size={self.block_size}; "
                             f"allowed: T <= {self.block_size}")
        pos = torch.arange(t, device=idx.device)
        return self.tok_emb(idx) + self.pos_emb(pos)

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm and the tied head: ``(N, T, n_embd)`` -> logits ``(N, T, vocab_size)``."""
        return self.head(self.ln_f(h))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """The bare host (no slots): stem, every block, head."""
        x = self.forward_stem(idx)
        for block in self.blocks:
            x = block(x)
        return self.forward_head(x)

    def extra_repr(self) -> str:  # noqa: D102
        return (f"vocab_size={self.vocab_size}, block_size={self.block_size}, "
                f"n_layer={self.n_layer}, n_head={self.n_head}, n_embd={self.n_embd}")


# ----------------------------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------------------------


def seed_heads(channels: int) -> int:
    """Attention heads of an attention seed: ``C // 16`` (head width 16) when 16 divides C, else 1."""
    return channels // 16 if channels >= 16 and channels % 16 == 0 else 1


def alibi_slopes(n_head: int) -> list[float]:
    """ALiBi's head slopes ``2^(-8 h / n_head)`` for ``h = 1..n_head`` (Press et al., 2022).

    Exact ALiBi for a power-of-two ``n_head``; the same geometric rule otherwise (the paper
    interleaves two power-of-two sequences there).
    """
    return [2.0 ** (-8.0 * (h + 1) / n_head) for h in range(n_head)]


class TransformerNormSeed(nn.Module):
    """Residual mix toward LayerNorm: ``x + tanh(g) * (LN(x) - x)``, scalar gain g (init 1).

    The transformer twin of the CNN ``norm`` seed; LayerNorm has its affine weight and bias.
    Position-wise, hence causal. Parameters: ``2C + 1``.

    Args:
        channels: the width ``C``.

    Shape:
        Input and output: ``(N, T, C)``.
    """

    def __init__(self, channels: int) -> None:
        _check_positive("channels", channels)
        super().__init__()
        self.channels = channels
        self.norm = nn.LayerNorm(channels)
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + torch.tanh(self.gain) * (self.norm(x) - x)

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}"


class LoRASeed(nn.Module):
    """Low-rank residual: ``x + up(down(x))`` with a zero-initialised ``up`` (identity at init).

    Position-wise, hence causal. Parameters: ``2 * rank * C`` (16C at the default rank 8).

    Args:
        channels: the width ``C``.
        rank: the bottleneck width.

    Shape:
        Input and output: ``(N, T, C)``.
    """

    def __init__(self, channels: int, rank: int = 8) -> None:
        _check_positive("channels", channels)
        _check_positive("rank", rank)
        super().__init__()
        self.channels, self.rank = channels, rank
        self.down = nn.Linear(channels, rank, bias=False)
        self.up = nn.Linear(rank, channels, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.up(self.down(x))

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}, rank={self.rank}"


class _SelfAttentionSeed(nn.Module):
    """Shared body of the attention seeds: ``x + proj(attend(q, k, v))``, q/k/v from ``qkv(LN(x))``.

    ``proj`` (weight and bias) starts at zero, so the seed is the identity when built.
    Subclasses supply the causal ``_attend``.
    """

    def __init__(self, channels: int) -> None:
        _check_positive("channels", channels)
        super().__init__()
        self.channels = channels
        self.n_head = seed_heads(channels)
        self.ln = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        q, k, v = _split_heads(self.qkv(self.ln(x)), self.n_head)
        return x + self.proj(_merge_heads(self._attend(q, k, v)))

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}, n_head={self.n_head}"


class CausalAttentionSeed(_SelfAttentionSeed):
    """An extra pre-norm causal self-attention residual: ``x + proj(attn(LN(x)))``.

    ``n_head = seed_heads(C)``; attention through ``F.scaled_dot_product_attention(...,
    is_causal=True)``. ``proj`` is zero-initialised (identity at init). Parameters: ``4C^2 + 6C``.

    Args:
        channels: the width ``C``.

    Shape:
        Input and output: ``(N, T, C)``.
    """

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class CacheInfo(NamedTuple):
    """Block-mask cache statistics (the fields of ``functools.lru_cache``'s ``cache_info()``)."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


def _causal_mask_mod(b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor,
                     kv_idx: torch.Tensor) -> torch.Tensor:
    return q_idx >= kv_idx


def _biased_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             slopes: torch.Tensor) -> torch.Tensor:
    """Softmax attention with scores ``q.k / sqrt(D) + slope[h] * (kv - q)`` and a causal mask.

    The function :class:`FlexAttentionSeed` asks of ``flex_attention``, in plain tensor ops (it
    materialises the ``(N, H, T, T)`` scores, as eager ``flex_attention`` does).
    """
    t = q.size(-2)
    pos = torch.arange(t, device=q.device)
    rel = (pos[None, :] - pos[:, None]).to(q.dtype)  # kv_idx - q_idx
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))
    scores = scores + slopes.to(q.dtype)[:, None, None] * rel
    scores = scores.masked_fill(pos[None, :] > pos[:, None], float("-inf"))
    return scores.softmax(dim=-1) @ v


class FlexAttentionSeed(_SelfAttentionSeed):
    """The attention seed through FlexAttention, with a learned per-head relative-position bias.

    Scores are ``q.k / sqrt(D) + slope[h] * (kv_idx - q_idx)`` under a causal ``BlockMask``; the
    ``n_head`` slopes are a Parameter initialised to ALiBi's (:func:`alibi_slopes`), so every head
    starts with a recency bias whose strength it can learn. ``proj`` is zero-initialised
    (identity at init). Parameters: ``4C^2 + 6C + n_head``.

    Where ``flex_attention`` has no backward (CPU, MPS) and autograd needs one, the same scores
    are computed with plain tensor operations (see the module docstring); ``flex_calls`` and
    ``math_calls`` count the two paths. Causal block masks are cached per
    ``(seq_len, device, dtype)`` in an LRU of ``maxsize`` entries, emptied by ``_apply``.

    Args:
        channels: the width ``C``.
        maxsize: block masks kept (least recently used evicted first).

    Shape:
        Input and output: ``(N, T, C)``.

    Raises:
        ImportError: this torch has no ``torch.nn.attention.flex_attention``.
    """

    def __init__(self, channels: int, maxsize: int = 8) -> None:
        if not HAS_FLEX_ATTENTION:
            raise ImportError(f"FlexAttentionSeed needs torch.nn.attention.flex_attention "
                              f"(torch >= 2.5); this torch is {torch.__version__}")
        _check_positive("maxsize", maxsize)
        super().__init__(channels)
        self.maxsize = maxsize
        self.slopes = nn.Parameter(torch.tensor(alibi_slopes(self.n_head)))
        self._block_masks: OrderedDict[tuple[int, torch.device, torch.dtype], BlockMask] = OrderedDict()
        self._hits = self._misses = 0
        self.flex_calls = self.math_calls = 0

    def block_mask(self, seq_len: int, device: torch.device | str, dtype: torch.dtype) -> BlockMask:
        """The causal BlockMask for ``seq_len`` positions, from the LRU cache or built (and cached)."""
        key = (seq_len, torch.device(device), dtype)
        mask = self._block_masks.get(key)
        if mask is not None:
            self._block_masks.move_to_end(key)
            self._hits += 1
            return mask
        self._misses += 1
        mask = create_block_mask(_causal_mask_mod, None, None, seq_len, seq_len, device=key[1])
        self._block_masks[key] = mask
        if len(self._block_masks) > self.maxsize:
            self._block_masks.popitem(last=False)
        return mask

    def cache_info(self) -> CacheInfo:
        """Hits, misses, maxsize and current size of the block-mask cache."""
        return CacheInfo(self._hits, self._misses, self.maxsize, len(self._block_masks))

    def cache_clear(self) -> None:
        """Empty the block-mask cache and zero its statistics (``_apply`` keeps the statistics)."""
        self._block_masks.clear()
        self._hits = self._misses = 0

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        slopes = self.slopes
        if (q.device.type in ("cpu", "mps") and torch.is_grad_enabled()
                and (q.requires_grad or k.requires_grad or v.requires_grad or slopes.requires_grad)):
            # flex_attention raises NotImplementedError for a backward on CPU/MPS (torch <= 2.13).
            self.math_calls += 1
            return _biased_causal_attention(q, k, v, slopes)
        self.flex_calls += 1
        block_mask = self.block_mask(q.size(-2), q.device, q.dtype)

        def score_mod(score: torch.Tensor, b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor,
                      kv_idx: torch.Tensor) -> torch.Tensor:
            return score + slopes[h] * (kv_idx - q_idx)

        return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask)

    def _apply(self, fn: Any, recurse: bool = True) -> FlexAttentionSeed:
        # .to() / .cuda() / .cpu() / .half() ... all come here: masks built for the old device or
        # dtype must not be served again.
        self._block_masks.clear()
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_block_masks"] = OrderedDict()  # copies and pickles rebuild their masks
        return state

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, maxsize={self.maxsize}"


class MLPSeed(nn.Module):
    """A pre-norm 4x MLP residual: ``x + fc2(gelu(fc1(LN(x))))``, ``fc2`` zero-initialised.

    Position-wise, hence causal; the identity at init. Parameters: ``8C^2 + 7C``. With
    ``checkpoint=True`` the inner MLP runs under activation checkpointing
    (``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``) while the module is
    training with grad enabled: its activations are recomputed in the backward instead of stored.
    The MLP draws no random numbers, so the RNG state is not stashed (``preserve_rng_state=False``).

    Args:
        channels: the width ``C``.
        checkpoint: use activation checkpointing in training.

    Shape:
        Input and output: ``(N, T, C)``.
    """

    def __init__(self, channels: int, checkpoint: bool = False) -> None:
        _check_positive("channels", channels)
        super().__init__()
        self.channels, self.checkpoint = channels, bool(checkpoint)
        self.ln = nn.LayerNorm(channels)
        self.fc1 = nn.Linear(channels, 4 * channels)
        self.gelu = nn.GELU()
        self.fc2 = nn.Linear(4 * channels, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.gelu(self.fc1(self.ln(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return x + torch.utils.checkpoint.checkpoint(self._mlp, x, use_reentrant=False,
                                                         preserve_rng_state=False)
        return x + self._mlp(x)

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}, checkpoint={self.checkpoint}"


TRANSFORMER_BLUEPRINTS: dict[str, tuple[type[nn.Module], str]] = {
    "norm": (TransformerNormSeed, "LayerNorm residual mix, scalar gain"),
    "lora": (LoRASeed, "rank-8 low-rank residual, zero-init up-projection"),
    "attention": (CausalAttentionSeed, "extra causal self-attention, zero-init output projection"),
    **({"flex_attention": (FlexAttentionSeed, "causal FlexAttention with learned per-head "
                                              "relative-position bias, zero-init output")}
       if HAS_FLEX_ATTENTION else {}),
    "mlp": (MLPSeed, "4x GELU MLP, zero-init output, optional activation checkpointing"),
}
"""name -> (seed class, description), in the action order (ascending parameter count).
``flex_attention`` is present only when :data:`HAS_FLEX_ATTENTION`."""
