"""Is the batched engine the same env? Batched against single env, paired on the same seeds.

Every fixed policy (no-growth and each single-blueprint script, as in ``growth``) plays the same
seeds twice: in one :class:`~esper_env.env.EsperEnv` per episode (the study's workers), and as the
lanes of one :class:`~esper_env.vector.EsperVectorEnv` (lane ``i`` on seed ``first + i``, played
at once by :func:`agents.rollout.run_batched`, in this process). Floating-point rounding differs
between the two, and training amplifies it, so episodes drift apart; what must hold is the
outcome. For each policy the table gives the paired difference batched − single of final test
accuracy (mean and 95 % bootstrap interval) and how many episodes ended identically. The bar: every
interval inside ±0.5 pp.

    python -m benchmarks.study parity --seeds 64 --first-seed 5000 --workers 2

Result: ``parity.jsonl``.
"""

from __future__ import annotations

import time
from typing import Any

from agents.provenance import provenance
from agents.stats import mean_ci95
from benchmarks._study.core import Design, Player, Recipe, env_spec, seed_cases

BAR_PP = 0.5
"""The paired 95 % interval of batched − single final test accuracy must lie inside ±BAR_PP."""


def design(args: Any) -> Design:  # noqa: D103
    kwargs = {"task": args.task, "max_epochs": args.max_epochs, **dict(args.env_kwarg)}
    spec = env_spec(**kwargs)
    probe = spec.make()
    labels = ["no-growth"] + [f"scripted-{b}" for b in probe.unwrapped.blueprints]
    probe.close()
    return Design([Player(label, spec) for label in labels], seed_cases(args.first_seed, args.seeds),
                  {"kwargs": kwargs, "labels": labels})


def play_batched(kwargs: dict[str, Any], label: str, seeds: list[int]) -> list[dict[str, Any]]:
    """``label`` in every lane of one vector env of ``len(seeds)`` lanes, lane i on ``seeds[i]``."""
    from agents.policies import make_baseline
    from agents.rollout import run_batched
    from esper_env.vector import EsperVectorEnv

    venv = EsperVectorEnv(len(seeds), **kwargs)
    try:
        policies = [make_baseline(label, venv.template, seed=s) for s in seeds]
        return [{"policy": label, "seed": r.seed, "final_test_acc": r.final_test_acc,
                 "final_val_acc": r.final_val_acc, "episode_return": r.episode_return,
                 "n_fossilized": r.n_fossilized, "length": r.length}
                for r in run_batched(venv, policies, seeds, name=label)]
    finally:
        venv.close()


def report(args: Any, d: Design, episodes: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:  # noqa: D103
    seeds = [s for s, _ in d.plan]
    t0 = time.perf_counter()
    batched = [e for label in d.context["labels"]
               for e in play_batched(d.context["kwargs"], label, seeds)]
    batched_s = time.perf_counter() - t0
    prov = provenance()
    print(f"# batched vs single env, {args.task}, {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), "
          f"{args.max_epochs} epochs; {prov['cpu']}, torch {prov['torch']}, commit {prov['commit']}")
    print(f"{'policy':<22} {'single test acc':>15} {'batched':>9} {'batched - single (95% CI)':>27} "
          f"{'identical':>10}")
    summary, met = {}, True
    for label in d.context["labels"]:
        single = {e["seed"]: e for e in episodes if e["policy"] == label}
        lanes = {e["seed"]: e for e in batched if e["policy"] == label}
        diffs = [lanes[s]["final_test_acc"] - single[s]["final_test_acc"] for s in seeds]
        m, h = mean_ci95(diffs)
        same = sum(abs(x) < 1e-9 for x in diffs)
        inside = abs(m) + h <= BAR_PP
        met &= inside
        s_mean = sum(single[s]["final_test_acc"] for s in seeds) / len(seeds)
        b_mean = sum(lanes[s]["final_test_acc"] for s in seeds) / len(seeds)
        summary[label] = {"single_test_acc": s_mean, "batched_test_acc": b_mean, "delta": m,
                          "delta_ci95": h, "identical": same, "inside_bar": inside}
        print(f"{label:<22} {s_mean:>15.2f} {b_mean:>9.2f} {m:>+16.2f} ± {h:<8.2f} "
              f"{same:>5}/{len(seeds):<4}")
    print(f"bar (every interval inside ±{BAR_PP} pp): {'met' if met else 'NOT met'}; single "
          f"{elapsed:.0f} s, batched {batched_s:.0f} s")
    return {"bench": "parity", "task": args.task, "seeds": len(seeds), "first_seed": seeds[0],
            "max_epochs": args.max_epochs, "env_kwargs": dict(args.env_kwarg),
            "workers": args.workers, "torch_threads_per_worker": args.torch_threads,
            "summary": summary, "bar_met": met, "single_s": elapsed, "batched_s": batched_s,
            "episodes": {"single": [{k: e[k] for k in ("policy", "seed", "final_test_acc")}
                                    for e in episodes],
                         "batched": [{k: e[k] for k in ("policy", "seed", "final_test_acc")}
                                     for e in batched]}}


RECIPE = Recipe(
    name="parity", result="parity", summary=__doc__.splitlines()[0], description=__doc__,
    design=design, report=report, uses=("task", "max_epochs"),
    defaults={"seeds": 64, "first_seed": 5000, "max_epochs": 25})
