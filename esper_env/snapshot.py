"""Episode snapshots: what ``EsperEnv.snapshot()`` returns and ``restore()`` / ``fork()`` use.

A snapshot is a deep copy of everything an episode is between two steps: the
:class:`~esper_env.core.episode.EpisodeState` record (lifecycle records, tracker, governor, mask,
V, the curve), the episode's resolved config, the trainer's tensors (the model with its seeds,
gates, slot modes and alphas, every optimiser's state, the seedless twin, the governor's
checkpoint and the data-order generator), the episode RNG (``np_random``), and the last
observation and info. The dataset is shared, not copied (it is never changed in place). Pickling
a snapshot stores the dataset's recipe instead of its tensors.

Snapshots carry their layout's :data:`SNAPSHOT_FORMAT` and the
:data:`~esper_env.core.episode.EPISODE_VERSION` of the episode; one of another format or version
is refused with a :class:`SnapshotError` naming both.

:func:`state_digest` hashes such a state canonically (tensor bytes, optimiser states, RNG states,
lifecycle records), so two episodes can be compared without comparing objects.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import hashlib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.error import ResetNeeded
from torch import nn

from esper_env._version import __version__
from esper_env.core.episode import EPISODE_VERSION
from esper_env.errors import EsperError

SNAPSHOT_FORMAT = 2
"""Version of the snapshot layout; a snapshot of another format is refused.

* 2: an ``EpisodeState`` record plus the trainer (``STATE_FIELDS``), and the episode version.
* 1: the env's 26 episode attributes (esper_env 0.1.0 before the episode was one record).
"""

STATE_FIELDS = ("episode", "cfg", "trainer", "np_random", "np_random_seed", "obs", "info",
                "warned_done")
"""What ``EnvSnapshot.state`` holds: the episode record, its resolved config, the trainer, the
episode RNG and its seed, the last observation and info, and whether the env has warned that
the episode is over.
"""


class SnapshotError(EsperError, ValueError):
    """A snapshot that cannot be restored into this env (malformed, another format or config)."""


@dataclass(frozen=True, eq=False)
class EnvSnapshot:
    """An Esper-v0 episode frozen between two steps (see the module docstring).

    Made by :meth:`EsperEnv.snapshot`; restore it with :meth:`EsperEnv.restore` into any env built
    with the same config (any number of times). Pickles; ``digest()`` is a hash of the state.
    """

    format: int
    env_version: str
    config: Any  # EsperConfig
    epoch: int
    state: Mapping[str, Any]
    episode_version: int | None = None

    def digest(self) -> str:
        """SHA-256 of the episode state (equal states, equal digests)."""
        return state_digest(self.state)


def check_snapshot(snap: object, config: Any, n_actions: int, obs_shape: tuple[int, ...]) -> None:
    """Raise :class:`SnapshotError` unless ``snap`` can be restored into an env with ``config``.

    ``n_actions`` and ``obs_shape`` are that env's action count and observation shape.
    """
    from esper_env.config import EsperConfig
    from esper_env.core.episode import EpisodeState
    from esper_env.nn.trainer import Trainer

    if not isinstance(snap, EnvSnapshot):
        raise SnapshotError(f"restore() needs an EnvSnapshot from env.snapshot(); "
                            f"got {type(snap).__name__}")
    if snap.format != SNAPSHOT_FORMAT:
        raise SnapshotError(f"snapshot format {snap.format!r} is not supported; allowed: "
                            f"{SNAPSHOT_FORMAT} (it was made by esper_env {snap.env_version} with "
                            "another layout; replay the episode from its record instead)")
    version = getattr(snap, "episode_version", None)
    if version != EPISODE_VERSION:
        raise SnapshotError(f"the snapshot holds an episode of version {version!r}; this "
                            f"esper_env runs episode version {EPISODE_VERSION}")
    if snap.config != config:
        raise SnapshotError("the snapshot was taken in an env with another config; build the env "
                            "with snap.config to restore it: " + _config_diff(snap.config, config))
    state = snap.state
    if not isinstance(state, Mapping) or set(state) != set(STATE_FIELDS):
        got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise SnapshotError(f"malformed snapshot: state fields {got}; expected {sorted(STATE_FIELDS)}")
    checks = (("episode", EpisodeState), ("cfg", EsperConfig), ("trainer", Trainer),
              ("np_random", np.random.Generator), ("obs", np.ndarray), ("info", dict),
              ("warned_done", bool))
    for name, kind in checks:
        if not isinstance(state[name], kind):
            raise SnapshotError(f"malformed snapshot: {name} is a {type(state[name]).__name__}, "
                                f"expected {kind.__name__}")
    episode = state["episode"]
    n = config.host.n_slots
    if state["cfg"].host.n_slots != n or len(episode.slots) != n or len(episode.checkpoint_slots) != n:
        raise SnapshotError(f"malformed snapshot: expected {n} slot records")
    if len(episode.mask) != n_actions or state["obs"].shape != obs_shape:
        raise SnapshotError("malformed snapshot: mask or observation of the wrong shape for this env")
    if snap.epoch != episode.epoch:
        raise SnapshotError(f"malformed snapshot: epoch {snap.epoch} != state epoch {episode.epoch}")


def _flat_view(config: Any) -> dict[str, Any]:
    """Every value of a config under its flat keyword (``gates.x``, ``reward.x``, ``governor.x``)."""
    view = {k: v for k, v in config.flat().items() if k != "gates"}
    for prefix, part in (("gates", config.lifecycle.gates), ("reward", config.reward),
                         ("governor", config.governor)):
        view.update({f"{prefix}.{k}": v for k, v in dataclasses.asdict(part).items()})
    return view


def _config_diff(a: Any, b: Any) -> str:
    da, db = _flat_view(a), _flat_view(b)
    diff = [f"{k}: snapshot {da.get(k)!r}, env {db.get(k)!r}" for k in sorted(set(da) | set(db))
            if da.get(k) != db.get(k)]
    return "; ".join(diff) or "(configs differ)"


# Trainer attributes derived from others (rebuilt on rollback) or not part of the state.
_TRAINER_SKIP = frozenset({"cfg", "_module_list", "_host_param_list", "_twin_modules"})


def state_digest(obj: Any) -> str:
    """Canonical SHA-256 of an episode state (tensors by dtype, shape and bytes)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _tag(h: Any, text: str) -> None:
    h.update(text.encode() + b"\x00")


def _feed(h: Any, obj: Any) -> None:  # noqa: C901 - one branch per kind of value
    from esper_env.nn.data import TaskData
    from esper_env.nn.trainer import Trainer

    if obj is None or isinstance(obj, (bool, int, str, torch.device, torch.dtype)):
        _tag(h, f"{type(obj).__name__}:{obj!r}")
    elif isinstance(obj, float):
        _tag(h, "float:" + ("nan" if math.isnan(obj) else struct.pack("<d", obj).hex()))
    elif isinstance(obj, enum.Enum):
        _tag(h, f"enum:{type(obj).__name__}.{obj.name}")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        _tag(h, f"tensor:{t.dtype}:{tuple(t.shape)}")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, np.ndarray):
        _tag(h, f"ndarray:{obj.dtype}:{obj.shape}")
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, np.generic):
        _feed(h, obj.item())
    elif isinstance(obj, (list, tuple)):
        _tag(h, f"{type(obj).__name__}:{len(obj)}")
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, Mapping):
        _tag(h, f"map:{len(obj)}")
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, torch.Generator):
        _tag(h, "torch.Generator")
        _feed(h, obj.get_state())
    elif isinstance(obj, np.random.Generator):
        _tag(h, "np.Generator")
        _feed(h, obj.bit_generator.state)
    elif isinstance(obj, nn.Module):
        for name, module in obj.named_modules():
            plain = {k: v for k, v in vars(module).items()
                     if not k.startswith("_") and isinstance(v, (bool, int, float, str))}
            _tag(h, f"module:{name}:{type(module).__name__}:{module.training}")
            _feed(h, plain)
        _feed(h, dict(obj.state_dict(keep_vars=False)))
        _feed(h, {n: p.grad for n, p in obj.named_parameters() if p.grad is not None})
    elif isinstance(obj, torch.optim.Optimizer):
        _tag(h, f"optimizer:{type(obj).__name__}")
        _feed(h, obj.state_dict())
    elif isinstance(obj, TaskData):
        _tag(h, "data")
        _feed(h, obj.recipe if obj.recipe is not None else [obj.train_x, obj.train_y, obj.val_x,
                                                              obj.val_y, obj.test_x, obj.test_y])
    elif isinstance(obj, Trainer):
        _tag(h, "trainer")
        _feed(h, {k: v for k, v in vars(obj).items() if k not in _TRAINER_SKIP})
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _tag(h, f"dataclass:{type(obj).__name__}")
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    else:
        raise TypeError(f"state_digest cannot hash a {type(obj).__name__!r} value")


class EpisodeSnapshots:
    """``snapshot``, ``restore``, ``fork``, ``copy.deepcopy`` and ``pickle`` of an env's episode.

    Mixed into :class:`~esper_env.env.EsperEnv`, whose attributes :data:`HELD_BY` names.
    """

    HELD_BY = {"episode": "_state", "cfg": "_cfg", "trainer": "_trainer",
               "np_random": "_np_random", "np_random_seed": "_np_random_seed", "obs": "_obs",
               "info": "_info", "warned_done": "_warned_done"}
    """Where each part of a snapshot (:data:`STATE_FIELDS`) lives in the env."""

    def snapshot(self) -> EnvSnapshot:
        """Freeze the episode as it is now (see :mod:`esper_env.snapshot` for what it holds).

        ``restore(snap)`` followed by the same actions gives the identical continuation; the
        snapshot is independent of this env (later steps do not change it) and pickles.
        """
        env: Any = self
        if env._state is None or env._trainer is None:
            raise ResetNeeded("call reset() before snapshot()")
        held = {name: getattr(env, attr) for name, attr in self.HELD_BY.items()}
        return EnvSnapshot(SNAPSHOT_FORMAT, __version__, env.config, env._state.epoch,
                           copy.deepcopy(held), EPISODE_VERSION)

    def restore(self, snap: EnvSnapshot) -> None:
        """Put this env at the point ``snap`` was taken (a copy: ``snap`` can be restored again).

        The env must have been built with the same config. A malformed snapshot, one of another
        format, episode version or config, raises :class:`SnapshotError` and changes nothing.
        """
        self._check(snap)
        self._adopt(copy.deepcopy(dict(snap.state)))

    def fork(self) -> Any:
        """An independent env at the same point of the same episode (same config, render mode).

        Stepping either does not affect the other; the same actions give the same results. The
        dataset's tensors are shared (never changed in place), everything else is copied.
        """
        return copy.deepcopy(self)

    def _check(self, snap: object) -> None:
        env: Any = self
        check_snapshot(snap, env.config, env.codec.n, env._low.shape)

    def _adopt(self, state: dict[str, Any]) -> None:
        env: Any = self
        for name, attr in self.HELD_BY.items():
            setattr(env, attr, state[name])
        env._params = env._episode_params(env._cfg)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the config, and mid-episode a snapshot (the dataset as its recipe)."""
        env: Any = self
        state: dict[str, Any] = {"config": env.config, "render_mode": env.render_mode,
                                 "spec": getattr(env, "spec", None)}
        if env._state is not None and env._trainer is not None:
            state["snapshot"] = self.snapshot()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:  # noqa: D105
        env: Any = self
        env.__init__(state["config"], render_mode=state["render_mode"])
        if state.get("spec") is not None:
            env.spec = state["spec"]
        snap = state.get("snapshot")
        if snap is not None:
            self._check(snap)
            self._adopt(dict(snap.state))  # already this env's own copy

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:  # noqa: D105
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        state = self.__getstate__()
        state["spec"] = copy.deepcopy(state["spec"], memo)
        new.__setstate__(state)
        return new
