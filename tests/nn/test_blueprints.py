"""Blueprint catalog: shapes, gradients, parameter counts, order and unknown names (spec 7)."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn

from esper_env.core.catalog import BLUEPRINT_NAMES
from esper_env.errors import EsperError, UnknownBlueprint
from esper_env.nn.blueprints import (
    BLUEPRINTS,
    blueprint_param_count,
    build_blueprint,
    get_blueprint,
)
from esper_env.nn.hosts import CNNHost
from esper_env.tasks import TASKS

CNN_NAMES = tuple(BLUEPRINTS["cnn"])
CNN_TASKS = sorted(name for name, t in TASKS.items() if t.spec.topology == "cnn")


def default_host(task: str) -> CNNHost:
    spec = TASKS[task].spec
    return CNNHost(spec.in_channels, spec.image_size, spec.host_channels, spec.pool_layers,
                   spec.n_classes)


def slot_shapes() -> list[pytest.param]:
    """(channels, size) of every injection point of both default hosts, plus wider slots."""
    params = []
    for task in CNN_TASKS:
        for ip in default_host(task).injection_points:
            label = f"{task}-ip{ip.index}-c{ip.channels}"
            params.append(pytest.param(ip.channels, ip.size, id=label))
    params += [pytest.param(16, 4, id="c16"), pytest.param(32, 4, id="c32")]
    return params


SLOT_SHAPES = slot_shapes()


def build(name: str, channels: int, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_blueprint("cnn", name, channels)


def sample(channels: int, size: int, seed: int = 1, batch: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, size, size, generator=g)


@pytest.mark.parametrize("channels,size", SLOT_SHAPES)
@pytest.mark.parametrize("name", CNN_NAMES)
def test_blueprint_output_shape_equals_input_shape(name: str, channels: int, size: int) -> None:
    x = sample(channels, size)
    out = build(name, channels)(x)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("channels,size", SLOT_SHAPES)
@pytest.mark.parametrize("name", CNN_NAMES)
def test_blueprint_backward_reaches_every_parameter(name: str, channels: int, size: int) -> None:
    module = build(name, channels)
    x = sample(channels, size).requires_grad_(True)
    # A random projection: a plain .sum() would give GroupNorm affine weights an exactly-zero grad.
    w = sample(channels, size, seed=7)
    (module(x) * w).sum().backward()
    params = dict(module.named_parameters())
    assert params, f"{name} has no parameters"
    for pname, p in params.items():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
        assert p.grad.abs().sum().item() > 0.0, f"{name}.{pname} got an all-zero gradient"
    assert x.grad is not None and x.grad.abs().sum().item() > 0.0


@pytest.mark.parametrize("name", CNN_NAMES)
def test_blueprint_trains_channels_last_on_a_detached_input_like_the_default_layout(name: str) -> None:
    """An incubating seed sees the detached host activation. torch's CPU GroupNorm crashes
    (segfault) in backward on such a channels_last input; the blueprints route around it."""
    x, w = sample(32, 4), sample(32, 4, seed=7)
    grads = []
    for layout in (torch.contiguous_format, torch.channels_last):
        module = build(name, 32).to(memory_format=layout)
        (module(x.contiguous(memory_format=layout)) * w).sum().backward()
        grads.append([p.grad for p in module.parameters()])
    for default, nhwc in zip(*grads, strict=True):
        assert torch.allclose(default, nhwc, rtol=1e-4, atol=1e-4 * float(default.abs().max()))


@pytest.mark.parametrize("channels,size", SLOT_SHAPES)
@pytest.mark.parametrize("name", CNN_NAMES)
def test_blueprint_param_count_matches_module(name: str, channels: int, size: int) -> None:
    module = build(name, channels)
    real = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert real > 0
    assert blueprint_param_count("cnn", name, channels) == real


@pytest.mark.parametrize("name", CNN_NAMES)
def test_blueprint_extra_repr_non_empty(name: str) -> None:
    module = build(name, 8)
    assert module.extra_repr().strip() != ""
    assert "8" in module.extra_repr()


def test_blueprint_catalog_order_equals_action_order() -> None:
    assert set(BLUEPRINTS) == set(BLUEPRINT_NAMES)
    for topology, names in BLUEPRINT_NAMES.items():
        assert tuple(BLUEPRINTS[topology]) == tuple(n for n in names if n in BLUEPRINTS[topology])
    assert tuple(BLUEPRINTS["cnn"]) == BLUEPRINT_NAMES["cnn"]
    assert set(BLUEPRINT_NAMES["transformer"]) - set(BLUEPRINTS["transformer"]) <= {"flex_attention"}
    for name, spec in BLUEPRINTS["cnn"].items():
        assert spec.name == name and spec.topology == "cnn"
        assert get_blueprint("cnn", name) is spec


@pytest.mark.parametrize("task", CNN_TASKS)
def test_blueprint_catalog_strictly_ascending_param_count(task: str) -> None:
    points = default_host(task).injection_points
    assert points
    for ip in points:
        counts = [blueprint_param_count("cnn", n, ip.channels) for n in BLUEPRINT_NAMES["cnn"]]
        assert all(a < b for a, b in pairwise(counts)), \
            f"{task} injection point {ip.index} (C={ip.channels}): counts {counts} not ascending"


def test_blueprint_catalog_order_by_width() -> None:
    """Ascending at every width >= 2; at width 1 exactly depthwise and conv_light swap (documented)."""
    names = BLUEPRINT_NAMES["cnn"]
    for c in (*range(2, 17), 24, 32, 64):
        counts = [blueprint_param_count("cnn", n, c) for n in names]
        assert all(a < b for a, b in pairwise(counts)), f"C={c}: counts {counts} not ascending"
    at_one = dict(zip(names, (blueprint_param_count("cnn", n, 1) for n in names), strict=True))
    assert sorted(names, key=at_one.get) == ["norm", "attention", "conv_light", "depthwise", "conv_heavy"]
    assert (at_one["depthwise"], at_one["conv_light"]) == (12, 11)


def test_one_channel_slot_charges_actual_counts() -> None:
    """With a 1-channel slot the budget mask and params_added use the real counts, not the order."""
    import gymnasium as gym

    import esper_env  # noqa: F401
    from esper_env.core.actions import Action, ActionKind

    kwargs = dict(task="synthetic", host_channels=(1, 2, 4), injection_points=(0,), max_epochs=6,
                  germination_gate=False, torch_threads=1)
    host = gym.make("Esper-v0", **kwargs).unwrapped
    host.reset(seed=0)
    n_host = host.trainer.host_params
    env = gym.make("Esper-v0", **kwargs, param_budget=11.5 / n_host)  # room for 11, not 12
    u = env.unwrapped
    env.reset(seed=0)
    mask = u.action_masks()
    germ = {b: u.codec.encode(Action(ActionKind.GERMINATE, 0, b)) for b in u.blueprints}
    legal = {b for b, i in germ.items() if mask[i]}
    assert legal == {"norm", "attention", "conv_light"}  # depthwise (12) is over, conv_light (11) fits
    *_, info = env.step(germ["conv_light"])
    assert not info["illegal_action"] and info["params_added"] == 11


def test_blueprint_param_count_leaves_global_rng(rng_guard) -> None:
    for name in CNN_NAMES:
        blueprint_param_count("cnn", name, 8)


def test_blueprint_unknown_name_suggests_close_match() -> None:
    with pytest.raises(UnknownBlueprint) as info:
        get_blueprint("cnn", "conv_hevy")
    assert "did you mean 'conv_heavy'" in str(info.value)
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, EsperError)
    assert info.value.name == "conv_hevy"


def test_blueprint_unknown_name_is_key_error_for_build() -> None:
    with pytest.raises(KeyError, match="did you mean 'conv_heavy'"):
        build_blueprint("cnn", "conv_hevy", 8)
