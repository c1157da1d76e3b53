"""What a task is, as plain data: :class:`TaskSpec`, :class:`Task`, :class:`LoadRequest`, :class:`Splits`.

Pure (no torch at import): the config validates against these records. A task's loader and host
factory import torch when they are called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class HostSizes(Protocol):
    """The host overrides a config may set (:class:`esper_env.config.HostConfig` has them)."""

    channels: tuple[int, ...] | None
    block_size: int | None
    n_layer: int | None
    n_head: int | None
    n_embd: int | None


@dataclass(frozen=True)
class TaskSpec:
    """Static facts of a task: topology, input shape, classes and the default host.

    CNN tasks use ``in_channels``, ``image_size``, ``host_channels`` and ``pool_layers``; a
    transformer task (``tinytext``) uses ``n_classes`` as its vocabulary size and the
    ``block_size``, ``n_layer``, ``n_head`` and ``n_embd`` of its default host. ``grad_clip`` is
    the task's default gradient-norm clip (None: no clipping), ``seed_lr`` its default seed
    learning rate, ``augment`` whether training batches are augmented (random crop and flip).
    """

    name: str
    topology: str
    in_channels: int
    image_size: int
    n_classes: int
    host_channels: tuple[int, ...] = ()
    pool_layers: int = 0
    block_size: int = 0
    n_layer: int = 0
    n_head: int = 0
    n_embd: int = 0
    grad_clip: float | None = None
    seed_lr: float = 0.05
    augment: bool = False

    @property
    def is_transformer(self) -> bool:
        """A transformer host (text): no channels, no image memory layout."""
        return self.topology == "transformer"

    def sized(self, host: HostSizes) -> TaskSpec:
        """This spec with a config's host overrides applied (``None`` keeps the task's value)."""
        if self.is_transformer:
            return dataclasses.replace(self, **{
                name: getattr(host, name) or getattr(self, name)
                for name in ("block_size", "n_layer", "n_head", "n_embd")})
        return dataclasses.replace(self, host_channels=host.channels or self.host_channels)

    @property
    def n_injection_points(self) -> int:
        """Places a seed slot can sit: one per CNN block, one per transformer block."""
        return self.n_layer if self.is_transformer else len(self.host_channels)


@dataclass(frozen=True)
class LoadRequest:
    """What a task's loader is told: the episode seed (synthetic data) and where data live."""

    episode_seed: int
    synthetic_samples: int = 40
    data_root: str | None = None
    download: bool = False
    block_size: int | None = None


@dataclass
class Splits:
    """A task's train/val/test tensors on the CPU as its loader read them (before any subset).

    ``tensors`` is ``(train_x, train_y, val_x, val_y, test_x, test_y)``; ``mean``/``std`` are the
    training split's per-channel statistics of images stored as ``uint8`` (normalised per batch),
    ``vocab`` the characters of a text task. The loader's tensors may be cached: never change them
    in place.
    """

    tensors: tuple[torch.Tensor, ...]
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    vocab: str | None = None


def _same(spec: TaskSpec) -> TaskSpec:
    return spec


@dataclass(frozen=True)
class Task:
    """One task: its spec, its loader and its host factory (one module each under esper_env.tasks).

    Attributes:
        spec: the static facts (:class:`TaskSpec`).
        load: ``load(request) -> Splits``: the data on the CPU.
        host: ``host(spec, bn_momentum) -> nn.Module``: the host network of a (sized) spec, with
            its ``injection_points``.
        resolve: the spec completed with facts known only once the data are read (tinytext's
            vocabulary size); the identity for the other tasks.
    """

    spec: TaskSpec
    load: Callable[[LoadRequest], Splits]
    host: Callable[[TaskSpec, float], Any]
    resolve: Callable[[TaskSpec], TaskSpec] = _same


def cnn_host(spec: TaskSpec, bn_momentum: float) -> Any:
    """The CNN host of an image task (:class:`esper_env.nn.hosts.CNNHost`)."""
    from esper_env.nn.hosts import CNNHost

    return CNNHost(spec.in_channels, spec.image_size, spec.host_channels, spec.pool_layers,
                   spec.n_classes, bn_momentum)
