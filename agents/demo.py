"""esper-demo: the main job on the embedded default task (digits).

Runs a few seeded Esper-v0 episodes of the random, no-growth and scripted (fixed-blueprint)
policies and prints one row per episode: final test accuracy, return, parameters added and the
lifecycle events. ``esper-demo --help`` lists the options.
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym

import esper_env  # noqa: F401  (registers Esper-v0)
from agents.evaluate import format_table, mean_ci95, run_episode
from agents.policies import NoGrowthPolicy, RandomPolicy, ScriptedPolicy


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``esper-demo``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits", help="task name (default: digits)")
    p.add_argument("--episodes", type=int, default=3, help="episodes per policy (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    p.add_argument("--blueprints", default="conv_heavy,depthwise",
                   help="comma-separated blueprints for the scripted policies")
    p.add_argument("--max-epochs", type=int, default=25, help="epoch budget per episode")
    args = p.parse_args(argv)

    env = gym.make("Esper-v0", task=args.task, max_epochs=args.max_epochs)
    policies = [NoGrowthPolicy(env), RandomPolicy(env, seed=args.seed)]
    policies += [ScriptedPolicy(env, b.strip()) for b in args.blueprints.split(",") if b.strip()]
    results = []
    for policy in policies:
        for i in range(args.episodes):
            results.append(run_episode(env, policy, seed=args.seed + i))
            print(format_table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(results))
    print()
    for policy in policies:
        accs = [r.final_test_acc for r in results if r.policy == policy.name]
        m, h = mean_ci95(accs)
        print(f"{policy.name:<22} mean test accuracy {m:6.2f} ± {h:.2f} (95 % CI, n={len(accs)})")
    env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
