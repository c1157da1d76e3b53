"""esper-eval: seeded episodes of baselines and saved agents, summarised with 95 % confidence intervals.

:func:`run_episode` plays one seeded episode of anything with an SB3-like ``predict`` (the
baselines, SB3 and sb3-contrib models). ``esper-eval`` (:func:`main`) plays N of them per policy —
by default on seeds 1000, 1001, … (disjoint from training and from esper-train's validation seeds
500+), or over an instance set's test split — and prints a table of mean ± 95 % CI of the return,
final test accuracy, parameters added, seeds fossilized and culled and illegal actions, with the
per-episode rows in an optional JSON file. Saved agents are evaluated in the env they were trained
in (``env_config.json`` of their run folder); masks always go to models that take them, and a model
trained with masks (MaskablePPO) is refused when masks are turned off, instead of silently playing
masked-out actions as ``stable_baselines3.common.evaluation.evaluate_policy`` would.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BASELINES = ("no-growth", "random", "heuristic", "ucb-heuristic")
"""Baseline names esper-eval knows (``scripted-<blueprint>`` is accepted too)."""
DEFAULT_FIRST_SEED = 1000
"""esper-eval's first seed: held out from training (esper-train validates on 500+)."""
METRICS = ("episode_return", "final_test_acc", "params_added", "n_fossilized", "n_culled",
           "illegal_actions")
"""Per-episode quantities that esper-eval summarises."""


@dataclass
class EpisodeResult:
    """Outcome of one episode."""

    policy: str
    seed: int
    episode_return: float
    final_val_acc: float
    final_test_acc: float
    params_added: int
    n_fossilized: int
    lifecycle: dict[str, int] = field(default_factory=dict)
    illegal_actions: int = 0
    rollbacks: int = 0
    length: int = 0
    instance: str | None = None

    @property
    def n_culled(self) -> int:
        """Seeds culled (by the agent or by a gate)."""
        return self.lifecycle.get("culled", 0)


class MasksRequired(ValueError):
    """A model trained with action masks was asked to act without them."""


def takes_masks(policy: Any) -> bool:
    """True if ``policy.predict`` accepts ``action_masks`` (baselines, MaskablePPO)."""
    try:
        return "action_masks" in inspect.signature(policy.predict).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def requires_masks(policy: Any) -> bool:
    """True for models trained with masks (sb3-contrib's maskable policies)."""
    try:
        from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
    except ImportError:  # the train extra is not installed: no maskable model can exist
        return False
    return isinstance(getattr(policy, "policy", None), MaskableActorCriticPolicy)


def run_episode(env: Any, policy: Any, seed: int, name: str | None = None,
                options: dict[str, Any] | None = None, use_masks: bool = True) -> EpisodeResult:
    """Play one episode from ``reset(seed=seed, options=options)`` with ``policy.predict``.

    Policies whose ``predict`` takes ``action_masks`` (the baselines, sb3-contrib's MaskablePPO)
    get the mask of the outermost wrapper that has ``action_masks()``; others (SB3's PPO, DQN) are
    called without it. Deterministic actions; ``options={"instance": k}`` pins an instance of the
    env's instance split.

    Raises:
        MasksRequired: ``use_masks=False`` (or an env without ``action_masks``) for a model trained
            with masks.
    """
    masked = takes_masks(policy) and use_masks
    get_masks = None
    if masked:
        try:
            get_masks = env.get_wrapper_attr("action_masks")
        except AttributeError:
            masked = False
    if not masked and requires_masks(policy):
        raise MasksRequired(
            f"{name or type(policy).__name__} was trained with action masks and would play "
            "masked-out actions without them; evaluate it with masks (drop --no-masks) in an env "
            "that has action_masks()")
    obs, info = env.reset(seed=seed, options=options)
    instance = info.get("instance")
    total, done, steps = 0.0, False, 0
    counts: Counter[str] = Counter()
    illegal = rollbacks = 0
    while not done:
        if masked:
            action, _ = policy.predict(obs, action_masks=get_masks(), deterministic=True)
        else:
            action, _ = policy.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(int(action))
        total += float(reward)
        steps += 1
        done = terminated or truncated
        illegal += int(info["illegal_action"])
        rollbacks += int(info["rollback"])
        for e in info["events"]:
            counts[e["to"].lower()] += 1
    return EpisodeResult(
        policy=name or getattr(policy, "name", type(policy).__name__), seed=seed,
        episode_return=total, final_val_acc=info["final_val_acc"],
        final_test_acc=info["final_test_acc"], params_added=info["params_added"],
        n_fossilized=info["n_fossilized"], lifecycle=dict(counts), illegal_actions=illegal,
        rollbacks=rollbacks, length=steps, instance=instance)


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95 % t confidence interval (0 for a single value)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), 0.0
    from scipy import stats  # scipy comes with scikit-learn

    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(half)


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
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in dict.fromkeys(r.policy for r in results):
        rows = [r for r in results if r.policy == name]
        out[name] = {}
        for metric in METRICS:
            m, h = mean_ci95([float(getattr(r, metric)) for r in rows])
            out[name][metric] = {"mean": m, "ci95": h, "n": len(rows)}
    return out


def paired_differences(results: list[EpisodeResult], reference: str,
                       metric: str = "final_test_acc") -> dict[str, dict[str, float]]:
    """Per policy: mean ± 95 % CI of ``metric`` minus the reference's on the same episode."""
    ref = {(r.seed, r.instance): float(getattr(r, metric)) for r in results if r.policy == reference}
    out = {}
    for name in dict.fromkeys(r.policy for r in results):
        if name == reference:
            continue
        diffs = [float(getattr(r, metric)) - ref[(r.seed, r.instance)]
                 for r in results if r.policy == name and (r.seed, r.instance) in ref]
        if diffs:
            m, h = mean_ci95(diffs)
            out[name] = {"mean": m, "ci95": h, "n": len(diffs)}
    return out


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


def make_baseline(name: str, env: Any, seed: int = 0) -> Any:
    """A baseline policy by name: no-growth, random, heuristic or scripted-<blueprint>."""
    from agents.policies import NoGrowthPolicy, RandomPolicy, ScriptedPolicy

    if name == "no-growth":
        return NoGrowthPolicy(env)
    if name == "random":
        return RandomPolicy(env, seed=seed)
    if name == "heuristic":
        from agents.heuristic import HeuristicPolicy

        return HeuristicPolicy(env)
    if name == "ucb-heuristic":
        from agents.heuristic import CurriculumHeuristicPolicy

        return CurriculumHeuristicPolicy(env, seed=seed)
    if name.startswith("scripted-"):
        return ScriptedPolicy(env, name.removeprefix("scripted-"))
    from esper_env.errors import unknown_name_message

    raise ValueError(unknown_name_message("baseline", name, [*BASELINES, "scripted-<blueprint>"]))


def episode_plan(env: Any, first_seed: int, episodes: int | None) -> list[tuple[int, dict | None]]:
    """(seed, reset options) of each episode.

    Seeds run from ``first_seed``; over an instance split, every instance once (or ``episodes``
    of them, cycling).
    """
    n_instances = len(env.unwrapped.instances)
    if n_instances:
        n = episodes or n_instances
        return [(first_seed + i, {"instance": i % n_instances}) for i in range(n)]
    return [(first_seed + i, None) for i in range(episodes or 20)]


def build_parser() -> argparse.ArgumentParser:
    """The ``esper-eval`` argument parser."""
    from agents.train import add_env_arguments

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
    add_env_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``esper-eval``."""
    from agents.envs import EnvSpec
    from agents.train import env_kwargs_from

    args = build_parser().parse_args(argv)
    baselines = [b.strip() for b in args.policies.split(",") if b.strip()]
    if not baselines and not args.model:
        baselines = list(BASELINES)
    try:
        players: list[tuple[str, Any, EnvSpec]] = []
        curricula: dict[str, Any] = {}
        for run in args.model:
            from agents.train import load_curriculum, load_model

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
            if spec.esper_config.instance_set is not None:
                spec = spec.replace_config(instance_split=args.split)
            env = spec.make(curriculum=curricula.get(name))
            policy = model if model is not None else make_baseline(name, env, seed=args.first_seed)
            for seed, options in episode_plan(env, args.first_seed, args.episodes):
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
        from dataclasses import asdict

        data = {"summary": summary, "reference": args.reference, "paired_differences": paired,
                "first_seed": args.first_seed, "episodes": [asdict(r) for r in results]}
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
