"""The batched work queue: every (seed, instance) case of a plan played once, as one env plays it."""

from __future__ import annotations

import json

import pytest

from agents.policies import make_baseline
from agents.rollout import episode_plan, run_episode, run_queue
from esper_env.env import EsperEnv
from esper_env.vector import EsperVectorEnv

RECORDS = [{"name": "short", "host_channels": [2, 4, 8], "max_epochs": 3, "train_fraction": 0.5},
           {"name": "long", "host_channels": [2, 2, 4], "max_epochs": 5, "host_lr": 0.02},
           {"name": "mid", "host_channels": [4, 4, 8], "max_epochs": 4, "label_noise": 0.1}]
KW = dict(instance_set=RECORDS, torch_threads=1, min_germinate_epoch=1, germination_gate=False,
          gates={"min_training_epochs": 1})
TEST_IMAGE_PP = 100.0 / 360


@pytest.mark.parametrize("policy", ["heuristic", "scripted-conv_light"])
def test_the_queue_plays_every_case_once_as_the_single_env_does(policy: str) -> None:
    single = EsperEnv(**KW)
    plan = episode_plan(single, 40, per_instance=2)  # 3 instances x 2 seeds, 3 to 5 epochs each
    vec = EsperVectorEnv(2, autoreset_mode="DISABLED", **KW)
    played = run_queue(vec, plan, lambda s, o: make_baseline(policy, vec.template, seed=s),
                       name=policy)
    assert len(played) == len(plan)
    for (r, trace), (seed, options) in zip(played, plan, strict=True):
        ref = run_episode(single, make_baseline(policy, single, seed=seed), seed, options=options)
        assert (r.seed, r.instance, r.length) == (seed, ref.instance, ref.length)
        assert r.instance == RECORDS[options["instance"]]["name"]
        assert abs(r.final_test_acc - ref.final_test_acc) <= 2 * TEST_IMAGE_PP + 1e-9
        assert len(trace.val_curve) == r.length + 1 and len(trace.actions) == r.length
    if policy.startswith("scripted"):  # it grew in the queue's lanes
        assert any(a.startswith("GERMINATE") for _, t in played for a in t.actions)


def test_the_queue_needs_the_disabled_autoreset_mode() -> None:
    vec = EsperVectorEnv(1, **KW)
    with pytest.raises(ValueError, match="DISABLED autoreset mode"):
        run_queue(vec, [(1, None)], lambda s, o: None)


def test_esper_bench_and_esper_eval_play_batched_work_queues(tmp_path, capsys) -> None:
    from agents import bench, evaluate

    path = tmp_path / "set.json"
    path.write_text(json.dumps(RECORDS))
    common = ["--instance-set", str(path), "--env-kwarg", "min_germinate_epoch=1"]
    out = tmp_path / "bench"
    assert bench.main([*common, "--policies", "no-growth,scripted-norm", "--seeds", "1",
                       "--reward-modes", "contribution", "--vec-env", "batched", "--n-envs", "2",
                       "--no-plots", "--out", str(out)]) == 0
    runs = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    episodes = runs[-1]["episodes"]
    assert sorted((e["policy"], e["instance"]) for e in episodes) == sorted(
        (p, r["name"]) for p in ("no-growth", "scripted-norm") for r in RECORDS)
    assert all(len(e["val_curve"]) == e["length"] + 1 for e in episodes)
    assert evaluate.main([*common, "--policies", "no-growth", "--episodes", "3", "--split",
                          "train", "--vec-env", "batched", "--n-envs", "2",
                          "--json", str(tmp_path / "eval.json")]) == 0
    data = json.loads((tmp_path / "eval.json").read_text())
    assert sorted(e["instance"] for e in data["episodes"]) == ["long", "mid", "short"]
    assert evaluate.main(["--policies", "no-growth", "--episodes", "-1"]) == 2
    assert "--episodes -1 is invalid" in capsys.readouterr().err
