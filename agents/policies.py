"""Baseline policies for Esper-v0 with an SB3-like ``predict``, and the baselines by name.

Each policy answers ``predict(obs, action_masks=None, deterministic=True) -> (action, None)``
like a Stable-Baselines3 model, so evaluation code treats baselines and trained agents alike:
:class:`NoGrowthPolicy`, :class:`RandomPolicy`, :class:`ScriptedPolicy` here, the heuristics in
:mod:`agents.heuristic`. :func:`make_baseline` builds any of them from the name that esper-eval,
esper-bench and the benchmarks take (:data:`BASELINES`, ``scripted-<blueprint>``).
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

    Germinates ``blueprint`` into ``slot`` as soon as that is legal (and, with ``earliest_epoch``,
    not before that many epochs have been trained) and FOSSILIZEs as soon as that is legal. Never
    culls (the env's gate and probation rules do).

    Args:
        env: the env (or a wrapper of it); used for the action layout and the epoch feature.
        blueprint: blueprint name.
        slot: target slot.
        earliest_epoch: do not germinate before this many epochs have been trained (read from the
            observation's ``epoch_fraction``); 0 germinates at the first legal epoch.
    """

    def __init__(self, env: Any, blueprint: str, slot: int = 0, earliest_epoch: int = 0) -> None:
        codec = _codec(env)
        if blueprint not in codec.blueprints:
            from esper_env.errors import UnknownBlueprint

            raise UnknownBlueprint(blueprint, codec.blueprints)
        if not 0 <= slot < codec.n_slots:
            raise ValueError(f"slot={slot} is invalid; allowed: 0..{codec.n_slots - 1}")
        if isinstance(earliest_epoch, bool) or not isinstance(earliest_epoch, int) \
                or earliest_epoch < 0:
            raise ValueError(f"earliest_epoch={earliest_epoch!r} is invalid; allowed: an "
                             "integer >= 0")
        base = env.unwrapped
        self.name = f"scripted-{blueprint}" + (f"-from{earliest_epoch}" if earliest_epoch else "")
        self.earliest_epoch = earliest_epoch
        self._epoch_index = base.feature_names.index("epoch_fraction")
        self._max_epochs = base.config.task.max_epochs
        self.germinate = codec.encode(Action(ActionKind.GERMINATE, slot, blueprint))
        self.fossilize = codec.encode(Action(ActionKind.FOSSILIZE, slot))

    def predict(self, obs: np.ndarray, action_masks: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[int, None]:
        """FOSSILIZE if legal, else GERMINATE if legal (and late enough), else WAIT."""
        if action_masks is None:
            raise ValueError("ScriptedPolicy needs action_masks (env.action_masks())")
        if action_masks[self.fossilize]:
            return self.fossilize, None
        epoch = int(round(float(obs[self._epoch_index]) * self._max_epochs))
        if action_masks[self.germinate] and epoch >= self.earliest_epoch:
            return self.germinate, None
        return 0, None


BASELINES = ("no-growth", "random", "heuristic", "ucb-heuristic")
"""Baseline names esper-eval knows (``scripted-<blueprint>`` is accepted too)."""


def make_baseline(name: str, env: Any, seed: int = 0) -> Any:
    """A baseline policy by name: no-growth, random, heuristic, ucb-heuristic or scripted-<blueprint>."""
    if name == "no-growth":
        return NoGrowthPolicy(env)
    if name == "random":
        return RandomPolicy(env, seed=seed)
    if name == "heuristic":
        from agents.heuristic import HeuristicPolicy

        return HeuristicPolicy(env)
    if name == "ucb-heuristic":
        from agents.heuristic import CurriculumHeuristicPolicy

        return CurriculumHeuristicPolicy(env, seed=seed)
    if name.startswith("scripted-"):
        return ScriptedPolicy(env, name.removeprefix("scripted-"))
    from esper_env.errors import unknown_name_message

    raise ValueError(unknown_name_message("baseline", name, [*BASELINES, "scripted-<blueprint>"]))
