"""Packaging facts: the licence that pyproject.toml declares is the one in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MIT_SENTENCES = [
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software and "
    'associated documentation files (the "Software"), to deal in the Software without restriction, '
    "including without limitation the rights to use, copy, modify, merge, publish, distribute, "
    "sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is "
    "furnished to do so, subject to the following conditions:",
    "The above copyright notice and this permission notice shall be included in all copies or "
    "substantial portions of the Software.",
    'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT '
    "NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND "
    "NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, "
    "DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT "
    "OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.",
]
"""The MIT licence's three paragraphs (https://opensource.org/license/mit), whitespace normalised."""


def test_license_file_is_the_mit_licence_of_the_esper_env_authors():
    path = ROOT / "LICENSE"
    assert path.is_file(), f"{path} is missing (pyproject.toml declares a licence)"
    lines = path.read_text().strip().splitlines()
    assert lines[0] == "MIT License"
    assert lines[2] == "Copyright (c) 2026 The esper_env authors"
    body = re.sub(r"\s+", " ", "\n".join(lines[3:])).strip()
    assert body == " ".join(MIT_SENTENCES)


def test_pyproject_declares_the_mit_licence():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    # setuptools ships LICENSE* by default; a license-files entry must keep LICENSE in the wheel
    assert any(Path("LICENSE").match(p) for p in project.get("license-files", ["LICENSE*"]))
