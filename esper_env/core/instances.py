"""Instances and instance sets (spec section 15), DACBench style.

What differs between the training runs a growth controller faces.

Pure module (stdlib and numpy). An :class:`Instance` fixes seven fields of the env config: the host
(``host_channels``: widths and depth), where the slots sit (``injection_points``), the host's
learning rate, how much training data there is (``train_fraction``) and how clean it is
(``label_noise``), the epoch budget (``max_epochs``) and the parameter budget for added modules
(``param_budget``, a fraction of the host's parameters; blueprints that would exceed it are masked
out). Everything else comes from the env config. Instances are plain records that round-trip
through JSON and are validated like the config: a bad value raises
:class:`~esper_env.errors.ConfigError` naming the instance, the field, the value and what is
allowed.

An :class:`InstanceSet` is a fixed, versioned collection with disjoint ``train`` and ``test``
splits, a task and a slot count (the action space is the same for every instance of a set). Named
sets ship with the package as JSON files (:data:`INSTANCE_SETS`); users can pass their own as a
JSON file or a list of records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from esper_env.config import FLAT_KEYWORDS, INSTANCE_FIELDS, EsperConfig, Instance
from esper_env.errors import ConfigError, unknown_name_message
from esper_env.tasks import task_names

__all__ = ["INSTANCE_FIELDS", "INSTANCE_SETS", "Instance", "InstanceSet", "episode_config",
           "load_instance_set", "pinned_instance", "resolve_instance_set"]

SPLITS = ("train", "test")

SET_CONTROLLED = ("task", "n_slots", "instance_set", "instance_split")
"""Config fields an instance set's ``settings`` may not contain (they define the set itself)."""

INSTANCE_SETS: dict[str, str] = {"digits-mix": "digits-mix.json"}
"""Named instance sets shipped with the package: name -> file in ``esper_env/instance_sets``."""


@dataclass(frozen=True)
class InstanceSet:
    """A named, versioned set of instances with disjoint ``train`` and ``test`` splits.

    Attributes:
        name: the set's name (``digits-mix``).
        version: bumped whenever an instance changes, so results name what they ran on.
        task: the task every instance uses.
        n_slots: slots of every instance (fixes the action space).
        train: instances to train on.
        test: held-out instances to report on (never the same as a training instance).
        description: what the set contains and why.
        settings: env config values every instance of the set shares (for example
            ``{"germination_gate": False}``); like instance fields they must be left at their
            defaults by the user.
    """

    name: str
    version: int
    task: str
    n_slots: int
    train: tuple[Instance, ...]
    test: tuple[Instance, ...]
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    disjoint: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        allowed = [n for n in FLAT_KEYWORDS if n not in INSTANCE_FIELDS + SET_CONTROLLED]
        for key in self.settings:
            if key not in allowed:
                raise ConfigError(f"instance set {self.name!r} settings: " + unknown_name_message(
                    "setting", key, allowed))
        try:
            EsperConfig(task=self.task, n_slots=max(self.n_slots, 1), **self.settings)
        except ConfigError as e:
            raise ConfigError(f"instance set {self.name!r} settings: {e}") from None
        for split in SPLITS:
            if not getattr(self, split):
                raise ConfigError(f"instance set {self.name!r} has an empty {split!r} split")
        names = [i.name for split in SPLITS for i in getattr(self, split)] if self.disjoint \
            else [i.name for i in self.train]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"instance set {self.name!r}: instance names must be unique, "
                              f"repeated: {dupes}")
        if self.disjoint:
            train = {_key(i) for i in self.train}
            shared = [i.name for i in self.test if _key(i) in train]
            if shared:
                raise ConfigError(f"instance set {self.name!r}: test instances {shared} equal "
                                  "training instances; the splits must be disjoint")
        for i in self.train + self.test:
            if i.injection_points is not None and len(i.injection_points) != self.n_slots:
                raise ConfigError(f"instance {i.name!r}: injection_points={i.injection_points} "
                                  f"is invalid; allowed: {self.n_slots} block indices (the set "
                                  f"{self.name!r} has n_slots={self.n_slots})")
            if i.host_channels is not None and len(i.host_channels) < self.n_slots:
                raise ConfigError(f"instance {i.name!r}: host_channels={i.host_channels} has "
                                  f"fewer blocks than the set's n_slots={self.n_slots}")

    def split(self, name: str) -> tuple[Instance, ...]:
        """The instances of split ``name`` (``train`` or ``test``)."""
        if name not in SPLITS:
            raise ConfigError("instance_split: " + unknown_name_message("split", name, SPLITS))
        return getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what :func:`load_instance_set` reads)."""
        return {"name": self.name, "version": self.version, "task": self.task,
                "n_slots": self.n_slots, "description": self.description,
                "settings": dict(self.settings),
                "train": [i.to_dict() for i in self.train],
                "test": [i.to_dict() for i in self.test]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceSet:
        """Build from the JSON form; unknown keys raise ConfigError."""
        allowed = ("name", "version", "task", "n_slots", "description", "settings", "train",
                   "test")
        for key in data:
            if key not in allowed:
                raise ConfigError(unknown_name_message("instance set field", key, allowed))
        missing = [k for k in ("name", "version", "task", "n_slots", "train", "test")
                   if k not in data]
        if missing:
            raise ConfigError(f"instance set {data.get('name', '?')!r} lacks {missing}")
        if data["task"] not in task_names():
            raise ConfigError("instance set task: " + unknown_name_message("task", data["task"],
                                                                           task_names()))
        for key in ("version", "n_slots"):
            v = data[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if key == "n_slots" else 0):
                raise ConfigError(f"instance set {key}={v!r} is invalid; allowed: an integer >= "
                                  f"{1 if key == 'n_slots' else 0}")
        for split in SPLITS:
            if not isinstance(data[split], list):
                raise ConfigError(f"instance set {split}={data[split]!r} is invalid; allowed: a "
                                  "list of instance records")
        settings = data.get("settings", {})
        if not isinstance(settings, dict):
            raise ConfigError(f"instance set settings={settings!r} is invalid; allowed: a dict "
                              "of env config values")
        return cls(name=str(data["name"]), version=data["version"], task=data["task"],
                   n_slots=data["n_slots"], description=str(data.get("description", "")),
                   settings=settings,
                   train=tuple(Instance.from_dict(r) for r in data["train"]),
                   test=tuple(Instance.from_dict(r) for r in data["test"]))


def _key(i: Instance) -> tuple[Any, ...]:
    return tuple(i.overrides().values())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"instance_set={str(path)!r}: no such file; allowed: a set name "
                          f"({', '.join(map(repr, INSTANCE_SETS))}), a JSON file or a list of "
                          "instance records") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"instance_set={str(path)!r} is not valid JSON: {e}") from None


def _from_records(records: list[Any] | tuple[Any, ...], task: str, n_slots: int,
                  name: str) -> InstanceSet:
    instances = tuple(Instance.from_dict(r) for r in records)
    if not instances:
        raise ConfigError("instance_set=[] is invalid; allowed: a non-empty list of records")
    points = {len(i.injection_points) for i in instances if i.injection_points is not None}
    if len(points) > 1:
        raise ConfigError(f"instance_set: the instances' injection_points have different "
                          f"lengths {sorted(points)}; every instance needs the same slot count")
    slots = points.pop() if points else n_slots
    # A user's own list is drawn from for whichever split is asked for (their responsibility).
    return InstanceSet(name=name, version=0, task=task, n_slots=slots, train=instances,
                       test=instances, description="user-supplied instances", disjoint=False)


def load_instance_set(spec: str | Path | list[Any] | tuple[Any, ...], task: str = "digits",
                      n_slots: int = 1) -> InstanceSet:
    """Resolve ``spec`` to an :class:`InstanceSet`.

    Args:
        spec: a shipped set's name (see :data:`INSTANCE_SETS`), the path of a JSON file (a set,
            or a bare list of records), or a list of records (dicts or :class:`Instance`).
        task: the task of a bare list of records.
        n_slots: the slot count of a bare list whose records leave ``injection_points`` unset.
    """
    if isinstance(spec, (list, tuple)):
        return _from_records(spec, task, n_slots, "custom")
    if not isinstance(spec, (str, Path)):
        raise ConfigError(f"instance_set={spec!r} is invalid; allowed: a set name, a JSON file "
                          "or a list of instance records")
    if isinstance(spec, str) and spec in INSTANCE_SETS:
        text = resources.files("esper_env").joinpath("instance_sets", INSTANCE_SETS[spec])
        data = json.loads(text.read_text())
    elif str(spec).endswith(".json") or Path(spec).exists():
        data = _read_json(Path(spec))
    else:
        raise ConfigError("instance_set: " + unknown_name_message("instance set", spec,
                                                                  INSTANCE_SETS))
    if isinstance(data, list):
        return _from_records(data, task, n_slots, Path(spec).stem)
    if not isinstance(data, dict):
        raise ConfigError(f"instance_set={str(spec)!r} holds {type(data).__name__}; allowed: "
                          "a set object or a list of records")
    return InstanceSet.from_dict(data)


def pinned_instance(options: dict[str, Any] | None, instances: tuple[Instance, ...],
                    split: str) -> Instance | None:
    """The instance ``reset(options=...)`` pins (None: none pinned), validated.

    ``options`` may be None, ``{}`` or ``{"instance": spec}`` with ``spec`` an index into
    ``instances`` (the env's ``split``) or an instance record.
    """
    if options is None:
        return None
    if not isinstance(options, dict):
        raise ConfigError(f"reset options={options!r} is invalid; allowed: None or a dict such as "
                          "{'instance': 0}")
    if not options:
        return None
    unknown = sorted(set(options) - {"instance"})
    if unknown:
        raise ConfigError(f"reset options {unknown} are not supported; allowed: 'instance'")
    spec = options["instance"]
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, (bool, np.bool_)):
        n = len(instances)
        if not 0 <= int(spec) < n:
            allowed = f"an index in 0..{n - 1} of the {split!r} split" \
                if n else "an instance record (this env has no instance set)"
            raise ConfigError(f"reset option instance={spec!r} is invalid; allowed: {allowed}")
        return instances[int(spec)]
    if not isinstance(spec, (dict, Instance)):
        raise ConfigError(f"reset option instance={spec!r} is invalid; allowed: an index into "
                          "the instance split or an instance record (dict)")
    return Instance.from_dict(spec)  # a record, validated


def episode_config(config: EsperConfig, instance: Instance | None,
                   settings: dict[str, Any] | None,
                   injection_points: Callable[[EsperConfig], int]) -> EsperConfig:
    """The config of an episode on ``instance`` (``config`` itself without one), checked against
    its host, which has ``injection_points(cfg)`` injection points.
    """  # noqa: D205
    cfg = config if instance is None else instance.apply(config, settings)
    n_points = injection_points(cfg)
    where = "" if instance is None else f"instance {instance.name!r}: "
    n_slots, points = cfg.host.n_slots, cfg.host.injection_points
    if n_slots > n_points:
        raise ConfigError(f"{where}n_slots={n_slots} is invalid; allowed: 1..{n_points} "
                          f"(the {cfg.task.name} host has {n_points} injection points)")
    if points is not None and max(points) >= n_points:
        raise ConfigError(f"{where}injection_points={points} is invalid; "
                          f"allowed: distinct indices in 0..{n_points - 1}")
    return cfg


def resolve_instance_set(config: EsperConfig, given: Collection[str] = ()) -> EsperConfig:
    """Read ``config``'s instance set and check ``config`` against it (the env does, when built).

    When ``instance_set`` is among the keywords ``given`` by the caller, ``task`` and ``n_slots``
    follow the set unless they are given too (then they must agree with it); every field an
    instance or the set's settings fix must be left at its default. Returns the config (with the
    set's task and slot count). Without an instance set, ``config`` itself.
    """
    spec = config.task.instance_set
    if spec is None:
        return config
    iset = load_instance_set(spec, config.task.name, config.host.n_slots)  # type: ignore[arg-type]
    iset.split(config.task.instance_split)
    if "instance_set" in given:
        follow = {k: v for k, v in (("task", iset.task), ("n_slots", iset.n_slots))
                  if k not in given}
        if follow:
            config = config.replace(**follow)
    flat = config.flat()
    for name, value in (("task", iset.task), ("n_slots", iset.n_slots)):
        if flat[name] != value:
            raise ConfigError(f"{name}={flat[name]!r} conflicts with instance set {iset.name!r} "
                              f"({name}={value!r}); leave it out or use {value!r}")
    defaults = EsperConfig().flat()
    for name in INSTANCE_FIELDS + tuple(iset.settings):
        if flat[name] != defaults[name]:
            raise ConfigError(f"{name}={flat[name]!r} is set by every instance of {iset.name!r}; "
                              "leave it at its default with an instance set")
    return config
