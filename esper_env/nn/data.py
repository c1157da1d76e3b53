"""In-memory tasks as device-resident tensors (spec section 3).

No DataLoader: batches are drawn with ``randperm`` from the episode's ``torch.Generator``.

* ``digits``: scikit-learn's ``load_digits`` (1797 8x8 greyscale digits, shipped inside the
  package, no network), stratified 60/20/20 split with a fixed split seed, standardised with the
  training split's statistics.
* ``synthetic``: class prototypes plus noise, generated from the episode seed (a few hundred
  samples; milliseconds per step; for tests and ``check_env``).
* ``cifar10``: CIFAR-10 read from a local folder (:mod:`esper_env.nn.cifar`); the 50,000 training
  images split 45,000/5,000 into train/val (stratified, fixed split seed), the 10,000 test images
  as test. Images stay ``uint8`` on the device; each batch is normalised when it is used
  (per-channel mean and std of the training split) and training batches are augmented on the
  device (random crop with 4 pixels of zero padding, horizontal flip) with the episode's
  generator: no PIL, no DataLoader.
* ``tinytext``: character-level language modelling on the Python documentation topics that ship
  with CPython (``pydoc_data.topics``), split by position 90/5/5 into train/val/test, cut into
  non-overlapping windows of ``block_size`` characters; targets are the next characters.

Knobs that change the training split only (validation and test stay whole and clean):
``train_subset`` keeps the same fixed subset of the training samples in every episode (stratified
for classification, the first windows for text; a CPU option for CIFAR-10), ``train_fraction``
keeps a stratified subset drawn from the episode seed, and ``label_noise`` replaces that fraction
of the kept training labels by a different class, chosen uniformly (symmetric label noise; drawn
from the episode seed).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from esper_env.config import TRANSFORMER_DEFAULTS

SPLIT_SEED = 20251210
"""Fixed seed of the digits train/val/test split (the same split in every episode)."""


@dataclass(frozen=True)
class TaskSpec:
    """Static facts of a task: topology, input shape, classes and the default host.

    CNN tasks use ``in_channels``, ``image_size``, ``host_channels`` and ``pool_layers``; the
    transformer task (``tinytext``) uses ``n_classes`` as its vocabulary size and the
    ``block_size``, ``n_layer``, ``n_head`` and ``n_embd`` of its default host. ``grad_clip`` is
    the task's default gradient-norm clip (None: no clipping), ``seed_lr`` its default seed
    learning rate.
    """

    name: str
    topology: str
    in_channels: int
    image_size: int
    n_classes: int
    host_channels: tuple[int, ...] = ()
    pool_layers: int = 0
    block_size: int = 0
    n_layer: int = 0
    n_head: int = 0
    n_embd: int = 0
    grad_clip: float | None = None
    seed_lr: float = 0.05


TASK_SPECS: dict[str, TaskSpec] = {
    "digits": TaskSpec("digits", "cnn", 1, 8, 10, host_channels=(2, 4, 8), pool_layers=2),
    "synthetic": TaskSpec("synthetic", "cnn", 1, 8, 4, host_channels=(2, 4, 8), pool_layers=2),
    # The anchor's CIFAR host: base 8, three blocks, a pool after each: 6,418 parameters.
    "cifar10": TaskSpec("cifar10", "cnn", 3, 32, 10, host_channels=(8, 16, 32), pool_layers=3),
    # nanoGPT's gradient clipping at 1.0: without it an attention seed incubating at the seed
    # learning rate can blow up to NaN within an epoch.
    # The anchor's seed learning rate: at the CNN tasks' 0.05 the attention seeds hurt (docs/tasks.md).
    "tinytext": TaskSpec("tinytext", "transformer", 0, 0, 0, **TRANSFORMER_DEFAULTS, grad_clip=1.0,
                         seed_lr=0.01),
}
"""The tasks. ``tinytext``'s vocabulary size (``n_classes``) is known once its corpus is read:
:func:`task_spec` fills it in."""

TEXT_SPLIT = (0.9, 0.05, 0.05)
"""Fractions of the tinytext corpus (by position) in train, val and test."""


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


@contextmanager
def _global_rngs_kept() -> Iterator[None]:
    """Restore Python's global ``random``, NumPy's global RNG and torch's CPU RNG on exit.

    For third-party code that draws from them where it need not, at import or otherwise: the env
    promises never to change them. (Importing ``sklearn.datasets`` imports ``rich`` when it is
    installed, and ``rich.style`` calls ``random.getrandbits`` at import.)
    """
    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(th)


@lru_cache(maxsize=1)
def _digits_cpu() -> tuple[torch.Tensor, ...]:
    with _global_rngs_kept():
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


@lru_cache(maxsize=2)
def _cifar10_cpu(data_root: str, download: bool) -> tuple[torch.Tensor, ...]:
    from esper_env.nn.cifar import BASE_FOLDER, CIFARFolderError, load_cifar10_arrays

    train_x, train_y, test_x, test_y = load_cifar10_arrays(data_root, download=download)
    tr, va, _ = stratified_split(train_y, (0.9, 0.1, 0.0), SPLIT_SEED)
    if len(va) == 0:  # every step would validate on nothing
        raise CIFARFolderError(
            f"{Path(data_root).expanduser() / BASE_FOLDER}: its {len(train_y)} training images "
            "leave no validation image (the split keeps 10 % of each class, rounded); a class "
            "needs at least 6 images")
    mean = train_x[tr].mean(axis=(0, 2, 3), dtype=np.float64) / 255.0
    std = np.sqrt((train_x[tr].astype(np.float32) / 255.0).var(axis=(0, 2, 3), dtype=np.float64))
    out = []
    for x, y in ((train_x[tr], train_y[tr]), (train_x[va], train_y[va]), (test_x, test_y)):
        out += [torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))]
    return (*out, torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))


@lru_cache(maxsize=1)
def tinytext_corpus() -> str:
    """The tinytext corpus: CPython's ``pydoc_data.topics`` texts, joined in sorted key order.

    It ships with CPython (no download); its content follows the running Python's version, so
    results are comparable between runs on the same Python minor version.
    """
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def _text_windows(ids: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of ``block_size`` tokens and their next-token targets."""
    n = (len(ids) - 1) // block_size
    x = ids[:n * block_size].reshape(n, block_size)
    y = ids[1:n * block_size + 1].reshape(n, block_size)
    return torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))


@lru_cache(maxsize=2)
def _tinytext_cpu(block_size: int) -> tuple[tuple[torch.Tensor, ...], str]:
    text = tinytext_corpus()
    vocab = "".join(sorted(set(text)))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((lookup[ch] for ch in text), dtype=np.int64, count=len(text))
    n_train = int(TEXT_SPLIT[0] * len(ids))
    n_val = int(TEXT_SPLIT[1] * len(ids))
    out: list[torch.Tensor] = []
    for part in (ids[:n_train], ids[n_train:n_train + n_val], ids[n_train + n_val:]):
        out += list(_text_windows(part, block_size))
    return tuple(out), vocab


def task_spec(name: str) -> TaskSpec:
    """The spec of task ``name``, with tinytext's vocabulary size filled in."""
    spec = TASK_SPECS[name]
    if name == "tinytext":
        vocab = "".join(sorted(set(tinytext_corpus())))
        spec = dataclasses.replace(spec, n_classes=len(vocab))
    return spec


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
    training split, ``block_size`` is tinytext's window length (default: the task's).
    """
    spec = task_spec(name)
    mean = std = None
    vocab = None
    if name == "digits":
        tensors = list(_digits_cpu())
    elif name == "cifar10":
        root = None if data_root is None else str(Path(data_root).expanduser().resolve())
        if root is None:
            from esper_env.nn.cifar import load_cifar10_arrays

            load_cifar10_arrays(None)  # raises the error that explains data_root and download
        *tensors, mean, std = _cifar10_cpu(root, bool(download))  # type: ignore[arg-type]
        tensors = list(tensors)
    elif name == "tinytext":
        windows, vocab = _tinytext_cpu(int(block_size or spec.block_size))
        tensors = list(windows)
    else:
        tensors = list(_synthetic_cpu(spec, synthetic_samples, episode_seed))
    classify = tensors[1].dim() == 1
    if train_subset is not None:
        index = torch.from_numpy(fixed_subset(tensors[1].numpy() if classify else None,
                                              len(tensors[1]), int(train_subset)))
        tensors[0], tensors[1] = tensors[0][index], tensors[1][index]
    if classify and (train_fraction < 1.0 or label_noise > 0.0):
        seed = int(np.random.SeedSequence([episode_seed, 1]).generate_state(1)[0])
        kept, y = subsample_and_corrupt(tensors[1].numpy(), spec.n_classes, train_fraction,
                                        label_noise, seed)
        index = torch.from_numpy(kept)
        tensors[0], tensors[1] = tensors[0][index], torch.from_numpy(y)
    # Copy: the cached tensors live for the process and must not be changed in place.
    moved = [t.to(device, copy=True) for t in tensors]
    recipe = {"name": name, "episode_seed": episode_seed, "device": str(device),
              "synthetic_samples": synthetic_samples, "train_fraction": train_fraction,
              "label_noise": label_noise, "data_root": None if data_root is None else str(data_root),
              "download": False, "train_subset": train_subset, "block_size": block_size}
    return TaskData(spec, *moved, recipe=recipe,
                    mean=None if mean is None else mean.to(device),
                    std=None if std is None else std.to(device),
                    augment=name == "cifar10", vocab=vocab)
