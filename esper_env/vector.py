"""EsperVectorEnv: K episodes of Esper-v0 in one process, trained as one stacked computation.

``gym.make_vec("Esper-v0", num_envs=K, vectorization_mode="vector_entry_point", **kwargs)``
builds it. Every episode (lane) follows the shared pure transition of
:mod:`esper_env.core.episode` with its own state, seed and data order; the torch side is one
:class:`~esper_env.nn.batch_trainer.BatchedTrainer` (its module docstring says what it can run).
With an instance set every lane draws its own instance at each reset, as ``EsperEnv.reset`` draws
it (host widths, slot position, learning rate, training subset, label noise, epoch and parameter
budgets); lanes whose episodes end at other times are reset alone.

Gymnasium's autoreset modes NEXT_STEP (the default), SAME_STEP and DISABLED are supported; infos
follow Gymnasium's vector layout (arrays with ``_key`` masks; ``final_obs``/``final_info`` in
SAME_STEP). ``reset(seed=s)`` seeds lane ``i`` with ``s + i``; ``options={"instance": ...}`` pins
instances (one for all lanes or one per lane) and, in DISABLED mode, ``options={"reset_mask":
...}`` resets only some lanes: the interface of the evaluation work queue
(:func:`agents.rollout.run_queue`). The same seeds, K and actions give identical results on the
CPU. A lane's results equal the single env's on the same seed within floating-point tolerance
(``tests/env/test_vector_env.py``).

Not supported: snapshots, forks, pickles and deep copies (refused with an error that says why and
what to use instead). A K too large for the device's free memory is refused at construction,
naming K and the memory it needs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from esper_env.config import EsperConfig, from_kwargs
from esper_env.core import episode as ep
from esper_env.core.episode import EpisodeSetup, EpisodeState
from esper_env.core.instances import pinned_instance, resolve_instance_set
from esper_env.core.view import observe, reset_info, step_info
from esper_env.env import EsperEnv
from esper_env.errors import ConfigError
from esper_env.nn.allocator import keep_freed_memory
from esper_env.nn.batch_trainer import BatchedTrainer, GraphBackend, check_batchable
from esper_env.nn.data import load_config_task
from esper_env.nn.threads import own_threads


class EsperVectorEnv(VectorEnv):
    """K Esper-v0 episodes as one batched computation (see the module docstring).

    Args:
        num_envs: K, the number of episodes stepped at once.
        config: an :class:`~esper_env.config.EsperConfig`; keywords as for ``gym.make``.
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default) or ``SAME_STEP`` (or their names).
        tune_allocator: on the CPU, keep freed memory in the process for reuse
            (:func:`esper_env.nn.allocator.keep_freed_memory`: process-wide, glibc only; it
            changes no result and makes a step about a fifth faster at K = 64). False leaves the
            allocator as it is.
        static_shapes: mini-batch steps of fixed shapes (every seed group holds K rows, empty
            ones masked; see :class:`~esper_env.nn.batch_trainer.BatchedTrainer`). Same
            episodes within float rounding; slower on the CPU.
        cuda_graphs: capture each mini-batch step as a CUDA graph and replay it (implies
            ``static_shapes``; needs ``device="cuda"``). Off by default: not yet measured on a GPU.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int, config: EsperConfig | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 tune_allocator: bool = True, static_shapes: bool = False,
                 cuda_graphs: bool | GraphBackend = False, **kwargs: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ConfigError(f"num_envs={num_envs!r} is invalid; allowed: an integer >= 1")
        kwargs.pop("render_mode", None)
        mode = autoreset_mode
        if isinstance(mode, str):  # a value ("SameStep") or a name ("SAME_STEP", "same_step")
            by_text = {m.value: m for m in AutoresetMode} | {m.name: m for m in AutoresetMode}
            mode = by_text.get(mode, by_text.get(mode.upper(), mode))
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED):
            raise ConfigError(f"autoreset_mode={mode!r} is invalid; allowed: NEXT_STEP, "
                              "SAME_STEP, DISABLED")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.config = cfg = resolve_instance_set(from_kwargs(config, **kwargs), kwargs)
        check_batchable(cfg)
        self.template = EsperEnv(cfg)  # spaces, codec and episode parameters; it never trains
        self.num_envs = k = num_envs
        self.params = self.template._params
        self.instances = self.template.instances
        """The instance split's instances (empty without an instance set)."""
        self._episode_cfgs = [self.template._episode_config(inst) for inst in self.instances]
        self._episode_params = [self.template._episode_params(c) for c in self._episode_cfgs]
        self._lane_params = [self.params] * k
        self.single_observation_space = self.template.observation_space
        self.single_action_space = self.template.action_space
        self.observation_space = batch_space(self.single_observation_space, k)
        self.action_space = batch_space(self.single_action_space, k)
        self._low, self._high = self.template._low, self.template._high
        whole = replace(cfg, task=replace(cfg.task, train_fraction=1.0, label_noise=0.0))
        data = load_config_task(whole, 0)  # lanes draw their own subsets and noisy labels
        if tune_allocator and data.train_x.device.type == "cpu":
            keep_freed_memory()
        self.trainer = BatchedTrainer(self.template._cfg, data, k, twin=self.params.twin,
                                      configs=self._episode_cfgs or None,
                                      static_shapes=static_shapes, cuda_graphs=cuda_graphs)
        self._rngs: list[np.random.Generator | None] = [None] * k
        self._states: list[EpisodeState | None] = [None] * k
        self._obs = np.zeros((k, *self._low.shape), np.float32)
        self._needs_reset = np.zeros(k, bool)

    # -- Gymnasium's VectorEnv ------------------------------------------------------------------
    @own_threads
    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every lane's episode (lane ``i`` seeded ``seed + i``, or ``seed[i]``).

        ``options``: ``{"instance": spec}`` pins an instance of the split for every lane (an
        index or a record, as ``EsperEnv.reset`` takes it), ``{"instance": [spec_0, ...]}`` one
        per lane (None: drawn); in the DISABLED autoreset mode ``{"reset_mask": mask}`` resets
        only the lanes where ``mask`` is True (the others go on; a lane never reset waits).
        """
        k = self.num_envs
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        pins_spec = options.pop("instance", None)
        if options:
            raise ConfigError(f"options keys {sorted(options)} are not supported; allowed: "
                              "'instance', 'reset_mask'")
        if mask is None:
            lanes = list(range(k))
        else:
            if self.metadata["autoreset_mode"] != AutoresetMode.DISABLED:
                raise ConfigError("options['reset_mask'] needs autoreset_mode=DISABLED; the "
                                  f"autoreset mode is {self.metadata['autoreset_mode'].name}")
            m = np.asarray(mask, dtype=bool).reshape(-1)
            if m.shape != (k,):
                raise ConfigError(f"reset_mask has shape {np.shape(mask)}; allowed: ({k},)")
            lanes = [int(i) for i in np.flatnonzero(m)]
        seeds = [None if seed is None else seed + i for i in range(k)] \
            if seed is None or isinstance(seed, int) else list(seed)
        if len(seeds) != k:
            raise ConfigError(f"seed has {len(seeds)} entries; allowed: {k} (one per lane)")
        pins = self._pins(pins_spec, lanes)  # checked before any lane changes
        for i in lanes:
            if seeds[i] is not None or self._rngs[i] is None:
                self._rngs[i] = seeding.np_random(seeds[i])[0]
        infos: dict[str, Any] = {}
        for i, info in self._run(lanes, [None] * k, pins).items():
            infos = self._add_info(infos, info, i)
        self._needs_reset[lanes] = False
        return self._obs.copy(), infos

    def _pins(self, spec: Any, lanes: list[int]) -> dict[int, tuple[Any, Any, Any]]:
        """Lane -> (instance, config, params) of the instances ``spec`` pins, all checked."""
        if spec is None:
            return {}
        if isinstance(spec, (list, tuple)):
            if len(spec) != self.num_envs:
                raise ConfigError(f"options['instance'] has {len(spec)} entries; allowed: "
                                  f"{self.num_envs} (one per lane) or one instance for all")
            per_lane = list(spec)
        else:
            per_lane = [spec] * self.num_envs
        split = self.config.task.instance_split
        pins = {}
        for i in lanes:
            inst = pinned_instance({"instance": per_lane[i]}, self.instances, split) \
                if per_lane[i] is not None else None
            if inst is None:
                continue
            j = self.instances.index(inst) if inst in self.instances else None
            cfg = self._episode_cfgs[j] if j is not None else self.template._episode_config(inst)
            self.trainer.check_fits(cfg)
            params = self._episode_params[j] if j is not None else \
                self.template._episode_params(cfg)
            pins[i] = (inst, cfg, params)
        return pins

    @own_threads
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                         dict[str, Any]]:
        """Step every lane; NEXT_STEP resets the lanes that ended at the previous step instead,
        SAME_STEP in this step. DISABLED leaves them (and lanes never reset) waiting until
        ``reset(options={"reset_mask": ...})``: a waiting lane ignores its action and reports
        reward 0, not terminated, and no info.
        """  # noqa: D205
        k = self.num_envs
        disabled = self.metadata["autoreset_mode"] == AutoresetMode.DISABLED
        if all(s is None for s in self._states) or (
                not disabled and any(s is None for s in self._states)):
            from gymnasium.error import ResetNeeded

            raise ResetNeeded("call reset() before step()")
        acts = np.asarray(actions).reshape(-1)
        if acts.shape != (k,) or not all(self.single_action_space.contains(int(a)) for a in acts):
            from gymnasium.error import InvalidAction

            raise InvalidAction(f"expected {k} integer actions in [0, {self.params.codec.n}), "
                                f"actual: {actions!r}")
        resets = [i for i in range(k) if self._needs_reset[i]]
        waiting = [s is None or s.done for s in self._states] if disabled else [False] * k
        stepping = [None if self._needs_reset[i] or waiting[i] else int(a)
                    for i, a in enumerate(acts)]
        results = self._run(resets, stepping)
        rewards = np.zeros(k, np.float64)
        terminated = np.zeros(k, bool)  # a waiting lane (DISABLED) does nothing and reports nothing
        for i, r in results.items():
            if isinstance(r, tuple):
                rewards[i], terminated[i] = r[1], r[2]
        self._needs_reset[:] = False
        ended = [i for i, r in results.items() if isinstance(r, tuple) and r[2]]
        same_step = bool(ended) and self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
        final_obs = self._obs.copy()
        again = self._run(ended, [None] * k) if same_step else {}
        infos: dict[str, Any] = {}
        for i, r in results.items():
            info = r[0] if isinstance(r, tuple) else r
            if i in again:  # SAME_STEP: the new episode's info, the old one's as final_info
                info = {**again[i], "final_obs": final_obs[i], "final_info": info}
            infos = self._add_info(infos, info, i)
        if ended and not same_step and not disabled:
            self._needs_reset[ended] = True
        return self._obs.copy(), rewards, terminated, np.zeros(k, bool), infos

    def action_masks(self) -> np.ndarray:
        """``(K, n)`` boolean masks of the legal actions, one row per lane (MaskablePPO's)."""
        if all(s is None for s in self._states) or (
                self.metadata["autoreset_mode"] != AutoresetMode.DISABLED
                and any(s is None for s in self._states)):
            from gymnasium.error import ResetNeeded

            raise ResetNeeded("call reset() before action_masks()")
        wait_only = np.zeros(self.params.codec.n, bool)
        wait_only[0] = True  # a lane never reset (DISABLED mode) can only wait
        return np.array([wait_only if s is None else s.mask for s in self._states], dtype=bool)

    @property
    def states(self) -> tuple[EpisodeState | None, ...]:
        """Every lane's episode state record."""
        return tuple(self._states)

    # -- one batched epoch -----------------------------------------------------------------------
    def _run(self, resets: list[int], actions: list[int | None],
             pins: dict[int, tuple[Any, Any, Any]] | None = None) -> dict[int, Any]:
        """Reset the lanes in ``resets`` (their first epoch) and step the lanes with an action,
        as one batched epoch; the lanes' observations go to ``self._obs``. Returns per lane: the
        reset's info, or (info, reward, terminated) of a step.
        """  # noqa: D205
        trainer, k, lp = self.trainer, self.num_envs, self._lane_params
        requests: list[Any] = [None] * k
        setups: dict[int, EpisodeSetup] = {}
        pendings: dict[int, Any] = {}
        for i in resets:
            rng = self._rngs[i]
            assert rng is not None
            instance, cfg = None, None
            if self.instances:  # drawn as EsperEnv.reset draws it, then the episode seed
                j = int(rng.integers(len(self.instances)))
                instance, cfg, lp[i] = (self.instances[j], self._episode_cfgs[j],
                                        self._episode_params[j])
            if pins and i in pins:
                instance, cfg, lp[i] = pins[i]
            episode_seed = int(rng.integers(0, 2**31 - 1))
            seeds = ep.episode_seeds(episode_seed)
            trainer.reset_lane(i, seeds.model, seeds.data, cfg, episode_seed)
            setups[i] = EpisodeSetup(seeds.module_base, trainer.facts(i),
                                     trainer.seed_costs(self.template.blueprints, i), instance)
            requests[i] = ep.first_request(lp[i], setups[i])
        states: dict[int, EpisodeState] = {}
        for i, a in enumerate(actions):
            if a is None or i in setups:
                continue
            state = self._states[i]
            assert state is not None and not state.done  # a finished lane is reset first
            states[i], pendings[i] = ep.apply_action(state, a, lp[i])
            requests[i] = pendings[i].request
        reports = trainer.run_epoch(requests)
        outcomes: dict[int, Any] = {}
        for i in setups:
            states[i], outcomes[i] = ep.start_episode(setups[i], reports[i], lp[i])
        for i, pending in pendings.items():
            states[i], outcomes[i] = ep.after_epoch(states[i], pending, reports[i], lp[i])
            if outcomes[i].restore is not None:
                report = trainer.roll_back(i, outcomes[i].restore)
                states[i], outcomes[i] = ep.after_restore(states[i], outcomes[i], report, lp[i])
        tests = trainer.settle([outcomes[i].settle if i in outcomes else None for i in range(k)])
        results: dict[int, Any] = {}
        for i, outcome in outcomes.items():
            state, test, p = states[i], tests[i], lp[i]
            assert test is not None
            self._states[i] = state
            self._obs[i] = observe(state, p, self._low, self._high)
            report = reports[i]
            fault = test.fault or (report.fault if report is not None else None)
            if i in setups:
                results[i] = reset_info(state, p, outcome, test, fault)
            else:
                assert outcome.reward is not None
                results[i] = (step_info(state, p, outcome, test, fault), outcome.reward.total,
                              outcome.terminated)
        return results

    # -- what a batch cannot do yet -------------------------------------------------------------
    _NO_SNAPSHOT = ("a lane's model lives in tensors stacked with the other lanes', and its "
                    "data order in a generator the batch advances; to freeze, restore or branch "
                    "an episode, replay it in EsperEnv with the same seed and actions (its "
                    "snapshot(), restore() and fork() do)")

    def snapshot(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported yet (raises NotImplementedError saying why and what to use)."""
        raise NotImplementedError(f"EsperVectorEnv.snapshot() is not supported yet: "
                                  f"{self._NO_SNAPSHOT}")

    def restore(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported yet (see :meth:`snapshot`)."""
        raise NotImplementedError(f"EsperVectorEnv.restore() is not supported yet: "
                                  f"{self._NO_SNAPSHOT}")

    def fork(self, *args: Any, **kwargs: Any) -> Any:
        """Not supported yet (see :meth:`snapshot`)."""
        raise NotImplementedError(f"EsperVectorEnv.fork() is not supported yet: "
                                  f"{self._NO_SNAPSHOT}")

    def __getstate__(self) -> Any:
        raise TypeError(f"EsperVectorEnv cannot be pickled or deep-copied yet: {self._NO_SNAPSHOT}")

    def close_extras(self, **kwargs: Any) -> None:  # noqa: D102
        self.trainer = None  # type: ignore[assignment]
