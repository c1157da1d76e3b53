"""Run every benchmark script with tiny settings so they cannot rot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def test_bench_growth_runs_and_saves_provenance(tmp_path, capsys):
    import bench_growth

    rec = bench_growth.main(["--task", "synthetic", "--seeds", "2", "--max-epochs", "3",
                             "--blueprints", "norm,conv_light", "--out", str(tmp_path)])
    assert set(rec["summary"]) == {"no-growth", "scripted-norm", "scripted-conv_light"}
    line = json.loads((tmp_path / "growth.jsonl").read_text().splitlines()[-1])
    for key in ("commit", "torch", "cpu", "summary"):
        assert key in line
    assert "vs no-growth" in capsys.readouterr().out


def test_bench_env_step_runs_and_reports_ratios(tmp_path):
    import bench_env_step

    (r,) = bench_env_step.main(["--tasks", "synthetic", "--repeats", "1", "--max-epochs", "3",
                                "--out", str(tmp_path)])
    assert r["no_growth_steps_per_s"] > 0 and r["bare_epochs_per_s"] > 0
    assert r["overhead_no_growth"] == pytest.approx(
        r["bare_epochs_per_s"] / r["no_growth_steps_per_s"])
    assert r["overhead_growth"] >= 1.0  # step time includes the trainer's compute
    assert (tmp_path / "env_step.jsonl").exists()
