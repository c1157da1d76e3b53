"""esper-bench's static references: static-<blueprint> rows and the "built big" pairing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_CLI

from agents.bench import BUILT_BIG, main


def _bench(tmp_path, *args):
    out = tmp_path / "bench"
    assert main([*args, "--reward-modes", "contribution", "--no-plots", "--quiet",
                 "--out", str(out)]) == 0
    return json.loads((out / "bench.jsonl").read_text().splitlines()[-1]), (out / "table.md").read_text()


def test_static_rows_and_each_episode_paired_with_its_own_architecture_built_big(tmp_path):
    rec, table = _bench(tmp_path, *TINY_CLI, "--n-slots", "2", "--seeds", "3", "--policies",
                        "no-growth,random,scripted-conv_light,static-conv_light")
    episodes = rec["episodes"]
    static = {e["seed"]: e for e in episodes if e["policy"] == "static-conv_light"}
    assert sorted(static) == [1000, 1001, 1002]
    assert all(e["fossils"] == [[0, "conv_light"]] and e["n_fossilized"] == 1 for e in static.values())
    ng = {e["seed"]: e for e in episodes if e["policy"] == "no-growth"}
    extra = [e for e in episodes if e.get("reference") == BUILT_BIG]
    refs = {(tuple(map(tuple, e["fossils"])), e["seed"]): e for e in [*static.values(), *extra]}
    grown = [e for e in episodes if e["policy"] in ("random", "scripted-conv_light")]
    assert any(e["fossils"] for e in grown), "nothing fossilized: the pairing is not exercised"
    for p in ("random", "scripted-conv_light"):
        d = []
        for e in (e for e in grown if e["policy"] == p):
            arch = tuple(map(tuple, e["fossils"]))
            ref = refs[arch, e["seed"]] if arch else ng[e["seed"]]
            d.append(e["final_test_acc"] - ref["final_test_acc"])
        got = rec["summary"]["policies"][p]["final_test_acc_minus_built_big"]
        assert got["mean"] == pytest.approx(np.mean(d))
    # an extra reference exists exactly for the grown architectures no static-* row covers
    needed = {(tuple(map(tuple, e["fossils"])), e["seed"]) for e in grown
              if e["fossils"] and e["fossils"] != [[0, "conv_light"]]}
    assert {(tuple(map(tuple, e["fossils"])), e["seed"]) for e in extra} == needed
    assert extra and all(e["policy"].startswith(BUILT_BIG) for e in extra)
    assert "test acc − built big (pp)" in table
    assert BUILT_BIG not in {p.split()[0] for p in rec["summary"]["policies"]}
    row = next(line for line in table.splitlines() if line.startswith("| static-conv_light |"))
    assert row.split(" | ")[1] == "—"  # its return is not comparable
    spearman_policies = {e["policy"] for e in episodes if not e["policy"].startswith(("static",
                                                                                      BUILT_BIG))}
    assert spearman_policies == {"no-growth", "random", "scripted-conv_light"}


def test_a_static_reference_over_an_instances_param_budget_skips_that_case(tmp_path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps([{"name": "tight", "max_epochs": 4, "param_budget": 0.05},
                                {"name": "free", "max_epochs": 4}]))
    # refused on a task's first reset, then the next episodes play (with 2-episode chunks)
    rec, table = _bench(tmp_path, "--instance-set", str(path), "--seeds", "2", "--policies",
                        "no-growth,static-conv_heavy,static-norm", "--chunk", "3")
    heavy = [e for e in rec["episodes"] if e["policy"] == "static-conv_heavy"]
    assert sorted((e["instance"], bool(e.get("over_budget"))) for e in heavy) == [
        ("free", False), ("free", False), ("tight", True), ("tight", True)]
    assert "param_budget of instance 'tight' allows" in next(e["over_budget"] for e in heavy
                                                             if e.get("over_budget"))
    summary = rec["summary"]["policies"]
    assert summary["static-conv_heavy"]["cases"] == 2 and summary["static-norm"]["cases"] == 4
    free = [e["final_test_acc"] for e in heavy if not e.get("over_budget")]
    assert summary["static-conv_heavy"]["final_test_acc"]["mean"] == pytest.approx(np.mean(free))
    assert "| static-conv_heavy (2/4 cases) |" in table


def test_an_unknown_static_blueprint_is_refused_by_name(tmp_path, capsys):
    assert main([*TINY_CLI, "--policies", "static-huge", "--out", str(tmp_path)]) == 2
    assert "policy 'static-huge' is invalid; allowed: static-<blueprint>" in capsys.readouterr().err


def test_a_group_row_is_the_per_case_mean_of_its_members(tmp_path, capsys):
    rec, table = _bench(tmp_path, *TINY_CLI, "--seeds", "3", "--policies",
                        "no-growth,heuristic,scripted-norm,scripted-conv_light,static-conv_light",
                        "--group", "scripts=scripted-norm,scripted-conv_light")
    by = {(e["policy"], e["seed"]): e for e in rec["episodes"] if e.get("reference") is None}
    row = rec["summary"]["policies"]["scripts"]
    means = [np.mean([by[p, s]["final_test_acc"] for p in ("scripted-norm", "scripted-conv_light")])
             for s in (1000, 1001, 1002)]
    assert row["final_test_acc"]["mean"] == pytest.approx(np.mean(means))
    heur = [m - by["heuristic", s]["final_test_acc"] for m, s in zip(means, (1000, 1001, 1002), strict=True)]
    assert row["final_test_acc_minus_heuristic"]["mean"] == pytest.approx(np.mean(heur))
    members = [rec["summary"]["policies"][p]["final_test_acc_minus_built_big"]["mean"]
               for p in ("scripted-norm", "scripted-conv_light")]
    assert row["final_test_acc_minus_built_big"]["mean"] == pytest.approx(np.mean(members))
    assert row["group"] == ["scripted-norm", "scripted-conv_light"] and "| scripts |" in table
    assert main([*TINY_CLI, "--group", "x=heuristic,oracle", "--out", str(tmp_path)]) == 2
    assert "--group x=heuristic,oracle is invalid" in capsys.readouterr().err
