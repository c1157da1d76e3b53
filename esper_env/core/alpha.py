"""Alpha (blend weight) schedules and the alpha controller (spec section 6).

Pure module. The controller either ramps toward a target or holds; a new target may only be set
while it holds (never mid-ramp), and it snaps exactly to the target at the end of the ramp. It is
driven once per epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from esper_env.errors import ConfigError, InvalidTransition


def schedule_value(schedule: str, step: int, total: int) -> float:
    """Fraction of the ramp done after ``step`` of ``total`` steps, in [0, 1].

    ``sigmoid`` is the anchor's logistic curve centred at total/2 with temperature 1 (for total 5:
    0.18, 0.38, 0.62, 0.82, 1.0); ``linear`` is step/total; ``cosine`` is (1 - cos(pi step/total))/2.
    ``step <= 0`` gives 0 and ``step >= total`` gives exactly 1 for every schedule.
    """
    total = max(1, int(total))
    if step <= 0:
        return 0.0
    if step >= total:
        return 1.0
    if schedule == "linear":
        return step / total
    if schedule == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * step / total))
    if schedule == "sigmoid":
        return 0.5 * (1.0 + math.tanh((step - total / 2.0) / 2.0))
    raise ConfigError(f"alpha_schedule={schedule!r} is invalid; allowed: 'linear', 'cosine', 'sigmoid'")


@dataclass(frozen=True, slots=True)
class AlphaController:
    """Immutable alpha state: ``alpha`` now, and an optional ramp from ``start`` to ``target``."""

    alpha: float = 0.0
    start: float = 0.0
    target: float = 0.0
    steps_total: int = 0
    steps_done: int = 0
    schedule: str = "sigmoid"

    @property
    def is_ramping(self) -> bool:
        """True while a ramp is in progress."""
        return self.steps_done < self.steps_total

    def start_ramp(self, target: float, steps: int) -> AlphaController:
        """Begin a ramp from the current alpha to ``target`` over ``steps`` epochs.

        Raises:
            InvalidTransition: a ramp is already in progress (targets change only while holding).
        """
        if self.is_ramping:
            raise InvalidTransition("alpha target changed mid-ramp; wait until the ramp holds")
        target = min(1.0, max(0.0, float(target)))
        return replace(self, start=self.alpha, target=target, steps_total=max(1, int(steps)),
                       steps_done=0)

    def step(self) -> AlphaController:
        """Advance one epoch along the ramp (holding: no change). Snaps to target at the end."""
        if not self.is_ramping:
            return self
        done = self.steps_done + 1
        if done >= self.steps_total:
            alpha = self.target
        else:
            frac = schedule_value(self.schedule, done, self.steps_total)
            alpha = self.start + (self.target - self.start) * frac
        return replace(self, alpha=min(1.0, max(0.0, alpha)), steps_done=done)
