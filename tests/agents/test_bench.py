"""esper-bench: same episodes for every policy, bootstrap statistics, paired differences, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_CLI

from agents.bench import main
from agents.stats import bootstrap_ci
from esper_env.nn.blueprints import available_blueprints

TINY = TINY_CLI


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    x = np.random.default_rng(0).normal(5.0, 1.0, 40)
    m, lo, hi = bootstrap_ci(x)
    assert lo < m < hi and m == pytest.approx(x.mean())
    assert bootstrap_ci(x) == (m, lo, hi)
    assert hi - lo == pytest.approx(2 * 1.96 * x.std(ddof=1) / np.sqrt(40), rel=0.25)
    assert bootstrap_ci([3.0, 3.0]) == (3.0, 3.0, 3.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])


def _run(tmp_path, *extra):
    out = tmp_path / "bench"
    assert main([*TINY, "--seeds", "3", "--policies", "no-growth,random,heuristic,ucb-heuristic,scripted",
                 "--out", str(out), *extra]) == 0
    return out, json.loads((out / "bench.jsonl").read_text().splitlines()[-1])


def test_esper_bench_plays_identical_episodes_and_reports_paired_statistics(tmp_path, capsys):
    out, rec = _run(tmp_path)
    episodes = [e for e in rec["episodes"] if e.get("reference") is None]  # not the built-big pairs
    policies = {e["policy"] for e in episodes}
    assert policies == {"no-growth", "random", "heuristic", "ucb-heuristic", "scripted-norm",
                        "scripted-attention", "scripted-depthwise", "scripted-conv_light",
                        "scripted-conv_heavy"}
    for p in policies:
        for mode in ("contribution", "delta", "sparse"):
            assert sorted(e["seed"] for e in episodes if e["policy"] == p and e["reward_mode"] == mode) \
                == [1000, 1001, 1002]
    # the reward mode never changes what happens
    key = lambda e: (e["policy"], e["seed"])  # noqa: E731
    by_mode = {m: {key(e): e for e in episodes if e["reward_mode"] == m} for m in ("contribution", "sparse")}
    for k, e in by_mode["contribution"].items():
        assert e["final_test_acc"] == by_mode["sparse"][k]["final_test_acc"]
        assert e["actions"] == by_mode["sparse"][k]["actions"]
    summary = rec["summary"]
    assert summary["best_fixed"].startswith("scripted-")
    ng = {e["seed"]: e["final_test_acc"] for e in episodes
          if e["policy"] == "no-growth" and e["reward_mode"] == "contribution"}
    h = [e["final_test_acc"] - ng[e["seed"]] for e in episodes
         if e["policy"] == "heuristic" and e["reward_mode"] == "contribution"]
    d = summary["policies"]["heuristic"]["final_test_acc_minus_no-growth"]
    assert d["mean"] == pytest.approx(np.mean(h)) and d["lo"] <= d["mean"] <= d["hi"]
    e0 = episodes[0]
    assert len(e0["val_curve"]) == len(e0["stages"]) == len(e0["actions"]) + 1 == 12
    assert [c["mode"] for c in rec["integrity"]] == ["contribution", "delta", "sparse"]
    text = (out / "table.md").read_text()
    assert "| heuristic |" in text and "Spearman(mean return, mean test acc)" in text
    for key in ("commit", "torch", "machine"):
        assert key in rec


def _strip(rec):
    return [{k: v for k, v in e.items() if k != "wall_s"} for e in rec["episodes"]]


def _progress_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("esper-bench: ")]


def _check_progress(err: str, episodes: int) -> int:
    """One line per finished task, counting up to the totals; returns the task count."""
    lines = _progress_lines(err)
    tasks = int(lines[-1].split()[1].split("/")[1])
    assert len(lines) == tasks
    assert [int(line.split()[1].split("/")[0]) for line in lines] == list(range(1, tasks + 1))
    assert f"{tasks}/{tasks} tasks, {episodes}/{episodes} episodes" in lines[-1]
    assert "episodes/s" in lines[-1] and "left" in lines[-1]
    return tasks


def test_esper_bench_results_do_not_depend_on_workers_or_chunks(tmp_path, capsys):
    _, one = _run(tmp_path / "a", "--reward-modes", "contribution", "--no-plots")
    tasks = _check_progress(capsys.readouterr().err, 27)  # 9 policies x 3 seeds
    _, two = _run(tmp_path / "b", "--reward-modes", "contribution", "--workers", "2", "--chunk", "2",
                  "--no-plots")
    assert _check_progress(capsys.readouterr().err, 27) > tasks  # chunks of 2, from workers
    assert _strip(one) == _strip(two)
    _run(tmp_path / "c", "--reward-modes", "contribution", "--no-plots", "--quiet")
    assert _progress_lines(capsys.readouterr().err) == []


def test_esper_bench_on_a_local_two_cpu_ray_instance_gives_identical_results(tmp_path, capsys):
    _, local = _run(tmp_path / "a", "--reward-modes", "contribution", "--no-plots", "--chunk", "1")
    capsys.readouterr()
    _, on_ray = _run(tmp_path / "b", "--reward-modes", "contribution", "--no-plots", "--ray",
                     "--workers", "2", "--chunk", "2")
    _check_progress(capsys.readouterr().err, 27)
    assert _strip(local) == _strip(on_ray)


def test_a_table_without_scripted_policies_has_no_best_fixed_column(tmp_path):
    out = tmp_path / "bench"
    assert main([*TINY, "--seeds", "2", "--policies", "no-growth,heuristic", "--reward-modes",
                 "contribution", "--no-plots", "--quiet", "--out", str(out)]) == 0
    head = (out / "table.md").read_text().splitlines()[0]
    assert "best fixed" not in head and "test acc − no-growth (pp)" in head


def test_esper_bench_rejects_unknown_reward_modes(capsys):
    assert main([*TINY, "--reward-modes", "dense"]) == 2
    assert "dense" in capsys.readouterr().err
    assert main([*TINY, "--chunk", "0"]) == 2
    assert "--chunk 0" in capsys.readouterr().err


def test_pareto_front_keeps_exactly_the_undominated_points():
    from agents.plots import pareto_front

    pts = np.array([[0, 80.0], [10, 79.0], [10, 85.0], [20, 85.0], [30, 90.0], [5, 80.0], [40, 89.0]])
    assert pareto_front(pts).tolist() == [0, 2, 4]
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(50, 2))
    front = set(pareto_front(pts).tolist())
    for i, p in enumerate(pts):
        dominated = any((q[0] <= p[0] and q[1] >= p[1] and (q != p).any()) for q in pts)
        assert (i in front) == (not dominated)


def test_esper_bench_draws_four_pictures_that_name_their_policies(tmp_path):
    """A tiny run draws the forest plot, the gain curves (with the best script, static reference
    and agent chosen on another run's cases), gain against parameters and the timelines; each
    names its policies (pictures.json holds what the legend or axis shows).
    """  # noqa: D205
    select, _ = _run(tmp_path / "select", "--reward-modes", "contribution", "--first-seed", "0",
                     "--no-plots", "--policies", "no-growth,heuristic,scripted,static")
    out, rec = _run(tmp_path / "shown", "--reward-modes", "contribution", "--policies",
                    "no-growth,heuristic,scripted,static", "--select-on",
                    str(select / "bench.jsonl"))
    index = json.loads((out / "pictures.json").read_text())
    for name in ("forest.png", "gain_curves.png", "gain_vs_params.png", "timelines.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 300_000
    table = json.loads((select / "bench.jsonl").read_text().splitlines()[-1])["summary"]["policies"]
    best = {kind: max((p for p in table if p.startswith(kind)),
                      key=lambda p: table[p]["final_test_acc"]["mean"])
            for kind in ("scripted-", "static-")}
    assert index["gain_curves.png"] == ["no-growth", "heuristic", best["scripted-"], best["static-"]]
    assert index["curves"]["selected_on"] == str(select / "bench.jsonl")
    played = {e["policy"] for e in rec["episodes"] if e.get("reference") is None}
    assert set(index["forest.png"]) == played - {"no-growth"}
    assert set(index["timelines.png"]) == played
    assert played <= set(index["gain_vs_params.png"])
    assert any(label.startswith("front, host of") for label in index["gain_vs_params.png"])
    e0 = rec["episodes"][0]
    assert len(e0["test_curve"]) == len(e0["val_curve"]) and e0["test_curve"][-1] == e0["final_test_acc"]


def test_selecting_the_curve_policies_on_the_cases_shown_is_refused(tmp_path, capsys):
    select, _ = _run(tmp_path / "select", "--reward-modes", "contribution", "--no-plots")
    assert main([*TINY, "--seeds", "3", "--select-on", str(select / "bench.jsonl"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "shares 3 cases with this run (e.g. seed 1000)" in capsys.readouterr().err
    assert main([*TINY, "--curve-policies", "no-growth,oracle", "--out", str(tmp_path / "x")]) == 2
    assert "--curve-policies 'oracle' does not play in this run" in capsys.readouterr().err


def test_gain_curves_align_episodes_on_their_own_budget():
    from agents.plots import GRID, gain_curves

    def ep(policy, seed, curve):
        return {"policy": policy, "seed": seed, "instance": None, "test_curve": curve}

    episodes = [ep("no-growth", 1, [10.0] * 5), ep("p", 1, [10.0, 10.0, 10.0, 10.0, 20.0]),
                ep("no-growth", 2, [0.0] * 10), ep("p", 2, [float(i) for i in range(10)])]
    g = gain_curves(episodes, "p")
    assert g.shape == (2, len(GRID))
    assert g[0, -1] == 10.0 and g[1, -1] == 9.0  # the last epoch of each, at fraction 1
    assert g[1, 9] == pytest.approx(4.0)  # fraction 0.5 of a 10-epoch episode: epoch 5
    with pytest.raises(ValueError, match="need no-growth"):
        gain_curves([ep("p", 1, [1.0])], "p")


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # see transformer.py
def test_esper_bench_on_tinytext_plays_the_transformer_blueprints(tmp_path):
    text = ["--task", "tinytext", "--env-kwarg", "train_subset=32", "--env-kwarg", "batch_size=16",
            "--env-kwarg", "block_size=8", "--env-kwarg", "n_embd=16", "--env-kwarg", "n_layer=1"]
    out, rec = _run(tmp_path, *text, "--seeds", "1", "--reward-modes", "contribution", "--no-plots",
                    "--no-built-big")
    episodes = rec["episodes"]
    scripted = {f"scripted-{b}" for b in available_blueprints("transformer")}
    assert {e["policy"] for e in episodes} == {"no-growth", "random", "heuristic", "ucb-heuristic"} | scripted
    assert "tinytext, seeds 1000–1000" in (out / "table.md").read_text()
    assert sorted(e["seed"] for e in episodes) == [1000] * 9
    assert all(e["illegal_actions"] == 0 for e in episodes)
    grown = [e for e in episodes if e["policy"] == "scripted-attention"]
    assert all(e["actions"][0] != 0 for e in grown), "the script germinates at its first legal epoch"
