"""Reward integrity through the env (issue 5): the seedless twin is the no-growth world, a seed
that never reaches the output earns nothing, stage shaping is potential-based to the end, the
probation-wait penalty cannot be dodged, and PROBATIONARY holds only seeds worth deciding on."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs

from agents.policies import ScriptedPolicy
from esper_env.config import EsperConfig
from esper_env.core.reward import stage_potential

TINY_GATES = tiny_kwargs()["gates"]


def _tiny(**overrides: object) -> dict:
    gates = {**TINY_GATES, **overrides.pop("gates", {})}  # type: ignore[dict-item]
    return tiny_kwargs(gates=gates, **overrides)


def _play(env: gym.Env, seed: int, choose) -> tuple[dict, list[tuple[float, dict]]]:
    """Run one episode; ``choose(obs, info, mask)`` picks each action."""
    obs, info = env.reset(seed=seed)
    reset_info, steps = info, []
    while True:
        action = choose(obs, info, env.unwrapped.action_masks())
        obs, reward, terminated, _, info = env.step(action)
        steps.append((reward, info))
        if terminated:
            return reset_info, steps


def _wait(obs, info, mask) -> int:
    return 0


def _random_legal(seed: int):
    rng = np.random.default_rng(seed)
    return lambda obs, info, mask: int(rng.choice(np.flatnonzero(mask)))


def _scripted(env: gym.Env, blueprint: str):
    policy = ScriptedPolicy(env, blueprint)
    return lambda obs, info, mask: policy.predict(obs, action_masks=mask)[0]


# -- the twin ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("task", "blueprint", "seed"), [("synthetic", "conv_light", 0),
                                                         ("synthetic", "attention", 3),
                                                         ("digits", "conv_heavy", 1)])
def test_twin_is_exactly_the_no_growth_world(task: str, blueprint: str, seed: int) -> None:
    kw = _tiny(task=task) if task == "synthetic" else dict(task=task, max_epochs=16)
    env = gym.make("Esper-v0", **kw)
    reset_info, grown = _play(env, seed, _scripted(env, blueprint))
    _, plain = _play(env, seed, _wait)
    assert any(i["twin_val_acc"] != i["val_acc"] for _, i in grown), "growth changed the model"
    twin = [reset_info["twin_val_acc"]] + [i["twin_val_acc"] for _, i in grown]
    alone = [reset_info["val_acc"]] + [i["val_acc"] for _, i in plain]
    assert twin == alone  # bit for bit: same initial weights, same batches, no seed
    assert grown[-1][1]["final_twin_test_acc"] == plain[-1][1]["final_test_acc"]
    assert plain[-1][1]["final_twin_test_acc"] == plain[-1][1]["final_test_acc"]
    total = 0.0
    for _, info in grown:
        assert info["value_added"] == info["val_acc"] - info["twin_val_acc"]
        total += info["reward_terms"]["value_added"]
    assert total == pytest.approx(grown[-1][1]["value_added"], abs=1e-9)
    assert [r for r, _ in plain] == [0.0] * len(plain)  # no growth earns exactly 0


def test_value_added_by_slot_splits_v_across_blended_seeds() -> None:
    env = gym.make("Esper-v0", **_tiny(n_slots=2))
    masks_seen = 0

    def both(obs, info, mask):
        nonlocal masks_seen
        names = env.unwrapped.action_names
        for name in ("FOSSILIZE@0", "FOSSILIZE@1", "GERMINATE_conv_light@0",
                     "GERMINATE_depthwise@1"):
            if mask[names.index(name)]:
                masks_seen += 1
                return names.index(name)
        return 0

    _, steps = _play(env, 2, both)
    assert masks_seen >= 2
    split_seen = False
    for _, info in steps:
        parts = info["value_added_by_slot"]
        shares = [p for p in parts if p is not None]
        cfs = info["counterfactuals"]
        assert [p is None for p in parts] == [c is None for c in cfs]
        if shares:
            assert sum(shares) == pytest.approx(info["value_added"], abs=1e-9)
            split_seen = split_seen or len(shares) == 2
    assert split_seen


def test_twin_is_not_kept_in_modes_that_do_not_need_it() -> None:
    env = gym.make("Esper-v0", **_tiny(reward_mode="delta"))
    _, steps = _play(env, 0, _scripted(env, "conv_light"))
    assert "value_added" not in steps[-1][1] and "final_twin_test_acc" not in steps[-1][1]
    assert env.unwrapped.trainer.twin is None


# -- no credit for a seed that cannot reach the output -------------------------------------------

@pytest.mark.parametrize("mode", ["contribution", "delta", "sparse"])
@pytest.mark.parametrize("task", ["synthetic", "digits"])
def test_seed_that_never_blends_never_earns_more_than_no_growth(mode: str, task: str) -> None:
    """The incubator's output is exactly the host's: identical validation curves, and the seed's
    return is at most no-growth's (at most it costs its rent). The anchor's proxy credit paid it
    for the host's own learning."""
    base = _tiny(task=task, reward_mode=mode, max_epochs=10)
    kw = {**base, "gates": {**base["gates"], "min_training_epochs": 100}}  # never leaves TRAINING
    env = gym.make("Esper-v0", **kw)
    for seed in (0, 1):
        _, incubated = _play(env, seed, _scripted(env, "conv_heavy"))
        _, plain = _play(env, seed, _wait)
        assert all(i["stages"] == ["TRAINING"] for _, i in incubated[1:])
        assert [i["val_acc"] for _, i in incubated] == [i["val_acc"] for _, i in plain]
        assert [i["train_loss"] for _, i in incubated] == [i["train_loss"] for _, i in plain]
        ret_seed, ret_plain = (sum(r for r, _ in s) for s in (incubated, plain))
        assert ret_seed <= ret_plain
        if mode == "contribution":
            assert all(i["reward_terms"]["value_added"] == 0.0 for _, i in incubated)
            assert env.unwrapped.trainer.twin is None  # never forked: nothing departed


def test_seed_culled_before_blending_earns_less_than_no_growth() -> None:
    kw = _tiny(min_cull_age=2)
    kw["gates"] = {**kw["gates"], "min_training_epochs": 100}
    env = gym.make("Esper-v0", **kw)
    names = env.unwrapped.action_names

    def germinate_then_cull(obs, info, mask):
        for name in ("CULL@0", "GERMINATE_conv_heavy@0"):
            if mask[names.index(name)]:
                return names.index(name)
        return 0

    _, culled = _play(env, 4, germinate_then_cull)
    _, plain = _play(env, 4, _wait)
    assert any(e["to"] == "CULLED" for _, i in culled for e in i["events"])
    assert [i["val_acc"] for _, i in culled] == [i["val_acc"] for _, i in plain]
    assert sum(r for r, _ in culled) < sum(r for r, _ in plain) == 0.0


# -- stage shaping is potential-based to the end -------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stage_shaping_discounted_sum_is_zero_over_an_episode(seed: int) -> None:
    env = gym.make("Esper-v0", **_tiny(n_slots=2))
    cfg = env.unwrapped.config.reward
    rng = np.random.default_rng(seed)
    slots_before_last = []

    def random_legal(obs, info, mask):
        slots_before_last[:] = list(env.unwrapped.slots)
        return int(rng.choice(np.flatnonzero(mask)))

    _, steps = _play(env, seed, random_legal)
    shaping = [i["reward_terms"]["stage_shaping"] for _, i in steps]
    discounted = sum(cfg.gamma ** t * f for t, f in enumerate(shaping))
    assert discounted == pytest.approx(0.0, abs=1e-9)
    assert sum(shaping) <= 1e-9
    # The last step pays back the whole potential of the state it started from.
    phi = sum(stage_potential(s, cfg) for s in slots_before_last)
    assert shaping[-1] == pytest.approx(-cfg.pbrs_weight * phi, abs=1e-12)


def test_stage_shaping_episodes_that_end_grown_are_covered() -> None:
    env = gym.make("Esper-v0", **_tiny())
    _, steps = _play(env, 0, _scripted(env, "conv_light"))
    assert steps[-1][1]["stages"] == ["FOSSILIZED"]
    cfg = env.unwrapped.config.reward
    shaping = [i["reward_terms"]["stage_shaping"] for _, i in steps]
    assert shaping[-1] < 0.0  # ending FOSSILIZED no longer pays its potential
    assert sum(cfg.gamma ** t * f for t, f in enumerate(shaping)) == pytest.approx(0.0, abs=1e-9)


# -- the probation-wait penalty ------------------------------------------------------------------

def test_failing_fossilize_cannot_dodge_the_probation_penalty() -> None:
    """With G5 unreachable, spamming FOSSILIZE used to skip the penalty (89.3 vs 65.4 for WAIT on
    identical curves). Now such a FOSSILIZE is masked: an illegal no-op that dodges nothing."""
    kw = _tiny(probation_timeout=6, gates={"min_fossilize_contribution": 1000.0})
    env = gym.make("Esper-v0", **kw)
    names = env.unwrapped.action_names
    germinate, fossilize = names.index("GERMINATE_norm@0"), names.index("FOSSILIZE@0")

    def waiter(obs, info, mask):
        return germinate if mask[germinate] else 0

    def spammer(obs, info, mask):
        if info["stages"] == ["PROBATIONARY"]:
            return fossilize
        return germinate if mask[germinate] else 0

    for seed in (0, 1):
        _, waited = _play(env, seed, waiter)
        _, spammed = _play(env, seed, spammer)
        assert [i["val_acc"] for _, i in waited] == [i["val_acc"] for _, i in spammed]
        penalties = [i["reward_terms"]["probation_wait"] for _, i in spammed]
        assert penalties == [i["reward_terms"]["probation_wait"] for _, i in waited]
        assert min(penalties) < 0.0, "the seed sat in PROBATIONARY long enough to be charged"
        illegal = sum(i["illegal_action"] for _, i in spammed)
        assert illegal > 0
        assert sum(r for r, _ in spammed) == pytest.approx(
            sum(r for r, _ in waited) - 0.1 * illegal, abs=1e-9)


# -- PROBATIONARY only for seeds worth a decision; FOSSILIZE legal only when it will work ---------

def test_probation_needs_a_positive_counterfactual_and_fossilize_mask_is_g5() -> None:
    kw = _tiny(n_slots=2, probation_timeout=4,
               gates={"min_probation_contribution": 0.0, "min_fossilize_contribution": 1.0})
    env = gym.make("Esper-v0", **kw)
    u = env.unwrapped
    g3_culls = probationary = fossilized = 0
    for seed in range(8):
        _, steps = _play(env, seed, _random_legal(seed))
        for _, info in steps:
            mask = info["action_mask"]
            for k, (stage, c) in enumerate(zip(info["stages"], info["counterfactuals"],
                                               strict=True)):
                fossilize = u.action_names.index(f"FOSSILIZE@{k}")
                if stage == "PROBATIONARY":
                    probationary += 1
                    assert c is not None and c > 0.0
                if "final_val_acc" not in info:  # the terminal mask is WAIT only
                    assert mask[fossilize] == (stage == "PROBATIONARY" and c >= 1.0)
            for e in info["events"]:
                g3_culls += e["cause"] == "G3_counterfactual"
                fossilized += e["to"] == "FOSSILIZED"
            if info["action_name"].startswith("FOSSILIZE") and not info["illegal_action"]:
                assert any(e["to"] == "FOSSILIZED" for e in info["events"])
    assert probationary > 0 and g3_culls > 0 and fossilized > 0


def test_g3_culls_seeds_that_add_nothing_on_digits() -> None:
    """The issue's observation: with norm/depthwise, seeds with counterfactual <= 0 sat in
    PROBATIONARY with FOSSILIZE unmasked; now they are culled at the end of blending."""
    env = gym.make("Esper-v0", task="digits")
    causes = []
    for blueprint, seed in (("norm", 0), ("norm", 1), ("depthwise", 1)):
        _, steps = _play(env, seed, _scripted(env, blueprint))
        for _, info in steps:
            causes += [e["cause"] for e in info["events"]]
            for stage, c in zip(info["stages"], info["counterfactuals"], strict=True):
                if stage == "PROBATIONARY":
                    assert c is not None and c > 0.0
    assert "G3" in causes and "G3_counterfactual" in causes


def test_default_gates_config_has_zero_probation_threshold() -> None:
    assert EsperConfig().lifecycle.gates.min_probation_contribution == 0.0


def test_a_diverged_twin_freezes_value_added() -> None:
    import torch

    env = gym.make("Esper-v0", **_tiny())
    u = env.unwrapped
    names = u.action_names
    obs, info = env.reset(seed=0)
    frozen = None
    while True:
        mask = u.action_masks()
        action = names.index("GERMINATE_conv_light@0") if mask[names.index(
            "GERMINATE_conv_light@0")] else 0
        if u.trainer.twin is not None and frozen is None:
            with torch.no_grad():
                for p in u.trainer.twin.parameters():
                    p.fill_(float("nan"))
            frozen = info["value_added"]
        obs, reward, terminated, _, info = env.step(action)
        if frozen is not None:
            assert info["value_added"] == frozen
            assert info["reward_terms"]["value_added"] == 0.0
            assert info["twin_val_acc"] is None and np.isfinite(reward)
        if terminated:
            break
    assert frozen is not None and info["final_twin_test_acc"] is None
    assert u.trainer.twin is None
