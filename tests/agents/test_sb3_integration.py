"""Esper-v0 plugs into Stable-Baselines3 and sb3-contrib the way users will call them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from conftest import tiny_kwargs
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.env_util import make_vec_env

import esper_env  # noqa: F401


def test_make_vec_env_exposes_action_masks_through_the_wrappers():
    venv = make_vec_env("Esper-v0", n_envs=2, seed=0, env_kwargs=tiny_kwargs())
    venv.reset()
    masks = get_action_masks(venv)
    assert masks.shape == (2, venv.action_space.n) and masks.dtype == bool
    assert masks[:, 0].all()                    # WAIT is always legal
    assert masks[:, 1:6].all()                  # germination gate off in the tiny config
    venv.close()


def test_maskable_ppo_learns_a_few_steps_and_only_takes_legal_actions():
    venv = make_vec_env("Esper-v0", n_envs=2, seed=0, env_kwargs=tiny_kwargs())
    model = MaskablePPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0,
                        policy_kwargs={"net_arch": [16]})
    model.learn(64)
    assert model.num_timesteps >= 64
    env = gym.make("Esper-v0", **tiny_kwargs())
    obs, _ = env.reset(seed=1)
    done, illegal = False, 0
    while not done:
        action, _ = model.predict(obs, action_masks=env.unwrapped.action_masks())
        obs, _, done, _, info = env.step(int(action))
        illegal += info["illegal_action"]
    assert illegal == 0
    assert np.isfinite(obs).all()


def test_run_episode_evaluates_an_unmasked_sb3_model():
    from stable_baselines3 import PPO

    from agents.rollout import run_episode

    env = gym.make("Esper-v0", **tiny_kwargs())
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [8]})
    result = run_episode(env, model, seed=2, name="ppo")
    assert result.policy == "ppo" and result.length == env.unwrapped.config.task.max_epochs - 1
    assert 0.0 <= result.final_test_acc <= 100.0
