"""Instance sets through the env (issue 6): draws, pinning, info, observation, budgets, checkers."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import esper_env  # noqa: F401
from esper_env.core.instances import load_instance_set
from esper_env.errors import ConfigError

RECORDS = [
    {"name": "narrow", "host_channels": [2, 4, 8], "max_epochs": 8, "host_lr": 0.003},
    {"name": "wide", "host_channels": [4, 8, 16], "max_epochs": 10, "train_fraction": 0.5},
    {"name": "budget", "host_channels": [2, 4, 8], "max_epochs": 9, "param_budget": 0.2,
     "label_noise": 0.2},
]


def _env(**kw: object) -> gym.Env:
    return gym.make("Esper-v0", **tiny_kwargs(instance_set=RECORDS, max_epochs=25, **kw))


def _rollout(env: gym.Env, seed: int, options: dict | None = None) -> list:
    obs, info = env.reset(seed=seed, options=options)
    out = [(obs.copy(), info["instance"])]
    rng = np.random.default_rng(seed)
    done = False
    while not done:
        action = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
        obs, reward, done, _, info = env.step(action)
        out.append((obs.copy(), reward, info["instance"], info["val_acc"]))
    return out


def _equal(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
            for x, y in zip(p, q, strict=True)) for p, q in zip(a, b, strict=True))


def test_reset_draws_an_instance_and_the_same_seed_gives_the_same_episode() -> None:
    env = _env()
    names = set()
    for seed in range(14):
        a, b = _rollout(env, seed), _rollout(env, seed)
        assert _equal(a, b)
        name = a[0][1]
        names.add(name)
        assert all(step[2] == name for step in a[1:])  # info names it at every step
        limit = {r["name"]: r["max_epochs"] for r in RECORDS}[name]
        assert len(a) == limit  # reset trains epoch 1, then max_epochs - 1 steps
    assert names == {r["name"] for r in RECORDS}


def test_pinning_by_index_or_record_matches_the_drawn_episode() -> None:
    env = _env()
    drawn = _rollout(env, 3)
    k = [r["name"] for r in RECORDS].index(drawn[0][1])
    assert _equal(_rollout(env, 3, {"instance": k}), drawn)
    assert _equal(_rollout(env, 3, {"instance": RECORDS[k]}), drawn)
    other = (k + 1) % len(RECORDS)
    assert _rollout(env, 3, {"instance": other})[0][1] == RECORDS[other]["name"]
    custom = {"name": "custom", "host_lr": 0.05, "max_epochs": 4}
    run = _rollout(env, 3, {"instance": custom})
    assert run[0][1] == "custom" and len(run) == 4


@pytest.mark.parametrize(("options", "match"), [
    ({"instance": 3}, r"instance=3 is invalid; allowed: an index in 0\.\.2 of the 'train' split"),
    ({"instance": -1}, "instance=-1 is invalid"),
    ({"instance": {"name": "x", "host_lr": -1.0}}, r"instance 'x': host_lr=-1\.0 is invalid"),
    ({"instance": {"name": "x", "injection_points": [0, 1]}},
     r"instance 'x': injection_points=\(0, 1\) is invalid"),
    ({"instance": "narrow"}, "instance='narrow' is invalid"),
    ({"blueprint": "norm"}, r"reset options \['blueprint'\] are not supported"),
    (5, r"reset options=5 is invalid; allowed: None or a dict"),
    (["instance"], r"reset options=\['instance'\] is invalid"),
])
def test_bad_reset_options_fail_before_anything_changes(options: dict, match: str) -> None:
    env = _env()
    env.reset(seed=0)
    state = env.unwrapped.np_random.bit_generator.state
    with pytest.raises(ConfigError, match=match):
        env.reset(seed=5, options=options)
    assert env.unwrapped.np_random.bit_generator.state == state
    env.step(0)  # the old episode is intact


def test_observation_reports_the_instance() -> None:
    env = _env()
    u = env.unwrapped
    idx = {n: i for i, n in enumerate(u.feature_names)}
    for k, rec in enumerate(RECORDS):
        obs, info = env.reset(seed=0, options={"instance": k})
        assert obs[idx["host_lr"]] == pytest.approx((np.log10(rec.get("host_lr", 0.01)) + 4) / 4)
        assert obs[idx["train_fraction"]] == pytest.approx(rec.get("train_fraction", 1.0))
        assert obs[idx["label_noise"]] == pytest.approx(rec.get("label_noise", 0.0))
        assert obs[idx["has_budget"]] == float("param_budget" in rec)
        assert obs[idx["epochs_left"]] == pytest.approx((rec["max_epochs"] - 1) / 100)
        assert obs[idx["slot0_width"]] == pytest.approx(np.log2(rec["host_channels"][-1]) / 8)
        assert obs[idx["slot0_depth"]] == pytest.approx(1.0)
        assert obs[idx["host_size"]] == pytest.approx(np.log10(u.trainer.host_params) / 6)


@pytest.mark.parametrize("seed", range(6))
def test_masks_respect_the_parameter_budget(seed: int) -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=3, param_budget=0.6, max_epochs=14))
    u = env.unwrapped
    env.reset(seed=seed)
    limit = 0.6 * u.trainer.host_params
    costs = u.state.setup.costs
    rng = np.random.default_rng(seed)
    masked_out = 0
    done = False
    while not done:
        mask = u.action_masks()
        added = sum(s.seed_params for s in u.slots if s.stage.name in
                    {"GERMINATED", "TRAINING", "BLENDING", "PROBATIONARY", "FOSSILIZED"})
        for k in range(3):
            for b, name in enumerate(u.blueprints):
                a = u.action_names.index(f"GERMINATE_{name}@{k}")
                if mask[a]:
                    assert added + costs[k][b] <= limit
                elif u.slots[k].stage.name == "DORMANT":
                    masked_out += 1
        _, _, done, _, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        assert info["params_added"] <= limit
    assert masked_out > 0  # the budget really masked something


def test_budget_zero_masks_every_germination_and_observation_says_so() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(param_budget=0.0))
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    assert not u.action_masks()[1:1 + len(u.blueprints)].any()
    idx = {n: i for i, n in enumerate(u.feature_names)}
    assert obs[idx["budget_left"]] == 0.0 and obs[idx["has_budget"]] == 1.0


@pytest.mark.parametrize("split", ["train", "test"])
def test_checkers_are_clean_on_an_instance_set(split: str, tmp_path) -> None:
    path = tmp_path / "set.json"
    import json

    path.write_text(json.dumps({"name": "mini", "version": 1, "task": "synthetic", "n_slots": 1,
                                "train": RECORDS[:2], "test": RECORDS[2:]}))
    kw = tiny_kwargs(instance_set=str(path), instance_split=split)
    kw.pop("task"), kw.pop("max_epochs")
    env = gym.make("Esper-v0", **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env, warn=True)
    bad = [str(w.message) for w in caught if "esper" in str(w.filename).lower()
           or "check" in str(w.message).lower()]
    assert bad == []


def test_the_default_env_has_no_instance() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs())
    _, info = env.reset(seed=0)
    assert info["instance"] is None and env.unwrapped.instances == ()
    with pytest.raises(ConfigError, match="this env has no instance set"):
        env.reset(options={"instance": 0})


def test_user_file_and_named_set_are_accepted(tmp_path) -> None:
    import json

    path = tmp_path / "bare.json"
    path.write_text(json.dumps(RECORDS))
    env = gym.make("Esper-v0", **tiny_kwargs(instance_set=str(path), max_epochs=25))
    _, info = env.reset(seed=1)
    assert info["instance"] in {r["name"] for r in RECORDS}
    assert load_instance_set(str(path)).n_slots == 1


@pytest.mark.parametrize("split", ["train", "test"])
def test_checkers_are_clean_on_digits_mix(split: str) -> None:
    env = gym.make("Esper-v0", instance_set="digits-mix", instance_split=split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env, warn=True)
    assert [str(w.message) for w in caught if "check" in str(w.message).lower()] == []
    names = {i.name for i in env.unwrapped.instances}
    _, info = env.reset(seed=0)
    assert info["instance"] in names and info["instance"].startswith(split)


def test_digits_mix_splits_are_disjoint_and_draws_stay_in_the_split() -> None:
    train = gym.make("Esper-v0", instance_set="digits-mix")
    test = gym.make("Esper-v0", instance_set="digits-mix", instance_split="test")
    tr = {tuple(i.overrides().values()) for i in train.unwrapped.instances}
    te = {tuple(i.overrides().values()) for i in test.unwrapped.instances}
    assert len(tr) == 60 and len(te) == 36 and not tr & te
    for seed in range(5):
        assert test.reset(seed=seed)[1]["instance"].startswith("test-")
