"""Seed modules (blueprints) and the catalog that builds them (spec section 7).

Every blueprint is shape-preserving: ``(N, C, H, W) -> (N, C, H, W)`` for the CNN topology (here)
and ``(N, T, C) -> (N, T, C)``, causal, for the transformer topology
(:mod:`esper_env.nn.transformer`). The catalog order per topology is
:data:`esper_env.core.catalog.BLUEPRINT_NAMES` (the action order: ascending parameter count at
widths C >= 2; at C = 1 ``depthwise`` has 12 parameters and ``conv_light`` 11), less
``flex_attention`` where the installed torch has no FlexAttention (:func:`available_blueprints`);
:func:`blueprint_param_count` reports the *actual* count at a slot's width, which is what budgets,
masks and rent use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from esper_env.core.catalog import BLUEPRINT_NAMES
from esper_env.errors import ConfigError, UnknownBlueprint


def group_count(channels: int) -> int:
    """GroupNorm groups for a conv seed: the largest of 32..1 dividing C with >= 16 channels each."""
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 16:
            return g
    return 1


def _group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)``, around a crash of torch's CPU GroupNorm on ``channels_last`` data.

    Its backward pass segfaults when the input needs no gradient but the weights do (what an
    incubating ``norm`` seed does: it sees the detached host activation, see
    :mod:`esper_env.nn.slots`). Such an input is made contiguous first: the same values, the
    kernel every default-layout run uses. Nothing changes in any other case. Every GroupNorm of
    the CNN blueprints goes through here.
    """
    if (x.device.type == "cpu" and not x.requires_grad and torch.is_grad_enabled()
            and norm.weight is not None and norm.weight.requires_grad and not x.is_contiguous()):
        x = x.contiguous()
    return norm(x)


class SeedConvBlock(nn.Module):
    """3x3 conv (no bias) -> GroupNorm -> ReLU, channels preserved.

    Shape:
        Input and output: ``(N, C, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.act(_group_norm(self.norm, self.conv(x)))


class NormSeed(nn.Module):
    """Residual mix toward GroupNorm: ``x + tanh(g) * (GN(x) - x)``, scalar gain g (init 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.norm = nn.GroupNorm(min(32, channels), channels)
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + torch.tanh(self.gain) * (_group_norm(self.norm, x) - x)

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}"


class AttentionSeed(nn.Module):
    """Squeeze-and-excitation gate: ``x * sigmoid(W2 relu(W1 avgpool(x)))``, hidden max(2, C/4)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(2, channels // 4)
        self.channels, self.hidden = channels, hidden
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * w[:, :, None, None]

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}, hidden={self.hidden}"


class DepthwiseSeed(nn.Module):
    """Residual depthwise-separable block: ``x + ReLU(GN(pointwise(depthwise3x3(x))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.GroupNorm(group_count(channels), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + torch.relu(_group_norm(self.norm, self.pointwise(self.depthwise(x))))

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}"


class ConvLightSeed(nn.Module):
    """Residual conv block: ``x + SeedConvBlock(x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.block = SeedConvBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.block(x)

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}"


class ConvHeavySeed(nn.Module):
    """Two residual conv blocks: ``y = x + B1(x); y + B2(y)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.block1 = SeedConvBlock(channels)
        self.block2 = SeedConvBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x + self.block1(x)
        return y + self.block2(y)

    def extra_repr(self) -> str:  # noqa: D102
        return f"channels={self.channels}"


@dataclass(frozen=True)
class BlueprintSpec:
    """A catalog entry: name, topology, factory ``f(channels, **options) -> nn.Module``,
    description, and the keyword ``options`` the factory takes (e.g. ``checkpoint`` for the
    transformer ``mlp``).
    """  # noqa: D205

    name: str
    topology: str
    factory: Callable[..., nn.Module]
    description: str
    options: tuple[str, ...] = ()


def _transformer_catalog() -> dict[str, BlueprintSpec]:
    from esper_env.nn.transformer import TRANSFORMER_BLUEPRINTS

    return {name: BlueprintSpec(name, "transformer", cls, description,
                                ("checkpoint",) if name == "mlp" else ())
            for name, (cls, description) in TRANSFORMER_BLUEPRINTS.items()}


BLUEPRINTS: dict[str, dict[str, BlueprintSpec]] = {
    "cnn": {
        "norm": BlueprintSpec("norm", "cnn", NormSeed, "GroupNorm residual mix, scalar gain"),
        "attention": BlueprintSpec("attention", "cnn", AttentionSeed,
                                   "squeeze-and-excitation channel gate"),
        "depthwise": BlueprintSpec("depthwise", "cnn", DepthwiseSeed,
                                   "depthwise 3x3 + pointwise 1x1 + GroupNorm + ReLU, residual"),
        "conv_light": BlueprintSpec("conv_light", "cnn", ConvLightSeed,
                                    "residual 3x3 conv block"),
        "conv_heavy": BlueprintSpec("conv_heavy", "cnn", ConvHeavySeed,
                                    "two residual 3x3 conv blocks"),
    },
    "transformer": _transformer_catalog(),
}
"""topology -> name -> spec, in action order: ``BLUEPRINT_NAMES`` less what this torch lacks."""

assert all(tuple(b) == tuple(n for n in BLUEPRINT_NAMES[t] if n in b) for t, b in BLUEPRINTS.items())


def available_blueprints(topology: str) -> tuple[str, ...]:
    """The blueprints of ``topology`` that this installation can build, in action order.

    The transformer's ``flex_attention`` is left out where the installed torch has no
    FlexAttention (then the transformer action space has one GERMINATE action fewer).
    """
    if topology not in BLUEPRINTS:
        raise ConfigError(f"topology={topology!r} is invalid; allowed: {sorted(BLUEPRINTS)}")
    return tuple(BLUEPRINTS[topology])


def get_blueprint(topology: str, name: str) -> BlueprintSpec:
    """Catalog entry for ``name``; unknown names raise UnknownBlueprint with a "did you mean"."""
    if topology not in BLUEPRINTS:
        raise ConfigError(f"topology={topology!r} is invalid; allowed: {sorted(BLUEPRINTS)}")
    try:
        return BLUEPRINTS[topology][name]
    except KeyError:
        raise UnknownBlueprint(name, BLUEPRINTS[topology]) from None


def build_blueprint(topology: str, name: str, channels: int, **options: object) -> nn.Module:
    """Instantiate blueprint ``name`` for a slot of ``channels`` channels.

    ``options`` the blueprint does not take are ignored (``checkpoint=True`` is a config-wide
    setting that only the transformer ``mlp`` uses).
    """
    spec = get_blueprint(topology, name)
    return spec.factory(channels, **{k: v for k, v in options.items() if k in spec.options})


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def blueprint_param_count(topology: str, name: str, channels: int) -> int:
    """The actual parameter count of blueprint ``name`` at width ``channels``."""
    with torch.device("meta"):
        return count_parameters(build_blueprint(topology, name, channels))
