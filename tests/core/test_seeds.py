"""Lifecycle operations on one slot (esper_env/core/seeds.py) and a stateful model of two slots."""

from __future__ import annotations

import pytest
from conftest import rules
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from esper_env.config import EsperConfig
from esper_env.core.actions import ActionCodec, legal_action_mask
from esper_env.core.alpha import schedule_value
from esper_env.core.catalog import BLUEPRINT_NAMES
from esper_env.core.lifecycle import LIVE_STAGES, MODULE_STAGES, SeedStage
from esper_env.core.seeds import (
    LifecycleEvent,
    advance_epoch,
    auto_transition,
    cull,
    fossilize,
    germinate,
    record_epoch,
)
from esper_env.core.state import SlotMetrics, SlotState
from esper_env.core.tracker import TrackerState, update_tracker
from esper_env.errors import InvalidTransition

S = SeedStage
CFG = EsperConfig()  # anchor: 3 training epochs, 5 blending epochs, embargo 3, max_epochs 25
GOOD = SlotMetrics(gradient_ratio=1.0)  # passes G2's gradient-ratio check


def fresh(index: int = 0) -> SlotState:
    return SlotState(index=index)


def germinated(cfg: EsperConfig = CFG, val_acc: float = 50.0, params: int = 123) -> SlotState:
    slot, gate, _ = germinate(fresh(), blueprint="conv_light", seed_id="seed0", seed_params=params,
                              shape_ok=True, val_acc=val_acc, schedule=cfg.lifecycle.alpha_schedule)
    assert gate.passed and slot.stage == S.TRAINING
    return slot


def to_blending(cfg: EsperConfig = CFG) -> SlotState:
    slot = germinated(cfg)
    for _ in range(cfg.lifecycle.gates.min_training_epochs):
        slot, _, _ = advance_epoch(slot, GOOD, 51.0, rules(cfg))
    assert slot.stage == S.BLENDING
    return slot


def to_probation(cfg: EsperConfig = CFG, c: float = 2.0) -> SlotState:
    slot = to_blending(cfg)
    for _ in range(cfg.lifecycle.blending_epochs):
        slot, _, _ = advance_epoch(slot, SlotMetrics(counterfactual=c), 52.0, rules(cfg))
    assert slot.stage == S.PROBATIONARY
    return slot


# -- germinate ---------------------------------------------------------------------------------

def test_germinate_goes_dormant_to_training_with_two_events() -> None:
    slot, gate, events = germinate(fresh(3), blueprint="norm", seed_id="seed7", seed_params=42,
                                   shape_ok=True, val_acc=61.5, schedule="linear")
    assert gate.gate == "G1" and gate.passed
    assert [(e.before, e.after, e.cause) for e in events] == [
        (S.DORMANT, S.GERMINATED, "action"), (S.GERMINATED, S.TRAINING, "G1")]
    assert all(e.slot == 3 and e.seed_id == "seed7" and e.blueprint == "norm" for e in events)
    assert slot.stage == S.TRAINING
    assert slot.acc_at_germination == 61.5
    assert slot.acc_at_stage_start == 61.5
    assert (slot.blueprint, slot.seed_id, slot.seed_params) == ("norm", "seed7", 42)
    assert (slot.epochs_in_stage, slot.seed_age) == (0, 0)
    assert slot.alpha.alpha == 0.0 and slot.alpha.schedule == "linear"
    assert slot.counterfactual is None


def test_germinate_failed_shape_probe_leaves_slot_dormant() -> None:
    slot, gate, events = germinate(fresh(), blueprint="norm", seed_id="seed0", seed_params=10,
                                   shape_ok=False, val_acc=50.0, schedule="sigmoid")
    assert not gate.passed and gate.gate == "G0" and gate.failed == ("shape_probe",)
    assert events == []
    assert slot.stage == S.DORMANT
    assert slot.blueprint is None and slot.seed_params == 0 and slot.acc_at_germination is None
    assert slot.last_gate == gate


def test_germinate_on_occupied_slot_raises() -> None:
    with pytest.raises(InvalidTransition, match="^no transition from TRAINING on GERMINATE$"):
        germinate(germinated(), blueprint="norm", seed_id="seed1", seed_params=1, shape_ok=True,
                  val_acc=50.0, schedule="sigmoid")


def test_lifecycle_event_to_info_names_stages() -> None:
    e = LifecycleEvent(1, "seed3", "norm", S.PROBATIONARY, S.CULLED, "probation_timeout")
    assert e.to_info() == {"slot": 1, "seed_id": "seed3", "blueprint": "norm",
                           "from": "PROBATIONARY", "to": "CULLED", "cause": "probation_timeout"}


# -- TRAINING -> BLENDING ----------------------------------------------------------------------

def test_advance_training_blends_only_after_min_training_epochs() -> None:
    slot = germinated()
    for epoch in (1, 2):
        slot, gate, events = advance_epoch(slot, GOOD, 50.0 + epoch, rules(CFG))
        assert slot.stage == S.TRAINING and events == []
        assert gate is not None and gate.failed == ("training_epochs",)
        assert slot.epochs_in_stage == epoch and slot.seed_age == epoch
    slot, gate, events = advance_epoch(slot, GOOD, 53.0, rules(CFG))
    assert slot.stage == S.BLENDING
    assert gate is not None and gate.gate == "G2" and gate.passed
    assert [(e.before, e.after, e.cause) for e in events] == [(S.TRAINING, S.BLENDING, "G2")]
    assert slot.epochs_in_stage == 0 and slot.seed_age == 3
    assert slot.acc_at_stage_start == 53.0
    # the first blending epoch trains blended: alpha already holds the first ramp value
    assert slot.alpha.alpha == pytest.approx(schedule_value("sigmoid", 1, 5))
    assert slot.alpha.alpha == pytest.approx(0.1824, abs=1e-4)


def test_advance_training_waits_for_g2_gradient_ratio() -> None:
    slot = germinated()
    weak = SlotMetrics(gradient_ratio=0.01)
    for _ in range(4):
        slot, gate, _ = advance_epoch(slot, weak, 50.0, rules(CFG))
    assert slot.stage == S.TRAINING
    assert gate is not None and gate.failed == ("gradient_ratio",)
    slot, gate, _ = advance_epoch(slot, SlotMetrics(gradient_ratio=0.05), 50.0, rules(CFG))
    assert slot.stage == S.BLENDING


def test_advance_training_blocked_by_isolation_violations() -> None:
    slot = germinated()
    slot, _, _ = advance_epoch(slot, SlotMetrics(gradient_ratio=1.0, isolation_violations=11),
                               50.0, rules(CFG))
    for _ in range(3):
        slot, gate, _ = advance_epoch(slot, GOOD, 50.0, rules(CFG))
    # violations are cumulative
    assert slot.isolation_violations == 11
    assert slot.stage == S.TRAINING and gate is not None
    assert gate.failed == ("isolation_violations",)


# -- BLENDING -> PROBATIONARY ------------------------------------------------------------------

def test_advance_blending_ramps_alpha_each_epoch_then_probation_at_exactly_one() -> None:
    slot = to_blending()
    alphas = [slot.alpha.alpha]
    for _ in range(1, CFG.lifecycle.blending_epochs):
        slot, gate, events = advance_epoch(slot, SlotMetrics(counterfactual=1.5), 52.0, rules(CFG))
        assert slot.stage == S.BLENDING and events == []
        assert gate is not None and "blending_epochs" in gate.failed
        alphas.append(slot.alpha.alpha)
    assert alphas[:4] == pytest.approx([0.1824, 0.3775, 0.6225, 0.8176], abs=1e-4)
    assert alphas[4] == 1.0
    slot, gate, events = advance_epoch(slot, SlotMetrics(counterfactual=1.5), 52.0, rules(CFG))
    assert slot.stage == S.PROBATIONARY
    assert gate is not None and gate.gate == "G3" and gate.passed
    assert [(e.before, e.after, e.cause) for e in events] == [(S.BLENDING, S.PROBATIONARY, "G3")]
    assert slot.alpha.alpha == 1.0
    assert slot.counterfactual == 1.5


@pytest.mark.parametrize("c", [0.0, -0.01, -4.0, None])
def test_advance_blending_end_without_positive_counterfactual_culls(c: float | None) -> None:
    """Issue 5: a seed whose counterfactual is <= 0 never enters PROBATIONARY."""
    slot = to_blending()
    for _ in range(1, CFG.lifecycle.blending_epochs):  # a negative counterfactual mid-ramp is tolerated
        slot, gate, events = advance_epoch(slot, SlotMetrics(counterfactual=-1.0), 52.0, rules(CFG))
        assert slot.stage == S.BLENDING and events == []
    slot, gate, events = advance_epoch(slot, SlotMetrics(counterfactual=c), 52.0, rules(CFG))
    assert slot.stage == S.CULLED
    assert gate is not None and gate.gate == "G3" and gate.failed == ("counterfactual",)
    assert [(e.before, e.after, e.cause) for e in events] == [
        (S.BLENDING, S.CULLED, "G3_counterfactual")]
    assert slot.blueprint is None and slot.seed_params == 0


def test_advance_probation_threshold_is_configurable() -> None:
    cfg = CFG.replace(gates={"min_probation_contribution": -3.0})
    slot = to_blending(cfg)
    for _ in range(cfg.lifecycle.blending_epochs):
        slot, _, _ = advance_epoch(slot, SlotMetrics(counterfactual=-2.0), 52.0, rules(cfg))
    assert slot.stage == S.PROBATIONARY
    slot, _, events = advance_epoch(slot, SlotMetrics(counterfactual=-3.0), 52.0, rules(cfg))
    assert slot.stage == S.CULLED and [e.cause for e in events] == ["negative_counterfactual"]


def test_advance_blending_single_epoch_ramp_is_one_at_once() -> None:
    cfg = CFG.replace(blending_epochs=1)
    slot = to_blending(cfg)
    assert slot.alpha.alpha == 1.0
    slot, _, _ = advance_epoch(slot, SlotMetrics(counterfactual=1.0), 52.0, rules(cfg))
    assert slot.stage == S.PROBATIONARY


# -- PROBATIONARY ------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [0.0, -0.01, -5.0])
def test_advance_probation_culls_at_once_on_non_positive_counterfactual(c: float) -> None:
    slot = to_probation()
    slot, gate, events = advance_epoch(slot, SlotMetrics(counterfactual=c), 52.0, rules(CFG))
    assert slot.stage == S.CULLED and gate is None
    assert [(e.before, e.after, e.cause) for e in events] == [
        (S.PROBATIONARY, S.CULLED, "negative_counterfactual")]
    assert events[0].seed_id == "seed0" and events[0].blueprint == "conv_light"
    assert slot.blueprint is None and slot.seed_params == 0 and slot.alpha.alpha == 0.0


@pytest.mark.parametrize(("max_epochs", "timeout"), [(25, 3), (50, 5), (10, 3), (120, 12)])
def test_advance_probation_times_out(max_epochs: int, timeout: int) -> None:
    cfg = CFG.replace(max_epochs=max_epochs)
    assert cfg.effective_probation_timeout == timeout
    slot = to_probation(cfg)
    for _ in range(timeout - 1):
        slot, _, events = advance_epoch(slot, SlotMetrics(counterfactual=0.4), 53.0, rules(cfg))
        assert slot.stage == S.PROBATIONARY and events == []
    slot, _, events = advance_epoch(slot, SlotMetrics(counterfactual=0.4), 53.0, rules(cfg))
    assert slot.stage == S.CULLED
    assert [e.cause for e in events] == ["probation_timeout"]


def test_advance_probation_unknown_counterfactual_only_times_out() -> None:
    slot = to_probation()
    slot, _, _ = advance_epoch(slot, SlotMetrics(counterfactual=None), 53.0, rules(CFG))
    assert slot.stage == S.PROBATIONARY


def test_fossilize_passes_through_g5() -> None:
    slot = to_probation(c=2.0)
    slot, gate, events = fossilize(slot, rules(CFG))
    assert gate.gate == "G5" and gate.passed
    assert slot.stage == S.FOSSILIZED and slot.epochs_in_stage == 0
    assert [(e.before, e.after, e.cause) for e in events] == [
        (S.PROBATIONARY, S.FOSSILIZED, "action")]
    assert slot.blueprint == "conv_light" and slot.seed_params == 123


@pytest.mark.parametrize(("c", "failed"), [(0.5, ("contribution",)),
                                           (None, ("counterfactual_known", "contribution"))])
def test_fossilize_failing_g5_leaves_probation(c: float | None, failed: tuple) -> None:
    slot = to_probation(c=2.0)
    slot, _, _ = advance_epoch(slot, SlotMetrics(counterfactual=c), 53.0, rules(CFG))
    assert slot.stage == S.PROBATIONARY
    after, gate, events = fossilize(slot, rules(CFG))
    assert not gate.passed and gate.failed == failed
    assert after.stage == S.PROBATIONARY and events == [] and after.last_gate == gate


def test_fossilize_outside_probation_raises_even_if_g5_holds() -> None:
    slot = to_blending()
    slot, _, _ = advance_epoch(slot, SlotMetrics(counterfactual=5.0), 52.0, rules(CFG))
    assert slot.stage == S.BLENDING
    with pytest.raises(InvalidTransition, match="^no transition from BLENDING on FOSSILIZE$"):
        fossilize(slot, rules(CFG))


def test_fossilize_is_never_automatic() -> None:
    slot = to_probation(CFG.replace(max_epochs=200), c=50.0)
    for _ in range(19):
        slot, _, _ = advance_epoch(slot, SlotMetrics(counterfactual=50.0), 90.0,
                                   rules(CFG.replace(max_epochs=200)))
        assert slot.stage == S.PROBATIONARY


def test_advance_fossilized_never_changes_stage() -> None:
    slot, _, _ = fossilize(to_probation(c=3.0), rules(CFG))
    for c in (None, -10.0, 0.0, 5.0) * 10:
        slot, gate, events = advance_epoch(slot, SlotMetrics(gradient_ratio=0.0, counterfactual=c),
                                           40.0, rules(CFG))
        assert slot.stage == S.FOSSILIZED and gate is None and events == []
        assert slot.alpha.alpha == 1.0 and slot.seed_params == 123


# -- cull and cooldown -------------------------------------------------------------------------

@pytest.mark.parametrize("embargo", [1, 3])
def test_cull_cooldown_then_dormant_and_reusable(embargo: int) -> None:
    cfg = CFG.replace(embargo_epochs=embargo)
    slot, events = cull(germinated(cfg), "action")
    assert [(e.before, e.after, e.cause) for e in events] == [(S.TRAINING, S.CULLED, "action")]
    assert slot.stage == S.CULLED
    assert (slot.blueprint, slot.seed_id, slot.seed_params, slot.acc_at_germination) == (
        None, None, 0, None)
    stages = []
    for _ in range(1 + embargo + 1):
        slot, gate, events = advance_epoch(slot, GOOD, 50.0, rules(cfg))
        stages.append(slot.stage)
        assert gate is None
    assert stages == [S.EMBARGOED] * embargo + [S.RESETTING, S.DORMANT]
    slot, gate, _ = germinate(slot, blueprint="norm", seed_id="seed1", seed_params=5,
                              shape_ok=True, val_acc=55.0, schedule="sigmoid")
    assert gate.passed and slot.stage == S.TRAINING and slot.acc_at_germination == 55.0
    assert slot.seed_age == 0 and slot.isolation_violations == 0


def test_cull_cooldown_states_hold_no_module() -> None:
    slot, _ = cull(to_probation(), "action")
    for _ in range(6):
        assert slot.stage not in MODULE_STAGES
        assert slot.counterfactual is None and slot.gradient_ratio == 0.0
        slot, _, _ = advance_epoch(slot, SlotMetrics(gradient_ratio=3.0, counterfactual=4.0),
                                   50.0, rules(CFG))


@pytest.mark.parametrize("stage", [S.DORMANT, S.FOSSILIZED, S.CULLED, S.EMBARGOED, S.RESETTING])
def test_cull_non_live_stage_raises(stage: SeedStage) -> None:
    with pytest.raises(InvalidTransition, match=f"^no transition from {stage.name} on CULL$"):
        cull(SlotState(index=0, stage=stage), "action")


def test_advance_dormant_only_counts_epochs() -> None:
    slot, gate, events = advance_epoch(fresh(), SlotMetrics(counterfactual=3.0, gradient_ratio=2.0),
                                       42.0, rules(CFG))
    assert slot.stage == S.DORMANT and gate is None and events == []
    assert slot.counterfactual is None and slot.seed_age == 0 and slot.current_acc == 42.0


def test_record_epoch_then_auto_transition_equals_advance_epoch() -> None:
    slot = germinated()
    m = SlotMetrics(gradient_ratio=0.3, isolation_violations=2, counterfactual=None)
    for _ in range(3):
        a = advance_epoch(slot, m, 51.0, rules(CFG))
        b = auto_transition(record_epoch(slot, m, 51.0), rules(CFG))
        assert a == b
        slot = a[0]


# -- stateful model of two slots ---------------------------------------------------------------

MCFG = EsperConfig(max_epochs=12, blending_epochs=2, embargo_epochs=1, min_cull_age=2,
                   germination_gate=False,
                   gates={"min_training_epochs": 1, "min_gradient_ratio": 0.05})
MCFG_GATED = MCFG.replace(germination_gate=True, min_germinate_epoch=2,
                          plateau_epochs_to_germinate=1)
BPS = BLUEPRINT_NAMES["cnn"]
CODEC = ActionCodec(2, BPS)

# Weighted towards metrics that let seeds survive, so PROBATIONARY and FOSSILIZED are reached.
metrics_st = st.builds(
    SlotMetrics,
    gradient_ratio=st.sampled_from([0.5, 0.05, 0.5, 0.04, 0.0, 0.5]),
    isolation_violations=st.sampled_from([0, 0, 0, 3]),
    counterfactual=st.one_of(
        st.sampled_from([2.5, 4.0, 1.0, None, 0.3, -0.01, 0.0, -2.0, 2.5, 4.0]),
        st.floats(-5.0, 5.0)),
)


def apply_op(slots: tuple[SlotState, ...], op: tuple) -> tuple[SlotState, ...]:
    """Apply one recorded operation to the slots (pure, used for the run and for the replay)."""
    out = list(slots)
    kind = op[0]
    if kind == "germinate":
        _, i, bp, shape_ok, acc, seed_id = op
        out[i], _, _ = germinate(out[i], blueprint=bp, seed_id=seed_id, seed_params=100 + i,
                                 shape_ok=shape_ok, val_acc=acc, schedule=MCFG.lifecycle.alpha_schedule)
    elif kind == "fossilize":
        out[op[1]], _, _ = fossilize(out[op[1]], rules(MCFG))
    elif kind == "cull":
        out[op[1]], _ = cull(out[op[1]], "action")
    else:
        _, metrics, acc = op
        out = [advance_epoch(s, m, acc, rules(MCFG))[0] for s, m in zip(out, metrics, strict=True)]
    return tuple(out)


class TwoSlotLifecycle(RuleBasedStateMachine):
    """Random germinate / fossilize / cull / advance on two slots, replayable from the op list."""

    def __init__(self) -> None:
        super().__init__()
        self.slots: tuple[SlotState, ...] = (SlotState(index=0), SlotState(index=1))
        self.ops: list[tuple] = []
        self.fossilized: set[int] = set()
        self.tracker = TrackerState()
        self.epoch = 0
        self.n_seeds = 0

    def _do(self, op: tuple) -> None:
        self.ops.append(op)
        self.slots = apply_op(self.slots, op)
        self.fossilized |= {s.index for s in self.slots if s.stage == S.FOSSILIZED}

    def _indices(self, stages: frozenset | set) -> list[int]:
        return [s.index for s in self.slots if s.stage in stages]

    @precondition(lambda self: any(s.stage == S.DORMANT for s in self.slots))
    @rule(data=st.data(), bp=st.sampled_from(BPS), shape_ok=st.sampled_from([True, True, False]),
          acc=st.floats(0.0, 100.0))
    def do_germinate(self, data, bp: str, shape_ok: bool, acc: float) -> None:
        i = data.draw(st.sampled_from(self._indices({S.DORMANT})))
        self.n_seeds += 1
        self._do(("germinate", i, bp, shape_ok, acc, f"seed{self.n_seeds}"))
        assert self.slots[i].stage == (S.TRAINING if shape_ok else S.DORMANT)

    @precondition(lambda self: any(s.stage == S.PROBATIONARY for s in self.slots))
    @rule(data=st.data())
    def do_fossilize(self, data) -> None:
        i = data.draw(st.sampled_from(self._indices({S.PROBATIONARY})))
        c = self.slots[i].counterfactual
        self._do(("fossilize", i))
        ok = c is not None and c >= MCFG.lifecycle.gates.min_fossilize_contribution
        assert self.slots[i].stage == (S.FOSSILIZED if ok else S.PROBATIONARY)

    @precondition(lambda self: any(s.stage in LIVE_STAGES for s in self.slots))
    @rule(data=st.data())
    def do_cull(self, data) -> None:
        i = data.draw(st.sampled_from(self._indices(LIVE_STAGES)))
        self._do(("cull", i))
        assert self.slots[i].stage == S.CULLED

    @rule(metrics=st.tuples(metrics_st, metrics_st), acc=st.floats(0.0, 100.0),
          loss=st.floats(0.01, 3.0))
    def do_advance(self, metrics, acc: float, loss: float) -> None:
        self._do(("advance", metrics, acc))
        self.epoch += 1
        self.tracker = update_tracker(self.tracker, loss, acc, plateau_threshold=0.5,
                                      stabilization_threshold=0.03, stabilization_epochs=2)

    @invariant()
    def alpha_in_unit_interval(self) -> None:
        for s in self.slots:
            assert 0.0 <= s.alpha.alpha <= 1.0

    @invariant()
    def fossilized_is_forever(self) -> None:
        for i in self.fossilized:
            assert self.slots[i].stage == S.FOSSILIZED
            assert self.slots[i].alpha.alpha == 1.0

    @invariant()
    def module_present_exactly_in_module_stages(self) -> None:
        for s in self.slots:
            assert (s.blueprint is not None) == (s.stage in MODULE_STAGES)
            assert (s.seed_params > 0) == (s.stage in MODULE_STAGES)

    @invariant()
    def mask_matches_stages(self) -> None:
        for cfg in (MCFG, MCFG_GATED):
            mask = legal_action_mask(CODEC, self.slots, self.tracker, self.epoch, rules(cfg))
            assert mask.dtype == bool and mask.shape == (CODEC.n,)
            assert mask.any() and mask[0]
            gate_open = (not cfg.lifecycle.germination_gate) or (
                self.epoch >= cfg.lifecycle.min_germinate_epoch
                and self.tracker.plateau_epochs >= cfg.lifecycle.plateau_epochs_to_germinate
                and self.tracker.host_stabilized)
            for s in self.slots:
                base = 1 + s.index * CODEC.per_slot
                germ = mask[base:base + len(BPS)]
                assert (germ == (gate_open and s.stage == S.DORMANT)).all()
                g5 = s.counterfactual is not None and \
                    s.counterfactual >= cfg.lifecycle.gates.min_fossilize_contribution
                assert mask[base + len(BPS)] == (s.stage == S.PROBATIONARY and g5)
                assert mask[base + len(BPS) + 1] == (s.stage in LIVE_STAGES
                                                     and s.seed_age >= cfg.lifecycle.min_cull_age)

    @invariant()
    def probation_only_with_positive_counterfactual(self) -> None:
        for s in self.slots:
            if s.stage == S.PROBATIONARY:
                assert s.counterfactual is None or s.counterfactual > 0.0

    @invariant()
    def replay_reproduces_state(self) -> None:
        slots: tuple[SlotState, ...] = (SlotState(index=0), SlotState(index=1))
        for op in self.ops:
            slots = apply_op(slots, op)
        assert slots == self.slots


TwoSlotLifecycle.TestCase.settings = settings(stateful_step_count=40)
test_seeds_two_slot_lifecycle_machine = TwoSlotLifecycle.TestCase
