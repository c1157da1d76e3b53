"""The README's Python examples run as written (on the fast synthetic task, with fewer steps), and
every relative link in it resolves to a file of the repository or a heading of the README.

The examples and links of the documentation pages are checked by ``test_docs.py``.
"""

from __future__ import annotations

import re

import pytest
import yaml
from markdown_examples import ROOT, python_blocks, run_example

README = ROOT / "README.md"
BLOCKS = python_blocks(README)
TEXT = README.read_text()
# Inline links and images [text](target) (outside code spans), and reference definitions [x]: target.
LINKS = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", re.sub(r"`[^`\n]*`", "", TEXT))
LINKS += re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", TEXT, flags=re.M)
RELATIVE = [link for link in LINKS if not re.match(r"[a-z][a-z0-9+.-]*:", link)]


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def nav_pages(nav: list) -> set[str]:
    pages: set[str] = set()
    for entry in nav:
        for value in (entry.values() if isinstance(entry, dict) else [entry]):
            pages |= nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 1


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_example_runs(code, tmp_path):
    done = run_example(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_readme_has_relative_links():
    assert any(link.startswith("docs/") for link in RELATIVE)


@pytest.mark.parametrize("link", sorted(set(RELATIVE)))
def test_readme_relative_link_resolves(link):
    path, _, anchor = link.partition("#")
    if not path:  # a heading of the README itself
        headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", TEXT, flags=re.S | re.M),
                              flags=re.M)
        assert anchor in {github_slug(h) for h in headings}, f"no heading with anchor #{anchor}"
        return
    target = (ROOT / path).resolve()
    assert target.exists(), f"{link}: {target} does not exist"
    docs = ROOT / "docs"
    if target.suffix == ".md" and docs in target.parents:  # a page of the site, not a stray file
        config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
        assert target.relative_to(docs).as_posix() in nav_pages(config["nav"]), f"{link} is not in the nav"
