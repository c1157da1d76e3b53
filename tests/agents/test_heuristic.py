"""HeuristicPolicy: each rule on hand-built observations, whole lifecycles, and against random."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs

import esper_env  # noqa: F401
from agents.evaluate import run_episode
from agents.heuristic import HeuristicConfig, HeuristicPolicy
from agents.policies import RandomPolicy
from esper_env.core.actions import Action, ActionKind
from esper_env.errors import ConfigError


@pytest.fixture(scope="module")
def env():
    return gym.make("Esper-v0", **tiny_kwargs(max_epochs=25))


class Obs:
    """Hand-built observations and masks for a 1-slot env with max_epochs = 25."""

    def __init__(self, env):
        self.base = env.unwrapped
        self.names = list(self.base.feature_names)
        self.codec = self.base.codec

    def make(self, epoch=10, plateau=2, val=0.8, best=0.8, stage="dormant", blueprint=None, cf=None):
        o = np.zeros(len(self.names), dtype=np.float32)
        f = dict(epoch_fraction=epoch / 25, epochs_left=(25 - epoch) / 100, plateau_epochs=plateau / 25,
                 val_acc=val, best_val_acc=best)
        f[f"slot0_stage_{stage}"] = 1.0
        if blueprint:
            f[f"slot0_blueprint_{blueprint}"] = 1.0
        if cf is not None:
            f["slot0_has_counterfactual"], f["slot0_counterfactual"] = 1.0, cf / 10
        for k, v in f.items():
            if k in self.names:
                o[self.names.index(k)] = v
        return o

    def mask(self, germinate=(), fossilize=False, cull=False):
        m = np.zeros(self.codec.n, dtype=bool)
        m[0] = True
        for b in germinate:
            m[self.codec.encode(Action(ActionKind.GERMINATE, 0, b))] = True
        f, c = self.codec.slot_actions(0)
        m[f], m[c] = fossilize, cull
        return m

    def germ(self, b):
        return self.codec.encode(Action(ActionKind.GERMINATE, 0, b))


ALL = ("norm", "attention", "depthwise", "conv_light", "conv_heavy")


def test_germinates_the_largest_legal_blueprint_once_plateaued(env):
    o, pol = Obs(env), HeuristicPolicy(env)
    assert pol.predict(o.make(epoch=5, plateau=2), o.mask(ALL))[0] == o.germ("conv_heavy")
    pol = HeuristicPolicy(env)
    assert pol.predict(o.make(epoch=5, plateau=2), o.mask(("norm", "depthwise")))[0] == o.germ("depthwise")


def test_waits_without_plateau_when_late_or_when_nothing_is_legal(env):
    o = Obs(env)
    assert HeuristicPolicy(env).predict(o.make(epoch=5, plateau=0), o.mask(ALL))[0] == 0
    assert HeuristicPolicy(env).predict(o.make(epoch=20, plateau=5), o.mask(ALL))[0] == 0
    assert HeuristicPolicy(env).predict(o.make(epoch=5, plateau=5), o.mask(()))[0] == 0


def test_fossilizes_a_probationary_seed_with_positive_counterfactual(env):
    o, pol = Obs(env), HeuristicPolicy(env)
    fossilize, _ = o.codec.slot_actions(0)
    obs = o.make(stage="probationary", blueprint="conv_light", cf=2.0)
    assert pol.predict(obs, o.mask(fossilize=True, cull=True))[0] == fossilize
    strict = HeuristicPolicy(env, HeuristicConfig(fossilize_above_pp=3.0))
    assert strict.predict(obs, o.mask(fossilize=True))[0] == 0


def test_culls_after_sustained_negative_counterfactual(env):
    o, pol = Obs(env), HeuristicPolicy(env)
    _, cull = o.codec.slot_actions(0)
    actions = [pol.predict(o.make(epoch=e, stage="blending", blueprint="attention", cf=-1.0),
                           o.mask(cull=True))[0] for e in (8, 9)]
    assert actions == [0, cull]


def test_culls_a_blended_seed_after_a_sustained_accuracy_drop(env):
    o, pol = Obs(env), HeuristicPolicy(env, HeuristicConfig(drop_pp=3.0, drop_epochs=2))
    _, cull = o.codec.slot_actions(0)
    actions = [pol.predict(o.make(epoch=e, val=0.75, best=0.8, stage="blending", blueprint="norm", cf=0.5),
                           o.mask(cull=True))[0] for e in (8, 9)]
    assert actions == [0, cull]


def test_a_cull_penalises_the_blueprint_moves_the_rotation_and_embargoes_the_slot(env):
    o = Obs(env)
    pol = HeuristicPolicy(env, HeuristicConfig(embargo_epochs=2, penalty_decay=1.0))
    pol.predict(o.make(epoch=8, stage="blending", blueprint="conv_heavy", cf=0.5), o.mask())
    pol.predict(o.make(epoch=9, stage="embargoed"), o.mask())          # the seed was culled
    assert pol.penalties["conv_heavy"] == 1.0
    assert pol.predict(o.make(epoch=10, stage="dormant", plateau=3), o.mask(ALL))[0] == 0   # embargo
    assert pol.predict(o.make(epoch=11, stage="dormant", plateau=3), o.mask(ALL))[0] == 0
    assert pol.predict(o.make(epoch=12, stage="dormant", plateau=3), o.mask(ALL))[0] == o.germ("conv_light")


def test_penalties_decay_every_epoch_and_persist_across_episodes(env):
    o = Obs(env)
    pol = HeuristicPolicy(env, HeuristicConfig(penalty_decay=0.5))
    pol.penalties["conv_heavy"] = 4.0
    pol.predict(o.make(epoch=3), o.mask())
    assert pol.penalties["conv_heavy"] == 2.0
    pol.predict(o.make(epoch=1), o.mask())                             # a new episode
    assert pol.penalties["conv_heavy"] == 1.0 and pol._epoch == 1
    assert pol.blueprint_for(list(ALL)) == "conv_light"
    assert pol.blueprint_for(["conv_heavy"]) == "conv_heavy"


def test_new_episode_resets_episode_state(env):
    o, pol = Obs(env), HeuristicPolicy(env)
    pol.predict(o.make(epoch=9, stage="blending", blueprint="norm", cf=-1.0), o.mask())
    assert pol._negative[0] == 1
    pol.predict(o.make(epoch=1, stage="dormant"), o.mask())
    assert pol._negative[0] == 0


def test_config_and_input_validation(env):
    for field, bad in (("plateau_epochs", -1), ("drop_epochs", 1.5), ("penalty_decay", 0.0),
                       ("latest_germinate_fraction", 1.5), ("cull_penalty", -1.0),
                       ("fossilize_above_pp", float("nan"))):
        with pytest.raises(ConfigError, match=field):
            HeuristicConfig(**{field: bad})
    with pytest.raises(ConfigError, match="blueprint_order"):
        HeuristicPolicy(env, HeuristicConfig(blueprint_order=("conv_heavy", "conv_hevy")))
    with pytest.raises(ValueError, match="action_masks"):
        HeuristicPolicy(env).predict(Obs(env).make())
    assert dataclasses.is_dataclass(HeuristicConfig) and HeuristicConfig.__dataclass_params__.frozen


def test_completes_lifecycles_on_the_tiny_config_without_illegal_actions():
    env = gym.make("Esper-v0", **tiny_kwargs())
    pol = HeuristicPolicy(env)
    results = [run_episode(env, pol, seed=s) for s in range(3)]
    assert all(r.illegal_actions == 0 for r in results)
    assert sum(r.n_fossilized for r in results) >= 1


def test_respects_an_instance_sets_parameter_budget():
    env = gym.make("Esper-v0", instance_set="digits-mix", instance_split="test")
    base = env.unwrapped
    pol = HeuristicPolicy(env)
    budgeted = [k for k, inst in enumerate(base.instances) if inst.param_budget is not None][:2]
    for k in budgeted:
        r = run_episode(env, pol, seed=k, options={"instance": k})
        assert r.illegal_actions == 0


def _compare(seeds):
    env = gym.make("Esper-v0")
    h = [run_episode(env, HeuristicPolicy(env), s) for s in seeds]
    r = [run_episode(env, RandomPolicy(env, seed=s), s) for s in seeds]
    return h, r


def test_on_digits_it_fossilizes_and_beats_random_on_a_few_tuning_seeds():
    h, r = _compare(range(3))
    assert sum(x.n_fossilized > 0 for x in h) >= 2
    assert np.mean([x.final_test_acc for x in h]) > np.mean([x.final_test_acc for x in r])


@pytest.mark.slow
def test_on_digits_over_20_seeds_it_fossilizes_mostly_and_beats_random_in_return_and_accuracy():
    h, r = _compare(range(20))
    assert sum(x.n_fossilized > 0 for x in h) > 10
    assert np.mean([x.final_test_acc for x in h]) > np.mean([x.final_test_acc for x in r])
    assert np.mean([x.episode_return for x in h]) > np.mean([x.episode_return for x in r])


def test_ucb_heuristic_plants_the_curriculums_choices_and_learns_from_outcomes():
    from agents.heuristic import CurriculumHeuristicPolicy

    env = gym.make("Esper-v0", **tiny_kwargs())
    pol = CurriculumHeuristicPolicy(env, HeuristicConfig(plateau_epochs=0, latest_germinate_fraction=1.0))
    for seed in range(4):
        r = run_episode(env, pol, seed=seed)
        assert r.illegal_actions == 0
    cur = pol.curriculum
    assert cur.total_pulls >= 1, "fossils and culls are recorded"
    # the first round tries the arms in order: norm first, then attention, ...
    tried = [a for a in cur.arms if cur.pulls[a] + cur.pending[a] > 0]
    assert tried == list(cur.arms[:len(tried)])
    assert sum(cur.pending.values()) <= 1


def test_ucb_heuristic_records_a_fossil_with_its_counterfactual(env):
    from agents.heuristic import CurriculumHeuristicPolicy

    o = Obs(env)
    pol = CurriculumHeuristicPolicy(env)
    fossilize, _ = o.codec.slot_actions(0)
    assert pol.predict(o.make(epoch=5, plateau=2), o.mask(ALL))[0] == o.germ("norm")
    pol.predict(o.make(epoch=6, stage="probationary", blueprint="norm", cf=2.5), o.mask(fossilize=True))
    pol.predict(o.make(epoch=7, stage="fossilized", blueprint="norm"), o.mask())
    assert pol.curriculum.pulls["norm"] == 1 and pol.curriculum.mean("norm") == pytest.approx(2.5)
