"""Does the best growth decision depend on the instance? Fixed policies on every instance of a split.

Every fixed policy plays every instance of an instance set's split (pinned with
``reset(options={"instance": k})``) on the same seeds, under the ``delta`` reward:

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
the gaps are means over instances with 95 % bootstrap intervals. Claims checked on the test split
(spec section 15, issue 6): oracle - best single fixed >= 2 pp and oracle - no-growth >= 3 pp of
final test accuracy.

    python -m benchmarks.study instances --instance-set digits-mix --split test --seeds 3 --workers 2

Result: ``instances.jsonl``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from agents.provenance import provenance
from agents.stats import mean_ci95
from benchmarks._study.core import Design, Player, Recipe, env_spec, instance_index, names, seed_cases
from benchmarks._study.zoo import fixed_names, zoo_policy
from esper_env.core.instances import load_instance_set

ORACLE_VS_FIXED_BAR = 2.0
ORACLE_VS_NO_GROWTH_BAR = 3.0


def decision_gaps(acc: np.ndarray, policies: list[str]) -> dict[str, Any]:
    """Oracle vs best single fixed policy vs no-growth, leave-one-seed-out and in-sample.

    ``acc`` is (instances, policies, seeds) of final test accuracy.
    """
    n_inst, _, n_seeds = acc.shape
    ng = policies.index("no-growth")
    rows = np.arange(n_inst)
    held: dict[str, list[np.ndarray]] = {"oracle": [], "fixed": [], "no_growth": []}
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
    out: dict[str, Any] = {"best_fixed_by_fold": fixed_choice,
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


def design(args: Any) -> Design:
    iset = load_instance_set(args.instance_set)
    split = iset.split(args.split)
    ks = list(range(len(split) if args.instances is None else min(args.instances, len(split))))
    env_kwargs = {"instance_set": args.instance_set, "instance_split": args.split,
                  "reward_mode": "delta", **dict(args.env_kwarg)}
    spec = env_spec(**env_kwargs)
    probe = spec.make()
    blueprints = names(args.blueprints) or list(probe.unwrapped.blueprints)
    index = instance_index(probe)
    probe.close()
    policies = ["no-growth"] + fixed_names(blueprints, iset.n_slots)
    make = partial(zoo_policy, late_fraction=args.late_fraction)
    return Design([Player(q, spec, factory=make) for q in policies],
                  seed_cases(args.first_seed, args.seeds, ks),
                  {"iset": iset, "split": split, "ks": ks, "policies": policies,
                   "env_kwargs": env_kwargs, "index": index})


def report(args: Any, d: Design, episodes: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    iset, split, ks, policies = (d.context[k] for k in ("iset", "split", "ks", "policies"))
    seeds = sorted({s for s, _ in d.plan})
    rows = [{"policy": e["policy"], "instance": e["instance"], "k": d.context["index"][e["instance"]],
             "seed": e["seed"], "test_acc": e["final_test_acc"], "val_acc": e["final_val_acc"],
             "return": e["episode_return"], "params_added": e["params_added"],
             "fossilized": e["n_fossilized"]} for e in episodes]
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
        dm, dh = mean_ci95(list((acc[:, j, :] - ng).mean(1)))
        summary[q] = {"test_acc": float(acc[:, j, :].mean()), "vs_no_growth": dm,
                      "vs_no_growth_ci95": dh, "best_on": wins.count(q)}
        print(f"| {q} | {summary[q]['test_acc']:.2f} | {dm:+.2f} ± {dh:.2f} | {wins.count(q)} |")
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
    return {"bench": "instances", "instance_set": iset.name, "version": iset.version,
            "split": args.split, "instances": [split[k].name for k in ks], "seeds": seeds,
            "policies": policies, "late_fraction": args.late_fraction,
            "env_kwargs": d.context["env_kwargs"], "workers": args.workers,
            "torch_threads_per_worker": args.torch_threads, "elapsed_s": elapsed,
            "summary": summary, "gaps": gaps, "episodes": rows}


RECIPE = Recipe(
    name="instances", result="instances", summary=__doc__.splitlines()[0], description=__doc__,
    design=design, report=report,
    uses=("instance_set", "split", "instances", "blueprints", "late_fraction"),
    defaults={"seeds": 3, "first_seed": 1000, "instance_set": "digits-mix", "workers": None})
