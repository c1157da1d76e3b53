from __future__ import annotations

import subprocess
import sys

from agents.demo import main


def test_demo_prints_a_row_per_episode_and_a_summary(capsys):
    assert main(["--task", "synthetic", "--episodes", "2", "--max-epochs", "4",
                 "--blueprints", "norm"]) == 0
    out = capsys.readouterr().out
    for name in ("no-growth", "random", "scripted-norm"):
        assert out.count(f"\n{name} ") >= 2 or out.startswith(f"{name} ")
        assert f"{name:<22} mean test accuracy" in out


def test_demo_console_script_runs_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "agents.demo", "--task", "synthetic",
                           "--episodes", "1", "--max-epochs", "3", "--blueprints", "depthwise"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "scripted-depthwise" in proc.stdout
