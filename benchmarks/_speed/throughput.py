"""Throughput as users run it: 1 env, SubprocVecEnv and ThreadVecEnv workers, whole esper-train runs.

For each task, medians over ``--repeats``:

1. ``single``: steps/s of one env stepping WAIT (``env.step`` only, resets excluded), 1 torch thread.
2. ``subproc``: total steps/s of a ``SubprocVecEnv`` with ``--workers`` workers × 1 torch thread
   stepping WAIT (auto-resets included, as in training), over ``--vec-steps`` steps per worker;
   ``thread``: the same with :class:`agents.vec_env.ThreadVecEnv` (one thread per env in this
   process), timed right after it in each repeat; ``thread_vs_subproc`` is the median of the
   per-repeat ratios (``_mean`` and ``_ci95``: their mean and 95 % bootstrap half-width).
3. ``esper-train``: steps/s of a whole MaskablePPO run (``esper-train`` defaults but
   ``--train-steps`` steps, no evaluation, no TensorBoard, no progress bar; set-up excluded):
   environment steps plus PPO's updates; with ``DummyVecEnv`` (the default) and with
   ``--vec-env thread``.
4. ``bare``: epochs/s of the same host trained by a bare loop (``Trainer.train_epoch`` +
   ``validate``), 1 thread. Overheads are the bare epochs/s divided by the steps/s per worker.

    python -m benchmarks.speed throughput --repeats 3

Result: ``throughput.jsonl``.
"""

from __future__ import annotations

import statistics
import tempfile
import time

from agents.envs import EnvSpec
from agents.provenance import provenance
from agents.train import TrainArgs, train
from benchmarks._common import paired_ratios, rounds
from benchmarks._speed.env_step import _bare_epochs, _episode_steps
from esper_env.env import EsperEnv
from esper_env.nn.threads import num_threads


def _vec_steps_per_s(task: str, max_epochs: int, workers: int, steps: int, seed: int,
                     kind: str = "subproc") -> float:
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from agents.vec_env import ThreadVecEnv

    spec = EnvSpec.from_kwargs(task=task, max_epochs=max_epochs)
    venv = make_vec_env(lambda: spec.make(torch_threads=1), n_envs=workers, seed=seed,
                        vec_env_cls={"subproc": SubprocVecEnv, "thread": ThreadVecEnv}[kind])
    venv.reset()
    actions = [0] * workers
    t = time.perf_counter()
    for _ in range(steps):
        venv.step(actions)
    elapsed = time.perf_counter() - t
    venv.close()
    return workers * steps / elapsed


def _train_steps_per_s(task: str, max_epochs: int, steps: int, seed: int,
                       vec_env: str = "dummy") -> float:
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainArgs(algo="maskable-ppo", total_timesteps=steps, seed=seed, output=tmp,
                         vec_env=vec_env,
                         env_kwargs={"task": task, "max_epochs": max_epochs}, eval_freq=0,
                         tensorboard=False, progress_bar=False)
        t = time.perf_counter()
        train(args)
        return steps / (time.perf_counter() - t)


def bench_task(task: str, repeats: int, max_epochs: int, workers: int, vec_steps: int,
               train_steps: int) -> dict:
    env = EsperEnv(task=task, max_epochs=max_epochs)
    _episode_steps(env, 1000)  # warm-up
    single, bare, sub, thr, trained, trained_thr = [], [], [], [], [], []
    for r in rounds(repeats, f"throughput {task}"):
        total, steps, _ = _episode_steps(env, r)
        single.append(steps / total)
        bare.append(1.0 / _bare_epochs(env, r, max_epochs - 1))
        sub.append(_vec_steps_per_s(task, max_epochs, workers, vec_steps, r, "subproc"))
        thr.append(_vec_steps_per_s(task, max_epochs, workers, vec_steps, r, "thread"))
        if train_steps:
            trained.append(_train_steps_per_s(task, max_epochs, train_steps, r))
            trained_thr.append(_train_steps_per_s(task, max_epochs, train_steps, r, "thread"))
    med = statistics.median
    out = {"task": task, "repeats": repeats, "max_epochs": max_epochs, "workers": workers,
           "single_steps_per_s": med(single), "bare_epochs_per_s": med(bare),
           "overhead_single": med(bare) / med(single),
           "subproc_steps_per_s": med(sub), "overhead_subproc_per_worker": med(bare) / (med(sub) / workers),
           "thread_steps_per_s": med(thr), "overhead_thread_per_worker": med(bare) / (med(thr) / workers),
           **paired_ratios("thread_vs_subproc", thr, sub)}
    if trained:
        out.update(esper_train_steps_per_s=med(trained), train_steps=train_steps,
                   esper_train_thread_steps_per_s=med(trained_thr),
                   **paired_ratios("train_thread_vs_dummy", trained_thr, trained))
    return out


def add_options(p) -> None:  # noqa: ANN001
    p.add_argument("--workers", type=int, default=2, help="vector-env workers (1 torch thread each)")
    p.add_argument("--vec-steps", type=int, default=96, help="steps per vector-env worker")
    p.add_argument("--train-steps", type=int, default=1536, help="MaskablePPO steps (0: skip)")


def measure(args) -> list[dict]:  # noqa: ANN001
    with num_threads(1):
        rows = [bench_task(t.strip(), args.repeats, args.max_epochs, args.workers, args.vec_steps,
                           args.train_steps) for t in args.tasks.split(",") if t.strip()]
    prov = provenance()
    print(f"# {prov['cpu']}, {prov['cores']} cores, torch {prov['torch']}, commit {prov['commit']}")
    print(f"{'task':<10} {'1 env':>8} {'bare':>8} {'ovh':>6} {f'subproc {args.workers}x1':>13} "
          f"{'ovh/worker':>10} {f'thread {args.workers}x1':>12} {'thr/sub':>7} {'esper-train':>11} "
          f"{'--vec-env thread':>16}")
    for r in rows:
        train_txt = f"{r['esper_train_steps_per_s']:.1f}" if "esper_train_steps_per_s" in r else "-"
        thr_txt = f"{r['esper_train_thread_steps_per_s']:.1f}" if train_txt != "-" else "-"
        print(f"{r['task']:<10} {r['single_steps_per_s']:>8.1f} {r['bare_epochs_per_s']:>8.1f} "
              f"{r['overhead_single']:>6.3f} {r['subproc_steps_per_s']:>13.1f} "
              f"{r['overhead_subproc_per_worker']:>10.3f} {r['thread_steps_per_s']:>12.1f} "
              f"{r['thread_vs_subproc']:>7.2f} {train_txt:>11} {thr_txt:>16}")
        paired = f"  paired ratios (mean ± 95 % CI): thread/subproc {r['thread_vs_subproc_mean']:.2f} ± " \
                 f"{r['thread_vs_subproc_ci95']:.2f}"
        if train_txt != "-":
            paired += f", esper-train thread/dummy {r['train_thread_vs_dummy_mean']:.2f} ± " \
                      f"{r['train_thread_vs_dummy_ci95']:.2f}"
        print(paired)
    return [{"bench": "throughput", **r} for r in rows]
