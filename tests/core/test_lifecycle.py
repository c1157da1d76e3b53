"""Seed lifecycle table (spec section 5): every (stage, event) pair, stage values, stage groups."""

from __future__ import annotations

import itertools
import re

import pytest

from esper_env.core.lifecycle import (
    COOLDOWN_STAGES,
    LIVE_STAGES,
    MODULE_STAGES,
    TRANSITIONS,
    SeedEvent,
    SeedStage,
    next_stage,
)
from esper_env.errors import InvalidTransition

S, E = SeedStage, SeedEvent

# Written by hand from spec section 5, not copied from TRANSITIONS.
EXPECTED: dict[tuple[SeedStage, SeedEvent], SeedStage] = {
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

ALL_PAIRS = list(itertools.product(SeedStage, SeedEvent))


@pytest.mark.parametrize(("stage", "event"), ALL_PAIRS,
                         ids=[f"{s.name}-{e.name}" for s, e in ALL_PAIRS])
def test_next_stage_every_pair_follows_spec_table(stage: SeedStage, event: SeedEvent) -> None:
    if (stage, event) in EXPECTED:
        assert next_stage(stage, event) is EXPECTED[(stage, event)]
    else:
        msg = f"no transition from {stage.name} on {event.name}"
        with pytest.raises(InvalidTransition, match=f"^{re.escape(msg)}$"):
            next_stage(stage, event)


def test_transitions_table_equals_hand_written_table() -> None:
    assert TRANSITIONS == EXPECTED


def test_seed_stage_integer_values_are_fixed() -> None:
    assert {s.name: int(s) for s in SeedStage} == {
        "DORMANT": 1, "GERMINATED": 2, "TRAINING": 3, "BLENDING": 4, "PROBATIONARY": 6,
        "FOSSILIZED": 7, "CULLED": 8, "EMBARGOED": 9, "RESETTING": 10,
    }
    assert 5 not in {int(s) for s in SeedStage}


def test_next_stage_fossilized_has_no_outgoing_move() -> None:
    for event in SeedEvent:
        with pytest.raises(InvalidTransition):
            next_stage(SeedStage.FOSSILIZED, event)
    assert not any(stage == SeedStage.FOSSILIZED for stage, _ in TRANSITIONS)


def test_next_stage_accepts_plain_int_stage_in_message() -> None:
    # The message names the stage even when the caller passes the IntEnum's integer value.
    with pytest.raises(InvalidTransition, match=r"^no transition from FOSSILIZED on CULL$"):
        next_stage(7, SeedEvent.CULL)  # type: ignore[arg-type]


def test_invalid_transition_is_a_runtime_error() -> None:
    with pytest.raises(RuntimeError):
        next_stage(SeedStage.DORMANT, SeedEvent.CULL)


def test_stage_groups_match_spec() -> None:
    assert LIVE_STAGES == {S.GERMINATED, S.TRAINING, S.BLENDING, S.PROBATIONARY}
    assert MODULE_STAGES == LIVE_STAGES | {S.FOSSILIZED}
    assert COOLDOWN_STAGES == {S.CULLED, S.EMBARGOED, S.RESETTING}
    # exactly the live stages can be culled
    assert {s for s, e in EXPECTED if e == E.CULL} == LIVE_STAGES


def test_cooldown_chain_returns_to_dormant() -> None:
    stage = next_stage(S.PROBATIONARY, E.CULL)
    seen = [stage]
    while stage != S.DORMANT:
        stage = next_stage(stage, E.ADVANCE)
        seen.append(stage)
    assert seen == [S.CULLED, S.EMBARGOED, S.RESETTING, S.DORMANT]
