"""The research tasks through the env: ``cifar10`` (a CNN host on CIFAR-format images read from a
folder) and ``tinytext`` (character-level language modelling with a small GPT host).

Checkers, determinism, global RNGs, the whole seed lifecycle for every blueprint, perplexity,
isolation by topology, fork, pickle, record and replay, configuration errors, seed checkpointing
and the spaces.
Every test uses a tiny config; CIFAR-10 is a small random folder in the real format.
"""

from __future__ import annotations

import copy
import math
import pickle
import re
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import tiny_kwargs
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.utils.env_checker import data_equivalence
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from esper_env.errors import ConfigError
from esper_env.nn.blueprints import available_blueprints, build_blueprint, count_parameters
from esper_env.nn.cifar import write_cifar10_folder
from esper_env.records import RecordEpisodes, read_records, replay

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASKS = ("cifar10", "tinytext")
TOPOLOGY = {"cifar10": "cnn", "tinytext": "transformer"}
TEXT_HOST = dict(block_size=8, n_embd=16, n_head=2, n_layer=2)
TINY_GATES = tiny_kwargs()["gates"]
FLEX_WARNING = "flex_attention called without torch.compile"
"""Torch's own once-per-process warning of eager FlexAttention (documented in transformer.py)."""

LIFECYCLE = [(task, bp) for task in TASKS for bp in available_blueprints(TOPOLOGY[task])]


@pytest.fixture(autouse=True)
def _quiet_flex_warning():
    """Eager flex_attention warns once that it is unfused; expected (see transformer.py)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=FLEX_WARNING)
        yield


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CIFAR-10 folder of 5 x 20 training and 20 test images (90/10 split: 10 val images)."""
    return str(write_cifar10_folder(tmp_path_factory.mktemp("cifar"), train_per_batch=20,
                                    n_test=20, seed=0))


def task_kwargs(task: str, cifar_root: str, **overrides: object) -> dict:
    """tiny_kwargs of ``task``; a ``gates`` override is merged into the tiny gate settings."""
    gates = {**TINY_GATES, **overrides.pop("gates", {})}  # type: ignore[dict-item]
    if task == "cifar10":
        base = dict(task="cifar10", data_root=cifar_root, train_subset=40, batch_size=20)
    else:
        base = dict(task="tinytext", **TEXT_HOST, train_subset=64, batch_size=32)
    return tiny_kwargs(**{**base, **overrides, "gates": gates})


def make(task: str, cifar_root: str, **overrides: object) -> gym.Env:
    return gym.make("Esper-v0", **task_kwargs(task, cifar_root, **overrides))


def index(env: gym.Env, name: str) -> int:
    return env.unwrapped.action_names.index(name)


def check_info(task: str, info: dict) -> None:
    """Every info: val_acc in [0, 100]; val_perplexity = exp(val_loss) on tinytext only."""
    assert 0.0 <= info["val_acc"] <= 100.0
    assert 0.0 <= info["train_acc"] <= 100.0
    if task == "tinytext":
        assert info["val_perplexity"] == math.exp(info["val_loss"])
        assert info["val_perplexity"] > 1.0
    else:
        assert "val_perplexity" not in info


def play(env: gym.Env, actions: list[int]) -> list[tuple]:
    """Step through ``actions``; each must be legal. The (obs, reward, term, trunc, info) list."""
    out = []
    for a in actions:
        assert env.unwrapped.action_masks()[a], env.unwrapped.action_names[a]
        out.append(env.step(a))
    return out


def assert_same_steps(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for (obs_a, r_a, te_a, tr_a, info_a), (obs_b, r_b, te_b, tr_b, info_b) in zip(a, b, strict=True):
        assert obs_a.dtype == obs_b.dtype == np.float32
        assert np.array_equal(obs_a, obs_b)
        assert r_a == r_b
        assert (te_a, tr_a) == (te_b, tr_b)
        assert data_equivalence(info_a, info_b, exact=True), info_a["epoch"]


def true_seed_params(task: str, blueprint: str, channels: int, n_head: int) -> int:
    """The blueprint's parameter count: the transformer's closed forms (transformer.py), or a
    freshly built CNN module's."""  # noqa: D205
    c = channels
    if task == "tinytext":
        return {"norm": 2 * c + 1, "lora": 16 * c, "attention": 4 * c * c + 6 * c,
                "flex_attention": 4 * c * c + 6 * c + n_head, "mlp": 8 * c * c + 7 * c}[blueprint]
    return count_parameters(build_blueprint("cnn", blueprint, c))


# -- 1. checkers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_check_env_gymnasium_and_sb3_pass_without_warnings(task: str, cifar_root: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make(task, cifar_root)
        gym_check_env(env.unwrapped)
        sb3_check_env(env)
        env.close()
    unexpected = [f"{w.category.__name__}: {w.message}" for w in caught
                  if not re.search(FLEX_WARNING, str(w.message))]
    assert unexpected == []


# -- 2. determinism --------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_same_seed_and_actions_give_identical_episodes(task: str, cifar_root: str) -> None:
    blueprint = available_blueprints(TOPOLOGY[task])[1]

    def run(seed: int) -> tuple[np.ndarray, dict, list[tuple]]:
        env = make(task, cifar_root)
        obs, info = env.reset(seed=seed)
        steps = play(env, [index(env, f"GERMINATE_{blueprint}@0"), 0, 0])
        assert steps[0][4]["blueprints"] == [blueprint]
        return obs, info, steps

    obs_a, info_a, a = run(5)
    obs_b, info_b, b = run(5)
    assert np.array_equal(obs_a, obs_b)
    assert data_equivalence(info_a, info_b, exact=True)
    assert_same_steps(a, b)
    obs_c, _, c = run(6)
    assert not np.array_equal(obs_a, obs_c)
    assert all(not np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


# -- 3. global RNGs --------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_make_reset_step_leave_global_rngs_untouched(task: str, cifar_root: str,
                                                     rng_guard: None) -> None:
    env = make(task, cifar_root)
    env.reset(seed=0)
    # The costliest blueprint builds a module under fork_rng; flex_attention runs dynamo.
    names = available_blueprints(TOPOLOGY[task])
    grow = "flex_attention" if "flex_attention" in names else names[-1]
    _, _, _, _, info = env.step(index(env, f"GERMINATE_{grow}@0"))
    env.step(0)
    env.reset()
    env.step(0)
    assert info["blueprints"] == [grow]


# -- 4. the whole lifecycle ------------------------------------------------------------------------
def _dedup(seq: list[str]) -> list[str]:
    return [s for i, s in enumerate(seq) if i == 0 or seq[i - 1] != s]


@pytest.mark.parametrize(("task", "blueprint"), LIFECYCLE, ids=[f"{t}-{b}" for t, b in LIFECYCLE])
def test_lifecycle_germinate_to_fossilized_for_every_blueprint(task: str, blueprint: str,
                                                               cifar_root: str) -> None:
    env = make(task, cifar_root, gates={"min_training_epochs": 2})
    u = env.unwrapped
    assert blueprint in u.blueprints
    fossilize = index(env, "FOSSILIZE@0")
    obs, info = env.reset(seed=1)
    check_info(task, info)
    stages, events = [info["stages"][0]], []
    action = index(env, f"GERMINATE_{blueprint}@0")
    while True:
        assert u.action_masks()[action]
        obs, _, terminated, _, info = env.step(action)
        check_info(task, info)
        stages.append(info["stages"][0])
        events += [(e["from"], e["to"], e["cause"]) for e in info["events"]]
        if info["stages"][0] == "FOSSILIZED" or terminated:
            break
        action = fossilize if u.action_masks()[fossilize] else 0
    assert _dedup(stages) == ["DORMANT", "TRAINING", "BLENDING", "PROBATIONARY", "FOSSILIZED"]
    assert events == [("DORMANT", "GERMINATED", "action"), ("GERMINATED", "TRAINING", "G1"),
                      ("TRAINING", "BLENDING", "G2"), ("BLENDING", "PROBATIONARY", "G3"),
                      ("PROBATIONARY", "FOSSILIZED", "action")]
    slot = u.trainer.model.slots[0]
    host = u.trainer.model.host
    n_head = 1 if slot.channels % 16 else slot.channels // 16
    expected = true_seed_params(task, blueprint, slot.channels, n_head)
    assert count_parameters(slot.seed) == expected
    assert info["blueprints"] == [blueprint] and info["alphas"] == [1.0]
    assert info["params_added"] == expected
    assert info["host_params"] == count_parameters(host)
    assert u.slots[0].isolation_violations == 0 and slot.isolation_violations == 0
    assert slot.mode == "blend" and slot.isolate is False  # a fossil is part of the host


@pytest.mark.parametrize("task", TASKS)
def test_lifecycle_cull_goes_through_cooldown_back_to_dormant(task: str, cifar_root: str) -> None:
    env = make(task, cifar_root, gates={"min_training_epochs": 50})  # stays TRAINING until culled
    u = env.unwrapped
    germinate = index(env, f"GERMINATE_{u.blueprints[0]}@0")
    cull = index(env, "CULL@0")
    env.reset(seed=2)
    _, _, _, _, info = env.step(germinate)
    assert info["stages"] == ["TRAINING"] and info["params_added"] > 0
    assert not u.action_masks()[cull]  # seed age 1 < min_cull_age 2
    _, _, _, _, info = env.step(0)
    _, _, _, _, info = play(env, [cull])[0]
    check_info(task, info)
    assert [(e["from"], e["to"], e["cause"]) for e in info["events"]] == [
        ("TRAINING", "CULLED", "action"), ("CULLED", "EMBARGOED", "cooldown")]
    assert info["stages"] == ["EMBARGOED"]
    assert info["params_added"] == 0 and info["seed_ids"] == [None]
    assert u.trainer.model.slots[0].seed is None
    stages = []
    while not stages or stages[-1] != "DORMANT":
        assert not u.action_masks()[1:].any()
        _, _, _, _, info = env.step(0)
        check_info(task, info)
        stages.append(info["stages"][0])
    assert stages == ["RESETTING", "DORMANT"]  # embargo_epochs=1
    assert u.action_masks()[germinate]
    _, _, _, _, info = env.step(germinate)
    assert info["stages"] == ["TRAINING"] and info["seed_ids"] == ["seed1"]


# -- 5. perplexity and accuracy --------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_val_perplexity_is_exp_val_loss_on_tinytext_only(task: str, cifar_root: str) -> None:
    env = make(task, cifar_root)
    _, info = env.reset(seed=0)
    infos = [info] + [s[4] for s in play(env, [index(env, "GERMINATE_norm@0"), 0, 0])]
    for info in infos:
        check_info(task, info)
    if task == "tinytext":  # the model learns: the perplexity moves, always exp(val_loss)
        assert len({i["val_perplexity"] for i in infos}) == len(infos)
        vocab = env.unwrapped.task_spec.n_classes
        assert infos[0]["val_perplexity"] < vocab * 1.5  # a sane language-model loss


def test_val_perplexity_of_a_diverged_step_is_exp_of_its_nan_loss(cifar_root: str) -> None:
    env = make("tinytext", cifar_root, fault_epochs=(2,), governor={"max_rollbacks": 0})
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(0)
    assert terminated and info["diverged"] and math.isnan(info["val_loss"])
    assert math.isnan(info["val_perplexity"]), info["val_perplexity"]  # exp(nan) is nan


# -- 6. isolation by topology ----------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_isolation_is_lifted_from_blending_on_transformer_only(task: str, cifar_root: str) -> None:
    env = make(task, cifar_root, gates={"min_training_epochs": 2}, blending_epochs=3)
    u = env.unwrapped
    env.reset(seed=0)
    seen = {}
    info = play(env, [index(env, "GERMINATE_lora@0" if task == "tinytext" else
                            "GERMINATE_conv_light@0")])[0][4]
    for _ in range(4):
        slot = u.trainer.model.slots[0]
        stage = info["stages"][0]
        seen[stage] = (slot.mode, slot.isolate)
        assert u.slots[0].isolation_violations == 0
        assert slot.isolation_violations == 0
        assert all("isolation_violations" not in g["failed"] for g in info["gates"] if g)
        _, _, _, _, info = env.step(0)
    assert seen["TRAINING"] == ("incubate", True)
    assert seen["BLENDING"] == ("blend", task == "cifar10")


def test_tinytext_gate_blend_uses_a_per_token_gate_and_stays_causal(cifar_root: str) -> None:
    env = make("tinytext", cifar_root, blend="gate")
    u = env.unwrapped
    env.reset(seed=0)
    _, _, _, _, info = play(env, [index(env, "GERMINATE_lora@0")])[0]
    assert info["stages"] == ["BLENDING"] and info["alphas"][0] > 0.0
    c = TEXT_HOST["n_embd"]
    assert info["params_added"] == 16 * c + (c + 1)  # the seed and its gate, Linear(C, 1)
    model = copy.deepcopy(u.trainer.model).eval()
    slot = model.slots[0]
    assert slot.gate.sequence is True and slot.mode == "blend"
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the (nearly zero-init) seed and the gate well off the identity
        for p in slot.seed_parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    vocab, t_len = u.task_spec.n_classes, TEXT_HOST["block_size"]
    x = torch.randint(0, vocab, (4, t_len), generator=g)
    with torch.no_grad():
        base = model(x)
        for t in range(t_len - 1):
            x2 = x.clone()
            x2[:, t + 1:] = (x[:, t + 1:] + 1) % vocab
            out = model(x2)
            torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


# -- 7. fork, pickle, record and replay ---------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_fork_with_a_live_seed_continues_identically(task: str, cifar_root: str) -> None:
    env = make(task, cifar_root)
    env.reset(seed=4)
    u = env.unwrapped
    # flex_attention (where available) has its own copy rules (its block-mask cache)
    grow = "flex_attention" if "flex_attention" in u.blueprints else u.blueprints[2]
    play(env, [index(env, f"GERMINATE_{grow}@0")])
    assert u.trainer.model.slots[0].seed is not None  # a live seed
    fork = u.fork()
    assert fork is not u and fork.trainer.model is not u.trainer.model
    assert fork.snapshot().digest() == u.snapshot().digest()
    actions = [0, 0, index(env, "CULL@0")]
    assert_same_steps(play(fork, actions), play(env, actions))
    assert fork.snapshot().digest() == u.snapshot().digest()


@pytest.mark.parametrize("task", TASKS)
def test_pickle_mid_episode_continues_identically(task: str, cifar_root: str) -> None:
    env = make(task, cifar_root)
    env.reset(seed=4)
    u = env.unwrapped
    play(env, [index(env, f"GERMINATE_{u.blueprints[-1]}@0"), 0])
    restored = pickle.loads(pickle.dumps(env))
    assert restored.unwrapped.config == u.config
    assert restored.unwrapped.snapshot().digest() == u.snapshot().digest()
    actions = [0, 0]
    assert_same_steps(play(restored, actions), play(env, actions))


@pytest.mark.parametrize("task", TASKS)
def test_a_recorded_episode_replays_exactly(task: str, cifar_root: str, tmp_path) -> None:
    path = tmp_path / "eps.jsonl"
    env = RecordEpisodes(make(task, cifar_root), path)
    env.reset(seed=6)
    u = env.unwrapped
    play(env, [index(env, f"GERMINATE_{u.blueprints[2]}@0"), 0, 0])
    env.close()  # an unfinished episode is written on close
    (rec,) = read_records(path)
    assert rec["config"]["task"]["name"] == task and len(rec["actions"]) == 3
    report = replay(rec)
    assert report.ok and report.exact and report.steps == 3, report.first_difference
    rec["rewards"][1] += 1e-9  # replay compares, it does not just re-run
    assert replay(rec).first_difference.startswith("step 2")


# -- 8. configuration errors -----------------------------------------------------------------------
def test_cifar_without_data_root_fails_at_make_naming_data_root_and_download() -> None:
    with pytest.raises(ConfigError) as err:
        gym.make("Esper-v0", task="cifar10")
    assert "data_root" in str(err.value) and "download=True" in str(err.value)


def test_cifar_missing_data_root_names_the_folder(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as err:
        gym.make("Esper-v0", task="cifar10", data_root=str(missing))
    assert str(missing) in str(err.value) and "download=True" in str(err.value)
    assert not missing.exists()  # nothing was created (download=False)


CONFIG_ERRORS = [
    (dict(task="digits", data_root="/tmp"), [r"data_root='/tmp'", r"task='cifar10'"]),
    (dict(task="tinytext", host_channels=(4, 8)),
     [r"host_channels=\(4, 8\)", r"None for task='tinytext'", r"n_layer and n_embd"]),
    (dict(task="tinytext", n_embd=30, n_head=4), [r"n_embd=30", r"multiple of n_head=4"]),
    (dict(task="tinytext", label_noise=0.1), [r"label_noise=0\.1", r"0\.0 for task='tinytext'"]),
    (dict(task="digits", block_size=8), [r"block_size=8", r"None unless", r"'tinytext'"]),
]


@pytest.mark.parametrize(("kwargs", "patterns"), CONFIG_ERRORS,
                         ids=["data_root-digits", "host_channels-tinytext", "n_embd-n_head",
                              "label_noise-tinytext", "block_size-digits"])
def test_config_error_names_the_bad_value_and_the_fix(kwargs: dict, patterns: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        gym.make("Esper-v0", **kwargs)
    for pattern in patterns:
        assert re.search(pattern, str(err.value)), (pattern, str(err.value))


# -- 9. seed checkpointing -------------------------------------------------------------------------
def test_seed_checkpointing_gives_the_identical_trajectory(cifar_root: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)

    def run(checkpointing: bool) -> tuple[np.ndarray, list[tuple]]:
        env = make("tinytext", cifar_root, seed_checkpointing=checkpointing)
        obs, _ = env.reset(seed=3)
        steps = play(env, [index(env, "GERMINATE_mlp@0"), 0, 0])
        assert env.unwrapped.trainer.model.slots[0].seed.checkpoint is checkpointing
        return obs, steps

    obs_plain, plain = run(False)
    assert calls == []
    obs_ckpt, ckpt = run(True)
    assert len(calls) >= 3 * 2  # every training batch of every epoch went through checkpointing
    assert np.array_equal(obs_plain, obs_ckpt)
    assert_same_steps(plain, ckpt)


# -- 10. spaces ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_slots", [1, 2])
def test_tinytext_action_space_lists_the_transformer_blueprints_in_order(cifar_root: str,
                                                                         n_slots: int) -> None:
    env = make("tinytext", cifar_root, n_slots=n_slots)
    other = make("tinytext", cifar_root, n_slots=n_slots)
    u = env.unwrapped
    names = available_blueprints("transformer")
    assert names[:3] == ("norm", "lora", "attention") and names[-1] == "mlp"
    assert u.blueprints == names
    assert env.action_space == gym.spaces.Discrete(1 + n_slots * (len(names) + 2))
    expected = ["WAIT"]
    for s in range(n_slots):
        expected += [f"GERMINATE_{b}@{s}" for b in names] + [f"FOSSILIZE@{s}", f"CULL@{s}"]
    assert list(u.action_names) == expected
    assert env.action_space == other.action_space
    assert env.observation_space == other.observation_space
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert [n for n in u.feature_names if n.startswith("slot0_blueprint_")] == \
        [f"slot0_blueprint_{b}" for b in names]


# -- 11. channels_last -----------------------------------------------------------------------------
def _nhwc(module: torch.nn.Module) -> list[bool]:
    """For each 4-D parameter of ``module``: is it laid out channels-last?"""
    return [p.is_contiguous(memory_format=torch.channels_last)
            for p in module.parameters() if p.dim() == 4]


@pytest.mark.parametrize("blueprint", available_blueprints("cnn"))
def test_channels_last_keeps_host_seed_twin_and_batches_in_nhwc(
        blueprint: str, cifar_root: str, rng_guard: None, monkeypatch: pytest.MonkeyPatch) -> None:
    env = make("cifar10", cifar_root, channels_last=True)
    u = env.unwrapped
    env.reset(seed=2)
    model = u.trainer.model
    assert len(_nhwc(model)) == 3 and all(_nhwc(model))  # the host's three convolutions
    batches: list[bool] = []  # the layout of every batch the model is given
    data, prepare = u.trainer.data, u.trainer.data.prepare

    def recording(*args, **kwargs):
        x = prepare(*args, **kwargs)
        batches.append(x.is_contiguous(memory_format=torch.channels_last))
        return x

    monkeypatch.setattr(data, "prepare", recording)
    play(env, [index(env, f"GERMINATE_{blueprint}@0")])
    while u.trainer.twin is None:  # until the seed blends in and the seedless twin is forked
        _, _, terminated, _, info = env.step(0)
        assert not terminated, info["stages"]
    env.step(0)
    slot = u.trainer.model.slots[0]
    assert slot.seed is not None and slot.mode == "blend"
    assert all(_nhwc(model)) and all(_nhwc(slot.seed)) and all(_nhwc(u.trainer.twin))
    assert len(batches) >= 3 * 2 and all(batches)  # training, validation, counterfactual passes
    monkeypatch.undo()
    restored = pickle.loads(pickle.dumps(env))
    assert all(_nhwc(restored.unwrapped.trainer.model)) and all(_nhwc(restored.unwrapped.trainer.twin))
    assert_same_steps(play(restored, [0, 0]), play(env, [0, 0]))
    u.trainer.checkpoint()
    u.trainer.restore_checkpoint()
    assert all(_nhwc(u.trainer.model))
    default = make("cifar10", cifar_root)
    default.reset(seed=2)
    assert not any(_nhwc(default.unwrapped.trainer.model))


def test_channels_last_is_the_same_network_in_another_layout(cifar_root: str) -> None:
    runs = []
    for channels_last in (False, True):
        env = make("cifar10", cifar_root, channels_last=channels_last)
        env.reset(seed=3)
        steps = play(env, [index(env, "GERMINATE_conv_heavy@0"), 0, 0, 0])
        runs.append((env.unwrapped.trainer.model, steps))
    (model_a, steps_a), (model_b, steps_b) = runs
    stages = [step[4]["stages"][0] for step in steps_a]
    assert stages == [step[4]["stages"][0] for step in steps_b]
    assert "BLENDING" in stages  # the seed has been blended in, counterfactuals and all
    for (name, a), b in zip(model_a.named_parameters(), model_b.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name
    for step_a, step_b in zip(steps_a, steps_b, strict=True):
        for key in ("train_loss", "val_loss"):
            assert step_a[4][key] == pytest.approx(step_b[4][key], rel=1e-5)
    again = make("cifar10", cifar_root, channels_last=True)
    again.reset(seed=3)
    assert_same_steps(play(again, [index(again, "GERMINATE_conv_heavy@0"), 0, 0, 0]), steps_b)
