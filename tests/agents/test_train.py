"""esper-train and esper-eval: options, hyperparameters, saved files, logging, determinism, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch as th
from conftest import TINY_CLI, tiny_kwargs

from agents.algos import ALGOS, load_hyperparams
from agents.envs import EnvSpec
from agents.rollout import MasksRequired, run_episode
from agents.runs import load_model
from agents.train import TrainArgs, parse_args, train
from esper_env.env import EsperEnv
from esper_env.errors import ConfigError

SMALL = {"ppo": {"n_steps": 22, "batch_size": 22, "n_epochs": 1, "policy_kwargs": {"net_arch": [16]}},
         "dqn": {"learning_starts": 30, "batch_size": 16, "buffer_size": 1000,
                 "policy_kwargs": {"net_arch": [16]}}}
SMALL["maskable-ppo"], SMALL["per-dqn"] = SMALL["ppo"], SMALL["dqn"]

def _args(tmp_path, algo="maskable-ppo", **kw) -> TrainArgs:
    base = dict(algo=algo, total_timesteps=88, n_envs=2, output=str(tmp_path / algo),
                env_kwargs=tiny_kwargs(), hyperparams=dict(SMALL[algo]), eval_freq=44,
                eval_episodes=2, progress_bar=False)
    base.update(kw)
    return TrainArgs(**base)


@pytest.mark.parametrize("algo", ALGOS)
def test_hyperparams_are_tuned_for_24_step_episodes(algo):
    hp = load_hyperparams(algo)
    assert hp["gamma"] == 0.99, "the env's potential-based shaping is policy-invariant only at 0.99"
    assert hp["n_timesteps"] > 0 and hp["n_envs"] >= 1
    if "ppo" in algo:
        assert hp["n_steps"] % 24 == 0 and (hp["n_steps"] * hp["n_envs"]) % hp["batch_size"] == 0
    else:
        assert hp["learning_starts"] % 24 == 0 and hp["target_update_interval"] % 24 == 0


def test_unknown_algo_and_missing_env_entry_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="algo='sac' is invalid; allowed: ppo, maskable-ppo"):
        load_hyperparams("sac")
    f = tmp_path / "hp.yml"
    f.write_text("CartPole-v1: {n_timesteps: 10}\n")
    with pytest.raises(ConfigError, match="no entry for 'Esper-v0'"):
        load_hyperparams("ppo", str(f))


def test_parse_args_reads_env_options_and_yaml_overrides():
    args = parse_args(["--algo", "dqn", "--instance-set", "digits-mix", "--reward-mode", "delta",
                       "--n-slots", "1", "--env-kwarg", "gates={min_fossilize_contribution: 2.0}",
                       "--hyperparams", "learning_rate=1e-3", "--curriculum", "--vec-env", "subproc"])
    assert args.algo == "dqn" and args.curriculum and args.vec_env == "subproc"
    assert parse_args(["--vec-env", "thread"]).vec_env == "thread"
    assert args.env_kwargs == {"instance_set": "digits-mix", "reward_mode": "delta", "n_slots": 1,
                               "gates": {"min_fossilize_contribution": 2.0}}
    assert args.hyperparams == {"learning_rate": 1e-3}


def test_bad_options_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="reward_mode"):
        train(_args(tmp_path, env_kwargs=tiny_kwargs(reward_mode="dense")))
    with pytest.raises(ConfigError, match="eval_episodes=0"):
        train(_args(tmp_path, eval_episodes=0))
    with pytest.raises(ConfigError, match="curriculum_c=-1"):
        train(_args(tmp_path, curriculum=True, curriculum_c=-1.0))
    with pytest.raises(ConfigError, match="total_timesteps=-5"):
        train(_args(tmp_path, total_timesteps=-5))
    with pytest.raises(ConfigError, match="vec_env='fibre' is invalid; allowed: dummy, subproc, thread"):
        train(_args(tmp_path, vec_env="fibre"))
    assert not (tmp_path / "maskable-ppo").exists()


@pytest.mark.parametrize("algo", ALGOS)
def test_each_algorithm_trains_saves_and_reloads(tmp_path, algo):
    out = train(_args(tmp_path, algo))
    for name in ("model.zip", "best_model.zip", "env_config.json", "hyperparams.yml", "args.json",
                 "evaluations.json", "train_stats.json"):
        assert (out / name).exists(), name
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["timesteps"] >= 88 and stats["wall_s"] > 0 and stats["steps_per_s"] > 0
    assert {"commit", "machine", "torch", "torch_threads"} <= set(stats)
    split = stats["time_split_s"]  # where the run's time went
    assert list(split) == ["env", "policy", "update", "evaluation"]
    assert split["env"] > 0 and split["evaluation"] > 0 and split["policy"] >= 0
    assert sum(split.values()) <= stats["wall_s"] + 0.1
    history = json.loads((out / "evaluations.json").read_text())
    assert [h["timesteps"] for h in history] == [44, 88]
    assert all(h["illegal_fraction"] == 0.0 for h in history), "masked policies play legal actions"
    spec = EnvSpec.load(out / "env_config.json")
    assert spec.mask_observation == (algo != "maskable-ppo")
    assert spec.esper_config.task.max_epochs == 12
    model, spec2 = load_model(out, which="final")
    assert spec2 == spec
    result = run_episode(spec.make(), model, seed=1000)
    assert result.length == 11 and result.illegal_actions == 0
    with pytest.raises(FileExistsError, match="--overwrite"):
        train(_args(tmp_path, algo))


def test_tensorboard_gets_the_per_episode_esper_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(_args(tmp_path, total_timesteps=176))
    (run,) = (out / "tb").iterdir()
    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("esper/final_test_acc", "esper/final_val_acc", "esper/params_added",
                "esper/fossilized", "esper/culled", "esper/illegal_actions", "eval/mean_return",
                "eval/mean_final_test_acc", "rollout/ep_rew_mean"):
        assert tag in tags, (tag, sorted(tags))
    accs = [e.value for e in acc.Scalars("esper/final_test_acc")]
    assert all(0.0 <= a <= 100.0 for a in accs)


def _policy_params(out: Path) -> list[th.Tensor]:
    model, _ = load_model(out, which="final")
    return [p.detach().clone() for p in model.policy.parameters()]


def test_same_seed_same_policy_and_another_seed_another(tmp_path):
    a = _policy_params(train(_args(tmp_path, output=str(tmp_path / "a"), eval_freq=0)))
    b = _policy_params(train(_args(tmp_path, output=str(tmp_path / "b"), eval_freq=0)))
    c = _policy_params(train(_args(tmp_path, output=str(tmp_path / "c"), eval_freq=0, seed=1)))
    assert all(th.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(th.equal(x, y) for x, y in zip(a, c, strict=True))


def test_masked_model_is_refused_without_masks(tmp_path):
    out = train(_args(tmp_path, eval_freq=0))
    model, spec = load_model(out)
    with pytest.raises(MasksRequired, match="trained with action masks"):
        run_episode(spec.make(), model, seed=0, use_masks=False)


def _cli(name: str) -> list[str]:
    exe = Path(sys.executable).parent / name
    module = {"esper-train": "agents.train", "esper-eval": "agents.evaluate"}[name]
    return [str(exe)] if exe.exists() else [sys.executable, "-m", module]


def test_esper_train_and_esper_eval_end_to_end_with_subprocess_workers(tmp_path):
    out = tmp_path / "run"
    train_cmd = _cli("esper-train") + [
        "--algo", "per-dqn", "--vec-env", "subproc", "--n-envs", "2", "--total-timesteps", "66",
        "--output", str(out), "--eval-freq", "44", "--eval-episodes", "1", "--no-progress-bar",
        "--hyperparams", "learning_starts=22", "--hyperparams", "batch_size=8", "--curriculum", *TINY_CLI]
    done = subprocess.run(train_cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model.zip").exists() and "esper-eval --model" in done.stdout
    assert (out / "curriculum.json").exists() and (out / "best_curriculum.json").exists()
    report = tmp_path / "eval.json"
    eval_cmd = _cli("esper-eval") + ["--model", str(out), "--policies", "random,no-growth",
                                     "--episodes", "2", "--json", str(report)]
    done = subprocess.run(eval_cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(report.read_text())
    assert set(data["summary"]) == {"run", "random", "no-growth"}
    assert {e["seed"] for e in data["episodes"]} == {1000, 1001}
    for row in data["summary"].values():
        assert row["final_test_acc"]["n"] == 2 and np.isfinite(row["final_test_acc"]["ci95"])
    assert "test acc" in done.stdout and "minus no-growth" in done.stdout
    assert set(data["paired_differences"]["episode_return"]) == {"run", "random"}


def test_esper_eval_refuses_a_masked_model_without_masks(tmp_path):
    out = train(_args(tmp_path, eval_freq=0))
    done = subprocess.run(_cli("esper-eval") + ["--model", str(out), "--no-masks", "--episodes", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "trained with action masks" in done.stderr


def test_esper_eval_rejects_unknown_baseline():
    done = subprocess.run(_cli("esper-eval") + ["--policies", "randm", "--episodes", "1", *TINY_CLI],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "did you mean 'random'" in done.stderr


def test_curriculum_run_logs_arm_statistics_and_evaluates_with_its_curriculum(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agents.runs import load_curriculum

    out = train(_args(tmp_path, "ppo", curriculum=True, total_timesteps=176))
    spec = EnvSpec.load(out / "env_config.json")
    assert spec.curriculum == {"c": pytest.approx(2 ** 0.5), "complexity_penalty": 0.0, "seed": 0}
    final, best = load_curriculum(out, "final"), load_curriculum(out, "best")
    assert final.total_pulls + sum(final.pending.values()) > 0, "the agent germinated at least once"
    assert best is not None and best.arms == final.arms
    env = spec.make(curriculum=best)
    assert env.action_space.n == 4 and env.observation_space.shape[0] == 53 + 4
    model, _ = load_model(out)
    assert run_episode(env, model, seed=1000).illegal_actions == 0
    (run,) = (out / "tb").iterdir()
    acc = EventAccumulator(str(run))
    acc.Reload()
    assert "curriculum/conv_heavy_pulls" in acc.Tags()["scalars"]


def test_instance_set_runs_validate_on_the_train_split_and_esper_eval_reports_the_test_split(tmp_path):
    out = train(TrainArgs(algo="maskable-ppo", total_timesteps=48, n_envs=1, output=str(tmp_path / "mix"),
                          env_kwargs={"instance_set": "digits-mix"}, eval_freq=48, eval_episodes=1,
                          hyperparams={"n_steps": 48, "batch_size": 48, "n_epochs": 1}, progress_bar=False,
                          tensorboard=False))
    spec = EnvSpec.load(out / "env_config.json")
    assert spec.esper_config.task.instance_set == "digits-mix"
    assert spec.esper_config.task.instance_split == "train"
    report = tmp_path / "eval.json"
    done = subprocess.run(_cli("esper-eval") + ["--model", str(out), "--episodes", "2", "--policies",
                                                "no-growth", "--json", str(report)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    episodes = json.loads(report.read_text())["episodes"]
    test_names = {i.name for i in spec.make().unwrapped.instance_set.split("test")}
    assert {e["instance"] for e in episodes} <= test_names
    assert all(e["instance"].startswith("test") for e in episodes)


def test_torch_threads_option_sets_the_training_process_count_and_gives_it_back(tmp_path):
    import torch

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    out = train(_args(tmp_path, torch_threads=other))
    assert json.loads((out / "train_stats.json").read_text())["torch_threads"] == other
    assert torch.get_num_threads() == before
    assert parse_args(["--torch-threads", "1"]).torch_threads == 1
    with pytest.raises(ConfigError, match="torch_threads=0"):
        train(_args(tmp_path / "bad", torch_threads=0))


TINYTEXT = dict(tiny_kwargs(), task="tinytext", train_subset=32, batch_size=16, block_size=8, n_embd=16,
                n_head=2, n_layer=1)
"""tiny_kwargs() on tinytext with a one-block host of width 16 and 32 training windows."""


@pytest.mark.slow  # about 20 s each; esper-bench on tinytext (test_bench.py) runs by default
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # see transformer.py
@pytest.mark.parametrize("algo", ["maskable-ppo", "per-dqn"])
def test_agents_train_and_play_on_tinytext_with_the_transformer_blueprints(tmp_path, algo):
    out = train(_args(tmp_path, algo, env_kwargs=TINYTEXT, curriculum=algo == "per-dqn"))
    spec = EnvSpec.load(out / "env_config.json")
    assert spec.esper_config.task.name == "tinytext"
    model, _ = load_model(out, which="final")
    env = spec.make()
    names = env.unwrapped.action_names
    assert "GERMINATE_attention@0" in names and not any("conv_heavy" in n for n in names)
    result = run_episode(env, model, seed=1000)
    assert result.length == 11 and result.illegal_actions == 0
    assert 0.0 <= result.final_test_acc <= 100.0
    if algo == "per-dqn":  # the curriculum's arms are the task's blueprints, in action order
        arms = json.loads((out / "curriculum.json").read_text())["arms"]
        assert arms == list(env.unwrapped.blueprints) and arms[:3] == ["norm", "lora", "attention"]


def test_vec_env_batched_trains_maskable_ppo_on_the_batched_engine(tmp_path):
    args = parse_args(["--algo", "maskable-ppo", "--vec-env", "batched", "--n-envs", "3",
                       "--total-timesteps", "12", "--output", str(tmp_path / "run"),
                       "--eval-freq", "0", "--no-progress-bar", "--task", "digits",
                       "--max-epochs", "3", "--hyperparams", "n_steps=4",
                       "--hyperparams", "batch_size=6"])
    out = train(args)
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["timesteps"] == 12 and (out / "model.zip").exists()
    assert stats["steps_per_s"] > 0 and stats["vec_env"] == "batched" and stats["n_envs"] == 3
    assert stats["time_split_s"]["env"] > 0 and stats["time_split_s"]["evaluation"] == 0
    model = load_model(out)[0]
    obs = np.zeros((1, *model.observation_space.shape), np.float32)
    mask = np.zeros((1, model.action_space.n), bool)
    mask[0, 0] = True
    assert model.predict(obs, action_masks=mask)[0].tolist() == [0]  # a masked policy


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_vec_env_batched_trains_the_mask_in_the_observation_algorithms(tmp_path, algo):
    records = tmp_path / "set.json"
    records.write_text(json.dumps([{"name": "a", "host_channels": [2, 4, 8], "max_epochs": 3},
                                   {"name": "b", "host_channels": [2, 2, 4], "max_epochs": 4,
                                    "train_fraction": 0.5}]))
    hp = ["--hyperparams", "n_steps=4", "--hyperparams", "batch_size=6"] if algo == "ppo" else \
        ["--hyperparams", "learning_starts=2", "--hyperparams", "batch_size=4"]
    out = train(parse_args(["--algo", algo, "--vec-env", "batched", "--n-envs", "3",
                            "--total-timesteps", "12", "--output", str(tmp_path / "run"),
                            "--eval-freq", "0", "--no-progress-bar", "--instance-set",
                            str(records), *hp]))
    model = load_model(out)[0]
    env = EsperEnv(instance_set=str(records))
    assert model.observation_space.shape == (env.observation_space.shape[0] + env.action_space.n,)
    assert json.loads((out / "train_stats.json").read_text())["timesteps"] >= 12


@pytest.mark.parametrize("algo", ["maskable-ppo", "ppo"])
def test_vec_env_batched_trains_with_the_shared_blueprint_curriculum(tmp_path, algo):
    out = train(parse_args(["--algo", algo, "--curriculum", "--vec-env", "batched", "--n-envs",
                            "3", "--total-timesteps", "18", "--output", str(tmp_path / "run"),
                            "--eval-freq", "0", "--no-progress-bar", "--task", "digits",
                            "--max-epochs", "3", "--env-kwarg", "min_germinate_epoch=1",
                            "--env-kwarg", "germination_gate=false",
                            "--hyperparams", "n_steps=6", "--hyperparams", "batch_size=6"]))
    saved = json.loads((out / "curriculum.json").read_text())
    model = load_model(out)[0]
    n_collapsed = 1 + 3 * 1  # WAIT, then GERMINATE, FOSSILIZE, CULL per slot
    assert model.action_space.n == n_collapsed
    base = EsperEnv(task="digits").observation_space.shape[0]
    assert model.observation_space.shape == ((base + n_collapsed,) if algo == "ppo" else (base,))
    assert saved["arms"] == list(EsperEnv(task="digits").blueprints)


def test_vec_env_batched_refuses_what_it_cannot_run_yet(tmp_path):
    base = ["--vec-env", "batched", "--n-envs", "2", "--total-timesteps", "4", "--eval-freq", "0",
            "--task", "digits", "--max-epochs", "3"]
    with pytest.raises(ConfigError, match="task='synthetic' is not batchable"):
        train(parse_args(["--algo", "maskable-ppo", "--output", str(tmp_path / "c"),
                          *base[:-4], "--task", "synthetic", "--max-epochs", "3"]))
