"""esper-train: train a PPO, MaskablePPO, DQN or PER-DQN agent on Esper-v0 with Stable-Baselines3.

What a run does, in order:

1. builds the env from the env options (task, instance set and split, reward mode, slots, ...) and
   the agent-side wrappers: the blueprint curriculum (``--curriculum``) and, for the algorithms that
   cannot take masks (``ppo``, ``dqn``, ``per-dqn``), the action mask appended to the observation;
2. vectorizes it (``DummyVecEnv``, ``SubprocVecEnv``, or :class:`agents.vec_env.ThreadVecEnv`: the
   envs step at once in threads of this process; subprocess and thread workers use one torch
   thread each);
3. reads the algorithm's rl-zoo3-style hyperparameters (``agents/hyperparams/<algo>.yml``,
   overridable with ``--hyperparams key=value``);
4. learns with SB3's progress bar, logging to TensorBoard (``<output>/tb``) with per-episode Esper
   metrics (``esper/*``) and curriculum statistics (``curriculum/*``);
5. every ``--eval-freq`` steps plays ``--eval-episodes`` deterministic episodes on validation seeds
   (``--eval-seed`` onwards; never the training episodes, never esper-eval's default seeds) and keeps
   the model with the best mean return as ``best_model.zip``;
6. saves ``model.zip``, ``env_config.json`` (the exact env), ``hyperparams.yml``, ``args.json``,
   ``evaluations.json``, ``curriculum.json`` and ``vecnormalize.pkl`` when they apply.

Same arguments and seed ⇒ the same learned policy on CPU. ``esper-train --help`` lists every option;
``esper-eval --model <output>`` evaluates the result.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.algos import ALGOS, TRAIN_EXTRA, UNMASKED, algo_class, load_hyperparams, split_hyperparams
from agents.cli import (
    ENV_GROUP,
    EnvOptions,
    add_env_arguments,
    add_options,
    env_kwargs_from,
    from_namespace,
    key_value,
    option,
)
from agents.envs import EnvSpec
from agents.provenance import provenance
from agents.rollout import episode_plan
from agents.runs import (
    load_curriculum,
    load_model,
    open_run_folder,
    save_curriculum,
    save_run_config,
    save_train_stats,
)
from esper_env.errors import ConfigError

__all__ = ["ALGOS", "TRAIN_EXTRA", "UNMASKED", "VEC_ENVS", "TrainArgs", "add_env_arguments",
           "build_parser", "env_kwargs_from", "load_curriculum", "load_hyperparams", "load_model",
           "main", "parse_args", "train"]
# (ALGOS ... load_model are re-exported: they lived here before agents.algos, agents.cli and
# agents.runs)

VEC_ENVS = ("dummy", "subproc", "thread", "batched")
"""``--vec-env`` choices: ``DummyVecEnv``, ``SubprocVecEnv``, :class:`agents.vec_env.ThreadVecEnv`,
:class:`agents.batched_vec_env.BatchedVecEnv` (the envs as one batched computation)."""
AGENT = "agent"
EVALUATION = "evaluation and logging"


@dataclass
class TrainArgs:
    """Options of ``esper-train``, each declared once, as a field (:mod:`agents.cli` makes the flags).

    ``total_timesteps`` is ``--total-timesteps``, ``policy_mask=True`` is ``--no-policy-mask``
    (``esper-train --help`` lists them). Training env i gets seed ``seed + i``. ``env_kwargs``
    are EsperConfig overrides: the env options ``--task``, ``--instance-set``, ... and
    ``--env-kwarg`` (the env's own torch device is the env option ``device``).
    ``curriculum_penalty`` is charged times the blueprint's parameter share;
    ``torch_threads=None`` keeps torch's default.
    """

    algo: str = option("maskable-ppo", "algorithm", choices=ALGOS)
    total_timesteps: int | None = option(None, "env steps (default: the YAML's n_timesteps)")
    n_envs: int | None = option(None, "parallel envs (default: the YAML's n_envs)")
    vec_env: str = option("dummy", "vectorization: one process (envs in turn), one worker process per "
                                   "env, one thread per env in this process (envs step at once), or "
                                   "the envs trained as one batched computation (digits or "
                                   "cifar10, instance sets too)",
                          choices=VEC_ENVS)
    seed: int = option(0, "seed of the agent and the envs")
    output: str | None = option(None, "run folder (default: runs/<algo>-seed<seed>)")
    overwrite: bool = option(False, "reuse an output folder with a model")
    env_kwargs: dict[str, Any] = option(default_factory=dict, help="Esper config overrides",
                                        group=ENV_GROUP, options=EnvOptions)
    hyperparams: dict[str, Any] = option(
        default_factory=dict, help="override a YAML hyperparameter (repeatable), e.g. "
                                   "--hyperparams learning_rate=1e-3",
        group=AGENT, action="append", type=key_value, metavar="KEY=VALUE", cli_default=[],
        convert=dict)
    hyperparams_file: str | None = option(None, "YAML file instead of agents/hyperparams/<algo>.yml",
                                          group=AGENT)
    curriculum: bool = option(False, "UCB1 blueprint curriculum: the agent picks when, the curriculum "
                                     "which", group=AGENT)
    curriculum_c: float = option(float(np.sqrt(2.0)), "UCB1 constant c", group=AGENT)
    curriculum_penalty: float = option(0.0, "complexity penalty on the recorded reward", group=AGENT)
    policy_mask: bool = option(True, "ppo/dqn/per-dqn: plain policy heads (mask feature and penalty "
                                     "only)", group=AGENT)
    device: str = option("auto", "torch device of the agent", group=AGENT)
    torch_threads: int | None = option(None, "torch threads of the process, agent and envs (e.g. 1 "
                                             "for runs side by side)", group=AGENT)
    eval_freq: int = option(2400, "evaluate every N steps (0: never)", group=EVALUATION)
    eval_episodes: int = option(5, "episodes per evaluation", group=EVALUATION)
    eval_seed: int = option(500, "first validation seed", group=EVALUATION)
    eval_split: str = option("train", "instance split evaluated during training", group=EVALUATION,
                             choices=("train", "test"))
    tensorboard: bool = option(True, "no TensorBoard log", group=EVALUATION)
    progress_bar: bool = option(True, "no progress bar", group=EVALUATION)
    verbose: int = option(0, "SB3 verbosity", group=EVALUATION)


# ---- command line ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The ``esper-train`` argument parser (derived from :class:`TrainArgs`)."""
    p = argparse.ArgumentParser(prog="esper-train", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_options(p, TrainArgs)
    return p


def parse_args(argv: list[str] | None = None) -> TrainArgs:
    """Command line → :class:`TrainArgs`."""
    return from_namespace(TrainArgs, build_parser().parse_args(argv))


# ---- training ----------------------------------------------------------------------------------

def _vec_normalize(venv: Any, normalize: Any, gamma: float) -> Any:
    if not normalize:
        return venv
    from stable_baselines3.common.vec_env import VecNormalize

    opts = {"norm_obs": False, "norm_reward": True} if normalize is True else dict(normalize)
    if opts.get("norm_obs", False):
        raise ConfigError("normalize: norm_obs=True is not supported (the observation is already "
                          "bounded and its action-mask tail must stay 0/1); allowed: norm_reward")
    opts["norm_obs"] = False
    return VecNormalize(venv, gamma=gamma, **opts)


def train(args: TrainArgs) -> Path:
    """Run one training job described by ``args``; returns the run folder."""
    try:
        import yaml  # noqa: F401 - agents.runs writes hyperparams.yml with it
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(f"esper-train needs the training extra: {TRAIN_EXTRA}") from e
    from agents.callbacks import EsperEvalCallback, EsperMetricsCallback, StepTimer, TimeSplitCallback

    hp = load_hyperparams(args.algo, args.hyperparams_file)
    hp.update(args.hyperparams)
    resolved = dict(hp)
    run_hp, algo_kwargs = split_hyperparams(hp)
    total = int(args.total_timesteps or run_hp.get("n_timesteps", 20_000))
    n_envs = int(args.n_envs or run_hp.get("n_envs", 1))
    if total <= 0 or n_envs <= 0:
        raise ConfigError(f"total_timesteps={total} and n_envs={n_envs} must be > 0")
    if args.vec_env not in VEC_ENVS:
        raise ConfigError(f"vec_env={args.vec_env!r} is invalid; allowed: {', '.join(VEC_ENVS)}")
    threads = args.torch_threads
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ConfigError(f"torch_threads={args.torch_threads!r} is invalid; allowed: an integer >= 1")
    if args.eval_freq < 0 or (args.eval_freq > 0 and args.eval_episodes < 1):
        raise ConfigError(f"eval_freq={args.eval_freq}, eval_episodes={args.eval_episodes} are invalid; "
                          "allowed: eval_freq >= 0 (0: no evaluation) and eval_episodes >= 1")
    if args.curriculum and not (np.isfinite(args.curriculum_c) and args.curriculum_c >= 0
                                and np.isfinite(args.curriculum_penalty) and args.curriculum_penalty >= 0):
        raise ConfigError(f"curriculum_c={args.curriculum_c}, curriculum_penalty="
                          f"{args.curriculum_penalty} are invalid; allowed: finite and >= 0")
    masked_obs = args.algo in UNMASKED
    curriculum_kwargs = None
    if args.curriculum:
        curriculum_kwargs = {"c": args.curriculum_c, "complexity_penalty": args.curriculum_penalty,
                             "seed": args.seed}
    spec = EnvSpec.from_kwargs(mask_observation=masked_obs, curriculum=curriculum_kwargs,
                               **args.env_kwargs)
    out = open_run_folder(args.output or f"runs/{args.algo}-seed{args.seed}", args.overwrite)

    # one curriculum shared by the envs of this process (each subprocess or thread worker has its own,
    # so that the update order never depends on the threads' timing; then
    # evaluation and the saved curriculum use worker 0's)
    shared = _build_curriculum(spec) if args.curriculum and args.vec_env in ("dummy", "batched") \
        else None
    one_thread = args.vec_env in ("subproc", "thread")

    def make_env() -> Any:
        return spec.make(curriculum=shared, torch_threads=1 if one_thread else None)

    if args.vec_env == "batched":
        venv = _batched_venv(args, spec, n_envs, masked_obs, shared)
    else:
        from agents.vec_env import ThreadVecEnv

        vec_cls = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv,
                   "thread": ThreadVecEnv}[args.vec_env]
        venv = make_vec_env(make_env, n_envs=n_envs, seed=args.seed, vec_env_cls=vec_cls)
    timer = StepTimer(venv)
    venv = _vec_normalize(timer, run_hp.get("normalize", False), float(algo_kwargs.get("gamma", 0.99)))

    cls = algo_class(args.algo, args.policy_mask)
    policy = run_hp.get("policy", "MlpPolicy")
    if args.algo == "ppo" and args.policy_mask and policy == "MlpPolicy":
        from agents.masking import MaskedActorCriticPolicy

        policy = MaskedActorCriticPolicy
    model = cls(policy, venv, seed=args.seed, device=args.device, verbose=args.verbose,
                tensorboard_log=str(out / "tb") if args.tensorboard else None, **algo_kwargs)

    callbacks: list[Any] = [EsperMetricsCallback()]
    eval_env = None
    if args.eval_freq > 0:
        eval_spec = spec
        if spec.esper_config.task.instance_set is not None:
            eval_spec = spec.replace_config(instance_split=args.eval_split)
        eval_env = eval_spec.make(curriculum=_frozen_copy(shared))
        episodes = episode_plan(eval_env, args.eval_seed, args.eval_episodes)
        hooks: dict[str, Any] = {}
        if args.curriculum:  # evaluate with a copy of the curriculum as it stands, learning nothing back
            env_ = eval_env

            def before_eval() -> None:
                env_.set_wrapper_attr("curriculum", _frozen_copy(_training_curriculum(venv, shared)))

            hooks["before_eval"] = before_eval
            hooks["on_best"] = lambda: save_curriculum(_training_curriculum(venv, shared),
                                                        out / "best_curriculum.json")
        callbacks.append(EsperEvalCallback(eval_env, episodes, eval_freq=args.eval_freq, save_path=out,
                                           verbose=args.verbose, **hooks))
    split = TimeSplitCallback(timer, callbacks[-1] if eval_env is not None else None)
    callbacks.append(split)

    save_run_config(out, asdict(args), spec, resolved)
    from esper_env.nn.threads import num_threads

    t0 = time.perf_counter()
    with num_threads(args.torch_threads):  # the process's count while training, given back after
        model.learn(total_timesteps=total, callback=callbacks, progress_bar=args.progress_bar,
                    tb_log_name=args.algo)
        wall = time.perf_counter() - t0
        stats = {"timesteps": int(model.num_timesteps), "wall_s": round(wall, 1),
                 "steps_per_s": round(model.num_timesteps / wall, 2) if wall > 0 else None,
                 "n_envs": n_envs, "vec_env": args.vec_env,
                 "time_split_s": {k: round(v, 3) for k, v in split.split.items()},
                 **provenance()}  # inside: provenance records the training's thread count
    model.save(out / "model")
    save_train_stats(out, stats)
    if hasattr(venv, "obs_rms"):  # VecNormalize (rewards only)
        venv.save(str(out / "vecnormalize.pkl"))
    if args.curriculum:
        save_curriculum(_training_curriculum(venv, shared), out / "curriculum.json")
    venv.close()
    if eval_env is not None:
        eval_env.close()
    return out


def _batched_venv(args: TrainArgs, spec: EnvSpec, n_envs: int, masked_obs: bool,
                  curriculum: Any = None) -> Any:
    """``--vec-env batched``: the envs as one :class:`~agents.batched_vec_env.BatchedVecEnv` under
    ``VecMonitor`` (env i seeded ``seed + i``, as ``make_vec_env`` seeds); with ``curriculum``,
    the lanes share it (:class:`~agents.batched_vec_env.BatchedCurriculumVecEnv`).
    """  # noqa: D205
    from stable_baselines3.common.vec_env import VecMonitor

    from agents.batched_vec_env import BatchedCurriculumVecEnv, BatchedVecEnv

    venv = BatchedVecEnv(n_envs, mask_observation=masked_obs and curriculum is None,
                         config=spec.esper_config)
    venv.seed(args.seed)
    if curriculum is not None:
        return VecMonitor(BatchedCurriculumVecEnv(venv, curriculum, mask_observation=masked_obs))
    return VecMonitor(venv)


def _build_curriculum(spec: EnvSpec) -> Any:
    """A curriculum built once from a throwaway env, to be shared by this process's envs."""
    env = spec.make()
    try:
        return env.get_wrapper_attr("curriculum")
    finally:
        env.close()


def _training_curriculum(venv: Any, shared: Any) -> Any:
    """The curriculum the agent trains with: the shared one, or (subproc, thread) env 0's copy."""
    return shared if shared is not None else venv.get_attr("curriculum", [0])[0]


def _frozen_copy(curriculum: Any) -> Any:
    import copy

    return copy.deepcopy(curriculum) if curriculum is not None else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``esper-train``."""
    args = parse_args(argv)
    try:
        out = train(args)
    except (ConfigError, FileExistsError) as e:
        print(f"esper-train: error: {e}", file=sys.stderr)
        return 2
    best = out / "best_model.zip"
    print(f"saved {out}/model.zip" + (f" and {best}" if best.exists() else ""))
    print(f"evaluate it with: esper-eval --model {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
