"""How a training or evaluation env is built: the exact Esper config plus the agent-side wrappers.

An :class:`EnvSpec` is what ``esper-train`` saves as ``env_config.json`` next to a model, and what
``esper-eval`` reads back, so a saved agent is always evaluated in the env it was trained in. Envs are
made with the module-prefixed id ``"esper_env:Esper-v0"``, which works in ``SubprocVecEnv`` workers
too (they import ``esper_env`` from the id; the plain id fails there when the parent process runs
from ``python -c``, pytest or stdin).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from esper_env.config import EsperConfig

ENV_ID = "esper_env:Esper-v0"
"""Module-prefixed id: importing ``esper_env`` registers ``Esper-v0`` in any process."""


@dataclass(frozen=True)
class EnvSpec:
    """An Esper config and the wrappers around it.

    Args:
        config: ``EsperConfig.to_dict()`` of the env.
        mask_observation: append the legal-action mask to the observation
            (:class:`agents.masking.ActionMaskObservation`).
        curriculum: keyword arguments of :class:`agents.wrappers.BlueprintCurriculumWrapper`, or
            None for the plain action space.
    """

    config: dict[str, Any]
    mask_observation: bool = False
    curriculum: dict[str, Any] | None = None
    env_id: str = field(default=ENV_ID)

    @classmethod
    def from_kwargs(cls, mask_observation: bool = False, curriculum: dict[str, Any] | None = None,
                    **env_kwargs: Any) -> EnvSpec:
        """A spec from ``gym.make``-style env kwargs (validated now, not in the workers)."""
        config = EsperConfig().replace(**env_kwargs)
        return cls(config.to_dict(), mask_observation, curriculum)

    @property
    def esper_config(self) -> EsperConfig:
        """The config as an :class:`EsperConfig`."""
        return EsperConfig.from_dict(self.config)

    def replace_config(self, **changes: Any) -> EnvSpec:
        """A copy with ``changes`` applied to the Esper config (e.g. ``instance_split="test"``)."""
        return EnvSpec(self.esper_config.replace(**changes).to_dict(), self.mask_observation,
                       self.curriculum, self.env_id)

    def make(self, curriculum: Any = None, torch_threads: int | None = None,
             record: str | Path | None = None) -> gym.Env:
        """Build the env: ``gym.make``, the episode recorder, the curriculum wrapper, then the mask
        observation.

        Args:
            curriculum: a :class:`agents.curriculum.BlueprintCurriculum` to share (DummyVecEnv envs
                share one); None builds one from ``self.curriculum``'s arguments.
            torch_threads: torch threads of this process (1 in subprocess workers).
            record: append every episode's record to this file
                (:class:`esper_env.records.RecordEpisodes`, right on the env, so a record replays
                on the plain env whatever the agent-side wrappers).
        """  # noqa: D205
        config = self.esper_config
        if torch_threads is not None:
            config = config.replace(torch_threads=torch_threads)
        env = gym.make(self.env_id, config=config)
        if record is not None:
            from esper_env.records import RecordEpisodes

            env = RecordEpisodes(env, record)
        if self.curriculum is not None:
            from agents.wrappers import BlueprintCurriculumWrapper

            env = BlueprintCurriculumWrapper(env, curriculum=curriculum, **self.curriculum)
        if self.mask_observation:
            from agents.masking import ActionMaskObservation

            env = ActionMaskObservation(env)
        return env

    def to_json(self) -> str:
        """JSON text (what ``env_config.json`` holds)."""
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EnvSpec:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` to ``path``."""
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> EnvSpec:
        """Read a spec written by :meth:`save`."""
        return cls.from_json(Path(path).read_text())
