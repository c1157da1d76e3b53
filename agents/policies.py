"""Baseline policies for Esper-v0 with an SB3-like ``predict``.

Each policy answers ``predict(obs, action_masks=None, deterministic=True) -> (action, None)``
like a Stable-Baselines3 model, so evaluation code treats baselines and trained agents alike.
Pure Python + numpy: no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from esper_env.core.actions import Action, ActionCodec, ActionKind


def _codec(env: Any) -> ActionCodec:
    return env.unwrapped.codec


class NoGrowthPolicy:
    """Always WAIT: the host trains alone (the no-growth baseline)."""

    name = "no-growth"

    def __init__(self, env: Any = None) -> None:
        del env

    def predict(self, obs: np.ndarray, action_masks: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[int, None]:
        """Return WAIT (index 0)."""
        return 0, None


class RandomPolicy:
    """Uniform over the legal actions (all actions without a mask), from its own Generator."""

    name = "random"

    def __init__(self, env: Any, seed: int | None = None) -> None:
        self.n = int(env.action_space.n)
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: np.ndarray, action_masks: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[int, None]:
        """A random legal action."""
        legal = np.flatnonzero(action_masks) if action_masks is not None else np.arange(self.n)
        return int(self.rng.choice(legal)), None


class ScriptedPolicy:
    """Fixed-blueprint growth for one slot.

    Germinates ``blueprint`` into ``slot`` as soon as that is legal and FOSSILIZEs as soon as that
    is legal. Never culls (the env's probation rules do).
    """

    def __init__(self, env: Any, blueprint: str, slot: int = 0) -> None:
        codec = _codec(env)
        if blueprint not in codec.blueprints:
            from esper_env.errors import UnknownBlueprint

            raise UnknownBlueprint(blueprint, codec.blueprints)
        if not 0 <= slot < codec.n_slots:
            raise ValueError(f"slot={slot} is invalid; allowed: 0..{codec.n_slots - 1}")
        self.name = f"scripted-{blueprint}"
        self.germinate = codec.encode(Action(ActionKind.GERMINATE, slot, blueprint))
        self.fossilize = codec.encode(Action(ActionKind.FOSSILIZE, slot))

    def predict(self, obs: np.ndarray, action_masks: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[int, None]:
        """FOSSILIZE if legal, else GERMINATE if legal, else WAIT."""
        if action_masks is None:
            raise ValueError("ScriptedPolicy needs action_masks (env.action_masks())")
        if action_masks[self.fossilize]:
            return self.fossilize, None
        if action_masks[self.germinate]:
            return self.germinate, None
        return 0, None
