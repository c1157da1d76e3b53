"""``ThreadVecEnv``: an SB3 vector env that steps its envs at the same time, in threads of one process.

An Esper-v0 step is one epoch of training, spent mostly inside torch operators, which release the
GIL. Stepping the envs of a vector env in threads therefore runs them largely in parallel without
the costs of :class:`~stable_baselines3.common.vec_env.SubprocVecEnv`: no processes to spawn, no
pickling of observations and infos, one copy of each dataset in memory, and on CUDA one context
for all envs (processes each get their own, and the GPU time-slices between contexts). On CUDA
each env runs on a CUDA stream of its own, so kernels of different envs can run at the same time
on the GPU (not yet timed on a GPU). On a 2-core CPU, 2 thread workers reach about 0.8x the env
throughput of 2 subprocess workers (the Python between operators holds the GIL), and
``esper-train --vec-env thread`` trains 1.37x faster than the default ``DummyVecEnv`` on digits
(``python -m benchmarks.speed throughput``).

It is a :class:`~stable_baselines3.common.vec_env.DummyVecEnv` (same construction, attribute and
method access, seeding, auto-reset and ``terminal_observation``) whose ``reset`` and ``step`` run
the envs concurrently. Results do not depend on the threads: each env has its own generators and
model, and while the envs run, torch's process-wide intra-op thread count is held at
``torch_threads`` (build the envs with the same ``torch_threads``, or none). Same seeds and actions
give the same observations, rewards and infos as ``DummyVecEnv`` (a test checks it).

    from agents.vec_env import ThreadVecEnv
    venv = make_vec_env(lambda: gym.make("Esper-v0", torch_threads=1), n_envs=4,
                        vec_env_cls=ThreadVecEnv)

``esper-train --vec-env thread`` uses it. Each env keeps its own curriculum there (as with
``SubprocVecEnv``), since a shared one would be updated in whichever order the threads finish.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from esper_env.nn.threads import num_threads


def _config(env: gym.Env, field: str) -> Any:
    """``env.unwrapped.config.runtime.<field>`` (Esper-v0's config), or None for other envs."""
    return getattr(getattr(getattr(env.unwrapped, "config", None), "runtime", None), field, None)


def _cuda_stream(env: gym.Env) -> torch.cuda.Stream | None:
    """A new CUDA stream on ``env``'s device when the env reports a CUDA ``config.runtime.device``."""
    device = _config(env, "device")
    if not isinstance(device, str) or not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.Stream(device=torch.device(device))


class ThreadVecEnv(DummyVecEnv):
    """A ``DummyVecEnv`` whose ``reset`` and ``step`` run every env at once, one thread per env.

    Args:
        env_fns: functions that each build one env (called in order, in this thread).
        torch_threads: torch's intra-op thread count while the envs run (process-wide; restored
            afterwards); None leaves it as it is. With ``n`` envs on ``c`` cores, ``1`` and
            ``n <= c`` is the usual choice, as with ``SubprocVecEnv``. An env built with its own
            ``torch_threads`` (Esper-v0's config) must have this value: envs that set and restore
            the process-wide count in their own calls would race (ValueError otherwise).
        cuda_streams: give each CUDA env a stream of its own (its work in ``reset`` and ``step``
            runs there; each call waits for its stream before returning, so the caller may use the
            env's tensors afterwards).

    An exception in one env is raised after every env has finished its call (none is left
    running; the others' results are kept in the buffers, as their envs have moved on); when
    several fail, the lowest index's exception is raised.
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]], torch_threads: int | None = 1,
                 cuda_streams: bool = True) -> None:
        if torch_threads is not None and not (isinstance(torch_threads, int) and torch_threads >= 1):
            raise ValueError(f"torch_threads={torch_threads!r} is invalid; allowed: None or an "
                             "integer >= 1")
        super().__init__(env_fns)
        self.torch_threads = torch_threads
        self._pool: ThreadPoolExecutor | None = None
        for i, env in enumerate(self.envs):  # an env scoping another count would race with the rest
            own = _config(env, "torch_threads")
            if own is not None and own != torch_threads:
                self.close()
                allowed = "None" if torch_threads is None else f"None or {torch_threads}"
                raise ValueError(f"env {i} has torch_threads={own}, but this ThreadVecEnv holds "
                                 f"torch_threads={torch_threads} while its envs run; allowed: envs "
                                 f"with torch_threads={allowed} (or ThreadVecEnv(torch_threads={own}))")
        self.streams = [_cuda_stream(env) if cuda_streams else None for env in self.envs]
        if any(s is not None for s in self.streams):
            torch.cuda.synchronize()  # the envs' start-up work (default stream) is done
        self._pool = ThreadPoolExecutor(
            max_workers=self.num_envs, thread_name_prefix="ThreadVecEnv")

    def _on_stream(self, env_idx: int, fn: Callable[[int], Any]) -> Any:
        stream = self.streams[env_idx]
        if stream is None:
            return fn(env_idx)
        with torch.cuda.stream(stream):
            out = fn(env_idx)
        stream.synchronize()
        return out

    def _run_all(self, fn: Callable[[int], Any]) -> tuple[list[Any], BaseException | None]:
        """``fn(i)`` for every env index at once: results in index order (None where ``fn``
        raised) and the exception of the lowest failing index, once every call has finished.
        """  # noqa: D205
        if self._pool is None:
            raise RuntimeError("this ThreadVecEnv is closed")
        with num_threads(self.torch_threads):
            futures = [self._pool.submit(self._on_stream, i, fn) for i in range(self.num_envs)]
            errors = [f.exception() for f in futures]  # waits for every env
        results = [None if e is not None else f.result() for f, e in zip(futures, errors, strict=True)]
        return results, next((e for e in errors if e is not None), None)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env at once (auto-reset on done, as ``DummyVecEnv``)."""
        actions = self.actions

        def step(i: int) -> tuple[Any, float, bool, dict[str, Any], dict[str, Any] | None]:
            obs, reward, terminated, truncated, info = self.envs[i].step(actions[i])
            info["TimeLimit.truncated"] = truncated and not terminated
            done = terminated or truncated
            reset_info = None
            if done:  # save the final observation where the user can get it, then reset
                info["terminal_observation"] = obs
                obs, reset_info = self.envs[i].reset()
            return obs, reward, done, info, reset_info

        results, error = self._run_all(step)
        for i, result in enumerate(results):  # the envs that stepped keep their results
            if result is None:
                continue
            obs, self.buf_rews[i], self.buf_dones[i], self.buf_infos[i], reset_info = result
            if reset_info is not None:
                self.reset_infos[i] = reset_info
            self._save_obs(i, obs)
        if error is not None:
            raise error
        return self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones), \
            deepcopy(self.buf_infos)

    def reset(self) -> VecEnvObs:
        """Reset every env at once, with the seeds and options set by ``seed``/``set_options``."""
        seeds, options = list(self._seeds), list(self._options)

        def reset(i: int) -> tuple[Any, dict[str, Any]]:
            maybe_options = {"options": options[i]} if options[i] else {}
            return self.envs[i].reset(seed=seeds[i], **maybe_options)

        results, error = self._run_all(reset)
        for i, result in enumerate(results):
            if result is not None:
                obs, self.reset_infos[i] = result
                self._save_obs(i, obs)
        if error is not None:
            raise error
        self._reset_seeds()  # seeds and options are used once
        self._reset_options()
        return self._obs_from_buf()

    def close(self) -> None:
        """Stop the threads, then close the envs."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        super().close()
