"""Env API: Gymnasium and SB3 checkers, registration, make kwargs, errors, render, close, pickle."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from conftest import tiny_kwargs
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import esper_env
from esper_env.config import EsperConfig, GateConfig
from esper_env.errors import ConfigError

ALLOWED_WARNINGS: tuple[tuple[type[Warning], str], ...] = ()
"""(category, message regex) pairs a checker may emit without failing the test.

Empty on purpose: every warning either checker raises about Esper-v0 (bounds, dtypes, seeding,
determinism, render) points at a defect of the env, so none is tolerated.
"""


def _unexpected(records: list[warnings.WarningMessage]) -> list[str]:
    return [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in records
            if not any(issubclass(w.category, cat) and re.search(pat, str(w.message))
                       for cat, pat in ALLOWED_WARNINGS)]


# -- checkers --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_slots", [1, 3])
@pytest.mark.parametrize("task", ["digits", "synthetic"])
def test_check_env_gymnasium_and_sb3_pass_without_warnings(task: str, n_slots: int) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make("Esper-v0", task=task, n_slots=n_slots)
        gym_check_env(env.unwrapped)
        sb3_check_env(env)
        env.close()
    assert _unexpected(caught) == []


def test_check_env_with_ansi_render_mode_passes_without_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make("Esper-v0", render_mode="ansi", **tiny_kwargs(n_slots=2))
        gym_check_env(env.unwrapped)
        sb3_check_env(env, skip_render_check=False)
        env.close()
    assert _unexpected(caught) == []


# -- registration ----------------------------------------------------------------------------------
def test_make_after_import_builds_an_esper_env() -> None:
    assert "Esper-v0" in gym.registry
    env = gym.make("Esper-v0")
    assert isinstance(env.unwrapped, esper_env.EsperEnv)
    assert env.unwrapped.config == EsperConfig()
    # The budget is observed and ends the episode by termination: no TimeLimit truncation.
    assert env.spec is not None and env.spec.max_episode_steps is None
    env.close()


def test_make_with_module_prefix_works_in_fresh_subprocess() -> None:
    code = (
        "import gymnasium as gym\n"
        "assert 'Esper-v0' not in gym.registry\n"
        "env = gym.make('esper_env:Esper-v0', task='synthetic', max_epochs=3)\n"
        "obs, info = env.reset(seed=0)\n"
        "assert env.observation_space.contains(obs)\n"
        "obs, r, term, trunc, info = env.step(0)\n"
        "assert not term and not trunc\n"
        "print(type(env.unwrapped).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.strip() == "EsperEnv"


def test_import_esper_env_does_not_import_torch() -> None:
    code = "import sys, esper_env\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


# -- make kwargs -----------------------------------------------------------------------------------
MAKE_KWARGS = [
    dict(task="synthetic", n_slots=2, max_epochs=7, reward_mode="delta", blend="gate",
         alpha_schedule="cosine", germination_gate=False, min_cull_age=4, embargo_epochs=2,
         device="cpu"),
    dict(task="digits", n_slots=3, max_epochs=9, reward_mode="sparse", blend="multiply",
         alpha_schedule="linear", germination_gate=True, min_cull_age=0, embargo_epochs=5,
         device="cpu"),
]


@pytest.mark.parametrize("kwargs", MAKE_KWARGS)
def test_make_kwargs_select_config_fields_and_spaces(kwargs: dict) -> None:
    env = gym.make("Esper-v0", **kwargs)
    cfg = env.unwrapped.config
    for name, value in kwargs.items():
        assert cfg.flat()[name] == value, name
    n_bp = len(env.unwrapped.blueprints)
    assert env.action_space == gym.spaces.Discrete(1 + kwargs["n_slots"] * (n_bp + 2))
    obs, info = env.reset(seed=0)
    assert len(info["stages"]) == kwargs["n_slots"]
    assert obs.shape == env.observation_space.shape
    assert sum(n.startswith("slot") and n.endswith("_alpha")
               for n in env.unwrapped.feature_names) == kwargs["n_slots"]
    assert set(info["reward_terms"]) >= {"illegal_action", "rollback", "diverged"}
    assert str(next(env.unwrapped.trainer.model.parameters()).device) == kwargs["device"]
    env.close()


def test_make_nested_dict_kwarg_updates_only_given_fields() -> None:
    env = gym.make("Esper-v0", gates={"min_fossilize_contribution": 2.5})
    assert env.unwrapped.config.lifecycle.gates == GateConfig(min_fossilize_contribution=2.5)


INVALID = [
    (dict(n_slots=4), [r"n_slots=4", r"1\.\.3"]),
    (dict(task="synthetic", n_slots=0), [r"n_slots=0"]),
    (dict(blend="ad"), [r"blend", r"'ad'", r"did you mean 'add'\?"]),
    (dict(reward_mode="sparce"), [r"reward_mode", r"'sparce'", r"did you mean 'sparse'\?"]),
    (dict(alpha_schedule="cosin"), [r"alpha_schedule", r"did you mean 'cosine'\?"]),
    (dict(task="cifar"), [r"task", r"'cifar'"]),
    (dict(max_epochs=1), [r"max_epochs=1"]),
    (dict(min_cull_age=-1), [r"min_cull_age=-1"]),
    (dict(embargo_epochs=0), [r"embargo_epochs=0"]),
    (dict(germination_gate="yes"), [r"germination_gate='yes'"]),
    (dict(device="gpu"), [r"device='gpu'"]),
    (dict(n_slots=1.5), [r"n_slots=1\.5"]),
    (dict(fault_epochs=(1,)), [r"fault_epochs=\(1,\)"]),
    (dict(nslots=2), [r"unknown EsperConfig field 'nslots'", r"did you mean 'n_slots'\?"]),
    (dict(gates={"min_fossilize": 1.0}),
     [r"gates\.min_fossilize", r"did you mean 'gates\.min_fossilize_contribution'\?"]),
    (dict(gates={"min_training_epochs": 0}), [r"gates\.min_training_epochs=0"]),
]


@pytest.mark.parametrize(("kwargs", "patterns"), INVALID,
                         ids=[next(iter(k)) + "-" + str(i) for i, (k, _) in enumerate(INVALID)])
def test_make_invalid_value_raises_config_error_naming_field_and_value(
        kwargs: dict, patterns: list[str]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        gym.make("Esper-v0", **kwargs)
    message = str(excinfo.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    assert isinstance(excinfo.value, ValueError)


def test_make_unsupported_render_mode_warns_at_make_and_render_draws_nothing() -> None:
    # Accepted (Gymnasium's registration warns about the mode); render() warns and returns None.
    with pytest.warns(UserWarning, match="render_mode='bogus'"):
        env = gym.make("Esper-v0", render_mode="bogus", **tiny_kwargs())
    env.reset(seed=0)
    # (through gym.make's passive checker a render() call asserts; the env itself only warns)
    with pytest.warns(UserWarning, match="draws nothing"):
        assert env.unwrapped.render() is None


def test_render_rgb_array_draws_accuracy_and_stage_strips() -> None:
    from esper_env.core.lifecycle import SeedStage
    from esper_env.env import STAGE_COLOURS

    env = gym.make("Esper-v0", render_mode="rgb_array", **tiny_kwargs(n_slots=2))
    env.reset(seed=0)
    img0 = env.render()
    max_epochs = env.unwrapped.config.task.max_epochs
    assert img0.dtype == np.uint8 and img0.shape == (48 + 2 * 8, 4 * max_epochs, 3)
    env.step(env.unwrapped.action_names.index("GERMINATE_conv_light@1"))
    img1 = env.render()
    # epoch 1: both slots DORMANT; epoch 2: slot 1 TRAINING, slot 0 still DORMANT
    assert tuple(img1[48 + 0 * 8, 4 + 1]) == STAGE_COLOURS[SeedStage.DORMANT]
    assert tuple(img1[48 + 1 * 8, 4 + 1]) == STAGE_COLOURS[SeedStage.TRAINING]
    assert tuple(img1[48 + 1 * 8, 1]) == STAGE_COLOURS[SeedStage.DORMANT]
    # the accuracy bar of epoch 2 is drawn, later epochs are still blank
    acc = env.unwrapped.state.report.val_acc
    assert (img1[:48, 4 + 1] != 255).any() == (acc >= 1.0)
    assert (img1[:, 4 * 3:] == 255).all()


# -- render / close / pickle / order ---------------------------------------------------------------
def test_render_ansi_returns_text_mentioning_each_slot() -> None:
    env = gym.make("Esper-v0", render_mode="ansi", **tiny_kwargs(n_slots=3))
    env.reset(seed=0)
    codec = env.unwrapped.codec
    env.step(env.unwrapped.action_names.index("GERMINATE_conv_light@1"))
    text = env.render()
    assert isinstance(text, str)
    for s in range(codec.n_slots):
        assert f"slot{s}" in text
    assert "conv_light" in text
    assert env.unwrapped.slots[1].stage.name in text
    assert f"epoch 2/{env.unwrapped.config.task.max_epochs}" in text


def test_render_without_render_mode_warns_and_returns_none() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs()).unwrapped
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


def test_close_twice_is_harmless_and_env_can_be_reset_again() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs())
    env.reset(seed=0)
    env.step(0)
    env.close()
    env.close()
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()
    env.close()


def test_close_before_reset_is_harmless() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs())
    env.close()
    env.close()


@pytest.mark.parametrize("unwrap", [False, True])
def test_pickle_round_trip_of_fresh_env_keeps_config(unwrap: bool) -> None:
    env = gym.make("Esper-v0", render_mode="ansi", **tiny_kwargs(n_slots=2, blend="multiply"))
    original = env.unwrapped if unwrap else env
    restored = pickle.loads(pickle.dumps(original))
    assert restored.unwrapped.config == env.unwrapped.config
    assert restored.unwrapped.render_mode == "ansi"
    assert restored.action_space == env.action_space
    assert restored.observation_space == env.observation_space
    obs_a, _ = env.reset(seed=5)
    obs_b, _ = restored.reset(seed=5)
    assert np.array_equal(obs_a, obs_b)


def test_step_before_reset_raises_reset_needed() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs()).unwrapped
    with pytest.raises(ResetNeeded):
        env.step(0)
    with pytest.raises(ResetNeeded):
        env.action_masks()
    with pytest.raises(ResetNeeded):
        _ = env.trainer
    with pytest.raises(ResetNeeded, match="reset"):
        _ = env.slots


def test_step_after_close_raises_reset_needed() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs()).unwrapped
    env.reset(seed=0)
    env.close()
    with pytest.raises(ResetNeeded):
        env.step(0)


def test_reset_with_options_raises_config_error() -> None:
    env = gym.make("Esper-v0", **tiny_kwargs()).unwrapped
    with pytest.raises(ConfigError, match="options"):
        env.reset(seed=0, options={"foo": 1})
