"""The task registry (esper_env.tasks): one module per task, each with spec, loader and host factory."""

from __future__ import annotations

import importlib

import pytest

from esper_env.config import EsperConfig, HostConfig
from esper_env.errors import ConfigError
from esper_env.nn.data import load_task
from esper_env.tasks import TASKS, build_host, get_task, task_names, task_spec

MODULES = ("digits", "synthetic", "cifar10", "tinytext")


def test_the_registry_holds_one_module_per_task() -> None:
    assert task_names() == MODULES
    for name in MODULES:
        module = importlib.import_module(f"esper_env.tasks.{name}")
        assert module.TASK is TASKS[name] and module.TASK.spec is module.SPEC
        assert module.SPEC.name == name


def test_the_config_accepts_exactly_the_registered_tasks() -> None:
    for name in MODULES:
        assert EsperConfig(task=name).task.name == name
    with pytest.raises(ConfigError, match=r"unknown task 'digit'; did you mean 'digits'\?"):
        EsperConfig(task="digit")
    with pytest.raises(ConfigError, match="Allowed: 'digits', 'synthetic', 'cifar10', 'tinytext'"):
        get_task("mnist")


@pytest.mark.parametrize("name", MODULES)
def test_each_host_factory_builds_the_sized_host_with_its_injection_points(name: str) -> None:
    spec = task_spec(name)
    default = build_host(spec, HostConfig(), 0.5)
    assert len(default.injection_points) == spec.n_injection_points
    if spec.is_transformer:
        host = HostConfig(n_layer=3, n_embd=16)
        assert spec.sized(host).n_layer == 3 and spec.sized(host).n_head == spec.n_head
    else:
        host = HostConfig(channels=(2, 4, 6, 8))
        assert spec.sized(host).host_channels == (2, 4, 6, 8)
    sized = build_host(spec, host, 0.5)
    assert len(sized.injection_points) == spec.sized(host).n_injection_points == (
        3 if spec.is_transformer else 4)
    assert sum(p.numel() for p in sized.parameters()) != sum(
        p.numel() for p in default.parameters())


def test_tinytext_spec_is_completed_with_its_vocabulary_only_once_resolved() -> None:
    assert TASKS["tinytext"].spec.n_classes == 0
    data = load_task("tinytext", episode_seed=0, device="cpu", block_size=8, train_subset=3)
    assert task_spec("tinytext").n_classes == len(data.vocab) > 50
    assert data.spec == task_spec("tinytext")


def test_the_transformer_defaults_live_once_in_the_tinytext_spec() -> None:
    # the config's check of n_embd against n_head reads the spec's defaults
    spec = TASKS["tinytext"].spec
    with pytest.raises(ConfigError, match=rf"n_embd={spec.n_embd + 1} .*n_head={spec.n_head}"):
        EsperConfig(task="tinytext", n_embd=spec.n_embd + 1)
    with pytest.raises(ConfigError, match="n_layer=3 .*None unless the task has a transformer host"
                                          " \\('tinytext'\\)"):
        EsperConfig(task="digits", n_layer=3)
