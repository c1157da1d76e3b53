"""Static references: ``static_seeds`` builds seeds into the host at reset, fully blended.

"Built big from the start": the same host with the seed present and FOSSILIZED from epoch 0,
trained on the same batches, with the seedless twin beside it (the no-growth world).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import esper_env  # noqa: F401 - registers Esper-v0
from esper_env.config import EsperConfig
from esper_env.core import episode as ep
from esper_env.core.lifecycle import SeedStage
from esper_env.errors import ConfigError

EPOCHS = 8


def _env(**kwargs):
    return gym.make("Esper-v0", max_epochs=EPOCHS, report_test_acc=True, **kwargs).unwrapped


def _play(env, seed: int) -> list[dict]:
    _, info = env.reset(seed=seed)
    infos = [info]
    done = False
    while not done:
        _, _, done, _, info = env.step(0)
        infos.append(info)
    return infos


def test_the_static_seed_is_fossilized_at_reset_and_trains_with_the_host():
    env = _env(static_seeds=((0, "conv_heavy"),))
    env.reset(seed=5)
    slot = env.state.slots[0]
    costs = env.state.setup.costs
    assert slot.stage == SeedStage.FOSSILIZED and slot.blueprint == "conv_heavy"
    assert slot.seed_id == "seed0" and slot.alpha.alpha == 1.0 and slot.seed_age == 1
    assert slot.seed_params == costs[0][env.blueprints.index("conv_heavy")] > 0
    assert env.state.seeds_made == 1
    assert env.state.mask == (True,) + (False,) * (env.codec.n - 1)  # nothing to do with slot 0
    assert env.trainer.model.slots[0].seed is not None
    static = _play(env, 5)
    plain = _play(_env(), 5)
    assert static[-1]["params_added"] == slot.seed_params and plain[-1]["params_added"] == 0
    assert static[-1]["test_acc"] != plain[-1]["test_acc"]


def test_the_twin_of_a_static_episode_is_the_no_growth_episode():
    """Same initial host, same batches: the twin's validation accuracy is no-growth's, epoch by
    epoch, and V is the model's minus it from the first epoch on.
    """  # noqa: D205
    static = _play(_env(static_seeds=((0, "conv_light"),)), 11)
    plain = _play(_env(), 11)
    assert [i["twin_val_acc"] for i in static] == pytest.approx([i["val_acc"] for i in plain],
                                                                abs=1e-9)
    assert all(i["value_added"] == pytest.approx(i["val_acc"] - i["twin_val_acc"]) for i in static)
    assert static[0]["value_added"] != 0.0


def test_static_seeds_are_deterministic_and_seeded_as_the_first_germinated_seed():
    a = _play(_env(static_seeds=((0, "depthwise"),)), 3)
    b = _play(_env(static_seeds=((0, "depthwise"),)), 3)
    assert [i["val_acc"] for i in a] == [i["val_acc"] for i in b]
    env = _env(n_slots=2, static_seeds=((1, "norm"), (0, "attention")))
    env.reset(seed=3)
    request = ep.first_request(env._params, env.state.setup)
    base = env.state.setup.module_base
    assert [(g.slot, g.blueprint, g.module_seed) for g in request.build] == [
        (1, "norm", ep.module_seed(base, 0)), (0, "attention", ep.module_seed(base, 1))]
    assert [s.seed_id for s in env.state.slots] == ["seed1", "seed0"]
    assert env.state.seeds_made == 2


def test_static_seeds_over_the_param_budget_are_refused_and_the_episode_stands():
    env = _env(static_seeds=((0, "conv_heavy"),))
    env.reset(seed=2)
    before, obs_before = env.state, env._obs.copy()
    tight = {"name": "tight", "param_budget": 0.05}
    with pytest.raises(ConfigError, match=r"static_seeds=\(\(0, 'conv_heavy'\),\) add \d+ parameters; "
                                          r"the param_budget of instance 'tight' allows \d+ \(0.05 x"):
        env.reset(seed=2, options={"instance": tight})
    assert env.state is before and np.array_equal(env._obs, obs_before)
    env.step(0)  # the episode goes on
    assert env.state.epoch == 2


def test_static_seeds_within_the_budget_are_built():
    env = _env(param_budget=2.0, static_seeds=((0, "conv_light"),))
    env.reset(seed=2)
    assert env.state.slots[0].stage == SeedStage.FOSSILIZED


@pytest.mark.parametrize(("value", "allowed"), [
    (((1, "norm"),), "slots distinct and in [0, 1)"),
    (((0, "norm"), (0, "norm")), "slots distinct"),
    ("norm", "a tuple of (slot, blueprint) pairs"),
    (((0, "lora"),), "blueprints of task='digits'"),
])
def test_bad_static_seeds_are_refused_by_name(value, allowed):
    with pytest.raises(ConfigError, match="static_seeds=.* is invalid; allowed: .*"
                                          + allowed.replace("(", r"\(").replace(")", r"\)")
                                          .replace("[", r"\[")):
        EsperConfig(static_seeds=value)


def test_static_seeds_round_trip_through_json_and_the_flat_keywords():
    cfg = EsperConfig(n_slots=2, static_seeds=[[1, "norm"]])
    assert cfg.host.static_seeds == ((1, "norm"),)
    assert EsperConfig.from_json(cfg.to_json()) == cfg
    assert cfg.flat()["static_seeds"] == ((1, "norm"),)


def test_the_batched_engine_refuses_static_seeds():
    from esper_env.vector import EsperVectorEnv

    with pytest.raises(ConfigError, match=r"static_seeds=\(\(0, 'norm'\),\) is not batchable"):
        EsperVectorEnv(2, config=EsperConfig(static_seeds=((0, "norm"),)))
