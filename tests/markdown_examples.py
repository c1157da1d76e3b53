"""Run the Python examples of a Markdown file as written (README.md and the docs pages).

Every ```python block runs in a fresh interpreter, in a temporary folder, with the imports of the
first README example as a prelude (later snippets continue it), on the fast synthetic task and with
fewer training steps.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELUDE = "import gymnasium as gym\nimport numpy as np\nimport esper_env\n"
FASTER = (('task="digits"', 'task="synthetic"'), ('{"task": "digits"}', '{"task": "synthetic"}'),
          ("total_timesteps=6_144", "total_timesteps=96"), ("progress_bar=True", "progress_bar=False"))


def python_blocks(path: Path) -> list[str]:
    """The ```python code blocks of a Markdown file, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def run_example(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run one example (made faster) in a subprocess; return the finished process."""
    for old, new in FASTER:
        code = code.replace(old, new)
    return subprocess.run([sys.executable, "-c", PRELUDE + code], capture_output=True, text=True,
                          timeout=300, cwd=cwd)
