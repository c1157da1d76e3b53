"""Prioritized replay (Schaul et al. 2016): sum tree, prioritized buffer, PER-DQN."""

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
from stable_baselines3.common.buffers import ReplayBuffer

import esper_env  # noqa: F401
from agents.dqn_per import PERDQN
from agents.per_buffer import PrioritizedReplayBuffer, PrioritizedReplayBufferSamples, SumTree

OBS = spaces.Box(-100, 100, (2,), np.float32)
ACT = spaces.Discrete(3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _check_tree(tree: SumTree) -> None:
    assert np.isclose(tree.total, tree.leaves.sum(), rtol=1e-12, atol=0)
    internal = np.arange(1, len(tree.nodes) // 2)
    np.testing.assert_allclose(tree.nodes[internal], tree.nodes[2 * internal] + tree.nodes[2 * internal + 1],
                               rtol=1e-12, atol=0)


# ---------------------------------------------------------------- SumTree

@given(st.integers(1, 33),
       st.lists(st.lists(st.tuples(st.integers(0, 1000), st.floats(1e-6, 1e6)), min_size=1, max_size=6),
                max_size=30))
def test_sum_tree_root_and_internal_nodes_are_sums_after_any_updates(capacity, batches):
    tree = SumTree(capacity)
    expected = np.zeros(capacity)
    for batch in batches:
        idx = np.array([i % capacity for i, _ in batch])
        val = np.array([v for _, v in batch])
        tree.update(idx, val)
        for i, v in zip(idx, val, strict=True):   # sequential semantics: the last write wins
            expected[i] = v
        _check_tree(tree)
    np.testing.assert_array_equal(tree.leaves, expected)


@given(st.integers(1, 2), st.integers(1, 6),
       st.lists(st.one_of(st.just("add"), st.lists(st.floats(0, 1e3), min_size=1, max_size=4)), max_size=40))
def test_buffer_tree_stays_consistent_under_adds_and_priority_updates(n_envs, rows, ops):
    buf = PrioritizedReplayBuffer(rows * n_envs, OBS, ACT, device="cpu", n_envs=n_envs, seed=0)
    obs = np.zeros((n_envs, 2), np.float32)
    for op in ops:
        if op == "add":
            buf.add(obs, obs, np.zeros((n_envs, 1)), np.zeros(n_envs), np.zeros(n_envs), [{}] * n_envs)
            new = (buf.pos - 1) % buf.buffer_size * n_envs + np.arange(n_envs)
            np.testing.assert_allclose(buf.tree[new], buf.max_priority ** buf.alpha)
        elif buf.n_stored:
            idx = np.arange(len(op)) % buf.n_stored
            buf.update_priorities(idx, np.array(op))
            assert buf.max_priority >= max(op)
        _check_tree(buf.tree)
        assert (buf.tree.leaves[:buf.n_stored] > 0).all() and (buf.tree.leaves[buf.n_stored:] == 0).all()


def test_sum_tree_batch_update_with_duplicates_keeps_the_last_value():
    tree = SumTree(5)
    tree.update(np.array([1, 3, 1]), np.array([2.0, 4.0, 7.0]))
    assert tree.leaves.tolist() == [0.0, 7.0, 0.0, 4.0, 0.0] and tree.total == 11.0
    _check_tree(tree)


def test_find_prefix_sum_on_hand_computed_trees():
    tree = SumTree(4)
    tree.update(np.arange(4), np.array([1.0, 0.5, 2.0, 3.0]))   # intervals [0,1) [1,1.5) [1.5,3.5) [3.5,6.5)
    got = tree.find_prefix_sum(np.array([0.0, 0.99, 1.0, 1.49, 1.5, 3.49, 3.5, 6.49, 6.5]))
    assert got.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3]
    partial = SumTree(7)                                          # leaves 3..6 empty (priority 0)
    partial.update(np.arange(3), np.array([1.0, 2.0, 3.0]))
    got = partial.find_prefix_sum(np.array([0.5, 1.0, 2.999, 3.0, 5.9, 6.0, 7.0]))   # 6.0 = total, 7 > total
    assert got.tolist() == [0, 1, 1, 2, 2, 2, 2]
    one = SumTree(1)
    one.update(np.array([0]), np.array([2.0]))
    assert one.total == 2.0 and one.find_prefix_sum(np.array([0.0, 1.9])).tolist() == [0, 0]


@pytest.mark.parametrize("bad", [-1.0, 0.0, float("nan"), float("inf")])
def test_sum_tree_rejects_invalid_priorities_naming_the_value(bad):
    with pytest.raises(ValueError, match=f"priority {bad!r} \\(leaf 1\\)"):
        SumTree(3).update(np.array([0, 1]), np.array([1.0, bad]))


# ---------------------------------------------------------------- PrioritizedReplayBuffer

def _filled(n=8, n_envs=1, seed=0, capacity=None, **kw) -> PrioritizedReplayBuffer:
    """A buffer holding ``n`` rows; row i of env e has obs (i, e), reward i, action i % 3."""
    buf = PrioritizedReplayBuffer((capacity or n) * n_envs, OBS, ACT, device="cpu", n_envs=n_envs,
                                  seed=seed, **kw)
    for i in range(n):
        obs = np.array([[i, e] for e in range(n_envs)], dtype=np.float32)
        buf.add(obs, obs + 1, np.full((n_envs, 1), i % 3), np.full(n_envs, float(i)),
                np.zeros(n_envs), [{} for _ in range(n_envs)])
    return buf


def test_samples_have_sb3_fields_shapes_and_dtypes():
    data = _filled(8).sample(5)
    assert isinstance(data, PrioritizedReplayBufferSamples) and data.discounts is None
    assert data.observations.shape == (5, 2) and data.actions.shape == (5, 1) and data.rewards.shape == (5, 1)
    assert data.weights.shape == (5, 1) and data.weights.dtype == th.float32 and data.indices.shape == (5,)
    np.testing.assert_array_equal(data.rewards.numpy().ravel(), data.indices)   # reward i at leaf i
    np.testing.assert_array_equal(data.next_observations.numpy(), data.observations.numpy() + 1)


def test_sampling_frequencies_match_p_alpha():
    buf = _filled(8, alpha=0.6)
    priorities = np.arange(1.0, 9.0)
    buf.update_priorities(np.arange(8), priorities - buf.eps)
    counts = np.bincount(np.concatenate([buf.sample(32).indices for _ in range(500)]), minlength=8)
    expected = priorities ** 0.6 / (priorities ** 0.6).sum() * counts.sum()
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    assert stats.chisquare(counts, np.full(8, counts.sum() / 8)).pvalue < 1e-6   # uniform is rejected


def test_only_filled_leaves_are_sampled_and_new_ones_get_the_max_priority():
    buf = _filled(3, capacity=8)
    assert set(np.concatenate([buf.sample(16).indices for _ in range(50)])) == {0, 1, 2}
    buf.update_priorities(np.array([0]), np.array([5.0]))
    obs = np.zeros((1, 2), np.float32)
    buf.add(obs, obs, np.zeros((1, 1)), np.zeros(1), np.zeros(1), [{}])
    assert buf.max_priority == pytest.approx(5.0 + buf.eps)
    assert buf.tree[3] == pytest.approx((5.0 + buf.eps) ** buf.alpha)
    buf.reset()
    assert buf.n_stored == 0 and buf.tree.total == 0 and buf.max_priority == 1.0


def test_importance_weights_follow_the_formula_lie_in_0_1_and_favour_rare_transitions():
    buf = _filled(8, beta=0.5)
    buf.update_priorities(np.arange(8), np.array([0.1, 1, 1, 1, 1, 1, 1, 10.0]))
    data = buf.sample(64)
    w = data.weights.numpy().ravel()
    assert ((w > 0) & (w <= 1)).all() and w.max() == 1.0
    probs = buf.tree[data.indices] / buf.tree.total
    raw = (8 * probs) ** -0.5
    np.testing.assert_allclose(w, raw / raw.max(), rtol=1e-6)
    order = np.argsort(probs)                      # rarer transition => larger (or equal) weight
    assert (np.diff(w[order]) <= 1e-7).all()


def test_beta_anneals_linearly_to_final_beta():
    buf = _filled(4, beta=0.4, final_beta=1.0)
    for progress, beta in [(0.0, 0.4), (0.5, 0.7), (1.0, 1.0), (2.0, 1.0), (-1.0, 0.4)]:
        buf.anneal_beta(progress)
        assert buf.beta == pytest.approx(beta)


def test_same_seed_same_samples_and_the_global_rngs_are_untouched(rng_guard):
    state = np.random.get_state()

    def draw(seed):
        buf = _filled(seed=seed, n_envs=2)
        buf.update_priorities(np.arange(16), np.linspace(0.1, 3, 16))
        buf._get_samples(np.zeros(4, dtype=int))   # env indices from the buffer's own RNG
        return np.concatenate([buf.sample(16).indices for _ in range(5)])

    assert np.array_equal(draw(3), draw(3))
    assert not np.array_equal(draw(4), draw(3))
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]


def test_two_envs_store_and_sample_their_own_transitions():
    buf = _filled(6, n_envs=2)
    assert buf.buffer_size == 6 and buf.n_stored == 12
    buf.update_priorities(np.array([3]), np.array([50.0]))   # row 1, env 1
    data = buf.sample(60)
    pos, env = np.divmod(data.indices, 2)
    obs = data.observations.numpy()
    np.testing.assert_array_equal(obs[:, 0], pos)
    np.testing.assert_array_equal(obs[:, 1], env)
    np.testing.assert_array_equal(data.rewards.numpy().ravel(), pos)
    assert set(data.indices) >= {0, 1, 3, 11} and (data.indices == 3).mean() > 0.3


def test_timeouts_are_not_terminal_with_handle_timeout_termination():
    for handle, expected_done in [(True, 0.0), (False, 1.0)]:
        buf = PrioritizedReplayBuffer(4, OBS, ACT, device="cpu", seed=0, handle_timeout_termination=handle)
        obs = np.zeros((1, 2), np.float32)
        buf.add(obs, obs, np.zeros((1, 1)), np.zeros(1), np.ones(1), [{"TimeLimit.truncated": True}])
        assert buf.sample(2).dones.numpy().ravel().tolist() == [expected_done] * 2


def test_invalid_settings_are_rejected_with_their_names():
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        PrioritizedReplayBuffer(8, OBS, ACT, optimize_memory_usage=True, handle_timeout_termination=False)
    with pytest.raises(ValueError, match="beta=1.5"):
        PrioritizedReplayBuffer(8, OBS, ACT, beta=1.5)
    with pytest.raises(ValueError, match="eps=0"):
        PrioritizedReplayBuffer(8, OBS, ACT, eps=0)
    with pytest.raises(ValueError, match="empty"):
        PrioritizedReplayBuffer(8, OBS, ACT).sample(4)
    with pytest.raises(ValueError, match="finite"):
        _filled(4).update_priorities(np.array([0]), np.array([np.nan]))


# ---------------------------------------------------------------- PERDQN

def _esper() -> gym.Env:
    return gym.make("Esper-v0", **tiny_kwargs(torch_threads=1))


def _model(**kw) -> PERDQN:
    kw = {"learning_starts": 20, "batch_size": 8, "train_freq": 1, "buffer_size": 500, "seed": 0,
          "policy_kwargs": {"net_arch": [16]}, **kw}
    return PERDQN("MlpPolicy", _esper(), **kw)


def test_per_dqn_rejects_other_buffers_and_n_step_returns():
    with pytest.raises(ValueError, match="PrioritizedReplayBuffer"):
        _model(replay_buffer_class=ReplayBuffer)
    with pytest.raises(ValueError, match="n_steps=3"):
        _model(n_steps=3)
    model = _model()
    model.replay_buffer = ReplayBuffer(10, model.observation_space, model.action_space)
    with pytest.raises(TypeError, match="PrioritizedReplayBuffer"):
        model.train(1, 8)


def test_a_training_step_writes_td_priorities_back():
    model = _model(learning_starts=30, replay_buffer_kwargs={"alpha": 0.7})
    assert model.replay_buffer.alpha == 0.7 and model.replay_buffer.rng is not None
    model.learn(30)                                  # collection only: every leaf at priority 1
    buf = model.replay_buffer
    before = buf.tree.leaves[:30].copy()
    np.testing.assert_array_equal(before, 1.0)
    model.train(gradient_steps=1, batch_size=8)
    changed = np.flatnonzero(buf.tree.leaves[:30] != before)
    assert 0 < len(changed) <= 8 and buf.max_priority >= 1.0
    assert model.logger.name_to_value["train/beta"] == pytest.approx(1.0)   # progress 1 after learn(30)


def test_per_dqn_learns_on_esper_and_survives_save_load(tmp_path):
    model = _model()
    model.learn(200)
    assert model.num_timesteps >= 200 and model._n_updates >= 150
    buf = model.replay_buffer
    assert buf.beta > 0.95 and np.isfinite(buf.tree.leaves[:buf.n_stored]).all()
    model.train(gradient_steps=2, batch_size=8)
    assert np.isfinite(model.logger.name_to_value["train/loss"])
    assert np.isfinite(model.logger.name_to_value["train/mean_abs_td"])
    model.save(tmp_path / "per")
    loaded = PERDQN.load(tmp_path / "per")
    assert isinstance(loaded.replay_buffer, PrioritizedReplayBuffer)
    assert loaded.replay_buffer_kwargs["seed"] == 0
    env = _esper()
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)] + [env.step(a)[0] for a in range(3)])
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0],
                                  loaded.predict(obs, deterministic=True)[0])


def test_a_seeded_per_dqn_is_reproducible():
    runs = []
    for _ in range(2):
        model = _model()
        model.learn(40)
        params = th.cat([p.flatten() for p in model.q_net.parameters()])
        runs.append((model.replay_buffer.tree.leaves, params))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert th.equal(runs[0][1], runs[1][1])


def test_per_dqn_loss_applies_the_importance_weights():
    model = _model(learning_starts=100)
    model.learn(20)                                   # collect only: no optimiser state yet
    buf = model.replay_buffer
    original = buf.sample

    def zero_weights(batch_size, env=None):
        data = original(batch_size, env)
        return data._replace(weights=th.zeros_like(data.weights))

    buf.sample = zero_weights
    params = [p.detach().clone() for p in model.q_net.parameters()]
    model.train(gradient_steps=1, batch_size=8)
    # zero weights -> zero loss -> zero gradient: Adam leaves the parameters unchanged
    assert all(th.equal(a, b) for a, b in zip(params, model.q_net.parameters(), strict=True))
    assert model.logger.name_to_value["train/loss"] == 0.0
