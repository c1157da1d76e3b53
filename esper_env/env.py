"""EsperEnv: the Gymnasium environment. Glue only: it connects the pure core and the torch layer.

An episode is an :class:`~esper_env.core.episode.EpisodeState` record advanced by the pure
transition of :mod:`esper_env.core.episode`, and a :class:`~esper_env.nn.trainer.Trainer` that
does the computing it asks for; this module builds both, runs them in order and turns the
outcome into Gymnasium's ``(obs, reward, terminated, truncated, info)``.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import InvalidAction, ResetNeeded

from esper_env.config import EsperConfig, from_kwargs
from esper_env.core import episode as ep
from esper_env.core.episode import EpisodeParams, EpisodeSetup, EpisodeState
from esper_env.core.instances import (
    Instance,
    InstanceSet,
    episode_config,
    load_instance_set,
    pinned_instance,
    resolve_instance_set,
)
from esper_env.core.observation import observation_bounds, observation_features
from esper_env.core.state import SlotState
from esper_env.core.view import observe, reset_info, step_info
from esper_env.nn.blueprints import available_blueprints
from esper_env.nn.data import load_config_task
from esper_env.nn.threads import own_threads
from esper_env.nn.trainer import Trainer, check_device
from esper_env.render import STAGE_COLOURS, render_rgb, render_text
from esper_env.snapshot import EpisodeSnapshots
from esper_env.tasks import task_spec

__all__ = ["STAGE_COLOURS", "EsperEnv"]


class EsperEnv(EpisodeSnapshots, gym.Env[np.ndarray, np.int64]):
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

    Chosen with ``reward_mode``, in pp; every term is in ``info["reward_terms"]`` (weights in
    :class:`~esper_env.config.RewardConfig`; the docs' Rewards page gives the reasons and the
    integrity measurements).

    * ``contribution`` (default): what growth added over the *no-growth world*, a seedless twin of
      the host (same initial weights and mini-batches, forked exactly when a seed is first blended
      in; not observed). ``value_added`` is the change of ``V = val_acc - twin_val_acc``
      (``info["value_added"]``; it telescopes to the final V, so no growth earns exactly 0),
      ``rent`` the change of ``rent_pp_per_doubling * log2(1 + added/host)`` (telescoping, refunded
      on a cull), ``stage_shaping`` a potential-based term (``0.3 * (0.99 Phi(s') - Phi(s))``,
      ``Phi = 0`` at termination) and ``probation_wait`` (-3^(e-2) for a PROBATIONARY seed left
      undecided e >= 2 epochs while FOSSILIZE or CULL was legal). ``info["value_added_by_slot"]``
      splits V across the blended seeds by their counterfactuals.
    * ``delta``: ``accuracy_delta`` (val-accuracy change) and the same ``rent``.
    * ``sparse``: 0 until the last step, then ``final_accuracy`` and ``rent``.

    In every mode: ``illegal_action`` (-0.1), ``rollback`` (-10) and ``diverged`` (-10).

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
    the model's computation, named in ``info["fault"]``) rolls back to the governor's checkpoint
    (taken at reset, every ``governor.snapshot_every`` epochs and after a fossilization): the
    whole model with its optimisers and the records of the slots whose seeds it held; a seed
    germinated since is culled (cause ``rollback``). It costs the ``rollback`` penalty, sets
    ``info["rollback"]``, and the episode, its epoch count, data order and cooldowns go on (the
    twin is not rolled back: nothing panicked in the no-growth world). The last ``info`` holds
    ``final_val_acc``, ``final_test_acc`` (the held-out test split, reported only),
    ``n_fossilized`` and, in ``contribution`` mode, ``final_twin_test_acc`` (None if the twin
    itself diverged, after which V is frozen).

    ## Arguments

    ``config`` (an :class:`~esper_env.config.EsperConfig`), its sections (``task``, ``host``,
    ``optimiser``, ``lifecycle``, ``reward``, ``governor``, ``runtime``: a dataclass or a dict
    each), ``render_mode`` and every flat keyword of :data:`~esper_env.config.FLAT_KEYWORDS`
    (applied on top of the sections). The most used:

    | keyword | section | default | meaning |
    |---------|---------|---------|---------|
    | task | task | "digits" | "digits", "synthetic", "cifar10" (needs ``data_root``) or "tinytext" (a transformer) |
    | max_epochs | task | 25 | epoch budget |
    | instance_set, instance_split | task | None, "train" | a shipped set's name (``"digits-mix"``), a JSON file or a list of instance records, and its split: each ``reset`` draws an instance (see *Instance sets*) |
    | n_slots | host | 1 | seed slots (at most the host's injection points: 3 in the CNN hosts, n_layer in the transformer) |
    | reward_mode | reward | "contribution" | "contribution", "delta", "sparse" |
    | blend, alpha_schedule | lifecycle | "add", "sigmoid" | blend operator, alpha ramp |
    | germination_gate, min_cull_age, embargo_epochs | lifecycle | True, 10, 3 | the germination gate, seed age before CULL, epochs EMBARGOED |
    | gates | lifecycle | defaults | G0-G5 thresholds (dataclass or dict) |
    | device, report_test_acc | runtime | "cpu", False | torch device; the test accuracy in every step's ``info["test_acc"]`` (reporting only) |
    | render_mode | - | None | "ansi" (text) or "rgb_array" (accuracy bars + stage strips per slot) |

    >>> import gymnasium as gym, esper_env
    >>> env = gym.make("Esper-v0", task="synthetic", max_epochs=3)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(0)
    >>> info["stages"]
    ['DORMANT']

    Determinism: on CPU (same torch build and thread count), ``reset(seed=s)`` and the same actions
    give identical observations, rewards and infos; the env never touches the global ``random``,
    ``numpy`` or ``torch`` RNGs (GPU runs: reproducible in distribution only). ``snapshot()``,
    ``restore(snap)`` and ``fork()`` freeze, restore and branch an episode, as do ``copy.deepcopy``
    and ``pickle`` of a mid-episode env (the same actions then give the identical continuation).

    ## Version History

    * v0 (unreleased; ``CHANGELOG.md`` has every change by name). Before the first release:
      one ``EpisodeState`` record and a pure transition (:mod:`esper_env.core.episode`,
      ``env.state``; episode version 1 unchanged), a sectioned config (flat keywords still work),
      a task registry (:mod:`esper_env.tasks`) and snapshots of format 2; the ``contribution``
      reward pays value added over a seedless twin (the anchor's attribution paid seeds that lowered
      final accuracy) and rent telescopes in every mode; G3 needs a positive counterfactual and
      FOSSILIZE is masked unless G5 passes; instance sets, ``train_fraction``, ``label_noise`` and
      ``param_budget`` (29 global + 24 per-slot features); ``snapshot``/``restore``/``fork`` and
      mid-episode pickles, faults in ``info["fault"]``; the ``cifar10`` and ``tinytext`` tasks,
      ``grad_clip``, ``seed_checkpointing`` and ``channels_last``.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, config: EsperConfig | None = None, render_mode: str | None = None,
                 **kwargs: Any) -> None:
        self.config = cfg = resolve_instance_set(from_kwargs(config, **kwargs), kwargs)
        self.render_mode = render_mode  # any is accepted (gym.make warns); render() may warn
        task = cfg.task
        self.task_spec = task_spec(task.name)
        self.instance_set: InstanceSet | None = None if task.instance_set is None else \
            load_instance_set(task.instance_set, task.name, cfg.host.n_slots)
        self.instances: tuple[Instance, ...] = () if self.instance_set is None else \
            self.instance_set.split(task.instance_split)
        # every instance's episode config is checked here; the first is the env's until reset
        self._cfg = [self._episode_config(inst) for inst in self.instances or (None,)][0]
        check_device(cfg.runtime.device)
        if task.name == "cifar10":  # a missing or malformed folder fails here, not at reset
            load_config_task(cfg, 0, device="cpu", train_subset=1)
        self.blueprints = available_blueprints(self.task_spec.topology)
        self._params = self._episode_params(self._cfg)
        self.codec = self._params.codec
        self.action_space = spaces.Discrete(self.codec.n)
        self.features = observation_features(cfg.host.n_slots, self.blueprints)
        self._low, self._high = observation_bounds(self.features)
        self.observation_space = spaces.Box(self._low, self._high, dtype=np.float32)
        self._trainer: Trainer | None = None
        self._state: EpisodeState | None = None
        self._obs = np.zeros(self._low.shape, np.float32)
        self._info: dict[str, Any] = {}
        self._warned_done = False

    def _episode_config(self, instance: Instance | None) -> EsperConfig:
        """The config of an episode on ``instance`` (the env's own without one), checked."""
        settings = self.instance_set.settings if self.instance_set is not None else None
        return episode_config(self.config, instance, settings,
                              lambda cfg: self.task_spec.sized(cfg.host).n_injection_points)

    def _episode_params(self, cfg: EsperConfig) -> EpisodeParams:
        return EpisodeParams.from_config(cfg, self.blueprints, self.task_spec.n_classes,
                                         self.task_spec.is_transformer)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Observation feature names in vector order."""
        return tuple(f.name for f in self.features)

    @property
    def action_names(self) -> tuple[str, ...]:
        """Action names in index order."""
        return self.codec.names

    @property
    def state(self) -> EpisodeState:
        """The episode's state record (immutable); raises ResetNeeded before ``reset``."""
        if self._state is None or self._trainer is None:
            raise ResetNeeded("call reset() first: no episode is running")
        return self._state

    @property
    def slots(self) -> tuple[SlotState, ...]:
        """The slots' lifecycle records (read-only); raises ResetNeeded before ``reset``."""
        return self.state.slots

    @property
    def trainer(self) -> Trainer:
        """The episode's trainer (model, optimisers); raises ResetNeeded before ``reset``."""
        self.state  # noqa: B018 - raises before reset
        assert self._trainer is not None
        return self._trainer

    def action_masks(self) -> np.ndarray:
        """Boolean mask of the legal actions (sb3-contrib's MaskablePPO convention).

        Cast with ``.astype(np.int8)`` for ``action_space.sample(mask=...)``.
        """
        return np.array(self.state.mask, dtype=bool)

    # -- reset and step ---------------------------------------------------------------------------
    @own_threads
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new training run; trains and validates the first epoch.

        With an instance set the episode's instance is drawn from the split with the episode's
        RNG (so the same seed gives the same instance); ``options={"instance": k}`` pins the k-th
        instance of the split, ``options={"instance": record}`` any instance record.
        """
        instance = pinned_instance(options, self.instances, self.config.task.instance_split)
        if instance is not None:  # bad options fail before anything changes
            self._episode_config(instance)
        super().reset(seed=seed)
        if self.instances:
            drawn = self.instances[int(self.np_random.integers(len(self.instances)))]
            instance = instance if instance is not None else drawn
        cfg = self._episode_config(instance)
        p = self._episode_params(cfg)
        episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        seeds = ep.episode_seeds(episode_seed)
        data = load_config_task(cfg, episode_seed)
        trainer = Trainer(cfg, data, seeds.model, seeds.data, twin=p.twin)
        setup = EpisodeSetup(seeds.module_base, trainer.facts(), trainer.seed_costs(self.blueprints),
                             instance)
        request = ep.first_request(p, setup)  # static seeds over the budget fail here
        self._cfg, self._params, self._trainer = cfg, p, trainer
        self._warned_done = False
        report = trainer.run_epoch(request)
        self._warn_fault(report.fault, 1)
        self._state, outcome = ep.start_episode(setup, report, p)
        test = trainer.settle(outcome.settle)
        self._warn_fault(test.fault, 1)
        self._obs = observe(self._state, p, self._low, self._high)
        self._info = reset_info(self._state, p, outcome, test, test.fault or report.fault)
        return self._obs.copy(), self._info

    @own_threads
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action``, train one epoch, validate, advance the lifecycle."""
        state = self.state
        index = self._check_action(action)
        if state.done:
            if not self._warned_done:
                gym.logger.warn("step() called after the episode terminated; call reset(). "
                                "Returning the terminal observation.")
                self._warned_done = True
            return self._obs.copy(), 0.0, True, False, copy.deepcopy(self._info)
        p, trainer = self._params, self.trainer
        state, pending = ep.apply_action(state, index, p)
        report = trainer.run_epoch(pending.request)
        faults = [self._warn_fault(report.fault, state.epoch)]
        state, outcome = ep.after_epoch(state, pending, report, p)
        if outcome.restore is not None:  # the governor rolls back to its checkpoint
            report = trainer.roll_back(outcome.restore)
            faults.append(self._warn_fault(report.fault, state.epoch))
            state, outcome = ep.after_restore(state, outcome, report, p)
        test = trainer.settle(outcome.settle)
        faults.append(self._warn_fault(test.fault, state.epoch))
        self._state = state
        self._obs = observe(state, p, self._low, self._high)
        fault = next((f for f in reversed(faults) if f is not None), None)
        self._info = step_info(state, p, outcome, test, fault)
        assert outcome.reward is not None
        return self._obs.copy(), outcome.reward.total, outcome.terminated, False, self._info

    def _check_action(self, action: Any) -> int:
        if isinstance(action, np.ndarray) and action.shape == (1,):
            action = action[0]
        if isinstance(action, (bool, np.bool_)) or not self.action_space.contains(action):
            raise InvalidAction(f"expected an integer action in [0, {self.codec.n}), "
                                f"actual: {action!r}")
        return int(action)

    @staticmethod
    def _warn_fault(fault: str | None, epoch: int) -> str | None:
        if fault is not None:
            gym.logger.warn(f"epoch {epoch} raised {fault}; treated as a divergence "
                            "(governor rollback, or a terminal step)")
        return fault

    def render(self) -> str | np.ndarray | None:
        """``ansi``: a text table of the epoch and every slot; ``rgb_array``: one 4-pixel column
        per epoch, validation accuracy as a bar over one strip per slot in its stage's colour
        (:data:`STAGE_COLOURS`).
        """  # noqa: D205
        if self.render_mode == "rgb_array":
            curve = () if self._state is None else self._state.curve
            return render_rgb(curve, self._params.n_slots, self._params.max_epochs)
        if self.render_mode != "ansi":
            gym.logger.warn(f"render() with render_mode={self.render_mode!r} draws nothing; "
                            "use render_mode='ansi' or 'rgb_array'")
            return None
        return render_text(self._state if self._trainer is not None else None, self._params.max_epochs)

    def close(self) -> None:
        """Release the model and data (safe to call twice)."""
        self._trainer = None
        self._state = None
