"""HeuristicPolicy: each rule on hand-built observations, whole lifecycles, and against random."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs

import esper_env  # noqa: F401
from agents.heuristic import CurriculumHeuristicPolicy, HeuristicConfig, HeuristicPolicy
from agents.policies import RandomPolicy
from agents.rollout import run_episode
from esper_env.core.actions import Action, ActionKind
from esper_env.errors import ConfigError

ALL = ("norm", "attention", "depthwise", "conv_light", "conv_heavy")
ORDER = ("conv_heavy", "conv_light", "norm", "depthwise", "attention")   # the default rotation


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def env():
    return gym.make("Esper-v0", **tiny_kwargs(max_epochs=25))


@pytest.fixture(scope="module")
def env2():
    return gym.make("Esper-v0", **tiny_kwargs(max_epochs=25, n_slots=2))


class Obs:
    """Hand-built observations and masks (max_epochs = 25)."""

    def __init__(self, env, max_epochs=25):
        self.names = list(env.unwrapped.feature_names)
        self.codec = env.unwrapped.codec
        self.T = max_epochs

    def make(self, epoch=10, plateau=2, val=0.8, best=0.8, stage="dormant", blueprint=None, cf=None,
             in_stage=0, slots=None):
        """One observation; ``slots`` maps further slots to dicts of stage/blueprint/cf/in_stage."""
        o = np.zeros(len(self.names), dtype=np.float32)
        f = dict(epoch_fraction=epoch / self.T, epochs_left=(self.T - epoch) / 100,
                 plateau_epochs=plateau / self.T, val_acc=val, best_val_acc=best)
        slots = {0: dict(stage=stage, blueprint=blueprint, cf=cf, in_stage=in_stage), **(slots or {})}
        for s, d in slots.items():
            f[f"slot{s}_stage_{d.get('stage', 'dormant')}"] = 1.0
            f[f"slot{s}_epochs_in_stage"] = d.get("in_stage", 0) / self.T
            if d.get("blueprint"):
                f[f"slot{s}_blueprint_{d['blueprint']}"] = 1.0
            if d.get("cf") is not None:
                f[f"slot{s}_has_counterfactual"], f[f"slot{s}_counterfactual"] = 1.0, d["cf"] / 10
        for k, v in f.items():
            o[self.names.index(k)] = v
        return o

    def mask(self, germinate=(), fossilize=False, cull=False, slot=0):
        m = np.zeros(self.codec.n, dtype=bool)
        m[0] = True
        for b in germinate:
            m[self.germ(b, slot)] = True
        f, c = self.codec.slot_actions(slot)
        m[f], m[c] = fossilize, cull
        return m

    def germ(self, b, slot=0):
        return self.codec.encode(Action(ActionKind.GERMINATE, slot, b))


# ---- germination ---------------------------------------------------------------------------------

def test_germinates_the_first_legal_blueprint_of_the_rotation_once_plateaued(env):
    o = Obs(env)
    assert HeuristicPolicy(env).predict(o.make(epoch=5, plateau=1), o.mask(ALL))[0] == o.germ("conv_heavy")
    legal = ("attention", "depthwise", "norm")          # e.g. a parameter budget masks the big ones
    assert HeuristicPolicy(env).predict(o.make(epoch=5), o.mask(legal))[0] == o.germ("norm")
    by_size = HeuristicPolicy(env, HeuristicConfig(blueprint_order=None))
    assert by_size.predict(o.make(epoch=5), o.mask(legal))[0] == o.germ("depthwise")


@pytest.mark.parametrize("case", ["no plateau", "short plateau", "too early", "too late", "nothing legal"])
def test_waits_until_every_germination_condition_holds(env, case):
    o = Obs(env)
    cfg = HeuristicConfig(plateau_epochs=2, min_epoch=4, latest_germinate_fraction=0.6)
    obs, legal = {"no plateau": (o.make(epoch=5, plateau=0), ALL),
                  "short plateau": (o.make(epoch=5, plateau=1), ALL),
                  "too early": (o.make(epoch=3, plateau=3), ALL),
                  "too late": (o.make(epoch=16, plateau=5), ALL),
                  "nothing legal": (o.make(epoch=5, plateau=5), ())}[case]
    assert HeuristicPolicy(env, cfg).predict(obs, o.mask(legal))[0] == 0
    ready = o.make(epoch=15, plateau=2)
    assert HeuristicPolicy(env, cfg).predict(ready, o.mask(ALL))[0] == o.germ("conv_heavy")


def test_germinates_into_a_free_slot_when_the_first_is_busy(env2):
    o = Obs(env2)
    obs = o.make(epoch=6, stage="training", blueprint="conv_heavy")
    m = o.mask(ALL, slot=1)
    assert HeuristicPolicy(env2).predict(obs, m)[0] == o.germ("conv_heavy", slot=1)


# ---- fossilize and cull --------------------------------------------------------------------------

def test_fossilizes_a_probationary_seed_whose_counterfactual_clears_the_bar(env):
    o = Obs(env)
    fossilize, _ = o.codec.slot_actions(0)
    proven = o.make(stage="probationary", blueprint="conv_light", cf=3.5)
    assert HeuristicPolicy(env).predict(proven, o.mask(fossilize=True, cull=True))[0] == fossilize
    assert HeuristicPolicy(env).predict(proven, o.mask(cull=True))[0] == 0              # G5 failed
    weak = o.make(stage="probationary", blueprint="conv_light", cf=2.0)
    assert HeuristicPolicy(env).predict(weak, o.mask(fossilize=True, cull=True))[0] == 0
    lenient = HeuristicPolicy(env, HeuristicConfig(fossilize_above_pp=1.0))
    assert lenient.predict(weak, o.mask(fossilize=True))[0] == fossilize


def test_culls_a_probationary_seed_that_does_not_clear_the_bar_in_time(env):
    o, pol = Obs(env), HeuristicPolicy(env)
    fossilize, cull = o.codec.slot_actions(0)
    actions = [pol.predict(o.make(epoch=12 + e, stage="probationary", blueprint="norm", cf=2.0, in_stage=e),
                           o.mask(fossilize=True, cull=True))[0] for e in (0, 1, 2)]
    assert actions == [0, 0, cull]


def test_culls_after_a_sustained_negative_counterfactual_when_cull_is_legal(env):
    o, pol = Obs(env), HeuristicPolicy(env)
    _, cull = o.codec.slot_actions(0)
    harmful = [o.make(epoch=e, stage="blending", blueprint="attention", cf=-1.0) for e in (8, 9, 10)]
    assert [pol.predict(harmful[0], o.mask(cull=True))[0], pol.predict(harmful[1], o.mask())[0],
            pol.predict(harmful[2], o.mask(cull=True))[0]] == [0, 0, cull]


def test_culls_a_blended_seed_after_a_sustained_accuracy_drop(env):
    o, pol = Obs(env), HeuristicPolicy(env, HeuristicConfig(drop_pp=3.0, drop_epochs=2))
    _, cull = o.codec.slot_actions(0)
    actions = [pol.predict(o.make(epoch=e, val=0.75, best=0.8, stage="blending", blueprint="norm", cf=0.5),
                           o.mask(cull=True))[0] for e in (8, 9)]
    assert actions == [0, cull]
    o2, fresh = Obs(env), HeuristicPolicy(env, HeuristicConfig(drop_pp=3.0, drop_epochs=2))
    unblended = [fresh.predict(o2.make(epoch=e, val=0.7, best=0.8, stage="training", blueprint="norm"),
                               o2.mask(cull=True))[0] for e in (8, 9, 10)]
    assert unblended == [0, 0, 0]   # a seed that does not touch the output is not blamed


def test_culls_the_most_harmful_of_several_seeds(env2):
    o, pol = Obs(env2), HeuristicPolicy(env2, HeuristicConfig(negative_epochs=1))
    obs = o.make(stage="blending", blueprint="norm", cf=-0.5,
                 slots={1: dict(stage="blending", blueprint="attention", cf=-2.0)})
    m = o.mask(cull=True) | o.mask(cull=True, slot=1)
    assert pol.predict(obs, m)[0] == o.codec.slot_actions(1)[1]


# ---- rotation, penalties, embargo ----------------------------------------------------------------

def test_a_cull_penalises_the_blueprint_moves_the_rotation_and_embargoes_the_slot(env):
    o = Obs(env)
    pol = HeuristicPolicy(env, HeuristicConfig(embargo_epochs=2, penalty_decay=1.0))
    pol.predict(o.make(epoch=8, stage="blending", blueprint="conv_heavy", cf=0.5), o.mask())
    pol.predict(o.make(epoch=9, stage="embargoed"), o.mask())          # culled (here by a gate)
    assert pol.penalties["conv_heavy"] == 1.0 and pol.order[pol._turn] == "conv_light"
    assert pol.predict(o.make(epoch=10, stage="resetting", plateau=3), o.mask())[0] == 0
    waits = [pol.predict(o.make(epoch=e, stage="dormant", plateau=3), o.mask(ALL))[0] for e in (11, 12, 13)]
    assert waits == [0, 0, o.germ("conv_light")]                      # 2 whole dormant epochs first


def test_penalties_decay_every_epoch_persist_across_episodes_and_push_a_blueprint_back(env):
    o = Obs(env)
    pol = HeuristicPolicy(env, HeuristicConfig(penalty_decay=0.5, penalty_threshold=0.3))
    pol.penalties["conv_heavy"] = 4.0
    pol.predict(o.make(epoch=3), o.mask())
    pol.predict(o.make(epoch=3), o.mask())                              # the same observation again
    assert pol.penalties["conv_heavy"] == 2.0
    pol.predict(o.make(epoch=1), o.mask())                              # a new episode
    assert pol.penalties["conv_heavy"] == 1.0
    assert pol.blueprint_for(list(ALL)) == "conv_light"
    assert pol.blueprint_for(["conv_heavy", "attention"]) == "attention"
    pol.penalties["attention"] = 3.0
    assert pol.blueprint_for(["conv_heavy", "attention"]) == "conv_heavy"   # least penalised
    pol.predict(o.make(epoch=2), o.mask())
    pol.predict(o.make(epoch=3), o.mask())                              # 1.0 -> 0.25 < threshold
    assert pol.blueprint_for(list(ALL)) == "conv_heavy"
    assert pol.blueprint_for([]) is None


def test_the_rotation_cycles_through_the_order_as_blueprints_are_culled(env):
    o = Obs(env)
    pol = HeuristicPolicy(env, HeuristicConfig(penalty_decay=0.1))      # penalties fade at once
    for bp in ORDER:
        assert pol.predict(o.make(epoch=5), o.mask(ALL))[0] == o.germ(bp)
        pol.predict(o.make(epoch=6, stage="blending", blueprint=bp, cf=-1.0), o.mask())
        pol.predict(o.make(epoch=7, stage="embargoed"), o.mask())
        pol.reset()
    assert pol.predict(o.make(epoch=5), o.mask(ALL))[0] == o.germ(ORDER[0])


# ---- episodes ------------------------------------------------------------------------------------

def test_notices_a_new_episode_by_itself(env):
    o, pol = Obs(env), HeuristicPolicy(env)
    pol.predict(o.make(epoch=9, stage="blending", blueprint="norm", cf=-1.0), o.mask())
    assert pol._negative[0] == 1
    pol.predict(o.make(epoch=10, stage="blending", blueprint="norm", cf=-1.0), o.mask())
    assert pol._negative[0] == 2
    pol.predict(o.make(epoch=1, stage="dormant"), o.mask())
    assert pol._negative[0] == 0 and pol.penalties["norm"] == 0.0      # no cull was seen


def test_counts_epochs_in_episodes_longer_than_the_observation_can_say():
    long_env = gym.make("Esper-v0", **tiny_kwargs(max_epochs=300))
    o, pol = Obs(long_env, max_epochs=300), HeuristicPolicy(long_env)
    for e in range(1, 6):
        pol.predict(o.make(epoch=e, stage="blending", blueprint="norm", cf=-1.0), o.mask())
    assert pol._negative[0] == 5 and pol._epoch == 5


def test_config_validation_names_field_value_and_range(env):
    for field, bad in (("plateau_epochs", -1), ("drop_epochs", 1.5), ("negative_epochs", 0),
                       ("penalty_decay", 0.0), ("latest_germinate_fraction", 1.5), ("cull_penalty", -1.0),
                       ("fossilize_above_pp", float("nan")), ("penalty_threshold", 0.0),
                       ("cull_below_pp", 5.0), ("blueprint_order", ()), ("min_epoch", True)):
        with pytest.raises(ConfigError, match=rf"HeuristicConfig\.{field}=.* is invalid; allowed: "):
            HeuristicConfig(**{field: bad})
    assert HeuristicConfig(blueprint_order=["norm"]).blueprint_order == ("norm",)
    with pytest.raises(ConfigError, match="blueprint_order"):
        HeuristicPolicy(env, HeuristicConfig(blueprint_order=("conv_heavy", "conv_hevy")))
    with pytest.raises(ValueError, match="action_masks"):
        HeuristicPolicy(env).predict(Obs(env).make())
    assert HeuristicConfig.__dataclass_params__.frozen and hasattr(HeuristicConfig, "__slots__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        HeuristicConfig().drop_pp = 1.0  # type: ignore[misc]


# ---- whole episodes ------------------------------------------------------------------------------

def test_completes_lifecycles_on_the_tiny_config_without_illegal_actions(rng_guard):
    env = gym.make("Esper-v0", **tiny_kwargs())
    pol = HeuristicPolicy(env)
    results = [run_episode(env, pol, seed=s) for s in range(3)]
    assert all(r.illegal_actions == 0 for r in results)
    assert sum(r.n_fossilized for r in results) >= 1
    assert sum(r.n_culled for r in results) >= 1   # and one that went on to EMBARGOED and back
    assert all(r.lifecycle.get("dormant", 0) == r.n_culled for r in results)


def test_grows_every_slot_of_a_multi_slot_env_and_settles_every_seed():
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2))
    for r in (run_episode(env, HeuristicPolicy(env), seed=s) for s in range(2)):
        assert r.illegal_actions == 0 and r.lifecycle["germinated"] >= 2
        assert r.lifecycle["germinated"] == r.n_fossilized + r.n_culled


def test_respects_an_instance_sets_parameter_budget():
    env = gym.make("Esper-v0", instance_set="digits-mix", instance_split="test")
    pol = HeuristicPolicy(env)
    budgeted = [k for k, inst in enumerate(env.unwrapped.instances) if inst.param_budget is not None][:2]
    for k in budgeted:
        assert run_episode(env, pol, seed=k, options={"instance": k}).illegal_actions == 0


def _compare(seeds):
    env = gym.make("Esper-v0")
    heuristic, random = HeuristicPolicy(env), RandomPolicy(env, seed=0)
    return [run_episode(env, heuristic, s) for s in seeds], [run_episode(env, random, s) for s in seeds]


def test_on_digits_it_fossilizes_and_beats_random_on_a_few_tuning_seeds():
    h, r = _compare(range(3))
    assert sum(x.n_fossilized > 0 for x in h) >= 2
    assert np.mean([x.final_test_acc for x in h]) > np.mean([x.final_test_acc for x in r])


@pytest.mark.slow
def test_on_digits_over_20_seeds_it_fossilizes_mostly_and_beats_random_in_return_and_accuracy():
    h, r = _compare(range(20))
    assert sum(x.n_fossilized > 0 for x in h) >= 15
    assert np.mean([x.final_test_acc for x in h]) > np.mean([x.final_test_acc for x in r])
    assert np.mean([x.episode_return for x in h]) > np.mean([x.episode_return for x in r])


# ---- ucb-heuristic -------------------------------------------------------------------------------

def test_ucb_heuristic_plants_the_curriculums_choices_and_learns_from_outcomes():
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
    o = Obs(env)
    pol = CurriculumHeuristicPolicy(env)
    fossilize, _ = o.codec.slot_actions(0)
    assert pol.predict(o.make(epoch=5, plateau=2), o.mask(ALL))[0] == o.germ("norm")
    pol.predict(o.make(epoch=6, stage="probationary", blueprint="norm", cf=3.5), o.mask(fossilize=True))
    pol.predict(o.make(epoch=7, stage="fossilized", blueprint="norm"), o.mask())
    assert pol.curriculum.pulls["norm"] == 1 and pol.curriculum.mean("norm") == pytest.approx(3.5)


def test_default_rotation_on_a_transformer_env_is_largest_first():
    from esper_env.env import EsperEnv

    text = EsperEnv(task="tinytext", block_size=8, n_embd=16, train_subset=4)
    assert HeuristicPolicy(text).order == tuple(reversed(text.blueprints))
    assert HeuristicPolicy(text).order[0] == "mlp"
    with pytest.raises(ConfigError, match="blueprint_order"):  # an explicit CNN name still fails
        HeuristicPolicy(text, HeuristicConfig(blueprint_order=("conv_heavy",)))
