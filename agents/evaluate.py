"""esper-eval: seeded episodes of baselines and saved agents, summarised with 95 % confidence intervals.

``esper-eval`` (:func:`main`) plays N episodes per policy with :func:`agents.rollout.run_episode` —
by default on seeds 1000, 1001, … (disjoint from training and from esper-train's validation seeds
500+), or over an instance split (:func:`agents.rollout.episode_plan`) — and prints a table of mean
± 95 % CI (:mod:`agents.stats`: a percentile bootstrap over episodes) of the return, final test
accuracy, parameters added, seeds fossilized and culled and illegal actions, then each policy minus
the reference (no-growth) on the same episodes, with the per-episode rows in an optional JSON file.
Saved agents are evaluated in the env they were trained in (``env_config.json`` of their run
folder, :mod:`agents.runs`); masks always go to models that take them, and a model trained with
masks (MaskablePPO) is refused when masks are turned off.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.cli import add_env_arguments, env_kwargs_from
from agents.envs import EnvSpec
from agents.policies import BASELINES, make_baseline
from agents.rollout import (
    EpisodeResult,
    MasksRequired,
    episode_plan,
    requires_masks,
    run_episode,
    takes_masks,
)
from agents.runs import load_curriculum, load_model
from agents.stats import mean_ci95, paired_differences
from agents.stats import summarize as summarize_metrics

__all__ = ["BASELINES", "DEFAULT_FIRST_SEED", "METRICS", "EpisodeResult", "MasksRequired",
           "build_parser", "episode_plan", "format_summary", "format_table", "main", "make_baseline",
           "mean_ci95", "paired_differences", "requires_masks", "run_episode", "summarize",
           "takes_masks"]
# (EpisodeResult ... takes_masks are re-exported: they lived here before agents.rollout,
# agents.policies and agents.stats)

DEFAULT_FIRST_SEED = 1000
"""esper-eval's first seed: held out from training (esper-train validates on 500+)."""
METRICS = ("episode_return", "final_test_acc", "params_added", "n_fossilized", "n_culled",
           "illegal_actions")
"""Per-episode quantities that esper-eval summarises."""


def format_table(results: list[EpisodeResult]) -> str:
    """Per-episode text table: policy, seed, test/val accuracy, return, params, lifecycle."""
    head = (f"{'policy':<22} {'seed':>4} {'test acc':>8} {'val acc':>8} {'return':>8} "
            f"{'+params':>7}  lifecycle (germinated/fossilized/culled)")
    lines = [head, "-" * len(head)]
    for r in results:
        lc = r.lifecycle
        lines.append(
            f"{r.policy:<22} {r.seed:>4} {r.final_test_acc:>8.2f} {r.final_val_acc:>8.2f} "
            f"{r.episode_return:>8.2f} {r.params_added:>7}  "
            f"{lc.get('germinated', 0)}/{lc.get('fossilized', 0)}/{lc.get('culled', 0)}")
    return "\n".join(lines)


# ---- esper-eval --------------------------------------------------------------------------------

def summarize(results: list[EpisodeResult]) -> dict[str, dict[str, dict[str, float]]]:
    """Per policy and metric (:data:`METRICS`): mean, 95 % CI half-width and n."""
    return summarize_metrics(results, METRICS)


def format_summary(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """The esper-eval table: one row per policy, mean ± 95 % CI per metric."""
    cols = [("episode_return", "return", 2), ("final_test_acc", "test acc %", 2),
            ("params_added", "+params", 0), ("n_fossilized", "fossilized", 2),
            ("n_culled", "culled", 2), ("illegal_actions", "illegal", 2)]
    head = f"{'policy':<24} {'n':>3}" + "".join(f" {label:>17}" for _, label, _ in cols)
    lines = [head, "-" * len(head)]
    for name, metrics in summary.items():
        cells = "".join(f" {metrics[k]['mean']:>9.{d}f} ± {metrics[k]['ci95']:<5.{d}f}"
                        for k, _, d in cols)
        lines.append(f"{name:<24} {int(metrics['episode_return']['n']):>3}{cells}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``esper-eval`` argument parser."""
    p = argparse.ArgumentParser(prog="esper-eval", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--policies", default="", help="comma-separated baselines: no-growth, random, "
                                                   "heuristic, scripted-<blueprint>")
    p.add_argument("--model", action="append", default=[], metavar="RUN",
                   help="an esper-train run folder or model .zip (repeatable)")
    p.add_argument("--which", choices=("best", "final"), default="best",
                   help="which model of a run folder: best_model.zip or model.zip")
    p.add_argument("--episodes", type=int, help="episodes per policy (default 20; with an "
                                                "instance set, each instance of the split once)")
    p.add_argument("--first-seed", type=int, default=DEFAULT_FIRST_SEED, help="seed of episode 0")
    p.add_argument("--split", choices=("train", "test"), default="test",
                   help="instance split to evaluate on (with an instance set)")
    p.add_argument("--no-masks", dest="use_masks", action="store_false",
                   help="do not pass action masks (refused for models trained with masks)")
    p.add_argument("--reference", default="no-growth",
                   help="policy that paired differences (same seeds and instances) are taken against")
    p.add_argument("--json", help="write the summary and every episode to this JSON file")
    p.add_argument("--device", default="cpu", help="torch device of the loaded models")
    p.add_argument("--vec-env", choices=("env", "batched"), default="env",
                   help="env: one EsperEnv plays the episodes in turn; batched: a batched work "
                        "queue of --n-envs lanes plays them (each baseline made afresh per "
                        "episode, seeded by it)")
    p.add_argument("--n-envs", type=int, default=16, help="lanes of the batched work queue")
    add_env_arguments(p)
    return p


def _play_batched(spec: EnvSpec, name: str, model: Any, plan: list, args: Any
                  ) -> list[EpisodeResult]:
    """``--vec-env batched``: ``plan`` as one work queue of ``--n-envs`` lanes."""
    from agents.bench import batched_env
    from agents.rollout import run_queue

    if args.n_envs < 1:
        raise ValueError(f"--n-envs {args.n_envs} is invalid; allowed: 1 or more")
    venv = batched_env(spec, min(args.n_envs, len(plan)))
    try:
        def policy_for(seed: int, options: Any) -> Any:
            return model if model is not None else make_baseline(name, venv.template, seed=seed)
        return [r for r, _ in run_queue(venv, plan, policy_for, name=name,
                                        use_masks=args.use_masks)]
    finally:
        venv.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``esper-eval``."""
    args = build_parser().parse_args(argv)
    baselines = [b.strip() for b in args.policies.split(",") if b.strip()]
    if not baselines and not args.model:
        baselines = list(BASELINES)
    try:
        players: list[tuple[str, Any, EnvSpec]] = []
        curricula: dict[str, Any] = {}
        for run in args.model:
            model, spec = load_model(run, which=args.which, device=args.device)
            players.append((Path(run).name, model, spec))
            if spec.curriculum is not None:  # the blueprint choices it was trained with
                curricula[Path(run).name] = load_curriculum(run, args.which)
        env_kwargs = env_kwargs_from(args)
        if env_kwargs or not players:
            base_spec = EnvSpec.from_kwargs(**env_kwargs)
        else:  # baselines play in the first model's env, without the agent-side wrappers
            base_spec = EnvSpec(players[0][2].config)
        players += [(b, None, base_spec) for b in baselines]
        results: list[EpisodeResult] = []
        for name, model, spec in players:
            if spec.esper_config.task.instance_set is not None:
                spec = spec.replace_config(instance_split=args.split)
            if args.episodes is not None and args.episodes < 1:
                raise ValueError(f"--episodes {args.episodes} is invalid; allowed: 1 or more")
            env = spec.make(curriculum=curricula.get(name))
            plan = episode_plan(env, args.first_seed, args.episodes)
            if args.vec_env == "batched":
                env.close()
                results += _play_batched(spec, name, model, plan, args)
                print(f"{name}: {len(results)} episodes done", file=sys.stderr, flush=True)
                continue
            policy = model if model is not None else make_baseline(name, env, seed=args.first_seed)
            for seed, options in plan:
                results.append(run_episode(env, policy, seed, name=name, options=options,
                                           use_masks=args.use_masks))
            env.close()
            print(f"{name}: {len(results)} episodes done", file=sys.stderr, flush=True)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as e:
        print(f"esper-eval: error: {e}", file=sys.stderr)
        return 2
    summary = summarize(results)
    print(format_summary(summary))
    paired: dict[str, Any] = {}
    if args.reference in summary and len(summary) > 1:
        paired = {m: paired_differences(results, args.reference, m)
                  for m in ("final_test_acc", "episode_return")}
        print(f"\nminus {args.reference}'s on the same episodes (mean ± 95 % CI):")
        print(f"  {'policy':<24} {'test acc (pp)':>16} {'return':>16}")
        for name, d in paired["final_test_acc"].items():
            r = paired["episode_return"][name]
            print(f"  {name:<24} {d['mean']:+8.2f} ± {d['ci95']:<5.2f} {r['mean']:+8.2f} ± {r['ci95']:<5.2f}")
    if args.json:
        data = {"summary": summary, "reference": args.reference, "paired_differences": paired,
                "first_seed": args.first_seed, "episodes": [asdict(r) for r in results]}
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
