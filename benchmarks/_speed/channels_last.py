"""channels_last against the default memory layout: env steps per second, paired, same episodes.

``channels_last=True`` keeps the CNN host, its seeds and every batch in torch's NHWC layout
(:class:`esper_env.config.EsperConfig`). This measures what that buys on a device. Each of
``--repeats`` rounds makes two envs with the same config and seed (the round), one with each
layout, resets both (not timed) and steps each through the same ``--steps`` actions, alternating
which env goes first: WAIT throughout (``--policy wait``), or GERMINATE ``conv_heavy`` at the first
step then WAIT (``grow``, with the germination gate off: the timed steps train the seed, blend it
in, and pay for the seedless twin and the counterfactual). The paired ratio (default seconds /
channels_last seconds, so > 1 means channels_last is faster) is reported as a mean with a 95 %
bootstrap interval over rounds (and its median), with the medians of both. Both layouts run the
same episode up to the last bits, which the record shows: ``max_val_acc_gap`` is the largest
difference of the final validation accuracies of a pair.

    python -m benchmarks.speed channels-last --tasks digits --repeats 10
    python -m benchmarks.speed channels-last --tasks cifar10 --env-kwarg data_root=~/data \\
        --env-kwarg train_subset=2000 --repeats 10

Result: ``channels_last.jsonl``.
"""

from __future__ import annotations

import statistics

from agents.provenance import provenance
from benchmarks._common import grow_actions, paired_ratios, sync, timed_steps
from benchmarks._common import rounds as rounds_of
from esper_env.env import EsperEnv


def _run(env: EsperEnv, actions: list[int], device: str) -> tuple[float, float]:
    """Seconds per step over ``actions``, and the last validation accuracy."""
    sync(device)
    done, wall, info = timed_steps(env, actions, device)
    if done < len(actions):
        raise RuntimeError("the episode ended inside the timed steps; raise max_epochs")
    return wall / done, float(info["val_acc"])


def bench_task(task: str, policy: str, rounds: int, steps: int, device: str, kwargs: dict) -> dict:
    config = {"task": task, "device": device, "germination_gate": False, "max_epochs": steps + 2,
              **kwargs}
    default_s, nhwc_s, gaps = [], [], []
    for r in rounds_of(rounds, f"channels-last {task} {policy}"):
        envs = {}
        for nhwc in (False, True):
            env = EsperEnv(**config, channels_last=nhwc)
            env.reset(seed=r)
            envs[nhwc] = env
        actions = grow_actions(envs[False], policy, steps)
        order = (False, True) if r % 2 == 0 else (True, False)
        timed = {nhwc: _run(envs[nhwc], actions, device) for nhwc in order}
        default_s.append(timed[False][0])
        nhwc_s.append(timed[True][0])
        gaps.append(abs(timed[False][1] - timed[True][1]))
    return {"task": task, "policy": policy, "rounds": rounds, "steps": steps, "device": device,
            "env_kwargs": kwargs, "default_step_s_median": statistics.median(default_s),
            "channels_last_step_s_median": statistics.median(nhwc_s),
            **paired_ratios("speedup", default_s, nhwc_s), "max_val_acc_gap": max(gaps)}


def measure(args) -> list[dict]:  # noqa: ANN001
    kwargs = dict(args.env_kwarg)
    prov = provenance()
    print(f"# channels_last vs default layout, {args.repeats} paired rounds x {args.steps} steps, "
          f"device {args.device} ({prov['cuda'] or prov['cpu']}), {args.torch_threads} torch "
          f"thread(s), torch {prov['torch']}, commit {prov['commit']}, env kwargs {kwargs}")
    print(f"{'task':<10} {'policy':<6} {'default s/step':>14} {'channels_last s/step':>20} "
          f"{'speedup (95% CI)':>18} {'val gap (pp)':>12}")
    records = []
    for task in args.tasks.split(","):
        for policy in args.policies:
            r = bench_task(task, policy, args.repeats, args.steps, args.device, kwargs)
            print(f"{task:<10} {policy:<6} {r['default_step_s_median']:>14.4f} "
                  f"{r['channels_last_step_s_median']:>20.4f} "
                  f"{r['speedup_mean']:>10.3f} ± {r['speedup_ci95']:.3f} "
                  f"{r['max_val_acc_gap']:>12.2f}", flush=True)
            records.append({"bench": "channels_last", "threads": args.torch_threads, **r})
    return records
