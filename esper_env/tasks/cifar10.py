"""``cifar10``: CIFAR-10 read from a local folder (:mod:`esper_env.nn.cifar`), no download by default.

The 50,000 training images split 45,000/5,000 into train/val (stratified, fixed split seed), the
10,000 test images as test. Images stay ``uint8`` on the device; each batch is normalised when it
is used (per-channel mean and std of the training split) and training batches are augmented on the
device (random crop with 4 pixels of zero padding, horizontal flip) with the episode's generator.
Host: the anchor's CIFAR CNN, base 8, three blocks with a pool after each (6,418 parameters).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from esper_env.tasks.spec import LoadRequest, Splits, Task, TaskSpec, cnn_host

if TYPE_CHECKING:
    import torch

SPEC = TaskSpec("cifar10", "cnn", 3, 32, 10, host_channels=(8, 16, 32), pool_layers=3,
                augment=True)


def load(request: LoadRequest) -> Splits:
    """The CIFAR-10 splits from ``request.data_root`` (``download``: fetch them there first)."""
    root = request.data_root
    if root is None:
        from esper_env.nn.cifar import load_cifar10_arrays

        load_cifar10_arrays(None)  # raises the error that explains data_root and download
    *tensors, mean, std = _cifar10_cpu(str(Path(root).expanduser().resolve()),  # type: ignore[arg-type]
                                       bool(request.download))
    return Splits(tuple(tensors), mean=mean, std=std)


@lru_cache(maxsize=2)
def _cifar10_cpu(data_root: str, download: bool) -> tuple[torch.Tensor, ...]:
    import numpy as np
    import torch

    from esper_env.nn.cifar import BASE_FOLDER, CIFARFolderError, load_cifar10_arrays
    from esper_env.tasks.splits import SPLIT_SEED, stratified_split

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


TASK = Task(SPEC, load, cnn_host)
