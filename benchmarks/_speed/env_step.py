"""Env steps per second, and the env's overhead over the bare compute of the same host.

For each task, three measurements in one process, on the same data and config:

1. ``no-growth``: steps/s of ``env.step(WAIT)`` over whole episodes (resets excluded).
2. ``bare``: the same host trained by a bare loop, ``Trainer.train_epoch()`` + ``Trainer.validate()``
   per epoch, with no env around it. ``overhead = step time / bare epoch time``.
3. ``growth``: steps/s of a scripted policy that germinates ``conv_heavy`` as soon as the mask
   allows and fossilizes when it can (so seeds train, blend and need counterfactual passes), under
   the default ``contribution`` reward, which also trains and validates the seedless twin from the
   first blended epoch on. Its overhead is step time / the time spent inside the trainer's compute
   calls (model and twin) during those steps.
4. ``growth without twin``: the same episodes under ``reward_mode="delta"`` (no twin);
   ``twin_cost`` = growth step time with the twin / without it (paired per repetition).

Medians over ``--repeats`` repetitions; the machines are shared, so quote medians and ratios.
Targets (2-core CPU): digits >= 25 steps/s single env, overhead <= 1.15.

    python -m benchmarks.speed env-step --repeats 5

Result: ``env_step.jsonl``.
"""

from __future__ import annotations

import statistics
import time

from agents.policies import ScriptedPolicy
from agents.provenance import provenance
from benchmarks._common import rounds
from esper_env.env import EsperEnv
from esper_env.nn.data import load_task
from esper_env.nn.trainer import Trainer


def _episode_steps(env: EsperEnv, seed: int, policy=None) -> tuple[float, int, float]:
    """Run one episode; return (seconds in step(), steps, seconds inside trainer compute)."""
    trainer_time = [0.0]
    obs, _ = env.reset(seed=seed)
    tr = env.trainer
    originals = {name: getattr(tr, name) for name in ("train_epoch", "validate")}

    def timed(fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                trainer_time[0] += time.perf_counter() - t
        return wrapper

    if tr.twin_enabled:
        originals["twin_validate"] = tr.twin_validate
    for name, fn in originals.items():
        setattr(tr, name, timed(fn))
    done, steps, total = False, 0, 0.0
    while not done:
        a = 0 if policy is None else policy.predict(obs, action_masks=env.action_masks())[0]
        t = time.perf_counter()
        obs, _, done, _, _ = env.step(a)
        total += time.perf_counter() - t
        steps += 1
    return total, steps, trainer_time[0]


def _bare_epochs(env: EsperEnv, seed: int, epochs: int) -> float:
    """Seconds per epoch of train_epoch + validate on a fresh trainer of the same config."""
    cfg = env.config
    data = load_task(cfg.task.name, episode_seed=seed, device=cfg.runtime.device,
                     synthetic_samples=cfg.task.synthetic_samples)
    trainer = Trainer(cfg, data, model_seed=seed, data_seed=seed + 1)
    trainer.train_epoch()
    trainer.validate(())
    t = time.perf_counter()
    for _ in range(epochs):
        trainer.train_epoch()
        trainer.validate(())
    return (time.perf_counter() - t) / epochs


def bench_task(task: str, repeats: int, max_epochs: int) -> dict:
    env = EsperEnv(task=task, max_epochs=max_epochs)
    plain = EsperEnv(task=task, max_epochs=max_epochs, reward_mode="delta")
    _episode_steps(env, 1000)  # warm-up
    nog, bare, grow, grow_ratio, grow_plain, twin_cost = [], [], [], [], [], []
    policy = ScriptedPolicy(env, "conv_heavy")
    for r in rounds(repeats, f"env-step {task}"):
        total, steps, _ = _episode_steps(env, r)
        nog.append(total / steps)
        bare.append(_bare_epochs(env, r, max_epochs - 1))
        total, steps, compute = _episode_steps(env, r, policy)
        grow.append(total / steps)
        grow_ratio.append(total / compute)
        total_plain, steps_plain, _ = _episode_steps(plain, r, policy)
        grow_plain.append(total_plain / steps_plain)
        twin_cost.append(grow[-1] / grow_plain[-1])
    step_s, bare_s, grow_s, plain_s = (statistics.median(x) for x in (nog, bare, grow, grow_plain))
    return {"task": task, "repeats": repeats, "max_epochs": max_epochs,
            "no_growth_steps_per_s": 1.0 / step_s, "bare_epochs_per_s": 1.0 / bare_s,
            "overhead_no_growth": step_s / bare_s, "growth_steps_per_s": 1.0 / grow_s,
            "overhead_growth": statistics.median(grow_ratio),
            "growth_no_twin_steps_per_s": 1.0 / plain_s,
            "twin_cost": statistics.median(twin_cost)}


def measure(args) -> list[dict]:  # noqa: ANN001
    prov = provenance()
    print(f"# {prov['cpu']} ({prov['cores']} cores, {prov['torch_threads']} torch threads), "
          f"torch {prov['torch']}, commit {prov['commit']}")
    print(f"{'task':<10} {'steps/s':>8} {'bare ep/s':>9} {'overhead':>8} "
          f"{'growth steps/s':>14} {'growth overhead':>15} {'no-twin steps/s':>15} "
          f"{'twin cost':>9}")
    out = []
    for task in args.tasks.split(","):
        r = bench_task(task, args.repeats, args.max_epochs)
        print(f"{task:<10} {r['no_growth_steps_per_s']:>8.1f} {r['bare_epochs_per_s']:>9.1f} "
              f"{r['overhead_no_growth']:>8.3f} {r['growth_steps_per_s']:>14.1f} "
              f"{r['overhead_growth']:>15.3f} {r['growth_no_twin_steps_per_s']:>15.1f} "
              f"{r['twin_cost']:>9.3f}", flush=True)
        out.append({"bench": "env_step", **r})
    return out
