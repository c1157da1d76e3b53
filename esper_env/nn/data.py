"""In-memory tasks as device-resident tensors (spec section 3).

No DataLoader: batches are drawn with ``randperm`` from the episode's ``torch.Generator``.

* ``digits``: scikit-learn's ``load_digits`` (1797 8x8 greyscale digits, shipped inside the
  package, no network), stratified 60/20/20 split with a fixed split seed, standardised with the
  training split's statistics.
* ``synthetic``: class prototypes plus noise, generated from the episode seed (a few hundred
  samples; milliseconds per step; for tests and ``check_env``).

Two knobs change the training split only (validation and test stay whole and clean), both drawn
from the episode seed: ``train_fraction`` keeps a stratified subset of the training samples, and
``label_noise`` replaces that fraction of the kept training labels by a different class, chosen
uniformly (symmetric label noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

SPLIT_SEED = 20251210
"""Fixed seed of the digits train/val/test split (the same split in every episode)."""


@dataclass(frozen=True)
class TaskSpec:
    """Static facts of a task: topology, input shape, classes and the default host."""

    name: str
    topology: str
    in_channels: int
    image_size: int
    n_classes: int
    host_channels: tuple[int, ...]
    pool_layers: int


TASK_SPECS: dict[str, TaskSpec] = {
    "digits": TaskSpec("digits", "cnn", 1, 8, 10, host_channels=(2, 4, 8), pool_layers=2),
    "synthetic": TaskSpec("synthetic", "cnn", 1, 8, 4, host_channels=(2, 4, 8), pool_layers=2),
}


@dataclass
class TaskData:
    """Train, validation and test tensors of one task on one device.

    Nothing changes these tensors in place (batches are gathered copies), so a deep copy shares
    them: forks and snapshots of an episode do not duplicate the dataset. Loaded by
    :func:`load_task`, it remembers how (``recipe``) and pickles as that recipe, so a pickled
    episode does not carry the dataset either and reloads it (the same tensors) when unpickled.
    """

    spec: TaskSpec
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    recipe: dict[str, object] | None = field(default=None, compare=False, repr=False)

    def __deepcopy__(self, memo: dict[int, object]) -> TaskData:
        return self  # immutable: shared (see the class docstring)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:  # noqa: D105
        if self.recipe is None:
            return (TaskData, (self.spec, self.train_x, self.train_y, self.val_x, self.val_y,
                               self.test_x, self.test_y))
        return (_reload, (self.recipe,))


def _reload(recipe: dict[str, object]) -> TaskData:
    return load_task(**recipe)  # type: ignore[arg-type]


def stratified_split(labels: np.ndarray, fractions: tuple[float, float, float], seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a per-class shuffled train/val/test split with the given fractions."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        parts[0].append(idx[:n_train])
        parts[1].append(idx[n_train:n_train + n_val])
        parts[2].append(idx[n_train + n_val:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


@lru_cache(maxsize=1)
def _digits_cpu() -> tuple[torch.Tensor, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a core dependency
        raise ImportError("the 'digits' task needs scikit-learn: pip install scikit-learn") from e
    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32)[:, None]  # (N, 1, 8, 8), values 0..16
    y = np.asarray(bunch.target, dtype=np.int64)
    tr, va, te = stratified_split(y, (0.6, 0.2, 0.2), SPLIT_SEED)
    mean, std = float(x[tr].mean()), float(x[tr].std())
    x = (x - mean) / std
    out = []
    for idx in (tr, va, te):
        out += [torch.from_numpy(x[idx].copy()), torch.from_numpy(y[idx].copy())]
    return tuple(out)


def _synthetic_cpu(spec: TaskSpec, per_class: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    shape = (spec.in_channels, spec.image_size, spec.image_size)
    protos = torch.randn((spec.n_classes, *shape), generator=g)
    y = torch.arange(spec.n_classes).repeat_interleave(per_class)
    x = protos[y] + 1.5 * torch.randn((len(y), *shape), generator=g)
    tr, va, te = stratified_split(y.numpy(), (0.6, 0.2, 0.2), seed)
    out = []
    for idx in (tr, va, te):
        t = torch.from_numpy(idx)
        out += [x[t].contiguous(), y[t].contiguous()]
    return tuple(out)


def subsample_and_corrupt(labels: np.ndarray, n_classes: int, train_fraction: float,
                          label_noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified ``train_fraction`` subset of ``labels``, and their (noisy) labels.

    Every class keeps ``max(1, round(train_fraction * n_c))`` samples; then
    ``round(label_noise * kept)`` of the kept labels are replaced by a different class, uniformly.
    """
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(train_fraction * len(idx))))
        keep.append(rng.choice(idx, size=k, replace=False) if k < len(idx) else idx)
    kept = np.sort(np.concatenate(keep))
    y = labels[kept].copy()
    n_noisy = int(round(label_noise * len(kept)))
    if n_noisy:
        which = rng.choice(len(kept), size=n_noisy, replace=False)
        shift = rng.integers(1, n_classes, size=n_noisy)  # never the true class
        y[which] = (y[which] + shift) % n_classes
    return kept, y


def load_task(name: str, *, episode_seed: int, device: torch.device | str,
              synthetic_samples: int = 40, train_fraction: float = 1.0,
              label_noise: float = 0.0) -> TaskData:
    """Load task ``name`` onto ``device``.

    ``episode_seed`` generates the ``synthetic`` data and draws the training subset and the
    corrupted labels (``train_fraction`` < 1, ``label_noise`` > 0); the digits split is fixed.
    """
    spec = TASK_SPECS[name]
    if name == "digits":
        tensors = list(_digits_cpu())
    else:
        tensors = list(_synthetic_cpu(spec, synthetic_samples, episode_seed))
    if train_fraction < 1.0 or label_noise > 0.0:
        seed = int(np.random.SeedSequence([episode_seed, 1]).generate_state(1)[0])
        kept, y = subsample_and_corrupt(tensors[1].numpy(), spec.n_classes, train_fraction,
                                        label_noise, seed)
        index = torch.from_numpy(kept)
        tensors[0], tensors[1] = tensors[0][index], torch.from_numpy(y)
    # Copy: the digits tensors are cached for the process and must not be changed in place.
    moved = [t.to(device, copy=True) for t in tensors]
    recipe = {"name": name, "episode_seed": episode_seed, "device": str(device),
              "synthetic_samples": synthetic_samples, "train_fraction": train_fraction,
              "label_noise": label_noise}
    return TaskData(spec, *moved, recipe=recipe)
