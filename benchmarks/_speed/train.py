"""esper-train with the batched engine against the default, side by side: steps/s and where they go.

In each of ``--repeats`` paired rounds, two whole ``esper-train --algo maskable-ppo`` runs of
``--train-steps`` steps on the same env (default: ``digits-mix``, its training split), seed ``r``,
no evaluation, no TensorBoard, at ``--torch-threads``: the default (``--vec-env dummy --n-envs 4``
with the YAML's hyperparameters) and ``--vec-env batched --n-envs K`` with ``n_steps`` adapted so
that an update sees the same number of transitions (``--rollout``, default the YAML's
``4 x 96 = 384``: ``n_steps = 384 / K``; every other hyperparameter as the YAML's). Reported:
the medians of steps/s, the paired speedup (95 % bootstrap interval) and each run's split of its
time (env steps, policy forward passes and the rest of collecting, updates, evaluation) from
``train_stats.json``.

    python -m benchmarks.speed train --n-envs 32 --train-steps 3072 --repeats 2

Result: ``train.jsonl``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from agents.provenance import provenance
from agents.train import TrainArgs, train
from benchmarks._common import OptionError, paired_ratios, rounds

DEFAULT_N_ENVS, DEFAULT_N_STEPS = 4, 96
"""The YAML's maskable-ppo rollout: 4 envs x 96 steps = 384 transitions per update."""


def add_options(p: Any) -> None:  # noqa: D103
    p.add_argument("--n-envs", type=int, default=32, help="lanes K of the batched run")
    p.add_argument("--train-steps", type=int, default=3072, help="env steps per run")
    p.add_argument("--rollout", type=int, default=DEFAULT_N_ENVS * DEFAULT_N_STEPS,
                   help="transitions per update in both runs (a multiple of 4 and of --n-envs)")
    p.add_argument("--instance-set", default="digits-mix",
                   help="instance set trained on ('' for the plain task of --tasks)")


def check(args: Any) -> None:  # noqa: D103
    if args.rollout < 1 or args.rollout % DEFAULT_N_ENVS:
        raise OptionError(f"--rollout {args.rollout}: allowed are multiples of {DEFAULT_N_ENVS}")
    if args.n_envs < 1 or args.rollout % args.n_envs:
        raise OptionError(f"--n-envs {args.n_envs}: allowed are divisors of --rollout "
                          f"{args.rollout} (the transitions per update)")
    if args.train_steps < 1:
        raise OptionError(f"--train-steps {args.train_steps}: allowed is 1 or more")


def _run(env_kwargs: dict, vec_env: str, n_envs: int, steps: int, seed: int, threads: int,
         hyperparams: dict) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainArgs(algo="maskable-ppo", total_timesteps=steps, n_envs=n_envs,
                         vec_env=vec_env, seed=seed, output=str(Path(tmp) / "run"),
                         env_kwargs=dict(env_kwargs), hyperparams=dict(hyperparams),
                         torch_threads=threads, eval_freq=0, tensorboard=False,
                         progress_bar=False)
        out = train(args)
        return json.loads((out / "train_stats.json").read_text())


def measure(args: Any) -> list[dict[str, Any]]:  # noqa: D103
    prov = provenance()
    env_kwargs: dict[str, Any] = {"task": args.tasks.split(",")[0], **dict(args.env_kwarg)}
    if args.instance_set:
        env_kwargs = {"instance_set": args.instance_set, "instance_split": "train",
                      **dict(args.env_kwarg)}
    threads = args.torch_threads or 1
    k = args.n_envs
    batch = {} if args.rollout >= DEFAULT_N_STEPS else {"batch_size": args.rollout}
    dummy_hp = {} if args.rollout == DEFAULT_N_ENVS * DEFAULT_N_STEPS else {
        "n_steps": args.rollout // DEFAULT_N_ENVS, **batch}
    batched_hp = {"n_steps": args.rollout // k, **batch}
    print(f"# esper-train maskable-ppo, dummy x{DEFAULT_N_ENVS} vs batched x{k} "
          f"(n_steps {batched_hp['n_steps']}), {args.train_steps} steps, {env_kwargs}, "
          f"{threads} torch thread(s), {prov['cpu']}, torch {prov['torch']}, "
          f"commit {prov['commit']}", flush=True)
    default, batched = [], []
    for r in rounds(args.repeats, "train"):
        default.append(_run(env_kwargs, "dummy", DEFAULT_N_ENVS, args.train_steps, r, threads,
                            dummy_hp))
        batched.append(_run(env_kwargs, "batched", k, args.train_steps, r, threads, batched_hp))
        for name, st in (("dummy", default[-1]), ("batched", batched[-1])):
            split = st["time_split_s"]
            print(f"round {r} {name:<8} {st['steps_per_s']:>7.1f} steps/s  " + ", ".join(
                f"{part} {100 * v / st['wall_s']:.0f}%" for part, v in split.items()), flush=True)
    sd = [st["steps_per_s"] for st in default]
    sb = [st["steps_per_s"] for st in batched]
    ratio = paired_ratios("speedup", sb, sd)
    print(f"dummy x{DEFAULT_N_ENVS}: {statistics.median(sd):.1f} steps/s; batched x{k}: "
          f"{statistics.median(sb):.1f} steps/s; speedup {ratio['speedup']:.2f} "
          f"(±{ratio['speedup_ci95']:.2f})", flush=True)
    return [{"bench": "train", "env_kwargs": env_kwargs, "train_steps": args.train_steps,
             "repeats": args.repeats, "torch_threads_per_run": threads, "n_envs_batched": k,
             "batched_hyperparams": batched_hp, "dummy_hyperparams": dummy_hp,
             "default_n_envs": DEFAULT_N_ENVS, "rollout": args.rollout,
             "dummy_steps_per_s_median": statistics.median(sd),
             "batched_steps_per_s_median": statistics.median(sb), **ratio,
             "dummy_runs": [{k2: st[k2] for k2 in ("steps_per_s", "wall_s", "time_split_s")}
                            for st in default],
             "batched_runs": [{k2: st[k2] for k2 in ("steps_per_s", "wall_s", "time_split_s")}
                              for st in batched]}]
