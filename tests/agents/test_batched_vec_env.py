"""BatchedVecEnv: the batched vector env under SB3 and sb3-contrib, as they are."""

from __future__ import annotations

import numpy as np
import pytest

from agents.batched_vec_env import BatchedVecEnv, unbatch_info

KW = dict(task="digits", max_epochs=3, torch_threads=1)


def test_a_finished_episode_resets_in_the_same_step_with_its_terminal_observation() -> None:
    venv = BatchedVecEnv(2, **KW)
    venv.seed(3)
    obs = venv.reset()
    assert obs.shape == (2, *venv.observation_space.shape) and len(venv.reset_infos) == 2
    assert venv.reset_infos[0]["epoch"] == 1
    venv.step(np.zeros(2, int))
    obs, rewards, dones, infos = venv.step(np.zeros(2, int))
    assert dones.all() and rewards.dtype == np.float32
    for i, info in enumerate(infos):
        assert "final_test_acc" in info and info["TimeLimit.truncated"] is False
        assert info["terminal_observation"].shape == obs[i].shape
        assert not np.array_equal(info["terminal_observation"], obs[i])
        assert venv.reset_infos[i]["epoch"] == 1 and "final_test_acc" not in venv.reset_infos[i]


def test_masks_per_env_for_get_action_masks_and_maskable_ppo_learns_on_it() -> None:
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.vec_env import VecMonitor, VecNormalize

    venv = VecNormalize(VecMonitor(BatchedVecEnv(2, **KW)), norm_reward=False)
    venv.reset()
    masks = get_action_masks(venv)
    assert masks.shape == (2, venv.action_space.n) and masks[:, 0].all()
    model = MaskablePPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0,
                        device="cpu")
    model.learn(8)
    assert model.num_timesteps == 8
    assert len(model.ep_info_buffer) >= 2  # VecMonitor saw each env's episodes end
    assert all(ep["l"] == 2 for ep in model.ep_info_buffer)
    assert venv.get_attr("num_envs") == [2, 2]
    assert venv.env_method("action_masks", indices=[1])[0].shape == (venv.action_space.n,)


def test_unbatch_info_reads_one_lane_with_its_masks_and_nested_dicts() -> None:
    infos = {"a": np.array([1.0, 2.0]), "_a": np.array([True, False]),
             "terms": {"x": np.array([3, 4]), "_x": np.array([True, True])},
             "_terms": np.array([True, True])}
    assert unbatch_info(infos, 0) == {"a": 1.0, "terms": {"x": 3}}
    assert unbatch_info(infos, 1) == {"terms": {"x": 4}}
    assert isinstance(unbatch_info(infos, 0)["a"], float)


def test_seeding_gives_env_i_the_seed_plus_i() -> None:
    a, b = BatchedVecEnv(2, **KW), BatchedVecEnv(1, **KW)
    assert a.seed(10) == [10, 11]
    b.seed(11)
    np.testing.assert_allclose(a.reset()[1], b.reset()[0], atol=1e-5)
    with pytest.raises(Exception, match="num_envs=0"):
        BatchedVecEnv(0)


def test_run_batched_plays_one_episode_per_lane_like_run_episode() -> None:
    from agents.policies import make_baseline
    from agents.rollout import run_batched, run_episode
    from esper_env.env import EsperEnv
    from esper_env.vector import EsperVectorEnv

    kw = dict(task="digits", max_epochs=6, germination_gate=False, torch_threads=1)
    venv = EsperVectorEnv(2, **kw)
    names = ["no-growth", "scripted-conv_light"]
    results = run_batched(venv, [make_baseline(n, venv.template) for n in names], [3, 4])
    for r, name, seed in zip(results, names, (3, 4), strict=True):
        env = EsperEnv(**kw)
        one = run_episode(env, make_baseline(name, env), seed)
        assert (r.seed, r.length, r.n_fossilized, r.lifecycle) == (seed, one.length,
                                                                  one.n_fossilized, one.lifecycle)
        assert r.final_test_acc == pytest.approx(one.final_test_acc, abs=1e-3)
        assert r.episode_return == pytest.approx(one.episode_return, abs=1e-2)
    assert results[1].lifecycle.get("blending") == 1  # the scripted lane grew a seed
    with pytest.raises(ValueError, match="1 policies and 2 seeds for 2 lanes"):
        run_batched(venv, [make_baseline("no-growth", venv.template)], [1, 2])
    same = EsperVectorEnv(1, autoreset_mode="SameStep", **kw)
    with pytest.raises(ValueError, match="needs the NEXT_STEP autoreset mode"):
        run_batched(same, [make_baseline("no-growth", same.template)], [1])


def test_mask_observation_appends_each_lanes_mask_and_the_final_states_mask() -> None:
    venv = BatchedVecEnv(2, mask_observation=True, task="digits", max_epochs=2, torch_threads=1)
    n = venv.action_space.n
    obs = venv.reset()
    assert obs.shape == (2, venv.venv.single_observation_space.shape[0] + n)
    np.testing.assert_array_equal(obs[:, -n:], venv.action_masks().astype(np.float32))
    assert venv.observation_space.contains(obs[0])
    for _ in range(3):  # 2 epochs: reset's and at most two steps
        obs, _, dones, infos = venv.step(np.array([0, 0]))
        if dones.all():
            break
    assert dones.all()
    for info in infos:
        final = info["terminal_observation"]
        np.testing.assert_array_equal(final[-n:], info["action_mask"].astype(np.float32))
    np.testing.assert_array_equal(obs[:, -n:], venv.action_masks().astype(np.float32))


def test_the_curriculum_picks_each_lanes_blueprint_and_learns_from_every_lane() -> None:
    from agents.batched_vec_env import BatchedCurriculumVecEnv
    from agents.curriculum import BlueprintCurriculum

    kw = dict(task="digits", max_epochs=6, torch_threads=1, min_germinate_epoch=1,
              germination_gate=False, gates={"min_training_epochs": 1})
    base = BatchedVecEnv(2, **kw)
    arms = tuple(base.venv.template.blueprints)
    cur = BlueprintCurriculum(arms, 1.4, [i / (len(arms) - 1) for i in range(len(arms))], 0.0, 0)
    venv = BatchedCurriculumVecEnv(base, cur, mask_observation=True)
    obs = venv.reset()
    n = venv.action_space.n
    assert n == 4 and obs.shape[1] == base.observation_space.shape[0] + n
    np.testing.assert_array_equal(obs[:, -n:], venv.action_masks().astype(np.float32))
    assert venv.env_method("action_masks")[0].shape == (n,)
    assert venv.get_attr("curriculum") == [cur, cur]
    chosen, tracked = [], 0
    for _ in range(6):
        masks = venv.action_masks()
        acts = [1 if masks[i][1] else (2 if masks[i][2] else 0) for i in range(2)]
        obs, _, dones, infos = venv.step(np.array(acts))
        chosen += [info["curriculum_choice"] for info in infos if "curriculum_choice" in info]
        stats = cur.stats()
        tracked = max(tracked, sum(a["pending"] + a["pulls"] for a in stats.values()))
        if dones.any():
            break
    assert len(chosen) >= 2 and set(chosen) <= set(arms)  # each lane's germination asked it
    assert tracked >= 2  # one shared curriculum follows both lanes' seeds
