"""EsperEnv: the Gymnasium environment. Glue only: it connects the pure core and the torch layer."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import InvalidAction, ResetNeeded

from esper_env._version import __version__
from esper_env.config import EsperConfig, from_kwargs
from esper_env.core.actions import (
    ActionCodec,
    ActionKind,
    decisions_available,
    germination_gate_open,
    legal_action_mask,
)
from esper_env.core.gates import GateResult
from esper_env.core.governor import GovernorState, check_loss
from esper_env.core.instances import Instance, InstanceSet, load_instance_set
from esper_env.core.lifecycle import LIVE_STAGES, MODULE_STAGES, SeedStage
from esper_env.core.observation import (
    EpisodeFacts,
    encode_observation,
    observation_bounds,
    observation_features,
)
from esper_env.core.reward import (
    RewardInputs,
    compute_reward,
    reward_terms,
    split_value_added,
    uses_twin,
    value_added,
)
from esper_env.core.seeds import (
    LifecycleEvent,
    auto_transition,
    cull,
    fossilize,
    germinate,
    record_epoch,
)
from esper_env.core.state import EpochReport, SlotMetrics, SlotState, added_parameters
from esper_env.core.tracker import TrackerState, update_tracker
from esper_env.errors import ConfigError
from esper_env.nn.blueprints import available_blueprints
from esper_env.nn.data import load_task, task_spec
from esper_env.nn.threads import num_threads
from esper_env.nn.trainer import Trainer
from esper_env.snapshot import SNAPSHOT_FORMAT, EnvSnapshot, SnapshotError

_F = TypeVar("_F", bound=Callable[..., Any])


def _own_threads(method: _F) -> _F:
    """Run ``method`` with the env's ``torch_threads`` (if set), restoring the process value after.

    The thread count is process-wide in torch; scoping it to the env's own calls means that another
    env built (or the caller running) with another count does not change this env's results.
    """
    @functools.wraps(method)
    def scoped(self: EsperEnv, *args: Any, **kwargs: Any) -> Any:
        with num_threads(self.config.torch_threads):
            return method(self, *args, **kwargs)
    return scoped  # type: ignore[return-value]


def _perplexity(loss: float) -> float:
    """``exp(loss)`` of a language model's mean next-token loss (inf when it overflows, NaN for
    a NaN loss).
    """  # noqa: D205
    return math.exp(loss) if not loss >= 700.0 else math.inf


def _check_device_available(device: str) -> None:
    """Raise ConfigError at construction if ``device`` does not exist on this machine."""
    if device.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= n:
            raise ConfigError(f"device={device!r} is not available: this machine has {n} CUDA "
                              f"device(s); allowed: 'cpu'" + (f" or cuda:0..{n - 1}" if n else ""))
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device='mps' is not available on this machine; allowed: 'cpu'")


STAGE_COLOURS: dict[SeedStage, tuple[int, int, int]] = {
    SeedStage.DORMANT: (200, 200, 200),
    SeedStage.GERMINATED: (150, 190, 255),
    SeedStage.TRAINING: (40, 90, 220),
    SeedStage.BLENDING: (0, 180, 200),
    SeedStage.PROBATIONARY: (240, 190, 0),
    SeedStage.FOSSILIZED: (30, 160, 60),
    SeedStage.CULLED: (220, 30, 30),
    SeedStage.EMBARGOED: (140, 20, 20),
    SeedStage.RESETTING: (240, 120, 40),
}
"""Colour of each stage in ``rgb_array`` renders."""

_EPISODE_FIELDS = (
    "_np_random", "_np_random_seed", "_instance", "_cfg", "_seed_base", "_trainer", "_costs",
    "_facts", "_slots", "_good_slots", "_tracker", "_governor", "_epoch", "_seeds_made",
    "_rollbacks", "_done", "_warned_done", "_reset_diverged", "_value_added", "_twin_val_acc",
    "_report", "_curve", "_mask", "_obs", "_info", "_fault",
)
"""Attributes that make up an episode (set by ``reset``/``step``); a snapshot holds all of them."""


class EsperEnv(gym.Env[np.ndarray, np.int64]):
    r"""A host network that grows while it trains; the agent decides when and how.

    ## Description

    One episode is one training run of a small, deliberately weak *host* network on a real dataset
    (default: scikit-learn's 8x8 digits). One step is one *Kasmina epoch*: the chosen action is
    applied, the host and its live seeds train for one epoch, the model is validated (with each
    blended seed's counterfactual), and every seed's lifecycle advances under the quality gates.
    Seeds move DORMANT -> GERMINATED -> TRAINING -> BLENDING -> PROBATIONARY -> FOSSILIZED, or
    CULLED -> EMBARGOED -> RESETTING -> DORMANT. TRAINING is an incubator (the model's output is
    exactly the seedless output while the seed learns); BLENDING ramps the blend weight alpha
    0 -> 1; FOSSILIZE (only by action, only through gate G5) makes a seed permanent. A fossilised
    seed keeps training with the host and its gradient isolation is lifted (it is part of the host).

    ## Action Space

    ``Discrete(1 + n_slots * (n_blueprints + 2))``. ``env.action_masks()`` gives the legal ones.

    | index | action | legal when |
    |-------|--------|------------|
    | 0 | WAIT | always |
    | 1 + s*(B+2) + b | GERMINATE blueprint b into slot s | slot DORMANT, the germination gate is open (epoch >= min_germinate_epoch, host plateaued plateau_epochs_to_germinate epochs, host stabilised; ``germination_gate=False`` opens it) and, with a ``param_budget``, the seed fits in what is left of it |
    | 1 + s*(B+2) + B | FOSSILIZE slot s | slot PROBATIONARY and G5 passes (so a legal FOSSILIZE always succeeds) |
    | 1 + s*(B+2) + B + 1 | CULL slot s | seed GERMINATED..PROBATIONARY and seed age >= min_cull_age |

    CNN blueprints (B = 5), in action order: ``norm``, ``attention``, ``depthwise``,
    ``conv_light``, ``conv_heavy`` (ascending parameter count at slot widths >= 2; at width 1
    ``depthwise`` has one parameter more than ``conv_light``; costs always use the actual count).
    Transformer blueprints (``tinytext``; B = 5, or 4 where torch has no FlexAttention): ``norm``,
    ``lora``, ``attention``, ``flex_attention``, ``mlp``. A masked-out action is a no-op
    that costs ``reward.illegal_action_penalty`` and sets ``info["illegal_action"]``; an action
    outside the space raises ``gymnasium.error.InvalidAction``.

    ## Observation Space

    A flat ``Box(float32)``: a global block of 29 features, then one block of 24 features per slot
    (19 + B), in this order. Values are finite and clipped to the bounds below (accuracies are fractions; losses are
    divided by ln(n_classes); ``pp`` = percentage points).

    | feature | meaning | bounds |
    |---------|---------|--------|
    | epoch_fraction | epochs trained / max_epochs | [0, 1] |
    | train_loss | mean training loss / ln(n_classes) | [0, 5] |
    | val_loss | validation loss / ln(n_classes) | [0, 5] |
    | train_acc | training accuracy | [0, 1] |
    | val_acc | validation accuracy | [0, 1] |
    | val_loss_delta | (previous - current val loss) / ln(n_classes) | [-1, 1] |
    | val_acc_delta | val accuracy change, pp / 10 (first epoch: accuracy / 10) | [-1, 1] |
    | plateau_epochs | epochs since the best val accuracy rose by >= plateau_threshold pp, / max_epochs | [0, 1] |
    | best_val_acc | best validation accuracy so far | [0, 1] |
    | val_acc_hist_0..4 | val accuracy 5..1 epochs ago (0 before the start) | [0, 1] |
    | val_loss_hist_0..4 | val loss / ln(n_classes) 5..1 epochs ago | [0, 5] |
    | host_stabilized | 1 once the val loss has stabilised (latched for the episode) | {0, 1} |
    | germination_open | 1 if the germination gate is open | {0, 1} |
    | added_param_ratio | parameters of live seed modules / host parameters | [0, 10] |
    | host_size | log10(host parameters) / 6 | [0, 1] |
    | epochs_left | (max_epochs - epochs trained) / 100 | [0, 1] |
    | budget_left | parameters the seeds may still add / host parameters (10 without a budget) | [0, 10] |
    | has_budget | 1 if the episode has a ``param_budget`` | {0, 1} |
    | host_lr | (log10(host learning rate) + 4) / 4 | [0, 1] |
    | train_fraction | fraction of the training split used | [0, 1] |
    | label_noise | fraction of the training labels corrupted | [0, 1] |
    | slot{s}_stage_{dormant..resetting} | one-hot of the stage (9 stages, in enum order) | {0, 1} |
    | slot{s}_alpha | blend weight the next epoch trains with | [0, 1] |
    | slot{s}_epochs_in_stage | epochs in the current stage / max_epochs | [0, 1] |
    | slot{s}_seed_age | epochs since germination / max_epochs | [0, 1] |
    | slot{s}_improvement | val accuracy change since the stage started, pp / 10 | [-1, 1] |
    | slot{s}_counterfactual | counterfactual contribution measured this epoch, pp / 10 | [-1, 1] |
    | slot{s}_has_counterfactual | 1 if this epoch trained the seed with alpha > 0 | {0, 1} |
    | slot{s}_gradient_ratio | parameter-normalised seed/host gradient ratio / 10 | [0, 1] |
    | slot{s}_param_share | seed parameters / host parameters | [0, 10] |
    | slot{s}_width | log2(channels at the slot) / 8 | [0, 1] |
    | slot{s}_depth | (host block before the slot + 1) / host blocks | [0, 1] |
    | slot{s}_blueprint_{name} | one-hot of the seed's blueprint, in action order | {0, 1} |

    ``env.unwrapped.feature_names`` lists them in vector order. The instance features
    (``host_size`` to ``label_noise``, slot width and depth) are constants within an episode;
    with an instance set they tell the agent which instance it is on.

    ## Rewards

    Chosen with ``reward_mode``; every term is in ``info["reward_terms"]`` (weights in
    :class:`~esper_env.config.RewardConfig`). Rewards, accuracies and contributions are in pp.

    * ``contribution`` (default): what growth added over the *no-growth world*. The env keeps a
      seedless twin of the host: the same initial weights, trained on the same mini-batches,
      never touched by a seed (forked exactly when a seed is first blended in, so episodes that
      never blend pay nothing for it). ``V = val_acc - twin_val_acc`` is the value growth has
      added so far (``info["value_added"]``). Terms: ``value_added`` (the change of V this step;
      it telescopes, so an episode's sum is the final V: a seed is paid what it adds, not its
      counterfactual removal cost, and no growth earns exactly 0), ``rent`` (the change of
      ``rent_pp_per_doubling * log2(1 + added/host)``, default 0.5 pp per doubling of the model;
      it telescopes to the final model's rent and is refunded on a cull), ``stage_shaping``
      (``0.3 * (0.99 Phi(s') - Phi(s))`` per slot with ``Phi = 0`` at termination: potential-based,
      its discounted episode sum is 0, so it cannot change the optimal policy) and
      ``probation_wait`` (-3^(e-2) for a PROBATIONARY seed left undecided e >= 2 epochs while
      FOSSILIZE or CULL was legal for it; only a legal FOSSILIZE that passes G5 or a legal CULL
      avoids it). The counterfactual stays in the observation and ``info`` (the per-seed
      signal); ``info["value_added_by_slot"]`` splits V across the blended seeds by their
      counterfactuals. The twin is a reward device only: it is not observed.
    * ``delta``: ``accuracy_delta`` (val-accuracy change; sums to final - initial accuracy) and
      the same telescoping ``rent``.
    * ``sparse``: 0 until the last step, then ``final_accuracy`` (final val accuracy) and
      ``rent`` (the final model's).

    In every mode: ``illegal_action`` (-0.1), ``rollback`` (-10) and ``diverged`` (-10).
    ``benchmarks/bench_reward_integrity.py`` measures that the default return ranks growth
    policies the way final test accuracy does (README, "Reward integrity").

    ## Instance sets

    With ``instance_set`` every episode runs on an *instance* (DACBench style): host widths and
    depth, slot positions, host learning rate, training-set fraction, label noise, epoch budget
    and parameter budget (:mod:`esper_env.core.instances`). ``reset(seed=s)`` draws one from the
    ``instance_split`` with the episode's RNG (same seed, same instance and episode);
    ``reset(options={"instance": k})`` pins the k-th instance of the split and
    ``reset(options={"instance": record})`` any record; ``info["instance"]`` names it. Named sets
    have disjoint ``train`` and ``test`` splits: train on one, report on the other.

    ## Starting State

    ``reset`` builds a fresh host (weights from the episode seed), empty DORMANT slots, and trains
    and validates the first epoch; the first observation describes that epoch.

    ## Episode End

    1. Termination: ``max_epochs`` epochs have been trained (the budget is observed, so this is
       ``terminated=True``, never ``truncated``).
    2. Termination: the governor panicked again after ``governor.max_rollbacks`` rollbacks
       (``info["diverged"] = True``, ``diverged`` penalty).
    3. Termination: the first epoch, trained in ``reset``, already diverged (reset's
       ``info["diverged"]`` is True; no good state exists to roll back to): only WAIT is legal and
       the first ``step`` trains nothing and ends the episode like 2, with the usual final keys.

    A first governor panic (NaN loss, loss back at chance, a loss spike, or an exception raised by
    the model's computation, named in ``info["fault"]``) rolls back to the last good state (taken
    at reset, every ``governor.snapshot_every`` epochs and right after a fossilization): the whole
    model with its optimisers, and the records of the slots whose seeds it held; a live seed
    germinated since is culled (cause ``rollback``). It costs the ``rollback`` penalty, sets
    ``info["rollback"]`` and the episode continues; the epoch count, data order and cooldowns go
    on (the twin is not rolled back: it is the no-growth world, where nothing panicked). The last
    ``info`` holds ``final_val_acc``,
    ``final_test_acc`` (held-out test split, reported only), ``n_fossilized`` and, in
    ``contribution`` mode, ``final_twin_test_acc`` (the no-growth world's test accuracy; None
    if the twin itself diverged, after which V is frozen).

    ## Arguments

    Every field of :class:`~esper_env.config.EsperConfig` is a keyword of ``gym.make``:

    | argument | default | meaning |
    |----------|---------|---------|
    | task | "digits" | "digits", "synthetic", "cifar10" (needs ``data_root``) or "tinytext" (a transformer) |
    | data_root, download | None, False | CIFAR-10's folder; download into it only when asked |
    | train_subset | None | train on a fixed subset of this many samples (the CPU option for CIFAR-10) |
    | block_size, n_layer, n_head, n_embd | None | tinytext's transformer host (None: 32, 2, 2, 32) |
    | instance_set | None | a shipped set's name (``"digits-mix"``), a JSON file or a list of instance records: each ``reset`` draws an instance (see *Instance sets*) |
    | instance_split | "train" | "train" or "test" |
    | train_fraction, label_noise, param_budget | 1, 0, None | training-data subset, label noise, parameter budget (fraction of the host) |
    | n_slots | 1 | seed slots (at most the host's injection points: 3 in the CNN hosts, n_layer in the transformer) |
    | max_epochs | 25 | epoch budget |
    | reward_mode | "contribution" | "contribution", "delta", "sparse" |
    | blend | "add" | "add", "multiply", "gate" |
    | alpha_schedule | "sigmoid" | "linear", "cosine", "sigmoid" |
    | germination_gate | True | mask GERMINATE until the host plateaus |
    | min_cull_age | 10 | seed age before CULL is legal |
    | embargo_epochs | 3 | epochs EMBARGOED after a cull |
    | device | "cpu" | torch device |
    | report_test_acc | False | also put the test accuracy in every step's ``info["test_acc"]`` (reporting only) |
    | render_mode | None | "ansi" (text) or "rgb_array" (accuracy bars + stage strips per slot) |
    | gates, reward, governor | defaults | nested configs (dataclass or dict) |

    >>> import gymnasium as gym, esper_env
    >>> env = gym.make("Esper-v0", task="synthetic", max_epochs=3)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(0)
    >>> info["stages"]
    ['DORMANT']

    Determinism: on CPU (same torch build and thread count), ``reset(seed=s)`` and the same actions
    give identical observations, rewards and infos; the env never touches the global ``random``, ``numpy`` or ``torch`` RNGs.
    GPU runs are reproducible in distribution only. ``snapshot()`` / ``restore(snap)`` / ``fork()``
    freeze, restore and branch an episode (the same actions then give the identical
    continuation); ``copy.deepcopy`` and ``pickle`` of a mid-episode env use the same mechanism.

    ## Version History

    * v0 (unreleased; changes before the first release):

      - reward integrity: the ``contribution`` reward pays value added over a seedless twin
        (``value_added``) instead of the anchor's bounded counterfactual attribution, proxy
        credit, blending warning, action shaping and terminal bonus, which paid seeds that
        lowered final accuracy; rent is a telescoping price in pp per doubling of the model in
        every mode (it was charged every epoch); stage shaping has ``Phi = 0`` at termination;
        the probation-wait penalty is avoided only by a legal, successful decision;
      - lifecycle: G3 needs a positive counterfactual (a seed at the end of its ramp whose
        removal would not cost accuracy is culled, cause ``G3_counterfactual``); FOSSILIZE is
        masked unless G5 passes; G2's gradient ratio is measured over every mini-batch of the
        epoch; the isolation-violation counter detects real leaks.
      - instance sets (``instance_set``, ``instance_split``, ``reset(options={"instance": ...})``,
        ``info["instance"]``), ``train_fraction``, ``label_noise`` and ``param_budget`` (budget
        masks); the observation gains seven global instance features and a width and depth per
        slot (29 global + 24 per slot).
      - record, replay and fork: ``snapshot``/``restore``/``fork``, mid-episode deepcopy and
        pickle; the governor's good state is the whole model (live seeds included, it used to be
        the host and fossils only); a model whose computation raises is a fault, ``info["fault"]``.
      - research tasks: ``cifar10`` (``data_root``, ``download``, ``train_subset``) and
        ``tinytext`` (a transformer host: ``block_size``, ``n_layer``, ``n_head``, ``n_embd``;
        five transformer blueprints; ``info["val_perplexity"]``); ``grad_clip``;
        ``seed_checkpointing``; ``channels_last`` (CNN tasks in the NHWC memory layout).
      - initial design.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, config: EsperConfig | None = None, render_mode: str | None = None,
                 **kwargs: Any) -> None:
        self.config = cfg = from_kwargs(config, **kwargs)
        # An unsupported render_mode is accepted (gym.make already warns about it); render() then
        # warns and draws nothing. SB3's make_vec_env passes "rgb_array", which is supported.
        self.render_mode = render_mode
        self.task_spec = task_spec(cfg.task)
        self.instance_set: InstanceSet | None = None
        self.instances: tuple[Instance, ...] = ()
        if cfg.instance_set is not None:
            self.instance_set = load_instance_set(cfg.instance_set, cfg.task, cfg.n_slots)
            self.instances = self.instance_set.split(cfg.instance_split)
        self._cfg = self._episode_config(self.instances[0] if self.instances else None)
        for inst in self.instances[1:]:
            self._episode_config(inst)
        _check_device_available(cfg.device)
        if cfg.task == "cifar10":  # a missing or malformed folder fails here, not at reset
            load_task("cifar10", episode_seed=0, device="cpu", data_root=cfg.data_root,
                      download=cfg.download, train_subset=1)
        self.blueprints = available_blueprints(self.task_spec.topology)
        self.codec = ActionCodec(cfg.n_slots, self.blueprints)
        self.action_space = spaces.Discrete(self.codec.n)
        self.features = observation_features(cfg.n_slots, self.blueprints)
        self._low, self._high = observation_bounds(self.features)
        self.observation_space = spaces.Box(self._low, self._high, dtype=np.float32)
        self._reward_keys = reward_terms(cfg.reward_mode)
        self._twin = uses_twin(cfg.reward_mode)
        self._trainer: Trainer | None = None
        self._instance: Instance | None = None
        self._curve: list[tuple[float, tuple[SeedStage, ...]]] = []  # (val acc, stages) per epoch
        self._done = False
        self._warned_done = False
        self._reset_diverged = False

    def _episode_config(self, instance: Instance | None) -> EsperConfig:
        """The config of an episode on ``instance`` (the env's own without one), checked."""
        settings = self.instance_set.settings if self.instance_set is not None else None
        cfg = self.config if instance is None else instance.apply(self.config, settings)
        where = "" if instance is None else f"instance {instance.name!r}: "
        if self.task_spec.topology == "transformer":
            n_points = cfg.n_layer or self.task_spec.n_layer
        else:
            n_points = len(cfg.host_channels or self.task_spec.host_channels)
        if cfg.n_slots > n_points:
            raise ConfigError(f"{where}n_slots={cfg.n_slots} is invalid; allowed: 1..{n_points} "
                              f"(the {cfg.task} host has {n_points} injection points)")
        if cfg.injection_points is not None and max(cfg.injection_points) >= n_points:
            raise ConfigError(f"{where}injection_points={cfg.injection_points} is invalid; "
                              f"allowed: distinct indices in 0..{n_points - 1}")
        return cfg

    def _pinned_instance(self, options: dict[str, Any] | None) -> Instance | None:
        """The instance ``reset(options=...)`` pins, validated before anything changes."""
        if options is None:
            return None
        if not isinstance(options, dict):
            raise ConfigError(f"reset options={options!r} is invalid; allowed: None or a dict such as "
                              "{'instance': 0}")
        if not options:
            return None
        unknown = sorted(set(options) - {"instance"})
        if unknown:
            raise ConfigError(f"reset options {unknown} are not supported; allowed: 'instance'")
        spec = options["instance"]
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, (bool, np.bool_)):
            n = len(self.instances)
            if not 0 <= int(spec) < n:
                allowed = f"an index in 0..{n - 1} of the {self.config.instance_split!r} split" \
                    if n else "an instance record (this env has no instance set)"
                raise ConfigError(f"reset option instance={spec!r} is invalid; allowed: {allowed}")
            return self.instances[int(spec)]
        if not isinstance(spec, (dict, Instance)):
            raise ConfigError(f"reset option instance={spec!r} is invalid; allowed: an index into "
                              "the instance split or an instance record (dict)")
        inst = Instance.from_dict(spec)  # a record, validated
        self._episode_config(inst)  # and checked against this env (slots, injection points)
        return inst

    # -- public helpers ---------------------------------------------------------------------------
    @property
    def feature_names(self) -> tuple[str, ...]:
        """Observation feature names in vector order."""
        return tuple(f.name for f in self.features)

    @property
    def action_names(self) -> tuple[str, ...]:
        """Action names in index order."""
        return self.codec.names

    @property
    def slots(self) -> tuple[SlotState, ...]:
        """The slots' lifecycle records (read-only); raises ResetNeeded before ``reset``."""
        if self._trainer is None:
            raise ResetNeeded("call reset() before reading slots")
        return self._slots

    @property
    def trainer(self) -> Trainer:
        """The episode's trainer (model, optimisers); raises ResetNeeded before ``reset``."""
        if self._trainer is None:
            raise ResetNeeded("call reset() before using the environment")
        return self._trainer

    def action_masks(self) -> np.ndarray:
        """Boolean mask of the legal actions (sb3-contrib's MaskablePPO convention).

        Cast with ``.astype(np.int8)`` for ``action_space.sample(mask=...)``.
        """
        if self._trainer is None:
            raise ResetNeeded("call reset() before action_masks()")
        return self._mask.copy()

    # -- reset --------------------------------------------------------------------------------------
    @_own_threads
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new training run; trains and validates the first epoch.

        With an instance set the episode's instance is drawn from the split with the episode's
        RNG (so the same seed gives the same instance); ``options={"instance": k}`` pins the k-th
        instance of the split, ``options={"instance": record}`` any instance record.
        """
        pinned = self._pinned_instance(options)  # bad options fail before anything changes
        super().reset(seed=seed)
        instance = pinned
        if self.instances:
            drawn = self.instances[int(self.np_random.integers(len(self.instances)))]
            instance = pinned if pinned is not None else drawn
        self._instance = instance
        self._cfg = cfg = self._episode_config(instance)
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        model_seed, data_seed, self._seed_base = (
            int(x) for x in np.random.SeedSequence(episode_seed).generate_state(3))
        data = load_task(cfg.task, episode_seed=episode_seed, device=cfg.device,
                         synthetic_samples=cfg.synthetic_samples,
                         train_fraction=cfg.train_fraction, label_noise=cfg.label_noise,
                         data_root=cfg.data_root, download=cfg.download,
                         train_subset=cfg.train_subset, block_size=cfg.block_size)
        self._trainer = Trainer(cfg, data, model_seed, data_seed, twin=self._twin)
        self._costs = tuple(tuple(self._trainer.seed_param_count(k, b) for b in self.blueprints)
                            for k in range(cfg.n_slots))
        model = self._trainer.model
        n_blocks = len(model.host.blocks)
        self._facts = EpisodeFacts(
            host_params=self._trainer.host_params, host_lr=cfg.host_lr,
            train_fraction=cfg.train_fraction, label_noise=cfg.label_noise,
            param_budget=cfg.param_budget,
            slot_channels=tuple(s.channels for s in model.slots),
            slot_depths=tuple((p + 1) / n_blocks for p in model.points))
        self._slots = tuple(SlotState(i) for i in range(cfg.n_slots))
        self._tracker = TrackerState()
        self._governor = GovernorState()
        self._epoch = 1  # epochs trained; reset trains the first
        self._seeds_made = 0
        self._rollbacks = 0
        self._done = False
        self._warned_done = False
        self._fault = None
        report, panic = self._train_and_validate()
        # A first epoch that already diverges has no good state to go back to: the first step is
        # then a defined terminal step (diverged penalty, final keys), with WAIT the only legal action.
        self._reset_diverged = panic
        self._value_added, self._twin_val_acc = 0.0, report.val_acc  # no twin before a blend
        self._slots = tuple(record_epoch(s, SlotMetrics(), report.val_acc) for s in self._slots)
        self._update_tracker(report)
        self._good_slots = self._slots
        if cfg.governor.enabled:
            self._snapshot()
        self._report = report
        self._curve = [(report.val_acc, tuple(s.stage for s in self._slots))]
        self._mask = self._compute_mask()
        if panic:
            self._mask[1:] = False
        self._obs = self._encode()
        info = self._base_info()
        info.update(events=[], gates=[None] * cfg.n_slots, illegal_action=False, rollback=False,
                    diverged=panic, fault=self._fault,
                    reward_terms=dict.fromkeys(self._reward_keys, 0.0))
        self._info = info
        return self._obs.copy(), info

    # -- step -----------------------------------------------------------------------------------
    @_own_threads
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action``, train one epoch, validate, advance the lifecycle."""
        if self._trainer is None:
            raise ResetNeeded("call reset() before step()")
        index = self._check_action(action)
        if self._done:
            if not self._warned_done:
                gym.logger.warn("step() called after the episode terminated; call reset(). "
                                "Returning the terminal observation.")
                self._warned_done = True
            return self._obs.copy(), 0.0, True, False, copy.deepcopy(self._info)
        cfg, trainer = self._cfg, self._trainer
        self._fault = None
        act = self.codec.decode(index)
        legal = bool(self._mask[index])
        before = self._slots
        val_acc_before = self._report.val_acc
        value_before = self._value_added
        decisions = decisions_available(self.codec, self._mask)
        events: list[LifecycleEvent] = []
        gates: list[GateResult | None] = [None] * cfg.n_slots
        fossil_gate: GateResult | None = None
        fossilized_now = False

        # 1. the action
        if legal and act.kind != ActionKind.WAIT:
            k = act.slot
            assert k is not None
            slot = before[k]
            if act.kind == ActionKind.GERMINATE:
                assert act.blueprint is not None
                seed_id = f"seed{self._seeds_made}"
                module_seed = (self._seed_base + 7919 * self._seeds_made) % (2**31 - 1)
                self._seeds_made += 1
                params, shape_ok = trainer.germinate(k, act.blueprint, module_seed)
                slot, gates[k], ev = germinate(slot, blueprint=act.blueprint, seed_id=seed_id,
                                               seed_params=params, shape_ok=shape_ok,
                                               val_acc=val_acc_before, schedule=cfg.alpha_schedule)
            elif act.kind == ActionKind.FOSSILIZE:
                slot, fossil_gate, ev = fossilize(slot, cfg)
                gates[k] = fossil_gate
                fossilized_now = fossil_gate.passed
            else:
                slot, ev = cull(slot, "action")
            events += ev
            self._set_slot(k, slot)
            if fossilized_now and cfg.governor.enabled:
                # The model passed the governor at the end of the last epoch and has not trained
                # since: the last known good state, now with the new fossil in it.
                self._snapshot()

        # 2. one epoch of training and validation, watched by the governor
        self._epoch += 1
        reset_diverged, self._reset_diverged = self._reset_diverged, False
        if reset_diverged:  # the model diverged in reset's epoch: nothing to train, nothing to restore
            report, panic = self._report, True
        else:
            if self._epoch in cfg.fault_epochs:
                trainer.poison_host()
            report, panic = self._train_and_validate()
        rollback = diverged = False
        if panic:
            if (reset_diverged or self._rollbacks >= cfg.governor.max_rollbacks
                    or not cfg.governor.enabled):
                diverged = True
            else:
                rollback = True
                self._rollbacks += 1
                events += self._rollback()
                try:
                    report = self._validate_only()
                except Exception as exc:  # noqa: BLE001 - the restored state cannot run either
                    report, diverged = self._fault_report(exc), True
        self._measure_value_added(report)
        # 3. lifecycle: record the epoch, then the automatic transitions. Not after a rollback:
        # the restored slots are as the governor accepted them, and nothing trained this epoch.
        measured = self._slots
        if not rollback:
            measured = tuple(record_epoch(s, m, report.val_acc)
                             for s, m in zip(self._slots, report.slots, strict=True))
            after = []
            for k, slot in enumerate(measured):
                new, gate, ev = auto_transition(slot, cfg)
                if gate is not None and gates[k] is None:
                    gates[k] = gate
                events += ev
                after.append(new)
            self._slots = tuple(after)
        for k in range(cfg.n_slots):
            self._sync_trainer(k)
        if not diverged:
            self._update_tracker(report)
        if cfg.governor.enabled and not panic and self._epoch % cfg.governor.snapshot_every == 0:
            self._snapshot()
        self._report = report
        self._curve.append((report.val_acc, tuple(s.stage for s in measured)))
        terminated = diverged or self._epoch >= cfg.max_epochs
        self._done = terminated

        # 4. reward, observation, info
        breakdown = compute_reward(cfg.reward_mode, RewardInputs(
            action=act, action_legal=legal, slots_before=before, slots_after=self._slots,
            val_acc_before=val_acc_before, val_acc_after=report.val_acc,
            host_params=trainer.host_params, terminal=terminated,
            value_added_before=value_before, value_added_after=self._value_added,
            decisions=decisions, fossilize_gate=fossil_gate, rollback=rollback,
            diverged=diverged), cfg.reward)
        self._mask = self._compute_mask()
        self._obs = self._encode()
        info = self._base_info()
        info.update(
            action=index, action_name=self.codec.name(index), illegal_action=not legal,
            events=[e.to_info() for e in events],
            gates=[g.to_info() if g is not None else None for g in gates],
            reward_terms=breakdown.terms, rollback=rollback, diverged=diverged)
        if terminated:
            test_acc = info["test_acc"] if "test_acc" in info else self._accuracy("test")
            info.update(final_val_acc=report.val_acc, final_test_acc=test_acc,
                        n_fossilized=sum(s.stage == SeedStage.FOSSILIZED for s in self._slots))
            if self._twin:  # the no-growth world's test accuracy (None if the twin diverged)
                info["final_twin_test_acc"] = self._twin_accuracy("test", test_acc)
        info["fault"] = self._fault  # what raised in this step's computation (None: nothing)
        self._info = info
        return self._obs.copy(), breakdown.total, terminated, False, info

    # -- internals --------------------------------------------------------------------------------
    def _check_action(self, action: Any) -> int:
        if isinstance(action, np.ndarray) and action.shape == (1,):
            action = action[0]
        if isinstance(action, (bool, np.bool_)) or not self.action_space.contains(action):
            raise InvalidAction(f"expected an integer action in [0, {self.codec.n}), "
                                f"actual: {action!r}")
        return int(action)

    def _train_and_validate(self) -> tuple[EpochReport, bool]:
        """Train one epoch, validate with counterfactuals, ask the governor.

        An exception raised by the model's own computation (a seed whose forward raises, a
        numerical error) is a fault like a NaN loss: a warning, then a panic (rollback or terminal
        step), never an exception for the agent.
        """
        trainer = self._trainer
        assert trainer is not None
        try:
            train_loss, train_acc, ratios, violations = trainer.train_epoch()
            report = self._validate_only(train_loss, train_acc, ratios, violations)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            report = self._fault_report(exc)
        panic = False
        if self._cfg.governor.enabled or not np.isfinite(report.val_loss):
            self._governor, verdict = check_loss(self._governor, report.val_loss,
                                                 self.task_spec.n_classes, self._cfg.governor)
            panic = verdict.panic
        return report, panic

    def _validate_only(self, train_loss: float | None = None, train_acc: float | None = None,
                       ratios: Sequence[float] | None = None,
                       violations: Sequence[int] | None = None) -> EpochReport:
        trainer = self._trainer
        assert trainer is not None
        cf_slots = [k for k, s in enumerate(trainer.model.slots)
                    if s.is_active and s.mode == "blend" and s.alpha > 0.0]
        val_loss, val_acc, contributions = trainer.validate(cf_slots)
        if train_loss is None:  # after a rollback: describe the restored model
            train_loss, train_acc, _ = trainer.validate((), "train")
        n = self._cfg.n_slots
        ratios = ratios or [0.0] * n
        violations = violations or [0] * n
        slots = tuple(SlotMetrics(ratios[k], violations[k], contributions.get(k)) for k in range(n))
        return EpochReport(train_loss, train_acc, val_loss, val_acc, slots)  # type: ignore[arg-type]

    def _fault_report(self, exc: Exception) -> EpochReport:
        """The report of an epoch whose computation raised ``exc``: NaN losses, accuracy 0."""
        self._fault = f"{type(exc).__name__}: {exc}"
        gym.logger.warn(f"epoch {self._epoch} raised {self._fault}; treated as a divergence "
                        "(governor rollback, or a terminal step)")
        nan = float("nan")
        slots = tuple(SlotMetrics() for _ in range(self._cfg.n_slots))
        return EpochReport(nan, 0.0, nan, 0.0, slots)

    def _accuracy(self, split: str) -> float:
        """Accuracy of the model on ``split``; 0 if the model cannot even compute it."""
        try:
            return self.trainer.evaluate(split)[1]
        except Exception as exc:  # noqa: BLE001 - a broken model scores 0, the agent sees no error
            self._fault_report(exc)
            return 0.0

    def _twin_accuracy(self, split: str, model_acc: float) -> float | None:
        """The no-growth world's accuracy on ``split``: the twin's, the model's own while no
        seed has blended (the model *is* the seedless host), None once the twin has diverged.
        """  # noqa: D205
        trainer = self.trainer
        twin = trainer.twin_validate(split)
        if twin is not None and not np.isfinite(twin[0]):
            trainer.drop_twin()  # a diverged baseline can neither pay nor charge any more
            twin = None
        if twin is not None:
            return twin[1]
        return model_acc if trainer.twin_enabled else None

    def _measure_value_added(self, report: EpochReport) -> None:
        """Validate the seedless twin and update V (contribution mode only)."""
        if self._twin:
            self._twin_val_acc = self._twin_accuracy("val", report.val_acc)
            self._value_added = value_added(report.val_acc, self._twin_val_acc,
                                            self._value_added)

    def _set_slot(self, k: int, slot: SlotState) -> None:
        """Replace slot ``k``'s record and make the torch slot match it."""
        self._slots = self._slots[:k] + (slot,) + self._slots[k + 1:]
        self._sync_trainer(k)

    def _sync_trainer(self, k: int) -> None:
        """Make the torch slot match the lifecycle record of slot ``k``."""
        trainer = self._trainer
        assert trainer is not None
        slot = self._slots[k]
        torch_slot = trainer.model.slots[k]
        if slot.stage not in MODULE_STAGES:
            if torch_slot.seed is not None:
                trainer.cull(k)
            return
        if slot.stage == SeedStage.TRAINING:
            trainer.configure(k, "incubate", 0.0, isolate=True)
        elif slot.stage == SeedStage.FOSSILIZED:
            trainer.configure(k, "blend", slot.alpha.alpha, isolate=False)
        elif slot.stage in (SeedStage.BLENDING, SeedStage.PROBATIONARY):
            # CNN: isolated until fossilised; transformer: the host co-adapts from BLENDING on.
            trainer.configure(k, "blend", slot.alpha.alpha,
                              isolate=self.task_spec.topology == "cnn")
        else:  # GERMINATED never survives a step
            trainer.configure(k, "off", 0.0, isolate=True)

    def _snapshot(self) -> None:
        """Keep the governor's last good state: the whole model and the slots' records."""
        assert self._trainer is not None
        self._trainer.snapshot()
        self._good_slots = self._slots

    def _rollback(self) -> list[LifecycleEvent]:
        """Go back to the last good state; returns the lifecycle events of the slots it changed.

        The model (host, every seed it held, optimisers) is restored as it was; the twin is not. A slot whose
        good state held a seed gets that seed's record back (stage, alpha, age); a live seed
        germinated since is culled (cause ``rollback``). Time does not go back: the epoch count,
        the data order, the episode RNG and the slots' cooldowns keep running. The governor's
        consecutive-spike counter starts again from zero.
        """
        trainer = self._trainer
        assert trainer is not None
        trainer.rollback()
        events: list[LifecycleEvent] = []
        for k, (now, good) in enumerate(zip(self._slots, self._good_slots, strict=True)):
            if good.stage in MODULE_STAGES:
                if (now.seed_id, now.stage) != (good.seed_id, good.stage):
                    events.append(LifecycleEvent(k, good.seed_id, good.blueprint, now.stage,
                                                 good.stage, "rollback"))
                self._set_slot(k, good)
            elif now.stage in LIVE_STAGES:
                slot, ev = cull(now, "rollback")
                events += ev
                self._set_slot(k, slot)
        self._governor = replace(self._governor, spikes=0)
        return events

    def _update_tracker(self, report: EpochReport) -> None:
        cfg = self._cfg
        self._tracker = update_tracker(
            self._tracker, report.val_loss, report.val_acc,
            plateau_threshold=cfg.plateau_threshold,
            stabilization_threshold=cfg.stabilization_threshold,
            stabilization_epochs=cfg.stabilization_epochs)

    def _compute_mask(self) -> np.ndarray:
        if self._done:
            mask = np.zeros(self.codec.n, dtype=bool)
            mask[0] = True
            return mask
        return legal_action_mask(self.codec, self._slots, self._tracker, self._epoch,
                                 self._cfg, self._costs, self.trainer.host_params)

    def _encode(self) -> np.ndarray:
        cfg = self._cfg
        return encode_observation(
            report=self._report, tracker=self._tracker, slots=self._slots,
            blueprints=self.blueprints, epoch=min(self._epoch, cfg.max_epochs),
            max_epochs=cfg.max_epochs, n_classes=self.task_spec.n_classes,
            facts=self._facts,
            germination_open=germination_gate_open(self._tracker, self._epoch, cfg),
            low=self._low, high=self._high)

    def _base_info(self) -> dict[str, Any]:
        r = self._report
        slots = self._slots
        info: dict[str, Any] = {
            "epoch": self._epoch,
            "train_loss": r.train_loss, "train_acc": r.train_acc,
            "val_loss": r.val_loss, "val_acc": r.val_acc,
            **({"val_perplexity": _perplexity(r.val_loss)}
               if self.task_spec.topology == "transformer" else {}),
            "stages": [s.stage.name for s in slots],
            "blueprints": [s.blueprint for s in slots],
            "seed_ids": [s.seed_id for s in slots],
            "alphas": [s.alpha.alpha for s in slots],
            "counterfactuals": [s.counterfactual for s in slots],
            "gradient_ratios": [s.gradient_ratio for s in slots],
            "params_added": added_parameters(slots),
            "host_params": self.trainer.host_params,
            "action_mask": self._mask.copy(),
            "instance": None if self._instance is None else self._instance.name,
        }
        if self._twin:
            info.update(value_added=self._value_added, twin_val_acc=self._twin_val_acc,
                        value_added_by_slot=split_value_added(self._value_added, slots))
        if self._cfg.report_test_acc:  # reporting only: nothing observed or paid depends on it
            info["test_acc"] = self._accuracy("test")
        return info

    # -- rendering / closing ----------------------------------------------------------------------
    def render(self) -> str | np.ndarray | None:
        """Render the episode so far.

        ``ansi``: a short text table of the epoch and every slot. ``rgb_array``: a uint8 image,
        one 4-pixel column per epoch of the budget: validation accuracy as a bar on top, then one
        strip per slot coloured by the stage it trained in that epoch (see :data:`STAGE_COLOURS`).
        """
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        if self.render_mode != "ansi":
            gym.logger.warn(f"render() with render_mode={self.render_mode!r} draws nothing; "
                            "use render_mode='ansi' or 'rgb_array'")
            return None
        if self._trainer is None:
            return "EsperEnv (not reset)\n"
        r = self._report
        lines = [f"epoch {self._epoch}/{self._cfg.max_epochs}  "
                 f"val_acc {r.val_acc:6.2f}  val_loss {r.val_loss:.4f}  "
                 f"params +{added_parameters(self._slots)}/{self._trainer.host_params}"]
        for s in self._slots:
            c = "-" if s.counterfactual is None else f"{s.counterfactual:+.2f}pp"
            lines.append(f"  slot{s.index}: {s.stage.name:<12} {s.blueprint or '-':<10} "
                         f"alpha {s.alpha.alpha:.2f}  age {s.seed_age:2d}  cf {c}")
        return "\n".join(lines) + "\n"

    def _render_rgb(self) -> np.ndarray:
        cfg = self._cfg
        col, bar_h, strip_h = 4, 48, 8
        img = np.full((bar_h + strip_h * cfg.n_slots, col * cfg.max_epochs, 3), 255, np.uint8)
        for e, (acc, stages) in enumerate(self._curve):
            x = slice(e * col, (e + 1) * col - 1)
            h = int(round(bar_h * min(max(acc, 0.0), 100.0) / 100.0))
            img[bar_h - h:bar_h, x] = (60, 60, 60)
            for k, stage in enumerate(stages):
                img[bar_h + k * strip_h: bar_h + (k + 1) * strip_h - 1, x] = STAGE_COLOURS[stage]
        return img

    def close(self) -> None:
        """Release the model and data (safe to call twice)."""
        self._trainer = None
        self._curve = []

    # -- snapshot, restore, fork, copy, pickle -------------------------------------------------------
    def snapshot(self) -> EnvSnapshot:
        """Freeze the episode as it is now (see :mod:`esper_env.snapshot` for what it holds).

        ``restore(snap)`` followed by the same actions gives the identical continuation; the
        snapshot is independent of this env (later steps do not change it) and pickles.
        """
        if self._trainer is None:
            raise ResetNeeded("call reset() before snapshot()")
        state = {name: getattr(self, name) for name in _EPISODE_FIELDS}
        return EnvSnapshot(SNAPSHOT_FORMAT, __version__, self.config, self._epoch,
                           copy.deepcopy(state))

    def restore(self, snap: EnvSnapshot) -> None:
        """Put this env at the point ``snap`` was taken (a copy: ``snap`` can be restored again).

        The env must have been built with the same config. A malformed snapshot, one of another
        format or config, raises :class:`~esper_env.snapshot.SnapshotError` and changes nothing.
        """
        self._check_snapshot(snap)
        self._adopt(copy.deepcopy(dict(snap.state)))

    def fork(self) -> EsperEnv:
        """An independent env at the same point of the same episode (same config, render mode).

        Stepping either does not affect the other; the same actions give the same results. The
        dataset's tensors are shared (never changed in place), everything else is copied.
        """
        return copy.deepcopy(self)

    def _check_snapshot(self, snap: object) -> None:
        if not isinstance(snap, EnvSnapshot):
            raise SnapshotError(f"restore() needs an EnvSnapshot from env.snapshot(); "
                                f"got {type(snap).__name__}")
        if snap.format != SNAPSHOT_FORMAT:
            raise SnapshotError(f"snapshot format {snap.format!r} is not supported; allowed: "
                                f"{SNAPSHOT_FORMAT} (made by esper_env {snap.env_version})")
        if snap.config != self.config:
            raise SnapshotError("the snapshot was taken in an env with another config; build the env "
                                "with snap.config to restore it: " + _config_diff(snap.config, self.config))
        state = snap.state
        if not isinstance(state, dict) or set(state) != set(_EPISODE_FIELDS):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise SnapshotError(f"malformed snapshot: state fields {got}; expected "
                                f"{sorted(_EPISODE_FIELDS)}")
        checks = (("_trainer", Trainer), ("_np_random", np.random.Generator), ("_epoch", int),
                  ("_slots", tuple), ("_good_slots", tuple), ("_mask", np.ndarray),
                  ("_obs", np.ndarray), ("_info", dict))
        for name, kind in checks:
            if not isinstance(state[name], kind):
                raise SnapshotError(f"malformed snapshot: {name} is a {type(state[name]).__name__}, "
                                    f"expected {kind.__name__}")
        n = state["_cfg"].n_slots if isinstance(state["_cfg"], EsperConfig) else -1
        if n != self.config.n_slots or len(state["_slots"]) != n or \
                not all(isinstance(x, SlotState) for x in state["_slots"]):
            raise SnapshotError(f"malformed snapshot: expected {self.config.n_slots} slot records")
        if state["_mask"].shape != (self.codec.n,) or state["_obs"].shape != self._low.shape:
            raise SnapshotError("malformed snapshot: mask or observation of the wrong shape for "
                                "this env")
        if snap.epoch != state["_epoch"]:
            raise SnapshotError(f"malformed snapshot: epoch {snap.epoch} != state epoch "
                                f"{state['_epoch']}")

    def _adopt(self, state: dict[str, Any]) -> None:
        for name in _EPISODE_FIELDS:
            setattr(self, name, state[name])

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the config, and mid-episode a snapshot (the dataset as its recipe)."""
        state: dict[str, Any] = {"config": self.config, "render_mode": self.render_mode,
                                 "spec": getattr(self, "spec", None)}
        if self._trainer is not None:
            state["snapshot"] = self.snapshot()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:  # noqa: D105
        self.__init__(state["config"], render_mode=state["render_mode"])  # type: ignore[misc]
        if state.get("spec") is not None:
            self.spec = state["spec"]
        snap = state.get("snapshot")
        if snap is not None:
            self._check_snapshot(snap)
            self._adopt(dict(snap.state))  # already this env's own copy

    def __deepcopy__(self, memo: dict[int, Any]) -> EsperEnv:  # noqa: D105
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        state = self.__getstate__()
        state["spec"] = copy.deepcopy(state["spec"], memo)
        new.__setstate__(state)
        return new


def _config_diff(a: EsperConfig, b: EsperConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    diff = [f"{k}: snapshot {da.get(k)!r}, env {db.get(k)!r}" for k in sorted(set(da) | set(db))
            if da.get(k) != db.get(k)]
    return "; ".join(diff) or "(configs differ)"
