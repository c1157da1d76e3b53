"""Actions through the env: out-of-space errors, masked-out no-ops, masks and masked sampling."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs
from gymnasium.error import InvalidAction

from esper_env.core.lifecycle import LIVE_STAGES, SeedStage


def _make(**overrides: object) -> gym.Env:
    return gym.make("Esper-v0", **tiny_kwargs(**overrides))


def _index(env: gym.Env, name: str) -> int:
    return env.unwrapped.action_names.index(name)


@pytest.mark.parametrize("action", ["n", -1, 1.5, "a", None, "np_n", np.float32(0.0), [0]],
                         ids=["n", "-1", "1.5", "str", "None", "np.int64(n)", "np.float32",
                              "list"])
def test_step_out_of_space_action_raises_invalid_action(action: object) -> None:
    env = _make(n_slots=2).unwrapped
    env.reset(seed=0)
    n = env.action_space.n
    if isinstance(action, str):
        action = {"n": n, "np_n": np.int64(n)}.get(action, action)
    with pytest.raises(InvalidAction, match=r"\[0, 15\)"):
        env.step(action)
    # Nothing happened: the next legal step trains epoch 2.
    _, _, _, _, info = env.step(0)
    assert info["epoch"] == 2


def test_step_accepts_numpy_integer_and_one_element_array() -> None:
    env = _make().unwrapped
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.int64(0))
    assert info["action"] == 0 and not info["illegal_action"]
    _, _, _, _, info = env.step(np.array([0]))
    assert info["action"] == 0 and info["epoch"] == 3


def _illegal_after_germinate(env: gym.Env, kind: str) -> int:
    """An in-space action that is masked out once slot 0 holds a fresh TRAINING/BLENDING seed."""
    names = {"germinate_occupied": "GERMINATE_norm@0", "fossilize_not_probationary": "FOSSILIZE@0",
             "cull_too_young": "CULL@0", "fossilize_dormant": "FOSSILIZE@1",
             "cull_dormant": "CULL@1"}
    return _index(env, names[kind])


@pytest.mark.parametrize("reward_mode", ["contribution", "delta", "sparse"])
@pytest.mark.parametrize("kind", ["germinate_occupied", "fossilize_not_probationary",
                                  "cull_too_young", "fossilize_dormant", "cull_dormant"])
def test_step_masked_out_action_is_noop_with_penalty(kind: str, reward_mode: str) -> None:
    kw = tiny_kwargs(n_slots=2, reward_mode=reward_mode, min_cull_age=3,
                     reward={"illegal_action_penalty": 0.25})
    waiting, illegal = gym.make("Esper-v0", **kw), gym.make("Esper-v0", **kw)
    for env in (waiting, illegal):
        env.reset(seed=3)
        env.step(_index(env, "GERMINATE_conv_light@0"))
    action = _illegal_after_germinate(illegal, kind)
    assert not illegal.unwrapped.action_masks()[action]

    obs_w, r_w, term_w, trunc_w, info_w = waiting.step(0)
    obs_i, r_i, term_i, trunc_i, info_i = illegal.step(action)

    assert info_i["illegal_action"] is True and info_w["illegal_action"] is False
    assert info_i["reward_terms"]["illegal_action"] == -0.25
    assert info_w["reward_terms"]["illegal_action"] == 0.0
    # Everything but the penalty is exactly what WAIT gives: the action did nothing.
    assert np.array_equal(obs_w, obs_i)
    assert illegal.unwrapped.slots == waiting.unwrapped.slots
    assert (term_i, trunc_i) == (term_w, trunc_w)
    assert info_i["epoch"] == info_w["epoch"] == 3
    assert info_i["events"] == info_w["events"]
    assert info_i["stages"] == info_w["stages"]
    assert {k: v for k, v in info_i["reward_terms"].items() if k != "illegal_action"} == \
        {k: v for k, v in info_w["reward_terms"].items() if k != "illegal_action"}
    assert r_i == pytest.approx(r_w - 0.25, abs=1e-12)


def test_step_germinate_masked_by_germination_gate_is_noop() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(germination_gate=True))
    env.reset(seed=0)
    action = _index(env, "GERMINATE_conv_heavy@0")
    assert not env.unwrapped.action_masks()[action]
    _, reward, _, _, info = env.step(action)
    assert info["illegal_action"] is True
    assert info["stages"] == ["DORMANT"]
    assert info["events"] == []
    assert info["params_added"] == 0
    assert info["reward_terms"]["illegal_action"] == \
        -env.unwrapped.config.reward.illegal_action_penalty


def test_action_masks_are_bool_wait_legal_and_match_slot_stages() -> None:
    env = _make(n_slots=3, max_epochs=20)
    unwrapped = env.unwrapped
    codec, cfg = unwrapped.codec, unwrapped.config
    rng = np.random.default_rng(0)
    _, info = env.reset(seed=1)
    terminated = False
    seen_kinds: set[str] = set()
    while True:
        mask = unwrapped.action_masks()
        assert mask.dtype == np.bool_ and mask.shape == (env.action_space.n,)
        assert mask[0]
        assert np.array_equal(mask, info["action_mask"])
        if terminated:
            assert mask.sum() == 1  # after the end only WAIT remains
            break
        for s, slot in enumerate(unwrapped.slots):
            base = 1 + s * codec.per_slot
            nb = len(codec.blueprints)
            assert (mask[base:base + nb] == (slot.stage == SeedStage.DORMANT)).all()
            assert mask[base + nb] == (slot.stage == SeedStage.PROBATIONARY)
            assert mask[base + nb + 1] == (slot.stage in LIVE_STAGES
                                           and slot.seed_age >= cfg.lifecycle.min_cull_age)
        legal = np.flatnonzero(mask)
        seen_kinds |= {unwrapped.action_names[i].split("_")[0].split("@")[0] for i in legal}
        action = int(rng.choice(legal))
        _, _, terminated, _, info = env.step(action)
        assert info["illegal_action"] is False
    assert {"WAIT", "GERMINATE", "CULL"} <= seen_kinds


def test_action_masks_returns_a_copy() -> None:
    env = _make().unwrapped
    env.reset(seed=0)
    mask = env.action_masks()
    mask[:] = False
    assert env.action_masks()[0]
    assert env.action_masks().any()


def test_action_space_sample_with_int8_mask_gives_only_legal_actions() -> None:
    env = _make(n_slots=3, max_epochs=20)
    env.action_space.seed(123)
    rng = np.random.default_rng(7)
    env.reset(seed=2)
    for _ in range(15):
        mask = env.unwrapped.action_masks()
        samples = {int(env.action_space.sample(mask=mask.astype(np.int8))) for _ in range(300)}
        assert samples <= set(np.flatnonzero(mask).tolist())
        assert samples == set(np.flatnonzero(mask).tolist())  # every legal action can come up
        _, _, terminated, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        assert not info["illegal_action"]
        if terminated:
            break
