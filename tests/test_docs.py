"""The documentation site builds with ``mkdocs build --strict`` (broken links and anchors, pages
missing from the nav and mkdocstrings references to names that do not exist all fail it), the env
page holds the manual rendered from the ``EsperEnv`` docstring, and every Python example of the
pages runs as written (on the fast synthetic task, with fewer steps; an example that is also in the
README runs in ``test_readme.py``).

The build takes about 2 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_examples import ROOT, python_blocks, run_example

PAGES = sorted((ROOT / "docs").glob("*.md"))
README_BLOCKS = python_blocks(ROOT / "README.md")  # run by test_readme.py
EXAMPLES: dict[str, str] = {}  # id -> code, each distinct example once
for _page in PAGES:
    for _i, _code in enumerate(python_blocks(_page)):
        if _code not in EXAMPLES.values() and _code not in README_BLOCKS:
            EXAMPLES[f"{_page.stem}-{_i}"] = _code


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's banner about MkDocs 2.0
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_docs_build_strict(site):
    for page in PAGES:
        name = "" if page.stem == "index" else f"{page.stem}/"
        assert (site / name / "index.html").is_file(), page.name


def test_env_page_renders_the_manual(site):
    html = (site / "env" / "index.html").read_text()
    assert 'id="esper_env.env.EsperEnv"' in html
    for section in ("Description", "Action Space", "Observation Space", "Rewards", "Episode End",
                    "Arguments", "Version History"):
        anchor = "esper_env.env.EsperEnv--" + section.lower().replace(" ", "-")
        assert f'id="{anchor}"' in html and f">{section}<" in html, section
    # the observation feature table, global block and per-slot block
    for feature in ("epoch_fraction", "val_acc_hist_0..4", "label_noise",
                    "slot{s}_stage_{dormant..resetting}", "slot{s}_counterfactual",
                    "slot{s}_blueprint_{name}"):
        assert f"<td>{feature}</td>" in html, feature
    assert ":class:" not in html and ":mod:" not in html  # the Sphinx roles became links or code


def test_reference_pages_render(site):
    expected = {"config": ["esper_env.config.EsperConfig", "esper_env.config.GateConfig",
                           "esper_env.config.RewardConfig", "esper_env.config.GovernorConfig"],
                "instances": ["esper_env.core.instances.Instance", "esper_env.core.instances.InstanceSet"],
                "records": ["esper_env.records.RecordEpisodes", "esper_env.records.replay"],
                "training": ["agents.heuristic.HeuristicPolicy", "agents.curriculum.BlueprintCurriculum",
                             "agents.per_buffer.PrioritizedReplayBuffer"]}
    for page, ids in expected.items():
        html = (site / page / "index.html").read_text()
        for ident in ids:
            assert f'id="{ident}"' in html, (page, ident)


def test_benchmark_pictures_are_published(site):
    for run in ("bench-digits", "bench-digits-mix"):
        for name in ("forest.png", "gain_curves.png", "gain_vs_params.png", "timelines.png"):
            assert (site / "results" / run / name).is_file()


def test_docs_have_python_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("code", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_docs_python_example_runs(code, tmp_path):
    done = run_example(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
