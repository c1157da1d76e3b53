"""Is growth worth learning on a task? No-growth vs each single-blueprint scripted policy.

For every blueprint of the task's topology, a scripted policy germinates that blueprint into slot 0
at the first epoch the mask allows (the default germination gate) and fossilizes as soon as
FOSSILIZE is legal. Each policy runs the same seeds; the table gives mean final *test* accuracy with
a 95 % bootstrap interval (:mod:`agents.stats`), the paired difference to no-growth (same seeds, so
the host's own noise cancels), how many seeds were fossilised, and the mean return. The claim
checked: at least one blueprint beats no-growth by >= 2 percentage points.

    python -m benchmarks.bench_growth --seeds 10
    python -m benchmarks.bench_growth --task tinytext --seeds 10 --first-seed 1000 --workers 2
    python -m benchmarks.bench_growth --task cifar10 --env-kwarg data_root=~/data \
        --env-kwarg device=cuda --env-kwarg batch_size=512 --workers 4

``--env-kwarg KEY=VALUE`` sets any other EsperConfig field (YAML values). With ``--workers`` > 1
the episodes run in that many spawned processes with ``--torch-threads`` threads each; without,
they run here with the process's own thread count. Either way each episode's numbers are those
of a fresh env with the same config and seed.
"""

from __future__ import annotations

import argparse
import sys
import time

from agents.cli import key_value
from agents.policies import NoGrowthPolicy, ScriptedPolicy
from agents.rollout import run_episode
from agents.stats import mean_ci95
from agents.workers import run_tasks
from benchmarks._common import add_output_args, provenance, save
from esper_env.env import EsperEnv

_ENVS: dict[str, EsperEnv] = {}


def _policy(env: EsperEnv, name: str) -> object:
    return NoGrowthPolicy(env) if name == "no-growth" else ScriptedPolicy(env, name)


def run_one(task: tuple[str, dict, str, int]) -> object:
    """One episode: (config key, env kwargs, policy name, seed) -> EpisodeResult."""
    key, kwargs, policy, seed = task
    env = _ENVS.get(key)
    if env is None:  # one env per config and process, reused across episodes (reset reseeds)
        env = _ENVS[key] = EsperEnv(**kwargs)
    return run_episode(env, _policy(env, policy), seed)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits")
    p.add_argument("--seeds", type=int, default=10, help="episodes per policy")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds first..first+n-1 (0-19 calibrated the digits defaults; use 1000 "
                        "for held-out seeds)")
    p.add_argument("--max-epochs", type=int, default=25)
    p.add_argument("--blueprints", default=None,
                   help="comma-separated (default: every blueprint of the task's topology)")
    p.add_argument("--env-kwarg", action="append", default=[], type=key_value,
                   metavar="KEY=VALUE", help="any other EsperConfig field (repeatable)")
    p.add_argument("--workers", type=int, default=1, help="episode processes (default 1: here)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch threads per worker process (with --workers > 1)")
    add_output_args(p)
    args = p.parse_args(argv)

    kwargs = {"task": args.task, "max_epochs": args.max_epochs, **dict(args.env_kwarg)}
    env = EsperEnv(**kwargs)  # validates the config and names the blueprints
    names = ["no-growth"] + (args.blueprints.split(",") if args.blueprints else list(env.blueprints))
    labels = [_policy(env, name).name for name in names]  # unknown blueprints fail here
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    tasks = [("growth", kwargs, name, s) for name in names for s in seeds]
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} episodes, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)

    if args.workers > 1:
        results = run_tasks(run_one, tasks, args.workers, args.torch_threads, chunksize=1,
                            progress=progress)
    else:
        _ENVS["growth"] = env
        results = []
        for t in tasks:
            results.append(run_one(t))
            progress(len(results), len(tasks))
    elapsed = time.perf_counter() - t0
    rows = {label: results[i * len(seeds):(i + 1) * len(seeds)] for i, label in enumerate(labels)}
    base = [r.final_test_acc for r in rows["no-growth"]]
    extra = "".join(f", {k}={v}" for k, v in dict(args.env_kwarg).items())
    prov = provenance()
    print(f"# {args.task}{extra}, {args.seeds} seeds ({seeds[0]}..{seeds[-1]}), {args.max_epochs} "
          f"epochs; {prov['cpu']}{', ' + prov['cuda'] if prov['cuda'] else ''}, "
          f"torch {prov['torch']}, commit {prov['commit']}")
    print(f"{'policy':<22} {'test acc (95% CI)':>18} {'vs no-growth (paired)':>22} "
          f"{'fossilized':>10} {'return':>8}")
    summary = {}
    for name, res in rows.items():
        accs = [r.final_test_acc for r in res]
        m, h = mean_ci95(accs)
        dm, dh = mean_ci95([a - b for a, b in zip(accs, base, strict=True)])
        fossil = sum(r.n_fossilized for r in res)
        ret = sum(r.episode_return for r in res) / len(res)
        summary[name] = {"test_acc": m, "ci95": h, "delta": dm, "delta_ci95": dh,
                         "fossilized": fossil, "return": ret}
        print(f"{name:<22} {m:>9.2f} ± {h:<6.2f} {dm:>+13.2f} ± {dh:<6.2f} "
              f"{fossil:>6}/{len(res):<3} {ret:>8.2f}")
    best = max((k for k in summary if k != "no-growth"), key=lambda k: summary[k]["delta"])
    print(f"best: {best} {summary[best]['delta']:+.2f} pp over no-growth "
          f"(claim >= 2 pp: {'met' if summary[best]['delta'] >= 2.0 else 'NOT met'}); "
          f"{elapsed:.0f} s")
    record = {"bench": "growth", "task": args.task, "seeds": args.seeds, "first_seed": seeds[0],
              "max_epochs": args.max_epochs, "env_kwargs": dict(args.env_kwarg),
              "workers": args.workers, "summary": summary, "best": best, "elapsed_s": elapsed}
    save("growth", record, args.out, tracked=args.record)
    return record


if __name__ == "__main__":
    main()
