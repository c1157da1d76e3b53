"""Governor (watchdog) panic detection over the validation-loss sequence (spec section 12).

Pure module: it decides *whether* to panic; the torch layer keeps snapshots and rolls back.

* NaN or inf loss: immediate panic.
* Lobotomy: after the host had learned (mean of the history < 0.6 ln(classes)), a loss back at
  ln(classes) within ``lobotomy_tolerance * ln(classes)``: immediate panic.
* Spike: loss > mean + sensitivity*std and > multiplier*mean and > absolute_floor, for
  ``consecutive_spikes`` epochs in a row. Spikes are not added to the history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from esper_env.config import GovernorConfig


@dataclass(frozen=True, slots=True)
class GovernorState:
    """Loss history and the consecutive-spike counter."""

    history: tuple[float, ...] = ()
    spikes: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """Result of one check: ``panic`` with a ``reason`` (``nan``, ``lobotomy``, ``spike``)."""

    panic: bool
    reason: str = ""


def check_loss(state: GovernorState, loss: float, n_classes: int, cfg: GovernorConfig
               ) -> tuple[GovernorState, Verdict]:
    """Check one epoch's validation loss; return the new state and the verdict."""
    if not math.isfinite(loss):
        return replace(state, spikes=0), Verdict(True, "nan")
    h = state.history
    if len(h) >= cfg.min_history:
        chance = math.log(n_classes)
        mean = sum(h) / len(h)
        if mean < 0.6 * chance and abs(loss - chance) < cfg.lobotomy_tolerance * chance:
            return replace(state, spikes=0), Verdict(True, "lobotomy")
        std = math.sqrt(sum((x - mean) ** 2 for x in h) / len(h))
        if (loss > mean + cfg.sensitivity * std and loss > cfg.multiplier * mean
                and loss > cfg.absolute_floor):
            spikes = state.spikes + 1
            if spikes >= cfg.consecutive_spikes:
                return replace(state, spikes=0), Verdict(True, "spike")
            return replace(state, spikes=spikes), Verdict(False)
    return GovernorState((h + (loss,))[-cfg.history_window:], 0), Verdict(False)
