"""Episodes recorded by an earlier version of the code replay exactly: observations, rewards, infos.

``tests/fixtures/episode-v1/`` was written by ``tests/fixtures/make_fixtures.py`` at commit 73f4065,
before the episode was restructured into a state record and a pure transition; the same episode
version must reproduce it bit for bit on the CPU (torch 2.13.0, one thread).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded

from esper_env.config import EsperConfig
from esper_env.env import EsperEnv
from esper_env.records import obs_digest, read_records, replay
from esper_env.snapshot import SnapshotError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).parent.parent / "fixtures" / "episode-v1"
RECORDS = list(read_records(FIXTURES / "episodes.jsonl"))
INFOS = [json.loads(line) for line in (FIXTURES / "infos.jsonl").read_text().splitlines()]
EXACT = torch.__version__.split("+")[0] == RECORDS[0]["torch"].split("+")[0]


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same(a, b) -> bool:
    """Equal as JSON (so NaN equals NaN)."""
    return json.dumps(a, allow_nan=True, sort_keys=True) == json.dumps(b, allow_nan=True, sort_keys=True)


def test_fixture_set_covers_the_lifecycle() -> None:
    causes = {(e["to"], e["cause"]) for infos in INFOS for info in infos for e in info["events"]}
    assert {("FOSSILIZED", "action"), ("CULLED", "action"), ("CULLED", "rollback"),
            ("CULLED", "probation_timeout"), ("DORMANT", "cooldown")} <= causes
    flags = {k for infos in INFOS for info in infos for k in ("rollback", "diverged", "illegal_action")
             if info.get(k)}
    assert flags == {"rollback", "diverged", "illegal_action"}
    assert {r["config"]["task"] for r in RECORDS} == {"synthetic", "digits", "tinytext"}
    assert {r["config"]["reward_mode"] for r in RECORDS} == {"contribution", "delta", "sparse"}


@pytest.mark.skipif(not EXACT, reason="the fixtures were recorded with another torch build")
@pytest.mark.parametrize("index", [0, 4])
def test_recorded_episode_replays_exactly(index: int) -> None:
    report = replay(RECORDS[index])
    assert report.exact and report.ok, report.first_difference


@pytest.mark.skipif(not EXACT, reason="the fixtures were recorded with another torch build")
@pytest.mark.parametrize("index", range(len(RECORDS)))
def test_recorded_episode_gives_the_same_steps_and_infos(index: int) -> None:
    record = RECORDS[index]
    env = EsperEnv(EsperConfig.from_dict(record["config"]))
    if record["seed"] is None:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = record["rng_state"]
        env.np_random = rng
    obs, info = env.reset(seed=record["seed"], options=record["options"])
    assert obs_digest(obs) == record["reset_obs_sha256"]
    infos = [info]
    for t, action in enumerate(record["actions"]):
        obs, reward, terminated, truncated, info = env.step(action)
        assert (reward, obs_digest(obs)) == (record["rewards"][t], record["obs_sha256"][t]), f"step {t + 1}"
        infos.append(info)
    assert (terminated, truncated) == (record["terminated"], record["truncated"])
    for t, (got, want) in enumerate(zip(_plain(infos), INFOS[index], strict=True)):
        assert _same(got, want), f"step {t}: " + ", ".join(
            k for k in sorted(set(got) | set(want)) if not _same(got.get(k), want.get(k)))


def test_old_env_pickle_is_refused_with_a_snapshot_error() -> None:
    # Pickled by the first layout (26 env attributes, snapshot format 1): refused, not misread.
    with pytest.raises(SnapshotError, match=r"^snapshot format 1 is not supported; allowed: 2"):
        pickle.loads((FIXTURES / "env.pkl").read_bytes())


def test_old_snapshot_is_refused_with_a_snapshot_error() -> None:
    snap = pickle.loads((FIXTURES / "snapshot.pkl").read_bytes())
    env = EsperEnv(snap.config)
    with pytest.raises(SnapshotError, match=r"^snapshot format 1 is not supported; allowed: 2"):
        env.restore(snap)
    with pytest.raises(ResetNeeded):  # nothing was adopted
        env.step(0)


def test_old_pickled_config_loads_into_sections() -> None:
    # The snapshot's config was pickled by the first, flat EsperConfig (48 fields).
    snap = pickle.loads((FIXTURES / "snapshot.pkl").read_bytes())
    assert snap.config == EsperConfig(
        task="synthetic", max_epochs=12, germination_gate=False, min_cull_age=2, blending_epochs=2,
        embargo_epochs=1, torch_threads=1, n_slots=2,
        gates={"min_training_epochs": 1, "min_gradient_ratio": 0.0,
               "min_probation_contribution": -100.0, "min_fossilize_contribution": -100.0})
    assert snap.config.reward.mode == "contribution"  # a field the old RewardConfig lacked


def test_recorded_configs_are_flat_and_load_into_sections() -> None:
    for record in RECORDS:
        assert "n_slots" in record["config"]  # written by the flat config
        cfg = EsperConfig.from_dict(record["config"])
        assert cfg.host.n_slots == record["config"]["n_slots"]
        assert cfg.flat()["reward_mode"] == record["config"]["reward_mode"]
