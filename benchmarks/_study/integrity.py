"""Does the reward rank growth policies the way final test accuracy does? (spec section 9)

A fixed zoo of policies plays the same seeds under each reward mode (``--modes``):

* ``no-growth`` (always WAIT);
* ``early-<bp>`` for every blueprint: germinate at the first epoch the mask allows, fossilize as
  soon as FOSSILIZE is legal;
* ``late-<bp>`` for every blueprint: the same, but never germinate before ``--late-fraction``
  (0.56) of the epoch budget has been trained (epoch 14 of 25);
* ``random``: uniform over the legal actions, seeded per episode (the same actions in every mode);
* ``heuristic``: :class:`agents.heuristic.HeuristicPolicy`, made afresh for every episode.

The dynamics do not depend on the reward mode, so every (policy, seed) episode is the same in all
modes (the recipe checks that the final test accuracies agree) and only the returns differ.

With ``--instance-set`` every policy plays every instance of ``--split`` (pinned with
``reset(options={"instance": k})``) on every seed; a *case* is then an (instance, seed) pair and
all differences are paired per case.

Printed per mode: for every policy the mean return and final test accuracy, and the paired
differences to no-growth on the same seeds with 95 % bootstrap intervals; the Spearman rank
correlation between the policies' mean return and mean final test accuracy (with a 95 % bootstrap
interval over cases) and, for information, the Spearman correlation of the per-episode paired
differences (return vs test accuracy, against no-growth on the same case); both as esper-bench
computes them (:func:`agents.bench.integrity`). Checked for the default mode:

1. policy-level Spearman >= 0.8;
2. no policy whose test-accuracy difference is significantly negative (CI below 0) has a higher
   mean return than no-growth;
3. no policy whose test-accuracy difference is significantly positive (CI above 0) has a lower
   mean return than no-growth (the rent never flips the sign of a real gain).

Seeds: the default ``--first-seed 1000`` keeps the reported seeds apart from the seeds 0-199 used
while designing the reward and calibrating the task. Episodes run in ``--workers`` processes
(default: one per core) with one torch thread each.

    python -m benchmarks.study integrity --seeds 20            # digits, ~15 min on 2 cores
    python -m benchmarks.study integrity --seeds 20 --record   # also append to benchmarks/results
    python -m benchmarks.study integrity --instance-set digits-mix --split test --seeds 3

Result: ``reward_integrity.jsonl``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from agents.bench import integrity
from agents.provenance import provenance
from agents.stats import mean_ci95
from benchmarks._common import OptionError
from benchmarks._study.core import (
    Design,
    Player,
    Recipe,
        env_spec,
    instance_index,
    names,
    seed_cases,
)
from benchmarks._study.zoo import fixed_names, zoo_policy
from esper_env.config import REWARD_MODES

DEFAULT_MODE = "contribution"
SPEARMAN_BAR = 0.8


def zoo_names(blueprints: list[str]) -> list[str]:
    """Policy names of the zoo, in table order."""
    return ["no-growth", *fixed_names(blueprints), "random", "heuristic"]


def summarise(rows: list[dict[str, Any]], policies: list[str], cases: list[Any]) -> dict[str, Any]:
    """Per-policy paired statistics of one mode, and the integrity bars.

    ``rows`` (one mode's) are matched on ``row["case"]`` when present, else on ``row["seed"]``;
    ``cases`` are the cases every policy played. The rank correlations are esper-bench's
    (:func:`agents.bench.integrity`).
    """
    by = {(r["policy"], r.get("case", r["seed"])): r for r in rows}
    ret = np.array([[by[p, c]["return"] for c in cases] for p in policies])
    acc = np.array([[by[p, c]["test_acc"] for c in cases] for p in policies])
    base = policies.index("no-growth")
    per_policy = {}
    for i, p in enumerate(policies):
        d_acc = mean_ci95(list(acc[i] - acc[base]))
        d_ret = mean_ci95(list(ret[i] - ret[base]))
        per_policy[p] = {
            "return": float(ret[i].mean()), "test_acc": float(acc[i].mean()),
            "test_delta": d_acc[0], "test_delta_ci95": d_acc[1],
            "return_delta": d_ret[0], "return_delta_ci95": d_ret[1],
            "fossilized": int(sum(by[p, c]["fossilized"] for c in cases)),
            "params_added": float(np.mean([by[p, c]["params_added"] for c in cases])),
        }
    rank = integrity([{"policy": p, "reward_mode": "", "seed": c, "instance": None,
                       "episode_return": by[p, c]["return"], "final_test_acc": by[p, c]["test_acc"]}
                      for p in policies for c in cases], "")
    rho, (lo, hi) = rank["spearman"], rank["spearman_ci95"]
    harmful_paid = [p for p, v in per_policy.items()
                    if v["test_delta"] + v["test_delta_ci95"] < 0 and v["return_delta"] > 0]
    helpful_charged = [p for p, v in per_policy.items()
                       if v["test_delta"] - v["test_delta_ci95"] > 0 and v["return_delta"] < 0]
    return {"per_policy": per_policy, "spearman": rho, "spearman_ci95": [lo, hi],
            "episode_spearman": rank["episode_spearman"],
            "harmful_out_earn_no_growth": harmful_paid,
            "helpful_earn_less_than_no_growth": helpful_charged,
            "bars_met": bool(rho >= SPEARMAN_BAR and not harmful_paid and not helpful_charged)}


def markdown_table(mode: str, s: dict[str, Any]) -> str:
    """The per-policy table of one mode, as Markdown."""
    lines = [f"| policy ({mode}) | test acc | test vs no-growth | return | return vs no-growth |"
             " fossilized |",
             "|---|---|---|---|---|---|"]
    for p, v in s["per_policy"].items():
        paired = "—" if p == "no-growth" else f"{v['test_delta']:+.2f} ± {v['test_delta_ci95']:.2f}"
        paired_r = "—" if p == "no-growth" else (
            f"{v['return_delta']:+.2f} ± {v['return_delta_ci95']:.2f}")
        lines.append(f"| {p} | {v['test_acc']:.2f} | {paired} | {v['return']:.2f} | {paired_r} |"
                     f" {v['fossilized']} |")
    return "\n".join(lines)


def add_options(p: Any) -> None:
    p.add_argument("--modes", default=",".join(REWARD_MODES),
                   help="reward modes to play every episode under (comma-separated)")


def design(args: Any) -> Design:
    if args.instance_set is None:
        env_kwargs: dict[str, Any] = {"task": args.task, "max_epochs": args.max_epochs}
    else:
        env_kwargs = {"instance_set": args.instance_set, "instance_split": args.split}
    env_kwargs.update(dict(args.env_kwarg))
    modes = names(args.modes)
    unknown_modes = [m for m in modes if m not in REWARD_MODES]
    if unknown_modes or not modes:
        raise OptionError(f"reward modes {unknown_modes or modes} invalid; allowed: {REWARD_MODES}")
    spec = env_spec(**env_kwargs)
    probe = spec.make()
    blueprints = names(args.blueprints) or list(probe.unwrapped.blueprints)
    ks: list[int] | None = None
    index: dict[str, int] = {}
    if args.instance_set is not None:
        n = len(probe.unwrapped.instances)
        ks = list(range(n if args.instances is None else min(n, args.instances)))
        index = instance_index(probe)
    probe.close()
    policies = zoo_names(blueprints)
    if args.policies:
        wanted = names(args.policies)
        unknown = sorted(set(wanted) - set(policies))
        if unknown:
            raise OptionError(f"unknown policies {unknown}; the zoo has {policies}")
        policies = [q for q in policies if q in wanted]
    if "no-growth" not in policies:
        raise OptionError("the zoo needs no-growth (every difference is paired against it)")
    make = partial(zoo_policy, late_fraction=args.late_fraction)
    players = [Player(q, spec.replace_config(reward_mode=m), factory=make)
               for m in modes for q in policies]
    plan = seed_cases(args.first_seed, args.seeds, ks)
    return Design(players, plan, {"modes": modes, "policies": policies, "ks": ks,
                                  "env_kwargs": env_kwargs, "index": index})


def _row(e: dict[str, Any], index: dict[str, int]) -> dict[str, Any]:
    k = None if e["instance"] is None else index[e["instance"]]
    return {"mode": e["reward_mode"], "policy": e["policy"], "seed": e["seed"], "k": k,
            "case": f"{k}:{e['seed']}", "instance": e["instance"], "return": e["episode_return"],
            "test_acc": e["final_test_acc"], "val_acc": e["final_val_acc"],
            "params_added": e["params_added"], "fossilized": e["n_fossilized"],
            "culled": e["n_culled"], "illegal": e["illegal_actions"], "wall_s": e["wall_s"]}


def report(args: Any, d: Design, episodes: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    modes, policies, ks = d.context["modes"], d.context["policies"], d.context["ks"]
    rows = [_row(e, d.context["index"]) for e in episodes]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    cases = [f"{k}:{s}" for k in (ks or [None]) for s in seeds]
    # The reward mode must not change what happens: same test accuracy in every mode.
    acc: dict[tuple[str, str], float] = {}
    mismatched = 0
    for r in rows:
        key = (r["policy"], r["case"])
        if key in acc and acc[key] != r["test_acc"]:
            mismatched += 1
        acc.setdefault(key, r["test_acc"])

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
    return {"bench": "reward_integrity", "task": args.task, "seeds": seeds,
            "max_epochs": args.max_epochs, "late_fraction": args.late_fraction,
            "instance_set": args.instance_set,
            "split": args.split if args.instance_set else None, "cases": cases,
            "policies": policies, "env_kwargs": d.context["env_kwargs"], "workers": args.workers,
            "torch_threads_per_worker": args.torch_threads, "elapsed_s": elapsed,
            "mode_mismatches": mismatched, "results": results, "episodes": rows}


RECIPE = Recipe(
    name="integrity", result="reward_integrity", summary=__doc__.splitlines()[0],
    description=__doc__, design=design, report=report, add_options=add_options,
    uses=("task", "max_epochs", "instance_set", "split", "instances", "blueprints", "policies",
          "late_fraction"),
    defaults={"seeds": 20, "first_seed": 1000, "max_epochs": 25, "workers": None})
