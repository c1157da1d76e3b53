"""The fixed policies of the integrity and instances studies, by name (a :class:`~.core.Player` factory).

* ``no-growth``, ``random``, ``heuristic``: the baselines (:func:`agents.policies.make_baseline`);
  random is seeded by the case (``seed + 7919·k`` on instance k), so every reward mode replays it;
* ``early-<bp>`` (``early-<bp>@<slot>``): germinate ``bp`` (into ``slot``, default 0) as soon as the
  mask allows, fossilize as soon as allowed;
* ``late-<bp>`` (``late-<bp>@<slot>``): the same, but never germinate before ``late_fraction`` of
  the episode's epoch budget (the instance's, on an instance split).
"""

from __future__ import annotations

from typing import Any

from agents.policies import ScriptedPolicy, make_baseline

BASELINES = ("no-growth", "random", "heuristic")
"""Zoo names that are baselines."""

RANDOM_STRIDE = 7919
"""Seed offset per instance index of the random policy (seed + 7919·k)."""


def fixed_names(blueprints: list[str], n_slots: int = 1) -> list[str]:
    """``early-`` then ``late-`` policies of every blueprint (× slot when there are several slots)."""
    out = []
    for when in ("early", "late"):
        for b in blueprints:
            out += [f"{when}-{b}"] if n_slots == 1 else [f"{when}-{b}@{s}" for s in range(n_slots)]
    return out


def zoo_policy(name: str, env: Any, seed: int, options: dict[str, Any] | None,
               late_fraction: float) -> Any:
    """Build zoo policy ``name`` for the episode of ``seed`` and reset ``options``."""
    k = None if options is None else options["instance"]
    if name in BASELINES:
        return make_baseline(name, env, seed=seed + RANDOM_STRIDE * (k or 0))
    base = env.unwrapped
    max_epochs = base.config.task.max_epochs if k is None else base.instances[k].max_epochs
    when, rest = name.split("-", 1)
    bp, _, slot = rest.partition("@")
    late = int(round(late_fraction * max_epochs)) if when == "late" else 0
    return ScriptedPolicy(env, bp, slot=int(slot or 0), earliest_epoch=late)
