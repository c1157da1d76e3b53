"""CIFAR-10 speed: aggregate host epochs per second of several envs sharing one device.

Each env runs in its own spawned process (as in a SubprocVecEnv) with the whole CIFAR-10 task on
the device: 45,000 training images per epoch (uint8 on the device, augmented and normalised there,
per batch), the 5,000 validation images every epoch, and the seed's counterfactual pass while a
seed is blended in. A "host epoch" is one env step. After a warm-up (reset: data to the device,
first epoch), all processes start timing together at a barrier; aggregate epochs/s is the sum of
the timed steps over the wall time until the last process finishes. With ``--policy grow`` each env
germinates ``conv_heavy`` at its first step (the germination gate is off), so the timed epochs
include a seed in TRAINING, then BLENDING with counterfactuals; ``wait`` times the bare host.

Speed does not depend on the pixel values, so ``--fake-data`` writes a full-size folder in the
CIFAR-10 format with random images (the real dataset is only needed for accuracy, never for
speed); the output says which it used.

    python benchmarks/bench_cifar_speed.py --data-root ~/data --device cuda --envs 4
    python benchmarks/bench_cifar_speed.py --fake-data --device cuda --envs 4 --batch-size 512
    python benchmarks/bench_cifar_speed.py --fake-data --device cuda --cudnn-benchmark off,on

``--cudnn-benchmark on`` sets ``torch.backends.cudnn.benchmark`` in the env processes (the env
itself never changes that process-wide flag).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_output_args, provenance, save  # noqa: E402


def _worker(rank: int, kwargs: dict, steps: int, policy: str, seed: int, cudnn_benchmark: bool,
            barrier, out) -> None:
    import torch

    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = cudnn_benchmark  # this process's own setting
    from esper_env.core.actions import Action, ActionKind
    from esper_env.env import EsperEnv

    env = EsperEnv(**kwargs)
    env.reset(seed=seed + rank)
    if kwargs["device"].startswith("cuda"):
        torch.cuda.synchronize()
    grow = env.codec.encode(Action(ActionKind.GERMINATE, 0, "conv_heavy"))
    barrier.wait()
    t0 = time.perf_counter()
    done = 0
    for i in range(steps):
        _, _, term, trunc, info = env.step(grow if policy == "grow" and i == 0 else 0)
        done += 1
        if term or trunc:
            break
    wall = time.perf_counter() - t0
    out.put((rank, done, wall, info["stages"], info["val_acc"], torch.backends.cudnn.benchmark))


def _gpu_sampler(stop: threading.Event, samples: list[float]) -> None:
    """nvidia-smi's GPU utilisation every 0.5 s (percent busy), while the envs run."""
    while not stop.is_set():
        try:
            text = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                   "--format=csv,noheader,nounits"], capture_output=True,
                                  text=True, timeout=5).stdout
            samples.append(float(text.split()[0]))
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return
        stop.wait(0.5)


def run(envs: int, kwargs: dict, steps: int, policy: str, seed: int,
        cudnn_benchmark: bool = False) -> dict:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(envs + 1), ctx.Queue()
    procs = [ctx.Process(target=_worker,
                         args=(r, kwargs, steps, policy, seed, cudnn_benchmark, barrier, out))
             for r in range(envs)]
    for p in procs:
        p.start()
    barrier.wait()  # every env has reset (warm-up done)
    t0 = time.perf_counter()
    stop, util = threading.Event(), []
    sampler = threading.Thread(target=_gpu_sampler, args=(stop, util), daemon=True)
    if kwargs["device"].startswith("cuda") and shutil.which("nvidia-smi"):
        sampler.start()
    results = [out.get() for _ in procs]
    wall = time.perf_counter() - t0
    stop.set()
    for p in procs:
        p.join()
    epochs = sum(r[1] for r in results)
    per_env = [r[1] / r[2] for r in sorted(results)]
    return {"envs": envs, "policy": policy, "epochs": epochs, "wall_s": wall,
            "aggregate_epochs_per_s": epochs / wall, "per_env_epochs_per_s": per_env,
            "gpu_util_median": sorted(util)[len(util) // 2] if util else None,
            "final_stages": [r[3] for r in sorted(results)],
            "cudnn_benchmark": [r[5] for r in sorted(results)]}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-root", help="folder holding cifar-10-batches-py")
    src.add_argument("--fake-data", action="store_true",
                     help="write a full-size CIFAR-format folder of random images (speed only)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--envs", default="4", help="comma-separated env counts, e.g. 1,4")
    p.add_argument("--batch-size", default="128,512", help="comma-separated batch sizes")
    p.add_argument("--policy", default="wait,grow", help="wait, grow or both (comma-separated)")
    p.add_argument("--steps", type=int, default=8, help="timed epochs per env")
    p.add_argument("--train-subset", type=int, default=None, help="(CPU) train on this many images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cudnn-benchmark", default="off",
                   help="off, on or both (comma-separated): torch.backends.cudnn.benchmark in the "
                        "env processes (cuDNN times its algorithms for each new shape and keeps "
                        "the fastest; results may then differ between runs on CUDA)")
    add_output_args(p)
    args = p.parse_args(argv)
    modes = {"off": False, "on": True}
    try:
        benchmark_modes = [modes[m] for m in args.cudnn_benchmark.split(",")]
    except KeyError as e:
        p.error(f"--cudnn-benchmark {args.cudnn_benchmark!r}: {e.args[0]!r} is not one of off, on")

    tmp = None
    root = args.data_root
    if args.fake_data:
        from esper_env.nn.cifar import write_cifar10_folder

        tmp = tempfile.mkdtemp(prefix="cifar-fake-")
        root = str(write_cifar10_folder(tmp, train_per_batch=10_000, n_test=10_000, seed=0))
    prov = provenance()
    print(f"# CIFAR-10 speed, {'random CIFAR-format images' if args.fake_data else root}, "
          f"device {args.device} ({prov['cuda'] or prov['cpu']}), torch {prov['torch']}, "
          f"commit {prov['commit']}")
    print(f"{'envs':>4} {'batch':>5} {'policy':>6} {'cudnn.benchmark':>15} "
          f"{'epochs/s (all envs)':>20} {'per env':>8} {'GPU busy':>8}")
    records = []
    try:
        for envs in (int(e) for e in args.envs.split(",")):
            for bs in (int(b) for b in args.batch_size.split(",")):
                for policy, bench in itertools.product(args.policy.split(","), benchmark_modes):
                    kwargs = {"task": "cifar10", "data_root": root, "device": args.device,
                              "batch_size": bs, "max_epochs": args.steps + 2,
                              "germination_gate": False, "train_subset": args.train_subset}
                    r = run(envs, kwargs, args.steps, policy, args.seed, bench)
                    busy = "-" if r["gpu_util_median"] is None else f"{r['gpu_util_median']:.0f} %"
                    per = sum(r["per_env_epochs_per_s"]) / envs
                    print(f"{envs:>4} {bs:>5} {policy:>6} {'on' if bench else 'off':>15} "
                          f"{r['aggregate_epochs_per_s']:>20.2f} {per:>8.2f} {busy:>8}", flush=True)
                    records.append({"bench": "cifar_speed", "batch_size": bs,
                                    "fake_data": args.fake_data, "device": args.device,
                                    "train_subset": args.train_subset, **r})
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for rec in records:
        save("cifar_speed", rec, args.out, tracked=args.record)
    return records


if __name__ == "__main__":
    main()
