"""HeuristicPolicy: a rule-based growth controller (the research system's "Tamiyo"), working.

Rules, applied every epoch from the observation and the action mask only:

1. **Fossilize** a PROBATIONARY seed as soon as FOSSILIZE is legal (gate G5 passes) and its
   counterfactual contribution is above ``fossilize_above_pp``.
2. **Cull** a live seed (when CULL is legal) whose counterfactual has stayed below
   ``cull_below_pp`` for ``negative_epochs`` epochs, or while the model's validation accuracy has
   stayed ``drop_pp`` below its best for ``drop_epochs`` epochs with the seed blended in.
3. **Germinate** into a dormant slot when the host has plateaued (``plateau_epochs``), the slot's
   own embargo after a cull has passed (``embargo_epochs``, on top of the env's) and there is time
   left for a lifecycle (``latest_germinate_fraction``). The blueprint comes from a **rotation with
   decaying penalties**: the policy stays with the blueprint in turn while it works; a culled seed adds
   ``cull_penalty`` to its blueprint and moves the rotation on; penalties shrink by
   ``penalty_decay`` every epoch (and persist across episodes). Only blueprints whose GERMINATE is
   legal are considered, so the parameter budget of an instance set is respected.

The research system's Tamiyo could not finish a lifecycle because its loop never computed the
counterfactual; here the counterfactual is in the observation. Pure Python + numpy (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from esper_env.core.actions import Action, ActionKind
from esper_env.errors import ConfigError

LIVE = ("germinated", "training", "blending", "probationary")
"""Stages (observation one-hot names) of a live seed."""


@dataclass(frozen=True, slots=True)
class HeuristicConfig:
    """Thresholds of :class:`HeuristicPolicy` (defaults tuned on digits seeds 0–19 only).

    Args:
        plateau_epochs: germinate only after the best validation accuracy has not risen by the
            env's ``plateau_threshold`` for this many epochs (the observation's plateau counter).
        latest_germinate_fraction: no germination after this fraction of the epoch budget (a seed
            needs several epochs to train, blend and prove itself).
        fossilize_above_pp: fossilize when the counterfactual exceeds this (pp; G5 also applies).
        cull_below_pp: a counterfactual below this (pp) counts as harmful.
        negative_epochs: cull after this many consecutive harmful epochs.
        drop_pp: validation accuracy this far (pp) below its best counts as a drop.
        drop_epochs: cull a blended seed after this many consecutive epochs of drop.
        embargo_epochs: after a cull, wait this many epochs before germinating in that slot again.
        cull_penalty: penalty added to a blueprint when its seed is culled.
        penalty_decay: factor applied to every penalty each epoch (in (0, 1]).
        blueprint_order: rotation order (blueprint names); None = descending parameter count.
    """

    plateau_epochs: int = 1
    latest_germinate_fraction: float = 0.6
    fossilize_above_pp: float = 0.0
    cull_below_pp: float = 0.0
    negative_epochs: int = 2
    drop_pp: float = 3.0
    drop_epochs: int = 3
    embargo_epochs: int = 2
    cull_penalty: float = 1.0
    penalty_decay: float = 0.95
    blueprint_order: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_epochs"):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ConfigError(f"HeuristicConfig.{f.name}={value!r} is invalid; allowed: an "
                                      "integer >= 0")
            elif f.name != "blueprint_order" and not np.isfinite(value):
                raise ConfigError(f"HeuristicConfig.{f.name}={value!r} is invalid; allowed: finite")
        if not 0.0 <= self.latest_germinate_fraction <= 1.0:
            raise ConfigError(f"HeuristicConfig.latest_germinate_fraction="
                              f"{self.latest_germinate_fraction!r} is invalid; allowed: 0..1")
        if not 0.0 < self.penalty_decay <= 1.0:
            raise ConfigError(f"HeuristicConfig.penalty_decay={self.penalty_decay!r} is invalid; "
                              "allowed: 0 < penalty_decay <= 1")
        if self.cull_penalty < 0 or self.drop_pp < 0:
            raise ConfigError("HeuristicConfig.cull_penalty and drop_pp must be >= 0, got "
                              f"{self.cull_penalty!r}, {self.drop_pp!r}")


class HeuristicPolicy:
    """Rule-based growth (see the module docstring); SB3-like ``predict(obs, action_masks)``.

    Args:
        env: the env (or a wrapper of it): used for the action layout and feature names only.
        config: thresholds; default :class:`HeuristicConfig`.
    """

    name = "heuristic"
    learns_across_episodes = True
    """Blueprint penalties carry over from one episode to the next: play its episodes in order."""

    def __init__(self, env: Any, config: HeuristicConfig | None = None) -> None:
        base = env.unwrapped
        self.config = cfg = config or HeuristicConfig()
        self.codec = base.codec
        names = list(base.feature_names)
        self._f = {n: i for i, n in enumerate(names)}
        blueprints = tuple(self.codec.blueprints)
        order = cfg.blueprint_order if cfg.blueprint_order is not None else blueprints[::-1]
        unknown = [b for b in order if b not in blueprints]
        if unknown or len(set(order)) != len(order) or not order:
            raise ConfigError(f"HeuristicConfig.blueprint_order={order!r} is invalid; allowed: "
                              f"distinct names from {blueprints}")
        self.order = tuple(order)
        self.penalties = dict.fromkeys(blueprints, 0.0)
        self._turn = 0
        self.reset()

    # ---- episode state ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the episode (penalties and the rotation persist across episodes)."""
        n = self.codec.n_slots
        self._epoch = -1
        self._negative = [0] * n
        self._drop = 0
        self._embargo = [0] * n
        self._previous: list[tuple[str, str | None, float | None]] = [("dormant", None, None)] * n

    def _get(self, obs: np.ndarray, name: str) -> float:
        return float(obs[self._f[name]])

    def _slot(self, obs: np.ndarray, s: int) -> tuple[str, str | None, float | None]:
        """(stage, blueprint, counterfactual in pp or None) of slot ``s``."""
        stage = next((name.rsplit("_", 1)[-1] for name in self._f
                      if name.startswith(f"slot{s}_stage_") and obs[self._f[name]] > 0.5), "dormant")
        bp = next((b for b in self.codec.blueprints if obs[self._f[f"slot{s}_blueprint_{b}"]] > 0.5), None)
        has_cf = self._get(obs, f"slot{s}_has_counterfactual") > 0.5
        cf = 10.0 * self._get(obs, f"slot{s}_counterfactual") if has_cf else None
        return stage, bp, cf

    def _observe(self, obs: np.ndarray) -> tuple[int, int]:
        """Update the episode state from ``obs``; returns (epochs trained, epoch budget)."""
        frac, left = self._get(obs, "epoch_fraction"), self._get(obs, "epochs_left")
        budget = int(round(100.0 * left / (1.0 - frac))) if frac < 1.0 else max(self._epoch, 1)
        epoch = int(round(frac * budget))
        if epoch <= self._epoch:
            self.reset()
        self._epoch = epoch
        cfg = self.config
        for b in self.penalties:
            self.penalties[b] *= cfg.penalty_decay
        for s in range(self.codec.n_slots):
            stage, bp, cf = self._slot(obs, s)
            was_stage, was_bp, was_cf = self._previous[s]
            self._embargo[s] = max(self._embargo[s] - 1, 0)
            if was_stage in LIVE and stage == "fossilized":
                self._fossilized(s, was_bp, was_cf)
            elif was_stage in LIVE and stage not in LIVE:
                self._culled(s, was_bp)   # culled by us or by a gate
            self._negative[s] = self._negative[s] + 1 if cf is not None and cf < cfg.cull_below_pp else 0
            self._previous[s] = (stage, bp, cf)
        dropped = 100.0 * (self._get(obs, "best_val_acc") - self._get(obs, "val_acc")) >= cfg.drop_pp
        self._drop = self._drop + 1 if dropped else 0
        return epoch, budget

    def _fossilized(self, s: int, blueprint: str | None, counterfactual: float | None) -> None:
        """Hook: slot ``s``'s seed was fossilized (its last counterfactual, pp)."""

    def _culled(self, s: int, blueprint: str | None) -> None:
        self._embargo[s] = self.config.embargo_epochs + 1
        if blueprint is not None:
            self.penalties[blueprint] += self.config.cull_penalty
            if self.order[self._turn % len(self.order)] == blueprint:
                self._turn += 1

    def blueprint_for(self, legal: list[str]) -> str | None:
        """The rotation's choice among ``legal`` blueprints: least penalty, then rotation order."""
        if not legal:
            return None
        n = len(self.order)
        position = {b: k for k, b in enumerate(self.order)}
        ranked = sorted((b for b in legal if b in position),
                        key=lambda b: (round(self.penalties[b], 6), (position[b] - self._turn) % n))
        return ranked[0] if ranked else None

    # ---- policy -------------------------------------------------------------------------------
    def predict(self, obs: np.ndarray, action_masks: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[int, None]:
        """The rules' action for this observation (WAIT when no rule fires)."""
        if action_masks is None:
            raise ValueError("HeuristicPolicy needs action_masks (env.action_masks())")
        obs = np.asarray(obs, dtype=np.float64).ravel()
        mask = np.asarray(action_masks, dtype=bool).ravel()
        cfg = self.config
        epoch, budget = self._observe(obs)
        slots = [self._slot(obs, s) for s in range(self.codec.n_slots)]
        for s, (stage, _, cf) in enumerate(slots):           # 1. fossilize proven seeds
            fossilize, _ = self.codec.slot_actions(s)
            if stage == "probationary" and mask[fossilize] and cf is not None \
                    and cf > cfg.fossilize_above_pp:
                return fossilize, None
        harmful = []
        for s, (stage, _, cf) in enumerate(slots):           # 2. cull harmful seeds
            _, cull = self.codec.slot_actions(s)
            if stage in LIVE and mask[cull]:
                blended = cf is not None
                if self._negative[s] >= max(cfg.negative_epochs, 1) or \
                        (blended and self._drop >= max(cfg.drop_epochs, 1)):
                    harmful.append((cf if cf is not None else 0.0, s))
        if harmful:
            return self.codec.slot_actions(min(harmful)[1])[1], None
        plateaued = self._get(obs, "plateau_epochs") * budget >= cfg.plateau_epochs - 1e-6
        if not plateaued or epoch > cfg.latest_germinate_fraction * budget:
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
