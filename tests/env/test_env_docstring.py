"""The EsperEnv docstring documents the observation: every feature, its bounds, the block sizes."""

from __future__ import annotations

import re
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs

from esper_env.core.lifecycle import SeedStage
from esper_env.env import EsperEnv

SLOT = re.compile(r"^slot\d+_")
HISTORY = re.compile(r"^(?P<prefix>.+_)(?P<index>\d+)$")


def _observation_table() -> dict[str, tuple[str, str]]:
    """Rows of the docstring's observation table: feature cell -> (meaning, bounds)."""
    doc = EsperEnv.__doc__ or ""
    section = doc.split("## Observation Space", 1)[1].split("\n    ## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and line.strip().startswith("|") and not set(cells[0]) <= {"-"}:
            if cells[0] != "feature":
                rows[cells[0]] = (cells[1], cells[2])
    return rows


def _table_rows(feature_names: tuple[str, ...]) -> dict[str, list[int]]:
    """Expected table row for each feature (slot index -> ``{s}``, suffix families collapsed to the
    table's notation), mapped to the feature indices the row documents."""
    stage_names = [s.name.lower() for s in SeedStage]
    names = [SLOT.sub("slot{s}_", n) for n in feature_names]
    history_ranges: dict[str, list[int]] = {}
    for n in names:
        m = HISTORY.match(n)
        if m:
            history_ranges.setdefault(m["prefix"], []).append(int(m["index"]))
    rows: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        m = HISTORY.match(n)
        if m:
            idx = history_ranges[m["prefix"]]
            row = f"{m['prefix']}{min(idx)}..{max(idx)}"
        elif n.startswith("slot{s}_stage_"):
            assert n.removeprefix("slot{s}_stage_") in stage_names
            row = f"slot{{s}}_stage_{{{stage_names[0]}..{stage_names[-1]}}}"
        elif n.startswith("slot{s}_blueprint_"):
            row = "slot{s}_blueprint_{name}"
        else:
            row = n
        rows.setdefault(row, []).append(i)
    return rows


def _bounds(cell: str) -> tuple[float, float]:
    m = re.fullmatch(r"\[(-?[\d.]+), (-?[\d.]+)\]|\{(-?[\d.]+), (-?[\d.]+)\}", cell)
    assert m, cell
    lo, hi = (m[1], m[2]) if m[1] is not None else (m[3], m[4])
    return float(lo), float(hi)


@pytest.fixture(scope="module", params=[1, 3], ids=["1-slot", "3-slots"])
def env(request: pytest.FixtureRequest) -> EsperEnv:
    return gym.make("Esper-v0", **tiny_kwargs(n_slots=request.param)).unwrapped


def test_docstring_table_documents_every_observation_feature(env: EsperEnv) -> None:
    table = _observation_table()
    expected = _table_rows(env.feature_names)
    missing = sorted(set(expected) - set(table))
    assert missing == []
    doc = EsperEnv.__doc__ or ""
    for row in expected:
        assert row in doc


def test_docstring_table_has_no_rows_for_missing_features(env: EsperEnv) -> None:
    assert sorted(set(_observation_table()) - set(_table_rows(env.feature_names))) == []


def test_docstring_table_bounds_match_observation_space(env: EsperEnv) -> None:
    table = _observation_table()
    low, high = env.observation_space.low, env.observation_space.high
    for row, indices in _table_rows(env.feature_names).items():
        lo, hi = _bounds(table[row][1])
        assert np.all(low[indices] == lo) and np.all(high[indices] == hi), row


def test_docstring_block_sizes_match_observation_space(env: EsperEnv) -> None:
    doc = " ".join((EsperEnv.__doc__ or "").split())
    m = re.search(r"a global block of (\d+) features, then one block of (\d+) features per slot "
                  r"\((\d+) \+ B\)", doc)
    assert m, "the docstring states the block sizes"
    documented_global, documented_slot, documented_fixed = (int(g) for g in m.groups())
    per_block = Counter(SLOT.match(n)[0] if SLOT.match(n) else "global" for n in env.feature_names)
    n_slots = env.config.host.n_slots
    actual_slot = per_block["slot0_"]
    actual = (per_block["global"], actual_slot, actual_slot - len(env.blueprints))
    assert (documented_global, documented_slot, documented_fixed) == actual
    assert env.observation_space.shape == (per_block["global"] + n_slots * actual_slot,)


def test_docstring_names_every_contribution_reward_term() -> None:
    doc = EsperEnv.__doc__ or ""
    env = gym.make("Esper-v0", **tiny_kwargs())
    _, info = env.reset(seed=0)
    assert len(info["reward_terms"]) == 7
    for term in info["reward_terms"]:
        assert f"``{term}``" in doc, term
