"""CIFAR-10 python-format reader: round trip, validation errors, safe unpickling, download path."""

from __future__ import annotations

import builtins
import hashlib
import os
import pickle
import pickletools
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from esper_env.errors import ConfigError
from esper_env.nn import cifar
from esper_env.nn.cifar import (
    BASE_FOLDER,
    CLASSES,
    FILE_MD5,
    TEST_FILE,
    TRAIN_FILES,
    CIFARFolderError,
    load_cifar10_arrays,
    make_cifar10_tarball,
    write_cifar10_arrays,
    write_cifar10_folder,
)

PER_BATCH, N_TEST = 20, 20


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return write_cifar10_folder(tmp_path / "data", train_per_batch=PER_BATCH, n_test=N_TEST, seed=3)


def _plain_load(path: Path) -> dict:
    """How torchvision reads a batch: the stdlib unpickler, encoding latin1."""
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _batch(data_root: Path, name: str = "data_batch_2") -> Path:
    return data_root / BASE_FOLDER / name


def _assert_names_fix(err: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(err.value)
    assert "download=True" in msg, msg
    for part in parts:
        assert part in msg, msg


# ------------------------------------------------------------------------------------------------
# Round trip and format
# ------------------------------------------------------------------------------------------------

def test_round_trip_shapes_dtypes_values(data_root: Path):
    train_x, train_y, test_x, test_y = load_cifar10_arrays(data_root)
    assert train_x.shape == (5 * PER_BATCH, 3, 32, 32) and test_x.shape == (N_TEST, 3, 32, 32)
    assert train_x.dtype == np.uint8 and test_x.dtype == np.uint8
    assert train_y.shape == (5 * PER_BATCH,) and test_y.shape == (N_TEST,)
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    assert all(a.flags.c_contiguous for a in (train_x, train_y, test_x, test_y))
    # values equal what torchvision's own reading code gets from the same files, batches in order
    entries = [_plain_load(_batch(data_root, name)) for name in TRAIN_FILES]
    expected_x = np.vstack([e["data"] for e in entries]).reshape(-1, 3, 32, 32)
    expected_y = np.concatenate([e["labels"] for e in entries])
    np.testing.assert_array_equal(train_x, expected_x)
    np.testing.assert_array_equal(train_y, expected_y)
    test_entry = _plain_load(_batch(data_root, TEST_FILE))
    np.testing.assert_array_equal(test_x, test_entry["data"].reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(test_y, test_entry["labels"])
    # every class in every batch; labels in range
    for i in range(5):
        assert set(train_y[i * PER_BATCH:(i + 1) * PER_BATCH].tolist()) == set(range(10))
    assert set(test_y.tolist()) == set(range(10))
    assert not np.array_equal(train_x[:PER_BATCH], train_x[PER_BATCH:2 * PER_BATCH])


def test_writer_is_deterministic_in_seed(tmp_path: Path):
    a = load_cifar10_arrays(write_cifar10_folder(tmp_path / "a", 10, 10, seed=1))
    b = load_cifar10_arrays(write_cifar10_folder(tmp_path / "b", 10, 10, seed=1))
    c = load_cifar10_arrays(write_cifar10_folder(tmp_path / "c", 10, 10, seed=2))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_writer_files_look_like_the_python2_originals(data_root: Path):
    raw = _batch(data_root, "data_batch_1").read_bytes()
    ops = list(pickletools.genops(raw))
    assert ops[0][0].name == "PROTO" and ops[0][1] == 2
    names = {op.name for op, _, _ in ops}
    assert not names & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES"}  # py2 str only
    globals_ = {arg for op, arg, _ in ops if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    entry = _plain_load(_batch(data_root, "data_batch_1"))
    assert set(entry) == {"batch_label", "labels", "data", "filenames"}  # py2 str keys: str under latin1
    assert entry["batch_label"] == "training batch 1 of 5"
    assert isinstance(entry["labels"], list) and all(type(v) is int for v in entry["labels"])
    assert entry["data"].dtype == np.uint8 and entry["data"].shape == (PER_BATCH, 3072)
    assert len(entry["filenames"]) == PER_BATCH
    meta = _plain_load(data_root / BASE_FOLDER / "batches.meta")
    assert meta == {"num_cases_per_batch": PER_BATCH, "label_names": list(CLASSES), "num_vis": 3072}


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("key", [str, bytes])
def test_loads_batches_pickled_by_python3(data_root: Path, protocol: int, key: type):
    # e.g. a folder someone re-pickled with Python 3: protocol 2 pickles bytes via _codecs.encode,
    # protocol 5 pickles arrays via numpy's _frombuffer; all are on the allow-list.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(12, 3072), dtype=np.uint8)
    y = list(range(10)) + [0, 9]
    k = (lambda s: s.encode()) if key is bytes else (lambda s: s)
    _batch(data_root).write_bytes(pickle.dumps({k("data"): x, k("labels"): y, k("batch_label"): b""},
                                               protocol=protocol))
    train_x, train_y, _, _ = load_cifar10_arrays(str(data_root))
    np.testing.assert_array_equal(train_x[PER_BATCH:PER_BATCH + 12], x.reshape(-1, 3, 32, 32))
    np.testing.assert_array_equal(train_y[PER_BATCH:PER_BATCH + 12], y)
    assert len(train_x) == 4 * PER_BATCH + 12


def test_writer_rejects_bad_counts(tmp_path: Path):
    with pytest.raises(ConfigError, match="train_per_batch"):
        write_cifar10_folder(tmp_path, train_per_batch=0)
    with pytest.raises(ConfigError, match="n_test"):
        write_cifar10_folder(tmp_path, n_test=2.5)


def test_tarball_layout_matches_the_real_one(data_root: Path, tmp_path: Path):
    tgz = make_cifar10_tarball(data_root, tmp_path / "c.tar.gz")
    with tarfile.open(tgz, "r:gz") as tar:
        names = tar.getnames()
    assert names[0] == BASE_FOLDER
    assert {n.split("/")[0] for n in names} == {BASE_FOLDER}
    assert {f"{BASE_FOLDER}/{f}" for f in FILE_MD5} <= set(names)


# ------------------------------------------------------------------------------------------------
# Missing data
# ------------------------------------------------------------------------------------------------

def test_none_data_root_explains_data_root_and_download():
    with pytest.raises(CIFARFolderError) as err:
        load_cifar10_arrays(None)
    _assert_names_fix(err, "data_root=")
    assert isinstance(err.value, ConfigError)


def test_missing_folder_names_the_absolute_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CIFARFolderError) as err:
        load_cifar10_arrays("nowhere")
    _assert_names_fix(err, str(tmp_path.resolve() / "nowhere" / BASE_FOLDER), "does not exist")


def test_missing_train_file(data_root: Path):
    _batch(data_root, "data_batch_3").unlink()
    with pytest.raises(CIFARFolderError) as err:
        load_cifar10_arrays(data_root)
    _assert_names_fix(err, "data_batch_3", str(data_root.resolve() / BASE_FOLDER), "incomplete")
    assert "data_batch_2" not in str(err.value)


# ------------------------------------------------------------------------------------------------
# Corrupt files
# ------------------------------------------------------------------------------------------------

def _write_batch(data_root: Path, entry: object, name: str = "data_batch_2") -> None:
    _batch(data_root, name).write_bytes(cifar._py2_pickle(entry))


def _load_error(data_root: Path, *parts: str) -> str:
    with pytest.raises(CIFARFolderError) as err:
        load_cifar10_arrays(data_root)
    _assert_names_fix(err, str(data_root.resolve() / BASE_FOLDER), "delete")
    for part in parts:
        assert part in str(err.value), str(err.value)
    return str(err.value)


def test_garbage_bytes(data_root: Path):
    _batch(data_root).write_bytes(b"this is not a pickle at all\x00\xff" * 10)
    _load_error(data_root, str(_batch(data_root).resolve()), "not a readable pickle")


def test_truncated_pickle(data_root: Path):
    path = _batch(data_root)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    _load_error(data_root, str(path.resolve()), "truncated")


@pytest.mark.parametrize(("entry", "expected"), [
    ({"data": np.zeros((10, 100), np.uint8), "labels": [0] * 10},
     "data has shape (10, 100), expected (n, 3072)"),
    ({"data": np.zeros((10, 3072), np.float32), "labels": [0] * 10}, "data has dtype float32"),
    ({"data": np.zeros((10, 3072), np.uint8), "labels": [0] * 9}, "it has 9 labels for 10 images"),
    ({"data": np.zeros((10, 3072), np.uint8), "labels": [0] * 9 + [10]}, "labels[9] = 10 is outside 0..9"),
    ({"data": np.zeros((10, 3072), np.uint8), "labels": [-1] + [0] * 9}, "labels[0] = -1 is outside 0..9"),
    ({"data": np.zeros((10, 3072), np.uint8), "labels": ["cat"] * 10}, "labels is not a flat list of ints"),
    ({"data": np.zeros((10, 3072), np.uint8), "fine_labels": [0] * 10}, "no 'labels' entry"),
    ({"labels": [0] * 10}, "no 'data' entry"),
    ([1, 2, 3], "holds a list"),
])
def test_malformed_batch(data_root: Path, entry: object, expected: str):
    _write_batch(data_root, entry)
    _load_error(data_root, "data_batch_2", expected)


def test_malformed_test_batch_is_checked_too(data_root: Path):
    _write_batch(data_root, {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 99]}, TEST_FILE)
    _load_error(data_root, TEST_FILE, "labels[3] = 99")


def test_wrong_meta(data_root: Path):
    _write_batch(data_root, {"label_names": ["apple"] * 100}, "batches.meta")
    _load_error(data_root, "batches.meta", "label_names")


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("how", ["os.system", "builtins.eval", "inside_labels"])
def test_malicious_pickle_is_refused_and_nothing_runs(data_root: Path, tmp_path: Path, how: str):
    marker = tmp_path / "hacked"
    if how == "builtins.eval":
        evil = _Evil(builtins.eval, f"open({str(marker)!r}, 'w').close()")
    else:
        evil = _Evil(os.system, f"echo hacked > {marker}")
    payload = {"data": np.zeros((1, 3072), np.uint8), "labels": [evil]} if how == "inside_labels" else evil
    raw = pickle.dumps(payload, protocol=2)
    assert b"system" in raw or b"eval" in raw
    _batch(data_root).write_bytes(raw)
    msg = _load_error(data_root, "data_batch_2", "refused to unpickle", "nothing was run")
    assert ("system" in msg) if how != "builtins.eval" else ("eval" in msg)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------
# download=True
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def served_tarball(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tarball of data_root served through a file:// URL, with its real md5."""
    (tmp_path / "served").mkdir()
    tgz = make_cifar10_tarball(data_root, tmp_path / "served" / "cifar.tgz")
    monkeypatch.setattr(cifar, "CIFAR10_URL", tgz.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_TGZ_MD5", _md5(tgz))
    return tgz


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_download_through_file_url(data_root: Path, served_tarball: Path, tmp_path: Path):
    dest = tmp_path / "fresh"
    got = load_cifar10_arrays(dest, download=True)
    for a, b in zip(got, load_cifar10_arrays(data_root), strict=True):
        np.testing.assert_array_equal(a, b)
    assert _leftovers(dest) == [BASE_FOLDER, cifar.TGZ_FILENAME]  # tarball kept, like torchvision
    again = load_cifar10_arrays(dest)  # and it now loads without download=True
    np.testing.assert_array_equal(again[0], got[0])


def test_download_completes_an_incomplete_folder(data_root: Path, served_tarball: Path, tmp_path: Path):
    dest = tmp_path / "partial"
    write_cifar10_folder(dest, PER_BATCH, N_TEST, seed=3)
    _batch(dest, "data_batch_4").unlink()
    got = load_cifar10_arrays(dest, download=True)
    np.testing.assert_array_equal(got[0], load_cifar10_arrays(data_root)[0])
    assert _leftovers(dest) == [BASE_FOLDER, cifar.TGZ_FILENAME]


def test_download_with_wrong_md5_leaves_nothing(served_tarball: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cifar, "CIFAR10_TGZ_MD5", "0" * 32)
    dest = tmp_path / "fresh"
    with pytest.raises(CIFARFolderError) as err:
        load_cifar10_arrays(dest, download=True)
    _assert_names_fix(err, "md5", "0" * 32, str(dest.resolve()))
    assert not (dest / BASE_FOLDER).exists()
    assert _leftovers(dest) == []  # no tarball, no .part, no temporary extraction folder


def test_failed_download_names_url_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = (tmp_path / "no-such-file.tar.gz").as_uri()
    monkeypatch.setattr(cifar, "CIFAR10_URL", url)
    dest = tmp_path / "fresh"
    with pytest.raises(CIFARFolderError) as err:
        load_cifar10_arrays(dest, download=True)
    _assert_names_fix(err, url, str(dest.resolve()), "manually", BASE_FOLDER)
    assert _leftovers(dest) == []


def test_no_download_when_files_exist(data_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cifar, "CIFAR10_URL", "http://invalid.invalid/nothing.tar.gz")

    def no_network(*args, **kwargs):
        raise AssertionError("download attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    train_x, *_ = load_cifar10_arrays(data_root, download=True)
    assert train_x.shape == (5 * PER_BATCH, 3, 32, 32)
    assert not (data_root / cifar.TGZ_FILENAME).exists()


def test_download_reuses_a_tarball_already_in_data_root(data_root: Path, served_tarball: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    dest = tmp_path / "offline"
    dest.mkdir()
    (dest / cifar.TGZ_FILENAME).write_bytes(served_tarball.read_bytes())  # e.g. downloaded by hand
    monkeypatch.setattr(cifar, "CIFAR10_URL", "http://invalid.invalid/nothing.tar.gz")

    def no_network(*args, **kwargs):
        raise AssertionError("download attempted")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    got = load_cifar10_arrays(dest, download=True)
    np.testing.assert_array_equal(got[2], load_cifar10_arrays(data_root)[2])


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="tarfile without extraction filters")
def test_tarball_escaping_the_folder_is_refused(data_root: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch):
    tgz = tmp_path / "evil.tgz"
    escape = tmp_path / "escaped.txt"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(data_root / BASE_FOLDER, arcname=BASE_FOLDER)
        tar.add(_batch(data_root), arcname=f"../{escape.name}")
    monkeypatch.setattr(cifar, "CIFAR10_URL", tgz.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_TGZ_MD5", _md5(tgz))
    dest = tmp_path / "fresh"
    with pytest.raises(CIFARFolderError) as err:
        load_cifar10_arrays(dest, download=True)
    _assert_names_fix(err, "extract")
    assert not escape.exists() and not (dest / BASE_FOLDER).exists()


# ------------------------------------------------------------------------------------------------
# verify_md5
# ------------------------------------------------------------------------------------------------

def test_verify_md5_refuses_a_folder_that_is_not_the_real_dataset(data_root: Path):
    with pytest.raises(CIFARFolderError) as err:
        load_cifar10_arrays(data_root, verify_md5=True)
    _assert_names_fix(err, str(_batch(data_root, "data_batch_1").resolve()), FILE_MD5["data_batch_1"],
                      "verify_md5=False")


def test_verify_md5_accepts_matching_files(data_root: Path, monkeypatch: pytest.MonkeyPatch):
    folder = data_root / BASE_FOLDER
    monkeypatch.setattr(cifar, "FILE_MD5", {name: _md5(folder / name) for name in FILE_MD5})
    assert load_cifar10_arrays(data_root, verify_md5=True)[0].shape == (5 * PER_BATCH, 3, 32, 32)
    _batch(data_root, TEST_FILE).write_bytes(_batch(data_root, TEST_FILE).read_bytes()[:-1] + b"x")
    with pytest.raises(CIFARFolderError, match=TEST_FILE):
        load_cifar10_arrays(data_root, verify_md5=True)


def test_torchvision_md5s():
    # torchvision/datasets/cifar.py (CIFAR10.train_list, test_list, meta, tgz_md5)
    assert FILE_MD5 == {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    }
    assert cifar.CIFAR10_TGZ_MD5 == "c58f30108f718f92721af3b95e74349a"
    assert CLASSES == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                       "truck")


# ------------------------------------------------------------------------------------------------
# Writing given arrays
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["images", "rows"])
def test_write_cifar10_arrays_is_the_inverse_of_load(tmp_path: Path, layout: str):
    rng = np.random.default_rng(11)
    train_x = rng.integers(0, 256, size=(35, 3, 32, 32), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(9, 3, 32, 32), dtype=np.uint8)
    train_y, test_y = rng.integers(0, 10, size=35), rng.integers(0, 10, size=9).astype(np.int32)
    given = (train_x, test_x) if layout == "images" else (train_x.reshape(35, -1), test_x.reshape(9, -1))
    root = write_cifar10_arrays(tmp_path / "d", given[0], train_y, given[1], test_y)
    got = load_cifar10_arrays(root)
    for a, b in zip(got, (train_x, train_y, test_x, test_y), strict=True):
        np.testing.assert_array_equal(a, b)
    # batch i holds rows 7i..7i+6, as torchvision's reader sees them
    second = _plain_load(_batch(root, "data_batch_2"))
    np.testing.assert_array_equal(second["data"], train_x[7:14].reshape(7, -1))
    assert second["labels"] == train_y[7:14].tolist()
    assert _plain_load(_batch(root, "batches.meta"))["num_cases_per_batch"] == 7


@pytest.mark.parametrize(("change", "pattern"), [
    (dict(train_x=np.zeros((10, 3, 32, 32), np.float32)), r"train_x must be uint8 .*float32"),
    (dict(test_x=np.zeros((4, 3072 - 1), np.uint8)), r"test_x must be uint8 of shape .*\(4, 3071\)"),
    (dict(train_y=np.zeros(9, np.int64)), r"train_y must hold 10 integer labels"),
    (dict(test_y=np.full(4, 10)), r"test_y must hold 4 integer labels in 0..9"),
    (dict(train_x=np.zeros((11, 3072), np.uint8), train_y=np.zeros(11, np.int64)),
     r"train_x has 11 rows; allowed: a multiple of 5"),
])
def test_write_cifar10_arrays_names_bad_input_and_writes_nothing(tmp_path: Path, change: dict, pattern: str):
    arrays = dict(train_x=np.zeros((10, 3072), np.uint8), train_y=np.zeros(10, np.int64),
                  test_x=np.zeros((4, 3072), np.uint8), test_y=np.zeros(4, np.int64))
    with pytest.raises(ConfigError, match=pattern):
        write_cifar10_arrays(tmp_path / "d", **{**arrays, **change})
    assert not (tmp_path / "d").exists()
