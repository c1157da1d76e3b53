"""Property-based tests through the env: bounded finite observations, reward = sum of its terms, and
a Hypothesis state machine whose recorded actions replay to the same episode."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from conftest import tiny_kwargs
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from esper_env.config import ALPHA_SCHEDULES, BLENDS, REWARD_MODES


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 2), action_seed=st.integers(0, 2**32 - 1),
       n_slots=st.integers(1, 3), reward_mode=st.sampled_from(REWARD_MODES),
       blend=st.sampled_from(BLENDS), alpha_schedule=st.sampled_from(ALPHA_SCHEDULES),
       illegal_rate=st.sampled_from([0.0, 0.2]), fault=st.sampled_from([(), (6,)]))
def test_observation_inside_space_and_reward_is_sum_of_terms(
        seed: int, action_seed: int, n_slots: int, reward_mode: str, blend: str,
        alpha_schedule: str, illegal_rate: float, fault: tuple[int, ...]) -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=n_slots, reward_mode=reward_mode,
                                             blend=blend, alpha_schedule=alpha_schedule,
                                             fault_epochs=fault))
    space = env.observation_space
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    assert space.contains(obs) and np.isfinite(obs).all()
    terminated = False
    while not terminated:
        mask = env.unwrapped.action_masks()
        if rng.random() < illegal_rate:
            action = int(rng.integers(env.action_space.n))  # maybe masked out
        else:
            action = int(rng.choice(np.flatnonzero(mask)))
        obs, reward, terminated, truncated, info = env.step(action)
        assert space.contains(obs), obs
        assert np.isfinite(obs).all()
        assert isinstance(reward, float) and math.isfinite(reward)
        assert all(math.isfinite(v) for v in info["reward_terms"].values())
        assert abs(sum(info["reward_terms"].values()) - reward) <= 1e-9
        assert info["illegal_action"] is (not mask[action])
        assert not truncated
    env.close()


class EsperMachine(RuleBasedStateMachine):
    """Drives a 2-slot tiny env with legal actions; replays the recording at teardown."""

    KWARGS = tiny_kwargs(n_slots=2, max_epochs=30)

    def __init__(self) -> None:
        super().__init__()
        self.env: gym.Env | None = None

    @initialize(seed=st.integers(0, 2**31 - 2))
    def start(self, seed: int) -> None:
        self.seed = seed
        self.env = gym.make("Esper-v0", **self.KWARGS)
        obs, info = self.env.reset(seed=seed)
        self.actions: list[int] = []
        self.observations = [obs]
        self.stages = [info["stages"]]
        self.fossilized: set[int] = set()
        self.terminated = False

    def _step(self, action: int) -> None:
        assert self.env is not None
        obs, _, terminated, _, info = self.env.step(action)
        assert info["illegal_action"] is False
        self.actions.append(action)
        self.observations.append(obs)
        self.stages.append(info["stages"])
        self.terminated = terminated

    @precondition(lambda self: self.env is not None and not self.terminated)
    @rule(data=st.data())
    def legal_action(self, data: st.DataObject) -> None:
        assert self.env is not None
        legal = np.flatnonzero(self.env.unwrapped.action_masks()).tolist()
        self._step(data.draw(st.sampled_from(legal), label="action"))

    @precondition(lambda self: self.env is not None and not self.terminated)
    @rule()
    def wait(self) -> None:
        self._step(0)

    @invariant()
    def alphas_in_unit_interval(self) -> None:
        if self.env is not None:
            assert all(0.0 <= s.alpha.alpha <= 1.0 for s in self.env.unwrapped.slots)

    @invariant()
    def fossilized_is_absorbing(self) -> None:
        if self.env is None:
            return
        stages = [s.stage.name for s in self.env.unwrapped.slots]
        for k in self.fossilized:
            assert stages[k] == "FOSSILIZED", (k, stages)
        self.fossilized |= {k for k, name in enumerate(stages) if name == "FOSSILIZED"}

    @invariant()
    def mask_never_all_false(self) -> None:
        if self.env is not None:
            mask = self.env.unwrapped.action_masks()
            assert mask.any() and mask[0]

    @invariant()
    def observation_inside_space(self) -> None:
        if self.env is not None:
            assert self.env.observation_space.contains(self.observations[-1])

    def teardown(self) -> None:
        if self.env is None:
            return
        replay = gym.make("Esper-v0", **self.KWARGS)
        obs, info = replay.reset(seed=self.seed)
        assert np.array_equal(obs, self.observations[0])
        for action, expected_obs, expected_stages in zip(self.actions, self.observations[1:],
                                                         self.stages[1:], strict=True):
            obs, _, _, _, info = replay.step(action)
            assert np.array_equal(obs, expected_obs)
            assert info["stages"] == expected_stages
        replay.close()
        self.env.close()


EsperMachine.TestCase.settings = settings(max_examples=12, stateful_step_count=25, deadline=None)
TestEsperMachine = EsperMachine.TestCase
