"""CIFAR-10 speed: aggregate host epochs per second of several envs sharing one device.

Each env runs in its own spawned process (as in a SubprocVecEnv; ``--layout threads``: in its
own thread of one process, on its own CUDA stream) with the whole CIFAR-10 task on the device:
45,000 training images per epoch (uint8 on the device, augmented and normalised there, per
batch), the 5,000 validation images every epoch, and the seed's counterfactual pass while a seed
is blended in. A "host epoch" is one env step. After a warm-up (reset: data to the device, first
epoch), all envs start timing together at a barrier; aggregate epochs/s is the sum of the timed
steps over the wall time until the last env finishes. With ``--policy grow`` each env germinates
``conv_heavy`` at its first step (the germination gate is off), so the timed epochs include a
seed in TRAINING, then BLENDING with counterfactuals; ``wait`` times the bare host.

Speed does not depend on the pixel values, so ``--fake-data`` writes a full-size folder in the
CIFAR-10 format with random images (the real dataset is only needed for accuracy, never for
speed); the output says which it used.

    python -m benchmarks.speed cifar --data-root ~/data --device cuda --envs 4
    python -m benchmarks.speed cifar --fake-data --device cuda --envs 4 --batch-size 512
    python -m benchmarks.speed cifar --fake-data --device cuda --cudnn-benchmark off,on
    python -m benchmarks.speed cifar --fake-data --device cuda --layout processes,threads
    python -m benchmarks.speed cifar --fake-data --device cuda --channels-last off,on

``--cudnn-benchmark on`` sets ``torch.backends.cudnn.benchmark`` in the env processes (the env
itself never changes that process-wide flag).

``--profile`` answers *where the time goes* instead: one env in this process, its first step
(the warm-up; germination with ``--policy grow``) outside the profile, then ``--steps`` steps under
``torch.profiler``. It reports the wall time per step, the GPU kernels' summed time per step (so
whether the step is GPU-bound or waits for the CPU that launches them), the time of each phase of
a step (train_epoch, validate, twin_validate, snapshot) and the costliest kernels and operators;
``--trace-dir`` also writes each configuration's trace (gzipped Chrome/Perfetto JSON):

    python -m benchmarks.speed cifar --fake-data --device cuda --batch-size 512 \
        --profile --steps 4 --trace-dir /tmp/traces

Results: ``cifar_speed.jsonl``, with ``--profile`` ``cifar_profile.jsonl``.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import multiprocessing as mp
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from agents.provenance import provenance
from benchmarks._common import OptionError, grow_actions, rounds, sync, timed_steps


def _worker(rank: int, kwargs: dict, steps: int, policy: str, seed: int, cudnn_benchmark: bool,
            barrier, out) -> None:
    """One env in its own spawned process (the ``processes`` layout)."""
    import torch

    from agents.workers import exit_with_parent

    exit_with_parent()  # no env left waiting at the barrier if the parent is killed

    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = cudnn_benchmark  # this process's own setting
    _episode(rank, kwargs, steps, policy, seed, barrier, out, own_stream=False)


def _episode(rank: int, kwargs: dict, steps: int, policy: str, seed: int, barrier, out,
             own_stream: bool) -> None:
    """Reset one env (the warm-up), wait at ``barrier``, time ``steps`` steps, put the result.

    ``own_stream``: on CUDA, run the env on a stream of its own (this thread's current stream), so
    that the kernels of envs in different threads of one process may overlap on the GPU.
    """
    import torch

    from esper_env.env import EsperEnv

    cuda = kwargs["device"].startswith("cuda")
    if cuda and own_stream:
        torch.cuda.set_stream(torch.cuda.Stream(torch.device(kwargs["device"])))
    try:
        env = EsperEnv(**kwargs)
        env.reset(seed=seed + rank)
        sync(kwargs["device"])
        actions = grow_actions(env, policy, steps)
    except Exception as e:  # reported by the parent; nobody waits forever at the barrier
        out.put(("failed", rank, f"{type(e).__name__}: {e}"))
        barrier.abort()
        return
    try:
        barrier.wait()
    except threading.BrokenBarrierError:  # another env failed to start; the parent reports it
        return
    done, wall, info = timed_steps(env, actions, kwargs["device"])
    out.put((rank, done, wall, info["stages"], info["val_acc"], torch.backends.cudnn.benchmark))


@contextlib.contextmanager
def _env_settings(cudnn_benchmark: bool) -> Iterator[None]:
    """One torch thread, as in each env process, and ``cudnn.benchmark``; both given back after."""
    import torch

    from esper_env.nn.threads import num_threads

    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cudnn_benchmark
    try:
        with num_threads(1):
            yield
    finally:
        torch.backends.cudnn.benchmark = saved


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


def _collect(out, workers: list) -> list[tuple]:
    """One result per worker from ``out``; an error (not a hang) when a worker ends without one."""
    results: list[tuple] = []
    while len(results) < len(workers):
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            ended = sum(not w.is_alive() for w in workers)
            if ended > len(results):
                try:  # it may have put its result just before ending
                    results.append(out.get(timeout=5.0))
                except queue.Empty:
                    raise RuntimeError(f"{ended - len(results)} env worker(s) ended without a "
                                       "result; see the traceback above") from None
    return results


def run(envs: int, kwargs: dict, steps: int, policy: str, seed: int,
        cudnn_benchmark: bool = False, layout: str = "processes") -> dict:
    """Time ``envs`` envs together: each in its own spawned process (``processes``, like a
    ``SubprocVecEnv``) or each in its own thread of this process, on its own CUDA stream
    (``threads``: one CUDA context, so kernels of different envs can run at the same time).
    """  # noqa: D205
    if layout == "processes":
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(envs + 1), ctx.Queue()
        workers = [ctx.Process(target=_worker,
                               args=(r, kwargs, steps, policy, seed, cudnn_benchmark, barrier, out))
                   for r in range(envs)]
    elif layout == "threads":

        barrier, out = threading.Barrier(envs + 1), queue.Queue()
        workers = [threading.Thread(target=_episode, daemon=True,
                                    args=(r, kwargs, steps, policy, seed, barrier, out, True))
                   for r in range(envs)]
    else:
        raise ValueError(f"layout={layout!r} is invalid; allowed: 'processes', 'threads'")
    # the threads run in this process: its settings as in each process of the other layout
    with _env_settings(cudnn_benchmark) if layout == "threads" else contextlib.nullcontext():
        for w in workers:
            w.start()
        try:
            barrier.wait()  # every env has reset (warm-up done)
        except threading.BrokenBarrierError:
            failed = out.get(timeout=60)
            raise RuntimeError(f"env {failed[1]} failed to start: {failed[2]}") from None
        t0 = time.perf_counter()
        stop, util = threading.Event(), []
        sampler = threading.Thread(target=_gpu_sampler, args=(stop, util), daemon=True)
        if kwargs["device"].startswith("cuda") and shutil.which("nvidia-smi"):
            sampler.start()
        results = _collect(out, workers)
        wall = time.perf_counter() - t0
        stop.set()
        for w in workers:
            w.join()
    epochs = sum(r[1] for r in results)
    per_env = [r[1] / r[2] for r in sorted(results)]
    return {"envs": envs, "layout": layout, "policy": policy, "epochs": epochs, "wall_s": wall,
            "aggregate_epochs_per_s": epochs / wall, "per_env_epochs_per_s": per_env,
            "gpu_util_median": sorted(util)[len(util) // 2] if util else None,
            "final_stages": [r[3] for r in sorted(results)],
            "final_val_acc": [r[4] for r in sorted(results)],
            "cudnn_benchmark": [r[5] for r in sorted(results)]}


PHASES = ("train_epoch", "validate", "twin_validate", "checkpoint", "restore_checkpoint")
"""The trainer methods whose time ``--profile`` reports (each under a ``esper.<name>`` range)."""


def _label_phases(trainer) -> None:
    """Wrap this trainer's per-step methods (the instance's, not the class's) in profiler ranges."""
    import torch

    def labelled(method, label: str):
        def call(*args, **kw):
            with torch.profiler.record_function(label):
                return method(*args, **kw)
        return call

    for name in PHASES:
        setattr(trainer, name, labelled(getattr(trainer, name), f"esper.{name}"))


def _device_time(event) -> float:
    """Device time (us) of a profiler event: a kernel's duration, or the kernels an op launched."""
    return _time_field(event, "device_time_total")


def _self_device_time(event) -> float:
    return _time_field(event, "self_device_time_total")


def _time_field(event, name: str) -> float:
    """``event.<name>``, or its older spelling with ``cuda`` (torch before 2.4)."""
    if hasattr(event, name):
        return getattr(event, name) or 0.0
    return getattr(event, name.replace("device", "cuda"), 0.0) or 0.0


def _summarise(events, steps: int, wall: float, top: int) -> dict:
    """Per-step phase times, kernel time and the top kernels and operators of a profile's events.

    Device events are the kernels (and copies) that ran on the GPU; the GPU-side mirrors of
    ``record_function`` ranges (user annotations) are not kernels and are left out. Phases and
    operators are the host-side events: a phase's device time is that of the kernels it launched.
    """
    from torch.autograd import DeviceType

    kernels: dict[str, list[float]] = {}
    phases: dict[str, list[float]] = {}
    ops: dict[str, list[float]] = {}
    for e in events:
        if e.device_type != DeviceType.CPU:
            if not getattr(e, "is_user_annotation", False):
                _add(kernels, e.name, _device_time(e))
        elif e.name.startswith("esper."):
            _add(phases, e.name[len("esper."):], e.cpu_time_total, _device_time(e))
        elif e.name.startswith("aten::"):
            _add(ops, e.name, e.self_cpu_time_total, _self_device_time(e))
    kernel_us = sum(t for _, t in kernels.values())
    column = 2 if kernels else 1  # rank operators by their own GPU time, or CPU time on a CPU
    per_step = 1e6 * steps  # microseconds in all -> seconds per step
    return {
        "steps": steps, "wall_s_per_step": wall / steps,
        "kernel_s_per_step": kernel_us / per_step if kernels else None,
        "kernel_busy": kernel_us / 1e6 / wall if kernels else None,
        "kernels_per_step": sum(c for c, _ in kernels.values()) / steps if kernels else None,
        "phases": {name: {"calls_per_step": c / steps, "cpu_s_per_step": cpu / per_step,
                          "device_s_per_step": dev / per_step}
                   for name, (c, cpu, dev) in phases.items()},
        "top_kernels": [{"name": n, "calls_per_step": c / steps, "s_per_step": t / per_step,
                         "share": t / kernel_us if kernel_us else 0.0}
                        for n, (c, t) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]],
        "top_ops": [{"name": n, "calls_per_step": v[0] / steps, "self_cpu_s_per_step": v[1] / per_step,
                     "self_device_s_per_step": v[2] / per_step}
                    for n, v in sorted(ops.items(), key=lambda kv: -kv[1][column])[:top]],
    }


def _add(table: dict[str, list[float]], name: str, *times: float) -> None:
    """Count one more ``name`` in ``table`` and add its times."""
    row = table.setdefault(name, [0] + [0.0] * len(times))
    row[0] += 1
    for k, t in enumerate(times, 1):
        row[k] += t


def profile(kwargs: dict, steps: int, policy: str, seed: int, cudnn_benchmark: bool = False,
            trace: Path | None = None, top: int = 15) -> dict:
    """Profile ``steps`` env steps of one env in this process (see the module docstring).

    The first step (germination with ``policy="grow"``) is the warm-up and is not profiled. The
    thread count is 1, as in each env process of :func:`run`; it and ``cudnn.benchmark`` are given
    back afterwards. ``trace``: also write the profile there as gzipped Chrome-trace JSON.
    ``kwargs["max_epochs"]`` is raised so that no profiled step ends the episode (whose test-split
    evaluation would count as a step's validation).
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from esper_env.env import EsperEnv

    cuda = kwargs["device"].startswith("cuda")
    with _env_settings(cudnn_benchmark):
        env = EsperEnv(**{**kwargs, "max_epochs": max(kwargs["max_epochs"], steps + 3)})
        env.reset(seed=seed)
        env.step(grow_actions(env, policy, 1)[0])
        sync(kwargs["device"])
        _label_phases(env.trainer)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with torch_profile(activities=activities) as prof:
            done, wall, info = timed_steps(env, [0] * steps, kwargs["device"])
    if trace is not None:
        trace.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(raw))
            with raw.open("rb") as src, gzip.open(trace, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return {"policy": policy, "cudnn_benchmark": cudnn_benchmark, "final_stages": info["stages"],
            **_summarise(prof.events(), done, wall, top)}


def _print_profile(r: dict, top: int = 8) -> None:
    ms = 1e3
    kernel = r["kernel_s_per_step"]
    busy = "" if kernel is None else (f", GPU kernels {kernel * ms:.1f} ms ({r['kernels_per_step']:.0f}"
                                      f" kernels, {r['kernel_busy']:.0%} of the wall time)")
    print(f"# batch {r['batch_size']}, policy {r['policy']}, cudnn.benchmark "
          f"{_on_off(r['cudnn_benchmark'])}, channels_last {_on_off(r['channels_last'])}: "
          f"{r['wall_s_per_step'] * ms:.1f} ms per step"
          f"{busy}; stages at the end {r['final_stages']}")
    for name, ph in r["phases"].items():
        print(f"    {name:<14} {ph['calls_per_step']:>5.1f} calls  CPU {ph['cpu_s_per_step'] * ms:>8.1f} ms"
              f"  GPU {ph['device_s_per_step'] * ms:>8.1f} ms per step")
    rows = r["top_kernels"] or r["top_ops"]
    for row in rows[:top]:
        t = row.get("s_per_step", row.get("self_cpu_s_per_step"))
        share = f"{row['share']:>5.0%}" if "share" in row else "     "
        print(f"    {t * ms:>8.2f} ms {share} {row['calls_per_step']:>6.1f}x  {row['name'][:90]}")


def _env_kwargs(args, root: str, batch_size: int, channels_last: bool) -> dict:
    return {"task": "cifar10", "data_root": root, "device": args.device, "batch_size": batch_size,
            "max_epochs": args.steps + 2, "germination_gate": False,
            "train_subset": args.train_subset, "channels_last": channels_last}


def _source(args) -> dict:
    return {"fake_data": args.fake_data, "device": args.device,
            "train_subset": args.train_subset}


def _on_off(flag: bool) -> str:
    return "on" if flag else "off"


def _speed_sweep(args, root: str) -> list[dict]:
    print(f"{'envs':>4} {'layout':>9} {'batch':>5} {'policy':>6} {'cudnn.benchmark':>15} "
          f"{'channels_last':>13} {'epochs/s (all envs)':>20} {'per env':>8} {'GPU busy':>8}")
    records = []
    runs = list(itertools.product((int(e) for e in args.envs.split(",")),
                                  (int(b) for b in args.batch_size.split(",")), args.layouts,
                                  args.policies, args.benchmark_modes, args.nhwc_modes))
    for i in rounds(len(runs), "cifar runs"):
        envs, bs, layout, policy, bench, nhwc = runs[i]
        r = run(envs, _env_kwargs(args, root, bs, nhwc), args.steps, policy, args.seed,
                bench, layout)
        busy = "-" if r["gpu_util_median"] is None else f"{r['gpu_util_median']:.0f} %"
        per = sum(r["per_env_epochs_per_s"]) / envs
        print(f"{envs:>4} {layout:>9} {bs:>5} {policy:>6} {_on_off(bench):>15} "
              f"{_on_off(nhwc):>13} {r['aggregate_epochs_per_s']:>20.2f} {per:>8.2f} "
              f"{busy:>8}", flush=True)
        records.append({"bench": "cifar_speed", **_source(args), "batch_size": bs,
                        "channels_last": nhwc, **r})
    return records


def _profile_sweep(args, root: str) -> list[dict]:
    records = []
    runs = list(itertools.product((int(b) for b in args.batch_size.split(",")), args.policies,
                                  args.benchmark_modes, args.nhwc_modes))
    for i in rounds(len(runs), "cifar profiles"):
        bs, policy, bench, nhwc = runs[i]
        trace = None if args.trace_dir is None else args.trace_dir / (
            f"cifar_profile_bs{bs}_{policy}_cudnn{int(bench)}_nhwc{int(nhwc)}.json.gz")
        r = {"bench": "cifar_profile", **_source(args), "batch_size": bs, "channels_last": nhwc,
             **profile(_env_kwargs(args, root, bs, nhwc), args.steps, policy, args.seed, bench,
                       trace)}
        _print_profile(r)
        records.append(r)
    return records


def add_options(p) -> None:  # noqa: ANN001
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-root", help="folder holding cifar-10-batches-py")
    src.add_argument("--fake-data", action="store_true",
                     help="write a full-size CIFAR-format folder of random images (speed only)")
    p.add_argument("--envs", default="4", help="comma-separated env counts, e.g. 1,4")
    p.add_argument("--batch-size", default="128,512", help="comma-separated batch sizes")
    p.add_argument("--train-subset", type=int, default=None, help="(CPU) train on this many images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", default="processes",
                   help="processes, threads or both (comma-separated): each env in its own process "
                        "(like SubprocVecEnv; one CUDA context each, so the GPU time-slices between "
                        "them) or in its own thread of one process, on its own CUDA stream")
    p.add_argument("--cudnn-benchmark", default="off",
                   help="off, on or both (comma-separated): torch.backends.cudnn.benchmark in the "
                        "env processes (cuDNN times its algorithms for each new shape and keeps "
                        "the fastest; results may then differ between runs on CUDA)")
    p.add_argument("--channels-last", default="off",
                   help="off, on or both (comma-separated): the envs' channels_last setting (the "
                        "CNN and every batch in the NHWC memory layout)")
    p.add_argument("--profile", action="store_true",
                   help="profile one env in this process instead of timing --envs (see above); "
                        "--envs and --layout are then not used")
    p.add_argument("--trace-dir", type=Path, default=None,
                   help="with --profile: also write each configuration's trace here (.json.gz)")


def check(args) -> None:  # noqa: ANN001
    """Check the options; read the comma-separated ones (``layouts``, ``benchmark_modes``, ``nhwc_modes``)."""
    if args.trace_dir is not None and not args.profile:
        raise OptionError("--trace-dir needs --profile")
    args.layouts = args.layout.split(",")
    if any(x not in ("processes", "threads") for x in args.layouts):
        raise OptionError(f"--layout {args.layout!r}: allowed are processes, threads (comma-separated)")
    modes = {"off": False, "on": True}
    for flag, value, dest in (("--cudnn-benchmark", args.cudnn_benchmark, "benchmark_modes"),
                              ("--channels-last", args.channels_last, "nhwc_modes")):
        try:
            setattr(args, dest, [modes[m] for m in value.split(",")])
        except KeyError as e:
            raise OptionError(f"{flag} {value!r}: {e.args[0]!r} is not one of off, on") from None


def measure(args) -> list[dict]:  # noqa: ANN001
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
    try:
        return (_profile_sweep if args.profile else _speed_sweep)(args, root)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
