"""Host networks: deliberately weak so that growth can matter (spec section 4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True, slots=True)
class InjectionPoint:
    """Where a seed slot may sit: after host block ``index``.

    ``shape`` is one sample's activation there: ``(C, H, W)`` in a CNN, ``(T, C)`` in a
    transformer (``T`` = the host's ``block_size``; shorter sequences pass too). ``channels`` is
    the feature width ``C`` that seeds are built for.
    """

    index: int
    channels: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        """Spatial size (CNN: height = width; transformer: the longest sequence)."""
        return self.shape[1] if len(self.shape) == 3 else self.shape[0]


class ConvBlock(nn.Module):
    """3x3 conv (no bias) -> BatchNorm -> ReLU, then an optional 2x2 max-pool.

    Shape:
        Input ``(N, C_in, H, W)``; output ``(N, C_out, H, W)`` or ``(N, C_out, H/2, W/2)`` pooled.
    """

    def __init__(self, in_channels: int, out_channels: int, pool: bool,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.pool(self.act(self.norm(self.conv(x))))


class CNNHost(nn.Module):
    """Blocks of conv/BN/ReLU with widths ``channels``, pooling after the first ``pool_layers``.

    Global average pool and a linear head follow. An injection point sits after every block
    (after its pooling).

    Args:
        in_channels: image channels.
        image_size: input height = width.
        channels: output width of each block.
        pool_layers: how many leading blocks are followed by a 2x2 max-pool.
        n_classes: classes of the linear head.
        bn_momentum: BatchNorm running-statistics momentum.
    """

    topology = "cnn"

    def __init__(self, in_channels: int, image_size: int, channels: tuple[int, ...],
                 pool_layers: int, n_classes: int, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.n_classes = n_classes
        blocks, points, size, prev = [], [], image_size, in_channels
        for i, c in enumerate(self.channels):
            pool = i < pool_layers and size >= 2
            blocks.append(ConvBlock(prev, c, pool, bn_momentum))
            size = size // 2 if pool else size
            points.append(InjectionPoint(i, c, (c, size, size)))
            prev = c
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(prev, n_classes)
        self.injection_points: tuple[InjectionPoint, ...] = tuple(points)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """What the first block sees: the images themselves (a CNN host has no stem)."""
        return x

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        """Global average pool and the linear head."""
        return self.head(h.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The bare host (no slots)."""
        for block in self.blocks:
            x = block(x)
        return self.forward_head(x)

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}, n_classes={self.n_classes}"
