from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_kwargs

from agents.evaluate import format_table
from agents.policies import NoGrowthPolicy, RandomPolicy, ScriptedPolicy
from agents.rollout import run_episode
from agents.stats import bootstrap_ci, mean_ci95
from esper_env.core.actions import ActionKind
from esper_env.env import EsperEnv
from esper_env.errors import UnknownBlueprint


@pytest.fixture
def env():
    e = EsperEnv(**tiny_kwargs(n_slots=2))
    yield e
    e.close()


def test_no_growth_policy_always_waits(env):
    result = run_episode(env, NoGrowthPolicy(env), seed=0)
    assert result.params_added == 0
    assert result.lifecycle == {}
    assert result.length == env.config.task.max_epochs - 1


def test_random_policy_only_picks_legal_actions_and_is_seeded(env):
    mask = np.zeros(env.action_space.n, dtype=bool)
    mask[[0, 3]] = True
    picks = {RandomPolicy(env, seed=1).predict(None, action_masks=mask)[0] for _ in range(50)}
    assert picks <= {0, 3}
    a = [RandomPolicy(env, seed=7).predict(None, mask)[0] for _ in range(1)]
    seq1 = [p for p in (RandomPolicy(env, seed=7),) for _ in range(20)]
    draws1 = [seq1[0].predict(None, mask)[0] for _ in range(20)]
    p2 = RandomPolicy(env, seed=7)
    draws2 = [p2.predict(None, mask)[0] for _ in range(20)]
    assert draws1 == draws2 and a[0] in (0, 3)


def test_random_policy_episode_has_no_illegal_actions(env):
    result = run_episode(env, RandomPolicy(env, seed=3), seed=3)
    assert result.illegal_actions == 0


def test_scripted_policy_completes_a_lifecycle(env):
    result = run_episode(env, ScriptedPolicy(env, "conv_light", slot=1), seed=0)
    assert result.lifecycle.get("training", 0) == 1
    assert result.lifecycle.get("fossilized", 0) == 1
    assert result.n_fossilized == 1
    assert result.params_added > 0


def test_scripted_policy_prefers_fossilize_then_germinate(env):
    pol = ScriptedPolicy(env, "norm", slot=0)
    codec = env.codec
    obs = np.zeros(env.observation_space.shape, dtype=np.float32)
    mask = np.zeros(codec.n, dtype=bool)
    mask[0] = True
    assert pol.predict(obs, mask)[0] == 0
    mask[pol.germinate] = True
    assert codec.decode(pol.predict(obs, mask)[0]).kind == ActionKind.GERMINATE
    mask[pol.fossilize] = True
    assert codec.decode(pol.predict(obs, mask)[0]).kind == ActionKind.FOSSILIZE


def test_scripted_policy_earliest_epoch_delays_germination(env):
    late = ScriptedPolicy(env, "norm", earliest_epoch=6)
    assert late.name == "scripted-norm-from6"
    index = env.feature_names.index("epoch_fraction")
    obs = np.zeros(env.observation_space.shape, dtype=np.float32)
    mask = np.zeros(env.codec.n, dtype=bool)
    mask[[0, late.germinate]] = True
    for epoch, want in [(5, 0), (6, late.germinate), (7, late.germinate)]:
        obs[index] = epoch / env.config.task.max_epochs
        assert late.predict(obs, mask)[0] == want
    with pytest.raises(ValueError, match="earliest_epoch=-1"):
        ScriptedPolicy(env, "norm", earliest_epoch=-1)


def test_scripted_policy_late_germinates_at_or_after_its_epoch(env):
    late = ScriptedPolicy(env, "conv_light", earliest_epoch=4)
    obs, info = env.reset(seed=2)
    germinated_at = None
    while True:
        action, _ = late.predict(obs, action_masks=env.action_masks())
        if env.codec.decode(action).kind == ActionKind.GERMINATE:
            germinated_at = info["epoch"]
        obs, _, terminated, _, info = env.step(action)
        if terminated:
            break
    assert germinated_at is not None and germinated_at >= 4


def test_scripted_policy_rejects_unknown_blueprint_with_hint(env):
    with pytest.raises(UnknownBlueprint, match="did you mean 'conv_heavy'"):
        ScriptedPolicy(env, "conv_hevy")
    with pytest.raises(ValueError, match="slot=5"):
        ScriptedPolicy(env, "norm", slot=5)


def test_mean_ci95_is_the_bootstrap_interval_as_plus_minus():
    x = [1.0, 2.0, 3.0, 4.0]
    m, h = mean_ci95(x)
    _, lo, hi = bootstrap_ci(x)
    assert m == pytest.approx(2.5) and lo < m < hi
    assert h == max(hi - m, m - lo) and m - h <= lo and hi <= m + h  # mean ± h contains it
    assert mean_ci95(x) == (m, h)  # seeded: reproducible
    assert 0.9 < h < 1.5  # the bootstrap's 95 % range of the mean of 1..4 (a t interval: 2.05)
    assert mean_ci95([5.0]) == (5.0, 0.0) and mean_ci95([2.0, 2.0]) == (2.0, 0.0)


def test_format_table_has_a_row_per_episode(env):
    results = [run_episode(env, NoGrowthPolicy(env), seed=s) for s in (0, 1)]
    lines = format_table(results).splitlines()
    assert len(lines) == 4 and lines[2].split()[0] == "no-growth"
