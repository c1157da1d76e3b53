"""The machinery of every study: players × cases → episodes, with esper-bench's rollout and pool.

A study is a :class:`Recipe`. Its ``design(args)`` says who plays and on which cases: a list of
:class:`Player` (a baseline by name, a policy factory, or a saved esper-train run, each in the env
of its :class:`~agents.envs.EnvSpec`) and one plan of ``(seed, reset options)`` cases that every
player plays. :func:`play` plays them with esper-bench's worker (:func:`agents.bench._run_task`,
which plays each episode with :func:`agents.rollout.run_episode`) in the pool of
:func:`agents.workers.run_tasks`. The recipe's ``report`` turns the episodes into its statistics
(:mod:`agents.stats`: 95 % bootstrap intervals, paired differences on the same cases), prints its
table and returns the record that :mod:`benchmarks.study` appends, with provenance, to the
recipe's result file.

Episodes do not depend on how they were spread: every episode is a fresh reset of its seed, each
non-sequential player makes its policy afresh for every episode (seeded by it), and every process
plays with the same torch thread count. With ``n_envs`` (``--n-envs K``) each non-sequential
player's cases are one batched work queue of K lanes instead (:func:`agents.rollout.run_queue`
on :class:`esper_env.vector.EsperVectorEnv`): the same episodes within floating-point rounding.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.envs import EnvSpec
from agents.rollout import EpisodeResult
from benchmarks._common import OptionError

Case = tuple[int, dict[str, Any] | None]
"""One episode of the plan: its seed and its reset options (``{"instance": k}`` or None)."""


@dataclass(frozen=True)
class Player:
    """One policy of a study, in its env.

    Args:
        policy: the name in the episodes' records; a baseline name
            (:func:`agents.policies.make_baseline`) unless ``factory`` or ``model`` is given.
        spec: the env it plays in.
        factory: a module-level ``factory(policy, env, seed, options) -> policy`` (picklable: worker
            processes import it), called for every episode (for the first only, if ``sequential``).
        model: an esper-train run folder whose best model plays (``policy`` is then only its name).
        sequential: one policy plays every case in plan order (it learns across episodes, or it is
            seeded once); else a fresh one per episode, seeded by the episode's seed.
        tags: added to each of its episodes' records (e.g. ``{"train_seed": 0}``).
        info_keys: ``info`` values to keep for every epoch (:class:`agents.rollout.EpisodeTrace`).
    """

    policy: str
    spec: EnvSpec
    factory: Callable[..., Any] | None = None
    model: str | None = None
    sequential: bool = False
    tags: dict[str, Any] = field(default_factory=dict)
    info_keys: tuple[str, ...] = ()


@dataclass
class Design:
    """What a recipe plays (``players`` × ``plan``) and what its report needs besides (``context``).

    ``cleanup`` callables run after the report (e.g. removing the agents recipe's run folders).
    """

    players: list[Player]
    plan: list[Case]
    context: dict[str, Any] = field(default_factory=dict)
    cleanup: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True)
class Recipe:
    """A study: its name, result file, options, design and report.

    Args:
        name: the command-line name (``python -m benchmarks.study <name>``).
        result: the result file's stem (``<result>.jsonl``).
        summary: one line for ``--help``.
        description: the recipe's ``--help`` text (its module docstring).
        design: ``design(args) -> Design``.
        report: ``report(args, design, episodes, elapsed_s) -> record``; prints the table.
        uses: the shared options it takes besides the ones every recipe takes
            (:data:`benchmarks.study.OPTIONS`).
        defaults: its defaults of shared options (e.g. ``{"first_seed": 3000}``).
        add_options: adds its own options to its parser.
        threads: the torch threads when ``--torch-threads`` is not given (default 1).
    """

    name: str
    result: str
    summary: str
    description: str
    design: Callable[[argparse.Namespace], Design]
    report: Callable[[argparse.Namespace, Design, list[dict[str, Any]], float], dict[str, Any]]
    uses: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict)
    add_options: Callable[[argparse.ArgumentParser], None] | None = None
    threads: Callable[[argparse.Namespace], int] | None = None


# ---- playing -----------------------------------------------------------------------------------

def play(players: list[Player], plan: list[Case], workers: int, threads: int,
         progress: bool = True, n_envs: int = 0) -> list[dict[str, Any]]:
    """Every player's episodes on ``plan``: players in order, each player's in plan order.

    One task per episode (per player, if it is sequential), in this process (``workers`` 1) or in
    ``workers`` spawned processes; each task uses ``threads`` torch threads, and this process gets
    its own count back afterwards. ``progress``: a progress bar on a terminal, else one line per
    finished task, on stderr (:class:`agents.progress.TaskProgress`).
    ``n_envs`` > 0: a non-sequential player's cases are one task, a batched work queue of that
    many lanes.
    """
    import torch

    from agents.bench import _run_task
    from agents.progress import TaskProgress
    from agents.workers import run_tasks

    tasks = []
    for p in players:
        batched = n_envs > 0 and not p.sequential
        chunks = [plan] if p.sequential or batched else [[case] for case in plan]
        tasks += [{"policy": p.policy, "model": p.model, "spec": p.spec.to_json(),
                   "mode": p.spec.esper_config.reward.mode, "plan": chunk, "threads": threads,
                   "sequential": p.sequential, "factory": p.factory, "tags": dict(p.tags),
                   "info_keys": list(p.info_keys), "batched": n_envs if batched else None}
                  for chunk in chunks]
    before = torch.get_num_threads()
    try:
        with TaskProgress([len(t["plan"]) for t in tasks], "play", quiet=not progress) as bar:
            done = run_tasks(_run_task, tasks, workers, None, progress=bar.done)
    finally:
        torch.set_num_threads(before)
    return [e for d in done for e in d]


# ---- helpers of the recipes --------------------------------------------------------------------

def env_spec(**kwargs: Any) -> EnvSpec:
    """The spec of ``gym.make("Esper-v0", **kwargs)``.

    Like the env, it follows an instance set's task and slot count where ``kwargs`` do not give
    them (a spec is made from a config, where every field counts as given).
    """
    if kwargs.get("instance_set") is not None:
        from esper_env.core.instances import load_instance_set

        iset = load_instance_set(kwargs["instance_set"], kwargs.get("task", "digits"),
                                 kwargs.get("n_slots", 1))
        kwargs = {"task": iset.task, "n_slots": iset.n_slots, **kwargs}
    return EnvSpec.from_kwargs(**kwargs)


def seed_cases(first_seed: int, seeds: int, instances: list[int] | None = None) -> list[Case]:
    """``seeds`` seeds from ``first_seed``; with ``instances``, those same seeds on each instance."""
    run = range(first_seed, first_seed + seeds)
    if instances is None:
        return [(s, None) for s in run]
    return [(s, {"instance": k}) for k in instances for s in run]


def as_result(e: dict[str, Any]) -> EpisodeResult:
    """An episode record of :func:`play` as the :class:`~agents.rollout.EpisodeResult` it came from."""
    return EpisodeResult(policy=e["policy"], seed=e["seed"], episode_return=e["episode_return"],
                         final_val_acc=e["final_val_acc"], final_test_acc=e["final_test_acc"],
                         params_added=e["params_added"], n_fossilized=e["n_fossilized"],
                         lifecycle=dict(e["lifecycle"]), illegal_actions=e["illegal_actions"],
                         rollbacks=e["rollbacks"], length=e["length"], instance=e["instance"])


def instance_index(env: Any) -> dict[str, int]:
    """Instance name → its index in ``env``'s instance split (names are unique in a split)."""
    names = [inst.name for inst in env.unwrapped.instances]
    if len(set(names)) != len(names):
        raise OptionError(f"the instance split has repeated names: {names}")
    return {n: k for k, n in enumerate(names)}


def check_baselines(policies: list[str], env: Any) -> None:
    """Raise :class:`~benchmarks._common.OptionError` for a name that is no baseline of ``env``."""
    from agents.policies import make_baseline

    for name in policies:
        try:
            make_baseline(name, env)
        except (ValueError, KeyError) as e:
            raise OptionError(str(e)) from None


def names(text: str | None) -> list[str] | None:
    """A comma-separated list (None stays None)."""
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]
