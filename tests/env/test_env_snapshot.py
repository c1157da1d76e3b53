"""snapshot() / restore() / fork(), copy.deepcopy and pickle of a mid-episode env (issue: record,
replay and fork). The same actions from the same point must give the identical continuation."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs
from gymnasium.error import ResetNeeded

from esper_env.core.episode import EPISODE_VERSION, EpisodeState
from esper_env.env import EsperEnv
from esper_env.snapshot import (
    SNAPSHOT_FORMAT,
    STATE_FIELDS,
    EnvSnapshot,
    EpisodeSnapshots,
    SnapshotError,
    state_digest,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Germinate into both slots, let them train and blend, fossilize one when allowed, cull the other.
SCRIPT = ["GERMINATE_conv_light@0", "GERMINATE_norm@1", "WAIT", "WAIT", "WAIT", "FOSSILIZE@0",
          "CULL@1", "WAIT", "GERMINATE_conv_heavy@1", "WAIT", "WAIT"]


def _actions(env: gym.Env, names: list[str]) -> list[int]:
    known = env.unwrapped.action_names
    return [known.index(n) for n in names]


def _play(env: gym.Env, actions: list[int]) -> list[str]:
    """Step through ``actions`` (masked-out ones become WAIT); a text trace of every result."""
    trace = []
    for a in actions:
        if not env.unwrapped.action_masks()[a]:
            a = 0
        obs, reward, terminated, truncated, info = env.step(a)
        info = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in info.items()}
        trace.append(repr((obs.tolist(), reward, terminated, truncated, sorted(info.items()))))
        if terminated:
            break
    return trace


def _digest(env: gym.Env) -> str:
    return env.unwrapped.snapshot().digest()


@pytest.fixture(params=["contribution", "delta"])
def env(request: pytest.FixtureRequest) -> gym.Env:
    e = gym.make("Esper-v0", **tiny_kwargs(n_slots=2, reward_mode=request.param))
    e.reset(seed=3)
    return e


def test_restore_then_same_actions_gives_the_identical_continuation(env: gym.Env) -> None:
    actions = _actions(env, SCRIPT)
    _play(env, actions[:3])  # both seeds live
    snap = env.unwrapped.snapshot()
    first = _play(env, actions[3:])
    end = _digest(env)
    assert len(first) == len(actions) - 3
    for _ in range(2):  # a snapshot can be restored any number of times
        env.unwrapped.restore(snap)
        assert _play(env, actions[3:]) == first
        assert _digest(env) == end


def test_snapshot_is_independent_of_later_steps(env: gym.Env) -> None:
    env.step(_actions(env, ["GERMINATE_conv_light@0"])[0])
    snap = env.unwrapped.snapshot()
    before = snap.digest()
    assert before == _digest(env)
    _play(env, [0, 0, 0])
    assert snap.digest() == before != _digest(env)
    assert snap.epoch == 2


def test_fork_is_independent_and_continues_identically(env: gym.Env) -> None:
    actions = _actions(env, SCRIPT)
    _play(env, actions[:4])
    fork = env.unwrapped.fork()
    assert isinstance(fork, EsperEnv) and fork is not env.unwrapped
    assert fork.config == env.unwrapped.config
    original = _digest(env)
    assert _digest(fork) == original
    branch = _play(fork, [0] * 3)  # another branch: the original does not move
    assert len(branch) == 3 and _digest(fork) != original
    assert _digest(env) == original
    reference = env.unwrapped.fork()
    assert _play(env, actions[4:]) == _play(reference, actions[4:])


def test_fork_and_original_agree_step_by_step(env: gym.Env) -> None:
    actions = _actions(env, SCRIPT)
    _play(env, actions[:2])
    fork = env.unwrapped.fork()
    assert _play(fork, actions[2:]) == _play(env, actions[2:])
    assert _digest(fork) == _digest(env)


def test_deepcopy_of_a_wrapped_env_mid_episode_steps_identically(env: gym.Env) -> None:
    actions = _actions(env, SCRIPT)
    _play(env, actions[:3])
    twin = copy.deepcopy(env)
    assert isinstance(twin, gym.Wrapper) and twin.unwrapped is not env.unwrapped
    assert twin.spec == env.spec
    assert _play(twin, actions[3:]) == _play(env, actions[3:])


@pytest.mark.parametrize("unwrap", [True, False])
def test_pickle_mid_episode_continues_identically(env: gym.Env, unwrap: bool) -> None:
    actions = _actions(env, SCRIPT)
    _play(env, actions[:3])
    target = env.unwrapped if unwrap else env
    blob = pickle.dumps(target)
    restored = pickle.loads(blob)
    assert restored.unwrapped.config == env.unwrapped.config
    assert _digest(restored) == _digest(env)
    assert _play(restored, actions[3:]) == _play(env, actions[3:])


def test_pickle_carries_the_dataset_as_a_recipe_not_as_tensors() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(task="digits", max_epochs=4)).unwrapped
    env.reset(seed=0)
    data = env.trainer.data
    data_bytes = sum(t.numel() * t.element_size() for t in
                     (data.train_x, data.train_y, data.val_x, data.val_y, data.test_x, data.test_y))
    blob = pickle.dumps(env)
    assert len(blob) < data_bytes / 4
    restored = pickle.loads(blob)
    assert restored.trainer.data is not data
    assert all(np.array_equal(getattr(restored.trainer.data, f).numpy(), getattr(data, f).numpy())
               for f in ("train_x", "train_y", "val_x", "test_y"))
    assert _play(restored, [0, 0]) == _play(env, [0, 0])


def test_forks_share_the_dataset_tensors(env: gym.Env) -> None:
    fork = env.unwrapped.fork()
    assert fork.trainer.data is env.unwrapped.trainer.data
    assert fork.trainer.model is not env.unwrapped.trainer.model


def test_fork_of_fresh_env_needs_reset_and_pickle_keeps_config() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2, blend="multiply")).unwrapped
    for other in (env.fork(), pickle.loads(pickle.dumps(env))):
        assert other.config == env.config
        with pytest.raises(ResetNeeded):
            other.step(0)
    with pytest.raises(ResetNeeded, match="snapshot"):
        env.snapshot()


# Where each part of a snapshot lives in the env (``_params`` is derived from ``_cfg``).
HELD_BY = EpisodeSnapshots.HELD_BY


def test_snapshot_fields_cover_every_episode_attribute() -> None:
    """An episode attribute that the snapshot forgot would silently not be restored."""
    env = gym.make("Esper-v0", **tiny_kwargs(n_slots=2)).unwrapped
    built = dict(vars(env))
    env.reset(seed=0)
    _play(env, _actions(env, SCRIPT))
    changed = {k for k, v in vars(env).items() if k not in built or built[k] is not v}
    assert set(HELD_BY) == set(STATE_FIELDS)
    assert changed <= set(HELD_BY.values()) | {"_params"}
    assert {"_state", "_trainer", "_obs", "_info", "_np_random"} <= changed
    assert isinstance(env.state, EpisodeState) and env.state.epoch == len(SCRIPT) + 1


def test_snapshot_restore_fork_leave_global_rngs_alone(env: gym.Env, rng_guard) -> None:
    snap = env.unwrapped.snapshot()
    env.unwrapped.fork()
    env.unwrapped.restore(snap)
    pickle.loads(pickle.dumps(env))


def test_restore_from_another_env_with_the_same_config() -> None:
    a = gym.make("Esper-v0", **tiny_kwargs(n_slots=2))
    b = gym.make("Esper-v0", **tiny_kwargs(n_slots=2))
    a.reset(seed=1)
    _play(a, _actions(a, SCRIPT[:2]))
    b.unwrapped.restore(a.unwrapped.snapshot())  # b was never reset (gym's OrderEnforcing would
    assert _play(b.unwrapped, [0, 0]) == _play(a, [0, 0])  # insist on a reset of the wrapper)


def test_digest_changes_with_any_part_of_the_state(env: gym.Env) -> None:
    snap = env.unwrapped.snapshot()
    base = snap.digest()
    state = dict(snap.state)
    rng = copy.deepcopy(state["np_random"])
    rng.random()
    trainer = copy.deepcopy(state["trainer"])
    trainer.generator.manual_seed(12345)
    model = copy.deepcopy(state["trainer"])
    next(model.model.parameters()).data[0] += 1e-6
    episode = state["episode"]
    for name, value in (("np_random", rng), ("trainer", trainer), ("trainer", model),
                        ("episode", dataclasses.replace(episode, epoch=episode.epoch + 1)),
                        ("episode", dataclasses.replace(episode, value_added=0.5))):
        assert state_digest({**state, name: value}) != base, name
    assert state_digest(dict(state)) == base


# -- malformed snapshots ----------------------------------------------------------------------------
def _bad(snap: EnvSnapshot, **changes: object) -> EnvSnapshot:
    return dataclasses.replace(snap, **changes)


def test_malformed_snapshots_fail_fast_and_change_nothing(env: gym.Env) -> None:
    unwrapped = env.unwrapped
    _play(env, [0])
    snap = unwrapped.snapshot()
    _play(env, [0])
    before = _digest(env)
    state = dict(snap.state)
    missing = {k: v for k, v in state.items() if k != "trainer"}
    episode = state["episode"]
    other = gym.make("Esper-v0", **tiny_kwargs(n_slots=2, max_epochs=13)).unwrapped
    other.reset(seed=0)
    cases = [
        ("not a snapshot", {"a": 1}, "needs an EnvSnapshot"),
        ("other format", _bad(snap, format=SNAPSHOT_FORMAT + 1), "format"),
        ("missing field", _bad(snap, state=missing), "malformed snapshot: state fields"),
        ("wrong type", _bad(snap, state={**state, "episode": "3"}), "episode is a str"),
        ("wrong slots", _bad(snap, state={**state, "episode": dataclasses.replace(
            episode, slots=episode.slots[:1])}), "2 slot records"),
        ("other episode version", _bad(snap, episode_version=EPISODE_VERSION + 1),
         f"episode of version {EPISODE_VERSION + 1}; this esper_env runs episode version "
         f"{EPISODE_VERSION}"),
        ("wrong epoch", _bad(snap, epoch=snap.epoch + 1), "epoch"),
        ("other config", other.snapshot(), "max_epochs: snapshot 13, env 12"),
    ]
    for label, bad, message in cases:
        with pytest.raises(SnapshotError, match=message):
            unwrapped.restore(bad)  # type: ignore[arg-type]
        assert _digest(env) == before, label
    unwrapped.restore(snap)  # the good one still works
    assert _digest(env) == snap.digest()
