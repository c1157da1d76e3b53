"""Fused against unfused SGD: seconds per training epoch, paired, on the same host and batches.

Since commit 6ffa755 every optimiser of an episode (host, seed, twin) is ``torch.optim.SGD`` with
``fused=True`` (:func:`esper_env.nn.trainer.sgd`). This measures what that buys. Each round builds
two trainers with the same seeds, one with fused SGD and one with torch's default (a Python loop
over the parameters on the CPU, ``_foreach`` kernels on CUDA), and times ``train_epoch()`` on each,
alternating which goes first. ``--seed`` grows a blueprint first: the seed is germinated and
blended in (alpha 0.5), so the epoch trains the host, the seed and the seedless twin, each with its
own optimiser. The paired ratio (unfused / fused seconds per epoch) is reported as a mean with a
95 % bootstrap interval over the ``--repeats`` rounds (and its median), and the medians of both.

    python -m benchmarks.speed optimizer --tasks digits,synthetic --repeats 15
    python -m benchmarks.speed optimizer --tasks cifar10 --env-kwarg data_root=~/data --device cuda

Result: ``optimizer.jsonl``.
"""

from __future__ import annotations

import statistics
import time

import torch

from agents.provenance import provenance
from benchmarks._common import paired_ratios, sync
from benchmarks._common import rounds as rounds_of
from esper_env.config import EsperConfig
from esper_env.nn import trainer as trainer_module
from esper_env.nn.data import load_task
from esper_env.nn.trainer import Trainer


def _unfused_sgd(params, lr, momentum, weight_decay=0.0):  # noqa: ANN001, ANN202
    return torch.optim.SGD(list(params), lr=lr, momentum=momentum, weight_decay=weight_decay)


def _trainer(cfg: EsperConfig, data, seed: int, blueprint: str | None, fused: bool) -> Trainer:  # noqa: ANN001
    make = trainer_module.sgd
    if not fused:
        trainer_module.sgd = _unfused_sgd
    try:
        t = Trainer(cfg, data, model_seed=seed, data_seed=seed + 1, twin=blueprint is not None)
        if blueprint is not None:
            t.germinate(0, blueprint, module_seed=seed + 2)
            t.configure(0, "blend", 0.5, isolate=True)
        t.train_epoch()  # warm-up: momentum buffers, the twin's fork (its optimiser), allocator
    finally:
        trainer_module.sgd = make
    opts = [t.host_opt, t.twin_opt, *t.seed_opts]
    if any(fused != bool(o.defaults.get("fused")) for o in opts if o is not None):
        raise RuntimeError("could not build the requested optimiser kind")
    return t


def _time(t: Trainer, epochs: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        t.train_epoch()
    sync(device)
    return (time.perf_counter() - start) / epochs


def bench_task(task: str, blueprint: str | None, rounds: int, epochs: int, device: str,
               kwargs: dict) -> dict:
    cfg = EsperConfig(task=task, device=device, **kwargs)
    data = load_task(cfg.task.name, episode_seed=0, device=device, data_root=cfg.task.data_root,
                     train_subset=cfg.task.train_subset, synthetic_samples=cfg.task.synthetic_samples,
                     block_size=cfg.host.block_size)
    fused_s, unfused_s = [], []
    for r in rounds_of(rounds, f"optimizer {task} {blueprint or 'host'}"):
        pair = {True: _trainer(cfg, data, r, blueprint, True),
                False: _trainer(cfg, data, r, blueprint, False)}
        order = (True, False) if r % 2 == 0 else (False, True)
        times = {kind: _time(pair[kind], epochs, device) for kind in order}
        fused_s.append(times[True])
        unfused_s.append(times[False])
    return {"task": task, "blueprint": blueprint, "rounds": rounds, "epochs": epochs,
            "device": device, "env_kwargs": kwargs,
            "fused_epoch_s_median": statistics.median(fused_s),
            "unfused_epoch_s_median": statistics.median(unfused_s),
            **paired_ratios("speedup", unfused_s, fused_s)}


def add_options(p) -> None:  # noqa: ANN001
    p.add_argument("--seed", default="conv_heavy",
                   help="blueprint grown before timing ('none': the bare host)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per trainer and round")


def measure(args) -> list[dict]:  # noqa: ANN001
    kwargs = dict(args.env_kwarg)
    blueprints = [None, args.seed] if args.seed != "none" else [None]
    prov = provenance()
    print(f"# fused vs unfused SGD, {args.repeats} paired rounds x {args.epochs} epochs, device "
          f"{args.device} ({prov['cuda'] or prov['cpu']}), {args.torch_threads} torch thread(s), torch "
          f"{prov['torch']}, commit {prov['commit']}")
    print(f"{'task':<10} {'grown':<11} {'fused s/epoch':>13} {'unfused s/epoch':>15} "
          f"{'speedup (95% CI)':>18}")
    records = []
    for task in args.tasks.split(","):
        for bp in blueprints:
            r = bench_task(task, bp, args.repeats, args.epochs, args.device, kwargs)
            print(f"{task:<10} {bp or '-':<11} {r['fused_epoch_s_median']:>13.4f} "
                  f"{r['unfused_epoch_s_median']:>15.4f} "
                  f"{r['speedup_mean']:>10.3f} ± {r['speedup_ci95']:.3f}", flush=True)
            records.append({"bench": "optimizer", "threads": args.torch_threads, **r})
    return records
