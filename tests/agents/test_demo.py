from __future__ import annotations

import json
import subprocess
import sys

from proctree import kill_tagged, new_tag, tagged_env, wait_until_gone


def test_demo_trains_then_prints_the_comparison_table(tmp_path):
    """Also: the demo leaves no process behind (tests/agents/test_processes.py for an error or a kill)."""
    out = tmp_path / "demo"
    tag = new_tag()
    try:
        proc = subprocess.run([sys.executable, "-m", "agents.demo", "--task", "synthetic",
                               "--max-epochs", "6", "--total-timesteps", "96", "--episodes", "2",
                               "--output", str(out), "--no-progress-bar"], capture_output=True,
                              text=True, timeout=300, env=tagged_env(tag), start_new_session=True)
        left = wait_until_gone(tag, 5.0) if sys.platform.startswith("linux") else {}
    finally:
        if sys.platform.startswith("linux"):
            kill_tagged(tag)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert left == {}, f"processes the demo started are still running: {left}"
    for name in ("demo", "random", "no-growth", "heuristic"):
        assert f"\n{name} " in proc.stdout
    assert (out / "best_model.zip").exists() and (out / "tb").is_dir()
    data = json.loads((out / "eval.json").read_text())
    assert set(data["summary"]) == {"demo", "random", "no-growth", "heuristic"}
    assert "minus no-growth's on the same episodes" in proc.stdout
