"""Determinism contract (spec section 13): same seed and actions give the same episode; the env
never touches the global RNGs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs
from gymnasium.utils.env_checker import data_equivalence

from esper_env.config import BLENDS


def _rollout(kwargs: dict, seed: int, action_seed: int) -> list[tuple]:
    """A whole episode of masked random actions drawn from a seeded numpy Generator."""
    env = gym.make("Esper-v0", **kwargs)
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    record: list[tuple] = [(obs, info)]
    while True:
        action = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
        obs, reward, terminated, truncated, info = env.step(action)
        record.append((action, obs, reward, terminated, truncated, info))
        if terminated or truncated:
            env.close()
            return record


def _assert_same_rollout(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    assert np.array_equal(a[0][0], b[0][0])
    assert data_equivalence(a[0][1], b[0][1], exact=True)
    for step_a, step_b in zip(a[1:], b[1:], strict=True):
        action_a, obs_a, reward_a, term_a, trunc_a, info_a = step_a
        action_b, obs_b, reward_b, term_b, trunc_b, info_b = step_b
        assert action_a == action_b
        assert obs_a.dtype == obs_b.dtype == np.float32
        assert np.array_equal(obs_a, obs_b)
        assert reward_a == reward_b
        assert (term_a, trunc_a) == (term_b, trunc_b)
        assert data_equivalence(info_a, info_b, exact=True), info_a["epoch"]


def test_rollout_same_seed_same_actions_identical_on_digits() -> None:
    kwargs = dict(task="digits", max_epochs=25)
    a = _rollout(kwargs, seed=11, action_seed=5)
    b = _rollout(kwargs, seed=11, action_seed=5)
    _assert_same_rollout(a, b)
    assert len(a) == 25  # reset + 24 steps


@pytest.mark.parametrize("fault_epochs", [(), (7,)], ids=["no-fault", "rollback"])
def test_rollout_same_seed_same_actions_identical_on_tiny_three_slots(
        fault_epochs: tuple[int, ...]) -> None:
    kwargs = tiny_kwargs(n_slots=3, max_epochs=20, fault_epochs=fault_epochs)
    a = _rollout(kwargs, seed=4, action_seed=9)
    b = _rollout(kwargs, seed=4, action_seed=9)
    _assert_same_rollout(a, b)
    # The episode did something worth comparing: seeds were grown (and rolled back).
    assert any(step[5]["events"] for step in a[1:])
    assert any(step[5]["rollback"] for step in a[1:]) == bool(fault_epochs)


@pytest.mark.parametrize("blend", BLENDS)
def test_rollout_same_seed_identical_for_every_blend(blend: str) -> None:
    kwargs = tiny_kwargs(n_slots=2, blend=blend)
    _assert_same_rollout(_rollout(kwargs, 21, 3), _rollout(kwargs, 21, 3))


@pytest.mark.parametrize("task", ["digits", "synthetic"])
def test_reset_different_seeds_give_different_first_observations(task: str) -> None:
    env = gym.make("Esper-v0", task=task)
    first = [env.reset(seed=s)[0] for s in range(4)]
    for i in range(len(first)):
        for j in range(i + 1, len(first)):
            assert not np.array_equal(first[i], first[j]), (i, j)


def test_reset_seed_then_unseeded_reset_is_reproducible_across_envs() -> None:
    def two_resets() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        env = gym.make("Esper-v0", **tiny_kwargs())
        obs_seeded, _ = env.reset(seed=123)
        obs_next, _ = env.reset()
        obs_step, *_ = env.step(0)
        return obs_seeded, obs_next, obs_step

    a, b = two_resets(), two_resets()
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], a[1])  # the unseeded reset starts a new episode


def test_reset_with_the_same_seed_restarts_the_same_episode() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs())
    first, _ = env.reset(seed=8)
    for _ in range(4):
        env.step(0)
    again, _ = env.reset(seed=8)
    assert np.array_equal(first, again)


@pytest.mark.parametrize("kwargs", [dict(task="digits", max_epochs=25, germination_gate=False),
                                    tiny_kwargs(n_slots=3, blend="gate", max_epochs=20)],
                         ids=["digits", "tiny-gate-3-slots"])
def test_episode_leaves_global_rng_states_unchanged(kwargs: dict, rng_guard: None) -> None:
    env = gym.make("Esper-v0", **kwargs)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    grown = set()
    terminated = False
    while not terminated:
        action = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
        _, _, terminated, _, info = env.step(action)
        grown |= {b for b in info["blueprints"] if b is not None}
    env.reset()
    env.close()
    assert grown  # seed modules were built (under fork_rng) and trained


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rollout_same_seed_identical_on_digits_three_slots_repeated(seed: int) -> None:
    # CompilerGym-style fuzz: the same seeded start and actions, several times, same episode.
    kwargs = dict(task="digits", n_slots=3, germination_gate=False, min_cull_age=3)
    runs = [_rollout(kwargs, seed=seed, action_seed=seed) for _ in range(3)]
    for other in runs[1:]:
        _assert_same_rollout(runs[0], other)


def test_torch_threads_is_scoped_to_the_env_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """An env's thread count holds inside its own reset/step only; another env's never leaks in."""
    import torch

    from esper_env.nn.trainer import Trainer

    seen: list[int] = []
    original = Trainer.train_epoch

    def spy(self, *args, **kwargs):  # the thread count the env's training actually ran with
        seen.append(torch.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", spy)
    process = torch.get_num_threads()
    other = 2 if process != 2 else 3
    try:
        one = gym.make("Esper-v0", **tiny_kwargs(torch_threads=1))
        assert torch.get_num_threads() == process  # construction changes nothing
        many = gym.make("Esper-v0", **tiny_kwargs(torch_threads=other))
        one.reset(seed=0)
        many.reset(seed=0)
        one.step(0)
        many.step(0)
        assert torch.get_num_threads() == process  # restored after every call
        assert seen == [1, other, 1, other]
        plain = gym.make("Esper-v0", **tiny_kwargs())
        torch.set_num_threads(1)
        plain.reset(seed=0)  # torch_threads=None: the process's own count
        assert seen[-1] == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(process)


def test_torch_threads_of_another_env_leave_results_unchanged() -> None:
    """The issue's repro: a 1-thread digits episode interleaved with a 2-thread env is unchanged."""
    import torch

    process = torch.get_num_threads()
    try:
        alone = _rollout({"torch_threads": 1}, seed=7, action_seed=7)
        env = gym.make("Esper-v0", torch_threads=1)
        other = gym.make("Esper-v0", torch_threads=2)
        rng = np.random.default_rng(7)
        obs, info = env.reset(seed=7)
        other.reset(seed=8)
        record: list[tuple] = [(obs, info)]
        while True:
            action = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
            obs, reward, terminated, truncated, info = env.step(action)
            other.step(0)
            record.append((action, obs, reward, terminated, truncated, info))
            if terminated or truncated:
                break
        _assert_same_rollout(alone, record)
    finally:
        torch.set_num_threads(process)
