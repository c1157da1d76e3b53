"""The algorithms esper-train knows: their SB3 / sb3-contrib classes and rl-zoo3-style hyperparameters.

``ppo``, ``dqn`` and ``per-dqn`` cannot take ``action_masks()``; they see the mask in the
observation and, by default, play through the masked policies of :mod:`agents.masking`.
Hyperparameters come from ``agents/hyperparams/<algo>.yml`` (one table per env id, as in
rl-zoo3).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from esper_env.errors import ConfigError

ALGOS = ("ppo", "maskable-ppo", "dqn", "per-dqn")
"""Algorithms ``esper-train`` knows, in the order of ``--help``."""
UNMASKED = ("ppo", "dqn", "per-dqn")
"""Algorithms that cannot take ``action_masks()``: they see the mask in the observation."""
TRAIN_EXTRA = 'pip install "esper-env[train]"'
"""What to install for training."""
RUN_SETTINGS = ("n_timesteps", "n_envs", "policy", "normalize")
"""Hyperparameter keys that describe the run rather than the algorithm's constructor."""


def algo_class(algo: str, policy_mask: bool) -> type:
    """The SB3 class that trains (and loads) ``algo``; ``policy_mask``: the masked variants."""
    try:
        if algo == "maskable-ppo":
            from sb3_contrib import MaskablePPO

            return MaskablePPO
        if algo == "ppo":
            from stable_baselines3 import PPO

            return PPO
        if policy_mask:
            from agents.masking import MaskedDQN, MaskedPERDQN

            return MaskedDQN if algo == "dqn" else MaskedPERDQN
        if algo == "dqn":
            from stable_baselines3 import DQN

            return DQN
        from agents.dqn_per import PERDQN

        return PERDQN
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(f"esper-train needs Stable-Baselines3 and sb3-contrib: {TRAIN_EXTRA}") from e


def load_hyperparams(algo: str, path: str | None = None, env_id: str = "Esper-v0") -> dict[str, Any]:
    """The rl-zoo3-style hyperparameters of ``algo`` for ``env_id`` (from ``path`` if given)."""
    import yaml

    if algo not in ALGOS:
        raise ConfigError(f"algo={algo!r} is invalid; allowed: {', '.join(ALGOS)}")
    if path is None:
        text = resources.files("agents").joinpath("hyperparams", f"{algo}.yml").read_text()
    else:
        text = Path(path).read_text()
    table = yaml.safe_load(text) or {}
    if env_id not in table:
        raise ConfigError(f"{path or algo + '.yml'} has no entry for {env_id!r}; it has {sorted(table)}")
    return dict(table[env_id])


def split_hyperparams(hp: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run-level settings, algorithm kwargs) of a hyperparameter table (``hp`` keeps the latter)."""
    run = {k: hp.pop(k) for k in RUN_SETTINGS if k in hp}
    return run, hp
