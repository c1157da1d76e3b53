"""Is growth worth learning on a task? No-growth vs each single-blueprint scripted policy.

For every blueprint of the task's topology (or ``--blueprints``), a scripted policy
(``scripted-<bp>``) germinates that blueprint into slot 0 at the first epoch the mask allows (the
default germination gate) and fossilizes as soon as FOSSILIZE is legal. Each policy plays the same
seeds; the table gives mean final *test* accuracy with a 95 % bootstrap interval
(:mod:`agents.stats`), the paired difference to no-growth (same seeds, so the host's own noise
cancels), how many seeds were fossilised, and the mean return. The claim checked: at least one
blueprint beats no-growth by >= 2 percentage points. Seeds 0-19 calibrated the digits defaults
(the default ``--first-seed 0``); use ``--first-seed 1000`` for held-out seeds.

    python -m benchmarks.study growth --seeds 20 --first-seed 1000
    python -m benchmarks.study growth --task tinytext --seeds 10 --first-seed 1000 --workers 2
    python -m benchmarks.study growth --task cifar10 --env-kwarg data_root=~/data \\
        --env-kwarg device=cuda --env-kwarg batch_size=512 --workers 4

``--env-kwarg KEY=VALUE`` sets any other EsperConfig field (YAML values). Result: ``growth.jsonl``.
"""

from __future__ import annotations

from typing import Any

from agents.provenance import provenance
from agents.stats import mean_ci95
from benchmarks._common import OptionError
from benchmarks._study.core import Design, Player, Recipe, env_spec, names, seed_cases


def design(args: Any) -> Design:
    kwargs = {"task": args.task, "max_epochs": args.max_epochs, **dict(args.env_kwarg)}
    spec = env_spec(**kwargs)
    probe = spec.make()  # validates the config and names the blueprints
    known = list(probe.unwrapped.blueprints)
    probe.close()
    blueprints = names(args.blueprints) or known
    unknown = [b for b in blueprints if b not in known]
    if unknown:
        raise OptionError(f"blueprints {unknown} are not in the task's topology {known}")
    labels = ["no-growth"] + [f"scripted-{b}" for b in blueprints]
    plan = seed_cases(args.first_seed, args.seeds)
    return Design([Player(label, spec) for label in labels], plan,
                  {"kwargs": kwargs, "labels": labels})


def report(args: Any, d: Design, episodes: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    seeds = [s for s, _ in d.plan]
    rows = {label: [e for e in episodes if e["policy"] == label] for label in d.context["labels"]}
    base = [r["final_test_acc"] for r in rows["no-growth"]]
    extra = "".join(f", {k}={v}" for k, v in dict(args.env_kwarg).items())
    prov = provenance()
    print(f"# {args.task}{extra}, {args.seeds} seeds ({seeds[0]}..{seeds[-1]}), {args.max_epochs} "
          f"epochs; {prov['cpu']}{', ' + prov['cuda'] if prov['cuda'] else ''}, "
          f"torch {prov['torch']}, commit {prov['commit']}")
    print(f"{'policy':<22} {'test acc (95% CI)':>18} {'vs no-growth (paired)':>22} "
          f"{'fossilized':>10} {'return':>8}")
    summary = {}
    for name, res in rows.items():
        accs = [r["final_test_acc"] for r in res]
        m, h = mean_ci95(accs)
        dm, dh = mean_ci95([a - b for a, b in zip(accs, base, strict=True)])
        fossil = sum(r["n_fossilized"] for r in res)
        ret = sum(r["episode_return"] for r in res) / len(res)
        summary[name] = {"test_acc": m, "ci95": h, "delta": dm, "delta_ci95": dh,
                         "fossilized": fossil, "return": ret}
        print(f"{name:<22} {m:>9.2f} ± {h:<6.2f} {dm:>+13.2f} ± {dh:<6.2f} "
              f"{fossil:>6}/{len(res):<3} {ret:>8.2f}")
    best = max((k for k in summary if k != "no-growth"), key=lambda k: summary[k]["delta"])
    print(f"best: {best} {summary[best]['delta']:+.2f} pp over no-growth "
          f"(claim >= 2 pp: {'met' if summary[best]['delta'] >= 2.0 else 'NOT met'}); "
          f"{elapsed:.0f} s")
    return {"bench": "growth", "task": args.task, "seeds": args.seeds, "first_seed": seeds[0],
            "max_epochs": args.max_epochs, "env_kwargs": dict(args.env_kwarg),
            "workers": args.workers, "torch_threads_per_worker": args.torch_threads,
            "summary": summary, "best": best, "elapsed_s": elapsed,
            "episodes": [{k: e[k] for k in ("policy", "seed", "final_test_acc", "final_val_acc",
                                            "episode_return", "params_added", "n_fossilized")}
                         for e in episodes]}


RECIPE = Recipe(
    name="growth", result="growth", summary=__doc__.splitlines()[0], description=__doc__,
    design=design, report=report, uses=("task", "max_epochs", "blueprints"),
    defaults={"seeds": 10, "first_seed": 0, "max_epochs": 25})
