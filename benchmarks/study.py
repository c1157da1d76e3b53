"""The study runner: policies × cases → episodes → a table of means with 95 % bootstrap intervals.

    python -m benchmarks.study <recipe> [options]
    python -m benchmarks.study <recipe> --help

Every recipe is the same study, built on esper-bench's code: a set of policies plays the same
cases (seeds from ``--first-seed``, or an instance split's instance × seed cases), each episode
with :func:`agents.rollout.run_episode` through esper-bench's worker (:func:`agents.bench._run_task`)
in the pool of :func:`agents.workers.run_tasks` (``--workers`` spawned processes with
``--torch-threads`` torch threads each; results do not depend on the spread); the statistics are
:mod:`agents.stats`'s (95 % percentile bootstrap intervals, paired differences on the same cases).
A recipe (:mod:`benchmarks._study`) says which policies play in which env on which cases, and
which table and extra statistics it reports:

* ``growth``: no-growth against every single-blueprint scripted policy;
* ``heuristic``: the heuristic against random and no-growth;
* ``instances``: every fixed policy on every instance of a split, the leave-one-seed-out oracle;
* ``integrity``: a zoo of fixed policies under every reward mode, Spearman(return, test accuracy)
  and the integrity bars;
* ``rollback``: what a governor rollback costs, paired clean and faulted episodes;
* ``agents``: each algorithm trained by esper-train (the training step), then its best model and
  the baselines on held-out seeds;
* ``parity``: the batched vector env against the single env, every fixed policy paired on the
  same seeds.

Each prints its table and appends one JSON line with provenance (:func:`benchmarks._common.save`)
to its result file (``growth.jsonl``, ``heuristic.jsonl``, ``instances.jsonl``,
``reward_integrity.jsonl``, ``rollback.jsonl``, ``agents.jsonl``, ``parity.jsonl``): in the
untracked ``results/`` by default, in the tracked ``benchmarks/results/`` only with ``--record``,
or in ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from agents.cli import key_value
from benchmarks._common import OptionError, save
from benchmarks._study import (
    growth,
    heuristic,
    instances,
    integrity,
    parity,
    rollback,
    trained_agents,
)
from benchmarks._study.core import Recipe, play

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    growth.RECIPE, heuristic.RECIPE, instances.RECIPE, integrity.RECIPE, rollback.RECIPE,
    trained_agents.RECIPE, parity.RECIPE)}
"""The recipes by command-line name."""

# ---- options, each declared once -----------------------------------------------------------------

OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "seeds": (("--seeds",), {"type": int, "default": None,
                             "help": "cases per policy: seeds from --first-seed (on every instance, "
                                     "for instances and integrity on an instance set)"}),
    "first_seed": (("--first-seed",), {"type": int, "default": 1000,
                                       "help": "first seed (1000+: held out from calibration)"}),
    "task": (("--task",), {"default": "digits", "help": "task: digits, synthetic, tinytext, cifar10"}),
    "max_epochs": (("--max-epochs",), {"type": int, "default": None,
                                       "help": "epochs per episode (default: the config's, 25)"}),
    "instance_set": (("--instance-set",), {"default": None,
                                           "help": "an instance set (a shipped name or a JSON "
                                                   "file): play its --split"}),
    "split": (("--split",), {"default": "test", "choices": ("train", "test"),
                             "help": "instance split"}),
    "instances": (("--instances",), {"type": int, "default": None,
                                     "help": "only the first N instances of the split"}),
    "blueprints": (("--blueprints",), {"default": None,
                                       "help": "comma-separated (default: every blueprint of the "
                                               "task's topology)"}),
    "policies": (("--policies",), {"default": None, "help": "comma-separated policies"}),
    "late_fraction": (("--late-fraction",), {"type": float, "default": 0.56,
                                             "help": "late policies never germinate before this "
                                                     "fraction of the epoch budget (0.56: epoch 14 "
                                                     "of 25)"}),
    "env_kwarg": (("--env-kwarg",), {"action": "append", "default": [], "type": key_value,
                                     "metavar": "KEY=VALUE",
                                     "help": "any other EsperConfig field, value in YAML "
                                             "(repeatable), e.g. --env-kwarg 'gates={min_"
                                             "training_epochs: 1}'"}),
    "workers": (("--workers",), {"type": int, "default": 1,
                                 "help": "episode processes (1: in this process; unset for "
                                         "instances and integrity: one per core)"}),
    "torch_threads": (("--torch-threads",), {"type": int, "default": None,
                                             "help": "torch threads of every episode process (this "
                                                     "one too with --workers 1); default 1 (agents "
                                                     "without --workers: 2)"}),
    "n_envs": (("--n-envs",), {"type": int, "default": 0,
                               "help": "0: one EsperEnv per episode; K: each player's episodes "
                                       "as one batched work queue of K lanes (EsperVectorEnv)"}),
    "record": (("--record",), {"action": "store_true",
                               "help": "append the result to the tracked benchmarks/results/ "
                                       "(default: the untracked results/ at the repository root)"}),
    "out": (("--out",), {"default": None, "help": "results folder (overrides both defaults)"}),
    "quiet": (("--quiet",), {"action": "store_true",
                             "help": "no progress (else a bar on a terminal, one line per finished "
                                     "task on stderr otherwise)"}),
}
"""Every shared option: the flags and ``add_argument`` keywords; a recipe's ``defaults`` override."""

EVERY_RECIPE = ("seeds", "first_seed", "env_kwarg", "workers", "torch_threads", "n_envs",
                "record", "out", "quiet")
"""The shared options every recipe takes (the others only where its ``uses`` names them)."""


def build_parser() -> argparse.ArgumentParser:
    """The parser: one sub-command per recipe, with the shared options it uses and its own."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.study", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE",
                           help=", ".join(RECIPES))
    for r in RECIPES.values():
        sp = sub.add_parser(r.name, help=r.summary, description=r.description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        wanted = set(EVERY_RECIPE) | set(r.uses)
        for name, (flags, kwargs) in OPTIONS.items():
            if name in wanted:
                sp.add_argument(*flags, **kwargs)
        if r.add_options is not None:
            r.add_options(sp)
        sp.set_defaults(**r.defaults)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the recipe's defaults resolved (worker and thread counts)."""
    args = build_parser().parse_args(argv)
    recipe = RECIPES[args.recipe]
    if args.workers is None:
        args.workers = os.cpu_count() or 1
    if args.torch_threads is None:
        args.torch_threads = recipe.threads(args) if recipe.threads is not None else 1
    if args.workers < 1 or args.torch_threads < 1 or (args.seeds is not None and args.seeds < 1):
        build_parser().error(f"--workers {args.workers}, --torch-threads {args.torch_threads} and "
                             f"--seeds {args.seeds} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one recipe; returns its record (as appended to its result file)."""
    import time

    args = parse_args(argv)
    recipe = RECIPES[args.recipe]
    try:
        if args.n_envs < 0:
            raise OptionError(f"--n-envs {args.n_envs}: allowed are 0 (one env per episode) "
                              "or a lane count")
        design = recipe.design(args)
    except OptionError as e:
        sys.exit(f"python -m benchmarks.study {recipe.name}: error: {e}")
    from agents.provenance import provenance

    start = provenance()
    started = {"date": start["date"], "commit": start["commit"]}  # the code that ran
    try:
        t0 = time.perf_counter()
        episodes = play(design.players, design.plan, args.workers, args.torch_threads,
                        progress=not args.quiet, n_envs=args.n_envs)
        record = recipe.report(args, design, episodes, time.perf_counter() - t0)
    finally:
        for cleanup in design.cleanup:
            cleanup()
    record.setdefault("torch_threads", args.torch_threads)  # the episodes', not this process's now
    path = save(recipe.result, {**started, **record}, args.out, tracked=args.record)
    print(f"saved to {path}")
    return record


if __name__ == "__main__":
    main()
