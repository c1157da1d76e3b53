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
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from agents.envs import EnvSpec
from agents.provenance import provenance
from esper_env.errors import ConfigError

ALGOS = ("ppo", "maskable-ppo", "dqn", "per-dqn")
"""Algorithms ``esper-train`` knows, in the order of ``--help``."""
UNMASKED = ("ppo", "dqn", "per-dqn")
"""Algorithms that cannot take ``action_masks()``: they see the mask in the observation."""
VEC_ENVS = ("dummy", "subproc", "thread")
"""``--vec-env`` choices: ``DummyVecEnv``, ``SubprocVecEnv``, :class:`agents.vec_env.ThreadVecEnv`."""
TRAIN_EXTRA = 'pip install "esper-env[train]"'


@dataclass
class TrainArgs:
    """Options of ``esper-train`` (each is a flag: ``total_timesteps`` → ``--total-timesteps``)."""

    algo: str = "maskable-ppo"
    """ppo, maskable-ppo, dqn or per-dqn."""
    total_timesteps: int | None = None
    """Environment steps to train for (default: the YAML's n_timesteps)."""
    n_envs: int | None = None
    """Parallel envs (default: the YAML's n_envs)."""
    vec_env: str = "dummy"
    """dummy (one process, envs in turn), subproc (one worker process per env) or thread (one thread
    per env in this process, all stepping at once); subproc and thread: one torch thread per env."""
    seed: int = 0
    """Seed of the agent and of the training envs (env i gets seed + i)."""
    output: str | None = None
    """Run folder (default: runs/<algo>-seed<seed>)."""
    overwrite: bool = False
    """Allow writing into an output folder that already holds a model."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Esper config overrides (task, instance_set, reward_mode, n_slots, max_epochs, ...)."""
    hyperparams: dict[str, Any] = field(default_factory=dict)
    """Overrides of the YAML hyperparameters."""
    hyperparams_file: str | None = None
    """A YAML file to read instead of agents/hyperparams/<algo>.yml."""
    curriculum: bool = False
    """Let a UCB1 blueprint curriculum choose blueprints (one GERMINATE action per slot)."""
    curriculum_c: float = float(np.sqrt(2.0))
    """UCB1 exploration constant c."""
    curriculum_penalty: float = 0.0
    """Complexity penalty of the curriculum (times the blueprint's parameter share)."""
    policy_mask: bool = True
    """For ppo/dqn/per-dqn: masked policy heads (else only the mask feature and the penalty)."""
    eval_freq: int = 2400
    """Evaluate every this many steps (0: never)."""
    eval_episodes: int = 5
    """Episodes per evaluation."""
    eval_seed: int = 500
    """First validation seed (esper-eval's default test seeds start at 1000)."""
    eval_split: str = "train"
    """With an instance set: the split evaluated during training (test is for reporting)."""
    tensorboard: bool = True
    """Log to TensorBoard under <output>/tb."""
    progress_bar: bool = True
    """Show SB3's progress bar."""
    device: str = "auto"
    """Torch device of the agent (the env's is the env option 'device')."""
    torch_threads: int | None = None
    """torch threads of the whole process (agent and envs); None: torch's default."""
    verbose: int = 0
    """SB3 verbosity."""


# ---- command line ------------------------------------------------------------------------------

def _key_value(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):  # YAML 1.1 reads 1e-3 as a string; users mean the number
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip(), parsed


def add_env_arguments(p: argparse.ArgumentParser) -> None:
    """Env options shared by esper-train and esper-eval."""
    g = p.add_argument_group("env (Esper config; see the EsperEnv docstring)")
    g.add_argument("--task", help="task: digits (default), synthetic, ...")
    g.add_argument("--instance-set", help="instance set name or JSON file (e.g. digits-mix)")
    g.add_argument("--instance-split", choices=("train", "test"),
                   help="instance split to train on (default train)")
    g.add_argument("--reward-mode", help="contribution (default), delta or sparse")
    g.add_argument("--n-slots", type=int, help="seed slots")
    g.add_argument("--max-epochs", type=int, help="epochs per episode (default 25: 24 steps)")
    g.add_argument("--env-kwarg", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="any other EsperConfig field, value in YAML (repeatable), "
                        "e.g. --env-kwarg 'gates={min_fossilize_contribution: 2.0}'")


def env_kwargs_from(ns: argparse.Namespace) -> dict[str, Any]:
    """The env kwargs given on the command line."""
    kw = {k: getattr(ns, k) for k in ("task", "instance_set", "instance_split", "reward_mode",
                                      "n_slots", "max_epochs") if getattr(ns, k) is not None}
    kw.update(dict(ns.env_kwarg))
    return kw


def build_parser() -> argparse.ArgumentParser:
    """The ``esper-train`` argument parser."""
    d = TrainArgs()
    p = argparse.ArgumentParser(prog="esper-train", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--algo", choices=ALGOS, default=d.algo, help="algorithm")
    p.add_argument("--total-timesteps", type=int, help="env steps (default: the YAML's n_timesteps)")
    p.add_argument("--n-envs", type=int, help="parallel envs (default: the YAML's n_envs)")
    p.add_argument("--vec-env", choices=VEC_ENVS, default=d.vec_env,
                   help="vectorization: one process (envs in turn), one worker process per env, or "
                        "one thread per env in this process (envs step at once)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the agent and the envs")
    p.add_argument("--output", help="run folder (default: runs/<algo>-seed<seed>)")
    p.add_argument("--overwrite", action="store_true", help="reuse an output folder with a model")
    add_env_arguments(p)
    g = p.add_argument_group("agent")
    g.add_argument("--hyperparams", action="append", default=[], type=_key_value,
                   metavar="KEY=VALUE", help="override a YAML hyperparameter (repeatable), e.g. "
                                              "--hyperparams learning_rate=1e-3")
    g.add_argument("--hyperparams-file", help="YAML file instead of agents/hyperparams/<algo>.yml")
    g.add_argument("--curriculum", action="store_true",
                   help="UCB1 blueprint curriculum: the agent picks when, the curriculum which")
    g.add_argument("--curriculum-c", type=float, default=d.curriculum_c, help="UCB1 constant c")
    g.add_argument("--curriculum-penalty", type=float, default=d.curriculum_penalty,
                   help="complexity penalty on the recorded reward")
    g.add_argument("--no-policy-mask", dest="policy_mask", action="store_false",
                   help="ppo/dqn/per-dqn: plain policy heads (mask feature and penalty only)")
    g.add_argument("--device", default=d.device, help="torch device of the agent")
    g.add_argument("--torch-threads", type=int, default=d.torch_threads,
                   help="torch threads of the process, agent and envs (e.g. 1 for runs side by side)")
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-freq", type=int, default=d.eval_freq, help="evaluate every N steps (0: never)")
    g.add_argument("--eval-episodes", type=int, default=d.eval_episodes, help="episodes per evaluation")
    g.add_argument("--eval-seed", type=int, default=d.eval_seed, help="first validation seed")
    g.add_argument("--eval-split", choices=("train", "test"), default=d.eval_split,
                   help="instance split evaluated during training")
    g.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="no TensorBoard log")
    g.add_argument("--no-progress-bar", dest="progress_bar", action="store_false", help="no progress bar")
    g.add_argument("--verbose", type=int, default=d.verbose, help="SB3 verbosity")
    return p


def parse_args(argv: list[str] | None = None) -> TrainArgs:
    """Command line → :class:`TrainArgs`."""
    ns = build_parser().parse_args(argv)
    names = {f for f in TrainArgs.__dataclass_fields__}
    values = {k: v for k, v in vars(ns).items() if k in names - {"hyperparams", "env_kwargs"}}
    return TrainArgs(**values, env_kwargs=env_kwargs_from(ns), hyperparams=dict(ns.hyperparams))


# ---- hyperparameters ---------------------------------------------------------------------------

def load_hyperparams(algo: str, path: str | None = None, env_id: str = "Esper-v0") -> dict[str, Any]:
    """The rl-zoo3-style hyperparameters of ``algo`` for ``env_id`` (from ``path`` if given)."""
    import yaml

    if algo not in ALGOS:
        raise ConfigError(f"algo={algo!r} is invalid; allowed: {', '.join(ALGOS)}")
    if path is None:
        text = resources.files("agents").joinpath("hyperparams", f"{algo}.yml").read_text()
    else:
        text = Path(path).read_text()
    table = yaml.safe_load(text) or {}
    if env_id not in table:
        raise ConfigError(f"{path or algo + '.yml'} has no entry for {env_id!r}; it has {sorted(table)}")
    return dict(table[env_id])


def _algo_class(algo: str, policy_mask: bool) -> type:
    try:
        if algo == "maskable-ppo":
            from sb3_contrib import MaskablePPO

            return MaskablePPO
        if algo == "ppo":
            from stable_baselines3 import PPO

            return PPO
        if policy_mask:
            from agents.masking import MaskedDQN, MaskedPERDQN

            return MaskedDQN if algo == "dqn" else MaskedPERDQN
        if algo == "dqn":
            from stable_baselines3 import DQN

            return DQN
        from agents.dqn_per import PERDQN

        return PERDQN
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(f"esper-train needs Stable-Baselines3 and sb3-contrib: {TRAIN_EXTRA}") from e


def load_model(run: str | Path, which: str = "best", device: str = "cpu") -> tuple[Any, EnvSpec]:
    """Load a saved agent and the spec of its env from an esper-train run folder.

    Args:
        run: the run folder (or a ``.zip`` inside one).
        which: ``best`` (``best_model.zip``, falling back to ``model.zip``) or ``final``.
        device: torch device of the loaded model.
    """
    path = Path(run)
    folder = path.parent if path.suffix == ".zip" else path
    meta_path = folder / "args.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not an esper-train run folder (no args.json)")
    meta = json.loads(meta_path.read_text())
    if path.suffix == ".zip":
        zip_path = path
    else:
        zip_path = folder / ("best_model.zip" if which == "best" else "model.zip")
        if not zip_path.exists():
            zip_path = folder / "model.zip"
    cls = _algo_class(meta["algo"], meta["policy_mask"])
    return cls.load(zip_path, device=device), EnvSpec.load(folder / "env_config.json")


# ---- training ----------------------------------------------------------------------------------

def _split_hyperparams(hp: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run-level settings, algorithm kwargs) of a hyperparameter table."""
    run = {k: hp.pop(k) for k in ("n_timesteps", "n_envs", "policy", "normalize") if k in hp}
    return run, hp


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
        import yaml
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise ImportError(f"esper-train needs the training extra: {TRAIN_EXTRA}") from e
    from agents.callbacks import EsperEvalCallback, EsperMetricsCallback

    hp = load_hyperparams(args.algo, args.hyperparams_file)
    hp.update(args.hyperparams)
    resolved = dict(hp)
    run_hp, algo_kwargs = _split_hyperparams(hp)
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
    out = Path(args.output or f"runs/{args.algo}-seed{args.seed}")
    if (out / "model.zip").exists() and not args.overwrite:
        raise FileExistsError(f"{out} already holds a model; pass --overwrite or another --output")
    out.mkdir(parents=True, exist_ok=True)

    # one curriculum shared by the envs of this process (each subprocess or thread worker has its own,
    # so that the update order never depends on the threads' timing; then
    # evaluation and the saved curriculum use worker 0's)
    shared = _build_curriculum(spec) if args.curriculum and args.vec_env == "dummy" else None
    one_thread = args.vec_env in ("subproc", "thread")

    def make_env() -> Any:
        return spec.make(curriculum=shared, torch_threads=1 if one_thread else None)

    from agents.vec_env import ThreadVecEnv

    vec_cls = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv, "thread": ThreadVecEnv}[args.vec_env]
    venv = make_vec_env(make_env, n_envs=n_envs, seed=args.seed, vec_env_cls=vec_cls)
    venv = _vec_normalize(venv, run_hp.get("normalize", False), float(algo_kwargs.get("gamma", 0.99)))

    cls = _algo_class(args.algo, args.policy_mask)
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
        if spec.esper_config.instance_set is not None:
            eval_spec = spec.replace_config(instance_split=args.eval_split)
        eval_env = eval_spec.make(curriculum=_frozen_copy(shared))
        episodes = _eval_episodes(eval_env, args.eval_seed, args.eval_episodes)
        hooks: dict[str, Any] = {}
        if args.curriculum:  # evaluate with a copy of the curriculum as it stands, learning nothing back
            env_ = eval_env

            def before_eval() -> None:
                env_.set_wrapper_attr("curriculum", _frozen_copy(_training_curriculum(venv, shared)))

            hooks["before_eval"] = before_eval
            hooks["on_best"] = lambda: _save_curriculum(_training_curriculum(venv, shared),
                                                        out / "best_curriculum.json")
        callbacks.append(EsperEvalCallback(eval_env, episodes, eval_freq=args.eval_freq, save_path=out,
                                           verbose=args.verbose, **hooks))

    (out / "args.json").write_text(json.dumps(asdict(args), indent=1, sort_keys=True) + "\n")
    spec.save(out / "env_config.json")
    (out / "hyperparams.yml").write_text(yaml.safe_dump({"Esper-v0": resolved}, sort_keys=True))
    from esper_env.nn.threads import num_threads

    t0 = time.perf_counter()
    with num_threads(args.torch_threads):  # the process's count while training, given back after
        model.learn(total_timesteps=total, callback=callbacks, progress_bar=args.progress_bar,
                    tb_log_name=args.algo)
        wall = time.perf_counter() - t0
        stats = {"timesteps": int(model.num_timesteps), "wall_s": round(wall, 1),
                 "steps_per_s": round(model.num_timesteps / wall, 2) if wall > 0 else None,
                 **provenance()}  # inside: provenance records the training's thread count
    model.save(out / "model")
    (out / "train_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    if hasattr(venv, "obs_rms"):  # VecNormalize (rewards only)
        venv.save(str(out / "vecnormalize.pkl"))
    if args.curriculum:
        _save_curriculum(_training_curriculum(venv, shared), out / "curriculum.json")
    venv.close()
    if eval_env is not None:
        eval_env.close()
    return out


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


def _save_curriculum(curriculum: Any, path: Path) -> None:
    path.write_text(json.dumps(curriculum.state_dict(), indent=1, sort_keys=True) + "\n")


def load_curriculum(run: str | Path, which: str = "best") -> Any:
    """The curriculum saved with a run's best (``best_curriculum.json``) or final model, or None."""
    from agents.curriculum import BlueprintCurriculum

    folder = Path(run).parent if Path(run).suffix == ".zip" else Path(run)
    names = ["best_curriculum.json", "curriculum.json"] if which == "best" else ["curriculum.json"]
    for name in names:
        if (folder / name).exists():
            return BlueprintCurriculum.from_state_dict(json.loads((folder / name).read_text()))
    return None


def _eval_episodes(env: Any, first_seed: int, n: int) -> list[tuple[int, dict[str, Any] | None]]:
    """``n`` (seed, options) pairs: seeds from ``first_seed``; with instances, cycle through them."""
    n_instances = len(env.unwrapped.instances)
    if n_instances:
        return [(first_seed + i, {"instance": i % n_instances}) for i in range(n)]
    return [(first_seed + i, None) for i in range(n)]


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
