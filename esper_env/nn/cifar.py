"""CIFAR-10 in its *python* format, read without torchvision (numpy and the standard library only).

Why not torchvision: the PyPI torchvision wheel does not import beside the CPU torch wheel this project
installs, so it cannot be a dependency. This module reads the same files torchvision reads, from the same
layout, so a folder torchvision downloaded works as-is::

    <data_root>/cifar-10-batches-py/
        data_batch_1 ... data_batch_5   10,000 training images each (train = the five, in order)
        test_batch                      10,000 test images
        batches.meta                    label_names (the 10 class names), num_cases_per_batch, num_vis

Each batch is a pickle (protocol 2, written by Python 2 in 2009, hence ``encoding="latin1"``, as in
torchvision) of a dict: ``data``, a uint8 array of shape (n, 3072), one row per image, channel-major
(1024 red, 1024 green, 1024 blue values of a 32x32 image, row by row); ``labels``, a list of n ints in
0..9 (indices into :data:`CLASSES`); ``filenames`` and ``batch_label``.

* :func:`load_cifar10_arrays` returns ``(train_x, train_y, test_x, test_y)``: x uint8 ``(N, 3, 32, 32)``
  (C-contiguous), y int64 ``(N,)``. It checks the structure of every file, always, and raises
  :class:`CIFARFolderError` naming the folder, the file, what is wrong and how to fix it; it never falls
  back to other data. There is no network access unless ``download=True``, and then only when files are
  missing (like torchvision): the tarball :data:`CIFAR10_URL` is fetched with urllib (or taken from
  ``<data_root>/cifar-10-python.tar.gz`` if that is already there with the right md5), checked against
  :data:`CIFAR10_TGZ_MD5` *before* anything is extracted, extracted with ``tarfile``'s ``"data"`` filter
  (no absolute paths, no ``..``, no links out of the folder) into a temporary folder and only then moved
  into place, so a failed or corrupt download leaves no half-written ``cifar-10-batches-py``. The tarball
  is kept beside the folder, as torchvision does. ``verify_md5=True`` also checks each file against the
  md5s torchvision checks (:data:`FILE_MD5`), which only the real dataset passes.
* Unpickling is restricted: a :class:`pickle.Unpickler` whose ``find_class`` resolves only the few numpy
  globals an array needs (plus a latin1-only ``_codecs.encode``, which Python 3's protocol-2 pickles of
  bytes use), so a malicious file dropped in the folder cannot run code: anything else (``os.system``,
  ``builtins.eval``, ...) is refused with a :class:`CIFARFolderError`.
* :func:`write_cifar10_folder` writes a small (or full-size) folder of random images in exactly this
  format, byte-for-byte in the style of the Python 2 originals (py2 ``str`` opcodes, the
  ``numpy.core.multiarray._reconstruct`` global), for tests, demos and speed benchmarks without the real
  dataset; :func:`make_cifar10_tarball` packs such a folder like the real tarball, to exercise the
  download path through a ``file://`` URL.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from esper_env.errors import ConfigError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
"""Where ``download=True`` fetches the tarball from (read at call time: tests monkeypatch it)."""

CIFAR10_TGZ_MD5 = "c58f30108f718f92721af3b95e74349a"
"""md5 of the tarball at :data:`CIFAR10_URL` (read at call time: tests monkeypatch it)."""

TGZ_FILENAME = "cifar-10-python.tar.gz"
"""Name of the downloaded tarball inside ``data_root`` (torchvision's name)."""

BASE_FOLDER = "cifar-10-batches-py"
"""The folder inside ``data_root`` that holds the batches (torchvision's ``base_folder``)."""

TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_FILE = "test_batch"
META_FILE = "batches.meta"

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""The 10 class names; label ``i`` is ``CLASSES[i]`` (``label_names`` of ``batches.meta``)."""

FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
"""md5 of each file of the real dataset, as checked by ``torchvision.datasets.CIFAR10``."""

IMAGE_SHAPE = (3, 32, 32)
ROW_SIZE = 3 * 32 * 32
N_CLASSES = len(CLASSES)
_REQUIRED_FILES = (*TRAIN_FILES, TEST_FILE, META_FILE)
_DOWNLOAD_TIMEOUT_S = 60.0


class CIFARFolderError(ConfigError):
    """A CIFAR-10 folder that is missing, incomplete or corrupt; the message says how to fix it."""


# --------------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------------

class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (see :class:`_SafeUnpickler`)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


def _numpy_attr(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy >= 2), else ``numpy.core.<module>.<name>`` (numpy 1.x)."""
    try:
        return getattr(importlib.import_module(f"numpy._core.{module}"), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module(f"numpy.core.{module}"), name)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` limited to latin1: how Python 3 pickles ``bytes`` at protocols 0-2."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1",
                                                                                 "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed for latin1 text, got {encoding!r}")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """``bytes()`` with no argument: how Python 3 pickles ``b""`` at protocols 0-2."""
    return b""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_attr("multiarray", "_reconstruct")
    scalar = _numpy_attr("multiarray", "scalar")
    frombuffer = _numpy_attr("numeric", "_frombuffer")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("__builtin__", "bytes"): _empty_bytes,
        ("builtins", "bytes"): _empty_bytes,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer  # numpy arrays at protocol 5
    return allowed


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that can only build plain containers and numpy arrays: no code can run.

    Without globals a pickle can only build builtin containers, strings and numbers; every callable
    comes through :meth:`find_class`, which resolves only the allow-list of :func:`_allowed_globals`
    (the numpy array reconstructors) and refuses anything else with :class:`_RefusedGlobal`.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _SafeUnpickler._allowed is None:
            _SafeUnpickler._allowed = _allowed_globals()
        try:
            return _SafeUnpickler._allowed[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _safe_unpickle(path: Path, folder: Path) -> Any:
    """Unpickle ``path`` like torchvision (``encoding="latin1"``) with :class:`_SafeUnpickler`."""
    try:
        with open(path, "rb") as f:
            return _SafeUnpickler(f, encoding="latin1").load()
    except _RefusedGlobal as e:
        raise CIFARFolderError(
            f"refused to unpickle CIFAR-10 file {path}: it asks for the global {e.qualified!r}, which a "
            f"CIFAR-10 batch never contains (the file may be malicious; nothing was run). "
            f"{_corrupt_hint(folder)}") from None
    except OSError as e:
        raise CIFARFolderError(f"cannot read CIFAR-10 file {path}: {e}. {_corrupt_hint(folder)}") from e
    except Exception as e:  # any malformed pickle: truncated, garbage, wrong opcodes, bad numpy state
        raise CIFARFolderError(
            f"CIFAR-10 file {path} is not a readable pickle (truncated or corrupt: "
            f"{type(e).__name__}: {e}). {_corrupt_hint(folder)}") from e


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------

def _corrupt_hint(folder: Path) -> str:
    return (f"The folder {folder} is corrupt or is not CIFAR-10's python version: delete it and download "
            f"again with download=True (or put a good copy of {BASE_FOLDER} there).")


def _missing_hint(root: Path) -> str:
    return (f"Pass download=True to download CIFAR-10 ({CIFAR10_URL}, about 163 MB) into {root}, or put "
            f"an extracted {BASE_FOLDER} folder there (e.g. the one torchvision.datasets.CIFAR10 "
            f"downloaded: pass the same root).")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

def _entry(d: dict, key: str) -> Any:
    """``d[key]``, accepting ``str`` keys (Python 2 files read as latin1) and ``bytes`` keys."""
    if key in d:
        return d[key]
    return d.get(key.encode("ascii"))


def _key_names(d: dict) -> list[str]:
    return sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in d)


def _read_batch(path: Path, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (x uint8 (n, 3072), y int64 (n,)), after checking its structure."""
    entry = _safe_unpickle(path, folder)

    def bad(what: str) -> CIFARFolderError:
        return CIFARFolderError(f"CIFAR-10 file {path} is not a valid CIFAR-10 batch: {what}. "
                                f"{_corrupt_hint(folder)}")

    if not isinstance(entry, dict):
        raise bad(f"it holds a {type(entry).__name__}, expected a dict with 'data' and 'labels'")
    data, labels = _entry(entry, "data"), _entry(entry, "labels")
    if data is None or labels is None:
        raise bad(f"it has no {'data' if data is None else 'labels'!r} entry (keys: {_key_names(entry)})")
    if not isinstance(data, np.ndarray):
        raise bad(f"data is a {type(data).__name__}, expected a numpy uint8 array of shape (n, 3072)")
    if data.dtype != np.uint8:
        raise bad(f"data has dtype {data.dtype}, expected uint8")
    if data.ndim != 2 or data.shape[1] != ROW_SIZE or data.shape[0] == 0:
        raise bad(f"data has shape {data.shape}, expected (n, {ROW_SIZE}) with n >= 1")
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise bad(f"labels is a {type(labels).__name__}, expected a list of ints")
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError, OverflowError) as e:
        raise bad(f"labels is not a flat list of ints ({e})") from e
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise bad(f"labels is not a flat list of ints (read as {y.dtype} array of shape {y.shape})")
    if len(y) != len(data):
        raise bad(f"it has {len(y)} labels for {len(data)} images")
    out_of_range = np.flatnonzero((y < 0) | (y >= N_CLASSES))
    if out_of_range.size:
        i = int(out_of_range[0])
        raise bad(f"labels[{i}] = {int(y[i])} is outside 0..{N_CLASSES - 1} "
                  f"({out_of_range.size} labels out of range)")
    return data, y.astype(np.int64)


def _check_meta(path: Path, folder: Path) -> None:
    meta = _safe_unpickle(path, folder)
    names = _entry(meta, "label_names") if isinstance(meta, dict) else None
    if isinstance(names, (list, tuple)):
        names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    if names is None or tuple(names) != CLASSES:
        raise CIFARFolderError(
            f"CIFAR-10 file {path} is not CIFAR-10's batches.meta: expected label_names {list(CLASSES)}, "
            f"got {names!r}. {_corrupt_hint(folder)}")


def _md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _as_root(data_root: str | os.PathLike[str] | None) -> Path:
    if data_root is None:
        raise CIFARFolderError(
            f"data_root is None: pass data_root=<folder that holds (or will hold) {BASE_FOLDER}>, the same "
            f"root torchvision.datasets.CIFAR10 takes; with download=True, CIFAR-10 ({CIFAR10_URL}) is "
            f"downloaded there if it is missing.")
    try:
        return Path(data_root).expanduser().resolve()
    except TypeError as e:
        raise CIFARFolderError(
            f"data_root must be a str or path, got {type(data_root).__name__} {data_root!r}: pass "
            f"data_root=<folder that holds {BASE_FOLDER}> (download=True downloads it there).") from e


def load_cifar10_arrays(
    data_root: str | os.PathLike[str] | None,
    download: bool = False,
    *,
    verify_md5: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load CIFAR-10 from ``<data_root>/cifar-10-batches-py`` (torchvision's layout).

    Args:
        data_root: the folder that holds ``cifar-10-batches-py`` (what torchvision calls ``root``).
        download: if files are missing, download :data:`CIFAR10_URL` into ``data_root`` (md5-checked,
            safely extracted) first. Never downloads when all files are there, even corrupt ones.
        verify_md5: also check every file against :data:`FILE_MD5`, the md5s of the real dataset that
            torchvision checks by default. Off by default so small folders written by
            :func:`write_cifar10_folder` load; the structure of every file is always checked.

    Returns:
        ``(train_x, train_y, test_x, test_y)``: x uint8 ``(N, 3, 32, 32)`` C-contiguous arrays (train is
        data_batch_1..5 in order, test is test_batch), y int64 ``(N,)`` arrays of labels in 0..9.

    Raises:
        CIFARFolderError: ``data_root`` is None, the folder or a file is missing (and ``download`` is
            False or the download failed), or a file is corrupt, unsafe, or fails ``verify_md5``. The
            message names the folder and the file and says how to fix it.
    """
    root = _as_root(data_root)
    folder = root / BASE_FOLDER
    missing = [name for name in _REQUIRED_FILES if not (folder / name).is_file()]
    if missing and download:
        _download_and_extract(root, folder)
        missing = [name for name in _REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        if not folder.is_dir():
            hint = ""
            if root.name == BASE_FOLDER and (root / TRAIN_FILES[0]).is_file():
                hint = f" (data_root looks like {BASE_FOLDER} itself: pass its parent {root.parent})"
            raise CIFARFolderError(
                f"CIFAR-10 folder {folder} does not exist{hint}. {_missing_hint(root)}")
        raise CIFARFolderError(
            f"CIFAR-10 folder {folder} is incomplete: missing {', '.join(missing)}. Pass download=True to "
            f"download the missing files, or delete {folder} and download it again with download=True.")
    if verify_md5:
        for name in _REQUIRED_FILES:
            got = _md5_file(folder / name)
            if got != FILE_MD5[name]:
                raise CIFARFolderError(
                    f"CIFAR-10 file {folder / name} has md5 {got}, expected {FILE_MD5[name]} (the real "
                    f"dataset's; verify_md5=True). {_corrupt_hint(folder)} Pass verify_md5=False to accept "
                    f"a folder that is not the real dataset (e.g. one written by write_cifar10_folder).")
    _check_meta(folder / META_FILE, folder)
    train = [_read_batch(folder / name, folder) for name in TRAIN_FILES]
    test_x, test_y = _read_batch(folder / TEST_FILE, folder)
    train_x = np.concatenate([x for x, _ in train]).reshape(-1, *IMAGE_SHAPE)
    train_y = np.concatenate([y for _, y in train])
    test_x = np.array(test_x, order="C", copy=True).reshape(-1, *IMAGE_SHAPE)
    return train_x, train_y, test_x, test_y


# --------------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------------

def _fetch(url: str, dest: Path) -> str:
    """Stream ``url`` into ``dest``; returns the md5 of what was written."""
    h = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, open(dest, "wb") as f:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest()


def _safe_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Fallback of the "data" filter for Pythons without it: regular files and folders inside only."""
    for member in tar.getmembers():
        parts = Path(member.name).parts
        if (member.isfile() or member.isdir()) and not Path(member.name).is_absolute() and ".." not in parts:
            yield member


def _download_and_extract(root: Path, folder: Path) -> None:
    """Download (or reuse) the tarball, check its md5, extract it safely, move the files into place."""
    url, expected_md5 = CIFAR10_URL, CIFAR10_TGZ_MD5  # module globals, read now (monkeypatchable)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CIFARFolderError(f"cannot create the CIFAR-10 data_root {root}: {e}. Pass a writable "
                               f"data_root= for download=True.") from e
    tgz = root / TGZ_FILENAME
    if not (tgz.is_file() and _md5_file(tgz) == expected_md5):
        part = root / (TGZ_FILENAME + ".part")
        try:
            got_md5 = _fetch(url, part)
        except (OSError, ValueError) as e:  # URLError, timeouts: OSError; a malformed URL: ValueError
            part.unlink(missing_ok=True)
            raise CIFARFolderError(
                f"download=True could not download CIFAR-10 from {url} into {root} ({type(e).__name__}: "
                f"{e}). Download it manually and put the extracted {BASE_FOLDER} folder in {root} (or put "
                f"{TGZ_FILENAME} there and pass download=True again: it is used without network).") from e
        if got_md5 != expected_md5:
            part.unlink(missing_ok=True)
            raise CIFARFolderError(
                f"the file downloaded from {url} has md5 {got_md5}, expected {expected_md5}: nothing was "
                f"extracted into {folder}. Try download=True again, or download it manually and put the "
                f"extracted {BASE_FOLDER} folder in {root}.")
        os.replace(part, tgz)
    tmp = Path(tempfile.mkdtemp(prefix=".cifar-10-extract-", dir=root))
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # Python < 3.10.12 / 3.11.4
                tar.extractall(tmp, members=_safe_members(tar))
        extracted = tmp / BASE_FOLDER
        if not extracted.is_dir():
            raise CIFARFolderError(f"the CIFAR-10 tarball {tgz} has no {BASE_FOLDER} folder. Delete it and "
                                   f"download again with download=True.")
        if not folder.exists():
            os.replace(extracted, folder)
        else:  # an incomplete folder: add the missing files, keep the user's others
            for name in _REQUIRED_FILES:
                if not (folder / name).exists() and (extracted / name).is_file():
                    os.replace(extracted / name, folder / name)
    except (tarfile.TarError, OSError, EOFError) as e:  # gzip/zlib errors are OSErrors or EOFErrors
        raise CIFARFolderError(
            f"cannot extract the CIFAR-10 tarball {tgz} into {root} ({type(e).__name__}: {e}). Delete it "
            f"and download again with download=True.") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Writing (tests, demos, benchmarks)
# --------------------------------------------------------------------------------------------------

def _py2_globals() -> dict[int, bytes]:
    """id() of the callables a numpy array's pickle names -> their names in the Python 2 originals."""
    return {id(_numpy_attr("multiarray", "_reconstruct")): b"numpy.core.multiarray\n_reconstruct\n",
            id(np.ndarray): b"numpy\nndarray\n", id(np.dtype): b"numpy\ndtype\n"}


def _emit(obj: Any, out: list[bytes], names: dict[int, bytes]) -> None:
    """Append the Python-2-style protocol-2 opcodes of ``obj`` to ``out``."""
    if obj is None:
        out.append(pickle.NONE)
    elif obj is True or obj is False:
        out.append(pickle.NEWTRUE if obj else pickle.NEWFALSE)
    elif isinstance(obj, (int, np.integer)):
        v = int(obj)
        if 0 <= v < 256:
            out.append(pickle.BININT1 + bytes((v,)))
        elif 0 <= v < 65536:
            out.append(pickle.BININT2 + struct.pack("<H", v))
        elif -(2**31) <= v < 2**31:
            out.append(pickle.BININT + struct.pack("<i", v))
        else:
            raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            out.append(pickle.LONG1 + bytes((len(raw),)) + raw)
    elif isinstance(obj, (str, bytes)):  # a Python 2 str (read back as str under encoding="latin1")
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            out.append(pickle.SHORT_BINSTRING + bytes((len(raw),)) + raw)
        else:
            out.append(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
    elif isinstance(obj, list):
        out.append(pickle.EMPTY_LIST)
        for start in range(0, len(obj), 1000):  # cPickle's batch size
            out.append(pickle.MARK)
            for item in obj[start:start + 1000]:
                _emit(item, out, names)
            out.append(pickle.APPENDS)
    elif isinstance(obj, tuple):
        if 1 <= len(obj) <= 3:
            for item in obj:
                _emit(item, out, names)
            out.append((pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(obj) - 1])
        else:
            out.append(pickle.MARK)
            for item in obj:
                _emit(item, out, names)
            out.append(pickle.TUPLE)
    elif isinstance(obj, dict):
        out.append(pickle.EMPTY_DICT + pickle.MARK)
        for key, value in obj.items():
            _emit(key, out, names)
            _emit(value, out, names)
        out.append(pickle.SETITEMS)
    elif isinstance(obj, (np.ndarray, np.dtype)):  # numpy's own reduce: (_reconstruct | dtype, args, state)
        func, args, state = (np.ascontiguousarray(obj) if isinstance(obj, np.ndarray) else obj).__reduce__()
        _emit(func, out, names)
        _emit(args, out, names)
        out.append(pickle.REDUCE)
        _emit(state, out, names)
        out.append(pickle.BUILD)
    elif id(obj) in names:
        out.append(pickle.GLOBAL + names[id(obj)])
    else:
        raise TypeError(f"cannot write {type(obj).__name__} in the CIFAR-10 pickle format")


def _py2_pickle(obj: Any) -> bytes:
    """``obj`` (dicts, lists, tuples, ints, str/bytes, numpy arrays) as Python 2's cPickle wrote it.

    Protocol 2 with Python 2 ``str`` opcodes and the ``numpy.core.multiarray._reconstruct`` global, like
    the real CIFAR-10 files: read back with ``encoding="latin1"``, str and bytes both come back as
    ``str``, and numpy arrays as arrays.
    """
    out = [pickle.PROTO + b"\x02"]
    _emit(obj, out, _py2_globals())
    out.append(pickle.STOP)
    return b"".join(out)


def _batch_dict(label: str, x: np.ndarray, y: np.ndarray) -> dict[bytes, Any]:
    filenames = [f"{CLASSES[c]}_s_{i:06d}.png".encode() for i, c in enumerate(y.tolist())]
    return {b"batch_label": label.encode(), b"labels": y.tolist(), b"data": x, b"filenames": filenames}


def write_cifar10_arrays(
    root: str | os.PathLike[str], train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
    test_y: np.ndarray,
) -> Path:
    """Write given images and labels as a CIFAR-10 folder in exactly the real python format.

    ``<root>/cifar-10-batches-py/`` gets data_batch_1..5 (the training rows in order, split into 5
    equal batches), test_batch and batches.meta (``label_names``, ``num_cases_per_batch``,
    ``num_vis``), pickled like the Python 2 originals; the file names inside are made up from the
    class and the row index (the originals' are not part of the images). The inverse of
    :func:`load_cifar10_arrays`: reading the folder back gives the same arrays.

    Args:
        root: the data_root to write into (created if needed); existing batch files are overwritten.
        train_x: ``uint8`` images ``(N, 3, 32, 32)`` (what :func:`load_cifar10_arrays` returns) or
            the files' rows ``(N, 3072)`` (1024 red, 1024 green, 1024 blue values, each row-major
            32×32); N a multiple of 5.
        train_y: ``N`` integer labels 0-9.
        test_x: the test images, as ``train_x`` (any N >= 1).
        test_y: their labels.

    Returns:
        ``Path(root)``, the ``data_root`` to pass to :func:`load_cifar10_arrays`.
    """
    checked = []
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 4 and x.shape[1:] == IMAGE_SHAPE:
            x = x.reshape(len(x), ROW_SIZE)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != ROW_SIZE or x.shape[0] < 1:
            raise ConfigError(f"{name}_x must be uint8 of shape (N >= 1, 3, 32, 32) or (N, {ROW_SIZE}), "
                              f"got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or \
                (y.size and (y.min() < 0 or y.max() >= N_CLASSES)):
            raise ConfigError(f"{name}_y must hold {x.shape[0]} integer labels in 0..{N_CLASSES - 1}, got "
                              f"{y.dtype} {y.shape}")
        checked += [x, y]
    train_x, train_y, test_x, test_y = checked
    n_train = len(train_x)
    if n_train % len(TRAIN_FILES):
        raise ConfigError(f"train_x has {n_train} rows; allowed: a multiple of {len(TRAIN_FILES)} "
                          f"(one equal batch per {TRAIN_FILES[0][:-2]}_*)")
    per = n_train // len(TRAIN_FILES)
    folder = Path(root) / BASE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    batches = [(name, f"training batch {i + 1} of 5", train_x[i * per:(i + 1) * per],
                train_y[i * per:(i + 1) * per]) for i, name in enumerate(TRAIN_FILES)]
    batches.append((TEST_FILE, "testing batch 1 of 1", test_x, test_y))
    for name, label, x, y in batches:
        (folder / name).write_bytes(_py2_pickle(_batch_dict(label, np.ascontiguousarray(x), y)))
    meta = {b"num_cases_per_batch": per, b"label_names": [c.encode() for c in CLASSES],
            b"num_vis": ROW_SIZE}
    (folder / META_FILE).write_bytes(_py2_pickle(meta))
    return Path(root)


def write_cifar10_folder(
    root: str | os.PathLike[str], train_per_batch: int = 20, n_test: int = 20, seed: int = 0,
) -> Path:
    """Write a CIFAR-10 folder of random images in exactly the real python format.

    As :func:`write_cifar10_arrays`, with data_batch_1..5 of ``train_per_batch`` images each and a
    test_batch of ``n_test``. Images are uniform random uint8 rows of 3072 values; labels cycle
    through the 10 classes (every class is in every batch of >= 10 images), shuffled. Everything is
    drawn, batch by batch (train 1..5 then test; images then labels), from
    ``np.random.default_rng(seed)``. Full size (``train_per_batch=10_000, n_test=10_000``) writes the
    real dataset's shapes in about a second.

    Args:
        root: the data_root to write into (created if needed); existing batch files are overwritten.
        train_per_batch: images in each of the 5 train batches (>= 1).
        n_test: images in the test batch (>= 1).
        seed: seed of the random images and label order.

    Returns:
        ``Path(root)``, the ``data_root`` to pass to :func:`load_cifar10_arrays`.
    """
    for field, value in (("train_per_batch", train_per_batch), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{field} must be an int >= 1, got {value!r}")
    rng = np.random.default_rng(seed)
    drawn = []
    for n in [int(train_per_batch)] * len(TRAIN_FILES) + [int(n_test)]:
        x = rng.integers(0, 256, size=(n, ROW_SIZE), dtype=np.uint8)
        drawn.append((x, rng.permutation(np.arange(n) % N_CLASSES)))
    train_x = np.concatenate([x for x, _ in drawn[:-1]])
    train_y = np.concatenate([y for _, y in drawn[:-1]])
    return write_cifar10_arrays(root, train_x, train_y, *drawn[-1])


def make_cifar10_tarball(data_root: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Pack ``<data_root>/cifar-10-batches-py`` into a ``.tar.gz`` laid out like the real tarball.

    The archive's single top-level folder is ``cifar-10-batches-py``, as in :data:`CIFAR10_URL`'s file,
    so ``load_cifar10_arrays(..., download=True)`` can extract it (tests serve it through a ``file://``
    URL). gzip level 1: random images do not compress anyway.

    Returns:
        ``Path(out_path)``.
    """
    folder = Path(data_root).expanduser().resolve() / BASE_FOLDER
    if not folder.is_dir():
        raise CIFARFolderError(f"cannot pack CIFAR-10: folder {folder} does not exist. Write it with "
                               f"write_cifar10_folder, or get the real one with download=True.")
    out = Path(out_path)

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(out, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname=BASE_FOLDER, filter=normalise)
    return out


__all__ = [
    "BASE_FOLDER", "CIFAR10_TGZ_MD5", "CIFAR10_URL", "CLASSES", "FILE_MD5", "META_FILE", "TEST_FILE",
    "TGZ_FILENAME", "TRAIN_FILES", "CIFARFolderError", "load_cifar10_arrays", "make_cifar10_tarball",
    "write_cifar10_arrays", "write_cifar10_folder",
]
