"""K CNN hosts of one shape trained as one computation: the first layer of the batched engine.

:class:`StackedHosts` lays K :class:`~esper_env.nn.hosts.CNNHost` networks of the same shape side
by side in the channel dimension: every 3x3 convolution becomes one grouped convolution
(``groups=K``), every BatchNorm one BatchNorm over ``K * C`` channels (per host and per channel, as
before: host ``k``'s statistics see only its own samples), and the linear heads one batched matrix
product. Each host trains on its own mini-batches: row ``n`` of the stacked input holds sample
``n`` of *every* host's batch, each from that host's own data order. :class:`StackedSGD` is
momentum SGD over the stacked parameters with one learning rate per host (what
``torch.optim.SGD`` computes, with a ``(K,)`` learning rate).

Floating-point results differ from K separate hosts in the last bits (other kernels, other
summation orders); ``tests/nn/test_batched.py`` states the tolerance.

:class:`SeedGroup` holds the seeds of one blueprint after one block across the episodes that have one:
their parameters stacked ``(G, ...)``, one hand-batched forward pass for the G members
(:func:`stacked_forward`: grouped convolutions, GroupNorm over G times the groups, batched matrix
products; forward and backward of 64 members, 1.2x (``norm``) to 4.5x (``conv_heavy``) faster
than a ``torch.func.vmap`` of the blueprint's ``functional_call`` on one CPU thread,
which remains the fallback for other modules), momentum SGD on the stack. A germination appends a
seed (built as the single env builds it), a cull removes one; neither touches another member's
numbers. Blending, the twins and the counterfactual passes are in
:mod:`esper_env.nn.batch_trainer`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from esper_env.nn.hosts import CNNHost


class StackedHosts(nn.Module):
    """K CNN hosts of one shape as one network (see the module docstring).

    Args:
        hosts: the K hosts (same ``channels``, pooling, input and classes); their current
            weights and BatchNorm statistics are copied in.
        memory_format: ``torch.channels_last`` to lay the activations out NHWC (usually faster
            for grouped convolutions on the CPU), None for torch's default.

    Shape:
        Input ``(N, K * C_in, H, W)`` (host ``k``'s channels at ``k * C_in``); output
        ``(K, N, n_classes)``.
    """

    def __init__(self, hosts: Sequence[CNNHost], memory_format: torch.memory_format | None = None
                 ) -> None:
        super().__init__()
        if not hosts:
            raise ValueError("hosts is empty; allowed: one or more CNNHost of one shape")
        first = hosts[0]
        shape = _shape(first)
        for i, h in enumerate(hosts):
            if _shape(h) != shape:
                raise ValueError(f"hosts[{i}] has shape {_shape(h)}; allowed: the shape of "
                                 f"hosts[0], {shape}")
        self.k = k = len(hosts)
        self.channels = first.channels
        self.n_classes = first.n_classes
        self.memory_format = memory_format
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.pools: list[bool] = []
        for i, block in enumerate(first.blocks):
            conv, norm = block.conv, block.norm
            grouped = nn.Conv2d(k * conv.in_channels, k * conv.out_channels, 3, padding=1,
                                bias=False, groups=k)
            bn = nn.BatchNorm2d(k * norm.num_features, eps=norm.eps, momentum=norm.momentum)
            with torch.no_grad():
                grouped.weight.copy_(torch.cat([h.blocks[i].conv.weight for h in hosts]))
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(bn, name).copy_(torch.cat([getattr(h.blocks[i].norm, name)
                                                       for h in hosts]))
                bn.num_batches_tracked.copy_(norm.num_batches_tracked)
            self.convs.append(grouped)
            self.norms.append(bn)
            self.pools.append(isinstance(block.pool, nn.MaxPool2d))
        first_conv = first.blocks[0].conv
        self._spread = first_conv.out_channels if first_conv.in_channels == 1 else None
        """One input channel: the first convolution runs depthwise on the input repeated
        ``out_channels`` times (the same sums; about twice as fast as ``groups=K`` on the CPU)."""
        self.sizes = {p.index: p.shape[1] for p in first.injection_points}
        """Block index -> the spatial size of its output."""
        self.head_weight = nn.Parameter(torch.stack([h.head.weight.detach() for h in hosts]))
        self.head_bias = nn.Parameter(torch.stack([h.head.bias.detach() for h in hosts]))
        if memory_format is not None:
            self.to(memory_format=memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.memory_format is not None:
            x = x.contiguous(memory_format=self.memory_format)
        for b in range(len(self.convs)):
            x = self.block(b, x)
        return self.head(x)

    def block(self, b: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``b`` of every host: convolution, BatchNorm, ReLU and, where the host has one,
        2x2 max-pooling. ``(N, K * C_in, H, W) -> (N, K * C_out, H', W')``.
        """  # noqa: D205
        conv = self.convs[b]
        if b == 0 and self._spread is not None:
            n, kc, h, w = x.shape
            c = self._spread
            x = (x.permute(0, 2, 3, 1).unsqueeze(-1).expand(n, h, w, kc, c)
                 .reshape(n, h, w, kc * c).permute(0, 3, 1, 2))  # each image c times, NHWC
            y = F.conv2d(x, conv.weight, padding=1, groups=kc * c)
        else:
            y = conv(x)
        x = F.relu(self.norms[b](y))
        return F.max_pool2d(x, 2) if self.pools[b] else x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool and the K linear heads: ``(N, K * C, H, W) -> (K, N, n_classes)``."""
        n = x.shape[0]
        h = x.mean(dim=(2, 3)).view(n, self.k, -1).transpose(0, 1)  # (K, N, C)
        return torch.baddbmm(self.head_bias.unsqueeze(1), h, self.head_weight.transpose(1, 2))

    @torch.no_grad()
    def load_member(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Put a :class:`CNNHost` state dict into member ``k``.

        A host narrower than the stack (fewer channels in some block) is *padded*: its weights
        fill the leading channels and the rest are zero (running variance one), so the extra
        channels' activations and gradients are exactly zero and the member computes what the
        narrower host computes.
        """
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            c = conv.out_channels // self.k
            rows = slice(k * c, (k + 1) * c)
            w = state[f"blocks.{i}.conv.weight"]
            _pad_into(conv.weight[rows], w)
            for name in ("weight", "bias", "running_mean", "running_var"):
                _pad_into(getattr(norm, name)[rows], state[f"blocks.{i}.norm.{name}"],
                          1.0 if name == "running_var" else 0.0)
        _pad_into(self.head_weight[k], state["head.weight"])
        self.head_bias[k] = state["head.bias"]

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Host ``k``'s weights and BatchNorm statistics as a :class:`CNNHost` state dict."""
        state: dict[str, torch.Tensor] = {}
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            c = conv.out_channels // self.k
            rows = slice(k * c, (k + 1) * c)
            state[f"blocks.{i}.conv.weight"] = conv.weight[rows].detach().clone()
            for name in ("weight", "bias", "running_mean", "running_var"):
                state[f"blocks.{i}.norm.{name}"] = getattr(norm, name)[rows].detach().clone()
            state[f"blocks.{i}.norm.num_batches_tracked"] = norm.num_batches_tracked.clone()
        state["head.weight"] = self.head_weight[k].detach().clone()
        state["head.bias"] = self.head_bias[k].detach().clone()
        return state


def _pad_into(dst: torch.Tensor, src: torch.Tensor, fill: float = 0.0) -> None:
    """``dst`` = ``src`` in its leading corner, ``fill`` elsewhere (in place)."""
    if dst.shape == src.shape:
        dst.copy_(src)
        return
    if src.dim() != dst.dim() or any(a > b for a, b in zip(src.shape, dst.shape, strict=True)):
        raise ValueError(f"a host tensor of shape {tuple(src.shape)} does not fit the stack's "
                         f"{tuple(dst.shape)}; allowed: at most the stack's widths")
    dst.fill_(fill)
    dst[tuple(slice(0, n) for n in src.shape)] = src


def _shape(host: CNNHost) -> tuple[object, ...]:
    b = host.blocks[0]
    return (host.channels, host.n_classes, b.conv.in_channels,
            tuple(isinstance(blk.pool, nn.MaxPool2d) for blk in host.blocks))


class StackedSGD:
    """Momentum SGD over stacked parameters, one learning rate per member.

    Every parameter's leading dimension holds the K members one after another (``K * rows``);
    member ``k``'s update is ``torch.optim.SGD``'s (no dampening, no Nesterov): ``g = grad +
    weight_decay * p``, ``buf = momentum * buf + g`` (``buf = g`` at the first step), ``p -= lr[k] *
    buf``.
    """

    def __init__(self, params: Sequence[nn.Parameter], k: int, lr: torch.Tensor | Sequence[float],
                 momentum: float, weight_decay: float = 0.0) -> None:
        self.params = list(params)
        self.k = k
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.bufs: list[torch.Tensor] | None = None
        self.set_lr(lr)

    def set_lr(self, lr: torch.Tensor | Sequence[float]) -> None:
        """Set the members' learning rates (a sequence or a ``(K,)`` tensor)."""
        lr = torch.as_tensor(lr, dtype=self.params[0].dtype, device=self.params[0].device)
        if lr.shape != (self.k,):
            raise ValueError(f"lr has shape {tuple(lr.shape)}; allowed: ({self.k},), one per member")
        new = [member_rows(lr, p) for p in self.params]
        if hasattr(self, "_lr"):  # in place: a captured CUDA graph reads these tensors
            for old, value in zip(self._lr, new, strict=True):
                old.copy_(value)
        else:
            self._lr = [t.contiguous() for t in new]

    def zero_grad(self) -> None:  # noqa: D102
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, mask: torch.Tensor | None = None) -> None:
        """One update of every parameter from its ``.grad``; with ``mask`` (``(K,)`` bool) only
        the members where it is True change (the others keep weights and momentum).
        """  # noqa: D205
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        if mask is None:
            if self.bufs is None:
                self.bufs = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.bufs, self.momentum)
                torch._foreach_add_(self.bufs, grads)
            for p, buf, lr in zip(self.params, self.bufs, self._lr, strict=True):
                p.sub_(buf * lr)
            return
        if self.bufs is None:  # zero momentum: the first step's buf = g
            self.bufs = [torch.zeros_like(p) for p in self.params]
        for p, g, buf, lr in zip(self.params, grads, self.bufs, self._lr, strict=True):
            rows = member_rows(mask, p)
            buf.copy_(torch.where(rows, buf * self.momentum + g, buf))
            p.sub_(torch.where(rows, buf * lr, 0.0))


def gather_inputs(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The stacked input of K hosts' mini-batches: ``x`` ``(S, C, H, W)``, ``index`` ``(K, B)``
    sample indices per host; returns ``(B, K * C, H, W)``.
    """  # noqa: D205
    k, b = index.shape
    return x[index].transpose(0, 1).reshape(b, k * x.shape[1], *x.shape[2:])


def gather_batches(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The stacked input of K hosts' mini-batches.

    ``x`` ``(S, C, H, W)`` and ``y`` ``(S,)`` are one dataset; ``index`` ``(K, B)`` holds each
    host's sample indices. Returns ``(B, K * C, H, W)`` inputs and ``(K, B)`` targets.
    """
    return gather_inputs(x, index), y[index]


def train_epoch(hosts: StackedHosts, opt: StackedSGD, x: torch.Tensor, y: torch.Tensor,
                generators: Sequence[torch.Generator], batch_size: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch of every host over its own data order; per-host mean loss and accuracy (pp).

    Host ``k``'s order is ``torch.randperm(len(x), generator=generators[k])``, the draw a single
    :class:`~esper_env.nn.trainer.Trainer` makes, and its batches are that order's chunks of
    ``batch_size``.
    """
    n = x.shape[0]
    perms = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(x.device)
    k = hosts.k
    loss_sum = torch.zeros(k, device=x.device)
    correct = torch.zeros(k, device=x.device, dtype=torch.long)
    hosts.train()
    for start in range(0, n, batch_size):
        xb, yb = gather_batches(x, y, perms[:, start:start + batch_size])
        logits = hosts(xb)  # (K, B, O)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1),
                                 reduction="none").view(k, -1)
        opt.zero_grad()
        losses.mean(dim=1).sum().backward()
        opt.step()
        with torch.no_grad():
            loss_sum += losses.detach().sum(dim=1)
            correct += (logits.argmax(dim=2) == yb).sum(dim=1)
    return loss_sum / n, 100.0 * correct / n


@torch.inference_mode()
def evaluate(hosts: StackedHosts, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every host on one split (eval mode): per-host mean loss and accuracy (pp)."""
    was = hosts.training
    hosts.eval()
    try:
        k, n = hosts.k, x.shape[0]
        xs = x.unsqueeze(1).expand(n, k, *x.shape[1:]).reshape(n, k * x.shape[1], *x.shape[2:])
        logits = hosts(xs)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.repeat(k),
                                 reduction="none").view(k, n)
        acc = 100.0 * (logits.argmax(dim=2) == y).sum(dim=1) / n
        return losses.mean(dim=1), acc
    finally:
        hosts.train(was)


def _group_norm(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor,
                eps: float) -> torch.Tensor:
    """GroupNorm of G members side by side: ``x`` ``(N, G * C, H, W)``, ``groups`` per member,
    ``weight`` and ``bias`` ``(G, C)``. Member ``g``'s groups see only its own channels.

    The input is made contiguous in the one case where torch's CPU GroupNorm backward crashes on
    ``channels_last`` data (see :func:`esper_env.nn.blueprints._group_norm`).
    """  # noqa: D205
    if (x.device.type == "cpu" and not x.requires_grad and torch.is_grad_enabled()
            and weight.requires_grad and not x.is_contiguous()):
        x = x.contiguous()
    return F.group_norm(x, weight.shape[0] * groups, weight.reshape(-1), bias.reshape(-1), eps)


def _conv(x: torch.Tensor, weight: torch.Tensor, per_member: int = 1) -> torch.Tensor:
    """G members' convolutions as one grouped convolution: ``weight`` ``(G, C_out, C_in /
    per_member, k, k)``, ``per_member`` groups per member (``C`` for a depthwise one).
    """  # noqa: D205
    return F.conv2d(x, weight.reshape(-1, *weight.shape[2:]), padding=weight.shape[-1] // 2,
                    groups=weight.shape[0] * per_member)


def per_channel(v: torch.Tensor, channels: int) -> torch.Tensor:
    """A ``(G,)`` per-member value as ``(1, G * channels, 1, 1)``."""
    return repeat_each(v, channels).view(1, -1, 1, 1)


def repeat_each(v: torch.Tensor, times: int) -> torch.Tensor:
    """``v.repeat_interleave(times)`` for a 1-d ``v`` and an int, as a broadcast (no device sync,
    so it can run inside a CUDA graph capture).
    """  # noqa: D205
    return v.unsqueeze(1).expand(-1, times).reshape(-1)


def member_rows(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A ``(K,)`` per-member value shaped to broadcast over a stacked parameter ``p`` (whose
    leading dimension holds the K members' rows one after another).
    """  # noqa: D205
    return repeat_each(v, p.shape[0] // v.shape[0]).view(-1, *([1] * (p.dim() - 1)))


def _conv_block(p: dict[str, torch.Tensor], prefix: str, block: nn.Module, x: torch.Tensor
                ) -> torch.Tensor:
    norm = block.norm
    return torch.relu(_group_norm(_conv(x, p[prefix + "conv.weight"]), norm.num_groups,
                                  p[prefix + "norm.weight"], p[prefix + "norm.bias"], norm.eps))


def stacked_forward(template: nn.Module
                    ) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor] | None:
    """The hand-batched forward pass of a CNN blueprint, or None for another module.

    The returned ``f(params, x)`` runs G members of ``template``'s blueprint at once: ``params``
    holds each parameter stacked ``(G, ...)``, ``x`` is ``(N, G * C, H, W)`` (member ``g``'s
    channels at ``g * C``; any memory layout) and the result has ``x``'s shape. It computes
    what ``template.forward`` computes per member, with grouped convolutions, GroupNorm over
    ``G`` times the groups and batched matrix products instead of a ``vmap``.
    """
    from esper_env.nn import blueprints as bp

    if isinstance(template, bp.NormSeed):
        norm = template.norm

        def norm_seed(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            c = x.shape[1] // p["gain"].shape[0]
            gn = _group_norm(x, norm.num_groups, p["norm.weight"], p["norm.bias"], norm.eps)
            return x + per_channel(torch.tanh(p["gain"]), c) * (gn - x)
        return norm_seed
    if isinstance(template, bp.AttentionSeed):
        def attention(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            g = p["fc1.weight"].shape[0]
            m = x.mean(dim=(2, 3)).view(x.shape[0], g, -1)  # (N, G, C)
            h = torch.relu(torch.einsum("ngc,ghc->ngh", m, p["fc1.weight"]))
            w = torch.sigmoid(torch.einsum("ngh,gch->ngc", h, p["fc2.weight"]))
            return x * w.reshape(x.shape[0], -1, 1, 1)
        return attention
    if isinstance(template, bp.DepthwiseSeed):
        norm, c = template.norm, template.channels

        def depthwise(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            y = _conv(_conv(x, p["depthwise.weight"], per_member=c), p["pointwise.weight"])
            return x + torch.relu(_group_norm(y, norm.num_groups, p["norm.weight"],
                                              p["norm.bias"], norm.eps))
        return depthwise
    if isinstance(template, bp.ConvLightSeed):
        def conv_light(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return x + _conv_block(p, "block.", template.block, x)
        return conv_light
    if isinstance(template, bp.ConvHeavySeed):
        def conv_heavy(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            y = x + _conv_block(p, "block1.", template.block1, x)
            return y + _conv_block(p, "block2.", template.block2, y)
        return conv_heavy
    return None


class SeedGroup:
    """The seeds of one blueprint after one block (one width) in several episodes, stacked.

    Args:
        template: a module of the blueprint at the slot's width (its weights are not used; it
            must hold no buffers).
        lr, momentum: the seeds' SGD (``torch.optim.SGD`` without weight decay: ``buf = momentum
            * buf + grad``, ``p -= lr * buf``; a new member's buffer starts at zero, which is
            SGD's first step).

        capacity: None (default) keeps exactly the members in the stack: adding or removing one
            rebuilds it. An integer C fixes the stack at C rows, row ``r`` for lane ``r`` (lanes
            ``0 .. C - 1``): a member is written into its row and a removed one zeroed in place,
            so the tensors never change shape or address (what CUDA graphs need); empty rows
            are computed and masked by the caller.

    Members are keyed by their episode's lane; :attr:`lanes` lists them in stack order and
    :meth:`row` gives a member's row. Their input and output lie side by side in the channel
    dimension, ``(N, G * C, H, W)`` (G: :attr:`n_rows`). A CNN blueprint runs hand-batched
    (:func:`stacked_forward`); any other module as a ``vmap`` of its ``functional_call``.
    """

    def __init__(self, template: nn.Module, lr: float, momentum: float,
                 capacity: int | None = None) -> None:
        if any(True for _ in template.buffers()):
            raise ValueError(f"{type(template).__name__} holds buffers; allowed: a blueprint "
                             "without running statistics")
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int)
                                     or capacity < 1):
            raise ValueError(f"capacity={capacity!r} is invalid; allowed: None or an integer >= 1")
        self.base = copy.deepcopy(template).to("meta")
        self._stacked = stacked_forward(self.base)
        self.names = [n for n, _ in template.named_parameters()]
        self.lr, self.momentum = float(lr), float(momentum)
        self.capacity = capacity
        self.rows: list[int | None] = []
        """The lane held by each row of the stack (None: an empty row of a fixed capacity)."""
        self.params: dict[str, torch.Tensor] = {}
        self.bufs: dict[str, torch.Tensor] = {}
        if capacity is not None:
            self.rows = [None] * capacity
            for n, p in template.named_parameters():
                self.params[n] = torch.zeros(capacity, *p.shape, dtype=p.dtype, device=p.device
                                             ).requires_grad_(True)
                self.bufs[n] = torch.zeros(capacity, *p.shape, dtype=p.dtype, device=p.device)

    @property
    def lanes(self) -> list[int]:
        """The members' lanes, in stack order."""
        return [i for i in self.rows if i is not None]

    @property
    def n_rows(self) -> int:
        """Rows of the stack: the members, or the fixed capacity."""
        return len(self.rows)

    def row(self, lane: int) -> int:
        """The row of ``lane``'s member (ValueError if it has none)."""
        if self.capacity is not None:
            if not (0 <= lane < self.capacity and self.rows[lane] == lane):
                raise ValueError(f"lane {lane} has no seed in this group")
            return lane
        return self.rows.index(lane)

    def __len__(self) -> int:
        return len(self.lanes)

    def add(self, lane: int, module: nn.Module) -> None:
        """Append ``module``'s weights as the member of ``lane`` (with a zero momentum buffer)."""
        if lane in self.lanes:
            raise ValueError(f"lane {lane} already has a seed in this group")
        new = {n: p.detach() for n, p in module.named_parameters()}
        if sorted(new) != sorted(self.names):
            raise ValueError(f"{type(module).__name__} does not match the group's blueprint")
        self.add_state(lane, new)

    def add_state(self, lane: int, params: dict[str, torch.Tensor],
                  bufs: dict[str, torch.Tensor] | None = None) -> None:
        """Append a member from its weights (and momentum buffers; default zero)."""
        if lane in self.lanes:
            raise ValueError(f"lane {lane} already has a seed in this group")
        if self.capacity is not None:
            if not 0 <= lane < self.capacity:
                raise ValueError(f"lane {lane} is outside this group's capacity; allowed: 0 .. "
                                 f"{self.capacity - 1}")
            with torch.no_grad():
                for name in self.names:
                    self.params[name][lane].copy_(params[name])
                    self.bufs[name][lane].copy_(bufs[name]) if bufs else self.bufs[name][lane].zero_()
            self.rows[lane] = lane
            return
        bufs = bufs or {n: torch.zeros_like(t) for n, t in params.items()}
        self._rebuild(lambda name, t, buf: (
            torch.cat([t, params[name][None]]) if t is not None else params[name][None].clone(),
            torch.cat([buf, bufs[name][None]]) if buf is not None else bufs[name][None].clone()))
        self.rows.append(lane)

    def remove(self, lane: int) -> None:
        """Drop the member of ``lane`` (its weights and momentum; a fixed row is zeroed)."""
        i = self.row(lane)
        if self.capacity is not None:
            with torch.no_grad():
                for name in self.names:
                    self.params[name][i].zero_()
                    self.bufs[name][i].zero_()
            self.rows[i] = None
            return
        keep = [j for j in range(len(self.rows)) if j != i]
        self._rebuild(lambda name, t, buf: (t[keep], buf[keep]))
        self.rows.pop(i)

    def _rebuild(self, change) -> None:  # noqa: ANN001
        params, bufs = {}, {}
        for name in self.names:
            t, buf = change(name, self.params[name].detach() if self.params else None,
                            self.bufs.get(name))
            params[name], bufs[name] = t.requires_grad_(True), buf
        self.params, self.bufs = params, bufs

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Each member on its own input: ``x`` is ``(N, G * C, ...)`` (member ``g`` at ``g * C``)."""
        return self.forward_with(self.params, x)

    def forward_with(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """:meth:`__call__` with ``params`` (the stack or some of its rows, e.g. ``t[rows]``)."""
        if self._stacked is not None:
            return self._stacked(params, x)
        g = next(iter(params.values())).shape[0]
        xs = x.unflatten(1, (g, -1)).transpose(0, 1).contiguous()  # (G, N, C, ...); vmap needs it
        out = vmap(lambda p, xi: functional_call(self.base, p, (xi,)))(params, xs)
        return out.transpose(0, 1).flatten(1, 2)

    def member(self, lane: int) -> dict[str, torch.Tensor]:
        """The weights of ``lane``'s seed (copies), as the blueprint's state dict."""
        i = self.row(lane)
        return {n: t[i].detach().clone() for n, t in self.params.items()}

    def zero_grad(self) -> None:  # noqa: D102
        for t in self.params.values():
            t.grad = None

    @torch.no_grad()
    def step(self, mask: torch.Tensor | None = None) -> None:
        """One SGD step of every member from its ``.grad`` (members without one stay); with
        ``mask`` (``(G,)`` bool) only the members where it is True.
        """  # noqa: D205
        for name, t in self.params.items():
            if t.grad is None:
                continue
            buf = self.bufs[name]
            if mask is None:
                buf.mul_(self.momentum).add_(t.grad)
                t.sub_(buf, alpha=self.lr)
            else:
                rows = mask.view(-1, *([1] * (t.dim() - 1)))
                buf.copy_(torch.where(rows, buf * self.momentum + t.grad, buf))
                t.sub_(torch.where(rows, buf * self.lr, 0.0))
