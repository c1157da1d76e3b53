"""MorphogeneticModel: a host plus seed slots at distinct injection points."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from esper_env.nn.slots import SeedSlot


class MorphogeneticModel(nn.Module):
    """Host network with ``len(points)`` seed slots.

    Args:
        host: a host exposing ``forward_stem``, ``blocks``, ``forward_head`` and
            ``injection_points`` (:class:`~esper_env.nn.hosts.CNNHost` or
            :class:`~esper_env.nn.transformer.TransformerHost`).
        points: injection-point indices, one per slot (slot ``i`` sits after block ``points[i]``).
        blend: blend operator of every slot.

    The host optimiser must only ever see :meth:`host_parameters` (never seed parameters).
    """

    def __init__(self, host: nn.Module, points: Sequence[int], blend: str) -> None:
        super().__init__()
        self.host = host
        ips = host.injection_points
        self.points = tuple(points)
        if len(set(self.points)) != len(self.points) or not all(
                isinstance(p, int) and 0 <= p < len(ips) for p in self.points):
            raise ValueError(f"points={self.points} is invalid; allowed: distinct indices in "
                             f"0..{len(ips) - 1}")
        self.slots = nn.ModuleList(SeedSlot(ips[p].channels, ips[p].shape, blend) for p in points)
        self._slot_after = {p: i for i, p in enumerate(self.points)}

    def host_parameters(self) -> list[nn.Parameter]:
        """Parameters of the host only."""
        return list(self.host.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.host.forward_stem(x)
        for i, block in enumerate(self.host.blocks):
            x = block(x)
            s = self._slot_after.get(i)
            if s is not None:
                x = self.slots[s](x)
        return self.host.forward_head(x)

    def _forward_from(self, block: int, h: torch.Tensor) -> torch.Tensor:
        """Continue the forward pass from the output of slot-bearing block ``block``."""
        blocks = self.host.blocks
        for i in range(block + 1, len(blocks)):
            h = blocks[i](h)
            s = self._slot_after.get(i)
            if s is not None:
                h = self.slots[s](h)
        return self.host.forward_head(h)

    def forward_ablations(self, x: torch.Tensor, ablate: Sequence[int]
                          ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Logits of the real model and of the model with each slot in ``ablate`` switched off.

        The layers before a slot run once and are shared (the activation arriving at slot ``k`` is
        the same with or without its seed); only the layers after it run again. Other slots keep
        their real alpha.
        """
        pre: dict[int, torch.Tensor] = {}
        wanted = set(ablate)
        h = self.host.forward_stem(x)
        for i, block in enumerate(self.host.blocks):
            h = block(h)
            s = self._slot_after.get(i)
            if s is not None:
                if s in wanted:
                    pre[s] = h
                h = self.slots[s](h)
        real = self.host.forward_head(h)
        ablated = {s: self._forward_from(self.points[s], pre[s]) for s in ablate}
        return real, ablated
