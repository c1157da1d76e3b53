"""The speed runner: how fast the env and its training loops run, and whether memory stays flat.

    python -m benchmarks.speed <recipe> [options]
    python -m benchmarks.speed <recipe> --help

Recipes (one module each in :mod:`benchmarks._speed`):

* ``env-step``: env steps/s, the overhead over the bare host loop, the twin's cost;
* ``throughput``: steps/s with vector envs (subprocesses, threads) and whole esper-train runs;
* ``channels-last``: the NHWC memory layout against the default, paired;
* ``optimizer``: fused against unfused SGD, paired;
* ``cifar``: CIFAR-10 host epochs/s of several envs on one device, or a profile of one env's step;
* ``soak``: memory over many episodes with forks and snapshots;
* ``vector``: the batched vector env's env-steps/s for several K against one env, paired.
* ``train``: esper-train with the batched engine against the default, side by side, and where
  each run's time goes.

The shared options are declared once, here; a recipe takes those it uses, with its own defaults,
and adds its own. ``--torch-threads`` holds torch's thread count for the run and gives the process
its count back afterwards. Medians and paired ratios with 95 % bootstrap intervals over repeats
(:mod:`agents.stats`). Each record goes, with provenance (:func:`benchmarks._common.save`), to the
result file its ``bench`` key names (``env_step.jsonl``, ``throughput.jsonl``,
``channels_last.jsonl``, ``optimizer.jsonl``, ``cifar_speed.jsonl``, ``cifar_profile.jsonl``,
``soak.jsonl``, ``vector.jsonl``, ``train.jsonl``): in the untracked ``results/`` by default, in the tracked
``benchmarks/results/`` only with ``--record``, or in ``--out``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from agents.cli import key_value
from benchmarks._common import OptionError, save
from benchmarks._speed import channels_last, cifar, env_step, optimizer, soak, throughput, train, vector

POLICIES = ("wait", "grow")
"""``--policy`` values: WAIT throughout, or germinate ``conv_heavy`` at the first step."""


@dataclass(frozen=True)
class SpeedRecipe:
    """A speed measurement: its module (``measure``, and ``add_options``/``check`` if it has them),
    the shared options it uses and its defaults of them."""  # noqa: D205

    name: str
    module: ModuleType
    uses: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def measure(self) -> Callable[[argparse.Namespace], list[dict[str, Any]]]:
        return self.module.measure


RECIPES: dict[str, SpeedRecipe] = {r.name: r for r in (
    SpeedRecipe("env-step", env_step, ("tasks", "repeats", "max_epochs", "torch_threads"),
                {"tasks": "digits,synthetic", "repeats": 5}),
    SpeedRecipe("throughput", throughput, ("tasks", "repeats", "max_epochs"),
                {"tasks": "synthetic,digits", "repeats": 3}),
    SpeedRecipe("channels-last", channels_last,
                ("tasks", "repeats", "steps", "policy", "device", "torch_threads", "env_kwarg"),
                {"tasks": "digits", "repeats": 10, "steps": 4, "torch_threads": 1}),
    SpeedRecipe("optimizer", optimizer, ("tasks", "repeats", "device", "torch_threads", "env_kwarg"),
                {"tasks": "digits,synthetic", "repeats": 15, "torch_threads": 1}),
    SpeedRecipe("cifar", cifar, ("steps", "policy", "device"), {"steps": 8, "device": "cuda"}),
    SpeedRecipe("soak", soak, ("max_epochs", "torch_threads"), {"torch_threads": 1}),
    SpeedRecipe("vector", vector, ("tasks", "repeats", "steps", "policy", "max_epochs",
                                   "torch_threads", "env_kwarg"),
                {"tasks": "digits", "repeats": 3, "steps": 12, "torch_threads": 1}),
    SpeedRecipe("train", train, ("tasks", "repeats", "torch_threads", "env_kwarg"),
                {"repeats": 2, "torch_threads": 1}),
)}
"""The recipes by command-line name."""

# ---- options, each declared once -----------------------------------------------------------------

OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "tasks": (("--tasks",), {"default": "digits", "help": "comma-separated tasks"}),
    "repeats": (("--repeats",), {"type": int, "default": 5,
                                 "help": "repetitions (paired rounds: fresh envs or trainers, "
                                         "seed = round)"}),
    "max_epochs": (("--max-epochs",), {"type": int, "default": 25, "help": "epochs per episode"}),
    "steps": (("--steps",), {"type": int, "default": 4, "help": "timed env steps per env (and round)"}),
    "policy": (("--policy",), {"default": "wait,grow",
                               "help": "wait, grow or both (comma-separated): WAIT throughout, or "
                                       "GERMINATE conv_heavy at the first step (germination gate "
                                       "off)"}),
    "device": (("--device",), {"default": "cpu", "help": "torch device of the envs"}),
    "torch_threads": (("--torch-threads",), {"type": int, "default": None,
                                             "help": "torch threads of this process for the run "
                                                     "(unset: leave the count alone)"}),
    "env_kwarg": (("--env-kwarg",), {"action": "append", "default": [], "type": key_value,
                                     "metavar": "KEY=VALUE",
                                     "help": "another EsperConfig field, e.g. data_root=~/data "
                                             "(YAML values; repeatable)"}),
    "record": (("--record",), {"action": "store_true",
                               "help": "append the results to the tracked benchmarks/results/ "
                                       "(default: the untracked results/ at the repository root)"}),
    "out": (("--out",), {"default": None, "help": "results folder (overrides both defaults)"}),
    "quiet": (("--quiet",), {"action": "store_true",
                             "help": "no progress (else a bar on a terminal, one line per "
                                     "finished round on stderr otherwise)"}),
}
"""Every shared option: the flags and ``add_argument`` keywords; a recipe's ``defaults`` override."""

EVERY_RECIPE = ("record", "out", "quiet")
"""The shared options every recipe takes."""


def build_parser() -> argparse.ArgumentParser:
    """The parser: one sub-command per recipe, with the shared options it uses and its own."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE", help=", ".join(RECIPES))
    for r in RECIPES.values():
        doc = r.module.__doc__ or ""
        sp = sub.add_parser(r.name, help=doc.splitlines()[0], description=doc,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        wanted = set(EVERY_RECIPE) | set(r.uses)
        for name, (flags, kwargs) in OPTIONS.items():
            if name in wanted:
                sp.add_argument(*flags, **kwargs)
        if hasattr(r.module, "add_options"):
            r.module.add_options(sp)
        sp.set_defaults(**r.defaults)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before anything runs (an error exits with the usage)."""
    p = build_parser()
    args = p.parse_args(argv)
    recipe = RECIPES[args.recipe]
    try:
        if "policy" in recipe.uses:
            args.policies = [x for x in args.policy.split(",") if x]
            if not args.policies or any(x not in POLICIES for x in args.policies):
                raise OptionError(f"--policy {args.policy!r}: allowed are {', '.join(POLICIES)} "
                                  "(comma-separated)")
        if hasattr(recipe.module, "check"):
            recipe.module.check(args)
    except OptionError as e:
        p.error(f"{recipe.name}: {e}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run one recipe; returns its records (as appended to their result files)."""
    from esper_env.nn.threads import num_threads

    args = parse_args(argv)
    from agents.provenance import provenance
    from benchmarks import _common

    _common.QUIET = args.quiet

    start = provenance()
    started = {"date": start["date"], "commit": start["commit"]}  # the code that ran
    with num_threads(getattr(args, "torch_threads", None)):  # saved inside: provenance's count
        records = RECIPES[args.recipe].measure(args)
        paths = [save(rec["bench"], {**started, **rec}, args.out, tracked=args.record)
                 for rec in records]
    for path in dict.fromkeys(paths):
        print(f"saved to {path}")
    return records


if __name__ == "__main__":
    main()
