"""The heuristic against random and no-growth on held-out seeds (a task, or an instance set's split).

Every policy plays the same seeded episodes (held-out seeds 1000, 1001, … by default; the
heuristic's defaults were tuned on seeds 0–19 only), in order: the heuristic's blueprint
penalties carry over from one episode to the next, and random is seeded once, with
``--first-seed``. Over an instance split (``--instance-set``) the episodes cycle through its
instances (default: each instance once). Prints mean ± 95 % bootstrap CI of return, final test
accuracy, fossilized fraction (episodes with a fossil), parameters added and illegal actions, and
the paired differences heuristic − random and heuristic − no-growth (same episodes).

Claim checked (issue "Agents"): on digits over 20 seeds the heuristic fossilizes a seed in most
episodes and beats the random policy in mean return and mean final test accuracy.

    python -m benchmarks.study heuristic --seeds 20 --record
    python -m benchmarks.study heuristic --instance-set digits-mix --split test

Result: ``heuristic.jsonl``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from agents.heuristic import HeuristicConfig
from agents.provenance import provenance
from agents.rollout import episode_plan
from agents.stats import mean_ci95, paired_differences
from benchmarks._study.core import Design, Player, Recipe, as_result, check_baselines, env_spec, names

COLUMNS = {"return": "episode_return", "test_acc": "final_test_acc", "fossilized_frac": "n_fossilized",
           "params_added": "params_added", "illegal": "illegal_actions"}
"""Summary key → episode quantity."""


def design(args: Any) -> Design:
    kwargs: dict[str, Any] = {"task": args.task}
    if args.max_epochs is not None:
        kwargs["max_epochs"] = args.max_epochs
    if args.instance_set:
        kwargs.update(instance_set=args.instance_set, instance_split=args.split)
    kwargs.update(dict(args.env_kwarg))
    spec = env_spec(**kwargs)
    probe = spec.make()
    plan = episode_plan(probe, args.first_seed, args.seeds)
    policies = names(args.policies)
    check_baselines(policies, probe)
    probe.close()
    return Design([Player(p, spec, sequential=True) for p in policies], plan, {"policies": policies})


def report(args: Any, d: Design, episodes: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    results = [as_result(e) for e in episodes]
    plan, policies = d.plan, d.context["policies"]
    prov = provenance()
    where = f"{args.instance_set} {args.split} split" if args.instance_set else args.task
    print(f"# {where}, {len(plan)} episodes per policy (seeds {plan[0][0]}..{plan[-1][0]}); "
          f"{prov['cpu']}, torch {prov['torch']} ({args.torch_threads} thread(s)), commit {prov['commit']}")
    print(f"{'policy':<12} {'return':>15} {'test acc %':>15} {'fossilized':>13} {'+params':>13} "
          f"{'illegal':>13}")
    summary: dict[str, Any] = {}
    for name in policies:
        rows = [r for r in results if r.policy == name]
        summary[name] = {}
        for key, attr in COLUMNS.items():
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
    if "heuristic" in policies:
        for ref in (n for n in policies if n != "heuristic"):
            dd = {m: paired_differences([r for r in results if r.policy in ("heuristic", ref)], ref, m)
                  ["heuristic"] for m in ("final_test_acc", "episode_return")}
            paired[ref] = dd
            print(f"heuristic − {ref:<10} test acc {dd['final_test_acc']['mean']:+6.2f} ± "
                  f"{dd['final_test_acc']['ci95']:.2f} pp, return {dd['episode_return']['mean']:+6.2f} ± "
                  f"{dd['episode_return']['ci95']:.2f}")
    print(f"{elapsed:.0f} s")
    return {"bench": "heuristic", "task": args.task, "instance_set": args.instance_set,
            "split": args.split if args.instance_set else None,
            "seeds": [s for s, _ in plan], "torch_threads": args.torch_threads,
            "env_kwargs": dict(args.env_kwarg),
            "heuristic_config": asdict(HeuristicConfig()), "summary": summary, "paired": paired,
            "episodes": [asdict(r) for r in results]}


RECIPE = Recipe(
    name="heuristic", result="heuristic", summary=__doc__.splitlines()[0], description=__doc__,
    design=design, report=report,
    uses=("task", "max_epochs", "instance_set", "split", "policies"),
    defaults={"first_seed": 1000, "policies": "heuristic,random,no-growth"})
