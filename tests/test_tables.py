"""Results tables state the episode version they were made with, and it is the current one.

A results table (a Markdown table whose header names test accuracy, return or a speed) is followed,
before the next heading or table, by its provenance: machine, torch, commit, the exact command and
"episode version N". A table of another episode version describes other episodes than the
installed code plays: regenerate it (docs/design.md, "Versioning").
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from esper_env.core.episode import EPISODE_VERSION

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = re.compile(r"test acc|return|steps/s|epochs/s|speedup", re.IGNORECASE)
VERSION = re.compile(r"episode version (\d+)", re.IGNORECASE)
REGENERATED = ("README.md",)
"""Pages whose every results table has been regenerated with its episode version stated."""


def results_tables(text: str) -> list[tuple[int, str, str]]:
    """(line, header, the text after the table up to the next heading or table) per results table."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header, j = lines[i], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            k = j
            while k < len(lines) and not lines[k].startswith(("#", "|")):
                k += 1
            if RESULTS.search(header):
                out.append((i + 1, header, "\n".join(lines[j:k])))
            i = k
        else:
            i += 1
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_stated_episode_version_is_the_current_one(page):
    for n in VERSION.findall(page.read_text()):
        assert int(n) == EPISODE_VERSION, (
            f"{page.name} has a table of episode version {n}; this code plays episode version "
            f"{EPISODE_VERSION}: regenerate it with the command it states")


@pytest.mark.parametrize("name", REGENERATED)
def test_every_results_table_of_a_regenerated_page_states_its_episode_version(name):
    tables = results_tables((ROOT / name).read_text())
    assert tables
    for line, header, after in tables:
        assert VERSION.search(after), f"{name}:{line} ({header[:60]}...) states no episode version"
        assert "commit" in after and "torch" in after, f"{name}:{line} lacks its provenance"


def test_the_table_finder_sees_tables_and_their_provenance():
    text = ("# t\n| policy | test acc % |\n|---|---|\n| a | 1 |\n\nDigits; commit abc, torch 2, "
            "episode version 1.\n\n## next\n| part | what |\n|---|---|\n| x | y |\n")
    (only,) = results_tables(text)
    assert only[0] == 2 and "episode version 1" in only[2]
