"""Host signal tracker: plateau count, stabilisation latch, short histories.

Both counters are measured against the best value so far ("patience"): a plateau epoch does not
beat the best val accuracy by ``plateau_threshold`` pp; a stable epoch does not beat the best val
loss by more than ``stabilization_threshold`` (relative). On a monotone curve this equals the
anchor's consecutive-epoch rule (reference 11.1).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from esper_env.core.tracker import HISTORY, TrackerState, update_tracker

KW = dict(plateau_threshold=0.5, stabilization_threshold=0.03, stabilization_epochs=3)


def run(losses, accs, **kw) -> list[TrackerState]:
    opts = {**KW, **kw}
    t, out = TrackerState(), []
    for loss, acc in zip(losses, accs, strict=True):
        t = update_tracker(t, loss, acc, **opts)
        out.append(t)
    return out


def test_update_tracker_first_epoch_deltas() -> None:
    t = update_tracker(TrackerState(), 2.0, 30.0, **KW)
    assert t.epochs == 1
    assert t.acc_delta == 30.0  # first epoch's gain is its accuracy
    assert t.loss_delta == 0.0
    assert t.plateau_epochs == 0 and t.stable_epochs == 0 and not t.host_stabilized
    assert t.best_val_acc == 30.0
    assert t.loss_history == (2.0,) and t.acc_history == (30.0,)


def test_update_tracker_first_epoch_low_accuracy_counts_as_plateau() -> None:
    t = update_tracker(TrackerState(), 2.3, 0.2, **KW)
    assert t.plateau_epochs == 1


def test_update_tracker_plateau_counting_and_reset() -> None:
    accs = [50.0, 50.25, 50.5, 51.0, 51.0, 51.25, 60.0]
    states = run([1.0] * len(accs), accs)
    # deltas: 50, 0.25, 0.25, 0.5, 0, 0.25, 8.75 -> a gain of exactly 0.5 is not a plateau
    assert [s.plateau_epochs for s in states] == [0, 1, 2, 0, 1, 2, 0]
    assert [s.acc_delta for s in states[1:]] == pytest.approx([0.25, 0.25, 0.5, 0.0, 0.25, 8.75])


def test_update_tracker_accuracy_drop_is_a_plateau_epoch() -> None:
    states = run([1.0, 1.0], [60.0, 40.0])
    assert states[1].acc_delta == -20.0 and states[1].plateau_epochs == 1
    assert states[1].best_val_acc == 60.0


def test_update_tracker_plateau_threshold_is_configurable() -> None:
    states = run([1.0] * 3, [50.0, 51.0, 52.0], plateau_threshold=2.0)
    assert [s.plateau_epochs for s in states] == [0, 1, 2]


def test_update_tracker_loss_delta_is_previous_minus_current() -> None:
    states = run([2.0, 1.5, 1.75], [10.0, 20.0, 30.0])
    assert [s.loss_delta for s in states] == [0.0, 0.5, -0.25]


def test_update_tracker_plateau_rebound_after_dip_does_not_reset() -> None:
    # the anchor's consecutive-gain rule would reset at 60.25 (a +20 pp "gain" after the dip)
    states = run([1.0] * 4, [60.0, 40.0, 60.25, 60.5])
    assert [s.plateau_epochs for s in states] == [0, 1, 2, 3]
    assert [s.best_val_acc for s in states] == [60.0, 60.0, 60.25, 60.5]


def test_update_tracker_stabilisation_latches_after_n_stable_epochs() -> None:
    # vs best loss: 2.0 -> 1.0 improves 50 % (not stable); 0.99, 0.985, 0.98 improve < 3 %
    # (stable x3 -> latched); the jump to 2.0 and the return to 1.0 do not beat the best either.
    losses = [2.0, 1.0, 0.99, 0.985, 0.98, 2.0, 1.0]
    states = run(losses, [50.0] * len(losses))
    assert [s.stable_epochs for s in states] == [0, 0, 1, 2, 3, 4, 5]
    assert [s.host_stabilized for s in states] == [False, False, False, False, True, True, True]
    assert states[-1].best_val_loss == 0.98


def test_update_tracker_real_improvement_resets_stable_count() -> None:
    # best 0.98 -> 0.9 is an 8 % improvement: the count restarts
    losses = [1.0, 0.99, 0.98, 0.9, 0.89]
    states = run(losses, [50.0] * len(losses))
    assert [s.stable_epochs for s in states] == [0, 1, 2, 0, 1]
    assert not any(s.host_stabilized for s in states)


def test_update_tracker_noisy_loss_above_best_counts_as_stable() -> None:
    # 0.6 / 0.55 / 0.58 never beat the best 0.5, so noise does not reset the count
    losses = [1.0, 0.5, 0.6, 0.55, 0.58]
    states = run(losses, [50.0] * len(losses))
    assert [s.stable_epochs for s in states] == [0, 0, 1, 2, 3]
    assert states[-1].host_stabilized


def test_update_tracker_best_val_loss_ignores_non_finite() -> None:
    states = run([1.0, float("nan"), float("inf"), 0.8], [50.0] * 4)
    assert [s.best_val_loss for s in states] == [1.0, 1.0, 1.0, 0.8]


def test_update_tracker_small_loss_rise_counts_as_stable() -> None:
    losses = [1.0, 1.2, 1.4]  # rel < 0 (< threshold) and below 1.5x previous
    states = run(losses, [50.0] * 3, stabilization_epochs=2)
    assert [s.stable_epochs for s in states] == [0, 1, 2]
    assert states[-1].host_stabilized


def test_update_tracker_first_epoch_never_stable() -> None:
    states = run([1.0, 1.0], [50.0, 50.0], stabilization_epochs=1)
    assert [s.host_stabilized for s in states] == [False, True]


def test_update_tracker_history_keeps_last_five() -> None:
    losses = [float(i) for i in range(1, 9)]
    accs = [float(10 * i) for i in range(1, 9)]
    last = run(losses, accs)[-1]
    assert HISTORY == 5
    assert last.loss_history == (4.0, 5.0, 6.0, 7.0, 8.0)
    assert last.acc_history == (40.0, 50.0, 60.0, 70.0, 80.0)
    assert last.epochs == 8


@given(st.lists(st.tuples(st.floats(0.01, 10.0), st.floats(0.0, 100.0)), min_size=1, max_size=30))
def test_update_tracker_invariants(seq) -> None:
    states = run([loss for loss, _ in seq], [acc for _, acc in seq], stabilization_epochs=2)
    latched = False
    for k, s in enumerate(states):
        assert len(s.loss_history) == len(s.acc_history) == min(k + 1, HISTORY)
        assert s.best_val_acc == max(acc for _, acc in seq[:k + 1])
        assert s.plateau_epochs <= k + 1
        if latched:
            assert s.host_stabilized  # the latch never releases
        latched = s.host_stabilized
