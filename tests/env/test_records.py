"""Episode records (RecordEpisodes) and esper-replay: exact replay, first differing step, errors."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs

from esper_env.core.episode import EPISODE_VERSION
from esper_env.records import (
    REQUIRED_KEYS,
    RecordEpisodes,
    RecordVersionError,
    main,
    obs_digest,
    read_records,
    record_version,
    replay,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _record(path, episodes: int = 2, steps: int | None = None, seeds=(4, None), **overrides):
    """Play ``episodes`` episodes with random legal actions (own RNG) into ``path``."""
    env = RecordEpisodes(gym.make("Esper-v0", **tiny_kwargs(n_slots=2, **overrides)), path)
    rng = np.random.default_rng(0)
    played = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seeds[ep % len(seeds)])
        trace = [obs_digest(obs)]
        for _ in range(steps or 10**6):
            legal = np.flatnonzero(env.unwrapped.action_masks())
            obs, reward, terminated, truncated, _ = env.step(int(rng.choice(legal)))
            trace.append((reward, obs_digest(obs)))
            if terminated or truncated:
                break
        played.append(trace)
    env.close()
    return played


def test_records_hold_what_the_episode_did(tmp_path) -> None:
    path = tmp_path / "eps.jsonl"
    played = _record(path)
    records = list(read_records(path))
    assert len(records) == 2
    for rec, trace in zip(records, played, strict=True):
        assert set(REQUIRED_KEYS) <= set(rec)
        assert rec["complete"] is True and rec["terminated"] is True
        assert rec["config"]["host"]["n_slots"] == 2 and rec["config"]["task"]["name"] == "synthetic"
        assert rec["reset_obs_sha256"] == trace[0]
        assert [(r, h) for r, h in zip(rec["rewards"], rec["obs_sha256"], strict=True)] == trace[1:]
        assert len(rec["actions"]) == len(rec["obs"]) == rec["config"]["task"]["max_epochs"] - 1
        assert {"final_val_acc", "final_test_acc", "n_fossilized"} <= set(rec["final"])
        assert not any("time" in k or "wall" in k for k in rec)
    assert records[0]["seed"] == 4 and records[0]["rng_state"] is None
    assert records[1]["seed"] is None and records[1]["rng_state"] is not None  # reset(seed=None)


def test_replay_is_exact_for_seeded_and_unseeded_resets(tmp_path, capsys) -> None:
    path = tmp_path / "eps.jsonl"
    _record(path)
    for rec in read_records(path):
        report = replay(rec)
        assert report.ok and report.exact and report.first_difference is None
        assert report.steps == len(rec["actions"])
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count(": OK,") == 2 and "2/2 episodes replayed identically" in out


def _rewrite(path, change) -> None:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    change(lines[0])
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_replay_names_the_first_step_whose_reward_differs(tmp_path, capsys) -> None:
    path = tmp_path / "eps.jsonl"
    _record(path, episodes=1)
    _rewrite(path, lambda r: r["rewards"].__setitem__(4, r["rewards"][4] + 1e-9))
    report = replay(next(read_records(path)))
    assert not report.ok and report.steps == 5
    assert report.first_difference.startswith("step 5 ")
    assert "reward recorded" in report.first_difference
    assert main([str(path)]) == 1
    assert "DIFFERS (exact) at step 5" in capsys.readouterr().out


def test_replay_names_the_first_step_whose_observation_differs(tmp_path) -> None:
    path = tmp_path / "eps.jsonl"
    _record(path, episodes=1)

    def change(r: dict) -> None:
        r["obs"][2][3] += 0.5
        r["obs_sha256"][2] = "0" * 64

    _rewrite(path, change)
    report = replay(next(read_records(path)))
    assert not report.ok and report.steps == 3
    assert "observation differs" in report.first_difference
    names = gym.make("Esper-v0", **tiny_kwargs(n_slots=2)).unwrapped.feature_names
    assert repr(names[3]) in report.first_difference


def test_tolerance_mode_accepts_small_and_rejects_large_differences(tmp_path, capsys) -> None:
    path = tmp_path / "eps.jsonl"
    _record(path, episodes=1)
    _rewrite(path, lambda r: (r["obs"][1].__setitem__(0, r["obs"][1][0] + 1e-5),
                              r["obs_sha256"].__setitem__(1, "x")))
    assert replay(next(read_records(path))).ok is False  # exact: the hash differs
    small = replay(next(read_records(path)), tolerance=1e-4)
    assert small.ok and not small.exact and small.tolerance == 1e-4
    assert main([str(path), "--tolerance", "1e-6"]) == 1
    assert "DIFFERS (within 1e-06) at step 2" in capsys.readouterr().out


def test_replay_runs_at_another_torch_build_in_tolerance_mode(tmp_path) -> None:
    path = tmp_path / "eps.jsonl"
    _record(path, episodes=1)
    _rewrite(path, lambda r: r.__setitem__("torch", "0.0.1"))
    report = replay(next(read_records(path)))
    assert report.ok and not report.exact and report.tolerance == pytest.approx(1e-3)


def test_replay_on_another_cpu_model_is_in_tolerance_mode(tmp_path) -> None:
    """MKL and oneDNN choose kernels by CPU: another CPU model differs in the last bits."""
    from esper_env.records import cpu_name

    path = tmp_path / "eps.jsonl"
    _record(path, episodes=1)
    record = next(read_records(path))
    assert record["cpu"] == cpu_name() and replay(record).exact
    record["cpu"] = "another CPU"
    report = replay(record)
    assert report.ok and not report.exact
    assert record["final"]["params_added"] >= 0


def test_records_carry_the_episode_version(tmp_path) -> None:
    path = tmp_path / "eps.jsonl"
    _record(path, episodes=1, steps=2)
    record = next(read_records(path))
    assert record["episode_version"] == EPISODE_VERSION
    assert record_version(record) == EPISODE_VERSION
    del record["episode_version"]  # records from before versions are version 1
    assert record_version(record) == 1


def test_a_record_of_another_episode_version_is_refused_exactly_and_compared_in_tolerance(
        tmp_path, capsys) -> None:
    path = tmp_path / "eps.jsonl"
    _record(path, episodes=1)
    _rewrite(path, lambda r: r.__setitem__("episode_version", EPISODE_VERSION + 1))
    record = next(read_records(path))
    message = (f"the record holds an episode of version {EPISODE_VERSION + 1}; this esper_env "
               f"runs episode version {EPISODE_VERSION}")
    with pytest.raises(RecordVersionError, match=message):
        replay(record)
    assert main([str(path)]) == 2
    assert message in capsys.readouterr().err
    report = replay(record, tolerance=1e-3)  # the same episode here, so it matches within it
    assert report.ok and not report.exact


def test_an_unfinished_episode_is_written_on_close_and_on_reset(tmp_path) -> None:
    path = tmp_path / "eps.jsonl"
    _record(path, episodes=2, steps=3)
    records = list(read_records(path))
    assert [(r["complete"], len(r["actions"])) for r in records] == [(False, 3), (False, 3)]
    assert all(replay(r).ok for r in records)


def test_an_instance_set_episode_replays(tmp_path) -> None:
    from test_env_instances import RECORDS

    set_path = tmp_path / "set.json"
    set_path.write_text(json.dumps({"name": "mini", "version": 1, "task": "synthetic",
                                    "n_slots": 2, "train": RECORDS[:2], "test": RECORDS[2:]}))
    kw = tiny_kwargs(instance_set=str(set_path))
    kw.pop("task"), kw.pop("max_epochs")
    path = tmp_path / "eps.jsonl"
    env = RecordEpisodes(gym.make("Esper-v0", **kw), path)
    env.reset(seed=1)
    for _ in range(4):
        env.step(0)
    env.reset(seed=2, options={"instance": 1})
    env.step(0)
    env.close()
    records = list(read_records(path))
    assert records[0]["instance"] is not None and records[1]["options"] == {"instance": 1}
    assert all(replay(r).ok for r in records)


@pytest.mark.parametrize(("content", "message"), [
    ("not json\n", "not a JSON line"),
    ('{"format": 1}\n', "not an episode record; missing"),
])
def test_esper_replay_rejects_malformed_files(tmp_path, capsys, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    assert main([str(path)]) == 2
    assert message in capsys.readouterr().err
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert "no record file" in capsys.readouterr().err


def test_esper_replay_rejects_another_format_and_a_bad_episode_index(tmp_path, capsys) -> None:
    path = tmp_path / "eps.jsonl"
    _record(path, episodes=1, steps=2)
    assert main([str(path), "--episode", "3"]) == 2
    assert "--episode 3 is invalid; allowed: 0..0" in capsys.readouterr().err
    _rewrite(path, lambda r: r.__setitem__("format", 99))
    assert main([str(path)]) == 2
    assert "record format 99 is not supported" in capsys.readouterr().err


def test_esper_replay_is_a_console_script() -> None:
    from pathlib import Path

    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["esper-replay"] == "esper_env.records:main"
