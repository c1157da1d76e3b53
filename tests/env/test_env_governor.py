"""Governor through the env: a fault rolls back, a second fault diverges (spec section 12)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import tiny_kwargs

from agents.policies import ScriptedPolicy
from esper_env.core.lifecycle import LIVE_STAGES


def _check_obs(env: gym.Env, obs: np.ndarray) -> None:
    assert np.isfinite(obs).all()
    assert env.observation_space.contains(obs)


def _germinate_both(env: gym.Env) -> None:
    names = env.unwrapped.action_names
    env.step(names.index("GERMINATE_conv_light@0"))
    env.step(names.index("GERMINATE_norm@1"))


@pytest.mark.parametrize(("reward", "penalty"), [({}, 10.0), ({"rollback_penalty": 3.5}, 3.5)])
def test_governor_fault_triggers_rollback_and_episode_continues(reward: dict, penalty: float
                                                               ) -> None:
    fault = 5
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2, fault_epochs=(fault,), reward=reward))
    env.reset(seed=0)
    host_at_reset = {k: v.clone() for k, v in
                     env.unwrapped.trainer.model.host.state_dict().items()}
    _germinate_both(env)  # epochs 2 and 3; both seeds are live at the fault
    obs, reward_value, terminated, _, info = env.step(0)
    assert info["epoch"] == 4 and not info["rollback"]
    assert all(env.unwrapped.slots[k].stage in LIVE_STAGES for k in range(2))

    obs, reward_value, terminated, truncated, info = env.step(0)
    assert info["epoch"] == fault
    assert info["rollback"] is True and info["diverged"] is False
    assert (terminated, truncated) == (False, False)
    assert info["reward_terms"]["rollback"] == -penalty
    assert math.isfinite(reward_value)
    assert reward_value == pytest.approx(sum(info["reward_terms"].values()), abs=1e-9)
    culls = [(e["slot"], e["to"], e["cause"]) for e in info["events"] if e["to"] == "CULLED"]
    assert culls == [(0, "CULLED", "rollback"), (1, "CULLED", "rollback")]
    assert all(s not in ("TRAINING", "BLENDING", "PROBATIONARY") for s in info["stages"])
    assert info["params_added"] == 0
    _check_obs(env, obs)
    trainer = env.unwrapped.trainer
    assert trainer.parameters_finite()
    assert math.isfinite(info["val_loss"]) and math.isfinite(info["train_loss"])
    # Rolled back to the last good snapshot: the one taken at reset (snapshots every 5 epochs).
    restored = trainer.model.host.state_dict()
    assert all(torch.equal(host_at_reset[k], restored[k]) for k in host_at_reset)

    while not terminated:
        obs, reward_value, terminated, truncated, info = env.step(0)
        _check_obs(env, obs)
        assert info["rollback"] is False and info["reward_terms"]["rollback"] == 0.0
        assert math.isfinite(reward_value)
    assert info["epoch"] == env.unwrapped.config.task.max_epochs
    assert info["diverged"] is False and not truncated
    assert trainer.parameters_finite()


def test_governor_rollback_keeps_fossilized_seed() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(fault_epochs=(9,)))
    policy = ScriptedPolicy(env, "conv_light")
    obs, info = env.reset(seed=0)
    while info["epoch"] < 9:
        action, _ = policy.predict(obs, action_masks=env.unwrapped.action_masks())
        obs, _, _, _, info = env.step(action)
    assert info["rollback"] is True
    assert info["stages"] == ["FOSSILIZED"]
    assert info["events"] == []  # only live seeds are culled
    assert info["params_added"] > 0
    assert env.unwrapped.trainer.parameters_finite()
    _check_obs(env, obs)


@pytest.mark.parametrize("fault", [2, 6])
def test_governor_second_fault_diverges_and_terminates(fault: int) -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(fault_epochs=(fault, fault + 2)))
    env.reset(seed=1)
    action = env.unwrapped.action_names.index("GERMINATE_attention@0")
    history = []
    terminated = False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(action)
        action = 0
        history.append((info["epoch"], info["rollback"], info["diverged"], terminated))
        _check_obs(env, obs)
        assert math.isfinite(reward)
        assert reward == pytest.approx(sum(info["reward_terms"].values()), abs=1e-9)
    assert [h for h in history if h[1] or h[2]] == [(fault, True, False, False),
                                                    (fault + 2, False, True, True)]
    assert history[-1][0] == fault + 2 < env.unwrapped.config.task.max_epochs
    assert not truncated
    assert info["reward_terms"]["diverged"] == -env.unwrapped.config.reward.diverged_penalty
    assert info["reward_terms"]["rollback"] == 0.0
    assert {"final_val_acc", "final_test_acc", "n_fossilized"} <= set(info)
    assert env.unwrapped.action_masks().tolist() == [True] + [False] * (env.action_space.n - 1)


def test_governor_more_rollbacks_allowed_keeps_episode_alive() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(fault_epochs=(4, 6), governor={"max_rollbacks": 2}))
    env.reset(seed=0)
    rollbacks = []
    terminated = False
    while not terminated:
        obs, _, terminated, _, info = env.step(0)
        _check_obs(env, obs)
        if info["rollback"]:
            rollbacks.append(info["epoch"])
        assert not info["diverged"]
    assert rollbacks == [4, 6]
    assert info["epoch"] == env.unwrapped.config.task.max_epochs


def test_governor_disabled_fault_terminates_as_diverged() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(fault_epochs=(3,), governor={"enabled": False}))
    env.reset(seed=0)
    env.step(0)
    obs, reward, terminated, _, info = env.step(0)
    assert info["epoch"] == 3
    assert terminated and info["diverged"] is True and info["rollback"] is False
    assert math.isfinite(reward)
    _check_obs(env, obs)


def _scripted_until_fossilized(env: gym.Env, seed: int) -> dict:
    policy = ScriptedPolicy(env, "conv_light")
    obs, info = env.reset(seed=seed)
    terminated = False
    while not terminated and info["stages"] != ["FOSSILIZED"]:
        action, _ = policy.predict(obs, action_masks=env.unwrapped.action_masks())
        obs, _, terminated, _, info = env.step(action)
    return info


def test_governor_fault_in_the_fossilize_epoch_leaves_finite_model() -> None:
    # The epoch in which FOSSILIZE is applied panics: the fresh fossil trained through the NaN
    # epoch and is not in the last snapshot, so a rollback must not keep its NaN weights.
    fossil_epoch = _scripted_until_fossilized(gym.make("Esper-v0", **tiny_kwargs()), 0)["epoch"]
    env = gym.make("Esper-v0", **tiny_kwargs(fault_epochs=(fossil_epoch,)))
    info = _scripted_until_fossilized(env, 0)
    assert info["epoch"] == fossil_epoch and info["rollback"] is True
    assert env.unwrapped.trainer.parameters_finite()
    assert math.isfinite(info["val_loss"])
    _, _, terminated, _, info = env.step(0)
    assert info["diverged"] is False and not terminated


@pytest.mark.parametrize("mode", ["contribution", "delta", "sparse"])
def test_divergence_in_reset_epoch_ends_at_the_first_step_with_penalty_and_final_keys(mode: str) -> None:
    """host_lr=1e9 diverges inside reset: a defined terminal first step, not an "after the end" one."""
    import warnings

    from agents.rollout import run_episode

    env = gym.make("Esper-v0", **tiny_kwargs(host_lr=1e9, reward_mode=mode, torch_threads=1))
    obs, info = env.reset(seed=0)
    assert info["diverged"] is True
    _check_obs(env, obs)
    mask = env.unwrapped.action_masks()
    assert mask.tolist() == [True] + [False] * (env.action_space.n - 1)  # only WAIT
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "step() called after the episode terminated"
        obs, reward, terminated, truncated, step_info = env.step(0)
    assert terminated and not truncated and step_info["diverged"] is True
    penalty = env.unwrapped.config.reward.diverged_penalty
    assert step_info["reward_terms"]["diverged"] == -penalty
    assert reward == pytest.approx(sum(step_info["reward_terms"].values()), abs=1e-9)
    assert {"final_val_acc", "final_test_acc", "n_fossilized"} <= set(step_info)
    _check_obs(env, obs)
    # reset's and step's infos share no object (Gymnasium's checker warns otherwise)
    for key, value in info.items():
        if isinstance(value, (list, dict)):
            assert value is not step_info.get(key)
    # a later step is the usual after-the-end no-op, returning an independent copy
    with pytest.warns(UserWarning, match="after the episode terminated"):
        *_, again = env.step(0)
    assert repr(again) == repr(step_info)  # equal (val_loss is NaN, so compared as text)
    assert again["events"] is not step_info["events"]
    assert again["reward_terms"] is not step_info["reward_terms"]
    result = run_episode(env, ScriptedPolicy(env, "norm", 0), 0)  # used to raise KeyError
    assert result.length == 1 and math.isfinite(result.final_val_acc)


# -- rollback restores the last accepted state, seeds included (issue: record, replay, fork) -------
def _to_epoch(env: gym.Env, names: list[str], epoch: int) -> dict:
    """Play ``names`` (then WAIT) until ``info['epoch'] == epoch``."""
    known = env.unwrapped.action_names
    queue = [known.index(n) for n in names]
    info: dict = {"epoch": 1}
    while info["epoch"] < epoch:
        action = queue.pop(0) if queue else 0
        _, _, _, _, info = env.step(action)
    return info


def test_rollback_restores_the_blended_seed_the_host_had_adapted_to() -> None:
    """A snapshot taken while a seed is blended holds that seed: a rollback restores the model as
    the governor accepted it (same validation loss and accuracy), not a host without its seed."""
    script = ["GERMINATE_conv_light@0"]
    kwargs = tiny_kwargs(blending_epochs=4, max_epochs=14)
    reference = gym.make("Esper-v0", **kwargs)
    reference.reset(seed=2)
    at_snapshot = _to_epoch(reference, script, 5)  # snapshot_every=5: taken at the end of epoch 5
    assert at_snapshot["stages"] in (["BLENDING"], ["PROBATIONARY"])
    expected = reference.unwrapped.trainer.evaluate("val")

    env = gym.make("Esper-v0", **tiny_kwargs(blending_epochs=4, max_epochs=14, fault_epochs=(7,)))
    env.reset(seed=2)
    info = _to_epoch(env, script, 7)
    assert info["rollback"] is True and info["diverged"] is False
    assert info["stages"] == at_snapshot["stages"]
    assert info["seed_ids"] == at_snapshot["seed_ids"]
    assert info["alphas"] == at_snapshot["alphas"]
    assert (info["val_loss"], info["val_acc"]) == expected
    assert [e["cause"] for e in info["events"]] in ([], ["rollback"])
    slot = env.unwrapped.trainer.model.slots[0]
    assert slot.seed is not None and slot.alpha == at_snapshot["alphas"][0]
    _, _, terminated, _, info = env.step(0)  # and the episode goes on with the restored seed
    assert not info["rollback"] and not terminated and info["stages"][0] != "DORMANT"


def test_rollback_culls_a_seed_germinated_after_the_snapshot_and_restores_an_older_one() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2, max_epochs=14, blending_epochs=4,
                                             fault_epochs=(8,)))
    env.reset(seed=0)
    info = _to_epoch(env, ["GERMINATE_conv_light@0"], 5)
    good = info["seed_ids"]
    assert good[0] is not None and good[1] is None
    info = _to_epoch(env, ["GERMINATE_norm@1"], 7)  # seed1 in slot 1, after the snapshot
    assert info["seed_ids"][1] is not None
    info = _to_epoch(env, [], 8)
    assert info["rollback"] is True
    assert info["seed_ids"] == [good[0], None]
    culls = [(e["slot"], e["to"], e["cause"]) for e in info["events"]]
    assert (1, "CULLED", "rollback") in culls
    assert env.unwrapped.trainer.model.slots[1].seed is None
    assert env.unwrapped.trainer.model.slots[0].seed is not None


def test_governor_consecutive_spike_counter_restarts_after_a_rollback() -> None:
    from dataclasses import replace

    env = gym.make("Esper-v0", **tiny_kwargs(fault_epochs=(4,)))
    env.reset(seed=0)
    env.step(0)
    env.step(0)
    inner = env.unwrapped
    state = inner.state  # two spikes in a row just before
    inner._state = replace(state, governor=replace(state.governor, spikes=2))
    _, _, _, _, info = env.step(0)
    assert info["rollback"] is True
    assert inner.state.governor.spikes == 0


# -- faults never reach the agent as exceptions ----------------------------------------------------
def _break_seed(env: gym.Env, slot: int, when: str = "always") -> None:
    """Make slot ``slot``'s seed raise in its forward (``when``: always, or only in eval mode)."""
    seed = env.unwrapped.trainer.model.slots[slot].seed
    original = seed.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if when == "always" or not seed.training:
            raise RuntimeError("seed forward exploded")
        return original(x)

    seed.forward = forward


def test_a_seed_whose_forward_raises_is_rolled_back_not_raised() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2))
    env.reset(seed=0)
    env.step(env.unwrapped.action_names.index("GERMINATE_conv_light@1"))
    _break_seed(env, 1)
    with pytest.warns(UserWarning, match="seed forward exploded"):
        obs, reward, terminated, _, info = env.step(0)
    assert info["rollback"] is True and not terminated
    assert "RuntimeError: seed forward exploded" in info["fault"]
    assert info["seed_ids"][1] is None and env.unwrapped.trainer.model.slots[1].seed is None
    assert math.isfinite(reward) and math.isfinite(info["val_loss"])
    _check_obs(env, obs)
    _, _, _, _, info = env.step(0)
    assert info["fault"] is None and not info["rollback"]


@pytest.mark.parametrize("when", ["always", "eval"])
def test_a_seed_whose_forward_raises_without_governor_is_a_defined_terminal_step(when: str) -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(governor={"enabled": False}, report_test_acc=True))
    env.reset(seed=0)
    env.step(env.unwrapped.action_names.index("GERMINATE_conv_light@0"))
    env.step(0)
    _break_seed(env, 0, when)
    with pytest.warns(UserWarning, match="seed forward exploded"):
        obs, reward, terminated, truncated, info = env.step(0)
    assert terminated and not truncated and info["diverged"] is True
    assert info["reward_terms"]["diverged"] == -env.unwrapped.config.reward.diverged_penalty
    assert {"final_val_acc", "final_test_acc", "n_fossilized"} <= set(info)
    assert math.isfinite(reward) and math.isfinite(info["final_test_acc"])
    _check_obs(env, obs)
    # train/eval mode is restored even though validation raised
    assert all(m.training for m in env.unwrapped.trainer.model.modules())


def test_train_mode_is_restored_after_every_counterfactual() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2))
    env.reset(seed=0)
    names = ["GERMINATE_conv_light@0", "GERMINATE_norm@1"] + ["WAIT"] * 6
    counterfactuals = 0
    for name in names:
        _, _, _, _, info = env.step(env.unwrapped.action_names.index(name))
        counterfactuals += sum(c is not None for c in info["counterfactuals"])
        assert all(m.training for m in env.unwrapped.trainer.model.modules())
    assert counterfactuals > 0


@pytest.mark.parametrize("lr", [30.0, 1e4, 1e9])
@pytest.mark.parametrize("governor", [True, False])
def test_exploding_learning_rates_never_raise(lr: float, governor: bool) -> None:
    from agents.rollout import run_episode

    env = gym.make("Esper-v0", **tiny_kwargs(host_lr=lr, seed_lr=lr, governor={"enabled": governor}))
    result = run_episode(env, ScriptedPolicy(env, "conv_heavy", 0), 0)
    assert result.length >= 1 and math.isfinite(result.episode_return)
    assert math.isfinite(result.final_test_acc)
