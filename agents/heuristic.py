"""HeuristicPolicy: a rule-based growth controller (the research system's "Tamiyo"), working.

Rules, applied every epoch from the observation and the action mask only:

1. **Fossilize** a PROBATIONARY seed as soon as FOSSILIZE is legal (gate G5 passes) and its
   counterfactual contribution is above ``fossilize_above_pp``.
2. **Cull** a live seed (when CULL is legal) whose counterfactual has stayed below
   ``cull_below_pp`` for ``negative_epochs`` epochs, or while, with the seed blended in, the
   validation accuracy has stayed ``drop_pp`` below its best for ``drop_epochs`` epochs, or that
   has spent ``probation_epochs`` epochs in PROBATIONARY without clearing the fossilize bar.
3. **Germinate** into a dormant slot when the host has plateaued (``plateau_epochs``), at least
   ``min_epoch`` epochs have been trained, the slot's own embargo after a cull has passed
   (``embargo_epochs`` dormant epochs, on top of the env's) and there is time left for a lifecycle
   (``latest_germinate_fraction``). The blueprint comes from a **rotation with decaying
   penalties**: the policy stays with the blueprint in turn while it works; a culled seed adds
   ``cull_penalty`` to its blueprint and moves the rotation on; penalties shrink by
   ``penalty_decay`` every epoch and persist across episodes, and a blueprint whose penalty is at
   least ``penalty_threshold`` is pushed behind the others. Only blueprints whose GERMINATE is
   legal are considered, so the parameter budget of an instance set is respected.

The research system's Tamiyo could not finish a lifecycle because its loop never computed the
counterfactual; here the counterfactual is in the observation. Pure Python + numpy (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from esper_env.config import _check, _check_float, _check_int
from esper_env.core.actions import Action, ActionKind
from esper_env.errors import ConfigError

LIVE = ("germinated", "training", "blending", "probationary")
"""Stages (observation one-hot names) of a live seed."""
SlotView = tuple[str, str | None, float | None]
"""What the observation says about a slot: stage, blueprint, counterfactual (pp; None unblended)."""


CNN_ORDER = ("conv_heavy", "conv_light", "norm", "depthwise", "attention")
"""The default rotation on CNN envs: by decreasing gain of a fixed script on digits seeds 0-19."""


@dataclass(frozen=True, slots=True)
class HeuristicConfig:
    """Thresholds of :class:`HeuristicPolicy` (defaults tuned on digits seeds 0–19 only).

    Args:
        plateau_epochs: germinate only once the observation's plateau counter (epochs since the
            best validation accuracy last rose by the env's ``plateau_threshold``) reaches this many
            epochs. 1 germinates at the first plateau, as soon as the env's gate opens on digits.
        min_epoch: germinate only after this many epochs have been trained (0: the env's
            germination gate, ``min_germinate_epoch``, decides alone).
        latest_germinate_fraction: no germination after this fraction of the episode's epoch budget
            (a seed needs about 10 epochs to train, blend and prove itself).
        fossilize_above_pp: fossilize when the counterfactual contribution exceeds this many pp
            (G5, ``gates.min_fossilize_contribution`` = 1 pp, applies on top). 3 pp (about 1.6
            standard errors of accuracy on digits' 359 validation images): conv_heavy clears it in
            every tuning episode, while attention, which lowers test accuracy but which the host
            comes to depend on, is at or below it at its first legal FOSSILIZE in 6 of 15 episodes,
            so a bad first blueprint gets culled and the rotation moves on.
        cull_below_pp: a counterfactual below this many pp counts as harmful (at most
            ``fossilize_above_pp``).
        negative_epochs: cull after this many consecutive harmful epochs (>= 1).
        probation_epochs: cull a PROBATIONARY seed that has not been fossilized after this many
            epochs in PROBATIONARY (the default reward charges indecision from 2 epochs on, and the
            env culls at its ``probation_timeout`` anyway).
        drop_pp: validation accuracy at least this many pp below its best counts as a drop.
        drop_epochs: cull a blended seed after this many consecutive epochs of drop (>= 1).
        embargo_epochs: after a cull, leave the slot dormant this many epochs more than the env's
            own embargo before germinating in it again.
        cull_penalty: penalty added to a blueprint when its seed is culled (by the policy or a gate).
        penalty_decay: factor applied to every penalty each epoch, in (0, 1]; 0.95 takes a
            penalty of 1 below 0.1 in 45 epochs (about two default episodes).
        penalty_threshold: a blueprint whose penalty is at least this is pushed behind every
            blueprint below it (then the least penalised first).
        blueprint_order: rotation order (blueprint names): by default the CNN blueprints by
            decreasing test-accuracy gain of a fixed script planting them on digits seeds 0–19
            (+6.1, +4.9, +3.3, +3.0 and -3.3 pp over no growth), on a CNN env; on an env of
            another topology (tinytext's transformer) the default means None. None = the env's
            action order reversed (decreasing parameter count at slot widths >= 2). Blueprints
            left out are never planted.

    Raises:
        ConfigError: a value out of its range (the message names the field, value and range).
    """

    plateau_epochs: int = 1
    min_epoch: int = 0
    latest_germinate_fraction: float = 0.6
    fossilize_above_pp: float = 3.0
    cull_below_pp: float = 0.0
    negative_epochs: int = 2
    probation_epochs: int = 2
    drop_pp: float = 3.0
    drop_epochs: int = 3
    embargo_epochs: int = 2
    cull_penalty: float = 1.0
    penalty_decay: float = 0.95
    penalty_threshold: float = 0.1
    blueprint_order: tuple[str, ...] | None = CNN_ORDER

    def __post_init__(self) -> None:
        def name(field: str) -> str:
            return f"HeuristicConfig.{field}"

        for field, low in (("plateau_epochs", 0), ("min_epoch", 0), ("negative_epochs", 1),
                           ("probation_epochs", 0), ("drop_epochs", 1), ("embargo_epochs", 0)):
            _check_int(name(field), getattr(self, field), low)
        _check_float(name("latest_germinate_fraction"), self.latest_germinate_fraction, 0.0, 1.0)
        _check_float(name("fossilize_above_pp"), self.fossilize_above_pp)
        _check_float(name("cull_below_pp"), self.cull_below_pp)
        _check(self.cull_below_pp <= self.fossilize_above_pp, name("cull_below_pp"), self.cull_below_pp,
               f"at most fossilize_above_pp ({self.fossilize_above_pp!r})")
        _check_float(name("drop_pp"), self.drop_pp, 0.0)
        _check_float(name("cull_penalty"), self.cull_penalty, 0.0)
        _check_float(name("penalty_decay"), self.penalty_decay, 0.0, 1.0, low_open=True)
        _check_float(name("penalty_threshold"), self.penalty_threshold, 0.0, low_open=True)
        order = self.blueprint_order
        if isinstance(order, list):
            object.__setattr__(self, "blueprint_order", order := tuple(order))
        _check(order is None or (isinstance(order, tuple) and all(isinstance(b, str) for b in order)
                                 and 0 < len(order) == len(set(order))),
               name("blueprint_order"), order, "None or a non-empty tuple of distinct blueprint names")


class HeuristicPolicy:
    """Rule-based growth (see the module docstring); SB3-like ``predict(obs, action_masks)``.

    It notices a new episode by itself (an observation that is not one epoch after the last one),
    so :func:`agents.evaluate.run_episode` needs no :meth:`reset` call.

    Args:
        env: the env (or a wrapper of it): used for the action layout, the feature names and the
            configured epoch budget only.
        config: thresholds; default :class:`HeuristicConfig`.

    Raises:
        ConfigError: ``config.blueprint_order`` names a blueprint the env does not have.
    """

    name = "heuristic"
    learns_across_episodes = True
    """Blueprint penalties carry over from one episode to the next: play its episodes in order."""

    def __init__(self, env: Any, config: HeuristicConfig | None = None) -> None:
        base = env.unwrapped
        self.config = cfg = config if config is not None else HeuristicConfig()
        self.codec = base.codec
        self._f = {n: i for i, n in enumerate(base.feature_names)}
        self._max_epochs = int(base.config.task.max_epochs)
        self._stages = [[(k.rsplit("_", 1)[-1], i) for k, i in self._f.items()
                         if k.startswith(f"slot{s}_stage_")] for s in range(self.codec.n_slots)]
        blueprints = tuple(self.codec.blueprints)
        order = cfg.blueprint_order if cfg.blueprint_order is not None else blueprints[::-1]
        if order == CNN_ORDER and not set(CNN_ORDER) <= set(blueprints):
            order = blueprints[::-1]  # the CNN default on another topology
        unknown = [b for b in order if b not in blueprints]
        if unknown:
            raise ConfigError(f"HeuristicConfig.blueprint_order={order!r} is invalid; allowed: "
                              f"distinct names from {blueprints}")
        self.order = tuple(order)
        self.penalties = dict.fromkeys(blueprints, 0.0)
        """Penalty of each blueprint (persists across episodes)."""
        self._turn = 0
        self.reset()

    # ---- episode state ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the episode (penalties and the rotation persist across episodes)."""
        n = self.codec.n_slots
        self._epoch: int | None = None      # epochs trained at the last observation
        self._budget: float | None = None   # the episode's epoch budget
        self._last: tuple[np.ndarray, Any] | None = None   # last observation and what it said
        self._negative = [0] * n
        self._drop = [0] * n
        self._embargo = [0] * n
        self._previous: list[SlotView] = [("dormant", None, None)] * n

    def _get(self, obs: np.ndarray, name: str) -> float:
        return float(obs[self._f[name]])

    def _slot(self, obs: np.ndarray, s: int) -> SlotView:
        """(stage, blueprint, counterfactual in pp or None) of slot ``s``."""
        stage = next((st for st, i in self._stages[s] if obs[i] > 0.5), "dormant")
        bp = next((b for b in self.codec.blueprints if self._get(obs, f"slot{s}_blueprint_{b}") > 0.5), None)
        has_cf = self._get(obs, f"slot{s}_has_counterfactual") > 0.5
        return stage, bp, (10.0 * self._get(obs, f"slot{s}_counterfactual") if has_cf else None)

    def _observe(self, obs: np.ndarray) -> tuple[int, float, float, list[SlotView]]:
        """Update the episode state from ``obs``: (epochs trained, their fraction, budget, slot states).

        Every step trains one epoch, so an observation that is not one epoch after the last one
        starts a new episode; the same observation again changes nothing.
        """
        if self._last is not None and np.array_equal(obs, self._last[0]):
            return self._last[1]
        frac, left = self._get(obs, "epoch_fraction"), self._get(obs, "epochs_left")
        if frac < 1.0 and left < 1.0:  # epochs_left = (budget - trained) / 100, clipped at 1
            budget = 100.0 * left / (1.0 - frac)
        else:  # the last observation of an episode, or more than 100 epochs left
            budget = self._budget or float(self._max_epochs)
        epoch = int(round(frac * budget))
        if self._epoch is None or epoch != self._epoch + 1:
            self.reset()
        self._epoch, self._budget = epoch, budget
        cfg = self.config
        for b in self.penalties:
            self.penalties[b] *= cfg.penalty_decay
        dropped = 100.0 * (self._get(obs, "best_val_acc") - self._get(obs, "val_acc")) >= cfg.drop_pp
        slots = [self._slot(obs, s) for s in range(self.codec.n_slots)]
        for s, (stage, bp, cf) in enumerate(slots):
            was_stage, was_bp, was_cf = self._previous[s]
            if was_stage in LIVE and stage == "fossilized":
                self._fossilized(s, was_bp, was_cf)
            elif was_stage in LIVE and stage not in LIVE:
                self._culled(s, was_bp)   # culled by us or by a gate
            elif stage == was_stage == "dormant":   # one more whole epoch dormant since the cull
                self._embargo[s] = max(self._embargo[s] - 1, 0)
            self._negative[s] = self._negative[s] + 1 if cf is not None and cf < cfg.cull_below_pp else 0
            self._drop[s] = self._drop[s] + 1 if cf is not None and dropped else 0
            self._previous[s] = (stage, bp, cf)
        self._last = (obs.copy(), (epoch, frac, budget, slots))
        return epoch, frac, budget, slots

    def _fossilized(self, s: int, blueprint: str | None, counterfactual: float | None) -> None:
        """Hook: slot ``s``'s seed was fossilized (its last counterfactual, pp)."""

    def _culled(self, s: int, blueprint: str | None) -> None:
        """Slot ``s``'s seed was culled: embargo the slot, penalise the blueprint, move the rotation."""
        self._embargo[s] = self.config.embargo_epochs
        if blueprint is not None:
            self.penalties[blueprint] += self.config.cull_penalty
            if self.order[self._turn % len(self.order)] == blueprint:
                self._turn += 1

    def blueprint_for(self, legal: list[str]) -> str | None:
        """The rotation's choice among ``legal`` blueprints (None if there is none).

        Rotation order starting from the blueprint in turn, except that blueprints with a penalty of
        at least ``penalty_threshold`` come after all others, least penalised first.
        """
        n, position = len(self.order), {b: k for k, b in enumerate(self.order)}
        high = self.config.penalty_threshold

        def rank(b: str) -> tuple[float, int]:
            p = self.penalties[b]
            return (p if p >= high else 0.0, (position[b] - self._turn) % n)

        return min((b for b in legal if b in position), key=rank, default=None)

    # ---- policy -------------------------------------------------------------------------------
    def predict(self, obs: np.ndarray, action_masks: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[int, None]:
        """The rules' action for this observation (WAIT when no rule fires).

        Args:
            obs: the env's observation.
            action_masks: ``env.action_masks()`` (required: only legal actions are chosen).
            deterministic: ignored (the rules are deterministic).

        Returns:
            ``(action index, None)``, like a Stable-Baselines3 model.

        Raises:
            ValueError: no ``action_masks``.
        """
        if action_masks is None:
            raise ValueError("HeuristicPolicy needs action_masks (env.action_masks())")
        obs = np.asarray(obs, dtype=np.float64).ravel()
        mask = np.asarray(action_masks, dtype=bool).ravel()
        cfg = self.config
        epoch, frac, budget, slots = self._observe(obs)
        for s, (stage, _, cf) in enumerate(slots):           # 1. fossilize proven seeds
            fossilize, _ = self.codec.slot_actions(s)
            if stage == "probationary" and mask[fossilize] and cf is not None and cf > cfg.fossilize_above_pp:
                return fossilize, None
        harmful = [(cf if cf is not None else 0.0, s) for s, (stage, _, cf) in enumerate(slots)
                   if stage in LIVE and mask[self.codec.slot_actions(s)[1]]
                   and (self._negative[s] >= cfg.negative_epochs or self._drop[s] >= cfg.drop_epochs
                        or (stage == "probationary" and self._get(obs, f"slot{s}_epochs_in_stage") * budget
                            >= cfg.probation_epochs - 1e-6))]
        if harmful:                                          # 2. cull the most harmful seed
            return self.codec.slot_actions(min(harmful)[1])[1], None
        plateaued = self._get(obs, "plateau_epochs") * budget >= cfg.plateau_epochs - 1e-6
        if not plateaued or epoch < cfg.min_epoch or frac > cfg.latest_germinate_fraction + 1e-6:
            return 0, None
        for s, (stage, _, _) in enumerate(slots):            # 3. germinate on a plateau
            if stage != "dormant" or self._embargo[s] > 0:
                continue
            legal = [b for b in self.codec.blueprints
                     if mask[self.codec.encode(Action(ActionKind.GERMINATE, s, b))]]
            bp = self.blueprint_for(legal)
            if bp is not None:
                return self.codec.encode(Action(ActionKind.GERMINATE, s, bp)), None
        return 0, None


class CurriculumHeuristicPolicy(HeuristicPolicy):
    """The heuristic decides *when*; a UCB1 :class:`~agents.curriculum.BlueprintCurriculum` decides *which*.

    Every GERMINATE the heuristic makes plants the curriculum's choice among the legal blueprints;
    the seed's outcome goes back into the curriculum: its last counterfactual (pp) when it is
    fossilized, ``cull_reward`` when it is culled (by the policy or a gate). A seed still unresolved
    when a new episode starts is not counted. The curriculum persists across episodes.

    Args:
        env: the env (or a wrapper of it).
        config: the heuristic's thresholds (its blueprint rotation is not used).
        curriculum: a curriculum to use; default UCB1 over the env's blueprints with complexity =
            rank in parameter count scaled to [0, 1] and no penalty.
        cull_reward: outcome recorded for a culled seed.
        seed: tie-breaking seed of a curriculum built here.
    """

    name = "ucb-heuristic"

    def __init__(self, env: Any, config: HeuristicConfig | None = None, curriculum: Any = None,
                 cull_reward: float = 0.0, seed: int | None = 0) -> None:
        from agents.curriculum import BlueprintCurriculum

        self._planted: dict[int, str] = {}
        super().__init__(env, config)
        blueprints = tuple(self.codec.blueprints)
        self.curriculum = curriculum or BlueprintCurriculum(
            blueprints, complexity=list(np.linspace(0.0, 1.0, len(blueprints))), seed=seed)
        self.cull_reward = float(cull_reward)

    def reset(self) -> None:
        """Forget the episode; pending selections are cancelled."""
        for bp in getattr(self, "_planted", {}).values():
            self.curriculum.cancel(bp)
        self._planted = {}
        super().reset()

    def blueprint_for(self, legal: list[str]) -> str | None:
        """The curriculum's choice among ``legal`` (recorded as pending by the caller)."""
        return self.curriculum.select(legal) if legal else None

    def predict(self, obs: np.ndarray, action_masks: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[int, None]:
        """The heuristic's action, with the curriculum's blueprint on GERMINATE."""
        action, state = super().predict(obs, action_masks, deterministic)
        decoded = self.codec.decode(action)
        if decoded.kind == ActionKind.GERMINATE:
            self._planted[int(decoded.slot)] = str(decoded.blueprint)
        return action, state

    def _fossilized(self, s: int, blueprint: str | None, counterfactual: float | None) -> None:
        if s in self._planted:
            cf = counterfactual if counterfactual is not None else 0.0
            self.curriculum.update(self._planted.pop(s), cf)

    def _culled(self, s: int, blueprint: str | None) -> None:
        super()._culled(s, blueprint)
        if s in self._planted:
            self.curriculum.update(self._planted.pop(s), self.cull_reward)
