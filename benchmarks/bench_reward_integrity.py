"""Does the reward rank growth policies the way final test accuracy does? (spec section 9)

A fixed zoo of policies plays the same seeds under each reward mode:

* ``no-growth`` (always WAIT);
* ``early-<bp>`` for every blueprint: germinate at the first epoch the mask allows, fossilize as
  soon as FOSSILIZE is legal;
* ``late-<bp>`` for every blueprint: the same, but never germinate before ``--late-fraction``
  (0.56) of the epoch budget has been trained (epoch 14 of 25);
* ``random``: uniform over the legal actions, seeded per episode (the same actions in every mode);
* ``heuristic``: ``agents.heuristic.HeuristicPolicy``, once that module exists.

The dynamics do not depend on the reward mode, so every (policy, seed) episode is the same in all
modes (the script checks that the final test accuracies agree) and only the returns differ.

With ``--instance-set`` every policy plays every instance of ``--split`` (pinned with
``reset(options={"instance": k})``) on every seed; a *case* is then an (instance, seed) pair and
all differences are paired per case.

Printed per mode: for every policy the mean return and final test accuracy, and the paired
differences to no-growth on the same seeds with 95 % bootstrap intervals; the Spearman rank correlation
between the policies' mean return and mean final test accuracy (with a 95 % bootstrap interval
over seeds) and, for information, the Spearman correlation of the per-episode paired differences
(return vs test accuracy, against no-growth on the same seed). Checked for the default mode:

1. policy-level Spearman >= 0.8;
2. no policy whose test-accuracy difference is significantly negative (CI below 0) has a higher
   mean return than no-growth;
3. no policy whose test-accuracy difference is significantly positive (CI above 0) has a lower
   mean return than no-growth (the rent never flips the sign of a real gain).

Seeds: the default ``--first-seed 1000`` keeps the reported seeds apart from the seeds 0-199 used
while designing the reward and calibrating the task. Episodes run in ``--workers`` processes with
one torch thread each.

    python -m benchmarks.bench_reward_integrity --seeds 20            # digits, ~4 min on 2 cores
    python -m benchmarks.bench_reward_integrity --seeds 20 --record   # also append to benchmarks/results
    python -m benchmarks.bench_reward_integrity --instance-set digits-mix --split test --seeds 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from typing import Any

import numpy as np

from agents.policies import ScriptedPolicy, make_baseline
from agents.rollout import run_episode
from agents.stats import bootstrap_spearman, mean_ci95, spearman
from agents.workers import run_tasks
from benchmarks._common import add_output_args, provenance, save
from esper_env.config import REWARD_MODES
from esper_env.core.catalog import BLUEPRINT_NAMES

DEFAULT_MODE = "contribution"
SPEARMAN_BAR = 0.8


# ---- the zoo ------------------------------------------------------------------------------------
def zoo_names(blueprints: list[str], include_heuristic: bool = True) -> list[str]:
    """Policy names of the zoo, in table order."""
    names = ["no-growth"] + [f"early-{b}" for b in blueprints] + [f"late-{b}" for b in blueprints]
    names.append("random")
    if include_heuristic and importlib.util.find_spec("agents.heuristic") is not None:
        names.append("heuristic")
    return names


def make_policy(name: str, env: Any, seed: int, late_epoch: int) -> Any:
    """Build zoo policy ``name`` for one episode (random policies are seeded by the episode)."""
    if name in ("no-growth", "random", "heuristic"):
        return make_baseline(name, env, seed=seed)
    when, bp = name.split("-", 1)
    return ScriptedPolicy(env, bp, earliest_epoch=late_epoch if when == "late" else 0)


# ---- episodes (run in worker processes) ---------------------------------------------------------
_ENVS: dict[str, Any] = {}


def run_one(task: tuple[str, str, int, int | None, str, float]) -> dict[str, Any]:
    """Play one (mode, policy, seed, instance) episode; return its outcome as plain data."""
    mode, policy, seed, k, env_json, late_fraction = task
    key = f"{mode}|{env_json}"
    if key not in _ENVS:
        from esper_env.env import EsperEnv

        _ENVS[key] = EsperEnv(**{**json.loads(env_json), "reward_mode": mode})
    env = _ENVS[key]
    max_epochs = env.config.task.max_epochs if k is None else env.instances[k].max_epochs
    late = int(round(late_fraction * max_epochs))
    options = None if k is None else {"instance": k}
    t = time.perf_counter()
    # the random policy's actions depend on the case only, so every mode replays them
    r = run_episode(env, make_policy(policy, env, seed + 7919 * (k or 0), late), seed=seed,
                    name=policy, options=options)
    return {"mode": mode, "policy": policy, "seed": seed, "k": k, "case": f"{k}:{seed}",
            "instance": r.instance, "return": r.episode_return,
            "test_acc": r.final_test_acc, "val_acc": r.final_val_acc,
            "params_added": r.params_added, "fossilized": r.n_fossilized,
            "culled": r.lifecycle.get("culled", 0), "illegal": r.illegal_actions,
            "wall_s": time.perf_counter() - t}


# ---- statistics ---------------------------------------------------------------------------------
def summarise(rows: list[dict[str, Any]], policies: list[str], seeds: list[Any]
              ) -> dict[str, Any]:
    """Per-policy paired statistics and the rank correlations of one mode.

    ``seeds`` are the cases every policy played (seeds, or "instance:seed" strings); rows are
    matched on ``row["case"]`` when present, else on ``row["seed"]``.
    """
    by = {(r["policy"], r.get("case", r["seed"])): r for r in rows}
    ret = np.array([[by[p, s]["return"] for s in seeds] for p in policies])
    acc = np.array([[by[p, s]["test_acc"] for s in seeds] for p in policies])
    base = policies.index("no-growth")
    per_policy = {}
    for i, p in enumerate(policies):
        d_acc = mean_ci95(list(acc[i] - acc[base]))
        d_ret = mean_ci95(list(ret[i] - ret[base]))
        per_policy[p] = {
            "return": float(ret[i].mean()), "test_acc": float(acc[i].mean()),
            "test_delta": d_acc[0], "test_delta_ci95": d_acc[1],
            "return_delta": d_ret[0], "return_delta_ci95": d_ret[1],
            "fossilized": int(sum(by[p, s]["fossilized"] for s in seeds)),
            "params_added": float(np.mean([by[p, s]["params_added"] for s in seeds])),
        }
    rho = spearman(list(ret.mean(1)), list(acc.mean(1)))
    lo, hi = bootstrap_spearman(ret, acc)
    others = [i for i in range(len(policies)) if i != base]
    ep_rho = spearman(list((ret[others] - ret[base]).ravel()),
                      list((acc[others] - acc[base]).ravel()))
    harmful_paid = [p for p, v in per_policy.items()
                    if v["test_delta"] + v["test_delta_ci95"] < 0 and v["return_delta"] > 0]
    helpful_charged = [p for p, v in per_policy.items()
                       if v["test_delta"] - v["test_delta_ci95"] > 0 and v["return_delta"] < 0]
    return {"per_policy": per_policy, "spearman": rho, "spearman_ci95": [lo, hi],
            "episode_spearman": ep_rho, "harmful_out_earn_no_growth": harmful_paid,
            "helpful_earn_less_than_no_growth": helpful_charged,
            "bars_met": bool(rho >= SPEARMAN_BAR and not harmful_paid and not helpful_charged)}


def markdown_table(mode: str, s: dict[str, Any]) -> str:
    """The per-policy table of one mode, as Markdown."""
    lines = [f"| policy ({mode}) | test acc | test vs no-growth | return | return vs no-growth |"
             " fossilized |",
             "|---|---|---|---|---|---|"]
    for p, v in s["per_policy"].items():
        paired = "—" if p == "no-growth" else (
            f"{v['test_delta']:+.2f} ± {v['test_delta_ci95']:.2f}")
        paired_r = "—" if p == "no-growth" else (
            f"{v['return_delta']:+.2f} ± {v['return_delta_ci95']:.2f}")
        lines.append(f"| {p} | {v['test_acc']:.2f} | {paired} | {v['return']:.2f} | {paired_r} |"
                     f" {v['fossilized']} |")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits")
    p.add_argument("--seeds", type=int, default=20, help="episodes per policy and mode")
    p.add_argument("--first-seed", type=int, default=1000,
                   help="seeds first..first+n-1 (held out from reward design: 0-199 were used)")
    p.add_argument("--max-epochs", type=int, default=25)
    p.add_argument("--late-fraction", type=float, default=0.56,
                   help="late policies never germinate before this fraction of the epoch budget "
                        "(0.56: epoch 14 of 25)")
    p.add_argument("--instance-set", default=None,
                   help="play every instance of this set's --split (a name or a JSON file)")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--instances", type=int, default=None,
                   help="with --instance-set: only the first N instances of the split")
    p.add_argument("--modes", default=",".join(REWARD_MODES))
    p.add_argument("--blueprints", default=",".join(BLUEPRINT_NAMES["cnn"]))
    p.add_argument("--policies", default=None,
                   help="comma-separated subset of the zoo (default: the whole zoo)")
    p.add_argument("--env-json", default="{}",
                   help="extra EsperEnv keyword arguments as JSON (e.g. a tiny test config)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (1 = run in this process)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads per worker")
    add_output_args(p)
    args = p.parse_args(argv)

    blueprints = args.blueprints.split(",")
    policies = zoo_names(blueprints)
    if args.policies:
        wanted = args.policies.split(",")
        unknown = sorted(set(wanted) - set(policies))
        if unknown:
            p.error(f"unknown policies {unknown}; the zoo has {policies}")
        policies = [q for q in policies if q in wanted]
    if "no-growth" not in policies:
        p.error("the zoo needs no-growth (every difference is paired against it)")
    modes = args.modes.split(",")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.instance_set is None:
        env_kwargs = {"task": args.task, "max_epochs": args.max_epochs}
        ks: list[int | None] = [None]
    else:
        from esper_env.core.instances import load_instance_set

        n = len(load_instance_set(args.instance_set).split(args.split))
        env_kwargs = {"instance_set": args.instance_set, "instance_split": args.split}
        ks = list(range(n if args.instances is None else min(n, args.instances)))
    env_kwargs.update(json.loads(args.env_json))
    env_json = json.dumps(env_kwargs, sort_keys=True)
    cases = [f"{k}:{s}" for k in ks for s in seeds]
    tasks = [(m, q, s, k, env_json, args.late_fraction)
             for m in modes for q in policies for k in ks for s in seeds]

    t0 = time.perf_counter()
    rows = run_tasks(run_one, tasks, args.workers, args.torch_threads)
    elapsed = time.perf_counter() - t0

    # The reward mode must not change what happens: same test accuracy in every mode.
    acc = {}
    mismatched = 0
    for r in rows:
        k = (r["policy"], r["case"])
        if k in acc and acc[k] != r["test_acc"]:
            mismatched += 1
        acc.setdefault(k, r["test_acc"])

    prov = provenance()
    where = (f"{args.task}, {args.max_epochs} epochs" if args.instance_set is None else
             f"{args.instance_set} {args.split} split, {len(ks)} instances")
    print(f"# {where}, {len(policies)} policies x {args.seeds} seeds "
          f"({seeds[0]}..{seeds[-1]}), modes {modes}; {prov['cpu']}, "
          f"torch {prov['torch']}, {args.torch_threads} torch thread(s) x {args.workers} workers, "
          f"commit {prov['commit']}; {elapsed:.0f} s")
    if mismatched:
        print(f"WARNING: {mismatched} episodes differ in test accuracy between reward modes")
    results = {}
    for m in modes:
        s = summarise([r for r in rows if r["mode"] == m], policies, cases)
        results[m] = s
        print()
        print(markdown_table(m, s))
        lo, hi = s["spearman_ci95"]
        print(f"\n{m}: policy-level Spearman(mean return, mean test acc) = {s['spearman']:.3f} "
              f"(95 % bootstrap CI {lo:.2f}..{hi:.2f}); per-episode paired Spearman = "
              f"{s['episode_spearman']:.3f}")
        print(f"{m}: significantly harmful policies out-earning no-growth: "
              f"{s['harmful_out_earn_no_growth'] or 'none'}; significantly helpful policies "
              f"earning less than no-growth: {s['helpful_earn_less_than_no_growth'] or 'none'}")
    print("\n| mode | policy-level Spearman (95 % CI) | per-episode Spearman | harmful out-earn "
          "no-growth | helpful earn less | bars |")
    print("|---|---|---|---|---|---|")
    for m, s in results.items():
        lo, hi = s["spearman_ci95"]
        bars = ("met" if s["bars_met"] else "NOT met") if m == DEFAULT_MODE else "—"
        print(f"| {m} | {s['spearman']:.2f} ({lo:.2f}..{hi:.2f}) | {s['episode_spearman']:.2f} | "
              f"{', '.join(s['harmful_out_earn_no_growth']) or 'none'} | "
              f"{', '.join(s['helpful_earn_less_than_no_growth']) or 'none'} | {bars} |")
    record = {"bench": "reward_integrity", "task": args.task, "seeds": seeds,
              "max_epochs": args.max_epochs, "late_fraction": args.late_fraction,
              "instance_set": args.instance_set,
              "split": args.split if args.instance_set else None, "cases": cases,
              "policies": policies,
              "env_kwargs": env_kwargs, "workers": args.workers,
              "torch_threads_per_worker": args.torch_threads, "elapsed_s": elapsed,
              "mode_mismatches": mismatched, "results": results, "episodes": rows}
    path = save("reward_integrity", record, args.out, tracked=args.record)
    print(f"\nsaved to {path}")
    return record


if __name__ == "__main__":
    main()
