"""Trained agents on held-out seeds: esper-train's defaults per algorithm, against the baselines.

For each algorithm (and training seed) it runs ``esper-train`` with its defaults (the YAML's
timesteps unless ``--total-timesteps``; ``--no-policy-mask`` variants with ``--unmasked-heads``),
then plays the best model (by validation return on seeds 500+) on held-out seeds 1000, 1001, …,
together with the no-growth, random and heuristic policies on the same seeds. It prints, per policy,
mean ± 95 % CI of the return, final test accuracy, fossilized seeds and the illegal-action fraction
at evaluation (deterministic actions), and the paired test-accuracy difference to no-growth; it
saves one JSON line with provenance (``benchmarks/results/`` only with ``--record``).

Claim checked (issue "Agents"): with esper-train's defaults, ppo, dqn and per-dqn play < 5 % illegal
actions at evaluation on digits.

    python -m benchmarks.bench_agents --algos ppo,dqn,per-dqn --seeds 1 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict

from agents.algos import ALGOS
from agents.envs import EnvSpec
from agents.policies import make_baseline
from agents.provenance import provenance
from agents.rollout import EpisodeResult, run_episode
from agents.runs import load_model
from agents.stats import mean_ci95, paired_differences
from agents.train import TrainArgs, train
from agents.workers import run_tasks
from benchmarks._common import add_output_args, save


def _train_and_evaluate(task: dict) -> dict:
    """Worker: one esper-train run, then its evaluation episodes (returns plain dicts)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = train(TrainArgs(algo=task["algo"], seed=task["seed"], total_timesteps=task["timesteps"],
                              output=tmp, env_kwargs=task["env_kwargs"], policy_mask=task["policy_mask"],
                              progress_bar=False, tensorboard=False))
        train_s = time.perf_counter() - t0
        model, spec = load_model(out, which="best")
        env = spec.make()
        results = [run_episode(env, model, s, name=task["name"]) for s in task["eval_seeds"]]
    return {"name": task["name"], "train_seed": task["seed"], "train_s": train_s,
            "episodes": [asdict(r) for r in results]}


def _baseline(task: dict) -> dict:
    env = EnvSpec.from_kwargs(**task["env_kwargs"]).make()
    policy = make_baseline(task["name"], env, seed=task["eval_seeds"][0])
    return {"name": task["name"], "train_seed": None, "train_s": 0.0,
            "episodes": [asdict(run_episode(env, policy, s)) for s in task["eval_seeds"]]}


def _worker(task: dict) -> dict:
    return _baseline(task) if task["kind"] == "baseline" else _train_and_evaluate(task)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits")
    p.add_argument("--algos", default="ppo,dqn,per-dqn,maskable-ppo")
    p.add_argument("--unmasked-heads", action="store_true",
                   help="also train ppo/dqn/per-dqn with --no-policy-mask (mask feature + penalty only)")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per algorithm (0, 1, ...)")
    p.add_argument("--total-timesteps", type=int, default=None, help="default: the YAML's n_timesteps")
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--first-seed", type=int, default=1000, help="first held-out evaluation seed")
    p.add_argument("--baselines", default="no-growth,random,heuristic")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--workers", type=int, default=1, help="processes (1 torch thread each if > 1)")
    add_output_args(p)
    args = p.parse_args(argv)

    env_kwargs: dict = {"task": args.task}
    if args.max_epochs is not None:
        env_kwargs["max_epochs"] = args.max_epochs
    eval_seeds = list(range(args.first_seed, args.first_seed + args.eval_episodes))
    tasks = []
    for algo in [a.strip() for a in args.algos.split(",") if a.strip()]:
        if algo not in ALGOS:
            raise SystemExit(f"unknown algorithm {algo!r}; allowed: {', '.join(ALGOS)}")
        variants = [True] + ([False] if args.unmasked_heads and algo != "maskable-ppo" else [])
        for policy_mask in variants:
            for seed in range(args.seeds):
                name = algo + ("" if policy_mask else "-unmasked-head")
                tasks.append({"kind": "train", "algo": algo, "name": name, "seed": seed,
                              "policy_mask": policy_mask, "timesteps": args.total_timesteps,
                              "env_kwargs": env_kwargs, "eval_seeds": eval_seeds})
    tasks += [{"kind": "baseline", "name": b.strip(), "env_kwargs": env_kwargs, "eval_seeds": eval_seeds}
              for b in args.baselines.split(",") if b.strip()]
    t0 = time.perf_counter()
    # one task per dispatch: training runs are long and uneven
    done = run_tasks(_worker, tasks, args.workers, 1 if args.workers > 1 else 2, chunksize=1)
    elapsed = time.perf_counter() - t0

    episodes = [EpisodeResult(**e) for d in done for e in d["episodes"]]
    prov = provenance()
    print(f"# {args.task}, held-out seeds {eval_seeds[0]}..{eval_seeds[-1]}, {args.seeds} training "
          f"seed(s); {prov['cpu']}, torch {prov['torch']}, commit {prov['commit']}")
    print(f"{'policy':<28} {'n':>3} {'return':>14} {'test acc %':>15} {'fossilized':>11} "
          f"{'illegal %':>10} {'vs no-growth (pp)':>18}")
    diffs = paired_differences(episodes, "no-growth") if "no-growth" in args.baselines else {}
    summary = {}
    for name in dict.fromkeys(e.policy for e in episodes):
        rows = [e for e in episodes if e.policy == name]
        ret, ret_h = mean_ci95([e.episode_return for e in rows])
        acc, acc_h = mean_ci95([e.final_test_acc for e in rows])
        illegal = 100.0 * sum(e.illegal_actions for e in rows) / sum(e.length for e in rows)
        fossil = sum(e.n_fossilized > 0 for e in rows) / len(rows)
        d = diffs.get(name)
        summary[name] = {"n": len(rows), "return": ret, "return_ci95": ret_h, "test_acc": acc,
                         "test_acc_ci95": acc_h, "illegal_pct": illegal, "fossilized_frac": fossil,
                         "test_acc_minus_no_growth": d}
        dtxt = f"{d['mean']:+7.2f} ± {d['ci95']:.2f}" if d else ""
        print(f"{name:<28} {len(rows):>3} {ret:>7.2f} ± {ret_h:<4.2f} {acc:>7.2f} ± {acc_h:<5.2f} "
              f"{fossil:>11.2f} {illegal:>10.2f} {dtxt:>18}")
    train_s = {f"{d['name']}@{d['train_seed']}": round(d["train_s"], 1)
               for d in done if d["train_seed"] is not None}
    print(f"training wall time per run (s): {train_s}; total {elapsed:.0f} s")
    record = {"bench": "agents", "task": args.task, "eval_seeds": eval_seeds, "train_seeds": args.seeds,
              "total_timesteps": args.total_timesteps, "summary": summary, "train_s": train_s,
              "workers": args.workers, "episodes": [asdict(e) for e in episodes]}
    path = save("agents", record, args.out, tracked=args.record)
    print(f"saved {path}")
    return record


if __name__ == "__main__":
    main()
