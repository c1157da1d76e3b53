"""Configuration of an Esper-v0 environment: frozen dataclasses in sections, validated at construction.

Pure module (stdlib only): it is part of the core layer, imports no torch and reads no file.

:class:`EsperConfig` has seven sections: :class:`TaskConfig` (dataset, split, epoch budget, instance
set), :class:`HostConfig` (the network and its slots), :class:`OptimiserConfig`,
:class:`LifecycleConfig` (blending, the germination gate and the quality gates G0-G5 of
:class:`GateConfig`), :class:`RewardConfig`, :class:`GovernorConfig` (the watchdog) and
:class:`RuntimeConfig` (device, threads, memory layout, reporting, fault injection). Every field
can also be given to ``gym.make("Esper-v0", **kwargs)`` by its flat keyword
(:data:`FLAT_KEYWORDS`: ``n_slots=2``, ``host_lr=0.05``, ``reward_mode="delta"``); sections and the
nested ``gates`` accept a dataclass or a plain dict. A config round-trips through JSON
(:meth:`EsperConfig.to_json` / :meth:`EsperConfig.from_json`), which also reads the flat JSON
that earlier versions wrote.

Anchor values (the Esper-lite research system, Dec 2025) are the defaults, except where the
default task (digits: 359 validation images, a 2-4-8-channel host) needs its own calibration; each
such field says so and gives the anchor value. ``python -m benchmarks.study growth`` measures the
result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from esper_env.core.catalog import BLUEPRINT_NAMES
from esper_env.errors import ConfigError, unknown_name_message
from esper_env.tasks import TASKS

REWARD_MODES = ("contribution", "delta", "sparse")
BLENDS = ("add", "multiply", "gate")
ALPHA_SCHEDULES = ("linear", "cosine", "sigmoid")


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars (``np.int64``, ``np.float32``, ``np.bool_``) as Python ones.

    Duck-typed (no numpy import: this module is pure): a 0-d object from the ``numpy`` package with
    ``.item()``. Lists and tuples are converted element-wise; anything else is returned unchanged.
    """
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _plain_fields(config: Any) -> None:
    """Replace NumPy scalars in a frozen dataclass's fields by Python ones (before validation)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        plain = _plain(value)
        if plain is not value:
            object.__setattr__(config, f.name, plain)


def _set_fields(config: Any, state: list[Any]) -> None:
    """Unpickle a frozen dataclass; fields added since it was pickled take their defaults."""
    fields = dataclasses.fields(config)
    for f, value in zip(fields, state, strict=False):
        object.__setattr__(config, f.name, value)
    for f in fields[len(state):]:
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        object.__setattr__(config, f.name, default)


def _check(cond: bool, name: str, value: object, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{name}={value!r} is invalid; allowed: {allowed}")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    ok = ok and (high is None or value <= high)  # type: ignore[operator]
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    _check(ok, name, value, allowed)


def _check_float(name: str, value: object, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low  # type: ignore[operator]
    if ok and high is not None:
        ok = value <= high  # type: ignore[operator]
    lo = "" if low is None else (f"> {low}" if low_open else f">= {low}")
    hi = "" if high is None else f"<= {high}"
    allowed = "a finite number" + (" " + " and ".join(s for s in (lo, hi) if s) if lo or hi else "")
    _check(ok, name, value, allowed)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: " + unknown_name_message(name, value, choices))


def _check_bool(name: str, value: object) -> None:
    _check(isinstance(value, bool), name, value, "True or False")


@dataclass(frozen=True, slots=True)
class GateConfig:
    """Thresholds of the quality gates G0-G5 (spec section 5).

    Attributes:
        min_training_epochs: G2, epochs a seed spends in TRAINING before it may blend (anchor 3).
        max_isolation_violations: G2, host gradients allowed through the seed path (anchor 10).
        min_gradient_ratio: G2, parameter-normalised seed/host gradient ratio (anchor 0.05).
        require_host_improvement: G2, also demand host improvement during TRAINING (off: it
            measures the host, not the seed).
        min_host_improvement: G2, that improvement in percentage points (anchor 0.5).
        min_blend_alpha: G3, alpha needed to enter PROBATIONARY (anchor 0.95).
        min_probation_contribution: G3 and the probation auto-cull: a seed enters and stays in
            PROBATIONARY only while its counterfactual contribution is above this many pp
            (default 0: a seed whose removal would not cost accuracy is culled at the end of
            its blending ramp instead of waiting in PROBATIONARY with nothing to decide).
        min_fossilize_contribution: G5, counterfactual contribution in pp (anchor 1.0).
    """

    min_training_epochs: int = 3
    max_isolation_violations: int = 10
    min_gradient_ratio: float = 0.05
    require_host_improvement: bool = False
    min_host_improvement: float = 0.5
    min_blend_alpha: float = 0.95
    min_probation_contribution: float = 0.0
    min_fossilize_contribution: float = 1.0

    def __post_init__(self) -> None:
        _plain_fields(self)
        _check_int("gates.min_training_epochs", self.min_training_epochs, 1)
        _check_int("gates.max_isolation_violations", self.max_isolation_violations, 0)
        _check_float("gates.min_gradient_ratio", self.min_gradient_ratio, 0.0)
        _check_bool("gates.require_host_improvement", self.require_host_improvement)
        _check_float("gates.min_host_improvement", self.min_host_improvement)
        _check_float("gates.min_blend_alpha", self.min_blend_alpha, 0.0, 1.0)
        _check_float("gates.min_probation_contribution", self.min_probation_contribution)
        _check_float("gates.min_fossilize_contribution", self.min_fossilize_contribution)


@dataclass(frozen=True, slots=True)
class RewardConfig:
    """Weights of every reward term (spec section 9). Accuracies and rewards are in pp.

    Attributes:
        rent_pp_per_doubling: the price of parameters, as percentage points of validation
            accuracy per doubling of the model: the rent of a model with ``added`` parameters on
            a host of ``host`` is ``rent_pp_per_doubling * log2(1 + added/host)``, charged once
            (it telescopes) in every mode. Default 0.5: the largest growth the default task
            allows (``conv_heavy`` in all three slots, 3.2x the host) costs 1.0 pp, the largest
            single seed (``conv_heavy`` after the last block, 2.4x) 0.88 pp, below the 1-2 pp
            half-width of a 20-seed paired confidence interval, so rent never flips the sign of
            a gain a benchmark can resolve (``python -m benchmarks.study integrity`` checks it).
            Raise it to study parameter efficiency (the anchor's ``0.5 ln(1 + r)`` per epoch was
            about 8 pp per doubling over a 25-epoch episode).
        pbrs_weight: weight of the potential-based stage shaping (anchor 0.3).
        pbrs_epoch_bonus: potential per epoch spent in a stage (anchor 0.3) ...
        pbrs_max_epoch_bonus: ... up to this much (anchor 2.0).
        gamma: discount of the stage shaping; set it to the agent's discount so the shaping
            provably leaves the optimal policy unchanged (anchor 0.99).
        probation_wait_base: base of the probation indecision penalty ``base ** (e - grace)``
            (anchor 3).
        probation_wait_grace: epochs in PROBATIONARY before the penalty starts (anchor 2).
        probation_wait_max: cap of the penalty per step (anchor 10).
        illegal_action_penalty: cost of a masked-out action (a no-op), every mode.
        rollback_penalty: cost of a governor rollback, every mode (anchor 10).
        diverged_penalty: cost of a divergence that ends the episode, every mode.
        mode: ``contribution`` (default: value added over the seedless twin), ``delta`` or
            ``sparse`` (the ``reward_mode`` keyword).
    """

    rent_pp_per_doubling: float = 0.5
    pbrs_weight: float = 0.3
    pbrs_epoch_bonus: float = 0.3
    pbrs_max_epoch_bonus: float = 2.0
    gamma: float = 0.99
    probation_wait_base: float = 3.0
    probation_wait_grace: int = 2
    probation_wait_max: float = 10.0
    illegal_action_penalty: float = 0.1
    rollback_penalty: float = 10.0
    diverged_penalty: float = 10.0
    mode: str = "contribution"

    def __setstate__(self, state: list[Any]) -> None:
        _set_fields(self, state)

    def __post_init__(self) -> None:
        _plain_fields(self)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "mode":
                _check_choice("reward_mode", value, REWARD_MODES)
            elif f.name == "probation_wait_grace":
                _check_int("reward.probation_wait_grace", value, 0)
            elif f.name == "gamma":
                _check_float("reward.gamma", value, 0.0, 1.0, low_open=True)
            else:
                _check_float(f"reward.{f.name}", value, 0.0)


@dataclass(frozen=True, slots=True)
class GovernorConfig:
    """The watchdog (spec section 12): panic detection, snapshots and rollback.

    Attributes:
        enabled: switch the governor off entirely (no snapshots, no rollback).
        snapshot_every: epochs between "last known good" snapshots (anchor 5).
        history_window: val losses kept for the statistical check (anchor 20).
        min_history: losses needed before the lobotomy and spike checks run (anchor 10).
        sensitivity: spike = loss > mean + sensitivity * std (anchor 6).
        multiplier: ... and loss > multiplier * mean (anchor 3).
        absolute_floor: ... and loss > this floor (anchor 12 for CIFAR; ln(classes)-scaled tasks
            keep the same default).
        consecutive_spikes: spikes in a row that make a panic (anchor 3).
        lobotomy_tolerance: panic if |loss - ln(classes)| < tolerance * ln(classes) after the host
            had learned (history mean < 0.6 ln(classes)) (anchor 0.065).
        max_rollbacks: rollbacks per episode; a panic after that terminates the episode.
    """

    enabled: bool = True
    snapshot_every: int = 5
    history_window: int = 20
    min_history: int = 10
    sensitivity: float = 6.0
    multiplier: float = 3.0
    absolute_floor: float = 12.0
    consecutive_spikes: int = 3
    lobotomy_tolerance: float = 0.065
    max_rollbacks: int = 1

    def __post_init__(self) -> None:
        _plain_fields(self)
        _check_bool("governor.enabled", self.enabled)
        _check_int("governor.snapshot_every", self.snapshot_every, 1)
        _check_int("governor.history_window", self.history_window, 2)
        _check_int("governor.min_history", self.min_history, 2, self.history_window)
        _check_float("governor.sensitivity", self.sensitivity, 0.0)
        _check_float("governor.multiplier", self.multiplier, 0.0)
        _check_float("governor.absolute_floor", self.absolute_floor, 0.0)
        _check_int("governor.consecutive_spikes", self.consecutive_spikes, 1)
        _check_float("governor.lobotomy_tolerance", self.lobotomy_tolerance, 0.0, 1.0)
        _check_int("governor.max_rollbacks", self.max_rollbacks, 0)


@dataclass(frozen=True, slots=True)
class TaskConfig:
    """What the host learns and for how long: the dataset, its training split, the epoch budget.

    Attributes:
        name: dataset and host (the ``task`` keyword): ``digits`` (default, scikit-learn's 8x8
            digits), ``synthetic``, ``cifar10`` (needs ``data_root``) or ``tinytext`` (a
            transformer host).
        max_epochs: epoch budget; one env step is one epoch; reaching it terminates (anchor 25).
        train_fraction: fraction of the training split used (a stratified subset drawn from the
            episode seed; validation and test stay whole). Default 1.
        label_noise: fraction of the used training labels replaced by a different class, drawn
            from the episode seed (validation and test labels stay clean). Default 0.
        train_subset: train on a fixed subset of this many training samples (CNN tasks: images,
            stratified; tinytext: the first windows), the same in every episode; ``None`` (default)
            uses the whole training split. The CPU option for CIFAR-10; validation and test stay
            whole.
        synthetic_samples: samples per class of the ``synthetic`` task (>= 5, so that every split
            holds every class).
        data_root: folder holding (or to receive) CIFAR-10's ``cifar-10-batches-py``; required
            by ``task="cifar10"`` and only allowed there.
        download: download CIFAR-10 into ``data_root`` when its files are missing (the only time
            Esper-v0 uses the network). Default ``False``: a missing folder is an error.
        instance_set: draw each episode's instance from an instance set: a shipped set's name
            (``digits-mix``), a JSON file, or a list of instance records (see
            :mod:`esper_env.core.instances`). Each instance sets ``host_channels``,
            ``injection_points``, ``host_lr``, ``train_fraction``, ``label_noise``,
            ``max_epochs`` and ``param_budget``, so those fields must keep their defaults here;
            ``task`` and ``n_slots`` are taken from the set when not given. The set is read and
            checked when the env is built, not here. ``None`` (default): one fixed task.
        instance_split: ``train`` (default) or ``test``; named sets keep them disjoint.
    """

    name: str = "digits"
    max_epochs: int = 25
    train_fraction: float = 1.0
    label_noise: float = 0.0
    train_subset: int | None = None
    synthetic_samples: int = 40
    data_root: str | None = None
    download: bool = False
    instance_set: str | tuple[Any, ...] | None = None
    instance_split: str = "train"

    def __post_init__(self) -> None:
        _plain_fields(self)
        if isinstance(self.data_root, os.PathLike):
            object.__setattr__(self, "data_root", os.fspath(self.data_root))
        if isinstance(self.instance_set, (list, tuple)):
            object.__setattr__(self, "instance_set",
                               tuple(Instance.from_dict(r) for r in self.instance_set))
        _check_choice("task", self.name, tuple(TASKS))
        _check_int("max_epochs", self.max_epochs, 2)
        _check_float("train_fraction", self.train_fraction, 0.0, 1.0, low_open=True)
        _check_float("label_noise", self.label_noise, 0.0, 0.9)
        if self.train_subset is not None:
            _check_int("train_subset", self.train_subset, 1)
        _check_int("synthetic_samples", self.synthetic_samples, 5)
        if self.data_root is not None:
            _check(isinstance(self.data_root, str) and self.data_root != "", "data_root",
                   self.data_root, "None or a folder path (str or os.PathLike)")
            _check(self.name == "cifar10", "data_root", self.data_root,
                   "None unless task='cifar10' (only CIFAR-10 is read from a folder)")
        _check_bool("download", self.download)
        iset = self.instance_set
        _check(iset is None or isinstance(iset, tuple) or (isinstance(iset, str) and iset != ""),
               "instance_set", iset, "None, a shipped set's name, a JSON file or a list of "
               "instance records")
        _check_choice("instance_split", self.instance_split, ("train", "test"))


@dataclass(frozen=True, slots=True)
class HostConfig:
    """The host network and where its seed slots sit.

    Attributes:
        n_slots: seed slots, at distinct injection points (1 to the host's number of points).
        injection_points: indices of the host injection points that get the slots; ``None`` means
            the last ``n_slots`` points.
        channels: channel widths of the CNN host blocks (the ``host_channels`` keyword); ``None``
            means the task's default.
        bn_momentum: momentum of the host's BatchNorm running statistics (the
            ``host_bn_momentum`` keyword). Tiny hosts move fast; a higher momentum keeps eval-mode
            statistics close to the current weights (with PyTorch's 0.1 the digits val accuracy
            swings by ~4 pp from epoch to epoch; 0.5 halves that).
        block_size, n_layer, n_head, n_embd: the transformer host of ``tinytext`` (window length,
            blocks, attention heads, width); ``None`` means the task's default
            (:data:`esper_env.tasks.tinytext.SPEC`).
        static_seeds: ``(slot, blueprint)`` pairs built into the host at reset, before the first
            epoch, fully blended and FOSSILIZED, outside the gates: the network "built big from
            the start", the static reference a grown network is compared with. The k-th pair's
            module is built from the same module seed as an episode's k-th germinated seed; the
            pairs must fit the episode's ``param_budget`` (else ``reset`` raises ConfigError).
            ``()`` (default): the host alone.
    """

    n_slots: int = 1
    injection_points: tuple[int, ...] | None = None
    channels: tuple[int, ...] | None = None
    bn_momentum: float = 0.5
    block_size: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    static_seeds: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        _plain_fields(self)
        _tuples(self, "injection_points", "channels")
        _check_int("n_slots", self.n_slots, 1)
        if self.injection_points is not None:
            pts = self.injection_points
            ok = (isinstance(pts, tuple) and len(pts) == self.n_slots and len(set(pts)) == len(pts)
                  and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pts))
            _check(ok, "injection_points", pts,
                   f"None or {self.n_slots} distinct non-negative integers (one per slot)")
        if self.channels is not None:
            ch = self.channels
            ok = (isinstance(ch, tuple) and len(ch) >= 2
                  and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in ch))
            _check(ok, "host_channels", ch, "None or a tuple of >= 2 positive integers")
        _check_float("host_bn_momentum", self.bn_momentum, 0.0, 1.0, low_open=True)
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1)
        self._check_static_seeds()

    def _check_static_seeds(self) -> None:
        given = pairs = self.static_seeds
        if isinstance(pairs, (list, tuple)):  # JSON lists as tuples
            pairs = tuple(tuple(p) if isinstance(p, (list, tuple)) else p for p in pairs)
        ok = isinstance(pairs, tuple) and all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], int)
            and not isinstance(p[0], bool) and 0 <= p[0] < self.n_slots and isinstance(p[1], str)
            for p in pairs) and len({p[0] for p in pairs}) == len(pairs)
        _check(ok, "static_seeds", given,
               f"a tuple of (slot, blueprint) pairs, slots distinct and in [0, {self.n_slots})")
        object.__setattr__(self, "static_seeds", pairs)


@dataclass(frozen=True, slots=True)
class OptimiserConfig:
    """How the host and its seeds are trained.

    Attributes:
        batch_size: training mini-batch size (anchor 128).
        host_lr, host_momentum, host_weight_decay: host SGD (anchor 0.01, 0.9, 5e-4).
        seed_lr, seed_momentum: seed SGD, created at germination, dropped at cull (anchor 0.01,
            0.9). ``seed_lr=None`` (default) means the task's: 0.05 on the CNN tasks (a seed
            arrives mid-run with ~20 epochs to catch up with the host, and on digits the higher
            rate turns conv_heavy's gain from +2 to +5 pp), the anchor's 0.01 on ``tinytext``
            (there 0.05 made the attention seeds cost 7-12 pp of test accuracy, 0.01 made them
            gain 2.6 pp).
        grad_clip: clip the gradient norm of the host, and separately of each seed, to this value
            every mini-batch (after G2's gradient ratio is measured); ``None`` means the task's
            default: 1.0 on ``tinytext`` (nanoGPT's), none on the CNN tasks; ``math.inf`` turns it
            off.
    """

    batch_size: int = 128
    host_lr: float = 0.01
    host_momentum: float = 0.9
    host_weight_decay: float = 5e-4
    seed_lr: float | None = None
    seed_momentum: float = 0.9
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        _plain_fields(self)
        _check_int("batch_size", self.batch_size, 1)
        _check_float("host_lr", self.host_lr, 0.0, low_open=True)
        _check_float("host_momentum", self.host_momentum, 0.0, 1.0)
        _check_float("host_weight_decay", self.host_weight_decay, 0.0)
        if self.seed_lr is not None:
            _check_float("seed_lr", self.seed_lr, 0.0, low_open=True)
        _check_float("seed_momentum", self.seed_momentum, 0.0, 1.0)
        if self.grad_clip is not None:
            g = self.grad_clip
            _check(isinstance(g, (int, float)) and not isinstance(g, bool) and g > 0, "grad_clip",
                   g, "None, a number > 0, or math.inf (no clipping)")


@dataclass(frozen=True, slots=True)
class LifecycleConfig:
    """The seeds' lifecycle: blending, the germination gate, the quality gates G0-G5, cooldowns.

    Attributes:
        blend: blend operator of every slot: ``add`` (default), ``multiply`` or ``gate``.
        alpha_schedule: blending ramp: ``sigmoid`` (default), ``linear`` or ``cosine``.
        blending_epochs: epochs of the alpha ramp (anchor 5).
        germination_gate: mask GERMINATE until the host has plateaued and stabilised.
        min_germinate_epoch: germination gate, first epoch GERMINATE may be chosen (anchor 5).
        plateau_epochs_to_germinate: germination gate, plateau epochs needed (anchor 3; digits 1).
        plateau_threshold: an epoch that does not beat the best val accuracy by this many pp is
            a plateau epoch (anchor 0.5 for CIFAR's 10k validation images; digits 2.0, about one
            standard error of accuracy on its 359 validation images).
        stabilization_threshold: an epoch that does not beat the best val loss by more than this
            (relative) is stable (anchor 0.03; digits 0.05).
        stabilization_epochs: stable epochs that latch "host stabilised" (anchor 3; digits 2).
        min_cull_age: seed age (epochs since germination) before CULL is legal (anchor 10).
        embargo_epochs: epochs a slot stays EMBARGOED after a cull (default 3).
        probation_timeout: epochs in PROBATIONARY before the automatic cull; ``None`` means
            ``max(3, max_epochs // 10)`` (anchor).
        param_budget: parameters the seeds may add, as a fraction of the host's parameters; a
            GERMINATE whose seed would take the live seed modules over it is masked out (a
            deployment budget). ``None`` (default) means no budget.
        gates: the quality gates' thresholds (:class:`GateConfig`).
    """

    blend: str = "add"
    alpha_schedule: str = "sigmoid"
    blending_epochs: int = 5
    germination_gate: bool = True
    min_germinate_epoch: int = 5
    plateau_epochs_to_germinate: int = 1
    plateau_threshold: float = 2.0
    stabilization_threshold: float = 0.05
    stabilization_epochs: int = 2
    min_cull_age: int = 10
    embargo_epochs: int = 3
    probation_timeout: int | None = None
    param_budget: float | None = None
    gates: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        _plain_fields(self)
        _nested(self, "gates", GateConfig)
        _check_choice("blend", self.blend, BLENDS)
        _check_choice("alpha_schedule", self.alpha_schedule, ALPHA_SCHEDULES)
        _check_int("blending_epochs", self.blending_epochs, 1)
        _check_bool("germination_gate", self.germination_gate)
        _check_int("min_germinate_epoch", self.min_germinate_epoch, 0)
        _check_int("plateau_epochs_to_germinate", self.plateau_epochs_to_germinate, 0)
        _check_float("plateau_threshold", self.plateau_threshold, 0.0)
        _check_float("stabilization_threshold", self.stabilization_threshold, 0.0)
        _check_int("stabilization_epochs", self.stabilization_epochs, 1)
        _check_int("min_cull_age", self.min_cull_age, 0)
        _check_int("embargo_epochs", self.embargo_epochs, 1)
        if self.probation_timeout is not None:
            _check_int("probation_timeout", self.probation_timeout, 1)
        if self.param_budget is not None:
            _check_float("param_budget", self.param_budget, 0.0)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Where and how the computation runs (nothing here changes an episode's rules).

    Attributes:
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``...).
        torch_threads: if set, ``reset`` and ``step`` run with this many torch threads and restore
            the process's own count afterwards (torch's setting is process-wide; scoping it keeps
            an env's results independent of other envs and of the caller); use 1 in subprocess
            vector-env workers. ``None`` uses whatever the process has.
        channels_last: keep the CNN host, its seeds and every input batch in torch's
            ``channels_last`` (NHWC) memory layout. The same network and the same episode
            semantics; the kernels round differently, so the numbers differ in the last bits from
            the default layout (each layout is deterministic on its own). On the CPU it makes
            CIFAR-10 steps about 1.5x faster and tiny images (digits) a little slower. CNN tasks
            only. Default ``False``.
        seed_checkpointing: activation checkpointing inside the transformer ``mlp`` seed
            (recomputes its hidden layer in backward; less memory, same numbers).
        report_test_acc: also report the test-split accuracy every epoch in ``info["test_acc"]``
            (for plots of test accuracy per epoch; one extra evaluation pass per step). Nothing
            the agent sees or is paid depends on it. Default ``False``: test accuracy only at the
            end (``final_test_acc``).
        fault_epochs: fault injection for tests and robustness studies: at these epochs the host
            weights are poisoned with NaN before training, so the governor must roll back.
    """

    device: str = "cpu"
    torch_threads: int | None = None
    channels_last: bool = False
    seed_checkpointing: bool = False
    report_test_acc: bool = False
    fault_epochs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _plain_fields(self)
        _tuples(self, "fault_epochs")
        dev = self.device
        ok = isinstance(dev, str) and (dev in ("cpu", "cuda", "mps") or
                                       (dev.startswith("cuda:") and dev[5:].isdigit()))
        _check(ok, "device", dev, "'cpu', 'cuda', 'cuda:N' or 'mps'")
        if self.torch_threads is not None:
            _check_int("torch_threads", self.torch_threads, 1)
        _check_bool("channels_last", self.channels_last)
        _check_bool("seed_checkpointing", self.seed_checkpointing)
        _check_bool("report_test_acc", self.report_test_acc)
        fe = self.fault_epochs
        ok = isinstance(fe, tuple) and all(isinstance(e, int) and not isinstance(e, bool) and e >= 2
                                           for e in fe)
        _check(ok, "fault_epochs", fe, "a tuple of epoch numbers >= 2 (epoch 1 trains in reset)")


def _tuples(config: Any, *names: str) -> None:
    """JSON lists as tuples (so configs read back from JSON compare equal and hash)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, list):
            object.__setattr__(config, name, tuple(value))


def _nested(config: Any, name: str, cls: type) -> None:
    """A nested config given as a dict becomes ``cls``; anything else but a ``cls`` is refused."""
    value = getattr(config, name)
    if isinstance(value, dict):
        object.__setattr__(config, name, _from_dict(cls, value, prefix=f"{name}."))
    elif not isinstance(value, cls):
        raise ConfigError(f"{name}={value!r} is invalid; allowed: a {cls.__name__} or a dict")


SECTIONS: dict[str, type] = {
    "task": TaskConfig, "host": HostConfig, "optimiser": OptimiserConfig,
    "lifecycle": LifecycleConfig, "reward": RewardConfig, "governor": GovernorConfig,
    "runtime": RuntimeConfig,
}
"""The sections of :class:`EsperConfig`, in order."""

_RENAMED = {"task": "name", "host_channels": "channels", "host_bn_momentum": "bn_momentum",
            "reward_mode": "mode"}

FLAT_KEYWORDS: dict[str, tuple[str, str]] = {
    **{_k: (section, _RENAMED.get(_k, _k))
       for section, names in (
           ("task", ("task", "max_epochs", "train_fraction", "label_noise", "train_subset",
                     "synthetic_samples", "data_root", "download", "instance_set",
                     "instance_split")),
           ("host", ("n_slots", "injection_points", "host_channels", "host_bn_momentum",
                     "block_size", "n_layer", "n_head", "n_embd", "static_seeds")),
           ("optimiser", ("batch_size", "host_lr", "host_momentum", "host_weight_decay",
                          "seed_lr", "seed_momentum", "grad_clip")),
           ("lifecycle", ("blend", "alpha_schedule", "blending_epochs", "germination_gate",
                          "min_germinate_epoch", "plateau_epochs_to_germinate",
                          "plateau_threshold", "stabilization_threshold", "stabilization_epochs",
                          "min_cull_age", "embargo_epochs", "probation_timeout", "param_budget",
                          "gates")),
           ("reward", ("reward_mode",)),
           ("runtime", ("device", "torch_threads", "channels_last", "seed_checkpointing",
                        "report_test_acc", "fault_epochs")),
       )
       for _k in names},
}
"""Every flat ``gym.make`` keyword of the first, flat config: keyword -> (section, field)."""

_FLAT_LAYOUT = (
    "task", "n_slots", "max_epochs", "reward_mode", "blend", "alpha_schedule", "blending_epochs",
    "germination_gate", "min_germinate_epoch", "plateau_epochs_to_germinate", "plateau_threshold",
    "stabilization_threshold", "stabilization_epochs", "min_cull_age", "embargo_epochs",
    "probation_timeout", "injection_points", "host_channels", "block_size", "n_layer", "n_head",
    "n_embd", "batch_size", "host_bn_momentum", "host_lr", "host_momentum", "host_weight_decay",
    "seed_lr", "seed_momentum", "synthetic_samples", "data_root", "download", "train_subset",
    "seed_checkpointing", "grad_clip", "train_fraction", "label_noise", "param_budget", "device",
    "torch_threads", "channels_last", "report_test_acc", "fault_epochs", "instance_set",
    "instance_split", "gates", "reward", "governor",
)
"""The fields of the first, flat ``EsperConfig`` in their order (what its pickles hold)."""


@dataclass(frozen=True, slots=True, init=False)
class EsperConfig:
    """Everything that defines an Esper-v0 environment, in seven sections.

    ``task`` (:class:`TaskConfig`: dataset, split, epoch budget, instance set), ``host``
    (:class:`HostConfig`: the network and its slots), ``optimiser`` (:class:`OptimiserConfig`),
    ``lifecycle`` (:class:`LifecycleConfig`: blending, the germination gate and the gates
    G0-G5), ``reward`` (:class:`RewardConfig`), ``governor`` (:class:`GovernorConfig`) and
    ``runtime`` (:class:`RuntimeConfig`: device, threads, memory layout, reporting, fault
    injection).

    Build it from sections (a dataclass or a dict each) or from the flat keywords of
    :data:`FLAT_KEYWORDS`, which are also ``gym.make``'s (``EsperConfig(task="synthetic",
    n_slots=2, host_lr=0.05, gates={"min_training_epochs": 1})``); flat keywords are applied on
    top of the sections given. ``task`` is the task's name when a string, the section otherwise;
    ``reward`` and ``governor`` are both a keyword and a section. Construction reads no file:
    an instance set is read and checked when the env is built.

    Anchor values (the Esper-lite research system, Dec 2025) are the defaults, except where the
    default task needs its own calibration; each such field says so and gives the anchor value.
    """

    task: TaskConfig
    host: HostConfig
    optimiser: OptimiserConfig
    lifecycle: LifecycleConfig
    reward: RewardConfig
    governor: GovernorConfig
    runtime: RuntimeConfig

    def __init__(self, task: TaskConfig | dict[str, Any] | str | None = None,
                 host: HostConfig | dict[str, Any] | None = None,
                 optimiser: OptimiserConfig | dict[str, Any] | None = None,
                 lifecycle: LifecycleConfig | dict[str, Any] | None = None,
                 reward: RewardConfig | dict[str, Any] | None = None,
                 governor: GovernorConfig | dict[str, Any] | None = None,
                 runtime: RuntimeConfig | dict[str, Any] | None = None, **flat: Any) -> None:
        given = {"task": task, "host": host, "optimiser": optimiser, "lifecycle": lifecycle,
                 "reward": reward, "governor": governor, "runtime": runtime}
        if isinstance(task, str) or task is not None and not isinstance(task, (dict, TaskConfig)):
            given["task"], flat = None, {"task": task, **flat}
        unknown = [k for k in flat if k not in FLAT_KEYWORDS]
        if unknown:
            raise ConfigError(unknown_name_message("EsperConfig field", unknown[0],
                                                   list(FLAT_KEYWORDS) + list(SECTIONS)))
        changes: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in flat.items():
            section, name = FLAT_KEYWORDS[key]
            changes[section][name] = value
        for name, cls in SECTIONS.items():
            object.__setattr__(self, name, _section(name, cls, given[name], changes[name]))
        self._validate_across()

    def _validate_across(self) -> None:
        """The checks that involve two sections: the host and the memory layout of a task."""
        task, host = self.task, self.host
        spec = TASKS[task.name].spec
        text = spec.is_transformer
        names = BLUEPRINT_NAMES[spec.topology]
        for _, blueprint in host.static_seeds:
            _check(blueprint in names, "static_seeds", host.static_seeds,
                   f"(slot, blueprint) pairs with blueprints of task={task.name!r}: {names}")
        for name in ("block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(host, name)
            if value is not None:
                texts = ", ".join(repr(t.spec.name) for t in TASKS.values() if t.spec.is_transformer)
                _check(text, name, value, f"None unless the task has a transformer host ({texts})")
        if not text:
            return
        _check(host.channels is None, "host_channels", host.channels,
               f"None for task={task.name!r} (a transformer: set n_layer and n_embd)")
        _check(not self.runtime.channels_last, "channels_last", self.runtime.channels_last,
               f"False for task={task.name!r} (a memory layout of images; a transformer has none)")
        if host.n_head is not None or host.n_embd is not None:
            sized = spec.sized(host)
            head, embd = sized.n_head, sized.n_embd
            _check(embd % head == 0, "n_embd", embd,
                   f"a multiple of n_head={head} (each head gets n_embd / n_head features)")
        for name, default in (("train_fraction", 1.0), ("label_noise", 0.0)):
            _check(getattr(task, name) == default, name, getattr(task, name),
                   f"{default} for task={task.name!r} (the targets are the text itself; "
                   "train_subset keeps a fixed part of it)")

    def __getstate__(self) -> list[Any]:
        return [getattr(self, name) for name in SECTIONS]

    def __setstate__(self, state: list[Any]) -> None:
        if len(state) == len(_FLAT_LAYOUT):  # pickled by the first, flat config: rebuild it
            state = [getattr(EsperConfig(**dict(zip(_FLAT_LAYOUT, state, strict=True))), name)
                     for name in SECTIONS]
        for name, value in zip(SECTIONS, state, strict=True):
            object.__setattr__(self, name, value)

    # -- derived values ---------------------------------------------------------------------------
    @property
    def effective_probation_timeout(self) -> int:
        """Epochs in PROBATIONARY before the automatic cull (``max(3, 10 % of max_epochs)``)."""
        if self.lifecycle.probation_timeout is not None:
            return self.lifecycle.probation_timeout
        return max(3, self.task.max_epochs // 10)

    def flat(self) -> dict[str, Any]:
        """The config as the flat keywords of :data:`FLAT_KEYWORDS` (values as they are)."""
        return {key: getattr(getattr(self, section), name)
                for key, (section, name) in FLAT_KEYWORDS.items()}

    # -- construction helpers ---------------------------------------------------------------------
    def replace(self, **changes: Any) -> EsperConfig:
        """A copy with ``changes`` (flat keywords or sections) applied, validated like any
        construction.
        """  # noqa: D205
        return from_kwargs(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON-compatible dict, one entry per section (tuples become lists in JSON)."""
        return dataclasses.asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        """Serialise to a JSON string; :meth:`from_json` restores an equal config."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EsperConfig:
        """Build from a dict of sections (what :meth:`to_dict` returns) or of flat keywords (what
        the first, flat config wrote: old ``env_config.json`` files and episode records);
        unknown keys raise ConfigError.
        """  # noqa: D205
        if not isinstance(data, dict):
            raise ConfigError(f"EsperConfig must be a dict, got {data!r}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> EsperConfig:
        """Inverse of :meth:`to_json` (and reads the flat JSON of earlier versions)."""
        return cls.from_dict(json.loads(text))


def _section(name: str, cls: type, given: Any, changes: dict[str, Any]) -> Any:
    """Section ``name``: ``given`` (a ``cls``, a dict of its fields or None) with ``changes``."""
    if given is None:
        base = cls()
    elif isinstance(given, cls):
        base = given
    elif isinstance(given, dict):
        base = _from_dict(cls, given, prefix=f"{name}.")
    else:
        raise ConfigError(f"{name}={given!r} is invalid; allowed: a {cls.__name__} or a dict")
    if not changes:
        return base
    if "gates" in changes:  # a partial dict of gate thresholds updates only those
        changes = {**changes, "gates": _merged(base.gates, changes["gates"], GateConfig, "gates")}
    return dataclasses.replace(base, **changes)


def _merged(current: Any, value: Any, cls: type, prefix: str) -> Any:
    """``value`` (a ``cls`` or a dict of some of its fields) applied to ``current``."""
    if not isinstance(value, dict):
        return value
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in value if k not in names]
    if unknown:
        raise ConfigError(unknown_name_message(f"{cls.__name__} field", f"{prefix}.{unknown[0]}",
                                               [f"{prefix}.{n}" for n in names]))
    return dataclasses.replace(current, **value)


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__} must be a dict, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(unknown_name_message(f"{cls.__name__} field", f"{prefix}{key}",
                                                   [prefix + n for n in names]))
    return cls(**data)


def from_kwargs(base: EsperConfig | None = None, **kwargs: Any) -> EsperConfig:
    """Apply ``gym.make``-style keyword overrides to ``base`` (default config if None).

    Keywords are the flat ones (:data:`FLAT_KEYWORDS`) or whole sections. A section, or the
    nested ``gates``, ``reward`` and ``governor``, may be given whole (a dataclass) or partially
    as a dict (``gates={"min_fossilize_contribution": 2.0}``), which updates only those fields.
    Pure: an instance set is followed (its task and slot count) by
    :func:`esper_env.core.instances.resolve_instance_set`, when the env is built.
    """
    base = base if base is not None else EsperConfig()
    sections: dict[str, Any] = {name: getattr(base, name) for name in SECTIONS}
    flat: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key == "task" and not isinstance(value, (dict, TaskConfig)):
            sections["task"] = dataclasses.replace(sections["task"], name=value)  # the task's name
        elif key in SECTIONS:
            if value is None:
                raise ConfigError(f"{key}=None is invalid; allowed: a {SECTIONS[key].__name__} "
                                  "or a dict")
            sections[key] = _merged(sections[key], value, SECTIONS[key], key)
        elif key in FLAT_KEYWORDS:
            flat[key] = value
        else:
            raise ConfigError(unknown_name_message("EsperConfig field", key,
                                                   list(FLAT_KEYWORDS) + list(SECTIONS)))
    return EsperConfig(**sections, **flat)


# -- instances --------------------------------------------------------------------------------------
INSTANCE_FIELDS = ("host_channels", "injection_points", "host_lr", "train_fraction",
                   "label_noise", "max_epochs", "param_budget")
"""The env config fields (flat keywords) an instance sets (all of them, always)."""


@dataclass(frozen=True, slots=True)
class Instance:
    """One problem instance: the values of :data:`INSTANCE_FIELDS` for an episode.

    Instances and instance sets are described in :mod:`esper_env.core.instances`; the record
    lives here because a config can hold a list of them.

    Attributes:
        name: unique within its set (``info["instance"]`` reports it).
        host_channels: widths of the CNN host's blocks (their number is the depth); ``None``
            means the task's default host.
        injection_points: the host block after which each slot sits (one per slot); ``None``
            means the last ``n_slots`` blocks.
        host_lr: the host's SGD learning rate.
        train_fraction: fraction of the training split used, in (0, 1].
        label_noise: fraction of the used training labels replaced by a wrong class, in [0, 0.9].
        max_epochs: the epoch budget.
        param_budget: parameters the seeds may add, as a fraction of the host's; ``None`` means
            no budget.
    """

    name: str
    host_channels: tuple[int, ...] | None = None
    injection_points: tuple[int, ...] | None = None
    host_lr: float = 0.01
    train_fraction: float = 1.0
    label_noise: float = 0.0
    max_epochs: int = 25
    param_budget: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"instance name={self.name!r} is invalid; allowed: a non-empty string")
        _tuples(self, "host_channels", "injection_points")
        # The config's own checks, with the instance's name in the message.
        n_slots = len(self.injection_points) if isinstance(self.injection_points, tuple) else 1
        try:
            EsperConfig(n_slots=max(1, n_slots), **self.overrides())
        except ConfigError as e:
            raise ConfigError(f"instance {self.name!r}: {e}") from None
        if self.host_channels is not None and self.injection_points is not None and \
                max(self.injection_points) >= len(self.host_channels):
            raise ConfigError(f"instance {self.name!r}: injection_points={self.injection_points} "
                              f"is invalid; allowed: block indices 0..{len(self.host_channels) - 1}"
                              f" of host_channels={self.host_channels}")

    def overrides(self) -> dict[str, Any]:
        """The env config fields this instance sets, by flat keyword."""
        return {f: getattr(self, f) for f in INSTANCE_FIELDS}

    def apply(self, cfg: EsperConfig, settings: dict[str, Any] | None = None) -> EsperConfig:
        """The episode config: ``cfg`` with the set's ``settings`` and this instance's fields set
        (and no instance set).
        """  # noqa: D205
        try:
            return cfg.replace(instance_set=None, **(settings or {}), **self.overrides())
        except ConfigError as e:
            raise ConfigError(f"instance {self.name!r}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON-compatible dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Instance:
        """Build from a dict such as :meth:`to_dict` returns; unknown keys raise ConfigError."""
        if isinstance(data, Instance):
            return data
        if not isinstance(data, dict):
            raise ConfigError(f"instance={data!r} is invalid; allowed: a dict of "
                              f"{('name',) + INSTANCE_FIELDS}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(unknown_name_message("instance field", key, names))
        if "name" not in data:
            raise ConfigError(f"instance {data!r} has no 'name'; every instance needs one")
        return cls(**data)
