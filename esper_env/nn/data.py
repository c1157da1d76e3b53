"""A task's data as device-resident tensors (spec section 3), and what every task shares.

No DataLoader: batches are drawn with ``randperm`` from the episode's ``torch.Generator``. The
tasks themselves (what each loads, its host) are modules of :mod:`esper_env.tasks`, which builds
:class:`TaskData` with :func:`esper_env.tasks.load_task`; this module holds the record and the
helpers the loaders share: the fixed split seed, stratified splits, the fixed ``train_subset``, the
stratified ``train_fraction`` subset with symmetric label noise, and the on-device augmentation
(random crop and horizontal flip) of images stored as ``uint8``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from esper_env.tasks import get_task
from esper_env.tasks.spec import LoadRequest, TaskSpec
from esper_env.tasks.splits import SPLIT_SEED

CROP_PADDING = 4
"""Zero padding of the random-crop augmentation of image tasks stored as uint8 (CIFAR-10)."""


@dataclass
class TaskData:
    """Train, validation and test tensors of one task on one device.

    Float tasks (digits, synthetic) hold ready inputs. Image tasks stored as ``uint8``
    (CIFAR-10) hold raw pixels plus the training split's per-channel ``mean`` and ``std`` (in
    0..1 units); :meth:`prepare` turns a batch into normalised floats, augmented when given the
    parameters :meth:`augmentation` drew. Text tasks hold ``int64`` token windows (inputs and
    next-token targets, both ``(N, T)``) and their ``vocab``.

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
    mean: torch.Tensor | None = field(default=None, compare=False, repr=False)
    std: torch.Tensor | None = field(default=None, compare=False, repr=False)
    augment: bool = False
    vocab: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # prepare()'s per-channel affine map, computed once instead of on every batch
        self._scale = self._shift = None
        if self.mean is not None and self.std is not None:
            self._scale = (1.0 / (255.0 * self.std)).view(1, -1, 1, 1)
            self._shift = (self.mean / self.std).view(1, -1, 1, 1)

    def __deepcopy__(self, memo: dict[int, object]) -> TaskData:
        return self  # immutable: shared (see the class docstring)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:  # noqa: D105
        if self.recipe is None:
            return (_rebuild, (self.spec, self.train_x, self.train_y, self.val_x, self.val_y,
                               self.test_x, self.test_y, self.mean, self.std, self.augment,
                               self.vocab))
        return (_reload, (self.recipe,))

    @property
    def n_items(self) -> int:
        """Targets per sample: 1 for classification, the window length for text."""
        return 1 if self.train_y.dim() == 1 else int(self.train_y.shape[1])

    def augmentation(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """Random crop offsets and flips for ``n`` training samples, or None (no augmentation).

        Drawn from ``generator`` (the episode's data-order generator, on the CPU) in one call per
        epoch, then moved to the data's device: row ``i`` is ``(dy, dx, flip)`` of sample ``i``.
        """
        if not self.augment:
            return None
        params = torch.randint(0, 2 * CROP_PADDING + 1, (n, 3), generator=generator)
        params[:, 2] %= 2
        return params.to(self.train_x.device)

    def prepare(self, x: torch.Tensor, aug: torch.Tensor | None = None,
                memory_format: torch.memory_format | None = None) -> torch.Tensor:
        """The model's input for batch ``x``: uint8 images are cropped and flipped as ``aug``
        says (see :meth:`augmentation`; None: unchanged) and normalised; other data pass as
        they are. ``memory_format`` (``torch.channels_last``): the batch in that layout; None
        (default): the layout crop_and_flip and the stored data give (contiguous).
        """  # noqa: D205
        if self._scale is None:
            return x if memory_format is None else x.contiguous(memory_format=memory_format)
        if aug is not None:
            x = crop_and_flip(x, aug, memory_format=memory_format or torch.contiguous_format)
        elif memory_format is not None:
            x = x.contiguous(memory_format=memory_format)  # laid out while still uint8
        return x.float().mul_(self._scale).sub_(self._shift)


def crop_and_flip(x: torch.Tensor, aug: torch.Tensor, padding: int = CROP_PADDING,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip of images ``x`` ``(N, C, H, W)``.

    Row ``i`` of ``aug`` is ``(dy, dx, flip)``: the crop's offset in the padded image (0 to
    ``2 * padding``) and whether to mirror it. One gather on the images' device; same dtype out,
    in ``memory_format`` (the gather yields channels-last data, so ``torch.channels_last`` costs
    no copy).
    """
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = aug[:, 0:1] + torch.arange(h, device=x.device)  # (N, H)
    cols = torch.arange(w, device=x.device)
    cols = torch.where(aug[:, 2:3].bool(), w - 1 - cols, cols) + aug[:, 1:2]  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


def _rebuild(*args: object) -> TaskData:
    return TaskData(*args[:7], mean=args[7], std=args[8], augment=args[9],  # type: ignore[arg-type]
                    vocab=args[10])


def _reload(recipe: dict[str, object]) -> TaskData:
    return load_task(**recipe)  # type: ignore[arg-type]


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


def episode_training_set(labels: np.ndarray, n_classes: int, train_fraction: float,
                         label_noise: float, episode_seed: int
                         ) -> tuple[np.ndarray, np.ndarray] | None:
    """The episode's training indices and labels (:func:`subsample_and_corrupt`, drawn from the
    episode seed), or None when the episode trains on the whole, clean split.
    """  # noqa: D205
    if train_fraction >= 1.0 and label_noise <= 0.0:
        return None
    seed = int(np.random.SeedSequence([episode_seed, 1]).generate_state(1)[0])
    return subsample_and_corrupt(labels, n_classes, train_fraction, label_noise, seed)


def fixed_subset(labels: np.ndarray | None, n_total: int, size: int) -> np.ndarray:
    """Indices of the ``train_subset``: ``size`` of ``n_total`` samples, the same in every episode.

    Stratified (drawn with the fixed split seed) when ``labels`` are given, else the first
    ``size`` samples (text windows, by position).
    """
    if size >= n_total:
        return np.arange(n_total)
    if labels is None:
        return np.arange(size)
    kept, _ = subsample_and_corrupt(labels, int(labels.max()) + 1, size / n_total, 0.0,
                                    SPLIT_SEED)
    return kept


def load_task(name: str, *, episode_seed: int, device: torch.device | str,
              synthetic_samples: int = 40, train_fraction: float = 1.0,
              label_noise: float = 0.0, data_root: str | Path | None = None,
              download: bool = False, train_subset: int | None = None,
              block_size: int | None = None) -> TaskData:
    """Load task ``name`` onto ``device``.

    ``episode_seed`` generates the ``synthetic`` data and draws the training subset and the
    corrupted labels (``train_fraction`` < 1, ``label_noise`` > 0); the digits and CIFAR-10
    splits are fixed. ``data_root`` and ``download`` locate CIFAR-10 (see
    :func:`esper_env.nn.cifar.load_cifar10_arrays`), ``train_subset`` keeps a fixed part of the
    training split (stratified for classification, the first windows for text; the same in every
    episode), ``block_size`` is tinytext's window length (default: the task's).
    ``train_fraction`` keeps a stratified subset drawn from the episode seed and ``label_noise``
    replaces that fraction of the kept training labels by a different class, chosen uniformly
    (symmetric label noise, drawn from the episode seed). Validation and test stay whole and clean.
    """
    task = get_task(name)
    spec = task.resolve(task.spec)
    root = None if data_root is None else str(data_root)
    splits = task.load(LoadRequest(episode_seed, synthetic_samples, root, bool(download),
                                   block_size))
    tensors = list(splits.tensors)
    classify = tensors[1].dim() == 1
    if train_subset is not None:
        index = torch.from_numpy(fixed_subset(tensors[1].numpy() if classify else None,
                                              len(tensors[1]), int(train_subset)))
        tensors[0], tensors[1] = tensors[0][index], tensors[1][index]
    drawn = episode_training_set(tensors[1].numpy(), spec.n_classes, train_fraction,
                                 label_noise, episode_seed) if classify else None
    if drawn is not None:
        index = torch.from_numpy(drawn[0])
        tensors[0], tensors[1] = tensors[0][index], torch.from_numpy(drawn[1])
    # Copy: the loaders' cached tensors live for the process and must not be changed in place.
    moved = [t.to(device, copy=True) for t in tensors]
    recipe = {"name": name, "episode_seed": episode_seed, "device": str(device),
              "synthetic_samples": synthetic_samples, "train_fraction": train_fraction,
              "label_noise": label_noise, "data_root": root, "download": False,
              "train_subset": train_subset, "block_size": block_size}
    return TaskData(spec, *moved, recipe=recipe,
                    mean=None if splits.mean is None else splits.mean.to(device),
                    std=None if splits.std is None else splits.std.to(device),
                    augment=spec.augment, vocab=splits.vocab)


def load_config_task(cfg: Any, episode_seed: int, *, device: str | None = None,
                     train_subset: int | None = None) -> TaskData:
    """:func:`load_task` for ``cfg``, an :class:`~esper_env.config.EsperConfig` (its task section, the
    host's ``block_size`` and the runtime device unless ``device`` or ``train_subset`` is given).
    """  # noqa: D205
    task = cfg.task
    return load_task(task.name, episode_seed=episode_seed, device=device or cfg.runtime.device,
                     synthetic_samples=task.synthetic_samples,
                     train_fraction=task.train_fraction, label_noise=task.label_noise,
                     data_root=task.data_root, download=task.download,
                     train_subset=train_subset or task.train_subset,
                     block_size=cfg.host.block_size)
