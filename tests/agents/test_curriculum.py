"""UCB1 blueprint curriculum and the wrapper that lets it choose blueprints."""

from __future__ import annotations

import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from conftest import assert_wrapper_passes_both_checkers, tiny_kwargs
from gymnasium.error import InvalidAction
from hypothesis import given
from hypothesis import strategies as st

import esper_env  # noqa: F401
from agents.curriculum import BlueprintCurriculum
from agents.wrappers import BlueprintCurriculumWrapper

ARMS = ("a", "b", "c")


def test_every_arm_once_in_order_before_any_repeat():
    cur = BlueprintCurriculum(ARMS, seed=0)
    first = []
    for _ in ARMS:
        arm = cur.select()
        first.append(arm)
        cur.update(arm, 0.0)
    assert first == list(ARMS)


def test_pending_selections_count_for_the_first_round():
    cur = BlueprintCurriculum(ARMS, seed=0)
    assert [cur.select(), cur.select(), cur.select()] == list(ARMS)
    assert cur.stats()["a"]["pending"] == 1 and cur.total_pulls == 0
    cur.cancel("a")
    assert cur.select() == "a"


def test_ucb_picks_argmax_of_mean_plus_bonus_on_a_hand_computed_case():
    cur = BlueprintCurriculum(ARMS, c=1.0, seed=0)
    for arm, rewards in (("a", [1.0, 1.0, 1.0]), ("b", [2.0]), ("c", [0.0, 0.0])):
        for r in rewards:
            cur.update(arm, r)
    n = 6
    expected = {"a": 1 + math.sqrt(math.log(n) / 3), "b": 2 + math.sqrt(math.log(n) / 1),
                "c": 0 + math.sqrt(math.log(n) / 2)}
    for arm, value in expected.items():
        assert cur.ucb(arm) == pytest.approx(value)
    assert cur.select() == "b"
    assert cur.select(allowed=["a", "c"]) == "a"


def test_complexity_penalty_lowers_the_recorded_mean_not_the_bonus():
    plain = BlueprintCurriculum(ARMS, c=1.0)
    penalised = BlueprintCurriculum(ARMS, c=1.0, complexity=[0.0, 0.5, 1.0], complexity_penalty=2.0)
    for cur in (plain, penalised):
        for arm in ARMS:
            cur.update(arm, 3.0)
    assert penalised.update("c", 3.0) == pytest.approx(1.0)
    plain.update("c", 3.0)
    assert penalised.mean("c") == pytest.approx(1.0) and plain.mean("c") == pytest.approx(3.0)
    assert penalised.mean("b") == pytest.approx(2.0)
    bonus = lambda cur, arm: cur.ucb(arm) - cur.mean(arm)  # noqa: E731
    for arm in ARMS:
        assert bonus(penalised, arm) == pytest.approx(bonus(plain, arm))


def test_ties_are_broken_by_the_seeded_generator():
    def choices(seed):
        cur = BlueprintCurriculum(tuple("abcdefgh"), c=0.0, seed=seed)
        for arm in cur.arms:
            cur.update(arm, 1.0)
        picks = []
        for _ in range(20):
            arm = cur.select()
            cur.cancel(arm)
            picks.append(arm)
        return picks

    assert choices(0) == choices(0)
    assert len(set(choices(0))) > 1, "ties must not always go to the first arm"
    assert any(choices(0) != choices(s) for s in range(1, 5))


@given(st.lists(st.tuples(st.sampled_from(ARMS), st.floats(-10, 10)), max_size=40))
def test_pulls_add_up_to_the_updates(updates):
    cur = BlueprintCurriculum(ARMS)
    for arm, r in updates:
        cur.update(arm, r)
    assert cur.total_pulls == len(updates)
    for arm in ARMS:
        rs = [r for a, r in updates if a == arm]
        assert cur.pulls[arm] == len(rs)
        assert cur.mean(arm) == pytest.approx(np.mean(rs) if rs else 0.0)


def test_state_dict_round_trip_continues_identically():
    cur = BlueprintCurriculum(tuple("abcd"), c=0.0, seed=3)
    for arm in cur.arms:
        cur.update(arm, 1.0)
    clone = BlueprintCurriculum.from_state_dict(cur.state_dict())
    assert [cur.select() for _ in range(10)] == [clone.select() for _ in range(10)]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="did you mean 'a'"):
        BlueprintCurriculum(ARMS).update("aa", 1.0)
    with pytest.raises(ValueError, match="reward=nan"):
        BlueprintCurriculum(ARMS).update("a", float("nan"))
    with pytest.raises(ValueError, match="c=-1"):
        BlueprintCurriculum(ARMS, c=-1)
    with pytest.raises(ValueError, match="complexity="):
        BlueprintCurriculum(ARMS, complexity=[1.0])
    with pytest.raises(ValueError, match="no arm allowed"):
        BlueprintCurriculum(ARMS).select(allowed=[])


def test_curriculum_and_heuristic_modules_import_no_torch():
    code = "import agents.curriculum, agents.heuristic, sys; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


# ---- the wrapper --------------------------------------------------------------------------------

def _wrapped(**kw):
    return BlueprintCurriculumWrapper(gym.make("Esper-v0", **tiny_kwargs(**kw)), seed=0)


def test_wrapper_passes_both_checkers():
    assert_wrapper_passes_both_checkers(_wrapped)


def test_wrapper_masks_follow_the_base_mask_through_an_episode():
    env = _wrapped(germination_gate=True, min_germinate_epoch=2)
    codec = env.unwrapped.codec
    nb = len(codec.blueprints)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    done = False
    while not done:
        mask, base = env.action_masks(), env.unwrapped.action_masks()
        assert mask.shape == (env.action_space.n,) == (1 + 3 * codec.n_slots,) and mask[0]
        assert mask[1] == base[1:1 + nb].any()
        assert (mask[2], mask[3]) == tuple(base[list(codec.slot_actions(0))])
        _, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        assert not info["illegal_action"]
        assert set(info["curriculum"]) == set(codec.blueprints)


def test_germinate_plants_the_curriculums_choice_and_a_fossil_is_recorded():
    env = _wrapped()
    env.reset(seed=0)
    _, _, _, _, info = env.step(1)                        # GERMINATE@0
    assert info["curriculum_choice"] == "norm"              # first arm, first round
    assert info["blueprints"][0] == "norm"
    assert env.curriculum.pending["norm"] == 1
    done, fossil_cf = False, None
    while not done:
        mask = env.action_masks()
        action = 2 if mask[2] else 0                        # FOSSILIZE@0 as soon as legal
        if action == 2:
            fossil_cf = info["counterfactuals"][0]
        _, _, done, _, info = env.step(action)
        if action == 2:
            break
    assert fossil_cf is not None
    stats = info["curriculum"]["norm"]
    assert stats["pulls"] == 1 and stats["pending"] == 0
    assert stats["mean"] == pytest.approx(fossil_cf)


def test_a_cull_records_cull_reward_and_the_next_germinate_tries_the_next_arm():
    env = BlueprintCurriculumWrapper(gym.make("Esper-v0", **tiny_kwargs()), cull_reward=-1.0)
    env.reset(seed=0)
    env.step(1)
    while not env.action_masks()[3]:                        # CULL@0 once legal (min_cull_age 2)
        env.step(0)
    _, _, _, _, info = env.step(3)
    assert info["curriculum"]["norm"]["pulls"] == 1 and info["curriculum"]["norm"]["mean"] == -1.0
    while not env.action_masks()[1]:
        env.step(0)
    _, _, _, _, info = env.step(1)
    assert info["curriculum_choice"] == "attention"


def test_unresolved_seeds_are_cancelled_at_the_end_of_an_episode():
    env = _wrapped()
    env.reset(seed=0)
    env.step(1)
    done = False
    while not done:
        _, _, done, _, info = env.step(0)                   # never fossilize or cull
    assert env.curriculum.total_pulls + sum(env.curriculum.pending.values()) <= 1
    assert sum(env.curriculum.pending.values()) == 0


def test_illegal_and_invalid_collapsed_actions():
    env = _wrapped(germination_gate=True, min_germinate_epoch=5)
    env.reset(seed=0)
    assert not env.action_masks()[1]
    _, reward, _, _, info = env.step(1)                     # GERMINATE while the gate is closed
    assert info["illegal_action"] and "curriculum_choice" not in info
    assert sum(env.curriculum.pending.values()) == 0
    for bad in (4, -1, 1.5, True):
        with pytest.raises(InvalidAction):
            env.step(bad)


def test_envs_can_share_one_curriculum():
    cur = BlueprintCurriculum(("norm", "attention", "depthwise", "conv_light", "conv_heavy"))
    a = BlueprintCurriculumWrapper(gym.make("Esper-v0", **tiny_kwargs()), curriculum=cur)
    b = BlueprintCurriculumWrapper(gym.make("Esper-v0", **tiny_kwargs()), curriculum=cur)
    a.reset(seed=0)
    b.reset(seed=1)
    assert a.step(1)[4]["curriculum_choice"] == "norm"
    assert b.step(1)[4]["curriculum_choice"] == "attention"
    with pytest.raises(ValueError, match="not the env's blueprints"):
        BlueprintCurriculumWrapper(gym.make("Esper-v0", **tiny_kwargs()),
                                   curriculum=BlueprintCurriculum(ARMS))


def test_maskable_ppo_learns_on_the_wrapped_env():
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv([_wrapped])
    venv.reset()
    assert get_action_masks(venv).shape == (1, 4)
    model = MaskablePPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, seed=0,
                        policy_kwargs={"net_arch": [16]})
    model.learn(64)
    assert model.num_timesteps >= 64
