"""The README's Python examples run as written (on the fast synthetic task, with fewer steps)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
PRELUDE = "import gymnasium as gym\nimport numpy as np\nimport esper_env\n"  # snippets continue the first
FASTER = (('task="digits"', 'task="synthetic"'), ('{"task": "digits"}', '{"task": "synthetic"}'),
          ("total_timesteps=6_144", "total_timesteps=96"), ("progress_bar=True", "progress_bar=False"))


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_example_runs(code, tmp_path):
    for old, new in FASTER:
        code = code.replace(old, new)
    done = subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
