"""Fused against unfused SGD: seconds per training epoch, paired, on the same host and batches.

Since commit 6ffa755 every optimiser of an episode (host, seed, twin) is ``torch.optim.SGD`` with
``fused=True`` (:func:`esper_env.nn.trainer.sgd`). This measures what that buys. Each round builds
two trainers with the same seeds, one with fused SGD and one with torch's default (a Python loop
over the parameters on the CPU, ``_foreach`` kernels on CUDA), and times ``train_epoch()`` on each,
alternating which goes first. ``--seed`` grows a blueprint first: the seed is germinated and
blended in (alpha 0.5), so the epoch trains the host, the seed and the seedless twin, each with its
own optimiser. The paired ratio (unfused / fused seconds per epoch) is reported as a mean with a
95 % bootstrap interval over rounds, and the medians of both.

    python -m benchmarks.bench_optimizer --tasks digits,synthetic --rounds 15
    python -m benchmarks.bench_optimizer --tasks cifar10 --env-kwarg data_root=~/data --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from agents.cli import key_value
from agents.stats import mean_ci95
from benchmarks._common import add_output_args, provenance, save, sync
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
    for r in range(rounds):
        pair = {True: _trainer(cfg, data, r, blueprint, True),
                False: _trainer(cfg, data, r, blueprint, False)}
        order = (True, False) if r % 2 == 0 else (False, True)
        times = {kind: _time(pair[kind], epochs, device) for kind in order}
        fused_s.append(times[True])
        unfused_s.append(times[False])
    ratio, half = mean_ci95([u / f for u, f in zip(unfused_s, fused_s, strict=True)])
    return {"task": task, "blueprint": blueprint, "rounds": rounds, "epochs": epochs,
            "device": device, "env_kwargs": kwargs,
            "fused_epoch_s_median": statistics.median(fused_s),
            "unfused_epoch_s_median": statistics.median(unfused_s),
            "speedup_mean": ratio, "speedup_ci95": half}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="digits,synthetic")
    p.add_argument("--seed", default="conv_heavy",
                   help="blueprint grown before timing ('none': the bare host)")
    p.add_argument("--rounds", type=int, default=15, help="paired rounds (fresh trainers each)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per trainer and round")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--env-kwarg", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="another EsperConfig field, e.g. data_root=~/data (YAML values; repeatable)")
    add_output_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    kwargs = dict(args.env_kwarg)
    blueprints = [None, args.seed] if args.seed != "none" else [None]
    prov = provenance()
    print(f"# fused vs unfused SGD, {args.rounds} paired rounds x {args.epochs} epochs, device "
          f"{args.device} ({prov['cuda'] or prov['cpu']}), {args.threads} torch thread(s), torch "
          f"{prov['torch']}, commit {prov['commit']}")
    print(f"{'task':<10} {'grown':<11} {'fused s/epoch':>13} {'unfused s/epoch':>15} "
          f"{'speedup (95% CI)':>18}")
    records = []
    for task in args.tasks.split(","):
        for bp in blueprints:
            r = bench_task(task, bp, args.rounds, args.epochs, args.device, kwargs)
            print(f"{task:<10} {bp or '-':<11} {r['fused_epoch_s_median']:>13.4f} "
                  f"{r['unfused_epoch_s_median']:>15.4f} "
                  f"{r['speedup_mean']:>10.3f} ± {r['speedup_ci95']:.3f}", flush=True)
            records.append({"bench": "optimizer", "threads": args.threads, **r})
    for rec in records:
        save("optimizer", rec, args.out, tracked=args.record)
    return records


if __name__ == "__main__":
    main()
