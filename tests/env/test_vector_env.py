"""EsperVectorEnv: K episodes as one batched computation, faithful to EsperEnv lane by lane."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import esper_env  # noqa: F401 - registers Esper-v0
from esper_env.env import EsperEnv
from esper_env.errors import ConfigError
from esper_env.vector import EsperVectorEnv

KW = dict(task="digits", max_epochs=8, min_germinate_epoch=2, gates={"min_training_epochs": 1},
          torch_threads=1)
OBS_TOL = 1e-5
"""Observations of a lane against the single env (float32 features; other kernels)."""
REWARD_TOL = 1e-3
"""Rewards in pp: accuracies are counts over 359 images, so a lane either matches or differs by
a whole image (0.28 pp); within an episode of a few epochs they match."""


def grower(names: tuple[str, ...], mask: np.ndarray) -> int:
    """Germinate conv_heavy when allowed, fossilize when allowed, else WAIT."""
    for i, n in enumerate(names):
        if mask[i] and ("conv_heavy" in n or n.startswith("FOSSILIZE")):
            return i
    return 0


def test_one_lane_equals_the_single_env_step_by_step() -> None:
    kw = {**KW, "max_epochs": 12}  # germinate, blend, probation, fossilize
    single, vec = EsperEnv(**kw), EsperVectorEnv(1, **kw)
    o1, i1 = single.reset(seed=5)
    o2, i2 = vec.reset(seed=5)
    np.testing.assert_allclose(o2[0], o1, atol=OBS_TOL)
    names, grew = single.action_names, False
    for _ in range(kw["max_epochs"]):
        a = grower(names, single.action_masks())
        assert grower(names, vec.action_masks()[0]) == a
        grew |= a != 0
        o1, r1, d1, _, i1 = single.step(a)
        o2, r2, d2, _, i2 = vec.step([a])
        np.testing.assert_allclose(o2[0], o1, atol=OBS_TOL)
        assert r2[0] == pytest.approx(r1, abs=REWARD_TOL)
        assert list(i2["stages"][0]) == i1["stages"] and bool(d2[0]) == d1
        for term, value in i1["reward_terms"].items():
            assert i2["reward_terms"][term][0] == pytest.approx(value, abs=REWARD_TOL), term
        if d1:
            break
    assert grew and d1 and i1["n_fossilized"] == 1
    assert i2["final_test_acc"][0] == pytest.approx(i1["final_test_acc"], abs=REWARD_TOL)


def test_lane_i_is_seeded_seed_plus_i_and_its_first_epoch_equals_the_single_envs() -> None:
    vec = EsperVectorEnv(3, **KW)
    obs, info = vec.reset(seed=40)
    for i in range(3):
        o, inf = EsperEnv(**KW).reset(seed=40 + i)
        np.testing.assert_allclose(obs[i], o, atol=OBS_TOL)
        assert info["val_acc"][i] == pytest.approx(inf["val_acc"], abs=REWARD_TOL)
    assert not np.allclose(obs[0], obs[1]) and not np.allclose(obs[1], obs[2])


def _run(actions_of, k: int = 3, steps: int = 6) -> tuple[np.ndarray, np.ndarray]:
    vec = EsperVectorEnv(k, **{**KW, "germination_gate": False})
    vec.reset(seed=7)
    names = vec.template.action_names
    obs, rewards = [], []
    for _ in range(steps):
        o, r, *_ = vec.step(actions_of(names, vec.action_masks()))
        obs.append(o)
        rewards.append(r)
    return np.array(obs), np.array(rewards)


def test_same_seeds_and_actions_give_identical_results() -> None:
    def act(names, masks):  # noqa: ANN001
        return [grower(names, m) for m in masks]

    (o1, r1), (o2, r2) = _run(act), _run(act)
    assert np.array_equal(o1, o2) and np.array_equal(r1, r2)


def test_a_germination_in_one_lane_leaves_the_other_lanes_alone() -> None:
    o_wait, r_wait = _run(lambda names, masks: [0, 0, 0])
    o_grow, r_grow = _run(lambda names, masks: [grower(names, masks[0]), 0, 0])
    assert not np.allclose(o_grow[:, 0], o_wait[:, 0])  # lane 0 did grow
    np.testing.assert_allclose(o_grow[:, 1:], o_wait[:, 1:], atol=1e-6)
    np.testing.assert_allclose(r_grow[:, 1:], r_wait[:, 1:], atol=1e-6)


def _germinate(names: tuple[str, ...], mask: np.ndarray, blueprint: str) -> int:
    for i, n in enumerate(names):
        if mask[i] and (blueprint in n or n.startswith("FOSSILIZE")):
            return i
    return 0


def test_lanes_that_grow_other_seeds_at_other_times_each_equal_their_single_env() -> None:
    """Seed groups of several blueprints and twins forked at different epochs, one stack each."""
    kw = {**KW, "max_epochs": 10, "germination_gate": False}
    plans = [("conv_heavy", 0), ("attention", 3), ("depthwise", 4), (None, 0)]
    vec = EsperVectorEnv(len(plans), **kw)
    singles = [EsperEnv(**kw) for _ in plans]
    vec.reset(seed=60)
    for i, env in enumerate(singles):
        env.reset(seed=60 + i)
    names = singles[0].action_names
    assert vec.trainer.twin
    forked_counts = set()
    for t in range(8):  # later, float rounding has moved a lane's accuracy by whole images
        masks = vec.action_masks()
        acts = [0 if bp is None or t < start else _germinate(names, masks[i], bp)
                for i, (bp, start) in enumerate(plans)]
        _, r, d, _, info = vec.step(acts)
        forked_counts.add(len(vec.trainer.twin_lanes))
        for i, env in enumerate(singles):
            assert bool(env.action_masks()[acts[i]])
            _, r1, d1, _, i1 = env.step(acts[i])
            assert r[i] == pytest.approx(r1, abs=REWARD_TOL), (t, i)
            for term, value in i1["reward_terms"].items():
                assert info["reward_terms"][term][i] == pytest.approx(value, abs=REWARD_TOL), \
                    (t, i, term)
            assert bool(d[i]) == d1
    assert len(forked_counts) >= 3  # the twin stack grew as lanes began to blend


IMAGE_PP = 100.0 / 359
"""One validation image, in pp: a float-rounding flip of one image is the largest drift allowed."""


def _against_singles(vec: EsperVectorEnv, kw: dict, seed: int, steps: int, policy
                     ) -> tuple[list[float], set[str]]:
    """Step ``vec`` and one EsperEnv per lane (seed ``seed + i``) on the same actions; the
    absolute reward differences, lane by lane and step by step (episodes that end start again),
    and the instances played.
    """  # noqa: D205
    k = vec.num_envs
    singles = [EsperEnv(**kw) for _ in range(k)]
    obs, info = vec.reset(seed=seed)
    for i, env in enumerate(singles):
        o, inf = env.reset(seed=seed + i)
        np.testing.assert_allclose(obs[i], o, atol=OBS_TOL)  # the first epoch
        assert info["instance"][i] == inf["instance"]
    names, diffs, seen = singles[0].action_names, [], set(info["instance"])
    for t in range(steps):
        masks = vec.action_masks()
        acts = [policy(names, masks[i], t, i) for i in range(k)]
        obs, r, d, _, info = vec.step(acts)
        for i, env in enumerate(singles):
            assert bool(env.action_masks()[acts[i]])
            _, r1, d1, _, i1 = env.step(acts[i])
            diffs.append(abs(r[i] - r1))
            assert bool(d[i]) == d1
            if d1:  # SAME_STEP: the lane's next episode began in this step
                assert info["final_info"]["instance"][i] == i1["instance"]
                o, inf = env.reset()
                assert info["instance"][i] == inf["instance"]
                seen.add(inf["instance"])
                np.testing.assert_allclose(obs[i], o, atol=OBS_TOL)
    return diffs, seen


def _grow_late(names: tuple[str, ...], mask: np.ndarray, t: int, i: int) -> int:
    """Lane i waits 1 + i % 3 epochs, then grows conv_light, attention or depthwise."""
    return 0 if t < 1 + i % 3 else _germinate(names, mask, ("conv_light", "attention",
                                                            "depthwise")[i % 3])


def test_lanes_on_an_instance_set_each_equal_their_single_env() -> None:
    """Host widths (padded), slot positions, learning rates, half training sets, label noise."""
    kw = dict(instance_set="digits-mix", instance_split="test", torch_threads=1,
              germination_gate=False, min_germinate_epoch=2, gates={"min_training_epochs": 1})
    vec = EsperVectorEnv(6, **kw)
    diffs, seen = _against_singles(vec, kw, 100, 6, _grow_late)
    drawn = [x for x in vec.instances if x.name in seen]
    assert len({d.host_channels for d in drawn}) >= 4 and vec.trainer.widths == (4, 8, 16)
    assert {d.train_fraction for d in drawn} == {0.5, 1.0}
    assert {d.label_noise for d in drawn} == {0.0, 0.1}
    assert len({d.injection_points for d in drawn}) == 2
    assert max(diffs) <= 2 * IMAGE_PP + 1e-6  # a twin or a host one image apart at most
    assert sum(x < REWARD_TOL for x in diffs) >= 0.9 * len(diffs)


def test_lanes_of_other_lengths_and_training_set_sizes_autoreset_alone() -> None:
    """Same-step autoreset of the lanes that end; the others train on (a masked step)."""
    records = [{"name": "short-half", "host_channels": [2, 4, 8], "max_epochs": 3,
                "train_fraction": 0.5, "host_lr": 0.02},
               {"name": "long-noisy", "host_channels": [2, 2, 4], "max_epochs": 5,
                "label_noise": 0.1, "host_lr": 0.01},
               {"name": "mid", "host_channels": [2, 4, 8], "max_epochs": 4,
                "injection_points": [1]}]
    kw = dict(instance_set=records, torch_threads=1, germination_gate=False,
              min_germinate_epoch=1, gates={"min_training_epochs": 1})
    vec = EsperVectorEnv(4, autoreset_mode="same_step", **kw)
    diffs, seen = _against_singles(vec, kw, 30, 9, lambda names, m, t, i: _germinate(
        names, m, "conv_light") if i % 2 else 0)
    assert seen == {"short-half", "long-noisy", "mid"}
    assert max(diffs) <= 2 * IMAGE_PP + 1e-6
    assert sum(x < REWARD_TOL for x in diffs) >= 0.9 * len(diffs)


def test_make_vec_builds_it_with_masks_per_lane_and_next_step_autoreset() -> None:
    envs = gym.make_vec("Esper-v0", num_envs=2, vectorization_mode="vector_entry_point",
                        task="digits", max_epochs=3, torch_threads=1)
    assert isinstance(envs.unwrapped, EsperVectorEnv)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, *envs.single_observation_space.shape)
    assert envs.unwrapped.action_masks().shape == (2, envs.single_action_space.n)
    _, _, d, _, _ = envs.step([0, 0])
    assert not d.any()
    _, r, d, _, info = envs.step([0, 0])
    assert d.all() and "final_test_acc" in info and info["_final_test_acc"].all()
    obs, r, d, t, info = envs.step([0, 0])  # NEXT_STEP: this step resets both lanes
    assert not d.any() and not t.any() and (r == 0).all()
    assert info["epoch"].tolist() == [1, 1]  # the new episodes' first epoch


def test_same_step_autoreset_returns_the_new_episode_with_final_obs_and_info() -> None:
    vec = EsperVectorEnv(2, autoreset_mode="SameStep", task="digits", max_epochs=2,
                         torch_threads=1)
    vec.reset(seed=0)
    obs, r, d, _, info = vec.step([0, 0])  # the second and last epoch
    assert d.all() and info["_final_obs"].all() and info["_final_info"].all()
    assert info["final_info"]["final_test_acc"].shape == (2,)
    assert info["epoch"].tolist() == [1, 1]  # the new episodes' first epoch
    assert not np.array_equal(info["final_obs"][0], obs[0])


def test_record_episode_statistics_counts_each_lanes_episode() -> None:
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    envs = RecordEpisodeStatistics(EsperVectorEnv(2, task="digits", max_epochs=2,
                                                  torch_threads=1))
    envs.reset(seed=0)
    _, _, _, _, info = envs.step([0, 0])  # the second and last epoch
    assert info["episode"]["l"].tolist() == [1, 1] and info["_episode"].all()


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(task="synthetic"), "task='synthetic' is not batchable"),
    (dict(task="tinytext"), "task='tinytext' is not batchable"),
    (dict(blend="gate"), "blend='gate' is not batchable"),
    (dict(instance_set=[{"name": "a", "host_channels": [2, 4, 8]},
                        {"name": "b", "host_channels": [2, 4]}]),
     r"host_channels=\(2, 4\) is not batchable with \(2, 4, 8\).*one depth"),
])
def test_what_the_batched_engine_cannot_run_yet_is_refused_by_name(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        EsperVectorEnv(2, **kwargs)


def test_bad_num_envs_actions_and_autoreset_modes_are_refused() -> None:
    with pytest.raises(ConfigError, match="num_envs=0 is invalid"):
        EsperVectorEnv(0)
    with pytest.raises(ConfigError, match="autoreset_mode='Sometimes' is invalid; allowed: "
                                          "NEXT_STEP, SAME_STEP, DISABLED"):
        EsperVectorEnv(1, autoreset_mode="Sometimes", max_epochs=2)
    vec = EsperVectorEnv(2, task="digits", max_epochs=2)
    with pytest.raises(ConfigError, match="reset_mask'.* needs autoreset_mode=DISABLED"):
        vec.reset(seed=0, options={"reset_mask": [True, False]})
    with pytest.raises(ConfigError, match=r"options keys \['colour'\] are not supported"):
        vec.reset(seed=0, options={"colour": 1})
    with pytest.raises(gym.error.ResetNeeded):
        vec.step([0, 0])
    vec.reset(seed=0)
    with pytest.raises(gym.error.InvalidAction, match="expected 2 integer actions"):
        vec.step([0, 99])


def test_a_governor_fault_rolls_back_that_lane_only() -> None:
    """Lanes started one step apart: each lane's injected NaN epoch (3) comes at another step."""
    kw = dict(task="digits", max_epochs=6, torch_threads=1, fault_epochs=(3,))
    vec = EsperVectorEnv(3, autoreset_mode="DISABLED", **kw)
    singles = [EsperEnv(**kw) for _ in range(3)]
    started: dict[int, int] = {}
    rollbacks: dict[int, list[bool]] = {0: [], 1: [], 2: []}
    for t in range(7):
        if t < 3:  # lane t starts now
            mask = [i == t for i in range(3)]
            obs, info = vec.reset(seed=[20 + i for i in range(3)], options={"reset_mask": mask})
            o, _ = singles[t].reset(seed=20 + t)
            np.testing.assert_allclose(obs[t], o, atol=OBS_TOL)
            started[t] = t
        acts = [0, 0, 0]
        obs, r, d, _, info = vec.step(acts)
        for i in started:
            if singles[i]._state is None or singles[i].state.done:
                continue
            o1, r1, d1, _, i1 = singles[i].step(0)
            assert bool(info["_rollback"][i])
            rollbacks[i].append(bool(info["rollback"][i]))
            assert bool(info["rollback"][i]) == i1["rollback"], (t, i)
            assert r[i] == pytest.approx(r1, abs=REWARD_TOL), (t, i)
            np.testing.assert_allclose(obs[i], o1, atol=1e-4)
    # each lane rolled back once, at its own third epoch: steps 1, 2 and 3 of the batch
    assert [rollbacks[i].index(True) for i in range(3)] == [1, 1, 1]
    assert all(sum(v) == 1 for v in rollbacks.values())


def test_an_exploding_learning_rate_ends_that_lane_only() -> None:
    records = [{"name": "calm", "host_lr": 0.01, "max_epochs": 5},
               {"name": "wild", "host_lr": 1e4, "max_epochs": 5}]
    kw = dict(instance_set=records, torch_threads=1)
    vec = EsperVectorEnv(2, autoreset_mode="DISABLED", **kw)
    obs, info = vec.reset(seed=[3, 4], options={"instance": [0, 1]})
    singles = [EsperEnv(**kw), EsperEnv(**kw)]
    for i, env in enumerate(singles):
        o, _ = env.reset(seed=3 + i, options={"instance": i})
        np.testing.assert_allclose(obs[i], o, atol=OBS_TOL)
    wild_events = []
    for _ in range(5):
        obs, r, d, _, info = vec.step([0, 0])
        for i, env in enumerate(singles):
            if env.state.done:
                continue
            o1, r1, d1, _, i1 = env.step(0)
            assert r[i] == pytest.approx(r1, abs=REWARD_TOL) and bool(d[i]) == d1
            assert bool(info["diverged"][i]) == i1["diverged"]
            assert bool(info["rollback"][i]) == i1["rollback"]
            if i == 1:
                wild_events.append(i1["rollback"] or i1["diverged"])
            else:
                assert not i1["rollback"] and not i1["diverged"]
                np.testing.assert_allclose(obs[0], o1, atol=1e-4)
    assert any(wild_events)  # the wild lane's governor acted; the calm lane trained on


def test_disabled_autoreset_resets_the_masked_lanes_with_pinned_instances() -> None:
    """The work queue's interface: lanes reset one by one, each on a chosen (seed, instance)."""
    kw = dict(instance_set="digits-mix", instance_split="test", torch_threads=1)
    vec = EsperVectorEnv(3, autoreset_mode="DISABLED", **kw)
    obs, info = vec.reset(seed=[8, 9, None], options={"reset_mask": [True, True, False],
                                                      "instance": [4, 11, None]})
    assert list(info["_instance"]) == [True, True, False]
    assert list(info["instance"][:2]) == ["test-04", "test-11"]
    single = EsperEnv(**kw)
    o, inf = single.reset(seed=9, options={"instance": 11})
    np.testing.assert_allclose(obs[1], o, atol=OBS_TOL)
    assert vec.action_masks()[2].tolist() == [True] + [False] * (vec.params.codec.n - 1)
    before = obs[0].copy()
    obs, r, d, _, info = vec.step([0, 0, 5])  # lane 2 was never reset: it waits
    assert list(info["_val_acc"]) == [True, True, False] and r[2] == 0.0 and not d[2]
    assert not np.allclose(obs[0], before)
    obs2, info2 = vec.reset(seed=[None, None, 9], options={"reset_mask": [False, False, True],
                                                           "instance": [None, None, 11]})
    np.testing.assert_allclose(obs2[2], o, atol=OBS_TOL)  # the same case in another lane
    np.testing.assert_array_equal(obs2[:2], obs[:2])  # the other lanes are untouched
    with pytest.raises(ConfigError, match="options\\['instance'\\] has 2 entries"):
        vec.reset(seed=1, options={"reset_mask": [True, False, False], "instance": [1, 2]})


def test_the_vector_env_leaves_the_global_rngs_alone() -> None:
    import random

    import torch

    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    vec = EsperVectorEnv(2, **KW)
    vec.reset(seed=1)
    vec.step([grower(vec.template.action_names, m) for m in vec.action_masks()])
    assert random.getstate() == before[0]
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])


def test_snapshots_forks_and_pickles_of_a_batch_are_refused_with_the_way_out() -> None:
    import copy
    import pickle

    vec = EsperVectorEnv(2, task="digits", max_epochs=2)
    vec.reset(seed=0)
    for call in (vec.snapshot, vec.fork, vec.restore):
        with pytest.raises(NotImplementedError, match=r"not supported yet: .*EsperEnv with the "
                                                      "same seed"):
            call()
    with pytest.raises(TypeError, match="cannot be pickled or deep-copied yet"):
        pickle.dumps(vec)
    with pytest.raises(TypeError, match="cannot be pickled or deep-copied yet"):
        copy.deepcopy(vec)


def test_a_k_too_large_for_the_free_memory_is_refused_naming_k_and_the_memory(monkeypatch) -> None:
    from esper_env.nn import batch_trainer

    monkeypatch.setattr(batch_trainer, "available_bytes", lambda device: 10 * 2**20)
    with pytest.raises(ConfigError, match=r"num_envs=64 needs about 0\.\d+ GiB on cpu "
                                          r"\(\d\.\d+ MiB per lane\); 0\.01 GiB is available: "
                                          r"allowed up to num_envs=\d"):
        EsperVectorEnv(64, task="digits")
    EsperVectorEnv(2, task="digits")  # small enough
