"""Episodes recorded by an earlier version of the code replay exactly: observations, rewards, infos.

``tests/fixtures/episode-v1/`` was written by ``tests/fixtures/make_fixtures.py`` at commit 73f4065,
before the episode was restructured into a state record and a pure transition; the same episode
version must reproduce it bit for bit on the CPU it was recorded on (``platform.json``: torch
2.13.0, one thread, an AMD EPYC). Another CPU model runs other kernels (MKL and oneDNN pick their
code paths by CPU), whose results differ in the last bits; there the episodes must replay within
1e-6, which still catches any change of a rule or of the computation.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.error import ResetNeeded

from agents.provenance import cpu_name
from esper_env.config import EsperConfig
from esper_env.env import EsperEnv
from esper_env.records import obs_digest, read_records, replay
from esper_env.snapshot import SnapshotError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURES = Path(__file__).parent.parent / "fixtures" / "episode-v1"
RECORDS = list(read_records(FIXTURES / "episodes.jsonl"))
INFOS = [json.loads(line) for line in (FIXTURES / "infos.jsonl").read_text().splitlines()]
PLATFORM = json.loads((FIXTURES / "platform.json").read_text())
SAME_TORCH = torch.__version__.split("+")[0] == RECORDS[0]["torch"].split("+")[0]
EXACT = SAME_TORCH and cpu_name().startswith(PLATFORM["cpu"])
CLOSE = 1e-6
"""Tolerance (absolute and relative) on another CPU model."""


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
    """Equal as JSON (so NaN equals NaN); within :data:`CLOSE` where the CPU is not the recording one."""
    if EXACT:
        return json.dumps(a, allow_nan=True, sort_keys=True) == json.dumps(b, allow_nan=True,
                                                                           sort_keys=True)
    return _close(a, b)


def _close(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return bool(np.isclose(a, b, rtol=CLOSE, atol=CLOSE, equal_nan=True))
    return a == b


def test_fixture_set_covers_the_lifecycle() -> None:
    causes = {(e["to"], e["cause"]) for infos in INFOS for info in infos for e in info["events"]}
    assert {("FOSSILIZED", "action"), ("CULLED", "action"), ("CULLED", "rollback"),
            ("CULLED", "probation_timeout"), ("DORMANT", "cooldown")} <= causes
    flags = {k for infos in INFOS for info in infos for k in ("rollback", "diverged", "illegal_action")
             if info.get(k)}
    assert flags == {"rollback", "diverged", "illegal_action"}
    assert {r["config"]["task"] for r in RECORDS} == {"synthetic", "digits", "tinytext"}
    assert {r["config"]["reward_mode"] for r in RECORDS} == {"contribution", "delta", "sparse"}


@pytest.mark.skipif(not EXACT, reason="bit for bit only on the recording CPU and torch build")
@pytest.mark.parametrize("index", [0, 4])
def test_recorded_episode_replays_exactly(index: int) -> None:
    report = replay(RECORDS[index])
    assert report.exact and report.ok, report.first_difference


@pytest.mark.skipif(not SAME_TORCH, reason="the fixtures were recorded with another torch build")
@pytest.mark.parametrize("index", range(len(RECORDS)))
def test_recorded_episode_replays_within_a_tight_tolerance(index: int) -> None:
    report = replay(RECORDS[index], tolerance=CLOSE)
    assert report.ok, report.first_difference


@pytest.mark.skipif(not SAME_TORCH, reason="the fixtures were recorded with another torch build")
@pytest.mark.parametrize("index", range(len(RECORDS)))
def test_recorded_episode_gives_the_same_steps_and_infos(index: int) -> None:
    record = RECORDS[index]
    env = EsperEnv(EsperConfig.from_dict(record["config"]))
    if record["seed"] is None:
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = record["rng_state"]
        env.np_random = rng
    obs, info = env.reset(seed=record["seed"], options=record["options"])
    assert obs_digest(obs) == record["reset_obs_sha256"] if EXACT else np.allclose(
        obs, record["reset_obs"], rtol=CLOSE, atol=CLOSE)
    infos = [info]
    for t, action in enumerate(record["actions"]):
        obs, reward, terminated, truncated, info = env.step(action)
        if EXACT:
            assert (reward, obs_digest(obs)) == (record["rewards"][t], record["obs_sha256"][t]), \
                f"step {t + 1}"
        else:
            assert np.allclose(obs, record["obs"][t], rtol=CLOSE, atol=CLOSE), f"step {t + 1}"
            assert reward == pytest.approx(record["rewards"][t], rel=CLOSE, abs=CLOSE)
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
