"""The heuristic against random and no-growth on held-out seeds (digits, or an instance set's test split).

Every policy plays the same seeded episodes (held-out seeds 1000, 1001, … by default; the heuristic's
defaults were tuned on seeds 0–19 only), in order (the heuristic's blueprint penalties carry over
from one episode to the next; random is seeded with ``--first-seed``). Prints mean ± 95 % bootstrap CI of
return, final test accuracy, fossilized fraction (episodes with a fossil), parameters added and
illegal actions, and the paired differences heuristic − random and heuristic − no-growth (same
episodes); saves one JSON line with provenance (``benchmarks/results/`` only with ``--record``).

Claim checked (issue "Agents"): on digits over 20 seeds the heuristic fossilizes a seed in most
episodes and beats the random policy in mean return and mean final test accuracy.

    python -m benchmarks.bench_heuristic --seeds 20 --record
    python -m benchmarks.bench_heuristic --instance-set digits-mix --split test
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import torch

from agents.envs import EnvSpec
from agents.heuristic import HeuristicConfig
from agents.policies import make_baseline
from agents.rollout import episode_plan, run_episode
from agents.stats import mean_ci95, paired_differences
from benchmarks._common import add_output_args, provenance, save


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits")
    p.add_argument("--seeds", type=int, default=None,
                   help="episodes per policy (default 20; with an instance set, each instance once)")
    p.add_argument("--first-seed", type=int, default=1000)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--instance-set", default=None)
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--policies", default="heuristic,random,no-growth")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest)")
    add_output_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.torch_threads)

    kwargs: dict = {"task": args.task}
    if args.max_epochs is not None:
        kwargs["max_epochs"] = args.max_epochs
    if args.instance_set:
        kwargs.update(instance_set=args.instance_set, instance_split=args.split)
    env = EnvSpec.from_kwargs(**kwargs).make()
    plan = episode_plan(env, args.first_seed, args.seeds)
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    t0 = time.perf_counter()
    results = []
    for name in names:
        policy = make_baseline(name, env, seed=args.first_seed)
        results += [run_episode(env, policy, seed, name=name, options=opts) for seed, opts in plan]
    elapsed = time.perf_counter() - t0

    prov = provenance()
    where = f"{args.instance_set} {args.split} split" if args.instance_set else args.task
    print(f"# {where}, {len(plan)} episodes per policy (seeds {plan[0][0]}..{plan[-1][0]}); "
          f"{prov['cpu']}, torch {prov['torch']} ({args.torch_threads} thread(s)), commit {prov['commit']}")
    columns = {"return": "episode_return", "test_acc": "final_test_acc", "fossilized_frac": "n_fossilized",
               "params_added": "params_added", "illegal": "illegal_actions"}
    print(f"{'policy':<12} {'return':>15} {'test acc %':>15} {'fossilized':>13} {'+params':>13} "
          f"{'illegal':>13}")
    summary = {}
    for name in names:
        rows = [r for r in results if r.policy == name]
        summary[name] = {}
        for key, attr in columns.items():
            values = [float(getattr(r, attr)) for r in rows]
            if key == "fossilized_frac":  # episodes with a fossil
                values = [float(v > 0) for v in values]
            summary[name][key], summary[name][f"{key}_ci95"] = mean_ci95(values)
        m = summary[name]
        print(f"{name:<12} {m['return']:>7.2f} ± {m['return_ci95']:<5.2f} {m['test_acc']:>7.2f} ± "
              f"{m['test_acc_ci95']:<5.2f} {m['fossilized_frac']:>5.2f} ± {m['fossilized_frac_ci95']:<4.2f} "
              f"{m['params_added']:>5.0f} ± {m['params_added_ci95']:<4.0f} {m['illegal']:>5.2f} ± "
              f"{m['illegal_ci95']:<4.2f}")
    paired = {}
    if "heuristic" in names:
        for ref in (n for n in names if n != "heuristic"):
            d = {m: paired_differences([r for r in results if r.policy in ("heuristic", ref)], ref, m)
                 ["heuristic"] for m in ("final_test_acc", "episode_return")}
            paired[ref] = d
            print(f"heuristic − {ref:<10} test acc {d['final_test_acc']['mean']:+6.2f} ± "
                  f"{d['final_test_acc']['ci95']:.2f} pp, return {d['episode_return']['mean']:+6.2f} ± "
                  f"{d['episode_return']['ci95']:.2f}")
    print(f"{elapsed:.0f} s")
    record = {"bench": "heuristic", "task": args.task, "instance_set": args.instance_set,
              "split": args.split if args.instance_set else None,
              "seeds": [s for s, _ in plan], "torch_threads": args.torch_threads,
              "heuristic_config": asdict(HeuristicConfig()), "summary": summary, "paired": paired,
              "episodes": [asdict(r) for r in results]}
    path = save("heuristic", record, args.out, tracked=args.record)
    print(f"saved {path}")
    return record


if __name__ == "__main__":
    main()
