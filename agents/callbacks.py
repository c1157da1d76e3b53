"""SB3 callbacks for Esper-v0: per-episode Esper metrics in the logger, and held-out evaluation.

* :class:`EsperMetricsCallback` records, for every finished training episode, the final validation
  and test accuracy, parameters added, seeds fossilized and culled and illegal actions under
  ``esper/`` (averaged over the episodes that ended since the last dump, like ``rollout/ep_rew_mean``),
  and the blueprint curriculum's arm statistics under ``curriculum/`` when it is in use.
* :class:`EsperEvalCallback` plays seeded episodes (seeds or instances never used for training) with
  the deterministic policy every ``eval_freq`` steps, logs ``eval/*``, keeps the model with the best
  mean return and writes the history to ``evaluations.json``. Unlike SB3's ``EvalCallback`` it passes
  action masks to models that take them (through :func:`agents.rollout.run_episode`).
* :class:`TimeSplitCallback` (with :class:`StepTimer` around the training envs) splits a run's
  time into env steps, the policy's forward passes, the updates and evaluation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper

from agents.rollout import EpisodeResult, run_episode


class EsperMetricsCallback(BaseCallback):
    """Log Esper's per-episode outcomes (``esper/*``) and curriculum statistics (``curriculum/*``)."""

    def _init_callback(self) -> None:
        n = self.training_env.num_envs if self.training_env is not None else 1
        self._illegal = np.zeros(n, dtype=int)
        self._culled = np.zeros(n, dtype=int)
        self._steps = np.zeros(n, dtype=int)
        self.episodes = 0

    def _on_step(self) -> bool:
        infos: Sequence[dict[str, Any]] = self.locals["infos"]
        dones = self.locals["dones"]
        for i, info in enumerate(infos):
            self._steps[i] += 1
            self._illegal[i] += int(bool(info.get("illegal_action", False)))
            self._culled[i] += sum(e.get("to") == "CULLED" for e in info.get("events", ()))
            if dones[i] and "final_test_acc" in info:
                self._record_episode(info, i)
            if i == 0 and "curriculum" in info:
                for arm, stats in info["curriculum"].items():
                    for key in ("pulls", "mean"):
                        if key in stats:
                            self.logger.record(f"curriculum/{arm}_{key}", float(stats[key]))
        return True

    def _record_episode(self, info: dict[str, Any], i: int) -> None:
        log = self.logger.record_mean
        log("esper/final_test_acc", float(info["final_test_acc"]))
        log("esper/final_val_acc", float(info["final_val_acc"]))
        log("esper/params_added", float(info["params_added"]))
        log("esper/fossilized", float(info["n_fossilized"]))
        log("esper/culled", float(self._culled[i]))
        log("esper/illegal_actions", float(self._illegal[i]))
        log("esper/illegal_fraction", float(self._illegal[i] / max(self._steps[i], 1)))
        self._illegal[i] = self._culled[i] = self._steps[i] = 0
        self.episodes += 1


class EsperEvalCallback(BaseCallback):
    """Evaluate on held-out seeded episodes every ``eval_freq`` steps and keep the best model.

    Args:
        eval_env: a single (not vectorized) env built like the training envs.
        episodes: ``(seed, reset options)`` of each evaluation episode.
        eval_freq: evaluate every this many environment steps (summed over the vectorized envs).
        save_path: folder for ``best_model.zip`` and ``evaluations.json`` (None: save nothing).
        on_best: optional hook called after a new best model is saved (e.g. to save the
            curriculum with it).
        before_eval: optional hook called before each evaluation (e.g. to give the evaluation env
            a copy of the curriculum as it stands).
    """

    def __init__(self, eval_env: gym.Env, episodes: Sequence[tuple[int, dict[str, Any] | None]],
                 eval_freq: int, save_path: str | Path | None = None,
                 on_best: Callable[[], None] | None = None,
                 before_eval: Callable[[], None] | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        if eval_freq <= 0:
            raise ValueError(f"eval_freq={eval_freq} is invalid; allowed: > 0")
        if not episodes:
            raise ValueError("EsperEvalCallback needs at least one evaluation episode")
        self.eval_env = eval_env
        self.episodes = list(episodes)
        self.eval_freq = int(eval_freq)
        self.save_path = Path(save_path) if save_path is not None else None
        self.on_best = on_best
        self.before_eval = before_eval
        self.best_mean_return = -np.inf
        self.history: list[dict[str, Any]] = []
        self._next_eval = self.eval_freq
        self.eval_s = 0.0
        """Seconds spent playing the evaluation episodes."""

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next_eval:
            self._next_eval += self.eval_freq
            self.evaluate()
        return True

    def evaluate(self) -> list[EpisodeResult]:
        """Play the evaluation episodes now; log, record and maybe save the best model."""
        if self.before_eval is not None:
            self.before_eval()
        t0 = time.perf_counter()
        results = [run_episode(self.eval_env, self.model, seed, options=opts)
                   for seed, opts in self.episodes]
        self.eval_s += time.perf_counter() - t0
        row = {
            "timesteps": int(self.num_timesteps),
            "mean_return": float(np.mean([r.episode_return for r in results])),
            "mean_final_test_acc": float(np.mean([r.final_test_acc for r in results])),
            "mean_final_val_acc": float(np.mean([r.final_val_acc for r in results])),
            "mean_fossilized": float(np.mean([r.n_fossilized for r in results])),
            "illegal_fraction": float(sum(r.illegal_actions for r in results)
                                      / max(sum(r.length for r in results), 1)),
        }
        for key, value in row.items():
            if key != "timesteps":
                self.logger.record(f"eval/{key}", value)
        new_best = row["mean_return"] > self.best_mean_return
        row["best"] = bool(new_best)
        self.history.append(row)
        if new_best:
            self.best_mean_return = row["mean_return"]
            if self.save_path is not None:
                self.model.save(self.save_path / "best_model")
                if self.on_best is not None:
                    self.on_best()
        if self.save_path is not None:
            (self.save_path / "evaluations.json").write_text(json.dumps(self.history, indent=1))
        if self.verbose:
            print(f"eval @ {self.num_timesteps}: mean return {row['mean_return']:.2f}, "
                  f"test acc {row['mean_final_test_acc']:.2f}" + (" (new best)" if new_best else ""))
        self.logger.dump(self.num_timesteps)
        return results


class StepTimer(VecEnvWrapper):
    """A VecEnv as it is, summing the seconds its ``step`` takes in :attr:`seconds`."""

    def __init__(self, venv: Any) -> None:
        super().__init__(venv)
        self.seconds = 0.0
        self._t0 = 0.0

    def reset(self) -> Any:  # noqa: D102
        return self.venv.reset()

    def step_async(self, actions: np.ndarray) -> None:  # noqa: D102
        self._t0 = time.perf_counter()
        self.venv.step_async(actions)

    def step_wait(self) -> Any:  # noqa: D102
        out = self.venv.step_wait()
        self.seconds += time.perf_counter() - self._t0
        return out


class TimeSplitCallback(BaseCallback):
    """Where a training run's time goes: :attr:`split` (seconds) after ``learn``.

    ``env``: the training envs' steps (``timer``); ``evaluation``: the evaluation episodes
    (``evaluator``, an :class:`EsperEvalCallback`, or None); ``policy``: the rest of collecting
    rollouts (the policy's forward passes, the buffer, the other callbacks); ``update``: between
    the end of a rollout and the start of the next (the gradient updates, logging).
    """

    def __init__(self, timer: StepTimer, evaluator: EsperEvalCallback | None = None) -> None:
        super().__init__()
        self.timer, self.evaluator = timer, evaluator
        self._rollout = self._update = 0.0
        self._started: float | None = None
        self._ended: float | None = None

    def _on_rollout_start(self) -> None:
        now = time.perf_counter()
        if self._ended is not None:
            self._update += now - self._ended
        self._started = now

    def _on_rollout_end(self) -> None:
        self._ended = time.perf_counter()
        if self._started is not None:
            self._rollout += self._ended - self._started

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        if self._ended is not None:
            self._update += time.perf_counter() - self._ended
            self._ended = None

    @property
    def split(self) -> dict[str, float]:
        """Seconds per part: env, policy, update, evaluation."""
        ev = self.evaluator.eval_s if self.evaluator is not None else 0.0
        env = self.timer.seconds
        return {"env": env, "policy": max(0.0, self._rollout - env - ev), "update": self._update,
                "evaluation": ev}
