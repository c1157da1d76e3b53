"""BlueprintCurriculumWrapper: the agent chooses *when* to germinate, a UCB1 curriculum chooses *what*.

The wrapper collapses the GERMINATE_<blueprint> actions of each slot into one GERMINATE action:
``Discrete(1 + 3·n_slots)`` = WAIT, then per slot GERMINATE, FOSSILIZE, CULL. On GERMINATE@s it asks
the :class:`agents.curriculum.BlueprintCurriculum` for a blueprint among those legal at slot s (so a
parameter budget is respected) and plants it. It follows each planted seed through
``info["events"]`` and records its outcome back into the curriculum: a fossilized seed's
counterfactual contribution at fossilization (pp; the value gate G5 accepted), or ``cull_reward``
for a culled seed. A seed still unresolved when the episode ends is not recorded (its selection is
cancelled). Observations are unchanged (they already hold a one-hot of the planted blueprint);
``info["curriculum"]`` holds the arm statistics every step and ``info["curriculum_choice"]`` the
blueprint planted on a GERMINATE step.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import InvalidAction

from agents.curriculum import BlueprintCurriculum
from esper_env.core.actions import Action, ActionKind

WAIT, GERMINATE, FOSSILIZE, CULL = range(4)


class BlueprintCurriculumWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Collapse GERMINATE_* into one action per slot and let a UCB1 curriculum pick blueprints.

    Args:
        env: an Esper-v0 env (``gym.make`` result or ``EsperEnv``).
        curriculum: a curriculum to use (several envs may share one); None builds one over the env's
            blueprints with complexity = rank in action order (ascending parameter count at slot
            widths >= 2) scaled to [0, 1].
        c: UCB1 constant of a curriculum built here.
        complexity_penalty: complexity penalty of a curriculum built here.
        cull_reward: outcome recorded for a culled seed.
        seed: tie-breaking seed of a curriculum built here.
    """

    def __init__(self, env: gym.Env, curriculum: BlueprintCurriculum | None = None,
                 c: float = math.sqrt(2.0), complexity_penalty: float = 0.0, cull_reward: float = 0.0,
                 seed: int | None = None) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, c=c, complexity_penalty=complexity_penalty,
                                                 cull_reward=cull_reward, seed=seed)
        gym.Wrapper.__init__(self, env)
        self.codec = env.unwrapped.codec
        blueprints = tuple(self.codec.blueprints)
        if curriculum is None:
            complexity = np.linspace(0.0, 1.0, len(blueprints)) if len(blueprints) > 1 else [0.0]
            curriculum = BlueprintCurriculum(blueprints, c, list(complexity), complexity_penalty, seed)
        elif set(curriculum.arms) != set(blueprints):
            raise ValueError(f"the curriculum's arms {curriculum.arms} are not the env's blueprints "
                             f"{blueprints}")
        if not math.isfinite(cull_reward):
            raise ValueError(f"cull_reward={cull_reward!r} is invalid; allowed: finite")
        self.curriculum = curriculum
        self.cull_reward = float(cull_reward)
        self.action_space = spaces.Discrete(1 + 3 * self.codec.n_slots)
        self._tracked: dict[str, str] = {}          # seed id -> blueprint chosen by the curriculum
        self._chosen: dict[int, str] = {}           # slot -> blueprint of this step's GERMINATE
        self._last_cf: list[float | None] = [None] * self.codec.n_slots

    # ---- actions and masks ---------------------------------------------------------------------
    def _base_mask(self) -> np.ndarray:
        return np.asarray(self.env.get_wrapper_attr("action_masks")(), dtype=bool)

    def _legal_blueprints(self, base: np.ndarray, slot: int) -> list[str]:
        return [b for b in self.codec.blueprints
                if base[self.codec.encode(Action(ActionKind.GERMINATE, slot, b))]]

    def action_masks(self) -> np.ndarray:
        """Collapsed mask: GERMINATE@s is legal iff some GERMINATE_<bp>@s is."""
        return self.collapse(self._base_mask())

    def collapse(self, base: np.ndarray) -> np.ndarray:
        """The collapsed mask of the underlying env's mask ``base``."""
        base = np.asarray(base, dtype=bool)
        mask = np.zeros(self.action_space.n, dtype=bool)
        mask[0] = True
        for s in range(self.codec.n_slots):
            fossilize, cull = self.codec.slot_actions(s)
            mask[1 + 3 * s] = bool(self._legal_blueprints(base, s))
            mask[2 + 3 * s], mask[3 + 3 * s] = base[fossilize], base[cull]
        return mask

    def base_action(self, action: int) -> int:
        """The underlying env's action index for a collapsed ``action`` (asks the curriculum)."""
        if action == 0:
            return 0
        slot, kind = divmod(action - 1, 3)
        fossilize, cull = self.codec.slot_actions(slot)
        if kind == 1:
            return fossilize
        if kind == 2:
            return cull
        legal = self._legal_blueprints(self._base_mask(), slot)
        if not legal:  # illegal: forward one GERMINATE so the env applies its illegal-action rule
            return self.codec.encode(Action(ActionKind.GERMINATE, slot, self.codec.blueprints[0]))
        choice = self.curriculum.select(legal)
        self._chosen[slot] = choice
        return self.codec.encode(Action(ActionKind.GERMINATE, slot, choice))

    # ---- gym API -------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset the env; selections of the previous episode that never resolved are cancelled."""
        self._cancel_unresolved()
        self._last_cf = [None] * self.codec.n_slots
        obs, info = self.env.reset(seed=seed, options=options)
        info["curriculum"] = self.curriculum.stats()
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step with a collapsed action; record seed outcomes in the curriculum."""
        scalar = isinstance(action, np.ndarray) and action.shape == () and action.dtype.kind in "iu"
        if isinstance(action, (bool, np.bool_)) or not (isinstance(action, (int, np.integer)) or scalar):
            raise InvalidAction(f"expected an integer action in 0..{self.action_space.n - 1}, "
                                f"actual {action!r}")
        action = int(action)
        if not 0 <= action < self.action_space.n:
            raise InvalidAction(f"expected an action in 0..{self.action_space.n - 1}, actual {action}")
        obs, reward, terminated, truncated, info = self.env.step(self.before_step(action))
        self.after_step(info, terminated or truncated)
        return obs, reward, terminated, truncated, info

    def before_step(self, action: int) -> int:
        """The base action of a collapsed ``action`` (a valid index), this step's choice noted."""
        self._chosen = {}
        return self.base_action(action)

    def after_step(self, info: dict[str, Any], done: bool) -> None:
        """Record the step's seed outcomes (``info``, the step's, edited in place) and, when the
        episode is ``done``, cancel the selections that never resolved.
        """  # noqa: D205
        for event in info.get("events", ()):
            self._follow(event)
        for s, cf in enumerate(info.get("counterfactuals", ())):
            self._last_cf[s] = cf
        if self._chosen:
            (info["curriculum_choice"],) = self._chosen.values()
        if done:
            self._cancel_unresolved()
            self._last_cf = [None] * self.codec.n_slots
        info["curriculum"] = self.curriculum.stats()

    def _follow(self, event: dict[str, Any]) -> None:
        seed_id, slot, to = event["seed_id"], event["slot"], event["to"]
        if to == "GERMINATED" and self._chosen.get(slot) == event["blueprint"]:
            self._tracked[seed_id] = event["blueprint"]
        elif seed_id in self._tracked and to == "FOSSILIZED":
            cf = self._last_cf[slot]
            self.curriculum.update(self._tracked.pop(seed_id), float(cf) if cf is not None else 0.0)
        elif seed_id in self._tracked and to == "CULLED":
            self.curriculum.update(self._tracked.pop(seed_id), self.cull_reward)

    def _cancel_unresolved(self) -> None:
        for arm in self._tracked.values():
            self.curriculum.cancel(arm)
        self._tracked = {}
