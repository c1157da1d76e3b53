"""Run every recipe of the study and speed runners with tiny settings so they cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TINY_ENV = {"germination_gate": False, "min_cull_age": 2, "blending_epochs": 2,
            "embargo_epochs": 1, "gates": {"min_training_epochs": 1, "min_gradient_ratio": 0.0}}
TINY_ARGS = [a for k, v in TINY_ENV.items() for a in ("--env-kwarg", f"{k}={json.dumps(v)}")]
"""TINY_ENV as --env-kwarg options (JSON values are YAML)."""


def _tiny_set(tmp_path) -> str:
    recs = [{"name": f"i{k}", "host_channels": [2, 4, 8], "max_epochs": 6,
             "host_lr": lr, "param_budget": b}
            for k, (lr, b) in enumerate([(0.01, None), (0.05, 0.3), (0.003, 1.0)])]
    path = tmp_path / "tiny_set.json"
    path.write_text(json.dumps({"name": "tiny", "version": 1, "task": "synthetic", "n_slots": 1,
                                "train": recs[:1], "test": recs[1:]}))
    return str(path)


def _saved(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


# ---- the study runner ----------------------------------------------------------------------------

def test_study_lists_every_recipe_and_its_result_file():
    from benchmarks import study

    assert {name: r.result for name, r in study.RECIPES.items()} == {
        "growth": "growth", "heuristic": "heuristic", "instances": "instances",
        "integrity": "reward_integrity", "rollback": "rollback", "agents": "agents",
        "parity": "parity"}
    with pytest.raises(SystemExit):
        study.main(["no-such-recipe"])
    with pytest.raises(SystemExit):  # an option of another recipe
        study.main(["growth", "--fault-epoch", "3"])


def test_study_growth_runs_and_saves_provenance(tmp_path, capsys):
    from benchmarks import study

    rec = study.main(["growth", "--task", "synthetic", "--seeds", "2", "--max-epochs", "3",
                      "--blueprints", "norm,conv_light", "--out", str(tmp_path)])
    assert set(rec["summary"]) == {"no-growth", "scripted-norm", "scripted-conv_light"}
    line = _saved(tmp_path / "growth.jsonl")
    for key in ("commit", "torch", "cpu", "summary", "episodes"):
        assert key in line
    from esper_env.core.episode import EPISODE_VERSION

    assert line["episode_version"] == EPISODE_VERSION
    assert line["torch_threads"] == 1  # the episodes' thread count, not this process's
    # the paired difference is taken seed by seed
    acc = {(e["policy"], e["seed"]): e["final_test_acc"] for e in rec["episodes"]}
    d = [acc["scripted-norm", s] - acc["no-growth", s] for s in (0, 1)]
    assert rec["summary"]["scripted-norm"]["delta"] == pytest.approx(np.mean(d))
    captured = capsys.readouterr()
    assert "vs no-growth" in captured.out
    assert [line.split()[1] for line in captured.err.splitlines() if line.startswith("play: ")] == [
        f"{k}/6" for k in range(1, 7)]  # progress on stderr, one line per task (an episode here)
    study.main(["growth", "--task", "synthetic", "--seeds", "1", "--max-epochs", "2", "--quiet",
                "--blueprints", "norm", "--out", str(tmp_path / "quiet")])
    assert "play: " not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        study.main(["growth", "--task", "synthetic", "--blueprints", "lora", "--out", str(tmp_path)])


def test_study_plays_the_episodes_of_the_bare_env(tmp_path):
    """The runner's episodes (gym.make, esper-bench's worker) are those of a plain EsperEnv."""
    from agents.policies import ScriptedPolicy
    from agents.rollout import run_episode
    from benchmarks import study
    from esper_env.env import EsperEnv

    rec = study.main(["growth", "--task", "synthetic", "--seeds", "2", "--first-seed", "5",
                      "--max-epochs", "4", "--blueprints", "conv_light", *TINY_ARGS,
                      "--out", str(tmp_path)])
    env = EsperEnv(task="synthetic", max_epochs=4, **TINY_ENV)
    for e in rec["episodes"]:
        policy = ScriptedPolicy(env, "conv_light") if e["policy"] != "no-growth" else None
        if policy is None:
            from agents.policies import NoGrowthPolicy

            policy = NoGrowthPolicy(env)
        r = run_episode(env, policy, e["seed"])
        assert (r.final_test_acc, r.episode_return, r.n_fossilized) == (
            e["final_test_acc"], e["episode_return"], e["n_fossilized"])


def test_study_growth_on_tinytext_with_env_kwargs_and_workers(tmp_path, capsys):
    from benchmarks import study

    args = ["growth", "--task", "tinytext", "--seeds", "2", "--max-epochs", "3",
            "--blueprints", "lora", "--env-kwarg", "train_subset=16", "--env-kwarg", "block_size=8",
            "--env-kwarg", "n_embd=16", "--out", str(tmp_path)]
    rec = study.main([*args, "--workers", "2"])
    assert "4/4 episodes" in capsys.readouterr().err  # progress while the workers run
    assert set(rec["summary"]) == {"no-growth", "scripted-lora"}
    assert rec["env_kwargs"] == {"train_subset": 16, "block_size": 8, "n_embd": 16}
    # worker processes (1 torch thread each) give the same episodes as this process at 1 thread
    import torch

    threads = torch.get_num_threads()
    here = study.main(args)
    assert torch.get_num_threads() == threads  # the runner gives the process its count back
    assert here["summary"] == rec["summary"] and here["episodes"] == rec["episodes"]


def test_study_integrity_runs_on_a_tiny_config(tmp_path, capsys):
    from benchmarks import study

    rec = study.main([
        "integrity", "--task", "synthetic", "--seeds", "3", "--first-seed", "0", "--max-epochs", "7",
        "--late-fraction", "0.43", "--blueprints", "norm,conv_light", "--workers", "1",
        *TINY_ARGS, "--out", str(tmp_path)])
    assert rec["policies"] == ["no-growth", "early-norm", "early-conv_light", "late-norm",
                               "late-conv_light", "random", "heuristic"]
    assert set(rec["results"]) == {"contribution", "delta", "sparse"}
    assert rec["mode_mismatches"] == 0  # the reward mode never changes what happens
    assert len(rec["episodes"]) == 3 * 7 * 3
    contribution = rec["results"]["contribution"]
    assert contribution["per_policy"]["no-growth"]["return"] == 0.0
    for mode in rec["results"].values():
        assert -1.0 <= mode["spearman"] <= 1.0 or mode["spearman"] != mode["spearman"]
        assert mode["per_policy"]["no-growth"]["test_delta"] == 0.0
    # the late policies wait for epoch round(0.43 x 7) = 3; the random policy replays per mode
    late = [e for e in rec["episodes"] if e["policy"] == "late-conv_light"]
    assert all(e["params_added"] >= 0 for e in late)
    rand = {m: [e["test_acc"] for e in rec["episodes"] if e["policy"] == "random" and e["mode"] == m]
            for m in rec["results"]}
    assert rand["contribution"] == rand["delta"] == rand["sparse"]
    line = _saved(tmp_path / "reward_integrity.jsonl")
    for key in ("commit", "torch", "cpu", "results", "episodes"):
        assert key in line
    out = capsys.readouterr().out
    assert "policy-level Spearman" in out and "| early-conv_light |" in out
    with pytest.raises(SystemExit):
        study.main(["integrity", "--task", "synthetic", "--policies", "random", "--out", str(tmp_path)])


def test_study_integrity_plays_on_the_batched_engine_as_on_single_envs(tmp_path):
    from benchmarks import study

    argv = ["integrity", "--task", "digits", "--seeds", "2", "--first-seed", "0", "--max-epochs",
            "5", "--late-fraction", "0.4", "--blueprints", "conv_light", "--workers", "1",
            "--policies", "no-growth,early-conv_light,late-conv_light",
            "--env-kwarg", "min_germinate_epoch=1"]
    single = study.main([*argv, "--out", str(tmp_path / "single")])
    batched = study.main([*argv, "--n-envs", "2", "--out", str(tmp_path / "batched")])
    assert batched["mode_mismatches"] == 0
    key = lambda e: (e["policy"], e["seed"], e["mode"])  # noqa: E731
    one = {key(e): e for e in single["episodes"]}
    two = {key(e): e for e in batched["episodes"]}
    assert set(one) == set(two) and len(one) == 2 * 3 * 3
    close = [abs(two[k]["test_acc"] - one[k]["test_acc"]) <= 0.6 for k in one]
    assert sum(close) >= 0.8 * len(close)  # within two test images, but for rounding's drift
    with pytest.raises(SystemExit):
        study.main([*argv, "--n-envs", "-1"])


def test_study_integrity_statistics_on_hand_made_rows():
    from agents.stats import bootstrap_spearman, spearman
    from benchmarks._study import integrity as b

    seeds = [0, 1, 2, 3]
    rows = []
    # "good" gains 5 +- 1 and earns 4 more; "bad" loses 3 +- 0.5 and earns 2 more (harmful, paid)
    for s in seeds:
        rows.append({"policy": "no-growth", "seed": s, "return": 0.0, "test_acc": 80.0 + s,
                     "fossilized": 0, "params_added": 0})
        rows.append({"policy": "good", "seed": s, "return": 4.0 + 0.1 * s,
                     "test_acc": 85.0 + s + (-1) ** s, "fossilized": 1, "params_added": 10})
        rows.append({"policy": "bad", "seed": s, "return": 2.0,
                     "test_acc": 77.0 + s + 0.5 * (-1) ** s, "fossilized": 1, "params_added": 5})
    summary = b.summarise(rows, ["no-growth", "good", "bad"], seeds)
    assert summary["per_policy"]["good"]["test_delta"] == pytest.approx(5.0)
    assert summary["per_policy"]["bad"]["return_delta"] == pytest.approx(2.0)
    assert summary["harmful_out_earn_no_growth"] == ["bad"]
    assert summary["helpful_earn_less_than_no_growth"] == []
    assert summary["spearman"] == pytest.approx(0.5)  # returns rank bad above no-growth
    assert not summary["bars_met"]
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    ret, acc = (np.array([[r[k] for r in rows if r["policy"] == p] for p in ("no-growth", "good", "bad")])
                for k in ("return", "test_acc"))
    assert summary["spearman_ci95"] == list(bootstrap_spearman(ret, acc))  # esper-bench's interval


def test_study_instances_runs_on_a_tiny_set(tmp_path, capsys):
    from benchmarks import study

    rec = study.main(["instances", "--instance-set", _tiny_set(tmp_path), "--split", "test",
                      "--seeds", "2", "--workers", "1", *TINY_ARGS, "--out", str(tmp_path)])
    assert rec["instances"] == ["i1", "i2"]
    assert len(rec["episodes"]) == 2 * 2 * 11
    assert rec["policies"][0] == "no-growth" and len(rec["policies"]) == 11
    for key in ("oracle_vs_fixed", "oracle_vs_no_growth", "best_fixed_by_fold"):
        assert key in rec["gaps"]
    budgeted = [r for r in rec["episodes"] if r["instance"] == "i1" and r["policy"] ==
                "early-conv_heavy"]
    assert all(r["params_added"] == 0 for r in budgeted)  # conv_heavy does not fit 0.3 x host
    assert {(r["instance"], r["k"]) for r in rec["episodes"]} == {("i1", 0), ("i2", 1)}
    line = _saved(tmp_path / "instances.jsonl")
    assert line["bench"] == "instances" and "commit" in line
    assert "leave-one-seed-out" in capsys.readouterr().out


def test_study_instances_gaps_on_hand_made_accuracies():
    from benchmarks._study import instances as b

    pols = ["no-growth", "a", "b"]
    # instance 0: a wins by 4; instance 1: b wins by 4; a and b tie overall
    acc = np.array([[[70, 71, 70], [75, 74, 75], [71, 70, 71]],
                    [[70, 70, 71], [70, 71, 71], [74, 75, 75]]], dtype=float)
    g = b.decision_gaps(acc, pols)
    assert g["oracle_vs_no_growth"] == pytest.approx(13 / 3)  # (5 + 3 + 5) / 3 per instance
    assert g["oracle_vs_fixed"] > 1.5
    assert g["oracle_choice_in_sample"] == ["a", "b"]
    noise = np.array([[[70, 72, 70], [71, 70, 72], [72, 71, 70]]], dtype=float)
    assert b.decision_gaps(noise, pols)["in_sample_oracle_vs_fixed"] >= \
        b.decision_gaps(noise, pols)["oracle_vs_fixed"]  # in-sample selection is optimistic


def test_study_integrity_on_an_instance_split(tmp_path):
    from benchmarks import study

    rec = study.main([
        "integrity", "--instance-set", _tiny_set(tmp_path), "--split", "test", "--seeds", "2",
        "--modes", "contribution", "--blueprints", "norm,conv_heavy", "--workers", "1",
        *TINY_ARGS, "--out", str(tmp_path)])
    assert rec["cases"] == ["0:1000", "0:1001", "1:1000", "1:1001"]
    assert {r["instance"] for r in rec["episodes"]} == {"i1", "i2"}
    assert rec["results"]["contribution"]["per_policy"]["no-growth"]["return"] == 0.0


def test_make_instance_set_check_matches_the_shipped_file():
    from benchmarks import make_instance_set

    assert make_instance_set.main(["--check"]) == 0
    s = make_instance_set.make(5, 3, seed=1)
    assert [i.name for i in s.train] == [f"train-0{i}" for i in range(5)]
    assert len({tuple(i.overrides().values()) for i in s.train + s.test}) == 8


def test_study_heuristic_runs_and_reports_paired_differences(tmp_path, capsys):
    from benchmarks import study

    rec = study.main(["heuristic", "--task", "synthetic", "--seeds", "2", "--max-epochs", "6",
                      "--out", str(tmp_path)])
    assert set(rec["summary"]) == {"heuristic", "random", "no-growth"}
    assert set(rec["paired"]) == {"random", "no-growth"}
    assert rec["seeds"] == [1000, 1001] and len(rec["episodes"]) == 6
    by = {(e["policy"], e["seed"]): e["final_test_acc"] for e in rec["episodes"]}
    d = [by["heuristic", s] - by["random", s] for s in (1000, 1001)]
    assert rec["paired"]["random"]["final_test_acc"]["mean"] == pytest.approx(np.mean(d))
    assert "heuristic − random" in capsys.readouterr().out
    assert (tmp_path / "heuristic.jsonl").exists()
    with pytest.raises(SystemExit):  # before any episode
        study.main(["heuristic", "--task", "synthetic", "--policies", "heuristic,nope",
                    "--out", str(tmp_path)])


def test_study_agents_trains_evaluates_and_reports_illegal_actions(tmp_path, capsys):
    from benchmarks import study

    rec = study.main(["agents", "--task", "synthetic", "--max-epochs", "6", "--algos", "ppo,per-dqn",
                      "--total-timesteps", "40", "--seeds", "2", "--policies", "no-growth,random",
                      "--out", str(tmp_path)])
    assert set(rec["summary"]) == {"ppo", "per-dqn", "no-growth", "random"}
    for name in ("ppo", "per-dqn"):
        assert rec["summary"][name]["illegal_pct"] == 0.0 and rec["summary"][name]["n"] == 2
    assert set(rec["train_s"]) == {"ppo@0", "per-dqn@0"}
    assert rec["eval_seeds"] == [1000, 1001]
    assert "illegal %" in capsys.readouterr().out
    assert (tmp_path / "agents.jsonl").exists()
    with pytest.raises(SystemExit):  # before any training
        study.main(["agents", "--task", "synthetic", "--algos", "ppo,a2c", "--out", str(tmp_path)])


def test_study_rollback_runs_and_reports_the_paired_drop(tmp_path, capsys):
    from benchmarks import study

    rec = study.main(["rollback", "--task", "synthetic", "--seeds", "2", "--fault-epoch", "4",
                      "--out", str(tmp_path)])
    assert rec["summary"]["n"] == 2 and rec["summary"]["rollbacks"] == 2
    for row in rec["rows"]:
        assert row["rollback_epoch"] == 4 and not row["diverged"]
    drop = [r["val_before"] - r["val_after_rollback"] for r in rec["rows"]]
    assert rec["summary"]["val_drop_mean"] == pytest.approx(np.mean(drop))
    assert "right after the rollback" in capsys.readouterr().out
    assert (tmp_path / "rollback.jsonl").exists()


# ---- the speed runner ----------------------------------------------------------------------------

def test_speed_env_step_runs_and_reports_ratios(tmp_path, capsys):
    from benchmarks import speed

    (r,) = speed.main(["env-step", "--tasks", "synthetic", "--repeats", "1", "--max-epochs", "3",
                       "--out", str(tmp_path)])
    assert r["no_growth_steps_per_s"] > 0 and r["bare_epochs_per_s"] > 0
    assert r["overhead_no_growth"] == pytest.approx(
        r["bare_epochs_per_s"] / r["no_growth_steps_per_s"])
    assert r["overhead_growth"] >= 1.0  # step time includes the trainer's compute
    assert (tmp_path / "env_step.jsonl").exists()
    assert "env-step synthetic: 1/1 rounds" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an option another recipe has
        speed.main(["env-step", "--device", "cpu"])


def test_speed_throughput_runs_and_reports_every_mode(tmp_path):
    from benchmarks import speed

    (r,) = speed.main(["throughput", "--tasks", "synthetic", "--repeats", "1", "--max-epochs", "4",
                       "--vec-steps", "6", "--train-steps", "24", "--out", str(tmp_path)])
    for key in ("single_steps_per_s", "subproc_steps_per_s", "thread_steps_per_s",
                "esper_train_steps_per_s", "esper_train_thread_steps_per_s", "bare_epochs_per_s"):
        assert r[key] > 0
    assert r["overhead_single"] == pytest.approx(r["bare_epochs_per_s"] / r["single_steps_per_s"])
    assert r["thread_vs_subproc"] == pytest.approx(r["thread_steps_per_s"] / r["subproc_steps_per_s"])
    assert r["train_thread_vs_dummy"] == pytest.approx(
        r["esper_train_thread_steps_per_s"] / r["esper_train_steps_per_s"])
    assert r["thread_vs_subproc_ratios"] == [r["thread_vs_subproc"]] == [r["thread_vs_subproc_mean"]]
    assert r["thread_vs_subproc_ci95"] == 0.0  # one repeat: no interval
    assert (tmp_path / "throughput.jsonl").exists()


def test_speed_soak_runs_and_reports_rss_samples(tmp_path, capsys):
    import torch

    from benchmarks import speed

    threads = torch.get_num_threads()
    (rec,) = speed.main(["soak", "--task", "synthetic", "--episodes", "4", "--every", "2",
                         "--max-epochs", "4", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads  # --torch-threads 1 for the run only
    assert [s["episode"] for s in rec["samples"]] == [2, 4]
    assert all(s["rss_mb"] > 10 for s in rec["samples"])
    assert rec["max_growth"] >= rec["final_growth"]
    assert rec["flat"] == (rec["max_growth"] <= 0.05)
    line = _saved(tmp_path / "soak.jsonl")
    assert line["episodes"] == 4 and "commit" in line and line["torch_threads"] == 1
    captured = capsys.readouterr()
    assert "largest growth" in captured.out
    lines = [x for x in captured.err.splitlines() if x.startswith("soak episodes:")]
    assert [x.split(",")[0] for x in lines] == [f"soak episodes: {i}/4 rounds" for i in range(1, 5)]
    assert all("rounds/s" in x and "left" in x for x in lines)
    speed.main(["soak", "--task", "synthetic", "--episodes", "2", "--every", "1", "--max-epochs",
                "3", "--out", str(tmp_path), "--quiet"])
    assert "rounds" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        speed.main(["soak", "--episodes", "3", "--every", "2"])


def test_speed_cifar_runs_on_a_small_folder(tmp_path, capsys):
    from benchmarks import speed
    from esper_env.nn.cifar import write_cifar10_folder

    root = write_cifar10_folder(tmp_path / "cifar", train_per_batch=20, n_test=10)
    recs = speed.main(["cifar", "--data-root", str(root), "--device", "cpu", "--envs", "2",
                                   "--batch-size", "25", "--policy", "wait,grow", "--steps", "2",
                                   "--out", str(tmp_path)])
    assert [(r["envs"], r["policy"]) for r in recs] == [(2, "wait"), (2, "grow")]
    for r in recs:
        assert r["epochs"] == 4 and r["aggregate_epochs_per_s"] > 0
        assert len(r["per_env_epochs_per_s"]) == 2
    assert recs[1]["final_stages"][0] != ["DORMANT"]  # the grow policy germinated
    assert len((tmp_path / "cifar_speed.jsonl").read_text().splitlines()) == 2
    assert "epochs/s (all envs)" in capsys.readouterr().out


def test_speed_cifar_sweeps_cudnn_benchmark_in_the_env_processes(tmp_path):
    from benchmarks import speed
    from esper_env.nn.cifar import write_cifar10_folder

    root = write_cifar10_folder(tmp_path / "cifar", train_per_batch=20, n_test=10)
    common = ["--data-root", str(root), "--device", "cpu", "--envs", "1", "--batch-size", "25",
              "--policy", "wait", "--steps", "1", "--out", str(tmp_path)]
    recs = speed.main(["cifar", *common, "--cudnn-benchmark", "off,on"])
    assert [r["cudnn_benchmark"] for r in recs] == [[False], [True]]
    with pytest.raises(SystemExit):
        speed.main(["cifar", *common, "--cudnn-benchmark", "fast"])


def test_speed_cifar_sweeps_channels_last_in_the_envs(tmp_path, monkeypatch):
    from benchmarks import speed
    from esper_env.env import EsperEnv
    from esper_env.nn.cifar import write_cifar10_folder

    layouts = []
    reset = EsperEnv.reset

    def recording(self, *args, **kwargs):
        layouts.append(self.config.runtime.channels_last)
        return reset(self, *args, **kwargs)

    monkeypatch.setattr(EsperEnv, "reset", recording)  # the threads layout: envs in this process
    root = write_cifar10_folder(tmp_path / "cifar", train_per_batch=20, n_test=10)
    common = ["--data-root", str(root), "--device", "cpu", "--envs", "1", "--batch-size", "25",
              "--policy", "wait", "--steps", "1", "--layout", "threads", "--out", str(tmp_path)]
    recs = speed.main(["cifar", *common, "--channels-last", "off,on"])
    assert [r["channels_last"] for r in recs] == [False, True] and layouts == [False, True]
    assert all(r["epochs"] == 1 for r in recs)
    with pytest.raises(SystemExit):
        speed.main(["cifar", *common, "--channels-last", "nhwc"])


def test_speed_cifar_threads_layout_runs_the_same_episodes_as_processes(tmp_path):
    import torch

    from benchmarks import speed
    from esper_env.nn.cifar import write_cifar10_folder

    root = write_cifar10_folder(tmp_path / "cifar", train_per_batch=20, n_test=10)
    threads_before = torch.get_num_threads()
    recs = speed.main(["cifar", "--data-root", str(root), "--device", "cpu", "--envs", "2",
                                   "--batch-size", "25", "--policy", "grow", "--steps", "2",
                                   "--layout", "processes,threads", "--out", str(tmp_path)])
    assert [r["layout"] for r in recs] == ["processes", "threads"]
    assert recs[0]["final_val_acc"] == recs[1]["final_val_acc"]  # same seeds, same episodes
    assert recs[0]["final_stages"] == recs[1]["final_stages"] != [["DORMANT"]] * 2
    assert recs[1]["epochs"] == 4 and len(recs[1]["per_env_epochs_per_s"]) == 2
    assert torch.get_num_threads() == threads_before  # the threads layout gives the count back
    with pytest.raises(SystemExit):
        speed.main(["cifar", "--data-root", str(root), "--device", "cpu", "--layout", "fibres"])


def test_speed_cifar_reports_an_env_that_fails_instead_of_waiting(tmp_path):
    from benchmarks._speed import cifar

    kwargs = {"task": "cifar10", "data_root": str(tmp_path / "missing"), "device": "cpu",
              "batch_size": 25, "max_epochs": 3, "germination_gate": False, "train_subset": None}
    for layout in ("threads", "processes"):  # the env could not start: an error, not a hang
        with pytest.raises(RuntimeError, match=r"failed to start: CIFARFolderError: .*missing"):
            cifar.run(2, kwargs, 1, "wait", 0, layout=layout)


def test_speed_optimizer_pairs_fused_with_unfused_trainers(tmp_path, capsys):
    from benchmarks import speed
    from benchmarks._speed import optimizer as bench_optimizer
    from esper_env.config import EsperConfig
    from esper_env.nn import trainer as trainer_module
    from esper_env.nn.data import load_task

    make = trainer_module.sgd
    cfg = EsperConfig(task="synthetic")
    data = load_task("synthetic", episode_seed=0, device="cpu")
    for fused in (True, False):
        t = bench_optimizer._trainer(cfg, data, 0, "conv_light", fused)
        opts = (t.host_opt, t.seed_opts[0], t.twin_opt)
        assert all(bool(o.defaults.get("fused")) is fused for o in opts)
    assert trainer_module.sgd is make  # the unfused build leaves the trainer's factory alone
    recs = speed.main(["optimizer", "--tasks", "synthetic", "--repeats", "2", "--epochs", "1",
                                 "--out", str(tmp_path)])
    assert [r["blueprint"] for r in recs] == [None, "conv_heavy"]
    assert all(r["speedup_mean"] > 0 and r["fused_epoch_s_median"] > 0 for r in recs)
    assert all(len(r["speedup_ratios"]) == 2 == r["rounds"] for r in recs)
    assert len((tmp_path / "optimizer.jsonl").read_text().splitlines()) == 2
    assert "speedup" in capsys.readouterr().out


def test_speed_cifar_profile_splits_a_step_into_phases_and_operators(tmp_path, capsys):
    import gzip
    import json

    import torch

    from benchmarks import speed
    from esper_env.nn.cifar import write_cifar10_folder

    root = write_cifar10_folder(tmp_path / "cifar", train_per_batch=20, n_test=10)
    threads_before = torch.get_num_threads()
    recs = speed.main(["cifar", "--data-root", str(root), "--device", "cpu", "--batch-size", "25",
                                   "--policy", "wait,grow", "--steps", "3", "--profile",
                                   "--trace-dir", str(tmp_path / "traces"), "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads_before
    assert [(r["bench"], r["policy"], r["steps"]) for r in recs] == [
        ("cifar_profile", "wait", 3), ("cifar_profile", "grow", 3)]
    wait, grow = recs
    assert wait["final_stages"] == ["DORMANT"] and grow["final_stages"] == ["BLENDING"]
    for r in recs:
        # one training pass and one validation per step: no episode end (test split) inside
        assert r["phases"]["train_epoch"]["calls_per_step"] == 1.0
        assert r["phases"]["validate"]["calls_per_step"] == 1.0
        assert 0 < r["phases"]["train_epoch"]["cpu_s_per_step"] < r["wall_s_per_step"]
        assert r["kernel_s_per_step"] is None and r["top_kernels"] == []  # no GPU here
        names = [o["name"] for o in r["top_ops"]]
        assert names and all(n.startswith("aten::") for n in names)
        assert any("conv" in n for n in names)
        costs = [o["self_cpu_s_per_step"] for o in r["top_ops"]]
        assert costs == sorted(costs, reverse=True)
    # the twin trains beside a growing model only: its validation costs time only in `grow`
    assert grow["phases"]["twin_validate"]["cpu_s_per_step"] > \
        10 * wait["phases"]["twin_validate"]["cpu_s_per_step"]
    trace = tmp_path / "traces" / "cifar_profile_bs25_grow_cudnn0_nhwc0.json.gz"
    events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    assert sum(e.get("name") == "esper.train_epoch" for e in events) == 3
    assert len((tmp_path / "cifar_profile.jsonl").read_text().splitlines()) == 2
    out = capsys.readouterr().out
    assert "ms per step" in out and "train_epoch" in out
    with pytest.raises(SystemExit):  # a trace folder means nothing without --profile
        speed.main(["cifar", "--data-root", str(root), "--device", "cpu",
                                "--trace-dir", str(tmp_path)])


def test_speed_channels_last_pairs_the_two_layouts_on_the_same_episodes(tmp_path, capsys,
                                                                        monkeypatch):
    from benchmarks import speed
    from benchmarks._speed import channels_last as bench_channels_last
    from esper_env.nn.cifar import write_cifar10_folder

    root = write_cifar10_folder(tmp_path / "cifar", train_per_batch=20, n_test=10)
    made = []
    original = bench_channels_last.EsperEnv

    def recording(**kwargs):
        made.append((kwargs["task"], kwargs["channels_last"]))
        return original(**kwargs)

    monkeypatch.setattr(bench_channels_last, "EsperEnv", recording)
    recs = speed.main(["channels-last", "--tasks", "cifar10", "--env-kwarg", f"data_root={root}",
                       "--env-kwarg", "batch_size=25", "--repeats", "2", "--steps", "3",
                       "--out", str(tmp_path)])
    assert made == [("cifar10", False), ("cifar10", True)] * 4  # 2 policies x 2 rounds
    assert [(r["policy"], r["rounds"], r["steps"]) for r in recs] == [("wait", 2, 3), ("grow", 2, 3)]
    for r in recs:
        assert r["speedup_mean"] > 0 and r["default_step_s_median"] > 0
        assert r["max_val_acc_gap"] <= 10.0  # 10 validation images: at most one answer apart
    assert len((tmp_path / "channels_last.jsonl").read_text().splitlines()) == 2
    assert "speedup" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        speed.main(["channels-last", "--policy", "fast"])


def test_gpu_checks_script_runs_existing_tests_and_valid_benchmark_flags(tmp_path):
    """benchmarks/gpu_checks.sh is for device sessions (CI has no GPU): run it with a stand-in
    interpreter that logs its arguments, then check what it would have run."""
    import os
    import shlex
    import subprocess

    from benchmarks import speed

    repo = Path(__file__).resolve().parents[2]
    log = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(log))}\n')
    stub.chmod(0o755)
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_checks.sh"), str(out), "--steps", "4"],
                          env={**os.environ, "PYTHON": str(stub)}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    calls = [line.split() for line in log.read_text().splitlines()]
    pytest_calls = [c for c in calls if c[:2] == ["-m", "pytest"]]
    assert len(pytest_calls) == 1
    test_files = [a for a in pytest_calls[0] if a.startswith("tests/")]
    assert "tests/env/test_env_device.py" in test_files
    assert all((repo / f).is_file() for f in test_files)
    benches = [c[2:] for c in calls if c[:2] == ["-m", "benchmarks.speed"]]
    assert [b[0] for b in benches] == ["vector", "vector", "vector", "cifar", "cifar"]
    vectors, cifars = benches[:3], benches[3:]
    assert "--profile" in cifars[0] and cifars[1][-2:] == ["--steps", "4"]
    for argv in cifars:
        args = speed.parse_args(argv)  # exits on a flag the runner no longer knows
        assert args.device == "cuda" and args.fake_data and str(out) == args.out
    for argv in vectors:  # the batched engine: digits K up to 1024, CIFAR-10 K = 4 and 8
        args = speed.parse_args(argv)
        assert ("device", "cuda") in args.env_kwarg
    assert "1024" in speed.parse_args(vectors[0]).ks
    assert ("cuda_graphs", True) in speed.parse_args(vectors[1]).vec_kwarg  # graphs on
    assert speed.parse_args(vectors[2]).tasks == "cifar10"
    assert {p.name for p in out.iterdir()} >= {"machine.txt", "cuda_tests.txt", "profile.txt",
                                               "speed.txt", "vector_digits.txt",
                                               "vector_digits_graphs.txt", "vector_cifar.txt"}


def test_speed_cifar_profile_summary_of_a_gpu_trace_counts_kernels_not_annotations():
    """What --profile makes of CUDA events (CI has no GPU): fake profiler events of two steps."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from benchmarks._speed import cifar

    def event(name, device=DeviceType.CPU, cpu=0.0, self_cpu=0.0, dev=0.0, self_dev=0.0,
              annotation=False):
        return SimpleNamespace(name=name, device_type=device, cpu_time_total=cpu,
                               self_cpu_time_total=self_cpu, device_time_total=dev,
                               self_device_time_total=self_dev, is_user_annotation=annotation)

    cuda = DeviceType.CUDA
    step = [event("esper.train_epoch", cpu=900.0, dev=600.0),
            event("esper.train_epoch", device=cuda, dev=950.0, annotation=True),  # its GPU mirror
            event("aten::conv2d", cpu=100.0, self_cpu=10.0, dev=400.0, self_dev=0.0),
            event("aten::convolution", cpu=90.0, self_cpu=80.0, dev=400.0, self_dev=400.0),
            event("aten::max_pool2d", cpu=30.0, self_cpu=30.0, dev=200.0, self_dev=200.0),
            event("cudnn_conv_kernel", device=cuda, dev=400.0),
            event("max_pool_kernel", device=cuda, dev=150.0),
            event("max_pool_kernel", device=cuda, dev=50.0),
            event("esper.validate", cpu=300.0, dev=100.0),
            event("Memcpy HtoD", device=cuda, dev=100.0)]
    r = cifar._summarise(step * 2, steps=2, wall=0.004, top=10)
    assert r["kernel_s_per_step"] == pytest.approx(700e-6)  # 400 + 150 + 50 + 100 us per step
    assert r["kernels_per_step"] == 4 and r["kernel_busy"] == pytest.approx(1400e-6 / 0.004)
    assert r["phases"]["train_epoch"] == pytest.approx(
        {"calls_per_step": 1.0, "cpu_s_per_step": 900e-6, "device_s_per_step": 600e-6})
    assert r["phases"]["validate"]["calls_per_step"] == 1.0
    assert [k["name"] for k in r["top_kernels"]] == ["cudnn_conv_kernel", "max_pool_kernel",
                                                     "Memcpy HtoD"]
    assert r["top_kernels"][1]["calls_per_step"] == 2 and r["top_kernels"][0]["share"] == \
        pytest.approx(400 / 700)
    # operators ranked by their own GPU time when there is a GPU: convolution, pool, then conv2d
    assert [o["name"] for o in r["top_ops"]] == ["aten::convolution", "aten::max_pool2d",
                                                 "aten::conv2d"]
    assert r["top_ops"][0]["self_device_s_per_step"] == pytest.approx(400e-6)


def test_speed_vector_pairs_the_batched_env_with_one_env_and_reports_memory(tmp_path, capsys):
    from benchmarks import speed

    recs = speed.main(["vector", "--ks", "1,2", "--repeats", "2", "--steps", "3",
                       "--max-epochs", "3", "--policy", "grow", "--breakdown-ks", "2",
                       "--out", str(tmp_path)])
    speeds, (parts,) = recs[:2], recs[2:]
    assert [(r["policy"], r["k"]) for r in speeds] == [("grow", 1), ("grow", 2)]
    assert all(r["speedup"] > 0 and len(r["speedup_ratios"]) == 2 for r in speeds)
    assert all(r["batched_env_steps_per_s_median"] > 0 for r in speeds)
    assert (parts["bench"], parts["k"]) == ("vector-breakdown", 2)
    ms = parts["ms_per_env_step"]
    assert list(ms) == ["train", "validate", "counterfactual", "twin", "test", "bookkeeping",
                        "transition"]
    assert ms["train"] > 0 and ms["validate"] > 0 and ms["test"] > 0  # 3 steps: an episode ends
    assert all(v >= 0 for v in ms.values())
    assert parts["ms_per_env_step_total"] == pytest.approx(sum(ms.values()))
    assert len((tmp_path / "vector.jsonl").read_text().splitlines()) == 2
    assert len((tmp_path / "vector-breakdown.jsonl").read_text().splitlines()) == 1
    out = capsys.readouterr().out
    assert "speedup" in out and "# breakdown grow K=2" in out
    for bad in (["--ks", "0"], ["--breakdown-ks", "x"]):
        with pytest.raises(SystemExit):
            speed.main(["vector", *bad])


def test_speed_train_pairs_batched_esper_train_runs_with_default_ones(tmp_path, capsys):
    from benchmarks import speed

    (rec,) = speed.main(["train", "--n-envs", "3", "--train-steps", "8", "--repeats", "1",
                         "--rollout", "12", "--instance-set", "", "--env-kwarg", "max_epochs=3",
                         "--out", str(tmp_path)])
    assert rec["bench"] == "train" and rec["n_envs_batched"] == 3
    assert rec["batched_hyperparams"] == {"n_steps": 4, "batch_size": 12}  # 12 per update
    assert rec["dummy_hyperparams"] == {"n_steps": 3, "batch_size": 12}
    assert rec["speedup"] > 0 and len(rec["speedup_ratios"]) == 1
    for run in rec["dummy_runs"] + rec["batched_runs"]:
        assert run["time_split_s"]["env"] > 0 and run["steps_per_s"] > 0
    assert "speedup" in capsys.readouterr().out
    assert (tmp_path / "train.jsonl").exists()
    with pytest.raises(SystemExit):
        speed.main(["train", "--n-envs", "5"])


def test_study_parity_pairs_batched_lanes_with_single_envs_on_the_same_seeds(tmp_path, capsys):
    from benchmarks import study

    rec = study.main(["parity", "--seeds", "2", "--first-seed", "10", "--max-epochs", "3",
                      "--out", str(tmp_path)])
    labels = ["no-growth", "scripted-norm", "scripted-attention", "scripted-depthwise",
              "scripted-conv_light", "scripted-conv_heavy"]
    assert list(rec["summary"]) == labels
    single, batched = rec["episodes"]["single"], rec["episodes"]["batched"]
    assert sorted((e["policy"], e["seed"]) for e in single) == \
        sorted((e["policy"], e["seed"]) for e in batched) == sorted(
            (p, s) for p in labels for s in (10, 11))
    for row in rec["summary"].values():  # 3 epochs: nothing grows, the lanes equal the envs
        assert row["identical"] == 2 and row["delta"] == 0.0 and row["inside_bar"]
    assert rec["bar_met"] and "bar (every interval" in capsys.readouterr().out
    assert len((tmp_path / "parity.jsonl").read_text().splitlines()) == 1
