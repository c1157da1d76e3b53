"""Episode end (budget termination, final info, stepping after the end) and the reward modes."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import tiny_kwargs

from agents.policies import ScriptedPolicy
from esper_env.core.reward import parameter_rent

FINAL_KEYS = {"final_val_acc", "final_test_acc", "n_fossilized"}


def _masked_random_episode(env: gym.Env, seed: int, action_seed: int
                           ) -> tuple[dict, list[tuple[int, float, bool, bool, dict]]]:
    rng = np.random.default_rng(action_seed)
    _, reset_info = env.reset(seed=seed)
    steps = []
    while True:
        action = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
        _, reward, terminated, truncated, info = env.step(action)
        steps.append((action, reward, terminated, truncated, info))
        if terminated or truncated:
            return reset_info, steps


@pytest.mark.parametrize("max_epochs", [2, 5, 12])
def test_episode_terminates_after_max_epochs_minus_one_steps(max_epochs: int) -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(max_epochs=max_epochs))
    _, info = env.reset(seed=0)
    assert info["epoch"] == 1  # reset trains the first epoch
    for step in range(1, max_epochs):
        obs, reward, terminated, truncated, info = env.step(0)
        assert truncated is False
        assert terminated is (step == max_epochs - 1)
        assert info["epoch"] == step + 1
        assert FINAL_KEYS.isdisjoint(info) or terminated
    assert FINAL_KEYS <= set(info)
    assert obs[env.unwrapped.feature_names.index("epoch_fraction")] == 1.0
    assert info["final_val_acc"] == info["val_acc"]
    assert info["n_fossilized"] == 0
    # The reported test accuracy is the held-out test split's, not validation's.
    _, test_acc = env.unwrapped.trainer.evaluate("test")
    assert info["final_test_acc"] == test_acc
    assert 0.0 <= info["final_test_acc"] <= 100.0


def test_episode_final_info_counts_fossilized_seeds() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2))
    policy = ScriptedPolicy(env, "conv_light", slot=1)
    obs, _ = env.reset(seed=0)
    while True:
        action, _ = policy.predict(obs, action_masks=env.unwrapped.action_masks())
        obs, _, terminated, _, info = env.step(action)
        if terminated:
            break
    assert info["n_fossilized"] == info["stages"].count("FOSSILIZED") == 1
    assert info["stages"][1] == "FOSSILIZED"
    # No bonus for a fossil as such: the default reward pays value added, not fossil counts.
    assert set(info["reward_terms"]) == {"value_added", "rent", "stage_shaping",
                                         "probation_wait", "illegal_action", "rollback",
                                         "diverged"}


def test_step_after_termination_warns_and_returns_terminated_without_training() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(max_epochs=3))
    env.reset(seed=0)
    env.step(0)
    last_obs, _, terminated, _, last_info = env.step(0)
    assert terminated
    params = [p.detach().clone() for p in env.unwrapped.trainer.model.parameters()]
    buffers = [b.detach().clone() for b in env.unwrapped.trainer.model.buffers()]

    with pytest.warns(UserWarning, match="terminated"):
        obs, reward, terminated, truncated, info = env.step(0)
    assert (terminated, truncated, reward) == (True, False, 0.0)
    assert np.array_equal(obs, last_obs)
    assert info["epoch"] == last_info["epoch"] == 3
    assert info["final_val_acc"] == last_info["final_val_acc"]

    # A second call also answers "terminated" (and does not warn again).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        obs, reward, terminated, truncated, _ = env.step(0)
    assert (terminated, truncated, reward) == (True, False, 0.0)
    assert np.array_equal(obs, last_obs)
    model = env.unwrapped.trainer.model
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    # A new episode starts normally.
    _, info = env.reset(seed=1)
    assert info["epoch"] == 1
    _, _, terminated, _, _ = env.step(0)
    assert not terminated


def test_step_after_termination_still_rejects_out_of_space_actions() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(max_epochs=2)).unwrapped
    env.reset(seed=0)
    env.step(0)
    with pytest.raises(gym.error.InvalidAction):
        env.step(env.action_space.n)


# -- reward modes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delta_reward_accuracy_terms_telescope_to_final_minus_initial(seed: int) -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2, reward_mode="delta", max_epochs=15))
    reset_info, steps = _masked_random_episode(env, seed=seed, action_seed=seed + 100)
    previous = reset_info["val_acc"]
    total = rent = 0.0
    for _, reward, _, _, info in steps:
        terms = info["reward_terms"]
        assert set(terms) == {"accuracy_delta", "rent", "illegal_action", "rollback", "diverged"}
        assert terms["accuracy_delta"] == pytest.approx(info["val_acc"] - previous, abs=1e-9)
        assert reward == pytest.approx(terms["accuracy_delta"] + terms["rent"], abs=1e-9)
        previous = info["val_acc"]
        total += terms["accuracy_delta"]
        rent += terms["rent"]
    final = steps[-1][4]["final_val_acc"]
    assert total == pytest.approx(final - reset_info["val_acc"], abs=1e-9)
    # the rent telescopes too: it charges the final model once, not every epoch
    last = steps[-1][4]
    cfg = env.unwrapped.config.reward
    assert rent == pytest.approx(-parameter_rent(last["params_added"], last["host_params"], cfg),
                                 abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_reward_is_zero_until_the_last_step(seed: int) -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2, reward_mode="sparse"))
    _, steps = _masked_random_episode(env, seed=seed, action_seed=seed)
    *middle, (_, last_reward, terminated, _, info) = steps
    assert terminated
    assert [reward for _, reward, *_ in middle] == [0.0] * len(middle)
    assert all(all(v == 0.0 for v in s[4]["reward_terms"].values()) for s in middle)
    rent = 0.5 * math.log2(1 + info["params_added"] / info["host_params"])
    assert info["reward_terms"]["final_accuracy"] == info["final_val_acc"]
    assert info["reward_terms"]["rent"] == pytest.approx(-rent, abs=1e-12)
    assert last_reward == pytest.approx(info["final_val_acc"] - rent, abs=1e-9)


def test_sparse_reward_charges_rent_of_a_grown_model_only_at_the_end() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(reward_mode="sparse"))
    policy = ScriptedPolicy(env, "conv_heavy")
    obs, _ = env.reset(seed=0)
    rewards = []
    while True:
        action, _ = policy.predict(obs, action_masks=env.unwrapped.action_masks())
        obs, reward, terminated, _, info = env.step(action)
        rewards.append(reward)
        if terminated:
            break
    assert info["params_added"] > 0
    assert info["reward_terms"]["rent"] < 0.0
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)


def test_report_test_acc_reports_every_epoch_and_changes_nothing_else():
    plain = gym.make("Esper-v0", **tiny_kwargs())
    reporting = gym.make("Esper-v0", **tiny_kwargs(report_test_acc=True))
    o1, i1 = plain.reset(seed=4)
    o2, i2 = reporting.reset(seed=4)
    assert "test_acc" not in i1 and 0.0 <= i2.pop("test_acc") <= 100.0
    actions = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    for a in actions:
        s1, s2 = plain.step(a), reporting.step(a)
        np.testing.assert_array_equal(s1[0], s2[0])
        assert s1[1:4] == s2[1:4]
        info2 = dict(s2[4])
        test_acc = info2.pop("test_acc")
        assert set(info2) == set(s1[4]) and info2["val_acc"] == s1[4]["val_acc"]
    assert s2[2] and test_acc == s2[4]["final_test_acc"] == s1[4]["final_test_acc"]
