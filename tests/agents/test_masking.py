"""Masks for algorithms that cannot take them: mask in the observation, masked heads, legal exploration."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import assert_wrapper_passes_both_checkers, tiny_kwargs
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import esper_env  # noqa: F401
from agents.masking import (
    MASKED_VALUE,
    ActionMaskObservation,
    MaskedActorCriticPolicy,
    MaskedDQN,
    MaskedPERDQN,
    find_action_masks,
)
from agents.rollout import run_episode
from agents.wrappers import BlueprintCurriculumWrapper


def _env(**kw):
    return ActionMaskObservation(gym.make("Esper-v0", **tiny_kwargs(**kw)))


def test_action_mask_observation_appends_the_current_mask():
    env = _env(germination_gate=True, min_germinate_epoch=3)
    n_base = env.unwrapped.observation_space.shape[0]
    assert env.observation_space.shape == (n_base + env.action_space.n,)
    obs, _ = env.reset(seed=0)
    for _ in range(6):
        mask = env.action_masks()
        np.testing.assert_array_equal(obs[n_base:], mask.astype(np.float32))
        assert obs in env.observation_space
        obs, *_ = env.step(0)
    assert not np.array_equal(obs[n_base:], np.r_[1, np.zeros(env.action_space.n - 1)]), \
        "the germination gate opened, the mask tail must show it"


def test_action_mask_observation_passes_both_checkers():
    assert_wrapper_passes_both_checkers(_env)
    assert_wrapper_passes_both_checkers(lambda: ActionMaskObservation(
        BlueprintCurriculumWrapper(gym.make("Esper-v0", **tiny_kwargs()))))


def test_action_mask_observation_rejects_non_box_observations():
    with pytest.raises(ValueError, match="1-D Box"):
        ActionMaskObservation(gym.make("FrozenLake-v1"))


def _play(model, env, seed=3):
    obs, _ = env.reset(seed=seed)
    done, illegal = False, 0
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, done, _, info = env.step(int(action))
        illegal += info["illegal_action"]
    return illegal


def test_masked_actor_critic_gives_masked_out_actions_no_probability():
    env = _env()
    model = PPO(MaskedActorCriticPolicy, DummyVecEnv([_env]), n_steps=32, batch_size=32, n_epochs=1,
                seed=0, policy_kwargs={"net_arch": [16]})
    model.learn(64)
    obs, _ = env.reset(seed=1)
    for _ in range(8):
        mask = env.action_masks()
        with th.no_grad():
            probs = model.policy.get_distribution(th.as_tensor(obs[None])).distribution.probs[0].numpy()
        assert probs[~mask].max(initial=0.0) < 1e-12 and probs[mask].sum() == pytest.approx(1.0)
        obs, *_ = env.step(int(model.predict(obs, deterministic=False)[0]))
    assert _play(model, env) == 0


def test_plain_ppo_on_masked_observations_still_learns():
    model = PPO("MlpPolicy", DummyVecEnv([_env]), n_steps=16, batch_size=16, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [8]})
    model.learn(32)
    assert model.num_timesteps >= 32


@pytest.mark.parametrize("cls", [MaskedDQN, MaskedPERDQN])
def test_masked_dqn_explores_and_acts_only_legally(cls):
    model = cls("MlpPolicy", DummyVecEnv([_env]), learning_starts=40, batch_size=16, train_freq=1,
                buffer_size=500, exploration_fraction=0.5, seed=0, policy_kwargs={"net_arch": [16]})
    model.learn(150)
    buf = model.replay_buffer
    n = buf.buffer_size if buf.full else buf.pos
    obs, actions = buf.observations[:n, 0], buf.actions[:n, 0, 0]
    n_actions = model.action_space.n
    legal = obs[np.arange(n), obs.shape[1] - n_actions + actions] > 0.5
    assert legal.all(), "every stored action (warm-up, ε-greedy, greedy) must be legal"
    q = model.q_net(th.as_tensor(obs[:5]))
    masks = obs[:5, -n_actions:] > 0.5
    assert (q[th.as_tensor(~masks)] == MASKED_VALUE).all()
    assert _play(model, _env()) == 0


def test_plain_dqn_is_not_masked():
    model = DQN("MlpPolicy", DummyVecEnv([_env]), learning_starts=10, seed=0, policy_kwargs={"net_arch": [8]})
    q = model.q_net(th.as_tensor(_env().reset(seed=0)[0][None]))
    assert (q != MASKED_VALUE).all()


def test_run_episode_takes_masks_from_the_outermost_wrapper():
    env = _env()
    env.reset(seed=0)
    assert np.array_equal(find_action_masks(env), env.unwrapped.action_masks())

    class Spy:
        name = "spy"

        def predict(self, obs, action_masks=None, deterministic=True):
            assert action_masks is not None and action_masks.shape == (env.action_space.n,)
            return 0, None

    assert run_episode(env, Spy(), seed=0).illegal_actions == 0
