"""Fuzzing: random actions (masked-out ones included) across configs never raise, observations stay
finite and inside the space, masks are never all-false, and the same action from the same snapshot
gives the same state every time.

The default run plays a short fuzz (about 1,000 steps); ``-m slow`` plays at least 10,000.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs
from test_env_instances import RECORDS

from esper_env.config import ALPHA_SCHEDULES, BLENDS, REWARD_MODES
from esper_env.core.instances import INSTANCE_FIELDS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(rng: np.random.Generator) -> dict:
    """A random small config: task, slots, reward mode, blend, schedule, faults, instances, budget."""
    kw = tiny_kwargs(
        task=str(rng.choice(["synthetic"] * 5 + ["digits", "digits", "tinytext"])),
        n_slots=int(rng.integers(1, 4)),
        reward_mode=str(rng.choice(REWARD_MODES)),
        blend=str(rng.choice(BLENDS)),
        alpha_schedule=str(rng.choice(ALPHA_SCHEDULES)),
        max_epochs=int(rng.integers(4, 13)),
        blending_epochs=int(rng.integers(1, 4)),
        germination_gate=bool(rng.random() < 0.3),
        param_budget=float(rng.choice([1.0, 0.3, 0.05])),
    )
    if kw["task"] == "digits":
        kw["train_fraction"] = 0.3
    if kw["task"] == "tinytext":  # a tiny transformer: 3 blocks of width 16, 32 training windows
        kw.update(block_size=8, n_layer=3, n_embd=16, n_head=2, train_subset=32, batch_size=16)
    roll = rng.random()
    if roll < 0.15:
        kw["fault_epochs"] = tuple(sorted({int(x) for x in rng.integers(2, 9, size=2)}))
    elif roll < 0.25:
        kw["host_lr"] = float(rng.choice([5.0, 1e3, 1e9]))
    elif roll < 0.3:
        kw["governor"] = {"enabled": False}
    if kw["task"] == "synthetic" and rng.random() < 0.25:
        kw["instance_set"] = [dict(r) for r in RECORDS]
        kw["n_slots"] = 1
        for name in INSTANCE_FIELDS:
            kw.pop(name, None)
    return kw


def _check(env: gym.Env, obs: np.ndarray, reward: float | None = None) -> None:
    assert np.isfinite(obs).all(), obs
    assert env.observation_space.contains(obs)
    mask = env.unwrapped.action_masks()
    assert mask.dtype == bool and mask.shape == (env.action_space.n,) and mask.any()
    if reward is not None:
        assert math.isfinite(reward)


def _fuzz(total_steps: int, seed: int, repeat_every: int = 25, repeats: int = 3) -> int:
    """Random episodes until ``total_steps`` steps; returns the steps played."""
    rng = np.random.default_rng(seed)
    steps = 0
    while steps < total_steps:
        kw = _config(rng)
        env = gym.make("Esper-v0", **kw).unwrapped  # unwrapped: masked-out actions are allowed
        obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
        _check(env, obs)
        terminated = False
        while not terminated and steps < total_steps:
            mask = env.action_masks()
            if rng.random() < 0.3:  # anything in the action space, masked-out or not
                action = int(rng.integers(env.action_space.n))
            else:
                action = int(rng.choice(np.flatnonzero(mask)))
            if steps % repeat_every == 0:  # the same action from the same snapshot, N times
                snap = env.snapshot()
                digests = set()
                for _ in range(repeats):
                    env.restore(snap)
                    env.step(action)
                    digests.add(env.snapshot().digest())
                assert len(digests) == 1, (kw, steps)
                env.restore(snap)
            obs, reward, terminated, truncated, info = env.step(action)
            steps += 1
            assert not truncated
            _check(env, obs, reward)
            assert info["illegal_action"] == (not mask[action])
        if terminated:
            assert {"final_val_acc", "final_test_acc", "n_fossilized"} <= set(info)
            assert math.isfinite(info["final_test_acc"])
        env.close()
    return steps


def test_fuzz_short() -> None:
    assert _fuzz(1_000, seed=0) == 1_000


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_ten_thousand_steps() -> None:
    assert _fuzz(10_000, seed=1, repeat_every=50) == 10_000
