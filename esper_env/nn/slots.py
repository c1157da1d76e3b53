"""SeedSlot: holds an optional seed, blends it into the host path, isolates host gradients.

Modes (set by the env from the seed's stage):

* ``off``: no seed or a seed outside the forward pass; returns ``h`` unchanged.
* ``incubate`` (TRAINING): straight-through, ``h + (b - stopgrad(b))`` with ``b`` the blend at
  alpha 1 computed on the detached input: the output *equals* ``h`` exactly while the seed receives
  the gradient it would get if blended in.
* ``blend`` (BLENDING, PROBATIONARY, FOSSILIZED): the blend operator at the current alpha.

Blend operators, each the identity at alpha 0 (``h~`` is ``h.detach()`` while isolated, else ``h``):

* ``add``: ``h + alpha * (s(h~) - h~)``; the value of the lerp ``(1 - alpha) h + alpha s``, but the
  host's own path keeps its full gradient (the anchor's literal lerp starved the layers before the
  slot, and froze them at alpha = 1).
* ``multiply``: ``h * (1 + alpha * tanh(s(h~)))``.
* ``gate``: ``h + alpha * g(h~) * (s(h~) - h~)`` with a learned per-sample gate ``g`` in (0, 1).

While ``isolate`` is on the seed sees ``h.detach()``, so seed training never changes host weights
through the seed path; ``isolation_violations`` counts forward passes in which the seed input was
still attached to the host graph (zero by construction; it catches regressions).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

MODES = ("off", "incubate", "blend")


class SeedGate(nn.Module):
    """Per-sample gate for the ``gate`` blend: ``sigmoid(Linear(avgpool(x)))``, shape (N, 1, 1, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.sigmoid(self.fc(x.mean(dim=(2, 3))))[:, :, None, None]


class SeedSlot(nn.Module):
    """One injection point's slot.

    Args:
        channels: channels of the host activation at this point.
        size: spatial size (height = width) at this point.
        blend: ``add``, ``multiply`` or ``gate``.

    Shape:
        Input and output: ``(N, channels, size, size)``.
    """

    def __init__(self, channels: int, size: int, blend: str = "add") -> None:
        super().__init__()
        if blend not in ("add", "multiply", "gate"):
            raise ValueError(f"blend={blend!r} is invalid; allowed: 'add', 'multiply', 'gate'")
        self.channels, self.size, self.blend = channels, size, blend
        self.seed: nn.Module | None = None
        self.gate: nn.Module | None = None
        self.mode = "off"
        self.alpha = 0.0
        self.isolate = True
        self._ablated = False
        self.isolation_violations = 0

    # -- seed management ----------------------------------------------------------------------
    def set_seed(self, seed: nn.Module | None, gate: nn.Module | None = None) -> None:
        """Install (or with None, remove) the seed module; resets mode and alpha."""
        self.seed, self.gate = seed, gate
        self.mode, self.alpha, self.isolate = "off", 0.0, True
        self.isolation_violations = 0

    def seed_parameters(self) -> list[nn.Parameter]:
        """Parameters of the seed and its gate (empty without a seed)."""
        mods = [m for m in (self.seed, self.gate) if m is not None]
        return [p for m in mods for p in m.parameters()]

    def configure(self, mode: str, alpha: float, isolate: bool) -> None:
        """Set forward mode, alpha (clamped to [0, 1]) and gradient isolation."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is invalid; allowed: {MODES}")
        self.mode, self.alpha, self.isolate = mode, min(1.0, max(0.0, float(alpha))), bool(isolate)

    @property
    def is_active(self) -> bool:
        """True when the seed takes part in the forward pass."""
        return self.seed is not None and self.mode != "off" and not self._ablated

    @contextmanager
    def ablated(self) -> Iterator[None]:
        """Force this slot's blend weight to 0 (output = host activation), restored on exit."""
        previous = self._ablated
        self._ablated = True
        try:
            yield
        finally:
            self._ablated = previous

    # -- forward --------------------------------------------------------------------------------
    def _blend(self, h: torch.Tensor, hs: torch.Tensor, s: torch.Tensor, alpha: float
               ) -> torch.Tensor:
        if self.blend == "add":
            return h + alpha * (s - hs)
        if self.blend == "multiply":
            return h * (1.0 + alpha * torch.tanh(s))
        assert self.gate is not None
        return h + alpha * self.gate(hs) * (s - hs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.is_active:
            return h
        assert self.seed is not None
        hs = h.detach() if self.isolate else h
        if self.isolate and self.training and hs.requires_grad:
            self.isolation_violations += 1
        s = self.seed(hs)
        if self.mode == "incubate":
            b = self._blend(hs, hs, s, 1.0)
            return h + (b - b.detach())
        if self.alpha == 0.0:
            return h
        return self._blend(h, hs, s, self.alpha)

    def extra_repr(self) -> str:  # noqa: D102
        return (f"channels={self.channels}, size={self.size}, blend={self.blend!r}, "
                f"mode={self.mode!r}, alpha={self.alpha:.3f}, isolate={self.isolate}")
