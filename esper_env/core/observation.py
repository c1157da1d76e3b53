"""Observation layout and encoding (spec section 11): one flat, bounded float32 vector.

Pure module. :func:`observation_features` lists every feature (name, bounds, meaning); the env
docstring's table is generated from the same list, and :func:`encode_observation` fills it. Values
are mapped to finite numbers (NaN/inf never reach the agent) and clipped to the declared bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from esper_env.core.lifecycle import MODULE_STAGES, SeedStage
from esper_env.core.state import EpochReport, SlotState, added_parameters
from esper_env.core.tracker import HISTORY, TrackerState

OBS_STAGES: tuple[SeedStage, ...] = tuple(SeedStage)
"""Stages in the order of the per-slot one-hot."""


@dataclass(frozen=True, slots=True)
class EpisodeFacts:
    """What an episode's instance fixes, as the observation reports it.

    Attributes:
        host_params: trainable parameters of the host.
        host_lr: the host's learning rate.
        train_fraction: fraction of the training split used.
        label_noise: fraction of corrupted training labels.
        param_budget: parameters the seeds may add / host parameters (None: no budget).
        slot_channels: channels at each slot's injection point.
        slot_depths: each slot's position, (block index + 1) / number of host blocks.
    """

    host_params: int
    host_lr: float = 0.01
    train_fraction: float = 1.0
    label_noise: float = 0.0
    param_budget: float | None = None
    slot_channels: tuple[int, ...] = ()
    slot_depths: tuple[float, ...] = ()


BUDGET_CAP = 10.0
"""``budget_left`` is clipped here; it is also the value reported without a budget."""


@dataclass(frozen=True, slots=True)
class Feature:
    """One observation feature: name, bounds and how it is computed."""

    name: str
    low: float
    high: float
    description: str


def _global_features() -> list[Feature]:
    f = [
        Feature("epoch_fraction", 0, 1, "epochs trained / max_epochs"),
        Feature("train_loss", 0, 5, "mean training loss / ln(n_classes)"),
        Feature("val_loss", 0, 5, "validation loss / ln(n_classes)"),
        Feature("train_acc", 0, 1, "training accuracy (fraction)"),
        Feature("val_acc", 0, 1, "validation accuracy (fraction)"),
        Feature("val_loss_delta", -1, 1, "(previous - current val loss) / ln(n_classes)"),
        Feature("val_acc_delta", -1, 1, "val accuracy change in pp / 10 (first epoch: acc / 10)"),
        Feature("plateau_epochs", 0, 1,
                "epochs since best val accuracy rose >= plateau_threshold pp, / max_epochs"),
        Feature("best_val_acc", 0, 1, "best val accuracy so far (fraction)"),
    ]
    f += [Feature(f"val_acc_hist_{i}", 0, 1, f"val accuracy {HISTORY - i} epochs ago (0 before start)")
          for i in range(HISTORY)]
    f += [Feature(f"val_loss_hist_{i}", 0, 5, f"val loss / ln(n_classes) {HISTORY - i} epochs ago")
          for i in range(HISTORY)]
    f += [
        Feature("host_stabilized", 0, 1, "1 once the host's val loss has stabilised (latched)"),
        Feature("germination_open", 0, 1, "1 if the germination gate is open this step"),
        Feature("added_param_ratio", 0, 10, "seed parameters in live modules / host parameters"),
        Feature("host_size", 0, 1, "log10(host parameters) / 6"),
        Feature("epochs_left", 0, 1, "(max_epochs - epochs trained) / 100"),
        Feature("budget_left", 0, 10,
                "parameters the seeds may still add / host parameters (10 without a budget)"),
        Feature("has_budget", 0, 1, "1 if the episode has a parameter budget"),
        Feature("host_lr", 0, 1, "(log10(host learning rate) + 4) / 4"),
        Feature("train_fraction", 0, 1, "fraction of the training split used"),
        Feature("label_noise", 0, 1, "fraction of training labels corrupted"),
    ]
    return f


def _slot_features(s: int, blueprints: Sequence[str]) -> list[Feature]:
    f = [Feature(f"slot{s}_stage_{st.name.lower()}", 0, 1, f"1 if slot {s} is {st.name}")
         for st in OBS_STAGES]
    f += [
        Feature(f"slot{s}_alpha", 0, 1, "blend weight"),
        Feature(f"slot{s}_epochs_in_stage", 0, 1, "epochs in the current stage / max_epochs"),
        Feature(f"slot{s}_seed_age", 0, 1, "epochs since germination / max_epochs"),
        Feature(f"slot{s}_improvement", -1, 1, "val accuracy change since stage start, pp / 10"),
        Feature(f"slot{s}_counterfactual", -1, 1, "this epoch's counterfactual contribution, pp / 10"),
        Feature(f"slot{s}_has_counterfactual", 0, 1, "1 if a counterfactual exists (alpha > 0)"),
        Feature(f"slot{s}_gradient_ratio", 0, 1, "parameter-normalised seed/host gradient ratio / 10"),
        Feature(f"slot{s}_param_share", 0, 10, "seed parameters / host parameters"),
        Feature(f"slot{s}_width", 0, 1, "log2(channels at the slot) / 8"),
        Feature(f"slot{s}_depth", 0, 1, "(host block before the slot + 1) / host blocks"),
    ]
    f += [Feature(f"slot{s}_blueprint_{b}", 0, 1, f"1 if the seed is {b} (action order)")
          for b in blueprints]
    return f


def observation_features(n_slots: int, blueprints: Sequence[str]) -> tuple[Feature, ...]:
    """All features in vector order: the global block, then one block per slot."""
    feats = _global_features()
    for s in range(n_slots):
        feats += _slot_features(s, blueprints)
    return tuple(feats)


def observation_bounds(features: Sequence[Feature]) -> tuple[np.ndarray, np.ndarray]:
    """float32 low and high vectors for a ``Box``."""
    low = np.array([f.low for f in features], dtype=np.float32)
    high = np.array([f.high for f in features], dtype=np.float32)
    return low, high


def _finite(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else 0.0


def encode_observation(*, report: EpochReport, tracker: TrackerState, slots: Sequence[SlotState],
                       blueprints: Sequence[str], epoch: int, max_epochs: int, n_classes: int,
                       facts: EpisodeFacts, germination_open: bool, low: np.ndarray,
                       high: np.ndarray) -> np.ndarray:
    """Encode the state after an epoch into the clipped float32 vector."""
    ln_c = math.log(n_classes)
    host_params = facts.host_params
    pad = HISTORY - len(tracker.acc_history)
    acc_hist = [0.0] * pad + [a / 100.0 for a in tracker.acc_history]
    loss_hist = [0.0] * pad + [loss / ln_c for loss in tracker.loss_history]
    added = added_parameters(slots)
    v: list[float] = [
        epoch / max_epochs,
        report.train_loss / ln_c,
        report.val_loss / ln_c,
        report.train_acc / 100.0,
        report.val_acc / 100.0,
        tracker.loss_delta / ln_c,
        tracker.acc_delta / 10.0,
        tracker.plateau_epochs / max_epochs,
        tracker.best_val_acc / 100.0,
        *acc_hist,
        *loss_hist,
        float(tracker.host_stabilized),
        float(germination_open),
        added / host_params,
        math.log10(max(host_params, 1)) / 6.0,
        (max_epochs - epoch) / 100.0,
        BUDGET_CAP if facts.param_budget is None else facts.param_budget - added / host_params,
        0.0 if facts.param_budget is None else 1.0,
        (math.log10(facts.host_lr) + 4.0) / 4.0,
        facts.train_fraction,
        facts.label_noise,
    ]
    for slot in slots:
        v += [1.0 if slot.stage == st else 0.0 for st in OBS_STAGES]
        c = slot.counterfactual
        v += [
            slot.alpha.alpha,
            slot.epochs_in_stage / max_epochs,
            slot.seed_age / max_epochs,
            slot.improvement_since_stage_start / 10.0 if slot.stage in MODULE_STAGES else 0.0,
            _finite(c) / 10.0,
            0.0 if c is None else 1.0,
            slot.gradient_ratio / 10.0,
            slot.seed_params / host_params,
            math.log2(facts.slot_channels[slot.index]) / 8.0 if facts.slot_channels else 0.0,
            facts.slot_depths[slot.index] if facts.slot_depths else 0.0,
        ]
        v += [1.0 if slot.blueprint == b else 0.0 for b in blueprints]
    # Clip in float64 first: a finite value beyond float32's range must clip to the bound, not
    # overflow to inf. NaN becomes 0; +-inf become the bounds.
    obs = np.asarray(v, dtype=np.float64)
    np.nan_to_num(obs, copy=False, nan=0.0, posinf=np.inf, neginf=-np.inf)
    np.clip(obs, low, high, out=obs)
    return obs.astype(np.float32)
