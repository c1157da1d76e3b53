"""One Esper-v0 episode as data, and its transition as pure functions.

The split follows gymnax: :class:`EpisodeParams` is what the rules need (fixed for an episode,
no device, no paths), :class:`EpisodeState` is everything an episode is between two steps (a
frozen record of plain values), and the transition is four functions. The torch layer does the
computing in between, asked through plain records (:class:`EpochRequest`, :class:`Settlement`)
and answering with :class:`~esper_env.core.state.EpochReport`. One step, as ``EsperEnv.step``
runs it::

    state, pending = apply_action(state, index, params)     # the action: legal? what it asks for
    report = trainer.run_epoch(pending.request)             # germinate, train, validate, twin
    state, outcome = after_epoch(state, pending, report, params)
    if outcome.restore is not None:                         # the governor rolls back
        report = trainer.restore_checkpoint(outcome.restore)
        state, outcome = after_restore(state, outcome, report, params)
    measured = trainer.settle(outcome.settle)               # slots, checkpoint, test accuracy

Pure module (stdlib and numpy): every rule that decides what an episode does lives here or in the
modules it calls (lifecycle, gates, seeds, governor, tracker, reward, actions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from esper_env.core.actions import (
    Action,
    ActionCodec,
    ActionKind,
    budget_left,
    decisions_available,
    germination_gate_open,
    legal_action_mask,
)
from esper_env.core.alpha import AlphaController
from esper_env.core.governor import GovernorState, check_loss
from esper_env.core.lifecycle import LIVE_STAGES, MODULE_STAGES, SeedStage
from esper_env.core.observation import EpisodeFacts
from esper_env.core.reward import RewardBreakdown, RewardInputs, compute_reward, uses_twin, value_added
from esper_env.core.seeds import LifecycleEvent, auto_transition, cull, fossilize, germinate, record_epoch
from esper_env.core.state import EpochReport, GateResult, SlotMetrics, SlotState, TwinReading
from esper_env.core.tracker import TrackerState, update_tracker
from esper_env.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from esper_env.config import EsperConfig, GateConfig, GovernorConfig, RewardConfig
    from esper_env.core.instances import Instance

EPISODE_VERSION = 1
"""Version of the episode's semantics and numerics.

Two episodes of the same version, seed, config and actions are identical on the CPU (same torch
build and thread count). Any change that can alter an episode (a rule, a reward term, the order
of the computation, a default) bumps it. It is written into every episode record, snapshot and
benchmark result line; a record of another version is refused by an exact replay.

* 1: the episode as first recorded (``tests/fixtures/episode-v1``, commit 73f4065).
"""

MODULE_SEED_STRIDE = 7919
"""The k-th seed module of an episode (k = 0, 1, ...) is built from ``seed_base + STRIDE * k``.

A prime, so that the modules of one episode never share a seed with each other and seldom with
another episode's (``seed_base`` is drawn per episode); the gate of the ``gate`` blend uses the
module's seed + 1.
"""

SEED_MODULUS = 2**31 - 1
"""Seeds are taken modulo this (a positive 31-bit integer, what every generator accepts)."""


# -- parameters -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EpisodeParams:
    """What the transition needs of the config, resolved for one episode (its instance applied).

    The lifecycle fields keep :class:`~esper_env.config.EsperConfig`'s names (the lifecycle and
    mask functions read them by name). ``transformer``: the host is a transformer (a seed's
    gradient isolation is lifted from BLENDING on, not only when fossilised; ``info`` reports the
    perplexity). ``codec``: the action space's codec.
    """

    n_slots: int
    max_epochs: int
    blueprints: tuple[str, ...]
    n_classes: int
    transformer: bool
    reward_mode: str
    alpha_schedule: str
    blending_epochs: int
    germination_gate: bool
    min_germinate_epoch: int
    plateau_epochs_to_germinate: int
    plateau_threshold: float
    stabilization_threshold: float
    stabilization_epochs: int
    min_cull_age: int
    embargo_epochs: int
    effective_probation_timeout: int
    param_budget: float | None
    fault_epochs: tuple[int, ...]
    report_test_acc: bool
    gates: GateConfig
    reward: RewardConfig
    governor: GovernorConfig
    codec: ActionCodec = field(compare=False, repr=False)
    static_seeds: tuple[tuple[int, str], ...] = ()

    @classmethod
    def from_config(cls, cfg: EsperConfig, blueprints: tuple[str, ...], n_classes: int,
                    transformer: bool) -> EpisodeParams:
        """The parameters of an episode run with ``cfg`` (already resolved for its instance)."""
        life = cfg.lifecycle
        n_slots = cfg.host.n_slots
        return cls(
            n_slots=n_slots, max_epochs=cfg.task.max_epochs, blueprints=tuple(blueprints),
            n_classes=n_classes, transformer=transformer, reward_mode=cfg.reward.mode,
            alpha_schedule=life.alpha_schedule, blending_epochs=life.blending_epochs,
            germination_gate=life.germination_gate, min_germinate_epoch=life.min_germinate_epoch,
            plateau_epochs_to_germinate=life.plateau_epochs_to_germinate,
            plateau_threshold=life.plateau_threshold,
            stabilization_threshold=life.stabilization_threshold,
            stabilization_epochs=life.stabilization_epochs, min_cull_age=life.min_cull_age,
            embargo_epochs=life.embargo_epochs,
            effective_probation_timeout=cfg.effective_probation_timeout,
            param_budget=life.param_budget, fault_epochs=tuple(cfg.runtime.fault_epochs),
            report_test_acc=cfg.runtime.report_test_acc, gates=life.gates, reward=cfg.reward,
            governor=cfg.governor, codec=ActionCodec(n_slots, blueprints),
            static_seeds=tuple(cfg.host.static_seeds))

    @property
    def twin(self) -> bool:
        """True if the reward mode pays value added over the seedless twin."""
        return uses_twin(self.reward_mode)



# -- seeds ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EpisodeSeeds:
    """The seeds an episode derives from its episode seed (one ``SeedSequence``, three draws)."""

    model: int
    data: int
    module_base: int


def episode_seeds(episode_seed: int) -> EpisodeSeeds:
    """Seeds of the host's initial weights, the mini-batch order and the seed modules."""
    model, data, base = (int(x) for x in np.random.SeedSequence(episode_seed).generate_state(3))
    return EpisodeSeeds(model, data, base)


def module_seed(module_base: int, k: int) -> int:
    """Seed of the k-th seed module built in an episode (see :data:`MODULE_SEED_STRIDE`)."""
    return (module_base + MODULE_SEED_STRIDE * k) % SEED_MODULUS


# -- state ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EpisodeSetup:
    """What is fixed when an episode starts: its instance, facts and the seeds' costs.

    Attributes:
        module_base: base of the seed modules' seeds (:func:`module_seed`).
        facts: the instance's observed constants (host size, learning rate, slot widths...).
        costs: ``costs[s][b]``: parameters blueprint b would add at slot s.
        instance: the instance the episode runs on (None without an instance set).
    """

    module_base: int
    facts: EpisodeFacts
    costs: tuple[tuple[int, ...], ...]
    instance: Instance | None = None

    @property
    def host_params(self) -> int:
        """Trainable parameters of the host."""
        return self.facts.host_params


@dataclass(frozen=True, slots=True)
class EpisodeState:
    """Everything an episode is between two steps (a frozen record of plain values).

    The torch side holds the rest: the model, its optimisers, the data-order generator, the twin
    and the checkpoint's tensors; a snapshot is a copy of both.

    Attributes:
        setup: what the episode started with.
        epoch: epochs trained (reset trains the first).
        slots: the slots' lifecycle records.
        checkpoint_slots: the slots' records when the governor's checkpoint was taken.
        tracker: plateau and stabilisation signals of the validation curve.
        governor: the governor's loss history.
        report: the last epoch's measurements.
        mask: the legal actions now (WAIT always).
        value_added: V, what growth has added over the seedless twin (pp, contribution mode).
        twin_val_acc: the no-growth world's validation accuracy (None once the twin diverged).
        seeds_made: seed modules built so far (the next one's index).
        rollbacks: governor rollbacks so far.
        done: the episode has ended.
        reset_diverged: the first epoch (trained in reset) diverged; the first step ends it.
        curve: validation accuracy and the stages each epoch trained in, per epoch.
    """

    setup: EpisodeSetup
    epoch: int
    slots: tuple[SlotState, ...]
    checkpoint_slots: tuple[SlotState, ...]
    tracker: TrackerState
    governor: GovernorState
    report: EpochReport
    mask: tuple[bool, ...]
    value_added: float = 0.0
    twin_val_acc: float | None = None
    seeds_made: int = 0
    rollbacks: int = 0
    done: bool = False
    reset_diverged: bool = False
    curve: tuple[tuple[float, tuple[SeedStage, ...]], ...] = ()


# -- what the torch side is asked to do -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SlotPlan:
    """How a slot holding a seed module computes: forward mode, blend weight, isolation."""

    mode: str
    alpha: float
    isolate: bool


@dataclass(frozen=True, slots=True)
class GerminateRequest:
    """Build ``blueprint`` into ``slot`` from ``module_seed``."""

    slot: int
    blueprint: str
    module_seed: int


@dataclass(frozen=True, slots=True)
class EpochRequest:
    """One epoch for the torch side, in this order.

    0. ``build``: build these seed modules (the static seeds of the first epoch; a module that
       fails its shape probe is a configuration error);
    1. ``germinate`` (if any): build the seed module (its result comes back in the report);
    2. ``slots``: make every slot compute as planned (None: no module; a module there is removed);
    3. ``checkpoint``: keep the model as the governor's good state (right after a fossilization);
    4. ``poison``: fault injection, overwrite the host's weights with NaN;
    5. ``train``: one epoch of training, then validation with every blended seed's counterfactual
       (False after a first epoch that diverged: nothing to train);
    6. ``twin``: validate the seedless twin (contribution mode).
    """

    slots: tuple[SlotPlan | None, ...]
    germinate: GerminateRequest | None = None
    checkpoint: bool = False
    poison: bool = False
    train: bool = True
    twin: bool = False
    build: tuple[GerminateRequest, ...] = ()


@dataclass(frozen=True, slots=True)
class Settlement:
    """The end of a step for the torch side, in this order.

    ``slots`` as in :class:`EpochRequest`; ``checkpoint``: keep the model as the good state;
    ``test``: measure the model's test accuracy (reporting only); ``twin_test``: and the twin's.
    """

    slots: tuple[SlotPlan | None, ...]
    checkpoint: bool = False
    test: bool = False
    twin_test: bool = False


@dataclass(frozen=True, slots=True)
class TestReading:
    """The test accuracies a :class:`Settlement` asked for (pp), and a fault raised measuring them."""

    acc: float | None = None
    twin: TwinReading = TwinReading()
    fault: str | None = None


# -- what happened ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PendingStep:
    """A step whose action is applied and whose epoch is still to run."""

    request: EpochRequest
    index: int
    action: Action
    legal: bool
    slots_before: tuple[SlotState, ...]
    val_acc_before: float
    value_before: float
    decisions: tuple[bool, ...]
    events: tuple[LifecycleEvent, ...] = ()
    gates: tuple[GateResult | None, ...] = ()
    fossil_gate: GateResult | None = None
    germinate: tuple[str, int] | None = None  # (seed id, slot) of the requested germination


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What a step did (the env turns it into ``reward`` and ``info``).

    ``restore`` is set while the outcome is not final: the governor rolls back, the torch side
    must restore its checkpoint with these slot plans and validate, and :func:`after_restore`
    finishes the step.
    """

    pending: PendingStep | None
    events: tuple[LifecycleEvent, ...]
    gates: tuple[GateResult | None, ...]
    settle: Settlement
    reward: RewardBreakdown | None = None
    rollback: bool = False
    diverged: bool = False
    terminated: bool = False
    restore: tuple[SlotPlan | None, ...] | None = None
    twin: TwinReading = field(default_factory=TwinReading)


# -- rules ------------------------------------------------------------------------------------------
def slot_plan(slot: SlotState, transformer: bool) -> SlotPlan | None:
    """How the torch slot must compute for the lifecycle record ``slot`` (None: no module).

    TRAINING incubates (the output is the host's, the seed learns, isolated); BLENDING and
    PROBATIONARY blend at the record's alpha, isolated on a CNN host, not on a transformer
    (the host co-adapts from BLENDING on); FOSSILIZED blends without isolation (it is part of the
    host); GERMINATED never survives a step.
    """
    if slot.stage not in MODULE_STAGES:
        return None
    if slot.stage == SeedStage.TRAINING:
        return SlotPlan("incubate", 0.0, True)
    if slot.stage == SeedStage.FOSSILIZED:
        return SlotPlan("blend", slot.alpha.alpha, False)
    if slot.stage in (SeedStage.BLENDING, SeedStage.PROBATIONARY):
        return SlotPlan("blend", slot.alpha.alpha, not transformer)
    return SlotPlan("off", 0.0, True)


def slot_plans(slots: tuple[SlotState, ...], params: EpisodeParams) -> tuple[SlotPlan | None, ...]:
    """:func:`slot_plan` of every slot."""
    return tuple(slot_plan(s, params.transformer) for s in slots)


def action_mask(state_slots: tuple[SlotState, ...], tracker: TrackerState, epoch: int,
                setup: EpisodeSetup, params: EpisodeParams, done: bool) -> tuple[bool, ...]:
    """The legal actions (only WAIT once the episode has ended)."""
    codec = params.codec
    if done:
        return (True,) + (False,) * (codec.n - 1)
    mask = legal_action_mask(codec, state_slots, tracker, epoch, params, setup.costs,
                             setup.host_params)
    return tuple(bool(m) for m in mask)


def germination_open(state: EpisodeState, params: EpisodeParams) -> bool:
    """The host-side germination gate now (observed)."""
    return germination_gate_open(state.tracker, state.epoch, params)


def _track(tracker: TrackerState, report: EpochReport, params: EpisodeParams) -> TrackerState:
    return update_tracker(tracker, report.val_loss, report.val_acc,
                          plateau_threshold=params.plateau_threshold,
                          stabilization_threshold=params.stabilization_threshold,
                          stabilization_epochs=params.stabilization_epochs)


def _judge(governor: GovernorState, report: EpochReport, params: EpisodeParams
           ) -> tuple[GovernorState, bool]:
    """The governor's verdict on an epoch: panic? A non-finite loss panics even when it is off."""
    if params.governor.enabled or not math.isfinite(report.val_loss):
        governor, verdict = check_loss(governor, report.val_loss, params.n_classes, params.governor)
        return governor, verdict.panic
    return governor, False


def no_growth_accuracy(twin: TwinReading, model_acc: float) -> float | None:
    """The no-growth world's accuracy: the twin's; the model's own while no seed has blended
    (the model *is* the seedless host then); None once the twin has diverged.
    """  # noqa: D205
    if twin.acc is not None:
        return twin.acc
    return model_acc if twin.enabled else None


# -- reset ------------------------------------------------------------------------------------------
def first_request(params: EpisodeParams, setup: EpisodeSetup) -> EpochRequest:
    """The first epoch, trained by ``reset``: the host, with its static seeds built in and fully
    blended (none by default).

    Raises:
        ConfigError: the static seeds' parameters exceed the episode's ``param_budget``.
    """  # noqa: D205
    check_static_budget(setup, params)
    build = tuple(GerminateRequest(slot, blueprint, module_seed(setup.module_base, k))
                  for k, (slot, blueprint) in enumerate(params.static_seeds))
    return EpochRequest(slots=slot_plans(static_slots(setup, params), params), build=build,
                        twin=params.twin and bool(build))


def static_cost(setup: EpisodeSetup, params: EpisodeParams) -> int:
    """Parameters the static seeds add (``setup.costs`` at their slots)."""
    return sum(setup.costs[slot][params.blueprints.index(blueprint)]
               for slot, blueprint in params.static_seeds)


def check_static_budget(setup: EpisodeSetup, params: EpisodeParams) -> None:
    """Refuse static seeds that do not fit the episode's ``param_budget`` (ConfigError)."""
    unknown = [b for _, b in params.static_seeds if b not in params.blueprints]
    if unknown:
        raise ConfigError(f"static_seeds={params.static_seeds!r} is invalid; allowed: blueprints "
                          f"of this env, {params.blueprints}")
    cost = static_cost(setup, params)
    budget = budget_left((), setup.host_params, params)
    if cost > budget:
        where = f" of instance {setup.instance.name!r}" if setup.instance is not None else ""
        raise ConfigError(
            f"static_seeds={params.static_seeds!r} add {cost} parameters; the param_budget"
            f"{where} allows {math.floor(budget)} ({params.param_budget} x {setup.host_params} "
            "host parameters)")


def static_slots(setup: EpisodeSetup, params: EpisodeParams) -> tuple[SlotState, ...]:
    """The slots at reset: DORMANT, or FOSSILIZED at alpha 1 where a static seed is built (the
    k-th pair is ``seed{k}``, as the k-th germinated seed would be).
    """  # noqa: D205
    slots = [SlotState(i) for i in range(params.n_slots)]
    for k, (slot, blueprint) in enumerate(params.static_seeds):
        cost = setup.costs[slot][params.blueprints.index(blueprint)]
        slots[slot] = SlotState(
            slot, stage=SeedStage.FOSSILIZED, blueprint=blueprint, seed_id=f"seed{k}",
            seed_params=cost, alpha=AlphaController(alpha=1.0, start=1.0, target=1.0,
                                                    schedule=params.alpha_schedule))
    return tuple(slots)


def start_episode(setup: EpisodeSetup, report: EpochReport, params: EpisodeParams
                  ) -> tuple[EpisodeState, StepOutcome]:
    """The state after the first epoch (trained in ``reset``) measured ``report``.

    A first epoch that already diverges has no good state to roll back to: the first step is then
    a defined terminal step (diverged penalty, final keys), with WAIT the only legal action.
    """
    governor, panic = _judge(GovernorState(), report, params)
    metrics = report.slots or (SlotMetrics(),) * params.n_slots
    slots = tuple(record_epoch(s, m, report.val_acc)
                  for s, m in zip(static_slots(setup, params), metrics, strict=True))
    tracker = _track(TrackerState(), report, params)
    mask = action_mask(slots, tracker, 1, setup, params, done=False)
    value, twin_acc = 0.0, report.val_acc
    if params.twin and params.static_seeds:  # the static seeds blend from the start: a twin ran
        twin_acc = no_growth_accuracy(report.twin, report.val_acc)
        value = value_added(report.val_acc, twin_acc, 0.0)
    if panic:
        mask = (True,) + (False,) * (len(mask) - 1)
    state = EpisodeState(
        setup=setup, epoch=1, slots=slots, checkpoint_slots=slots, tracker=tracker,
        governor=governor, report=report, mask=mask, value_added=value,
        twin_val_acc=twin_acc, seeds_made=len(params.static_seeds), reset_diverged=panic,
        curve=((report.val_acc, tuple(s.stage for s in slots)),))
    settle = Settlement(slot_plans(slots, params), checkpoint=params.governor.enabled,
                        test=params.report_test_acc)
    return state, StepOutcome(None, (), (None,) * params.n_slots, settle, diverged=panic)


# -- step -------------------------------------------------------------------------------------------
def apply_action(state: EpisodeState, index: int, params: EpisodeParams
                 ) -> tuple[EpisodeState, PendingStep]:
    """Apply the agent's action ``index`` (in the action space; masked-out ones are no-ops).

    FOSSILIZE and CULL change the slot at once; GERMINATE asks the torch side to build the module
    (G0 needs its shape probe, so the slot changes in :func:`after_epoch`). Time advances: the
    epoch about to train is ``state.epoch + 1``.
    """
    codec = params.codec
    act = codec.decode(index)
    legal = bool(state.mask[index])
    decisions = decisions_available(codec, np.asarray(state.mask))
    n = params.n_slots
    gates: list[GateResult | None] = [None] * n
    events: list[LifecycleEvent] = []
    slots = state.slots
    fossil_gate: GateResult | None = None
    germinate_req: GerminateRequest | None = None
    germinating: tuple[str, int] | None = None
    seeds_made = state.seeds_made
    checkpoint = False
    if legal and act.kind != ActionKind.WAIT:
        k = act.slot
        assert k is not None
        slot = slots[k]
        if act.kind == ActionKind.GERMINATE:
            assert act.blueprint is not None
            germinating = (f"seed{seeds_made}", k)
            germinate_req = GerminateRequest(k, act.blueprint,
                                             module_seed(state.setup.module_base, seeds_made))
            seeds_made += 1
        elif act.kind == ActionKind.FOSSILIZE:
            slot, fossil_gate, ev = fossilize(slot, params)
            gates[k] = fossil_gate
            events += ev
            # The model passed the governor at the end of the last epoch and has not trained
            # since: the last known good state, now with the new fossil in it.
            checkpoint = fossil_gate.passed and params.governor.enabled
        else:
            slot, ev = cull(slot, "action")
            events += ev
        slots = slots[:k] + (slot,) + slots[k + 1:]
    epoch = state.epoch + 1
    plans = slot_plans(slots, params)
    if germinate_req is not None:  # a new seed incubates from its first epoch (if G0 passes)
        plans = plans[:germinate_req.slot] + (SlotPlan("incubate", 0.0, True),) \
            + plans[germinate_req.slot + 1:]
    request = EpochRequest(
        slots=plans, germinate=germinate_req, checkpoint=checkpoint,
        poison=epoch in params.fault_epochs and not state.reset_diverged,
        train=not state.reset_diverged, twin=params.twin)
    pending = PendingStep(
        request=request, index=index, action=act, legal=legal, slots_before=state.slots,
        val_acc_before=state.report.val_acc, value_before=state.value_added,
        decisions=decisions, events=tuple(events), gates=tuple(gates), fossil_gate=fossil_gate,
        germinate=germinating)
    new = replace(state, epoch=epoch, slots=slots, seeds_made=seeds_made, reset_diverged=False,
                  checkpoint_slots=slots if checkpoint else state.checkpoint_slots)
    return new, pending


def _roll_back(slots: tuple[SlotState, ...], good: tuple[SlotState, ...]
               ) -> tuple[tuple[SlotState, ...], list[LifecycleEvent]]:
    """The slots' records after a rollback to the checkpoint whose records are ``good``.

    A slot whose good state held a seed gets that seed's record back (stage, alpha, age); a live
    seed germinated since is culled (cause ``rollback``). Cooldowns keep running.
    """
    events: list[LifecycleEvent] = []
    after = list(slots)
    for k, (now, was) in enumerate(zip(slots, good, strict=True)):
        if was.stage in MODULE_STAGES:
            if (now.seed_id, now.stage) != (was.seed_id, was.stage):
                events.append(LifecycleEvent(k, was.seed_id, was.blueprint, now.stage, was.stage,
                                             "rollback"))
            after[k] = was
        elif now.stage in LIVE_STAGES:
            after[k], ev = cull(now, "rollback")
            events += ev
    return tuple(after), events


def after_epoch(state: EpisodeState, pending: PendingStep, report: EpochReport,
                params: EpisodeParams) -> tuple[EpisodeState, StepOutcome]:
    """Take the epoch's measurements: germination gates, the governor, lifecycle, reward.

    On a panic the governor rolls back (the outcome's ``restore`` asks the torch side to restore
    its checkpoint; :func:`after_restore` finishes the step) or, after ``governor.max_rollbacks``
    rollbacks, with the governor off, or when the first epoch already diverged, the episode ends
    (``diverged``).
    """
    twin = report.twin
    reset_diverged = not pending.request.train
    if reset_diverged:  # the first epoch diverged: nothing trained, nothing to restore
        report = replace(state.report, twin=twin)
    state, events, gates = _germinated(state, pending, report, params)
    if reset_diverged:
        panic = True
    else:
        governor, panic = _judge(state.governor, report, params)
        state = replace(state, governor=governor)
    if panic:
        if (reset_diverged or state.rollbacks >= params.governor.max_rollbacks
                or not params.governor.enabled):
            return _conclude(state, pending, report, twin, events, gates, params,
                             rollback=False, diverged=True)
        slots, ev = _roll_back(state.slots, state.checkpoint_slots)
        state = replace(state, slots=slots, rollbacks=state.rollbacks + 1,
                        governor=replace(state.governor, spikes=0))
        outcome = StepOutcome(pending, tuple(events + ev), tuple(gates), Settlement(()),
                              rollback=True, restore=slot_plans(slots, params), twin=twin)
        return state, outcome
    return _conclude(state, pending, report, twin, events, gates, params, rollback=False,
                     diverged=False)


def after_restore(state: EpisodeState, outcome: StepOutcome, report: EpochReport,
                  params: EpisodeParams) -> tuple[EpisodeState, StepOutcome]:
    """Finish a step whose epoch was rolled back: ``report`` describes the restored model.

    If the restored model cannot run either (``report.fault``), the episode ends diverged.
    """
    assert outcome.pending is not None and outcome.restore is not None
    return _conclude(state, outcome.pending, report, outcome.twin, list(outcome.events),
                     list(outcome.gates), params, rollback=True, diverged=report.fault is not None)


def _germinated(state: EpisodeState, pending: PendingStep, report: EpochReport,
                params: EpisodeParams
                ) -> tuple[EpisodeState, list[LifecycleEvent], list[GateResult | None]]:
    """Apply the requested germination's outcome (G0, then G1 at once) before the epoch counts."""
    events, gates = list(pending.events), list(pending.gates)
    req = pending.request.germinate
    if req is None:
        return state, events, gates
    assert report.germination is not None and pending.germinate is not None
    seed_id, k = pending.germinate
    slot, gates[k], ev = germinate(
        state.slots[k], blueprint=req.blueprint, seed_id=seed_id,
        seed_params=report.germination.seed_params, shape_ok=report.germination.shape_ok,
        val_acc=pending.val_acc_before, schedule=params.alpha_schedule)
    events += ev
    return replace(state, slots=state.slots[:k] + (slot,) + state.slots[k + 1:]), events, gates


def _conclude(state: EpisodeState, pending: PendingStep, report: EpochReport, twin: TwinReading,
              events: list[LifecycleEvent], gates: list[GateResult | None],
              params: EpisodeParams, *, rollback: bool, diverged: bool
              ) -> tuple[EpisodeState, StepOutcome]:
    """Value added, lifecycle, tracker, checkpoint, termination and reward of a step."""
    value, twin_acc = state.value_added, state.twin_val_acc
    if params.twin:
        twin_acc = no_growth_accuracy(twin, report.val_acc)
        value = value_added(report.val_acc, twin_acc, value)
    # Record the epoch, then the automatic transitions. Not after a rollback: the restored slots
    # are as the governor accepted them, and nothing trained this epoch.
    measured = state.slots
    slots = state.slots
    if not rollback:
        measured = tuple(record_epoch(s, m, report.val_acc)
                         for s, m in zip(state.slots, report.slots, strict=True))
        after = []
        for k, slot in enumerate(measured):
            new, gate, ev = auto_transition(slot, params)
            if gate is not None and gates[k] is None:
                gates[k] = gate
            events += ev
            after.append(new)
        slots = tuple(after)
    tracker = state.tracker if diverged else _track(state.tracker, report, params)
    panicked = rollback or diverged
    checkpoint = (params.governor.enabled and not panicked
                  and state.epoch % params.governor.snapshot_every == 0)
    terminated = diverged or state.epoch >= params.max_epochs
    breakdown = compute_reward(params.reward_mode, RewardInputs(
        action=pending.action, action_legal=pending.legal, slots_before=pending.slots_before,
        slots_after=slots, val_acc_before=pending.val_acc_before, val_acc_after=report.val_acc,
        host_params=state.setup.host_params, terminal=terminated,
        value_added_before=pending.value_before, value_added_after=value,
        decisions=pending.decisions, fossilize_gate=pending.fossil_gate, rollback=rollback,
        diverged=diverged), params.reward)
    mask = action_mask(slots, tracker, state.epoch, state.setup, params, done=terminated)
    state = replace(
        state, slots=slots, tracker=tracker, report=report, mask=mask, value_added=value,
        twin_val_acc=twin_acc, done=terminated,
        checkpoint_slots=slots if checkpoint else state.checkpoint_slots,
        curve=state.curve + ((report.val_acc, tuple(s.stage for s in measured)),))
    settle = Settlement(slot_plans(slots, params), checkpoint=checkpoint,
                        test=params.report_test_acc or terminated,
                        twin_test=terminated and params.twin)
    return state, StepOutcome(pending, tuple(events), tuple(gates), settle, reward=breakdown,
                              rollback=rollback, diverged=diverged, terminated=terminated,
                              twin=twin)
