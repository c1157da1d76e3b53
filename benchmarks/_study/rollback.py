"""What a governor rollback costs: validation accuracy just before a fault and right after it.

For each seed, the scripted ``conv_heavy`` policy plays an episode twice: once clean, once with
the host's weights poisoned (NaN) at epoch ``--fault-epoch`` so that the governor must roll back.
Reported per seed: validation accuracy at the epoch before the fault, right after the rollback, at
the end, and the final test accuracy of both runs; then means with 95 % bootstrap intervals of the
paired drop (before - after rollback) and of the final test-accuracy cost (clean - faulted).

    python -m benchmarks.study rollback --seeds 10 --fault-epoch 17

Result: ``rollback.jsonl``.
"""

from __future__ import annotations

from typing import Any

from agents.stats import mean_ci95
from benchmarks._study.core import Design, Player, Recipe, env_spec, seed_cases

POLICY = "scripted-conv_heavy"
INFO_KEYS = ("epoch", "rollback", "diverged")


def add_options(p: Any) -> None:
    p.add_argument("--fault-epoch", type=int, default=17,
                   help="the epoch whose training is poisoned in the faulted run")


def design(args: Any) -> Design:
    f = args.fault_epoch
    kwargs = {"task": args.task, **dict(args.env_kwarg)}
    if args.max_epochs is not None:
        kwargs["max_epochs"] = args.max_epochs
    players = [Player(POLICY, env_spec(**kwargs, fault_epochs=faults), tags={"run": run},
                      info_keys=INFO_KEYS)
               for run, faults in (("clean", ()), ("faulted", (f,) if f else ()))]
    return Design(players, seed_cases(args.first_seed, args.seeds))


def _epochs(e: dict[str, Any]) -> dict[str, Any]:
    """One episode by epoch: validation accuracy, slot 0's stage, the last rollback."""
    epochs = e["info"]["epoch"]
    rollbacks = [ep for ep, rb in zip(epochs[1:], e["info"]["rollback"][1:], strict=True) if rb]
    return {"val": dict(zip(epochs, e["val_curve"], strict=True)),
            "stages": {ep: st[0] for ep, st in zip(epochs[1:], e["stages"][1:], strict=True)},
            "rollback": rollbacks[-1] if rollbacks else None, "final_test": e["final_test_acc"],
            "diverged": e["info"]["diverged"][-1]}


def report(args: Any, d: Design, episodes: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    f = args.fault_epoch
    by = {(e["run"], e["seed"]): _epochs(e) for e in episodes}
    rows = []
    print(f"{'seed':>5} {'stage':>13} {'val@' + str(f - 1):>8} {'val@' + str(f):>8} "
          f"{'clean@' + str(f):>9} {'test clean':>10} {'test fault':>10}")
    for seed, _ in d.plan:
        clean, faulted = by["clean", seed], by["faulted", seed]
        row = {"seed": seed, "stage_before": faulted["stages"].get(f - 1),
               "val_before": faulted["val"][f - 1], "val_after_rollback": faulted["val"].get(f),
               "clean_val_at_fault": clean["val"].get(f), "rollback_epoch": faulted["rollback"],
               "test_clean": clean["final_test"], "test_faulted": faulted["final_test"],
               "diverged": faulted["diverged"]}
        rows.append(row)
        print(f"{seed:>5} {row['stage_before']!s:>13} {row['val_before']:8.2f} "
              f"{row['val_after_rollback']:8.2f} {row['clean_val_at_fault']:9.2f} "
              f"{row['test_clean']:10.2f} {row['test_faulted']:10.2f}")
    drop = [r["val_before"] - r["val_after_rollback"] for r in rows]
    cost = [r["test_clean"] - r["test_faulted"] for r in rows]
    (dm, dh), (cm, ch) = mean_ci95(drop), mean_ci95(cost)
    summary = {"val_drop_mean": dm, "val_drop_ci95": dh, "test_cost_mean": cm, "test_cost_ci95": ch,
               "rollbacks": sum(r["rollback_epoch"] == f for r in rows), "n": len(rows)}
    print(f"\nvalidation accuracy, epoch {f - 1} minus right after the rollback at epoch {f}: "
          f"{summary['val_drop_mean']:+.2f} ± {summary['val_drop_ci95']:.2f} pp; final test "
          f"accuracy, clean minus faulted: {summary['test_cost_mean']:+.2f} ± "
          f"{summary['test_cost_ci95']:.2f} pp ({summary['rollbacks']}/{summary['n']} rolled back); "
          f"{elapsed:.0f} s")
    return {"bench": "rollback", "task": args.task, "fault_epoch": f, "seeds": args.seeds,
            "first_seed": args.first_seed, "env_kwargs": dict(args.env_kwarg),
            "torch_threads": args.torch_threads, "rows": rows, "summary": summary,
            "elapsed_s": elapsed}


RECIPE = Recipe(
    name="rollback", result="rollback", summary=__doc__.splitlines()[0], description=__doc__,
    design=design, report=report, add_options=add_options, uses=("task", "max_epochs"),
    defaults={"seeds": 10, "first_seed": 3000})
