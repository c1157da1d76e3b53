"""Host signal tracker: plateau count, stabilisation latch and short histories (anchor section 11.1).

Pure module. Accuracies are in percentage points (0-100).
"""

from __future__ import annotations

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
    loss_history: tuple[float, ...] = ()
    acc_history: tuple[float, ...] = ()


def update_tracker(state: TrackerState, val_loss: float, val_acc: float, *,
                   plateau_threshold: float, stabilization_threshold: float,
                   stabilization_epochs: int) -> TrackerState:
    """Record one epoch's validation loss and accuracy.

    An epoch whose accuracy gain is below ``plateau_threshold`` pp counts as a plateau epoch (the
    first epoch's gain is its accuracy). From the second epoch on, an epoch is stable when the
    relative loss improvement is below ``stabilization_threshold`` and the loss is below 1.5x the
    previous one; ``stabilization_epochs`` stable epochs in a row latch ``host_stabilized``.
    """
    first = state.epochs == 0
    acc_delta = val_acc if first else val_acc - state.val_acc
    loss_delta = 0.0 if first else state.val_loss - val_loss
    plateau = state.plateau_epochs + 1 if acc_delta < plateau_threshold else 0
    stable_epochs = state.stable_epochs
    if not first:
        prev = state.val_loss
        rel = (prev - val_loss) / prev if prev > 0 else 0.0
        stable = rel < stabilization_threshold and val_loss < 1.5 * prev
        stable_epochs = stable_epochs + 1 if stable else 0
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
        best_val_acc=max(state.best_val_acc, val_acc),
        loss_history=(state.loss_history + (val_loss,))[-HISTORY:],
        acc_history=(state.acc_history + (val_acc,))[-HISTORY:],
    )
