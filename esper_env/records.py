"""Episode records and their replay: ``RecordEpisodes`` writes, ``esper-replay FILE`` checks.

A record is one JSON line per episode (format in docs/records.md, "Records"): the env version,
the episode version (:data:`~esper_env.core.episode.EPISODE_VERSION`; records written before it
existed have none and are version 1), the torch build, the thread count, the full config, the
instance, the reset seed (or the episode RNG's state when reset had no seed), the reset options,
every action, every reward and, for the reset observation and every step's observation, its
SHA-256 (float32 bytes) and its values.

:func:`replay` rebuilds the env from the record, plays the same actions and compares. It is
**exact** (rewards equal, observation hashes equal) on the CPU with the torch version and the CPU
model the record was made with (``cpu``; records without it are taken to come from this CPU); it
runs at the recorded thread count. Otherwise (another torch build, another CPU model, whose MKL
and oneDNN kernels differ in the last bits, a GPU) it
compares within ``tolerance`` (absolute, on rewards and on every observation value; default
:data:`DEFAULT_TOLERANCE`), because floating-point results then legitimately differ. It reports the
first step that differs. A record of another episode version cannot replay exactly: without a
``tolerance`` it is refused (:class:`RecordVersionError`, naming both versions); with one it is
compared within it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from esper_env._version import __version__
from esper_env.core.episode import EPISODE_VERSION
from esper_env.errors import EsperError

RECORD_FORMAT = 1
"""Version of the record layout (``format`` in every line)."""

DEFAULT_TOLERANCE = 1e-3
"""Absolute tolerance of a non-exact replay (rewards and observation values)."""

REQUIRED_KEYS = ("format", "env_version", "torch", "torch_threads", "config", "seed", "options",
                 "reset_obs_sha256", "reset_obs", "actions", "rewards", "obs_sha256", "obs",
                 "terminated", "truncated")


class RecordVersionError(EsperError, ValueError):
    """An exact replay of a record made with another episode version."""


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def record_version(record: dict[str, Any]) -> int:
    """The episode version a record was made with (1 for records from before versions)."""
    return int(record.get("episode_version", 1))


def obs_digest(obs: np.ndarray) -> str:
    """SHA-256 of an observation's float32 bytes."""
    return hashlib.sha256(np.ascontiguousarray(obs, dtype=np.float32).tobytes()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    return value


class RecordEpisodes(gym.Wrapper):
    """Append one JSON line per episode to ``path`` (see the module docstring).

    Wrap the env returned by ``gym.make("Esper-v0", ...)``. A line is written when an episode
    terminates or is truncated, and for an unfinished episode (``"complete": false``) when the next
    ``reset`` or ``close`` comes first.
    """

    def __init__(self, env: gym.Env, path: str | Path) -> None:
        super().__init__(env)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._episode: dict[str, Any] | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset and start a new record (an unfinished previous one is written first)."""
        self._flush(complete=False)
        inner = self.env.unwrapped
        rng_state = None if seed is not None else _jsonable(inner.np_random.bit_generator.state)
        obs, info = self.env.reset(seed=seed, options=options)
        cfg = inner.config
        instance = inner.state.setup.instance
        self._episode = {
            "format": RECORD_FORMAT, "env_id": getattr(inner.spec, "id", "Esper-v0"),
            "env_version": __version__, "episode_version": EPISODE_VERSION,
            "torch": torch.__version__, "cpu": cpu_name(),
            "torch_threads": cfg.runtime.torch_threads or torch.get_num_threads(),
            "device": cfg.runtime.device, "config": _jsonable(cfg.to_dict()), "seed": seed,
            "rng_state": rng_state, "options": _jsonable(options),
            "instance": None if instance is None else _jsonable(instance.to_dict()),
            "reset_obs_sha256": obs_digest(obs), "reset_obs": obs.astype(float).tolist(),
            "actions": [], "rewards": [], "obs_sha256": [], "obs": [],
            "terminated": False, "truncated": False,
        }
        return obs, info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Step and add the action, reward and observation to the record."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        ep = self._episode
        if ep is not None:
            ep["actions"].append(int(np.asarray(action).reshape(-1)[0]))
            ep["rewards"].append(float(reward))
            ep["obs_sha256"].append(obs_digest(obs))
            ep["obs"].append(obs.astype(float).tolist())
            if terminated or truncated:
                ep["terminated"], ep["truncated"] = bool(terminated), bool(truncated)
                ep["final"] = {k: _jsonable(info[k]) for k in
                               ("final_val_acc", "final_test_acc", "n_fossilized", "params_added")
                               if k in info}
                self._flush(complete=True)
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Write an unfinished episode's record, then close the env."""
        self._flush(complete=False)
        super().close()

    def _flush(self, complete: bool) -> None:
        ep, self._episode = self._episode, None
        if ep is None or (not complete and not ep["actions"]):
            return
        ep["complete"] = complete
        with self.path.open("a") as f:
            f.write(json.dumps(ep, allow_nan=True) + "\n")


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records in a JSON-lines file, checked for the required keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no record file at {str(path)!r}")
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a JSON line ({exc})") from None
            missing = [k for k in REQUIRED_KEYS if k not in record] \
                if isinstance(record, dict) else list(REQUIRED_KEYS)
            if missing:
                raise ValueError(f"{path}:{n}: not an episode record; missing {missing}")
            if record["format"] != RECORD_FORMAT:
                raise ValueError(f"{path}:{n}: record format {record['format']!r} is not "
                                 f"supported; allowed: {RECORD_FORMAT}")
            yield record


@dataclass(frozen=True)
class ReplayReport:
    """Outcome of one replay: ``ok``, the mode, the steps checked and the first difference."""

    ok: bool
    exact: bool
    steps: int
    first_difference: str | None
    tolerance: float | None


def _compare_obs(step: str, recorded: list[float], digest: str, obs: np.ndarray,
                 exact: bool, tol: float, names: Sequence[str]) -> str | None:
    if exact:
        if obs_digest(obs) == digest:
            return None
    elif len(recorded) == obs.size and all(
            (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol
            for a, b in zip(recorded, obs.astype(float).tolist(), strict=True)):
        return None
    if len(recorded) != obs.size:
        return f"{step}: observation has {obs.size} values, the record {len(recorded)}"
    diffs = [(abs(a - b), i) for i, (a, b) in enumerate(zip(recorded, obs.tolist(), strict=True))
             if not (a == b or (math.isnan(a) and math.isnan(b)))]
    if not diffs:
        return f"{step}: observation hash differs from the record's (values equal)"
    _, i = max(diffs)
    return (f"{step}: observation differs, most at feature {names[i]!r}: recorded "
            f"{recorded[i]!r}, replayed {float(obs[i])!r} ({len(diffs)} features differ)")


def replay(record: dict[str, Any], tolerance: float | None = None) -> ReplayReport:
    """Re-run ``record`` and compare (see the module docstring for exact vs tolerance)."""
    from esper_env.config import EsperConfig
    from esper_env.env import EsperEnv

    version = record_version(record)
    if version != EPISODE_VERSION and tolerance is None:
        raise RecordVersionError(
            f"the record holds an episode of version {version}; this esper_env runs episode "
            f"version {EPISODE_VERSION}, so it cannot replay it exactly; give a tolerance "
            "(esper-replay --tolerance) to compare within it")
    cfg = EsperConfig.from_dict(record["config"])
    exact = (tolerance is None and record["torch"] == torch.__version__ and cfg.runtime.device == "cpu"
             and record.get("cpu", cpu_name()) == cpu_name())
    tol = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    env = EsperEnv(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(record["torch_threads"]))
    try:
        if record["seed"] is None and record.get("rng_state") is not None:
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = record["rng_state"]
            env.np_random = rng
        obs, _ = env.reset(seed=record["seed"], options=record["options"])
        names = env.feature_names
        diff = _compare_obs("reset", record["reset_obs"], record["reset_obs_sha256"], obs, exact,
                            tol, names)
        steps = 0
        for t, action in enumerate(record["actions"]):
            if diff is not None:
                break
            obs, reward, terminated, truncated, _ = env.step(action)
            steps = t + 1
            want = record["rewards"][t]
            if exact and reward != want or not exact and not abs(reward - want) <= tol:
                diff = f"step {steps} (action {action}): reward recorded {want!r}, replayed {reward!r}"
                break
            diff = _compare_obs(f"step {steps} (action {action})", record["obs"][t],
                                record["obs_sha256"][t], obs, exact, tol, names)
            last = t == len(record["actions"]) - 1
            if diff is None and last and (terminated, truncated) != (record["terminated"],
                                                                      record["truncated"]):
                diff = (f"step {steps}: terminated/truncated recorded "
                        f"{record['terminated']}/{record['truncated']}, replayed {terminated}/{truncated}")
    finally:
        torch.set_num_threads(threads)
        env.close()
    return ReplayReport(diff is None, exact, steps, diff, None if exact else tol)


def main(argv: Sequence[str] | None = None) -> int:
    """``esper-replay FILE``: replay every episode record in FILE; exit 1 if any differs."""
    p = argparse.ArgumentParser(prog="esper-replay", description=main.__doc__)
    p.add_argument("file", help="JSON-lines file written by esper_env.records.RecordEpisodes")
    p.add_argument("--episode", type=int, action="append",
                   help="replay only this episode (0-based line index; repeatable)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="compare within this absolute tolerance instead of exactly (default: exact "
                        f"on CPU with the recorded torch version, else {DEFAULT_TOLERANCE})")
    args = p.parse_args(argv)
    if args.tolerance is not None and not args.tolerance >= 0:
        p.error(f"--tolerance {args.tolerance} is invalid; allowed: a number >= 0")
    try:
        records = list(read_records(args.file))
    except (OSError, ValueError) as exc:
        print(f"esper-replay: {exc}", file=sys.stderr)
        return 2
    chosen = range(len(records)) if not args.episode else args.episode
    failed = 0
    for i in chosen:
        if not 0 <= i < len(records):
            print(f"esper-replay: --episode {i} is invalid; allowed: 0..{len(records) - 1}",
                  file=sys.stderr)
            return 2
        rec = records[i]
        try:
            report = replay(rec, args.tolerance)
        except RecordVersionError as exc:
            print(f"esper-replay: episode {i}: {exc}", file=sys.stderr)
            return 2
        how = "exact" if report.exact else f"within {report.tolerance:g}"
        head = f"episode {i} (seed {rec['seed']}, {len(rec['actions'])} steps)"
        if report.ok:
            print(f"{head}: OK, {report.steps} steps match ({how})")
        else:
            failed += 1
            print(f"{head}: DIFFERS ({how}) at {report.first_difference}")
    print(f"{len(chosen) - failed}/{len(chosen)} episodes replayed identically" if not failed else
          f"{failed}/{len(chosen)} episodes differ")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
