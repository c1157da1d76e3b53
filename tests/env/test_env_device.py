"""Device selection: a missing accelerator is a ConfigError at construction; CUDA runs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_kwargs

from esper_env.env import EsperEnv
from esper_env.errors import ConfigError


def test_device_cuda_index_beyond_the_machine_is_a_config_error():
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=rf"device='cuda:{n}' is not available"):
        EsperEnv(device=f"cuda:{n}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_device_cuda_without_cuda_names_the_value_and_what_is_allowed():
    with pytest.raises(ConfigError, match=r"device='cuda' is not available.*allowed: 'cpu'"):
        EsperEnv(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cuda_episode_runs_with_data_and_model_on_the_gpu():
    env = EsperEnv(**tiny_kwargs(device="cuda", n_slots=2))
    obs, info = env.reset(seed=0)
    assert env.trainer.data.train_x.is_cuda
    assert all(p.is_cuda for p in env.trainer.model.parameters())
    done, rng = False, np.random.default_rng(0)
    while not done:
        action = int(rng.choice(np.flatnonzero(env.action_masks())))
        obs, reward, done, _, info = env.step(action)
        assert np.isfinite(obs).all() and np.isfinite(reward)
    assert 0.0 <= info["final_test_acc"] <= 100.0
