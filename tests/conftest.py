"""Shared fixtures: a tiny fast config, Hypothesis profiles, a global-RNG guard."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

from esper_env.config import EsperConfig

settings.register_profile("ci", derandomize=True, max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def tiny_kwargs(**overrides: object) -> dict:
    """make() kwargs of a fast env: synthetic task, short episodes, lifecycle reachable quickly."""
    kw: dict = dict(task="synthetic", max_epochs=12, germination_gate=False, min_cull_age=2,
                    blending_epochs=2, embargo_epochs=1,
                    gates={"min_training_epochs": 1, "min_gradient_ratio": 0.0,
                           "min_probation_contribution": -100.0,
                           "min_fossilize_contribution": -100.0})
    kw.update(overrides)
    return kw


TINY_CLI = ["--task", "synthetic", "--max-epochs", "12", "--env-kwarg", "germination_gate=false",
            "--env-kwarg", "min_cull_age=2", "--env-kwarg", "blending_epochs=2", "--env-kwarg",
            "embargo_epochs=1", "--env-kwarg",
            "gates={min_training_epochs: 1, min_gradient_ratio: 0.0, min_probation_contribution: -100.0, "
            "min_fossilize_contribution: -100.0}"]
"""tiny_kwargs() as esper-train / esper-eval / esper-bench command-line options."""


def rules(cfg: EsperConfig, n_classes: int = 10):
    """The lifecycle and mask rules of ``cfg`` on a CNN task (what the core functions take)."""
    from esper_env.core.catalog import BLUEPRINT_NAMES
    from esper_env.core.episode import EpisodeParams

    return EpisodeParams.from_config(cfg, BLUEPRINT_NAMES["cnn"], n_classes, transformer=False)


@pytest.fixture
def tiny_config() -> EsperConfig:
    """A fast config (synthetic task) in which a whole lifecycle fits in a dozen epochs."""
    return EsperConfig(**tiny_kwargs())


@pytest.fixture
def rng_guard():
    """Fail if the code under test changes the global random / numpy / torch RNG states."""
    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    assert random.getstate() == py, "global `random` state changed"
    after = np.random.get_state()
    assert after[0] == npy[0] and np.array_equal(after[1], npy[1]) and after[2:] == npy[2:], \
        "global numpy RNG state changed"
    assert torch.equal(torch.get_rng_state(), th), "global torch RNG state changed"


def assert_wrapper_passes_both_checkers(make_env) -> None:
    """Gymnasium's and SB3's check_env pass on ``make_env()`` (a wrapper) with no warning but the
    note that a wrapped env was given (which is the point)."""
    import warnings

    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(make_env(), skip_render_check=True)
        sb3_check_env(make_env())
    unexpected = [str(w.message) for w in caught if "env.unwrapped" not in str(w.message)]
    assert not unexpected, unexpected


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny-model tests (extra threads only add sync overhead)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def _torch_layer_tests_use_one_thread(request):
    """Every module under tests/nn runs with one torch thread (its models are tiny).

    Here rather than in a tests/nn/conftest.py: two conftest modules would share the module name
    ``conftest``, and ``pytest tests/env/x.py tests/nn/y.py`` could then no longer import
    ``tiny_kwargs`` from this one.
    """
    if request.path.parent.name == "nn" and request.path.parent.parent.name == "tests":
        request.getfixturevalue("one_torch_thread")
    yield
