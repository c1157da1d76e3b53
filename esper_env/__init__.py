"""esper_env: a Gymnasium environment for networks that grow while they train.

``import esper_env`` registers ``Esper-v0`` (by string entry point, so importing the package does
not import torch); ``EsperEnv`` and ``EsperConfig`` are exported lazily.
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

from esper_env._version import __version__

if "Esper-v0" not in registry:
    register(id="Esper-v0", entry_point="esper_env.env:EsperEnv",
             vector_entry_point="esper_env.vector:EsperVectorEnv", nondeterministic=False)

__all__ = ["ConfigError", "EsperConfig", "EsperEnv", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "EsperEnv":
        from esper_env.env import EsperEnv

        return EsperEnv
    if name == "EsperConfig":
        from esper_env.config import EsperConfig

        return EsperConfig
    if name == "ConfigError":
        from esper_env.errors import ConfigError

        return ConfigError
    raise AttributeError(f"module 'esper_env' has no attribute {name!r}")
