"""Prioritized replay: sum tree, prioritized buffer, PER-DQN."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from conftest import tiny_kwargs
from gymnasium import spaces
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from stable_baselines3.common.vec_env import DummyVecEnv

import esper_env  # noqa: F401
from agents.dqn_per import PERDQN
from agents.per_buffer import PrioritizedReplayBuffer, SumTree

OBS = spaces.Box(-10, 10, (2,), np.float32)
ACT = spaces.Discrete(3)


def _check_tree(tree: SumTree) -> None:
    assert tree.total == pytest.approx(tree.leaves.sum(), rel=1e-12, abs=1e-12)
    size = len(tree.nodes) // 2
    for i in range(1, size):
        assert tree.nodes[i] == pytest.approx(tree.nodes[2 * i] + tree.nodes[2 * i + 1], rel=1e-12, abs=1e-12)


@given(st.integers(1, 33), st.lists(st.tuples(st.integers(0, 1000), st.floats(0, 1e3)), max_size=60))
def test_sum_tree_root_is_the_sum_of_the_leaves_after_any_updates(capacity, ops):
    tree = SumTree(capacity)
    expected = np.zeros(capacity)
    for index, value in ops:
        tree.update(np.array([index % capacity]), np.array([value]))
        expected[index % capacity] = value
        _check_tree(tree)
    np.testing.assert_allclose(tree.leaves, expected)


def test_sum_tree_batch_update_with_duplicates_keeps_the_last_value():
    tree = SumTree(5)
    tree.update(np.array([1, 3, 1]), np.array([2.0, 4.0, 7.0]))
    assert tree.leaves.tolist() == [0.0, 7.0, 0.0, 4.0, 0.0] and tree.total == 11.0
    _check_tree(tree)


def test_find_prefix_sum_on_a_hand_computed_tree():
    tree = SumTree(4)
    tree.update(np.arange(4), np.array([1.0, 0.0, 2.0, 3.0]))   # cumulative: [0,1) [1,1) [1,3) [3,6)
    got = tree.find_prefix_sum(np.array([0.0, 0.99, 1.0, 2.5, 3.0, 5.999]))
    assert got.tolist() == [0, 0, 2, 2, 3, 3]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_sum_tree_rejects_invalid_priorities(bad):
    with pytest.raises(ValueError, match="priority"):
        SumTree(3).update(np.array([0]), np.array([bad]))


def _filled(n=8, n_envs=1, seed=0, capacity=None, **kw) -> PrioritizedReplayBuffer:
    buf = PrioritizedReplayBuffer((capacity or n) * n_envs, OBS, ACT, device="cpu", n_envs=n_envs,
                                  seed=seed, **kw)
    for i in range(n):
        obs = np.array([[i, e] for e in range(n_envs)], dtype=np.float32)
        buf.add(obs, obs + 1, np.full((n_envs, 1), i % 3), np.full(n_envs, float(i)),
                np.zeros(n_envs), [{} for _ in range(n_envs)])
    return buf


def test_sampling_frequencies_track_priorities():
    buf = _filled(8, alpha=0.6)
    priorities = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=float)
    buf.update_priorities(np.arange(8), priorities - buf.eps)
    counts = np.zeros(8)
    for _ in range(500):
        counts += np.bincount(buf.sample(32).indices, minlength=8)
    expected = priorities ** 0.6 / (priorities ** 0.6).sum() * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 0.001
    # and uniform sampling would be rejected outright
    assert stats.chisquare(counts, np.full(8, counts.sum() / 8)).pvalue < 1e-6


def test_importance_weights_lie_in_0_1_and_favour_rare_transitions():
    buf = _filled(8)
    buf.update_priorities(np.arange(8), np.array([0.1, 1, 1, 1, 1, 1, 1, 10.0]))
    data = buf.sample(64)
    w = data.weights.numpy().ravel()
    assert ((w > 0) & (w <= 1)).all() and w.max() == pytest.approx(1.0)
    by_index = dict(zip(data.indices.tolist(), w.tolist(), strict=True))
    if 0 in by_index and 7 in by_index:
        assert by_index[0] > by_index[7]
    assert data.weights.shape == (64, 1)


def test_beta_anneals_to_final_beta():
    buf = _filled(4, beta=0.4, final_beta=1.0)
    buf.anneal_beta(0.0)
    assert buf.beta == pytest.approx(0.4)
    buf.anneal_beta(0.5)
    assert buf.beta == pytest.approx(0.7)
    buf.anneal_beta(1.0)
    assert buf.beta == pytest.approx(1.0)


def test_same_seed_same_samples_and_the_global_rng_is_untouched():
    state = np.random.get_state()

    def draw(seed):
        buf = _filled(seed=seed)
        buf.update_priorities(np.arange(8), np.array([9.0, 1, 1, 1, 1, 1, 1, 9]))
        return np.concatenate([buf.sample(16).indices for _ in range(5)])

    assert np.array_equal(draw(3), draw(3))
    assert not np.array_equal(draw(4), draw(3))
    after = np.random.get_state()
    assert np.array_equal(after[1], state[1]) and after[2] == state[2]


def test_new_transitions_get_the_max_priority():
    buf = _filled(4, capacity=8)
    buf.update_priorities(np.array([0]), np.array([5.0]))
    obs = np.zeros((1, 2), np.float32)
    buf.add(obs, obs, np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])
    assert buf.tree[4] == pytest.approx((5.0 + buf.eps) ** buf.alpha)


def test_two_envs_store_and_sample_their_own_transitions():
    buf = _filled(6, n_envs=2)
    data = buf.sample(40)
    pos, env = np.divmod(data.indices, 2)
    obs = data.observations.numpy()
    np.testing.assert_array_equal(obs[:, 0], pos)
    np.testing.assert_array_equal(obs[:, 1], env)
    np.testing.assert_array_equal(data.rewards.numpy().ravel(), pos)


def test_invalid_settings_are_named():
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        PrioritizedReplayBuffer(8, OBS, ACT, optimize_memory_usage=True, handle_timeout_termination=False)
    with pytest.raises(ValueError, match="beta=1.5"):
        PrioritizedReplayBuffer(8, OBS, ACT, beta=1.5)
    with pytest.raises(ValueError, match="empty"):
        PrioritizedReplayBuffer(8, OBS, ACT).sample(4)
    with pytest.raises(ValueError, match="PrioritizedReplayBuffer"):
        from stable_baselines3.common.buffers import ReplayBuffer

        PERDQN("MlpPolicy", gym.make("CartPole-v1"), replay_buffer_class=ReplayBuffer)


def _tiny_venv():
    return DummyVecEnv([lambda: gym.make("Esper-v0", **tiny_kwargs())])


def test_per_dqn_trains_on_esper_and_changes_priorities(tmp_path):
    model = PERDQN("MlpPolicy", _tiny_venv(), learning_starts=30, batch_size=8, train_freq=1,
                   buffer_size=500, seed=0, policy_kwargs={"net_arch": [16]})
    model.learn(40)
    before = model.replay_buffer.tree.leaves.copy()
    model.learn(120, reset_num_timesteps=False)
    assert model.num_timesteps >= 160
    after = model.replay_buffer.tree.leaves
    n = model.replay_buffer.pos
    assert not np.allclose(before[:40], after[:40]), "training must write TD priorities back"
    assert np.isfinite(after[:n]).all() and (after[:n] > 0).all()
    assert 0.4 < model.replay_buffer.beta <= 1.0
    model.save(tmp_path / "per")
    loaded = PERDQN.load(tmp_path / "per")
    obs = np.stack([_tiny_venv().reset()[0] for _ in range(1)])[0]
    assert np.array_equal(model.predict(obs, deterministic=True)[0],
                          loaded.predict(obs, deterministic=True)[0])


def test_per_dqn_loss_applies_the_importance_weights():
    model = PERDQN("MlpPolicy", _tiny_venv(), learning_starts=100, batch_size=8, seed=0,
                   policy_kwargs={"net_arch": [8]})
    model.learn(20)                                   # collect only: no optimiser state yet
    buf = model.replay_buffer
    captured = {}
    original = buf.sample

    def spy(batch_size, env=None):
        data = original(batch_size, env)
        captured["data"] = data._replace(weights=th.zeros_like(data.weights))
        return captured["data"]

    buf.sample = spy
    params = [p.detach().clone() for p in model.q_net.parameters()]
    model.train(gradient_steps=1, batch_size=8)
    # zero weights -> zero loss -> no gradient: Adam leaves the parameters unchanged
    assert all(th.equal(a, b) for a, b in zip(params, model.q_net.parameters(), strict=True))
