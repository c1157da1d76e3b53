"""SeedSlot: holds an optional seed, blends it into the host path, isolates host gradients.

Modes (set by the env from the seed's stage):

* ``off``: no seed or a seed outside the forward pass; returns ``h`` unchanged.
* ``incubate`` (TRAINING): straight-through: the output's value is ``h`` and its gradient goes
  unchanged both to ``h`` and to ``b``, the blend at alpha 1 computed on the detached input (the
  gradients of ``h + (b - stopgrad(b))``): the output *equals* ``h`` exactly, even where the
  seed's output is infinite or NaN, while the seed receives the gradient it would get if blended in.
* ``blend`` (BLENDING, PROBATIONARY, FOSSILIZED): the blend operator at the current alpha.

Blend operators, each the identity at alpha 0 (``h~`` is ``h.detach()`` while isolated, else ``h``):

* ``add``: ``h + alpha * (s(h~) - h~)``; the value of the lerp ``(1 - alpha) h + alpha s``, but the
  host's own path keeps its full gradient (the anchor's literal lerp starved the layers before the
  slot, and froze them at alpha = 1).
* ``multiply``: ``h * (1 + alpha * tanh(s(h~)))``.
* ``gate``: ``h + alpha * g(h~) * (s(h~) - h~)`` with a learned per-sample gate ``g`` in (0, 1).

**Isolation and its violations.** While ``isolate`` is on, the seed and the gate see only
``h.detach()``, so seed training never changes host weights through the seed path (FOSSILIZED
seeds have isolation lifted). An *isolation violation* is a backward pass in which host gradient
arrived through the seed path while isolation was on; the G2 gate limits them. They are measured,
not assumed. In training mode, with grad enabled, isolation on and the slot active (``incubate``,
or ``blend`` at alpha > 0), the forward pass routes ``h`` through a private alias ``x`` (so other
consumers of ``h``, or a reused leaf, do not blur the measurement) and installs two hooks:

* on the output's autograd node: the gradient the *direct* (host) path alone delivers to ``x``,
  i.e. ``dL/d out`` for ``incubate``, ``add`` and ``gate`` (their direct path is the identity)
  and ``dL/d out * (1 + alpha * tanh(s))`` for ``multiply``;
* on ``x``: the total gradient ``g`` the slot sends back to the host. When
  ``max|g - expected| > 1e-6 * (1 + max|expected|)`` the pass counts once.

Fast path: when ``g`` *is* the direct path's own gradient tensor, unmodified since (same object,
same version counter), nothing else arrived and no kernel runs; only a leak pays for the
comparison. The hooks only read (they return None, so every gradient is bit-identical with and
without them) and hold no reference to the graph. The count is a 0-dim tensor on the
activation's device (no host sync per batch); :attr:`SeedSlot.isolation_violations` reads it.
Caught, for example: a seed fed the attached ``h``, or a gate computed on ``h`` instead of
``h~``. Not checked: eval mode, ``no_grad``/``inference_mode``, ``isolate=False``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

MODES = ("off", "incubate", "blend")

ISOLATION_TOL = 1e-6
"""A backward pass violates isolation when ``max|g - expected| > tol * (1 + max|expected|)``."""


class _StraightThrough(torch.autograd.Function):
    """``out = h`` in value; ``dL/dout`` goes unchanged to both ``h`` and ``b`` (the incubator)."""

    @staticmethod
    def forward(ctx: object, h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return h.clone()

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        return g, g


def _count_violation(count: torch.Tensor, g: torch.Tensor, expected: torch.Tensor | None) -> None:
    """Add 1 to ``count`` when ``g`` differs from ``expected`` beyond :data:`ISOLATION_TOL`.

    Args:
        count: 0-dim long counter, updated in place on its device (no host sync).
        g: the total gradient the slot sent back to the host activation.
        expected: the direct path's share; None when no gradient came through the slot's output
            (then all of ``g`` came through the seed path).
    """
    if expected is None:
        count.add_(g.abs().amax() > ISOLATION_TOL)
        return
    err, scale = (g - expected).abs_().amax(), expected.abs().amax()
    count.add_(torch.sub(err, scale, alpha=ISOLATION_TOL) > ISOLATION_TOL)


class SeedGate(nn.Module):
    """Learned gate of the ``gate`` blend.

    Images ``(N, C, H, W)``: one gate per sample, ``sigmoid(Linear(avgpool(x)))``, shape
    ``(N, 1, 1, 1)``. Sequences ``(N, T, C)`` (``sequence=True``): one gate per token,
    ``sigmoid(Linear(x))``, shape ``(N, T, 1)``; pooling over the sequence would let a token see
    the ones after it and break a causal language model.
    """

    def __init__(self, channels: int, sequence: bool = False) -> None:
        super().__init__()
        self.sequence = sequence
        self.fc = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.sequence:
            return torch.sigmoid(self.fc(x))
        return torch.sigmoid(self.fc(x.mean(dim=(2, 3))))[:, :, None, None]


class SeedSlot(nn.Module):
    """One injection point's slot.

    While ``isolate`` is on the seed sees only the detached activation. Every training backward
    pass through an active, isolated slot is checked: the gradient the slot sends back to the
    host activation must equal the gradient of the direct (host) path alone; otherwise host
    gradient leaked through the seed path and :attr:`isolation_violations` grows by one (see the
    module docstring). No check runs in eval mode, without grad, or with ``isolate`` off.

    Args:
        channels: channels (feature width) of the host activation at this point.
        shape: one sample's activation shape: ``(C, H, W)`` in a CNN, ``(T, C)`` in a
            transformer; an int ``size`` means ``(channels, size, size)``.
        blend: ``add``, ``multiply`` or ``gate``.

    Shape:
        Input and output: ``(N, *shape)`` (a transformer slot also takes ``T`` up to the shape's).
    """

    def __init__(self, channels: int, shape: int | tuple[int, ...], blend: str = "add") -> None:
        super().__init__()
        if blend not in ("add", "multiply", "gate"):
            raise ValueError(f"blend={blend!r} is invalid; allowed: 'add', 'multiply', 'gate'")
        self.shape = (channels, shape, shape) if isinstance(shape, int) else tuple(shape)
        self.sequence = len(self.shape) == 2
        self.size = self.shape[0] if self.sequence else self.shape[1]
        self.channels, self.blend = channels, blend
        self.seed: nn.Module | None = None
        self.gate: nn.Module | None = None
        self.mode = "off"
        self.alpha = 0.0
        self.isolate = True
        self._ablated = False
        # 0-dim long on the activation's device, created on the first checked forward pass; a
        # plain attribute (not a buffer) so it stays out of state_dict and snapshots.
        self._violations: torch.Tensor | None = None

    # -- seed management ----------------------------------------------------------------------
    def set_seed(self, seed: nn.Module | None, gate: nn.Module | None = None) -> None:
        """Install (or with None, remove) the seed module; resets mode, alpha and violations."""
        self.seed, self.gate = seed, gate
        self.mode, self.alpha, self.isolate = "off", 0.0, True
        self._violations = None

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

    @property
    def isolation_violations(self) -> int:
        """Isolation violations since the last :meth:`set_seed` (0 before any check ran).

        Counts backward passes in which host gradient arrived through the seed path while
        isolation was on. Reading it syncs with the device; the trainer reads it once per epoch.
        """
        count = self._violations
        return 0 if count is None else int(count.item())

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
    def _seed_input(self, h: torch.Tensor) -> torch.Tensor:
        """What the seed and the gate see: ``h.detach()`` while isolated, else ``h``."""
        return h.detach() if self.isolate else h

    def _blend(self, h: torch.Tensor, hs: torch.Tensor, s: torch.Tensor, alpha: float
               ) -> torch.Tensor:
        """The blend operator; ``h`` carries the direct path, everything else uses ``hs``."""
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
        incubate = self.mode == "incubate"
        if not incubate and self.alpha == 0.0:
            return h
        check = self.isolate and self.training and h.requires_grad and torch.is_grad_enabled()
        # The check hooks a private alias of h: its gradient is exactly what this slot sends back
        # (h itself may have other consumers, e.g. forward_ablations, or be a reused leaf).
        x = h.view_as(h) if check else h
        hs = self._seed_input(x)
        s = self.seed(hs)
        if incubate:
            out = _StraightThrough.apply(x, self._blend(hs, hs, s, 1.0))
        else:
            out = self._blend(x, hs, s, self.alpha)
        if check and out.requires_grad:
            gain = s.detach() if self.blend == "multiply" and not incubate else None
            self._check_isolation(x, out, gain)
        return out

    def _violation_counter(self, device: torch.device) -> torch.Tensor:
        count = self._violations
        if count is None:
            count = self._violations = torch.zeros((), dtype=torch.long, device=device)
        elif count.device != device:
            count = self._violations = count.to(device)
        return count

    def _check_isolation(self, x: torch.Tensor, out: torch.Tensor, s: torch.Tensor | None) -> None:
        """Hook ``out`` and ``x`` so that backward compares ``dL/dx`` with the direct path's share.

        The hook on ``out``'s node sees ``dL/d out`` and the gradient that node sends down its
        first input; the hook on ``x`` then sees the total. The hooks hold no graph reference.

        Args:
            x: the slot's alias of the host activation (all of the slot's uses go through it).
            out: the slot's output.
            s: the detached seed output for ``multiply`` (direct-path gain
                ``1 + alpha * tanh(s)``); None where the direct path is the identity.
        """
        count = self._violation_counter(x.device)
        alpha = self.alpha
        node = out.grad_fn
        assert node is not None
        # multiply: the product's gradient for its first input *is* the direct path's share when
        # that input is x itself (then ``g is`` that tensor proves nothing else arrived).
        first_is_x = s is not None and node.next_functions[0][0] is x.grad_fn
        seen: list = [None, None, -1]  # dL/d out, the direct path's own tensor, its version

        def at_output(grad_inputs: tuple, grad_outputs: tuple) -> None:
            direct = grad_outputs[0] if s is None else grad_inputs[0] if first_is_x else None
            seen[0], seen[1] = grad_outputs[0], direct
            seen[2] = -1 if direct is None else direct._version

        def at_input(g: torch.Tensor) -> None:
            g_out, direct, version = seen
            seen[0] = seen[1] = None
            if g is direct and g._version == version:
                return  # the direct path's own, unmodified gradient: nothing else arrived
            if g_out is not None and s is not None:
                g_out = g_out * (1.0 + alpha * torch.tanh(s))
            _count_violation(count, g, g_out)

        node.register_hook(at_output)
        x.register_hook(at_input)

    def extra_repr(self) -> str:  # noqa: D102
        return (f"channels={self.channels}, shape={self.shape}, blend={self.blend!r}, "
                f"mode={self.mode!r}, alpha={self.alpha:.3f}, isolate={self.isolate}")
