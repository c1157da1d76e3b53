"""Does the best growth decision depend on the instance? Fixed policies on every instance of a split.

Every fixed policy plays every instance of an instance set's split (pinned with
``reset(options={"instance": k})``) on the same seeds:

* ``no-growth``;
* ``early-<bp>`` for every blueprint (and, with several slots, ``early-<bp>@<slot>`` for every
  slot): germinate as soon as the mask allows, fossilize as soon as allowed;
* ``late-<bp>``: the same, but never germinate before ``--late-fraction`` (0.56) of the
  instance's epoch budget (epoch 14 of 25).

Two policies are compared, both chosen from those fixed policies:

* the **oracle**: per instance, the best fixed policy on that instance;
* the **best single fixed policy**: the one with the best mean over all instances.

Both choices are made *leave-one-seed-out*: the choice scored on seed s is the best on the other
seeds, so neither gains from picking the luckiest of many noisy means (the in-sample numbers, which
do, are printed too, for information). Per instance the held-out scores are averaged over seeds;
the gaps are means over instances with 95 % bootstrap intervals. Claims checked on the test split (spec
section 15, issue 6): oracle - best single fixed >= 2 pp and oracle - no-growth >= 3 pp of final
test accuracy.

    python -m benchmarks.bench_instances --instance-set digits-mix --split test --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from agents.policies import NoGrowthPolicy, ScriptedPolicy
from agents.rollout import run_episode
from agents.stats import mean_ci95
from agents.workers import run_tasks
from benchmarks._common import add_output_args, provenance, save
from esper_env.core.catalog import BLUEPRINT_NAMES
from esper_env.core.instances import load_instance_set

ORACLE_VS_FIXED_BAR = 2.0
ORACLE_VS_NO_GROWTH_BAR = 3.0


# ---- policies -----------------------------------------------------------------------------------
def fixed_policies(blueprints: list[str], n_slots: int) -> list[str]:
    """Names of the fixed policies: no-growth, then early/late x blueprint (x slot)."""
    names = ["no-growth"]
    for when in ("early", "late"):
        for b in blueprints:
            names += [f"{when}-{b}"] if n_slots == 1 else \
                [f"{when}-{b}@{s}" for s in range(n_slots)]
    return names


def make_policy(name: str, env: Any, max_epochs: int, late_fraction: float) -> Any:
    """Build fixed policy ``name`` for an episode with ``max_epochs`` epochs."""
    if name == "no-growth":
        return NoGrowthPolicy(env)
    when, rest = name.split("-", 1)
    bp, _, slot = rest.partition("@")
    late = int(round(late_fraction * max_epochs)) if when == "late" else 0
    return ScriptedPolicy(env, bp, slot=int(slot or 0), earliest_epoch=late)


# ---- episodes -----------------------------------------------------------------------------------
_ENVS: dict[str, Any] = {}


def run_one(task: tuple[str, str, int, int, float]) -> dict[str, Any]:
    """Play one (policy, instance index, seed) episode; return its outcome as plain data."""
    env_json, policy, k, seed, late_fraction = task
    if env_json not in _ENVS:
        from esper_env.env import EsperEnv

        _ENVS[env_json] = EsperEnv(**json.loads(env_json))
    env = _ENVS[env_json]
    inst = env.instances[k]
    r = run_episode(env, make_policy(policy, env, inst.max_epochs, late_fraction), seed=seed,
                    name=policy, options={"instance": k})
    return {"policy": policy, "instance": inst.name, "k": k, "seed": seed,
            "test_acc": r.final_test_acc, "val_acc": r.final_val_acc, "return": r.episode_return,
            "params_added": r.params_added, "fossilized": r.n_fossilized}


# ---- statistics ---------------------------------------------------------------------------------
def decision_gaps(acc: np.ndarray, policies: list[str]) -> dict[str, Any]:
    """Oracle vs best single fixed policy vs no-growth, leave-one-seed-out and in-sample.

    ``acc`` is (instances, policies, seeds) of final test accuracy.
    """
    n_inst, _, n_seeds = acc.shape
    ng = policies.index("no-growth")
    rows = np.arange(n_inst)
    held = {"oracle": [], "fixed": [], "no_growth": []}
    fixed_choice = []
    for s in range(n_seeds):
        other = [t for t in range(n_seeds) if t != s]
        chosen = acc[:, :, other].mean(2)  # (instances, policies) on the other seeds
        best_fixed = int(chosen.mean(0).argmax())
        fixed_choice.append(policies[best_fixed])
        held["oracle"].append(acc[rows, chosen.argmax(1), s])
        held["fixed"].append(acc[:, best_fixed, s])
        held["no_growth"].append(acc[:, ng, s])
    per_inst = {k: np.mean(v, axis=0) for k, v in held.items()}  # averaged over held-out seeds
    means = acc.mean(2)
    in_fixed = int(means.mean(0).argmax())
    out = {"best_fixed_by_fold": fixed_choice,
           "best_fixed_in_sample": policies[in_fixed],
           "oracle_choice_in_sample": [policies[j] for j in means.argmax(1)]}
    for name, a, b in (("oracle_vs_fixed", "oracle", "fixed"),
                       ("oracle_vs_no_growth", "oracle", "no_growth"),
                       ("fixed_vs_no_growth", "fixed", "no_growth")):
        m, h = mean_ci95(list(per_inst[a] - per_inst[b]))
        out[name], out[name + "_ci95"] = m, h
    out["in_sample_oracle_vs_fixed"] = float((means.max(1) - means[:, in_fixed]).mean())
    out["in_sample_oracle_vs_no_growth"] = float((means.max(1) - means[:, ng]).mean())
    out["bars_met"] = bool(out["oracle_vs_fixed"] >= ORACLE_VS_FIXED_BAR
                           and out["oracle_vs_no_growth"] >= ORACLE_VS_NO_GROWTH_BAR)
    return out


# ---- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instance-set", default="digits-mix",
                   help="a shipped set's name or a JSON file")
    p.add_argument("--split", default="test", choices=("train", "test"))
    p.add_argument("--seeds", type=int, default=3, help="seeds per instance and policy")
    p.add_argument("--first-seed", type=int, default=1000)
    p.add_argument("--instances", type=int, default=None,
                   help="use only the first N instances of the split (default: all)")
    p.add_argument("--late-fraction", type=float, default=0.56,
                   help="late policies never germinate before this fraction of the budget")
    p.add_argument("--env-json", default="{}",
                   help="extra EsperEnv keyword arguments as JSON (e.g. a tiny test config)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--torch-threads", type=int, default=1)
    add_output_args(p)
    args = p.parse_args(argv)

    iset = load_instance_set(args.instance_set)
    split = iset.split(args.split)
    ks = list(range(len(split) if args.instances is None else min(args.instances, len(split))))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    env_kwargs = {"instance_set": args.instance_set, "instance_split": args.split,
                  "reward_mode": "delta", **json.loads(args.env_json)}
    env_json = json.dumps(env_kwargs, sort_keys=True)
    policies = fixed_policies(list(BLUEPRINT_NAMES["cnn"]), iset.n_slots)
    tasks = [(env_json, q, k, s, args.late_fraction) for q in policies for k in ks for s in seeds]

    t0 = time.perf_counter()
    rows = run_tasks(run_one, tasks, args.workers, args.torch_threads)
    elapsed = time.perf_counter() - t0

    by = {(r["policy"], r["k"], r["seed"]): r["test_acc"] for r in rows}
    acc = np.array([[[by[q, k, s] for s in seeds] for q in policies] for k in ks])
    gaps = decision_gaps(acc, policies)
    ng = acc[:, policies.index("no-growth"), :]
    prov = provenance()
    print(f"# {iset.name} v{iset.version} {args.split} split: {len(ks)} instances x "
          f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}) x {len(policies)} fixed policies; "
          f"{prov['cpu']}, torch {prov['torch']}, commit {prov['commit']}; {elapsed:.0f} s")
    print("\n| policy | mean test acc | vs no-growth (paired, 95 % CI over instances) | "
          "best on instances |")
    print("|---|---|---|---|")
    wins = gaps["oracle_choice_in_sample"]
    summary = {}
    for j, q in enumerate(policies):
        d = mean_ci95(list((acc[:, j, :] - ng).mean(1)))
        summary[q] = {"test_acc": float(acc[:, j, :].mean()), "vs_no_growth": d[0],
                      "vs_no_growth_ci95": d[1], "best_on": wins.count(q)}
        print(f"| {q} | {summary[q]['test_acc']:.2f} | {d[0]:+.2f} ± {d[1]:.2f} | "
              f"{wins.count(q)} |")
    print(f"\nleave-one-seed-out: oracle vs best single fixed policy "
          f"({', '.join(sorted(set(gaps['best_fixed_by_fold'])))}): "
          f"{gaps['oracle_vs_fixed']:+.2f} ± {gaps['oracle_vs_fixed_ci95']:.2f} pp "
          f"(bar >= {ORACLE_VS_FIXED_BAR}); oracle vs no-growth "
          f"{gaps['oracle_vs_no_growth']:+.2f} ± {gaps['oracle_vs_no_growth_ci95']:.2f} pp "
          f"(bar >= {ORACLE_VS_NO_GROWTH_BAR}); best fixed vs no-growth "
          f"{gaps['fixed_vs_no_growth']:+.2f} ± {gaps['fixed_vs_no_growth_ci95']:.2f} pp")
    print(f"in sample (optimistic, for information): oracle vs best fixed "
          f"({gaps['best_fixed_in_sample']}) {gaps['in_sample_oracle_vs_fixed']:+.2f} pp, "
          f"oracle vs no-growth {gaps['in_sample_oracle_vs_no_growth']:+.2f} pp")
    print(f"bars {'met' if gaps['bars_met'] else 'NOT met'}")
    record = {"bench": "instances", "instance_set": iset.name, "version": iset.version,
              "split": args.split, "instances": [split[k].name for k in ks], "seeds": seeds,
              "policies": policies, "late_fraction": args.late_fraction,
              "env_kwargs": env_kwargs, "elapsed_s": elapsed, "summary": summary,
              "gaps": gaps, "episodes": rows}
    path = save("instances", record, args.out, tracked=args.record)
    print(f"saved to {path}")
    return record


if __name__ == "__main__":
    main()
