"""Episode snapshots: what ``EsperEnv.snapshot()`` returns and ``restore()`` / ``fork()`` use.

A snapshot holds a deep copy of everything an episode is between two steps: the model (host, seeds,
gates, slot modes and alphas), every optimiser's state, the seedless twin, the governor's last good
state, the lifecycle records, tracker and governor state, the episode RNG (``np_random``) and the
data-order generator (so the data-order position), and the last observation, mask and info. The
dataset is shared, not copied (it is never changed in place). Pickling a snapshot stores the
dataset's recipe instead of its tensors.

:func:`state_digest` hashes such a state canonically (tensor bytes, optimiser states, RNG states,
lifecycle records), so two episodes can be compared without comparing objects.
"""

from __future__ import annotations

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
from torch import nn

from esper_env.errors import EsperError

SNAPSHOT_FORMAT = 1
"""Version of the snapshot layout; a snapshot of another format is refused."""


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
    config: Any  # EsperConfig (Any: keeps this module free of a config import cycle)
    epoch: int
    state: Mapping[str, Any]

    def digest(self) -> str:
        """SHA-256 of the episode state (equal states, equal digests)."""
        return state_digest(self.state)


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
