"""The batched vector env: aggregate env-steps/s of K episodes against one EsperEnv, same run.

For each policy and each K in ``--ks``, ``--repeats`` paired rounds: round ``r`` times one
:class:`~esper_env.env.EsperEnv` (seed ``r``) over ``--steps`` steps and then an
:class:`~esper_env.vector.EsperVectorEnv` of K lanes (seed ``r``: lanes ``r..r+K-1``) over the
same number of batched steps (resets excluded; the vector env autoresets), at the same torch thread
count. Policies: ``wait`` (WAIT throughout) and ``grow`` (a random legal action with probability
0.3, else WAIT: seeds germinate, blend, fossilize and are culled in different lanes at different
times). Reported: the medians of env-steps/s, the paired speedup (K x batched steps/s over the
single env's) with its 95 % bootstrap interval, and the memory per lane: the peak resident
memory of a fresh process that builds K lanes and steps them, minus that of one lane, per extra
lane (and the same of its peak CUDA memory allocated, on a GPU). Then, for each policy and each
K in ``--breakdown-ks``, where a batched step's time goes: one more run of ``--steps`` steps
with the trainer's clock on (:data:`esper_env.nn.batch_trainer.PARTS`: training, validation,
counterfactuals, twin, test, bookkeeping), the rest of the step being the shared transition,
observations and infos (``transition``), in ms per env-step (one lane's step) and as shares of
the step.

    python -m benchmarks.speed vector --ks 1,8,32,64,256 --repeats 3 --torch-threads 1

Results: ``vector.jsonl`` and ``vector-breakdown.jsonl``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from agents.cli import key_value
from agents.provenance import provenance
from benchmarks._common import OptionError, paired_ratios, rounds


def add_options(p: Any) -> None:  # noqa: D103
    p.add_argument("--ks", default="1,8,32,64,256", help="comma-separated lane counts K")
    p.add_argument("--breakdown-ks", default="1,64",
                   help="comma-separated K whose step time is broken down by part ('' for none)")
    p.add_argument("--vec-kwarg", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="an option of the vector env only (repeatable), e.g. cuda_graphs=true, "
                        "static_shapes=true")


def _ks(option: str, text: str, empty_ok: bool) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x]
    except ValueError:
        ks = [0]
    if (not ks and not empty_ok) or (ks and min(ks) < 1):
        raise OptionError(f"{option} {text!r}: allowed are positive integers, comma-separated")
    return ks


def check(args: Any) -> None:  # noqa: D103
    args.k_values = _ks("--ks", args.ks, empty_ok=False)
    args.breakdown_k_values = _ks("--breakdown-ks", args.breakdown_ks, empty_ok=True)
    args.vec_kwargs = dict(args.vec_kwarg)


_PEAK = """
import resource, sys, numpy as np
from esper_env.vector import EsperVectorEnv
vec = EsperVectorEnv({k}, **{kwargs!r}, **{vec_kwargs!r})
vec.reset(seed=0)
rng = np.random.default_rng(0)
for _ in range(3):
    m = vec.action_masks()
    vec.step([int(rng.choice(np.flatnonzero(r))) if rng.random() < 0.3 else 0 for r in m])
import torch
cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, cuda)
"""


def peak_memory_mb(k: int, kwargs: dict, vec_kwargs: dict | None = None) -> tuple[float, float]:
    """Peak resident memory and peak CUDA memory allocated (MB; 0 without CUDA) of a fresh
    process that builds K lanes and steps them 3 times.
    """  # noqa: D205
    import subprocess
    import sys

    code = _PEAK.format(k=k, kwargs=kwargs, vec_kwargs=vec_kwargs or {})
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         timeout=1800)
    rss_kib, cuda_bytes = out.stdout.split()[-2:]
    return int(rss_kib) / 1024, int(cuda_bytes) / 2**20  # ru_maxrss is in KiB on Linux


def _act(masks: np.ndarray, policy: str, rng: np.random.Generator) -> list[int]:
    if policy == "wait":
        return [0] * len(masks)
    return [int(rng.choice(np.flatnonzero(m))) if rng.random() < 0.3 else 0 for m in masks]


def _single(kwargs: dict, policy: str, steps: int, seed: int) -> float:
    from esper_env.env import EsperEnv

    env, rng = EsperEnv(**kwargs), np.random.default_rng(seed)
    env.reset(seed=seed)
    elapsed = 0.0
    for _ in range(steps):
        a = _act(env.action_masks()[None], policy, rng)[0]
        t0 = time.perf_counter()
        _, _, done, _, _ = env.step(a)
        elapsed += time.perf_counter() - t0
        if done:
            env.reset()
    return steps / elapsed


def _batched(kwargs: dict, k: int, policy: str, steps: int, seed: int,
             vec_kwargs: dict | None = None) -> float:
    from esper_env.vector import EsperVectorEnv

    vec, rng = EsperVectorEnv(k, **kwargs, **(vec_kwargs or {})), np.random.default_rng(seed)
    vec.reset(seed=seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        vec.step(_act(vec.action_masks(), policy, rng))
    return k * steps / (time.perf_counter() - t0)


def _breakdown(kwargs: dict, k: int, policy: str, steps: int, vec_kwargs: dict | None = None
               ) -> dict[str, float]:
    """ms per env-step of each part of a batched step (the trainer's clock), and the rest."""
    from esper_env.nn.batch_trainer import PARTS
    from esper_env.vector import EsperVectorEnv

    vec, rng = EsperVectorEnv(k, **kwargs, **(vec_kwargs or {})), np.random.default_rng(0)
    vec.reset(seed=0)
    vec.trainer.clock.on = True
    t0 = time.perf_counter()
    for _ in range(steps):
        vec.step(_act(vec.action_masks(), policy, rng))
    total = time.perf_counter() - t0
    parts = {p: vec.trainer.clock.seconds[p] for p in PARTS}
    parts["transition"] = total - sum(parts.values())
    return {p: 1e3 * v / (k * steps) for p, v in parts.items()}


def measure(args: Any) -> list[dict[str, Any]]:  # noqa: D103
    prov = provenance()
    kwargs = {"task": args.tasks.split(",")[0], "max_epochs": args.max_epochs, **dict(args.env_kwarg)}
    vec_kwargs = getattr(args, "vec_kwargs", {})
    print(f"# batched vector env vs one EsperEnv, {args.repeats} paired rounds x {args.steps} steps, "
          f"{kwargs}, vector env {vec_kwargs}, {prov['torch_threads']} torch thread(s), {prov['cpu']}, torch "
          f"{prov['torch']}, commit {prov['commit']}")
    print(f"{'policy':<6} {'K':>5} {'single steps/s':>14} {'batched env-steps/s':>19} "
          f"{'speedup (95% CI)':>20} {'MB/lane':>8}")
    records = []
    base, base_cuda = peak_memory_mb(1, kwargs, vec_kwargs)
    peaks = {k: peak_memory_mb(k, kwargs, vec_kwargs) for k in args.k_values if k > 1}
    per_lane = {k: 0.0 if k == 1 else (peaks[k][0] - base) / (k - 1) for k in args.k_values}
    cuda_per_lane = {k: 0.0 if k == 1 else (peaks[k][1] - base_cuda) / (k - 1)
                     for k in args.k_values}
    for policy in args.policies:
        for k in args.k_values:
            single, batched = [], []
            for r in rounds(args.repeats, f"vector {policy} K={k}"):
                single.append(_single(kwargs, policy, args.steps, r))
                batched.append(_batched(kwargs, k, policy, args.steps, r, vec_kwargs))
            ratio = paired_ratios("speedup", batched, single)
            rec = {"bench": "vector", "policy": policy, "k": k, "steps": args.steps,
                   "repeats": args.repeats, "env_kwargs": kwargs, "vec_kwargs": vec_kwargs,
                   "single_steps_per_s_median": statistics.median(single),
                   "batched_env_steps_per_s_median": statistics.median(batched),
                   "peak_rss_mb_k1": base, "rss_mb_per_extra_lane": per_lane[k],
                   "cuda_mb_per_extra_lane": cuda_per_lane[k], **ratio}
            print(f"{policy:<6} {k:>5} {rec['single_steps_per_s_median']:>14.1f} "
                  f"{rec['batched_env_steps_per_s_median']:>19.1f} "
                  f"{ratio['speedup']:>9.2f} (±{ratio['speedup_ci95']:.2f}) "
                  f"{per_lane[k]:>8.2f}", flush=True)
            records.append(rec)
    for policy in args.policies:
        for k in args.breakdown_k_values:
            ms = _breakdown(kwargs, k, policy, args.steps, vec_kwargs)
            total = sum(ms.values())
            print(f"# breakdown {policy} K={k}: {total:.2f} ms per env-step = " + ", ".join(
                f"{p} {v:.2f} ({100 * v / total:.0f}%)" for p, v in ms.items()), flush=True)
            records.append({"bench": "vector-breakdown", "policy": policy, "k": k,
                            "steps": args.steps, "env_kwargs": kwargs, "vec_kwargs": vec_kwargs,
                            "ms_per_env_step": ms, "ms_per_env_step_total": total})
    return records
