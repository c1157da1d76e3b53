"""``BatchedVecEnv``: the batched Esper vector env as a Stable-Baselines3 ``VecEnv``.

SB3 and sb3-contrib take it as they take ``DummyVecEnv``: reset returns the observations only
(``reset_infos`` holds the infos), a finished episode is reset in the same step and its last
observation is ``infos[i]["terminal_observation"]`` (with ``TimeLimit.truncated``), infos are a
list of one dict per env, and ``env_method("action_masks")`` returns one mask per env, which is
what ``sb3_contrib.common.maskable.utils.get_action_masks`` and ``MaskablePPO`` use. It works under
``VecMonitor`` and ``VecNormalize``.

    from agents.batched_vec_env import BatchedVecEnv
    venv = BatchedVecEnv(8, task="digits", torch_threads=1)

Seeding: ``venv.seed(s)`` then ``reset()`` seeds env ``i`` with ``s + i`` (as ``DummyVecEnv`` via
``make_vec_env``); without a seed the lanes draw from their own generators.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvStepReturn,
    VecEnvWrapper,
)

from esper_env.vector import EsperVectorEnv


def unbatch_info(infos: dict[str, Any], i: int) -> dict[str, Any]:
    """Lane ``i``'s info from Gymnasium's vector layout (values with ``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get(f"_{key}")
        if mask is not None and not mask[i]:
            continue
        if isinstance(value, dict):
            out[key] = unbatch_info(value, i)
        else:
            item = value[i]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


def _with_mask_space(space: Any, n: int) -> Any:
    """``space`` (a 1-D Box) with ``n`` mask entries in [0, 1] appended."""
    from gymnasium import spaces

    return spaces.Box(np.concatenate([space.low, np.zeros(n, np.float32)]),
                      np.concatenate([space.high, np.ones(n, np.float32)]), dtype=np.float32)


def _append_masks(obs: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Observations (one or a batch) with their masks appended as 0/1 floats."""
    return np.concatenate([obs.astype(np.float32), np.asarray(masks).astype(np.float32)], axis=-1)


class BatchedVecEnv(VecEnv):
    """K Esper-v0 episodes stepped as one batched computation, for SB3 (module docstring).

    Args:
        num_envs: K.
        mask_observation: append each lane's legal-action mask (0/1 floats) to its observation,
            as :class:`agents.masking.ActionMaskObservation` does for one env (what PPO, DQN and
            PER-DQN train with); the terminal observation gets the final state's mask.
        **kwargs: the env's keywords, as for ``gym.make("Esper-v0", ...)``.
    """

    def __init__(self, num_envs: int, mask_observation: bool = False, **kwargs: Any) -> None:
        self.venv = EsperVectorEnv(num_envs, autoreset_mode=AutoresetMode.SAME_STEP, **kwargs)
        self.mask_observation = bool(mask_observation)
        space = self.venv.single_observation_space
        if self.mask_observation:
            space = _with_mask_space(space, int(self.venv.single_action_space.n))
        super().__init__(num_envs, space, self.venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._seed: int | None = None

    def reset(self) -> np.ndarray:  # noqa: D102
        obs, infos = self.venv.reset(seed=self._seed)
        self._seed = None
        self.reset_infos = [unbatch_info(infos, i) for i in range(self.num_envs)]
        return self._with_masks(obs)

    def _with_masks(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        if not self.mask_observation:
            return obs
        return _append_masks(obs, self.venv.action_masks() if masks is None else masks)

    def seed(self, seed: int | None = None) -> Sequence[None | int]:  # noqa: D102
        self._seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def step_async(self, actions: np.ndarray) -> None:  # noqa: D102
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:  # noqa: D102
        assert self._actions is not None
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        dones = terminated | truncated
        out = []
        for i in range(self.num_envs):
            if dones[i]:
                info = dict(unbatch_info(infos["final_info"], i))
                final = infos["final_obs"][i]
                if self.mask_observation:
                    final = _append_masks(final, info["action_mask"])
                info["terminal_observation"] = final
                info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                self.reset_infos[i] = {k: v for k, v in unbatch_info(infos, i).items()
                                       if k not in ("final_info", "final_obs")}
            else:
                info = unbatch_info(infos, i)
            out.append(info)
        return self._with_masks(obs), rewards.astype(np.float32), dones, out

    def action_masks(self) -> np.ndarray:
        """``(K, n)`` boolean masks of the legal actions."""
        return self.venv.action_masks()

    def close(self) -> None:  # noqa: D102
        self.venv.close()

    # -- attributes and methods, per env ---------------------------------------------------------
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of the vector env, once per env asked (the lanes share one config)."""
        value = getattr(self.venv, attr_name) if attr_name != "render_mode" else None
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the vector env (shared by every lane)."""
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """``action_masks``: one mask per env; any other method: called once on the vector env
        and its result given to every env asked.
        """  # noqa: D205
        idx = self._indices(indices)
        if method_name == "action_masks":
            masks = self.venv.action_masks()
            return [masks[i] for i in idx]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """No lane is wrapped (there are no per-lane Gymnasium envs)."""
        return [False for _ in self._indices(indices)]


class _Lane(gym.Env):
    """One lane of a :class:`BatchedVecEnv` as far as a per-env wrapper reads it: its spaces, its
    codec and its mask (it cannot step alone).
    """  # noqa: D205

    def __init__(self, venv: BatchedVecEnv, i: int) -> None:
        self._venv, self._i = venv, i
        self.observation_space = venv.venv.single_observation_space
        self.action_space = venv.venv.single_action_space
        self.codec = venv.venv.template.codec

    def action_masks(self) -> np.ndarray:  # noqa: D102
        return self._venv.venv.action_masks()[self._i]

    def step(self, action: Any) -> Any:  # noqa: D102
        raise RuntimeError("a lane of a batched vector env steps with the others (step the VecEnv)")

    def reset(self, **kwargs: Any) -> Any:  # noqa: D102
        raise RuntimeError("a lane of a batched vector env resets with the others")


class BatchedCurriculumVecEnv(VecEnvWrapper):
    """The UCB1 blueprint curriculum on a :class:`BatchedVecEnv`: every lane's collapsed actions
    (one GERMINATE per slot) and seed outcomes go through one shared
    :class:`~agents.curriculum.BlueprintCurriculum`, as the envs of one ``DummyVecEnv`` share one
    (:class:`agents.wrappers.BlueprintCurriculumWrapper` per lane, over the lane's mask).

    Args:
        venv: the batched env (built with ``mask_observation=False``).
        curriculum: the shared curriculum.
        mask_observation: append each lane's collapsed mask to its observation (PPO, DQN).
    """  # noqa: D205

    def __init__(self, venv: BatchedVecEnv, curriculum: Any, mask_observation: bool = False
                 ) -> None:
        from agents.wrappers import BlueprintCurriculumWrapper

        if venv.mask_observation:
            raise ValueError("build the BatchedVecEnv with mask_observation=False: the "
                             "curriculum's collapsed mask is appended here")
        self.lanes = [BlueprintCurriculumWrapper(_Lane(venv, i), curriculum)
                      for i in range(venv.num_envs)]
        self.curriculum = curriculum
        self.mask_observation = bool(mask_observation)
        action_space = self.lanes[0].action_space
        space = venv.observation_space
        if self.mask_observation:
            space = _with_mask_space(space, int(action_space.n))
        super().__init__(venv, observation_space=space, action_space=action_space)

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        if not self.mask_observation:
            return obs
        return _append_masks(obs, self.action_masks())

    def reset(self) -> np.ndarray:  # noqa: D102
        for lane in self.lanes:
            lane._cancel_unresolved()
            lane._last_cf = [None] * lane.codec.n_slots
        return self._obs(self.venv.reset())

    def step_async(self, actions: np.ndarray) -> None:  # noqa: D102
        self.venv.step_async(np.array([lane.before_step(int(a))
                                       for lane, a in zip(self.lanes, actions, strict=True)]))

    def step_wait(self) -> Any:  # noqa: D102
        obs, rewards, dones, infos = self.venv.step_wait()
        for lane, info, done in zip(self.lanes, infos, dones, strict=True):
            lane.after_step(info, bool(done))
            if done and self.mask_observation:  # the final state's collapsed mask
                final = info["terminal_observation"]
                info["terminal_observation"] = _append_masks(final, lane.collapse(info["action_mask"]))
        return self._obs(obs), rewards, dones, infos

    def action_masks(self) -> np.ndarray:
        """``(K, n)`` collapsed masks."""
        return np.array([lane.action_masks() for lane in self.lanes], dtype=bool)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:  # noqa: D102
        if attr_name == "curriculum":
            return [self.curriculum for _ in self.venv._indices(indices)]
        return self.venv.get_attr(attr_name, indices)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """``action_masks``: each lane's collapsed mask; anything else: the batched env's."""
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in self.venv._indices(indices)]
        return self.venv.env_method(method_name, *method_args, indices=indices, **method_kwargs)
