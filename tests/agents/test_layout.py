"""The agents/ layers: options declared once, one episode planner, and the names that moved."""

from __future__ import annotations

import argparse
import dataclasses
from types import SimpleNamespace

import pytest

from agents.cli import EnvOptions, add_env_arguments, add_options, env_kwargs_from, from_namespace, option
from agents.rollout import episode_plan
from agents.train import TrainArgs, build_parser, parse_args


def test_every_train_option_is_a_flag_with_the_fields_default():
    assert parse_args([]) == TrainArgs()
    flags = {s for a in build_parser()._actions for s in a.option_strings}
    for f in dataclasses.fields(TrainArgs):
        if f.name == "env_kwargs":
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        flag = f"--{'no-' if default is True else ''}{f.name.replace('_', '-')}"
        assert flag in flags, flag
    for f in dataclasses.fields(EnvOptions):
        assert f"--{f.name.replace('_', '-')}" in flags


def test_options_from_a_dataclass_round_trip():
    @dataclasses.dataclass
    class Args:
        steps: int | None = option(None, "steps")
        rate: float = option(0.5, "rate", group="numbers")
        fast: bool = option(False, "go fast")
        log: bool = option(True, "no log")
        pairs: dict = option(default_factory=dict, help="k=v", action="append", cli_default=[],
                             type=lambda t: tuple(t.split("=")), convert=dict)
        env: dict = option(default_factory=dict, help="env", group="env", options=EnvOptions)
        internal: int = 3  # not an option

    p = argparse.ArgumentParser()
    add_options(p, Args)
    ns = p.parse_args(["--steps", "4", "--rate", "2", "--fast", "--no-log", "--pairs", "a=b",
                       "--task", "synthetic", "--env-kwarg", "n_slots=2"])
    assert from_namespace(Args, ns) == Args(steps=4, rate=2.0, fast=True, log=False,
                                            pairs={"a": "b"},
                                            env={"task": "synthetic", "n_slots": 2})
    assert from_namespace(Args, p.parse_args([])) == Args()
    assert [g.title for g in p._action_groups][-2:] == ["numbers", "env"]
    with pytest.raises(SystemExit):
        p.parse_args(["--internal", "1"])


def test_env_options_give_only_what_was_set():
    p = argparse.ArgumentParser()
    add_env_arguments(p)
    assert env_kwargs_from(p.parse_args([])) == {}
    assert env_kwargs_from(p.parse_args(["--max-epochs", "5", "--env-kwarg", "gates={a: 1}"])) == \
        {"max_epochs": 5, "gates": {"a": 1}}


def _env(n_instances: int) -> SimpleNamespace:
    return SimpleNamespace(unwrapped=SimpleNamespace(instances=[object()] * n_instances))


def test_one_episode_planner():
    assert episode_plan(_env(0), 10, 3) == [(10, None), (11, None), (12, None)]
    assert len(episode_plan(_env(0), 10)) == 20
    assert episode_plan(_env(2), 5) == [(5, {"instance": 0}), (6, {"instance": 1})]
    assert episode_plan(_env(2), 5, 3) == [(5, {"instance": 0}), (6, {"instance": 1}),
                                           (7, {"instance": 0})]
    assert episode_plan(_env(2), 5, 9, per_instance=2) == [
        (5, {"instance": 0}), (6, {"instance": 0}), (7, {"instance": 1}), (8, {"instance": 1})]
    assert episode_plan(_env(0), 5, 2, per_instance=3) == [(5, None), (6, None)]


def test_names_that_moved_are_still_importable_where_they_were():
    import agents
    from agents import algos, cli, evaluate, policies, rollout, runs, stats, train

    for name in ("EpisodeResult", "MasksRequired", "run_episode", "takes_masks", "requires_masks",
                 "episode_plan"):
        assert getattr(evaluate, name) is getattr(rollout, name)
    assert evaluate.make_baseline is policies.make_baseline and evaluate.BASELINES is policies.BASELINES
    assert evaluate.mean_ci95 is stats.mean_ci95
    assert evaluate.paired_differences is stats.paired_differences
    assert agents.run_episode is rollout.run_episode and agents.EpisodeResult is rollout.EpisodeResult
    for name in ("ALGOS", "UNMASKED", "TRAIN_EXTRA", "load_hyperparams"):
        assert getattr(train, name) is getattr(algos, name)
    for name in ("load_model", "load_curriculum"):
        assert getattr(train, name) is getattr(runs, name)
    for name in ("add_env_arguments", "env_kwargs_from"):
        assert getattr(train, name) is getattr(cli, name)
