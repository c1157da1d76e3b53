"""What a governor rollback costs: validation accuracy just before a fault and right after it.

For each seed, the scripted ``conv_heavy`` policy plays a digits episode twice: once clean, once with
the host's weights poisoned (NaN) at epoch ``--fault-epoch`` so that the governor must roll back.
Reported per seed: validation accuracy at the epoch before the fault, right after the rollback, at
the end, and the final test accuracy of both runs; then means with 95 % bootstrap intervals of the paired
drop (before - after rollback) and of the final test-accuracy cost (clean - faulted).

    python -m benchmarks.bench_rollback --seeds 10 --fault-epoch 17
"""

from __future__ import annotations

import argparse

import torch

from agents.policies import ScriptedPolicy
from agents.stats import mean_ci95
from benchmarks._common import add_output_args, provenance, save
from esper_env.env import EsperEnv


def _episode(seed: int, fault: int | None, task: str) -> dict:
    env = EsperEnv(task=task, fault_epochs=(fault,) if fault else ())
    policy = ScriptedPolicy(env, "conv_heavy")
    obs, info = env.reset(seed=seed)
    val = {info["epoch"]: info["val_acc"]}
    stages = {}
    terminated = False
    rollback = None
    while not terminated:
        action, _ = policy.predict(obs, action_masks=env.action_masks())
        obs, _, terminated, _, info = env.step(action)
        val[info["epoch"]] = info["val_acc"]
        stages[info["epoch"]] = info["stages"][0]
        if info["rollback"]:
            rollback = info["epoch"]
    return {"val": val, "stages": stages, "rollback": rollback, "final_test": info["final_test_acc"],
            "diverged": info["diverged"]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=3000)
    p.add_argument("--fault-epoch", type=int, default=17)
    p.add_argument("--threads", type=int, default=1)
    add_output_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    f = args.fault_epoch
    rows = []
    print(f"{'seed':>5} {'stage':>13} {'val@' + str(f - 1):>8} {'val@' + str(f):>8} "
          f"{'clean@' + str(f):>9} {'test clean':>10} {'test fault':>10}")
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        clean, faulted = _episode(seed, None, args.task), _episode(seed, f, args.task)
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
          f"{summary['test_cost_ci95']:.2f} pp ({summary['rollbacks']}/{summary['n']} rolled back)")
    record = {"bench": "rollback", "task": args.task, "fault_epoch": f, "rows": rows,
              "summary": summary, **provenance()}
    path = save("rollback", record, args.out, tracked=args.record)
    print(f"saved to {path}")
    return record


if __name__ == "__main__":
    main()
