"""Configuration validation, overrides and JSON round trip (esper_env/config.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest

from esper_env.config import (
    FLAT_KEYWORDS,
    SECTIONS,
    EsperConfig,
    GateConfig,
    GovernorConfig,
    HostConfig,
    LifecycleConfig,
    RewardConfig,
    TaskConfig,
    from_kwargs,
)
from esper_env.errors import ConfigError, EsperError

BAD_TOP: dict[str, list[object]] = {
    "task": ["digit", "cifar", "", 3],
    "n_slots": [0, -1, 1.5, True, "1"],
    "max_epochs": [1, 0, 2.0, None],
    "reward_mode": ["contrib", "Delta", None],
    "blend": ["addd", "mul"],
    "alpha_schedule": ["sigmoidal", "step"],
    "blending_epochs": [0, -2, 2.5],
    "germination_gate": [1, "yes", None, 0],
    "report_test_acc": [1, "yes", None],
    "min_germinate_epoch": [-1, 1.0],
    "plateau_epochs_to_germinate": [-1, "3"],
    "plateau_threshold": [-0.1, math.nan, math.inf, "0.5", True],
    "stabilization_threshold": [-1.0, math.nan, -math.inf],
    "stabilization_epochs": [0, False],
    "min_cull_age": [-1, 2.0],
    "embargo_epochs": [0, -3],
    "probation_timeout": [0, 1.5, True],
    "injection_points": [(0, 1), (-1,), (True,), (1.0,), "0"],
    "host_channels": [(4,), (4, 0), (4, 8.0), "4,8", ()],
    "batch_size": [0, 64.0],
    "host_bn_momentum": [0.0, 1.5, float("nan"), "0.5"],
    "host_lr": [0.0, -0.1, math.nan, math.inf],
    "host_momentum": [1.5, -0.1, math.nan],
    "host_weight_decay": [-1e-4, math.inf],
    "seed_lr": [0, -1.0],
    "seed_momentum": [1.1, -0.5],
    "synthetic_samples": [1, 0, 10.0],
    "device": ["gpu", "cuda:x", "cuda:", "CPU", 0, None],
    "torch_threads": [0, -1, 2.0],
    "fault_epochs": [(1,), (0,), (2.5,), (True,), "3", 3],
    "train_fraction": [0.0, 1.5, math.nan, "1"],
    "label_noise": [-0.1, 0.95, math.inf],
    "param_budget": [-1.0, math.nan, "0.5"],
    "instance_set": [5, ""],  # a name or a file is checked when the env is built (no I/O here)
    "instance_split": ["dev", "validation"],
    # transformer sizes are bad on the (default) CNN task whatever their value
    "block_size": [8, 0],
    "n_layer": [2],
    "n_head": [2],
    "n_embd": [16],
    "static_seeds": [((1, "norm"),), ((0, "nope"),), "norm", ((0, "norm"), (0, "norm")),
                     [[0, 1]], ((True, "norm"),)],
    "data_root": ["", 5, "/tmp"],  # "/tmp": a folder, but only CIFAR-10 reads one
    "download": [1, "yes", None],
    "train_subset": [0, 2.5, True],
    "seed_checkpointing": [1, "no"],
    "channels_last": [1, "yes", None],
    "grad_clip": [0.0, -1.0, math.nan, "1", True],
}
BAD_TOP_CASES = [(k, v) for k, vs in BAD_TOP.items() for v in vs]

BAD_NESTED: dict[str, list[object]] = {
    "gates.min_training_epochs": [0, 1.5],
    "gates.max_isolation_violations": [-1],
    "gates.min_gradient_ratio": [-0.01, math.nan],
    "gates.require_host_improvement": [1, "no"],
    "gates.min_host_improvement": [math.nan, math.inf],
    "gates.min_blend_alpha": [1.5, -0.1],
    "gates.min_probation_contribution": [math.nan, "0"],
    "gates.min_fossilize_contribution": [math.inf, "1"],
    "reward.gamma": [0.0, 1.5, -0.1],
    "reward.probation_wait_grace": [-1, 1.5],
    "reward.rent_pp_per_doubling": [-1.0, math.nan, math.inf],
    "reward.pbrs_weight": [-0.3],
    "reward.illegal_action_penalty": [-0.1],
    "governor.enabled": ["no", 1],
    "governor.snapshot_every": [0],
    "governor.history_window": [1],
    "governor.min_history": [1, 21],
    "governor.sensitivity": [-1.0],
    "governor.multiplier": [-1.0],
    "governor.absolute_floor": [-1.0, math.inf],
    "governor.consecutive_spikes": [0],
    "governor.lobotomy_tolerance": [1.5, -0.1],
    "governor.max_rollbacks": [-1],
}
BAD_NESTED_CASES = [(k, v) for k, vs in BAD_NESTED.items() for v in vs]


@pytest.mark.parametrize(("field", "value"), BAD_TOP_CASES,
                         ids=[f"{k}={v!r}" for k, v in BAD_TOP_CASES])
def test_esper_config_invalid_value_names_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        EsperConfig(**{field: value})
    msg = str(info.value)
    assert field in msg
    assert repr(value) in msg


@pytest.mark.parametrize(("field", "value"), BAD_NESTED_CASES,
                         ids=[f"{k}={v!r}" for k, v in BAD_NESTED_CASES])
def test_nested_config_invalid_value_names_field_and_value(field: str, value: object) -> None:
    group, name = field.split(".")
    with pytest.raises(ConfigError) as info:
        from_kwargs(**{group: {name: value}})
    msg = str(info.value)
    assert f"{field}={value!r}" in msg
    cls = {"gates": GateConfig, "reward": RewardConfig, "governor": GovernorConfig}[group]
    with pytest.raises(ConfigError, match=re.escape(f"{field}={value!r}")):
        cls(**{name: value})


BAD_TINYTEXT = {"block_size": [0, 2.0], "n_layer": [0], "n_head": [0, -2], "n_embd": [0, 31],
                "host_channels": [(4, 8)], "label_noise": [0.1], "train_fraction": [0.5],
                "channels_last": [True]}


@pytest.mark.parametrize(("field", "value"), [(k, v) for k, vs in BAD_TINYTEXT.items() for v in vs])
def test_tinytext_config_invalid_value_names_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        EsperConfig(task="tinytext", **{field: value})
    assert f"{field}={value!r}" in str(info.value)


def test_tinytext_and_cifar_configs_accept_their_fields(tmp_path) -> None:
    cfg = EsperConfig(task="tinytext", block_size=16, n_layer=3, n_head=4, n_embd=48,
                      train_subset=100, seed_checkpointing=True)
    assert EsperConfig.from_json(cfg.to_json()) == cfg
    cifar = EsperConfig(task="cifar10", data_root=tmp_path, download=True)
    assert cifar.task.data_root == str(tmp_path)  # a PathLike is kept as its string (JSON-ready)
    assert EsperConfig.from_json(cifar.to_json()) == cifar


def test_every_field_has_a_bad_value_case() -> None:
    assert set(BAD_TOP) == set(FLAT_KEYWORDS) - {"gates"}
    for group, cls in (("gates", GateConfig), ("governor", GovernorConfig)):
        assert {k.split(".")[1] for k in BAD_NESTED if k.startswith(group)} == {
            f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(RewardConfig) if f.name != "mode"])
def test_reward_config_rejects_nan_for_every_weight(field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"reward.{field}=nan")):
        RewardConfig(**{field: math.nan})


def test_config_error_is_value_error_and_esper_error() -> None:
    with pytest.raises(ValueError):
        EsperConfig(n_slots=0)
    assert issubclass(ConfigError, EsperError)


def test_config_task_typo_suggests_closest_name() -> None:
    with pytest.raises(ConfigError, match=re.escape("did you mean 'digits'")):
        EsperConfig(task="digit")
    with pytest.raises(ConfigError, match=re.escape("did you mean 'sigmoid'")):
        EsperConfig(alpha_schedule="sigmoidal")


def test_config_error_message_says_what_is_allowed() -> None:
    with pytest.raises(ConfigError, match=r"^n_slots=0 is invalid; allowed: an integer >= 1$"):
        EsperConfig(n_slots=0)
    with pytest.raises(ConfigError, match=r"allowed: a finite number >= 0\.0 and <= 1\.0$"):
        EsperConfig(host_momentum=1.5)


def test_config_nested_wrong_type_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^gates='x' is invalid"):
        EsperConfig(gates="x")  # type: ignore[arg-type]


def test_from_kwargs_nested_dict_updates_only_given_fields() -> None:
    base = EsperConfig(gates=GateConfig(min_training_epochs=1, max_isolation_violations=4))
    c = from_kwargs(base, gates={"min_fossilize_contribution": 2.0},
                    reward={"gamma": 0.9}, max_epochs=40)
    assert c.lifecycle.gates == GateConfig(min_training_epochs=1, max_isolation_violations=4,
                                           min_fossilize_contribution=2.0)
    assert c.reward.gamma == 0.9
    assert c.reward.rent_pp_per_doubling == RewardConfig().rent_pp_per_doubling
    assert c.task.max_epochs == 40
    assert c.governor == base.governor


def test_from_kwargs_whole_nested_dataclass_replaces() -> None:
    g = GateConfig(min_blend_alpha=0.5)
    assert from_kwargs(gates=g).lifecycle.gates is g


def test_esper_config_dict_for_nested_builds_dataclass() -> None:
    c = EsperConfig(governor={"enabled": False})
    assert isinstance(c.governor, GovernorConfig) and c.governor.enabled is False
    assert c.governor.snapshot_every == 5


def test_esper_config_replace_validates() -> None:
    c = EsperConfig().replace(n_slots=2, injection_points=[0, 1])
    assert c.host.injection_points == (0, 1)
    with pytest.raises(ConfigError, match="max_epochs=1"):
        EsperConfig().replace(max_epochs=1)


def test_from_kwargs_unknown_kwarg_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown EsperConfig field 'max_epoch'; "
                                                    "did you mean 'max_epochs'?")):
        from_kwargs(max_epoch=10)


def test_from_kwargs_unknown_nested_key_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=re.escape("did you mean 'gates.min_training_epochs'?")):
        from_kwargs(gates={"min_training_epoch": 2})
    with pytest.raises(ConfigError, match=re.escape("'governor.foo'")):
        EsperConfig(governor={"foo": 1})


def test_from_dict_unknown_key_rejected() -> None:
    d = EsperConfig().to_dict()
    d["n_slot"] = 2
    with pytest.raises(ConfigError, match=re.escape("did you mean 'n_slots'?")):
        EsperConfig.from_dict(d)


NON_DEFAULT = dict(
    task="synthetic", n_slots=2, max_epochs=40, reward_mode="delta", blend="gate",
    alpha_schedule="cosine", blending_epochs=3, germination_gate=False, min_germinate_epoch=2,
    report_test_acc=True,
    plateau_epochs_to_germinate=4, plateau_threshold=0.25, stabilization_threshold=0.01,
    stabilization_epochs=5, min_cull_age=4, embargo_epochs=2, probation_timeout=6,
    injection_points=(0, 2), host_channels=(4, 8, 16), batch_size=32, host_bn_momentum=0.1, host_lr=0.05,
    host_momentum=0.0, host_weight_decay=0.0, seed_lr=0.1, seed_momentum=0.5,
    synthetic_samples=10, train_fraction=0.5, label_noise=0.1, param_budget=2.0, device="cuda:1",
    torch_threads=1, channels_last=True, fault_epochs=(3, 7), train_subset=100, download=True,
    seed_checkpointing=True, grad_clip=0.5, static_seeds=((1, "norm"),),
    gates=GateConfig(min_training_epochs=1, min_gradient_ratio=0.0, require_host_improvement=True,
                     min_probation_contribution=-2.0, min_fossilize_contribution=-100.0),
    reward=RewardConfig(gamma=0.95, rent_pp_per_doubling=2.0, pbrs_weight=0.0),
    governor=GovernorConfig(enabled=False, min_history=5, history_window=8),
)


@pytest.mark.parametrize("config", [EsperConfig(), EsperConfig(**NON_DEFAULT)],
                         ids=["default", "non_default"])
def test_esper_config_json_round_trip(config: EsperConfig) -> None:
    text = config.to_json()
    json.loads(text)  # plain JSON
    back = EsperConfig.from_json(text)
    assert back == config
    assert isinstance(back.lifecycle.gates, GateConfig) and isinstance(back.reward, RewardConfig)
    if config.host.injection_points is not None:
        assert isinstance(back.host.injection_points, tuple)
        assert isinstance(back.runtime.fault_epochs, tuple)


def test_non_default_config_differs_from_default_in_every_field() -> None:
    d, n = EsperConfig().flat(), EsperConfig(**NON_DEFAULT).flat()
    for name in FLAT_KEYWORDS:
        if name in ("instance_set", "instance_split"):  # tested in tests/core/test_instances.py
            continue
        if name in ("block_size", "n_layer", "n_head", "n_embd", "data_root"):
            continue  # other tasks' fields: test_tinytext_and_cifar_configs_accept_their_fields
        assert d[name] != n[name], name
    for name in ("reward", "governor"):
        assert getattr(EsperConfig(), name) != getattr(EsperConfig(**NON_DEFAULT), name)


@pytest.mark.parametrize(("max_epochs", "timeout", "want"), [
    (25, None, 3), (2, None, 3), (39, None, 3), (40, None, 4), (100, None, 10), (25, 7, 7),
    (100, 1, 1),
])
def test_effective_probation_timeout(max_epochs: int, timeout: int | None, want: int) -> None:
    c = EsperConfig(max_epochs=max_epochs, probation_timeout=timeout)
    assert c.effective_probation_timeout == want


def test_esper_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EsperConfig().host = HostConfig()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        EsperConfig().host.n_slots = 3  # type: ignore[misc]


def test_defaults_are_anchor_values() -> None:
    c = EsperConfig()
    assert (c.task.name, c.host.n_slots, c.task.max_epochs, c.reward.mode, c.lifecycle.blend,
            c.lifecycle.alpha_schedule) == ("digits", 1, 25, "contribution", "add", "sigmoid")
    life, opt = c.lifecycle, c.optimiser
    assert (life.blending_epochs, life.min_germinate_epoch, life.min_cull_age, life.embargo_epochs,
            opt.batch_size) == (5, 5, 10, 3, 128)
    assert (opt.host_lr, opt.host_momentum, opt.host_weight_decay, opt.seed_momentum) == (
        0.01, 0.9, 5e-4, 0.9)


def test_defaults_calibrated_for_digits_differ_from_the_anchor_as_documented() -> None:
    # The germination-gate thresholds, BN momentum and seed lr are calibrated for digits
    # (python -m benchmarks.study growth); the docstring must give the anchor value next to each.
    c = EsperConfig()
    life = c.lifecycle
    assert (life.plateau_epochs_to_germinate, life.plateau_threshold, life.stabilization_threshold,
            life.stabilization_epochs, c.host.bn_momentum, c.optimiser.seed_lr) == (
        1, 2.0, 0.05, 2, 0.5, None)
    doc = " ".join(" ".join(cls.__doc__ or "" for cls in SECTIONS.values()).split())
    for anchor in ("anchor 3; digits 1", "anchor 0.5", "anchor 0.03; digits 0.05",
                   "anchor 3; digits 2", "anchor 0.01"):
        assert anchor in doc, anchor
    g = c.governor
    assert (g.snapshot_every, g.history_window, g.min_history, g.sensitivity, g.multiplier,
            g.consecutive_spikes, g.lobotomy_tolerance) == (5, 20, 10, 6.0, 3.0, 3, 0.065)


def test_numpy_scalars_are_accepted_as_plain_numbers() -> None:
    """Values computed with NumPy (np.int64, np.float32, np.bool_) configure like Python ones."""
    np = pytest.importorskip("numpy")
    cfg = EsperConfig(n_slots=np.int64(2), max_epochs=np.int32(12), host_lr=np.float64(0.02),
                      germination_gate=np.bool_(False), host_channels=[np.int64(2), np.int64(4), 8],
                      gates={"min_training_epochs": np.int64(2)}, reward=RewardConfig(gamma=np.float32(0.5)),
                      governor={"enabled": np.bool_(True)})
    assert cfg == EsperConfig(n_slots=2, max_epochs=12, host_lr=0.02, germination_gate=False,
                              host_channels=(2, 4, 8), gates={"min_training_epochs": 2},
                              reward={"gamma": 0.5}, governor={"enabled": True})
    for value in (cfg.host.n_slots, cfg.task.max_epochs, cfg.host.channels[0],
                  cfg.lifecycle.gates.min_training_epochs):
        assert type(value) is int
    assert type(cfg.optimiser.host_lr) is float and type(cfg.lifecycle.germination_gate) is bool
    assert EsperConfig.from_json(cfg.to_json()) == cfg  # plain JSON, no NumPy types left
    # a NumPy scalar of the wrong kind or range is still rejected, naming the value
    with pytest.raises(ConfigError, match="n_slots=0"):
        EsperConfig(n_slots=np.int64(0))
    with pytest.raises(ConfigError, match="max_epochs=2.5"):
        EsperConfig(max_epochs=np.float64(2.5))
    with pytest.raises(ConfigError, match="germination_gate"):
        EsperConfig(germination_gate=np.int64(1))


# -- sections -----------------------------------------------------------------------------------
def test_flat_keywords_and_sections_build_the_same_config() -> None:
    flat = EsperConfig(**NON_DEFAULT)
    sectioned = EsperConfig(**{name: getattr(flat, name) for name in SECTIONS})
    assert sectioned == flat and sectioned.flat() == flat.flat()
    assert [f.name for f in dataclasses.fields(EsperConfig)] == list(SECTIONS)
    as_dicts = EsperConfig(task={"name": "synthetic", "max_epochs": 40}, host={"n_slots": 2},
                           lifecycle=LifecycleConfig(blend="gate"))
    assert as_dicts == EsperConfig(task="synthetic", max_epochs=40, n_slots=2, blend="gate")
    # flat keywords apply on top of the sections given
    assert EsperConfig(task=TaskConfig(name="synthetic"), max_epochs=30).task == TaskConfig(
        name="synthetic", max_epochs=30)


def test_every_flat_keyword_reaches_its_section() -> None:
    n = EsperConfig(**NON_DEFAULT)
    for key, (section, name) in FLAT_KEYWORDS.items():
        assert getattr(getattr(n, section), name) == n.flat()[key]
    assert n.task.name == "synthetic" and n.host.channels == (4, 8, 16)
    assert n.host.bn_momentum == 0.1 and n.reward.mode == "delta"
    assert n.effective_probation_timeout == 6


def test_to_dict_has_one_entry_per_section_and_flat_dicts_still_load() -> None:
    n = EsperConfig(**NON_DEFAULT)
    assert list(n.to_dict()) == list(SECTIONS)
    old = {**{k: v for k, v in n.flat().items()},  # what the flat config wrote (JSON)
           "reward": {k: v for k, v in dataclasses.asdict(n.reward).items() if k != "mode"},
           "governor": dataclasses.asdict(n.governor),
           "gates": dataclasses.asdict(n.lifecycle.gates)}
    assert EsperConfig.from_json(json.dumps(old)) == n


def test_construction_reads_no_file(tmp_path) -> None:
    # The instance set is only a name or a path here: the env reads and checks it when built.
    cfg = EsperConfig(instance_set=str(tmp_path / "missing.json"))
    assert cfg.task.instance_set == str(tmp_path / "missing.json")
    assert EsperConfig(instance_set="digits-mixx").task.instance_set == "digits-mixx"


def test_from_kwargs_section_none_and_task_none_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"task: .*None"):
        from_kwargs(task=None)
    with pytest.raises(ConfigError, match=r"^host=None is invalid"):
        from_kwargs(host=None)
