"""Trained agents on held-out seeds: esper-train's defaults per algorithm, against the baselines.

First the training step: for each algorithm (``--algos``) and training seed (``--train-seeds``:
0, 1, …) it runs ``esper-train`` with its defaults (the YAML's timesteps unless
``--total-timesteps``; ``--no-policy-mask`` variants too with ``--unmasked-heads``), in
``--workers`` processes. Then every best model (by validation return on seeds 500+) plays the
held-out seeds (``--seeds`` of them from ``--first-seed`` 1000), together with the baselines
(``--policies``: no-growth, random, heuristic) on the same seeds. It prints, per policy, mean ±
95 % CI of the return, final test accuracy, fossilized seeds and the illegal-action fraction at
evaluation (deterministic actions), and the paired test-accuracy difference to no-growth.

Claim checked (issue "Agents"): with esper-train's defaults, ppo, dqn and per-dqn play < 5 % illegal
actions at evaluation on digits.

    python -m benchmarks.study agents --algos ppo,dqn,per-dqn --train-seeds 1 --workers 2

Result: ``agents.jsonl``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from agents.algos import ALGOS
from agents.envs import EnvSpec
from agents.provenance import provenance
from agents.stats import mean_ci95, paired_differences
from agents.workers import run_tasks
from benchmarks._common import OptionError
from benchmarks._study.core import (
    Design,
    Player,
    Recipe,
    as_result,
    check_baselines,
    env_spec,
    names,
    seed_cases,
)


def add_options(p: Any) -> None:
    p.add_argument("--algos", default="ppo,dqn,per-dqn,maskable-ppo",
                   help="algorithms to train (comma-separated)")
    p.add_argument("--unmasked-heads", action="store_true",
                   help="also train ppo/dqn/per-dqn with --no-policy-mask (mask feature + penalty only)")
    p.add_argument("--train-seeds", type=int, default=1, help="training seeds per algorithm (0, 1, ...)")
    p.add_argument("--total-timesteps", type=int, default=None, help="default: the YAML's n_timesteps")


def train_one(task: dict[str, Any]) -> float:
    """Worker: one esper-train run into ``task["output"]``; its wall seconds."""
    from agents.train import TrainArgs, train

    t0 = time.perf_counter()
    train(TrainArgs(algo=task["algo"], seed=task["seed"], total_timesteps=task["timesteps"],
                    output=task["output"], env_kwargs=task["env_kwargs"],
                    policy_mask=task["policy_mask"], progress_bar=False, tensorboard=False))
    return time.perf_counter() - t0


def design(args: Any) -> Design:
    env_kwargs: dict[str, Any] = {"task": args.task, **dict(args.env_kwarg)}
    if args.max_epochs is not None:
        env_kwargs["max_epochs"] = args.max_epochs
    spec = env_spec(**env_kwargs)
    probe = spec.make()
    check_baselines(names(args.policies), probe)
    probe.close()
    algos = names(args.algos)
    unknown = [a for a in algos if a not in ALGOS]
    if unknown or not algos:
        raise OptionError(f"algorithms {unknown or algos} invalid; allowed: {', '.join(ALGOS)}")
    tmp = Path(tempfile.mkdtemp(prefix="esper-study-agents-"))
    runs = []
    for algo in algos:
        variants = [True] + ([False] if args.unmasked_heads and algo != "maskable-ppo" else [])
        for policy_mask in variants:
            for seed in range(args.train_seeds):
                name = algo + ("" if policy_mask else "-unmasked-head")
                runs.append({"algo": algo, "name": name, "seed": seed, "policy_mask": policy_mask,
                             "timesteps": args.total_timesteps, "env_kwargs": env_kwargs,
                             "output": str(tmp / f"{name}-seed{seed}")})
    t0 = time.perf_counter()
    before = torch.get_num_threads()
    try:
        # one run per dispatch: training runs are long and uneven
        train_s = run_tasks(train_one, runs, args.workers, args.torch_threads)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(before)
    players = [Player(r["name"], EnvSpec.load(Path(r["output"]) / "env_config.json"),
                      model=r["output"], tags={"train_seed": r["seed"]}) for r in runs]
    players += [Player(b, spec, sequential=True) for b in names(args.policies)]
    return Design(players, seed_cases(args.first_seed, args.seeds),
                  {"runs": runs, "train_s": train_s, "train_elapsed": time.perf_counter() - t0},
                  cleanup=[lambda: shutil.rmtree(tmp, ignore_errors=True)])


def report(args: Any, d: Design, episodes: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    results = [as_result(e) for e in episodes]
    eval_seeds = [s for s, _ in d.plan]
    prov = provenance()
    print(f"# {args.task}, held-out seeds {eval_seeds[0]}..{eval_seeds[-1]}, {args.train_seeds} "
          f"training seed(s); {prov['cpu']}, torch {prov['torch']}, commit {prov['commit']}")
    print(f"{'policy':<28} {'n':>3} {'return':>14} {'test acc %':>15} {'fossilized':>11} "
          f"{'illegal %':>10} {'vs no-growth (pp)':>18}")
    diffs = paired_differences(results, "no-growth") if "no-growth" in names(args.policies) else {}
    summary = {}
    for name in dict.fromkeys(e.policy for e in results):
        rows = [e for e in results if e.policy == name]
        ret, ret_h = mean_ci95([e.episode_return for e in rows])
        acc, acc_h = mean_ci95([e.final_test_acc for e in rows])
        illegal = 100.0 * sum(e.illegal_actions for e in rows) / sum(e.length for e in rows)
        fossil = sum(e.n_fossilized > 0 for e in rows) / len(rows)
        dd = diffs.get(name)
        summary[name] = {"n": len(rows), "return": ret, "return_ci95": ret_h, "test_acc": acc,
                         "test_acc_ci95": acc_h, "illegal_pct": illegal, "fossilized_frac": fossil,
                         "test_acc_minus_no_growth": dd}
        dtxt = f"{dd['mean']:+7.2f} ± {dd['ci95']:.2f}" if dd else ""
        print(f"{name:<28} {len(rows):>3} {ret:>7.2f} ± {ret_h:<4.2f} {acc:>7.2f} ± {acc_h:<5.2f} "
              f"{fossil:>11.2f} {illegal:>10.2f} {dtxt:>18}")
    train_s = {f"{r['name']}@{r['seed']}": round(s, 1)
               for r, s in zip(d.context["runs"], d.context["train_s"], strict=True)}
    total = d.context["train_elapsed"] + elapsed
    print(f"training wall time per run (s): {train_s}; total {total:.0f} s")
    return {"bench": "agents", "task": args.task, "eval_seeds": eval_seeds,
            "train_seeds": args.train_seeds, "total_timesteps": args.total_timesteps,
            "env_kwargs": dict(args.env_kwarg), "summary": summary, "train_s": train_s,
            "workers": args.workers, "torch_threads": args.torch_threads, "elapsed_s": total,
            "episodes": [asdict(e) for e in results]}


RECIPE = Recipe(
    name="agents", result="agents", summary=__doc__.splitlines()[0], description=__doc__,
    design=design, report=report, add_options=add_options,
    uses=("task", "max_epochs", "policies"),
    defaults={"seeds": 20, "first_seed": 1000, "policies": "no-growth,random,heuristic"},
    threads=lambda args: 1 if args.workers > 1 else 2)
