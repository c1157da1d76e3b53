"""What the agent and the user see of an episode state: the observation and ``info``.

Pure module. :func:`observe` encodes the state into the observation vector; :func:`reset_info` and
:func:`step_info` assemble ``info`` from the state, the step's outcome and the test accuracies the
torch side measured (reporting only: nothing observed or paid depends on them).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from esper_env.core.episode import (
    EpisodeParams,
    EpisodeState,
    StepOutcome,
    TestReading,
    germination_open,
    no_growth_accuracy,
)
from esper_env.core.lifecycle import SeedStage
from esper_env.core.observation import encode_observation
from esper_env.core.reward import reward_terms, split_value_added
from esper_env.core.state import added_parameters


def perplexity(loss: float) -> float:
    """``exp(loss)`` of a language model's mean next-token loss (inf when it overflows, NaN for
    a NaN loss).
    """  # noqa: D205
    return math.exp(loss) if not loss >= 700.0 else math.inf


def observe(state: EpisodeState, params: EpisodeParams, low: np.ndarray, high: np.ndarray
            ) -> np.ndarray:
    """The observation of ``state`` (finite, clipped to ``[low, high]``)."""
    return encode_observation(
        report=state.report, tracker=state.tracker, slots=state.slots,
        blueprints=params.blueprints, epoch=min(state.epoch, params.max_epochs),
        max_epochs=params.max_epochs, n_classes=params.n_classes, facts=state.setup.facts,
        germination_open=germination_open(state, params), low=low, high=high)


def base_info(state: EpisodeState, params: EpisodeParams, test: TestReading) -> dict[str, Any]:
    """The keys every ``info`` has: the epoch's measurements, the slots, the mask, V."""
    r = state.report
    slots = state.slots
    instance = state.setup.instance
    info: dict[str, Any] = {
        "epoch": state.epoch,
        "train_loss": r.train_loss, "train_acc": r.train_acc,
        "val_loss": r.val_loss, "val_acc": r.val_acc,
        **({"val_perplexity": perplexity(r.val_loss)} if params.transformer else {}),
        "stages": [s.stage.name for s in slots],
        "blueprints": [s.blueprint for s in slots],
        "seed_ids": [s.seed_id for s in slots],
        "alphas": [s.alpha.alpha for s in slots],
        "counterfactuals": [s.counterfactual for s in slots],
        "gradient_ratios": [s.gradient_ratio for s in slots],
        "params_added": added_parameters(slots),
        "host_params": state.setup.host_params,
        "action_mask": np.array(state.mask, dtype=bool),
        "instance": None if instance is None else instance.name,
    }
    if params.twin:
        info.update(value_added=state.value_added, twin_val_acc=state.twin_val_acc,
                    value_added_by_slot=split_value_added(state.value_added, slots))
    if params.report_test_acc:  # reporting only: nothing observed or paid depends on it
        info["test_acc"] = test.acc
    return info


def reset_info(state: EpisodeState, params: EpisodeParams, outcome: StepOutcome, test: TestReading,
               fault: str | None) -> dict[str, Any]:
    """``info`` of ``reset``: the first epoch, nothing decided yet."""
    info = base_info(state, params, test)
    info.update(events=[], gates=[None] * params.n_slots, illegal_action=False, rollback=False,
                diverged=outcome.diverged, fault=fault,
                reward_terms=dict.fromkeys(reward_terms(params.reward_mode), 0.0))
    return info


def step_info(state: EpisodeState, params: EpisodeParams, outcome: StepOutcome, test: TestReading,
              fault: str | None) -> dict[str, Any]:
    """``info`` of a step; the last step adds the final accuracies (test: reporting only)."""
    pending = outcome.pending
    assert pending is not None and outcome.reward is not None
    info = base_info(state, params, test)
    info.update(
        action=pending.index, action_name=params.codec.name(pending.index),
        illegal_action=not pending.legal, events=[e.to_info() for e in outcome.events],
        gates=[g.to_info() if g is not None else None for g in outcome.gates],
        reward_terms=outcome.reward.terms, rollback=outcome.rollback, diverged=outcome.diverged)
    if outcome.terminated:
        assert test.acc is not None
        info.update(final_val_acc=state.report.val_acc, final_test_acc=test.acc,
                    n_fossilized=sum(s.stage == SeedStage.FOSSILIZED for s in state.slots))
        if params.twin:  # the no-growth world's test accuracy (None if the twin diverged)
            info["final_twin_test_acc"] = no_growth_accuracy(test.twin, test.acc)
    info["fault"] = fault  # what raised in this step's computation (None: nothing)
    return info
