"""esper-demo: the main job on the embedded default task (digits).

Trains a short MaskablePPO run with ``esper-train`` (SB3 progress bar; TensorBoard log and models in
``--output``), then evaluates the trained agent against the random, no-growth and heuristic policies
with ``esper-eval`` on held-out seeds (1000, 1001, …) and prints the table: mean ± 95 % CI of the
return, final test accuracy, parameters added, seeds fossilized and culled and illegal actions, and
each policy's test accuracy minus no-growth's on the same episodes. A few minutes on 2 CPU cores with
the defaults; ``esper-demo --help`` lists the options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents import evaluate
from agents.train import TrainArgs, train


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``esper-demo``."""
    p = argparse.ArgumentParser(prog="esper-demo", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", default="digits", help="task name")
    p.add_argument("--total-timesteps", type=int, default=6144, help="training steps of MaskablePPO")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes per policy")
    p.add_argument("--output", default="runs/demo", help="run folder (overwritten)")
    p.add_argument("--max-epochs", type=int, help="epochs per episode (default: the env's, 25)")
    p.add_argument("--no-progress-bar", dest="progress_bar", action="store_false",
                   help="no progress bar")
    args = p.parse_args(argv)

    env_kwargs: dict = {"task": args.task}
    if args.max_epochs is not None:
        env_kwargs["max_epochs"] = args.max_epochs
    episode_steps = (args.max_epochs or 25) - 1
    print(f"== training MaskablePPO for {args.total_timesteps} steps on {args.task} -> {args.output}",
          flush=True)
    out = train(TrainArgs(algo="maskable-ppo", total_timesteps=args.total_timesteps,
                          output=args.output, overwrite=True, env_kwargs=env_kwargs,
                          eval_freq=max(args.total_timesteps // 4, episode_steps), eval_episodes=5,
                          progress_bar=args.progress_bar))
    print(f"\n== evaluating {out}/best_model.zip against the baselines on seeds 1000-"
          f"{1000 + args.episodes - 1} (TensorBoard: tensorboard --logdir {out}/tb)", flush=True)
    return evaluate.main(["--model", str(out), "--policies", "random,no-growth,heuristic",
                          "--episodes", str(args.episodes),
                          "--json", str(Path(out) / "eval.json")])


if __name__ == "__main__":
    sys.exit(main())
