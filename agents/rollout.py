"""Playing episodes: the one episode loop of esper-eval, esper-bench, the callbacks and the benchmarks.

* :func:`run_episode` plays one seeded episode of anything with an SB3-like ``predict`` (the
  baselines, SB3 and sb3-contrib models) and returns its :class:`EpisodeResult`; given an
  :class:`EpisodeTrace` it also records the episode epoch by epoch (accuracy curves, the stage of
  every slot, the actions taken, wall time).
* :func:`run_batched` plays one episode in every lane of a batched vector env at once.
* :func:`episode_plan` says which episodes to play: ``(seed, reset options)`` pairs from a first
  seed, over an instance split when the env has one.

Masks always go to policies that take them, and a model trained with masks (MaskablePPO) is
refused when there are none, instead of silently playing masked-out actions as
``stable_baselines3.common.evaluation.evaluate_policy`` would.
"""

from __future__ import annotations

import inspect
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EpisodeResult:
    """Outcome of one episode."""

    policy: str
    seed: int
    episode_return: float
    final_val_acc: float
    final_test_acc: float
    params_added: int
    n_fossilized: int
    lifecycle: dict[str, int] = field(default_factory=dict)
    illegal_actions: int = 0
    rollbacks: int = 0
    length: int = 0
    instance: str | None = None
    fossils: tuple[tuple[int, str], ...] = ()
    host_params: int = 0

    @property
    def n_culled(self) -> int:
        """Seeds culled (by the agent or by a gate)."""
        return self.lifecycle.get("culled", 0)


@dataclass
class EpisodeTrace:
    """An episode epoch by epoch, filled in by :func:`run_episode` (plain JSON types).

    ``val_curve``, ``test_curve`` and ``stages`` (one stage name per slot) start with the reset's
    values, so they hold one entry more than ``actions`` (the action names, in order).
    ``test_curve`` holds None where the env does not report the test accuracy every epoch
    (``report_test_acc`` off). ``info`` holds, for each of ``info_keys``, that ``info`` value of
    every epoch (reset's first; None where it is missing), e.g. ``("epoch", "rollback")``.
    """

    val_curve: list[float] = field(default_factory=list)
    test_curve: list[float | None] = field(default_factory=list)
    stages: list[list[str]] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    info_keys: tuple[str, ...] = ()
    info: dict[str, list[Any]] = field(default_factory=dict)

    def record(self, info: dict[str, Any], action: str | None = None) -> None:
        """Append the epoch that ``info`` describes (and the action that led to it)."""
        self.val_curve.append(info["val_acc"])
        self.test_curve.append(info.get("test_acc"))
        self.stages.append(list(info["stages"]))
        for key in self.info_keys:
            self.info.setdefault(key, []).append(info.get(key))
        if action is not None:
            self.actions.append(action)


def fossils(info: dict[str, Any]) -> tuple[tuple[int, str], ...]:
    """The ``(slot, blueprint)`` pairs FOSSILIZED in ``info``'s model (its grown architecture;
    what ``static_seeds`` builds from the start), by slot.
    """  # noqa: D205
    return tuple((k, str(b)) for k, (stage, b) in enumerate(zip(info["stages"], info["blueprints"],
                                                               strict=True))
                 if stage == "FOSSILIZED")


class MasksRequired(ValueError):
    """A model trained with action masks was asked to act without them."""


def takes_masks(policy: Any) -> bool:
    """True if ``policy.predict`` accepts ``action_masks`` (baselines, MaskablePPO)."""
    try:
        return "action_masks" in inspect.signature(policy.predict).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def requires_masks(policy: Any) -> bool:
    """True for models trained with masks (sb3-contrib's maskable policies)."""
    try:
        from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
    except ImportError:  # the train extra is not installed: no maskable model can exist
        return False
    return isinstance(getattr(policy, "policy", None), MaskableActorCriticPolicy)


def run_episode(env: Any, policy: Any, seed: int, name: str | None = None,
                options: dict[str, Any] | None = None, use_masks: bool = True,
                trace: EpisodeTrace | None = None) -> EpisodeResult:
    """Play one episode from ``reset(seed=seed, options=options)`` with ``policy.predict``.

    Policies whose ``predict`` takes ``action_masks`` (the baselines, sb3-contrib's MaskablePPO)
    get the mask of the outermost wrapper that has ``action_masks()``; others (SB3's PPO, DQN) are
    called without it. Deterministic actions; ``options={"instance": k}`` pins an instance of the
    env's instance split. ``trace``, if given (empty), is filled with the episode's epochs.

    Raises:
        MasksRequired: ``use_masks=False`` (or an env without ``action_masks``) for a model trained
            with masks.
    """
    t0 = time.perf_counter()
    masked = takes_masks(policy) and use_masks
    get_masks = None
    if masked:
        try:
            get_masks = env.get_wrapper_attr("action_masks")
        except AttributeError:
            masked = False
    if not masked and requires_masks(policy):
        raise MasksRequired(
            f"{name or type(policy).__name__} was trained with action masks and would play "
            "masked-out actions without them; evaluate it with masks (drop --no-masks) in an env "
            "that has action_masks()")
    obs, info = env.reset(seed=seed, options=options)
    if trace is not None:
        trace.record(info)
    instance = info.get("instance")
    total, done, steps = 0.0, False, 0
    counts: Counter[str] = Counter()
    illegal = rollbacks = 0
    while not done:
        if masked:
            action, _ = policy.predict(obs, action_masks=get_masks(), deterministic=True)
        else:
            action, _ = policy.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(int(action))
        total += float(reward)
        steps += 1
        done = terminated or truncated
        illegal += int(info["illegal_action"])
        rollbacks += int(info["rollback"])
        for e in info["events"]:
            counts[e["to"].lower()] += 1
        if trace is not None:
            trace.record(info, info["action_name"])
    if trace is not None:
        trace.wall_s = time.perf_counter() - t0
    return EpisodeResult(
        policy=name or getattr(policy, "name", type(policy).__name__), seed=seed,
        episode_return=total, final_val_acc=info["final_val_acc"],
        final_test_acc=info["final_test_acc"], params_added=info["params_added"],
        n_fossilized=info["n_fossilized"], lifecycle=dict(counts), illegal_actions=illegal,
        rollbacks=rollbacks, length=steps, instance=instance, fossils=fossils(info),
        host_params=int(info["host_params"]))


def instance_name(env: Any, options: dict[str, Any] | None) -> str | None:
    """The name of the instance reset ``options`` pin (None without one)."""
    if not options or "instance" not in options:
        return None
    spec = options["instance"]
    return env.unwrapped.instances[spec].name if isinstance(spec, int) else spec["name"]


def episode_plan(env: Any, first_seed: int, episodes: int | None = None,
                 per_instance: int | None = None) -> list[tuple[int, dict[str, Any] | None]]:
    """(seed, reset options) of each episode to play in ``env``.

    Without an instance split: ``episodes`` (default 20) seeds from ``first_seed``. Over an
    instance split: with ``per_instance``, that many episodes of every instance, instance by
    instance, each on a seed of its own (``first_seed + k·per_instance + j`` for episode j of
    instance k); without, ``episodes`` episodes on seeds from ``first_seed`` cycling through the
    instances (default: every instance once).
    """
    n_instances = len(env.unwrapped.instances)
    if n_instances and per_instance is not None:
        return [(first_seed + k * per_instance + j, {"instance": k})
                for k in range(n_instances) for j in range(per_instance)]
    if n_instances:
        n = episodes or n_instances
        return [(first_seed + i, {"instance": i % n_instances}) for i in range(n)]
    return [(first_seed + i, None) for i in range(episodes or 20)]


def run_batched(venv: Any, policies: list[Any], seeds: list[int], name: str | None = None
                ) -> list[EpisodeResult]:
    """Play one episode per lane of a batched vector env (:class:`esper_env.vector.EsperVectorEnv`)
    at once: lane ``i`` from ``seeds[i]`` with ``policies[i]`` (masked, deterministic actions), as
    :func:`run_episode` plays one. Lanes that finish wait (WAIT) until every lane has finished.
    """  # noqa: D205
    from gymnasium.vector import AutoresetMode

    from agents.batched_vec_env import unbatch_info

    k = venv.num_envs
    if len(policies) != k or len(seeds) != k:
        raise ValueError(f"{len(policies)} policies and {len(seeds)} seeds for {k} lanes; allowed: "
                         f"one of each per lane")
    if venv.metadata.get("autoreset_mode") != AutoresetMode.NEXT_STEP:
        raise ValueError("run_batched needs the NEXT_STEP autoreset mode (a lane's last step is "
                         "then the one it returns)")
    obs, info = venv.reset(seed=list(seeds))
    totals, steps = [0.0] * k, [0] * k
    illegal, rollbacks = [0] * k, [0] * k
    counts: list[Counter[str]] = [Counter() for _ in range(k)]
    results: list[EpisodeResult | None] = [None] * k
    while any(r is None for r in results):
        masks = venv.action_masks()
        actions = [0 if results[i] is not None else
                   int(policies[i].predict(obs[i], action_masks=masks[i], deterministic=True)[0])
                   for i in range(k)]
        obs, reward, terminated, truncated, info = venv.step(actions)
        for i in range(k):
            if results[i] is not None:
                continue
            totals[i] += float(reward[i])
            steps[i] += 1
            illegal[i] += int(info["illegal_action"][i])
            rollbacks[i] += int(info["rollback"][i])
            for e in info["events"][i]:
                counts[i][e["to"].lower()] += 1
            if terminated[i] or truncated[i]:
                results[i] = EpisodeResult(
                    policy=name or getattr(policies[i], "name", type(policies[i]).__name__),
                    seed=seeds[i], episode_return=totals[i],
                    final_val_acc=float(info["final_val_acc"][i]),
                    final_test_acc=float(info["final_test_acc"][i]),
                    params_added=int(info["params_added"][i]),
                    n_fossilized=int(info["n_fossilized"][i]), lifecycle=dict(counts[i]),
                    illegal_actions=illegal[i], rollbacks=rollbacks[i], length=steps[i],
                    fossils=fossils(unbatch_info(info, i)),
                    host_params=int(info["host_params"][i]))
    return results  # type: ignore[return-value]


def run_queue(venv: Any, plan: list[tuple[int, dict[str, Any] | None]],
              policy_for: Any, name: str | None = None, use_masks: bool = True,
              info_keys: tuple[str, ...] = ()) -> list[tuple[EpisodeResult, EpisodeTrace]]:
    """Play the episodes of ``plan`` (``(seed, reset options)``, as :func:`episode_plan` gives)
    on a batched vector env (:class:`esper_env.vector.EsperVectorEnv` in the DISABLED autoreset
    mode) as a work queue: each lane takes the next episode when its episode ends, so every
    episode of the plan is played exactly once, as :func:`run_episode` plays it in one env.

    ``policy_for(seed, options)`` gives the policy of an episode (a fresh baseline, or one saved
    model for all). Returns each episode's result and trace, in plan order (a trace's ``wall_s``
    is the time from the episode's reset to its end, which it shares with the other lanes).
    """  # noqa: D205
    from gymnasium.vector import AutoresetMode

    from agents.batched_vec_env import unbatch_info

    k = venv.num_envs
    if venv.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
        raise ValueError("run_queue needs the DISABLED autoreset mode (it resets each lane when "
                         "the lane's episode ends)")
    results: list[tuple[EpisodeResult, EpisodeTrace] | None] = [None] * len(plan)
    lanes: list[dict[str, Any] | None] = [None] * k
    queue = list(reversed(range(len(plan))))

    def start(free: list[int]) -> Any:
        mask, seeds, pins = [False] * k, [None] * k, [None] * k
        for i in free:
            if not queue:
                break
            j = queue.pop()
            seed, options = plan[j]
            unknown = set(options or {}) - {"instance"}
            if unknown:
                raise ValueError(f"plan options {sorted(unknown)} are not supported by run_queue; "
                                 "allowed: 'instance'")
            mask[i], seeds[i] = True, seed
            pins[i] = (options or {}).get("instance")
            policy = policy_for(seed, options)
            masked = takes_masks(policy) and use_masks
            if not masked and requires_masks(policy):
                raise MasksRequired(f"{name or type(policy).__name__} was trained with action "
                                    "masks and would play masked-out actions without them")
            lanes[i] = {"case": j, "seed": seed, "policy": policy, "masked": masked,
                        "trace": EpisodeTrace(info_keys=info_keys), "t0": time.perf_counter(),
                        "total": 0.0, "steps": 0, "illegal": 0, "rollbacks": 0,
                        "counts": Counter(), "instance": None}
        if not any(mask):
            return None
        options = {"reset_mask": mask}
        if any(p is not None for p in pins):
            options["instance"] = pins
        new_obs, info = venv.reset(seed=seeds, options=options)
        for i in range(k):
            if mask[i]:
                lane_info = unbatch_info(info, i)
                lanes[i]["trace"].record(lane_info)  # type: ignore[index]
                lanes[i]["instance"] = lane_info.get("instance")  # type: ignore[index]
        return new_obs

    obs = start(list(range(k)))
    while any(lane is not None for lane in lanes):
        masks = venv.action_masks()
        actions = [0] * k
        for i, lane in enumerate(lanes):
            if lane is None:
                continue
            p = lane["policy"]
            a = p.predict(obs[i], action_masks=masks[i], deterministic=True)[0] if lane["masked"] \
                else p.predict(obs[i], deterministic=True)[0]
            actions[i] = int(a)
        obs, reward, terminated, truncated, info = venv.step(actions)
        ended = []
        for i, lane in enumerate(lanes):
            if lane is None:
                continue
            lane_info = unbatch_info(info, i)
            lane["total"] += float(reward[i])
            lane["steps"] += 1
            lane["illegal"] += int(lane_info["illegal_action"])
            lane["rollbacks"] += int(lane_info["rollback"])
            for e in lane_info["events"]:
                lane["counts"][e["to"].lower()] += 1
            lane["trace"].record(lane_info, lane_info["action_name"])
            if terminated[i] or truncated[i]:
                trace = lane["trace"]
                trace.wall_s = time.perf_counter() - lane["t0"]
                p = lane["policy"]
                results[lane["case"]] = (EpisodeResult(
                    policy=name or getattr(p, "name", type(p).__name__), seed=lane["seed"],
                    episode_return=lane["total"], final_val_acc=lane_info["final_val_acc"],
                    final_test_acc=lane_info["final_test_acc"],
                    params_added=lane_info["params_added"],
                    n_fossilized=lane_info["n_fossilized"], lifecycle=dict(lane["counts"]),
                    illegal_actions=lane["illegal"], rollbacks=lane["rollbacks"],
                    length=lane["steps"], instance=lane["instance"],
                    fossils=fossils(lane_info), host_params=int(lane_info["host_params"])),
                    trace)
                lanes[i] = None
                ended.append(i)
        if ended and queue:
            new = start(ended)
            if new is not None:
                obs = new
    return results  # type: ignore[return-value]
