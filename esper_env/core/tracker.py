"""Host signal tracker: plateau count, stabilisation latch and short histories.

Pure module. Accuracies are in percentage points (0-100).

The anchor (reference section 11.1) counted *consecutive epochs whose accuracy gain was below
0.5 pp* and *consecutive epochs whose relative loss improvement was below 3 %*. On a small, noisy
validation split (digits: 359 samples, epoch-to-epoch swings of several pp) every rebound after a
dip resets those counters, so the germination gate almost never opens. We keep the thresholds but
measure against the best value so far ("patience", as in learning-rate schedulers): a plateau epoch
is one that does not beat the best val accuracy by ``plateau_threshold`` pp; a stable epoch is one
that does not beat the best val loss by more than ``stabilization_threshold`` (relative). On a
monotone learning curve both rules agree with the anchor's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

HISTORY = 5


@dataclass(frozen=True, slots=True)
class TrackerState:
    """Signals derived from the sequence of (val_loss, val_acc) of one episode."""

    epochs: int = 0
    val_loss: float = 0.0
    val_acc: float = 0.0
    loss_delta: float = 0.0
    acc_delta: float = 0.0
    plateau_epochs: int = 0
    stable_epochs: int = 0
    host_stabilized: bool = False
    best_val_acc: float = 0.0
    best_val_loss: float = math.inf
    loss_history: tuple[float, ...] = ()
    acc_history: tuple[float, ...] = ()


def update_tracker(state: TrackerState, val_loss: float, val_acc: float, *,
                   plateau_threshold: float, stabilization_threshold: float,
                   stabilization_epochs: int) -> TrackerState:
    """Record one epoch's validation loss and accuracy.

    ``plateau_epochs`` counts epochs since the best val accuracy last rose by at least
    ``plateau_threshold`` pp (the first epoch always improves on nothing, so it is not a plateau
    epoch unless its accuracy is below the threshold). ``stable_epochs`` counts epochs, from the
    second on, since the best val loss last fell by more than ``stabilization_threshold``
    (relative); ``stabilization_epochs`` of them latch ``host_stabilized`` for the episode.
    """
    first = state.epochs == 0
    acc_delta = val_acc if first else val_acc - state.val_acc
    loss_delta = 0.0 if first else state.val_loss - val_loss
    improved_acc = val_acc - (0.0 if first else state.best_val_acc) >= plateau_threshold
    plateau = 0 if improved_acc else state.plateau_epochs + 1
    stable_epochs = state.stable_epochs
    if not first:
        best = state.best_val_loss
        improved_loss = best > 0 and (best - val_loss) / best > stabilization_threshold
        stable_epochs = 0 if improved_loss else stable_epochs + 1
    finite_loss = val_loss if math.isfinite(val_loss) else math.inf
    return replace(
        state,
        epochs=state.epochs + 1,
        val_loss=val_loss,
        val_acc=val_acc,
        loss_delta=loss_delta,
        acc_delta=acc_delta,
        plateau_epochs=plateau,
        stable_epochs=stable_epochs,
        host_stabilized=state.host_stabilized or stable_epochs >= stabilization_epochs,
        best_val_acc=max(state.best_val_acc, val_acc) if not first else val_acc,
        best_val_loss=min(state.best_val_loss, finite_loss),
        loss_history=(state.loss_history + (val_loss,))[-HISTORY:],
        acc_history=(state.acc_history + (val_acc,))[-HISTORY:],
    )
