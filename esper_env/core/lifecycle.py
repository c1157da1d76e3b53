"""Seed lifecycle: stages, events and the one table of legal transitions (spec section 5).

Pure module. ``next_stage(stage, event)`` is the only way a stage changes; anything not in
:data:`TRANSITIONS` raises :class:`~esper_env.errors.InvalidTransition`.
"""

from __future__ import annotations

from enum import Enum, IntEnum

from esper_env.errors import InvalidTransition


class SeedStage(IntEnum):
    """Stage of a slot's seed. Integer values are part of the observation encoding; keep them.

    5 (SHADOWING in the anchor) is retired and must not be reused.
    """

    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    PROBATIONARY = 6
    FOSSILIZED = 7
    CULLED = 8
    EMBARGOED = 9
    RESETTING = 10


class SeedEvent(Enum):
    """What moves a stage: the agent's verbs plus the automatic ADVANCE."""

    GERMINATE = "germinate"
    ADVANCE = "advance"
    FOSSILIZE = "fossilize"
    CULL = "cull"


S, E = SeedStage, SeedEvent

TRANSITIONS: dict[tuple[SeedStage, SeedEvent], SeedStage] = {
    (S.DORMANT, E.GERMINATE): S.GERMINATED,
    (S.GERMINATED, E.ADVANCE): S.TRAINING,
    (S.GERMINATED, E.CULL): S.CULLED,
    (S.TRAINING, E.ADVANCE): S.BLENDING,
    (S.TRAINING, E.CULL): S.CULLED,
    (S.BLENDING, E.ADVANCE): S.PROBATIONARY,
    (S.BLENDING, E.CULL): S.CULLED,
    (S.PROBATIONARY, E.FOSSILIZE): S.FOSSILIZED,
    (S.PROBATIONARY, E.CULL): S.CULLED,
    (S.CULLED, E.ADVANCE): S.EMBARGOED,
    (S.EMBARGOED, E.ADVANCE): S.RESETTING,
    (S.RESETTING, E.ADVANCE): S.DORMANT,
}
"""Every legal (stage, event) -> stage move. FOSSILIZED has no way out."""

del S, E

LIVE_STAGES = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING,
                         SeedStage.PROBATIONARY})
"""Stages whose seed may still be culled (GERMINATED ... PROBATIONARY)."""

MODULE_STAGES = LIVE_STAGES | {SeedStage.FOSSILIZED}
"""Stages in which the slot holds a seed module (and pays rent for it)."""

COOLDOWN_STAGES = frozenset({SeedStage.CULLED, SeedStage.EMBARGOED, SeedStage.RESETTING})
"""Stages after a cull, before the slot is DORMANT again."""


def next_stage(stage: SeedStage, event: SeedEvent) -> SeedStage:
    """Return the stage that ``event`` leads to from ``stage``.

    Raises:
        InvalidTransition: the move is not in :data:`TRANSITIONS`.
    """
    try:
        return TRANSITIONS[(stage, event)]
    except KeyError:
        raise InvalidTransition(
            f"no transition from {SeedStage(stage).name} on {event.name}"
        ) from None
