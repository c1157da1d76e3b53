"""Instances and instance sets (issue 6): validation, JSON round trips, splits, loading."""

from __future__ import annotations

import json
import math
import re

import pytest

from esper_env.config import EsperConfig, from_kwargs
from esper_env.core.instances import (
    INSTANCE_FIELDS,
    INSTANCE_SETS,
    Instance,
    InstanceSet,
    load_instance_set,
    resolve_instance_set,
)
from esper_env.errors import ConfigError


def resolved(**kwargs):
    """The config ``gym.make(**kwargs)`` runs with: merged, then checked against its set."""
    return resolve_instance_set(from_kwargs(**kwargs), kwargs)


def test_building_an_env_checks_the_instance_set_name_and_file(tmp_path) -> None:
    from esper_env.env import EsperEnv

    with pytest.raises(ConfigError, match="digits-mixx"):
        EsperEnv(instance_set="digits-mixx")
    with pytest.raises(ConfigError, match="missing.json"):
        EsperEnv(instance_set=str(tmp_path / "missing.json"))

REC = dict(name="a", host_channels=[2, 4, 8], injection_points=[2], host_lr=0.003,
           train_fraction=0.5, label_noise=0.2, max_epochs=20, param_budget=0.5)


def test_instance_round_trips_through_json() -> None:
    inst = Instance.from_dict(REC)
    assert inst.host_channels == (2, 4, 8) and inst.injection_points == (2,)
    assert Instance.from_dict(json.loads(json.dumps(inst.to_dict()))) == inst
    assert inst.to_dict() == REC
    assert set(inst.overrides()) == set(INSTANCE_FIELDS)


def test_instance_defaults_are_the_default_task() -> None:
    cfg = EsperConfig()
    episode = Instance("plain").apply(cfg)
    assert episode == cfg


def test_instance_apply_sets_every_field_and_clears_the_set() -> None:
    base = EsperConfig(instance_set=[REC])
    episode = Instance.from_dict(REC).apply(base)
    assert episode.task.instance_set is None
    for name in INSTANCE_FIELDS:
        want = REC[name]
        got = episode.flat()[name]
        assert (list(got) if isinstance(got, tuple) else got) == want, name


@pytest.mark.parametrize(("field", "value"), [
    ("host_lr", 0.0), ("host_lr", math.nan), ("train_fraction", 0.0), ("train_fraction", 1.5),
    ("label_noise", -0.1), ("label_noise", 0.95), ("max_epochs", 1), ("max_epochs", 2.5),
    ("param_budget", -1.0), ("host_channels", [4]), ("host_channels", [2, 0]),
    ("injection_points", [-1]), ("injection_points", [1, 1]),
])
def test_instance_bad_value_names_instance_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Instance.from_dict({**REC, field: value})
    msg = str(info.value)
    assert msg.startswith("instance 'a': ") and field in msg
    shown = tuple(value) if isinstance(value, list) else value
    assert repr(shown) in msg or repr(value) in msg


def test_instance_injection_point_beyond_host_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"instance 'a': injection_points=\(3,\).*0\.\.2"):
        Instance.from_dict({**REC, "injection_points": [3]})


def test_instance_unknown_field_has_a_hint_and_name_is_required() -> None:
    with pytest.raises(ConfigError, match="did you mean 'host_lr'"):
        Instance.from_dict({**REC, "host_lrr": 0.1})
    with pytest.raises(ConfigError, match="needs one"):
        Instance.from_dict({"host_lr": 0.1})
    with pytest.raises(ConfigError, match="name=''"):
        Instance("")


def _set(**kw: object) -> dict:
    data = dict(name="s", version=1, task="digits", n_slots=1,
                train=[{**REC, "name": "t0"}, {**REC, "name": "t1", "host_lr": 0.01}],
                test=[{**REC, "name": "e0", "host_lr": 0.1}])
    data.update(kw)
    return data


def test_instance_set_round_trips_and_splits() -> None:
    s = InstanceSet.from_dict(_set())
    assert [i.name for i in s.split("train")] == ["t0", "t1"]
    assert [i.name for i in s.split("test")] == ["e0"]
    assert InstanceSet.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(ConfigError, match="did you mean 'test'"):
        s.split("tests")


def test_instance_set_splits_must_be_disjoint() -> None:
    same = {**REC, "name": "e0"}  # the same instance as t0 under another name
    with pytest.raises(ConfigError, match=r"test instances \['e0'\] equal training instances"):
        InstanceSet.from_dict(_set(test=[same]))
    with pytest.raises(ConfigError, match=r"repeated: \['t0'\]"):
        InstanceSet.from_dict(_set(test=[{**REC, "name": "t0", "host_lr": 0.2}]))


@pytest.mark.parametrize(("change", "match"), [
    (dict(task="cifar"), "unknown task 'cifar'"),
    (dict(n_slots=0), "n_slots=0"),
    (dict(version=-1), "version=-1"),
    (dict(train=[]), "empty 'train' split"),
    (dict(test="x"), "test='x'"),
    (dict(n_slots=2), r"injection_points=\(2,\).*2 block indices"),
    (dict(colour="red"), "unknown instance set field 'colour'"),
])
def test_instance_set_bad_values(change: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        InstanceSet.from_dict(_set(**change))


def test_load_instance_set_from_file_list_and_unknown_name(tmp_path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_set()))
    assert load_instance_set(str(path)).name == "s"
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([{"name": "x", "host_lr": 0.05}]))
    loaded = load_instance_set(bare)
    assert loaded.train == loaded.test and loaded.train[0].host_lr == 0.05
    assert load_instance_set([{"name": "y"}]).n_slots == 1
    with pytest.raises(ConfigError, match="no such file"):
        load_instance_set(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_instance_set(broken)
    with pytest.raises(ConfigError, match="did you mean 'digits-mix'"):
        load_instance_set("digits-mx")
    with pytest.raises(ConfigError, match="different lengths"):
        load_instance_set([{"name": "p", "injection_points": [2]},
                           {"name": "q", "injection_points": [1, 2]}])


def test_config_takes_task_and_slots_from_the_set_and_rejects_instance_fields(tmp_path) -> None:
    path = tmp_path / "two.json"
    two = _set(n_slots=2, train=[{**REC, "name": "t0", "injection_points": [1, 2]}],
               test=[{**REC, "name": "e0", "injection_points": [0, 2]}])
    path.write_text(json.dumps(two))
    assert from_kwargs(instance_set=str(path)).host.n_slots == 1  # no file read: a plain config
    cfg = resolved(instance_set=str(path), instance_split="test")
    assert cfg.host.n_slots == 2 and cfg.task.instance_split == "test"
    with pytest.raises(ConfigError, match=r"n_slots=3 conflicts with instance set 's'"):
        resolved(instance_set=str(path), n_slots=3)
    with pytest.raises(ConfigError, match=r"n_slots=3 conflicts with instance set 's'"):
        resolve_instance_set(from_kwargs(instance_set=str(path), n_slots=3))  # given as a config
    with pytest.raises(ConfigError, match=r"host_lr=0.05 is set by every instance of 's'"):
        resolved(instance_set=str(path), host_lr=0.05)
    with pytest.raises(ConfigError, match="instance_split"):
        resolved(instance_set=str(path), instance_split="val")


def test_config_with_records_round_trips_through_json() -> None:
    cfg = EsperConfig(instance_set=[REC, {"name": "b", "max_epochs": 12}])
    assert all(isinstance(i, Instance) for i in cfg.task.instance_set)
    assert EsperConfig.from_json(cfg.to_json()) == cfg


def test_shipped_sets_load_and_are_disjoint() -> None:
    for name in INSTANCE_SETS:
        s = load_instance_set(name)
        assert s.name == name and s.version >= 1 and s.description
        train = {tuple(i.overrides().values()) for i in s.train}
        assert not train & {tuple(i.overrides().values()) for i in s.test}
        assert not {i.name for i in s.train} & {i.name for i in s.test}
        assert re.fullmatch(r"[a-z0-9-]+", name)


def test_instance_set_settings_apply_to_every_instance() -> None:
    s = InstanceSet.from_dict(_set(settings={"germination_gate": False, "min_cull_age": 4}))
    cfg = s.train[0].apply(EsperConfig(), s.settings)
    assert cfg.lifecycle.germination_gate is False and cfg.lifecycle.min_cull_age == 4
    assert cfg.optimiser.host_lr == 0.003
    assert InstanceSet.from_dict(json.loads(json.dumps(s.to_dict()))) == s


@pytest.mark.parametrize(("settings", "match"), [
    ({"host_lr": 0.1}, "unknown setting 'host_lr'"),
    ({"n_slots": 2}, "unknown setting 'n_slots'"),
    ({"germination_gat": False}, "did you mean 'germination_gate'"),
    ({"min_cull_age": -1}, r"settings: min_cull_age=-1 is invalid"),
])
def test_instance_set_bad_settings(settings: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        InstanceSet.from_dict(_set(settings=settings))


def test_config_rejects_user_values_for_set_settings(tmp_path) -> None:
    path = tmp_path / "gated.json"
    path.write_text(json.dumps(_set(settings={"min_cull_age": 4})))
    assert resolved(instance_set=str(path)).lifecycle.min_cull_age == 10  # applied per episode
    with pytest.raises(ConfigError, match=r"min_cull_age=3 is set by every instance of 's'"):
        resolved(instance_set=str(path), min_cull_age=3)
