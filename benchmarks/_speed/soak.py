"""Soak: many episodes in one process; does memory stay flat?

Plays ``--episodes`` episodes (default 1,000) of one env in this process with random legal actions
(its own RNG: seeds germinate, blend, fossilize and get culled; the governor snapshots), and every
``--every`` episodes forks the env and pickles a snapshot (the paths that copy models). It samples
the process's resident memory (RSS) every ``--every`` episodes. The verdict compares every later
sample with the first (taken after ``--every`` episodes, once caches and allocator pools have
warmed up): flat means growth <= 5 %.

    python -m benchmarks.speed soak --episodes 1000 --every 50 --record

Result: ``soak.jsonl``.
"""

from __future__ import annotations

import gc
import os
import pickle
import time
from pathlib import Path

import numpy as np

from benchmarks._common import OptionError, rounds
from esper_env.env import EsperEnv

FLAT_LIMIT = 0.05
"""Largest allowed RSS growth over the first sample (5 %)."""


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; psutil elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil  # a dependency of the ray extra

    return int(psutil.Process(os.getpid()).memory_info().rss)


def add_options(p) -> None:  # noqa: ANN001
    p.add_argument("--task", default="digits")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--every", type=int, default=50, help="episodes between RSS samples")
    p.add_argument("--first-seed", type=int, default=50_000, help="episode seeds start here")


def check(args) -> None:  # noqa: ANN001
    if args.episodes < 2 * args.every or args.every < 1:
        raise OptionError(f"--episodes {args.episodes} / --every {args.every} is invalid; allowed: "
                        "--every >= 1 and --episodes >= 2 x --every (at least two samples)")


def measure(args) -> list[dict]:  # noqa: ANN001
    env = EsperEnv(task=args.task, max_epochs=args.max_epochs, n_slots=3)
    rng = np.random.default_rng(args.first_seed)
    samples: list[dict] = []
    steps = 0
    start = time.perf_counter()
    for ep in (r + 1 for r in rounds(args.episodes, "soak episodes")):
        env.reset(seed=args.first_seed + ep)
        done = False
        while not done:
            action = int(rng.choice(np.flatnonzero(env.action_masks())))
            _, _, done, _, _ = env.step(action)
            steps += 1
            if ep % args.every == 0 and steps % 7 == 0:  # fork and pickle mid-episode, too
                fork = env.fork()
                fork.step(0)
                pickle.loads(pickle.dumps(env.snapshot()))
                del fork
        if ep % args.every == 0:
            gc.collect()
            samples.append({"episode": ep, "rss_mb": rss_bytes() / 2**20})
            print(f"episode {ep:5d}  RSS {samples[-1]['rss_mb']:8.1f} MB  "
                  f"({steps / (time.perf_counter() - start):.0f} steps/s)", flush=True)
    env.close()
    first = samples[0]["rss_mb"]
    growth = max(s["rss_mb"] for s in samples) / first - 1.0
    final = samples[-1]["rss_mb"] / first - 1.0
    flat = growth <= FLAT_LIMIT
    result = {"bench": "soak", "task": args.task, "episodes": args.episodes, "every": args.every,
              "steps": steps, "max_epochs": args.max_epochs, "first_seed": args.first_seed,
              "samples": samples, "first_rss_mb": first, "max_growth": growth,
              "final_growth": final, "flat": flat, "wall_s": time.perf_counter() - start}
    print(f"\nRSS after {samples[0]['episode']} episodes {first:.1f} MB; largest growth after "
          f"that {100 * growth:+.2f} %, at the end {100 * final:+.2f} % -> "
          f"{'flat' if flat else 'NOT flat'} (limit {100 * FLAT_LIMIT:.0f} %)")
    return [result]

