from __future__ import annotations

import json
import subprocess
import sys


def test_demo_trains_then_prints_the_comparison_table(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "agents.demo", "--task", "synthetic", "--max-epochs", "6",
                           "--total-timesteps", "96", "--episodes", "2", "--output", str(out),
                           "--no-progress-bar"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("demo", "random", "no-growth", "heuristic"):
        assert f"\n{name} " in proc.stdout
    assert (out / "best_model.zip").exists() and (out / "tb").is_dir()
    data = json.loads((out / "eval.json").read_text())
    assert set(data["summary"]) == {"demo", "random", "no-growth", "heuristic"}
    assert "minus no-growth's on the same episodes" in proc.stdout
