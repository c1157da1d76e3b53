"""ThreadVecEnv: the envs step at once in threads, with DummyVecEnv's results and semantics."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import tiny_kwargs
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.envs import EnvSpec
from agents.train import train
from agents.vec_env import ThreadVecEnv


def _same(a: Any, b: Any) -> bool:
    """Deep equality of step results: dicts, lists, arrays (NaN equal to NaN), scalars."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, np.ndarray | float | np.floating):
        return np.array_equal(a, b, equal_nan=True) and np.asarray(a).dtype == np.asarray(b).dtype
    return a == b


def _play(vec_cls: type, steps: int) -> list[tuple]:
    """Random legal actions (from a generator of the test's own) on three tiny envs."""
    spec = EnvSpec.from_kwargs(**tiny_kwargs(max_epochs=5))
    venv = make_vec_env(lambda: spec.make(torch_threads=1), n_envs=3, seed=7, vec_env_cls=vec_cls)
    rng = np.random.default_rng(0)
    out = [(venv.reset(), [dict(i) for i in venv.reset_infos])]
    for _ in range(steps):
        masks = venv.env_method("action_masks")
        actions = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        obs, rewards, dones, infos = venv.step(actions)
        for info in infos:  # Monitor's wall-clock time since its start is the one thing that differs
            info.get("episode", {}).pop("t", None)
        out.append((obs, rewards, dones, infos))
    venv.close()
    return out


def test_thread_vec_env_gives_dummy_vec_env_results_auto_resets_included():
    dummy, threaded = _play(DummyVecEnv, 13), _play(ThreadVecEnv, 13)
    assert sum(int(d.sum()) for _, _, d, _ in dummy[1:]) >= 6  # two auto-resets per env
    assert any("terminal_observation" in i for _, _, _, infos in dummy[1:] for i in infos)
    for a, b in zip(dummy, threaded, strict=True):
        assert _same(a, b)


class _Probe(gym.Env):
    """A stand-in env whose step meets the other envs' steps at a barrier and records its thread."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, index: int, barrier: threading.Barrier) -> None:
        self.index, self.barrier = index, barrier
        self.steps, self.seen = 0, []

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        return np.full(2, self.index / 10, np.float32), {"seed": seed}

    def step(self, action: int) -> tuple:
        if action == 2 and self.index == 1:
            raise ValueError(f"env {self.index} refuses action 2")
        if action == 1:
            self.barrier.wait()  # only passes when every env steps at the same time
        if action == 2:
            time.sleep(0.05)  # still running when env 1 has already failed
        self.seen.append((threading.current_thread().name, torch.get_num_threads()))
        self.steps += 1
        obs = np.full(2, self.index / 10 + self.steps / 100, np.float32)
        return obs, float(self.index), self.steps >= 3, False, {"index": self.index}


def _probes(n: int) -> tuple[list[_Probe], list]:
    barrier = threading.Barrier(n, timeout=10)
    envs = [_Probe(i, barrier) for i in range(n)]
    return envs, [lambda e=e: e for e in envs]


def test_thread_vec_env_steps_every_env_at_once_with_one_torch_thread():
    envs, fns = _probes(3)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        venv = ThreadVecEnv(fns)
        venv.seed(5)
        obs = venv.reset()
        assert [e.np_random is not None for e in envs] == [True] * 3
        assert [i["seed"] for i in venv.reset_infos] == [5, 6, 7]
        np.testing.assert_allclose(obs[:, 0], [0.0, 0.1, 0.2], atol=1e-6)
        _, rewards, dones, infos = venv.step(np.array([1, 1, 1]))  # a DummyVecEnv would deadlock
        assert rewards.tolist() == [0.0, 1.0, 2.0] and not dones.any()
        assert [i["index"] for i in infos] == [0, 1, 2]
        assert torch.get_num_threads() == 2  # the process's count, given back
        names = {e.seen[0][0] for e in envs}
        assert len(names) == 3 and threading.current_thread().name not in names
        assert [e.seen[0][1] for e in envs] == [1, 1, 1]  # held at torch_threads while they ran
        venv.step(np.array([0, 0, 0]))
        obs, _, dones, infos = venv.step(np.array([0, 0, 0]))  # third step: done, auto-reset
        assert dones.all() and all("terminal_observation" in i for i in infos)
        np.testing.assert_allclose(infos[2]["terminal_observation"], [0.23, 0.23], atol=1e-6)
        np.testing.assert_allclose(obs[:, 0], [0.0, 0.1, 0.2], atol=1e-6)  # the reset's obs
        venv.close()
    finally:
        torch.set_num_threads(before)
    with pytest.raises(RuntimeError, match="closed"):
        venv.step(np.array([0, 0, 0]))


def test_an_env_error_is_raised_after_the_others_finish_and_their_results_are_kept():
    envs, fns = _probes(3)
    venv = ThreadVecEnv(fns)
    venv.reset()
    with pytest.raises(ValueError, match="env 1 refuses action 2"):
        venv.step(np.array([2, 2, 2]))
    assert [e.steps for e in envs] == [1, 0, 1]  # envs 0 and 2 finished their (slow) step
    np.testing.assert_allclose(venv.buf_obs[None][:, 0], [0.01, 0.1, 0.21], atol=1e-6)
    _, rewards, _, _ = venv.step(np.array([0, 0, 0]))  # still usable
    assert rewards.tolist() == [0.0, 1.0, 2.0] and [e.steps for e in envs] == [2, 1, 2]
    venv.close()


def test_thread_vec_env_rejects_a_bad_thread_count_and_envs_that_scope_another():
    with pytest.raises(ValueError, match="torch_threads=0 is invalid"):
        ThreadVecEnv(_probes(1)[1], torch_threads=0)
    spec = EnvSpec.from_kwargs(**tiny_kwargs())
    with pytest.raises(ValueError, match=r"env 0 has torch_threads=2, .* allowed: envs with "
                                         r"torch_threads=None or 1 \(or ThreadVecEnv\(torch_threads=2\)\)"):
        ThreadVecEnv([lambda: spec.make(torch_threads=2)])
    with pytest.raises(ValueError, match="allowed: envs with torch_threads=None "):
        ThreadVecEnv([lambda: spec.make(), lambda: spec.make(torch_threads=1)], torch_threads=None)
    venv = ThreadVecEnv([lambda: spec.make(), lambda: spec.make(torch_threads=1)])  # both allowed
    assert venv.num_envs == 2
    venv.close()


def _params(run) -> list[torch.Tensor]:
    from agents.runs import load_model

    model, _ = load_model(run, which="final")
    return [p.detach().clone() for p in model.policy.parameters()]


def test_esper_train_with_thread_workers_learns_the_dummy_vec_env_policy(tmp_path):
    from agents.train import TrainArgs

    def run(vec_env: str, name: str, **kw: Any) -> list[torch.Tensor]:
        args = TrainArgs(algo="maskable-ppo", total_timesteps=66, n_envs=3, vec_env=vec_env,
                         output=str(tmp_path / name), env_kwargs=tiny_kwargs(), eval_freq=0,
                         progress_bar=False, torch_threads=1, **kw,
                         hyperparams={"n_steps": 22, "batch_size": 22, "n_epochs": 1,
                                      "policy_kwargs": {"net_arch": [16]}})
        return _params(train(args))

    dummy, threaded = run("dummy", "a"), run("thread", "b")
    assert all(torch.equal(a, b) for a, b in zip(dummy, threaded, strict=True))
    run("thread", "c", curriculum=True)  # each env has its own curriculum; env 0's is saved
    saved = json.loads((tmp_path / "c" / "curriculum.json").read_text())
    assert sum(saved["pulls"].values()) >= 1  # it chose blueprints for env 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_thread_vec_env_runs_cuda_envs_each_on_its_own_stream():
    spec = EnvSpec.from_kwargs(**tiny_kwargs(device="cuda", max_epochs=5))
    venv = make_vec_env(lambda: spec.make(torch_threads=1), n_envs=3, seed=0,
                        vec_env_cls=ThreadVecEnv)
    streams = venv.streams
    assert all(s is not None for s in streams) and len({s.cuda_stream for s in streams}) == 3
    assert torch.cuda.default_stream().cuda_stream not in {s.cuda_stream for s in streams}
    venv.reset()
    rng, dones = np.random.default_rng(0), 0
    for _ in range(12):
        masks = venv.env_method("action_masks")
        obs, rewards, done, _ = venv.step(np.array([rng.choice(np.flatnonzero(m)) for m in masks]))
        assert np.isfinite(obs).all() and np.isfinite(rewards).all()
        dones += int(done.sum())
    assert dones >= 3  # every env finished an episode and auto-reset on its stream
    venv.close()
