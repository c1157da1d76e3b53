"""Is growth worth learning on the default task? No-growth vs each single-blueprint scripted policy.

For every CNN blueprint, a scripted policy germinates that blueprint into slot 0 at the first epoch
the mask allows (the default germination gate) and fossilizes as soon as FOSSILIZE is legal. Each
policy runs the same seeds; the table gives mean final *test* accuracy with a 95 % t confidence
interval, the paired difference to no-growth (same seeds, so the host's own noise cancels), how
many seeds were fossilised, and the mean return. The claim checked: at least one blueprint beats
no-growth by >= 2 percentage points.

    python benchmarks/bench_growth.py --seeds 10
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_output_args, provenance, save  # noqa: E402

from agents.evaluate import mean_ci95, run_episode  # noqa: E402
from agents.policies import NoGrowthPolicy, ScriptedPolicy  # noqa: E402
from esper_env.core.catalog import BLUEPRINT_NAMES  # noqa: E402
from esper_env.env import EsperEnv  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits")
    p.add_argument("--seeds", type=int, default=10, help="episodes per policy")
    p.add_argument("--first-seed", type=int, default=0,
                   help="seeds first..first+n-1 (0-19 calibrated the digits defaults; use 1000 "
                        "for held-out seeds)")
    p.add_argument("--max-epochs", type=int, default=25)
    p.add_argument("--blueprints", default=",".join(BLUEPRINT_NAMES["cnn"]))
    add_output_args(p)
    args = p.parse_args(argv)

    env = EsperEnv(task=args.task, max_epochs=args.max_epochs)
    policies = [NoGrowthPolicy(env)] + [ScriptedPolicy(env, b) for b in args.blueprints.split(",")]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    t0 = time.perf_counter()
    rows = {}
    for pol in policies:
        res = [run_episode(env, pol, s) for s in seeds]
        rows[pol.name] = res
    elapsed = time.perf_counter() - t0
    base = [r.final_test_acc for r in rows["no-growth"]]
    print(f"# {args.task}, {args.seeds} seeds ({seeds[0]}..{seeds[-1]}), {args.max_epochs} epochs; "
          f"{provenance()['cpu']}, torch {provenance()['torch']}, commit {provenance()['commit']}")
    print(f"{'policy':<22} {'test acc (95% CI)':>18} {'vs no-growth (paired)':>22} "
          f"{'fossilized':>10} {'return':>8}")
    summary = {}
    for name, res in rows.items():
        accs = [r.final_test_acc for r in res]
        m, h = mean_ci95(accs)
        dm, dh = mean_ci95([a - b for a, b in zip(accs, base, strict=True)])
        fossil = sum(r.n_fossilized for r in res)
        ret = sum(r.episode_return for r in res) / len(res)
        summary[name] = {"test_acc": m, "ci95": h, "delta": dm, "delta_ci95": dh,
                         "fossilized": fossil, "return": ret}
        print(f"{name:<22} {m:>9.2f} ± {h:<6.2f} {dm:>+13.2f} ± {dh:<6.2f} "
              f"{fossil:>6}/{len(res):<3} {ret:>8.2f}")
    best = max((k for k in summary if k != "no-growth"), key=lambda k: summary[k]["delta"])
    print(f"best: {best} {summary[best]['delta']:+.2f} pp over no-growth "
          f"(claim >= 2 pp: {'met' if summary[best]['delta'] >= 2.0 else 'NOT met'}); "
          f"{elapsed:.0f} s")
    record = {"bench": "growth", "task": args.task, "seeds": args.seeds, "first_seed": seeds[0],
              "max_epochs": args.max_epochs, "summary": summary, "best": best,
              "elapsed_s": elapsed}
    save("growth", record, args.out, tracked=args.record)
    return record


if __name__ == "__main__":
    main()
