"""The research tasks' data: CIFAR-10 (split, uint8 storage, per-batch normalisation, device-side
augmentation) and tinytext (corpus, position split, next-character windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esper_env.errors import ConfigError
from esper_env.nn.cifar import write_cifar10_folder
from esper_env.nn.data import CROP_PADDING, crop_and_flip, load_task
from esper_env.tasks import task_spec
from esper_env.tasks.tinytext import SPLIT as TEXT_SPLIT
from esper_env.tasks.tinytext import corpus as tinytext_corpus

PER_BATCH = 40  # 5 x 40 = 200 training images, 20 per class


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> str:
    return str(write_cifar10_folder(tmp_path_factory.mktemp("cifar"), train_per_batch=PER_BATCH,
                                    n_test=30, seed=5))


@pytest.fixture(scope="module")
def cifar(cifar_root):
    return load_task("cifar10", episode_seed=0, device="cpu", data_root=cifar_root)


# -- CIFAR-10 ---------------------------------------------------------------------------------------

def test_cifar_split_is_stratified_90_10_and_test_is_the_test_batch(cifar, cifar_root) -> None:
    from esper_env.nn.cifar import load_cifar10_arrays

    train_x, train_y, test_x, test_y = load_cifar10_arrays(cifar_root)
    assert cifar.train_x.shape == (180, 3, 32, 32) and cifar.val_x.shape == (20, 3, 32, 32)
    assert np.bincount(cifar.val_y.numpy(), minlength=10).tolist() == [2] * 10
    assert np.bincount(cifar.train_y.numpy(), minlength=10).tolist() == [18] * 10
    assert torch.equal(cifar.test_x, torch.from_numpy(test_x))
    assert torch.equal(cifar.test_y, torch.from_numpy(test_y))
    # train and val partition the 200 training images (each image exactly once)
    both = torch.cat([cifar.train_x, cifar.val_x]).reshape(200, -1).numpy()
    want = train_x.reshape(200, -1)
    assert sorted(map(bytes, both)) == sorted(map(bytes, want))


def test_cifar_stays_uint8_and_the_split_is_fixed(cifar, cifar_root) -> None:
    for x in (cifar.train_x, cifar.val_x, cifar.test_x):
        assert x.dtype == torch.uint8
    other = load_task("cifar10", episode_seed=99, device="cpu", data_root=cifar_root)
    assert torch.equal(other.train_x, cifar.train_x) and torch.equal(other.val_y, cifar.val_y)
    assert cifar.augment and cifar.n_items == 1


@pytest.mark.parametrize(("per_batch", "n_val"), [(10, 0), (20, 10)])
def test_cifar_folder_too_small_for_a_validation_split_is_refused(tmp_path, per_batch, n_val) -> None:
    from esper_env.nn.cifar import CIFARFolderError

    # 5 x per_batch images, labels cycling through the classes: 5 or 10 images per class
    root = write_cifar10_folder(tmp_path, train_per_batch=per_batch, n_test=10)
    if n_val == 0:
        with pytest.raises(CIFARFolderError, match=r"cifar-10-batches-py: its 50 training images "
                                                   r"leave no validation image.*at least 6"):
            load_task("cifar10", episode_seed=0, device="cpu", data_root=str(root))
    else:  # 10 per class: one validation image of each
        data = load_task("cifar10", episode_seed=0, device="cpu", data_root=str(root))
        assert data.val_x.shape[0] == n_val


def test_cifar_prepare_normalises_with_training_statistics(cifar) -> None:
    x = cifar.prepare(cifar.train_x)
    assert x.dtype == torch.float32 and x.shape == cifar.train_x.shape
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(mean, torch.zeros(3), atol=1e-4)
    assert torch.allclose(std, torch.ones(3), atol=1e-3)
    raw = cifar.val_x[:2].float() / 255.0
    want = (raw - cifar.mean.view(1, 3, 1, 1)) / cifar.std.view(1, 3, 1, 1)
    assert torch.allclose(cifar.prepare(cifar.val_x[:2]), want, atol=1e-5)


@pytest.mark.parametrize("augmented", [False, True])
def test_cifar_prepare_lays_out_a_batch_as_asked_with_the_same_values(cifar, augmented) -> None:
    x = cifar.train_x[:6]
    aug = cifar.augmentation(6, torch.Generator().manual_seed(1)) if augmented else None
    default = cifar.prepare(x, aug)
    nhwc = cifar.prepare(x, aug, torch.channels_last)
    assert default.is_contiguous() and not default.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    assert torch.equal(nhwc, default) and nhwc.dtype == torch.float32


def test_float_image_tasks_pass_through_in_the_layout_asked() -> None:
    digits = load_task("digits", episode_seed=0, device="cpu")
    x = digits.train_x[:4].expand(4, 3, 8, 8).contiguous()  # 3 channels: the layouts differ
    assert digits.prepare(x) is x
    nhwc = digits.prepare(x, memory_format=torch.channels_last)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc, x)


def _reference_crop_flip(x: torch.Tensor, aug: torch.Tensor, pad: int) -> torch.Tensor:
    out = torch.empty_like(x)
    h, w = x.shape[2:]
    for i, (dy, dx, flip) in enumerate(aug.tolist()):
        padded = torch.nn.functional.pad(x[i], (pad, pad, pad, pad))
        crop = padded[:, dy:dy + h, dx:dx + w]
        out[i] = crop.flip(-1) if flip else crop
    return out


def test_crop_and_flip_matches_a_per_image_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 10), generator=g, dtype=torch.uint8)
    aug = torch.stack([torch.randint(0, 9, (16,), generator=g), torch.randint(0, 9, (16,), generator=g),
                       torch.randint(0, 2, (16,), generator=g)], dim=1)
    got = crop_and_flip(x, aug, padding=4)
    assert got.dtype == torch.uint8 and got.shape == x.shape
    assert torch.equal(got, _reference_crop_flip(x, aug, 4))
    assert got.is_contiguous() and not got.is_contiguous(memory_format=torch.channels_last)
    nhwc = crop_and_flip(x, aug, padding=4, memory_format=torch.channels_last)
    assert torch.equal(nhwc, got) and nhwc.is_contiguous(memory_format=torch.channels_last)


def test_crop_and_flip_centre_is_identity_and_flip_mirrors() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    centre = torch.tensor([[2, 2, 0], [2, 2, 1]])
    out = crop_and_flip(x, centre, padding=2)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))
    corner = crop_and_flip(x, torch.tensor([[0, 0, 0], [0, 0, 0]]), padding=2)
    assert torch.equal(corner[:, :, 2:, 2:], x[:, :, :2, :2])
    assert not corner[:, :, :2, :].any() and not corner[:, :, :, :2].any()  # zero padding


def test_cifar_augmentation_comes_from_the_episode_generator(cifar) -> None:
    a = cifar.augmentation(500, torch.Generator().manual_seed(3))
    b = cifar.augmentation(500, torch.Generator().manual_seed(3))
    c = cifar.augmentation(500, torch.Generator().manual_seed(4))
    assert a is not None and torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (500, 3)
    assert a[:, :2].min() >= 0 and a[:, :2].max() <= 2 * CROP_PADDING
    assert set(a[:, 2].tolist()) == {0, 1}
    assert len(set(map(tuple, a[:, :2].tolist()))) > 40  # offsets vary over the whole range


def test_augmentation_leaves_global_rng(cifar, rng_guard) -> None:
    aug = cifar.augmentation(64, torch.Generator().manual_seed(0))
    cifar.prepare(cifar.train_x[:64], aug)


def test_float_tasks_have_no_augmentation_and_pass_unchanged() -> None:
    data = load_task("synthetic", episode_seed=0, device="cpu")
    assert data.augmentation(10, torch.Generator().manual_seed(0)) is None
    assert data.prepare(data.train_x) is data.train_x


def test_cifar_train_subset_is_fixed_and_stratified(cifar_root) -> None:
    a = load_task("cifar10", episode_seed=1, device="cpu", data_root=cifar_root, train_subset=50)
    b = load_task("cifar10", episode_seed=2, device="cpu", data_root=cifar_root, train_subset=50)
    assert a.train_x.shape[0] == 50 and torch.equal(a.train_x, b.train_x)
    assert np.bincount(a.train_y.numpy(), minlength=10).tolist() == [5] * 10
    assert a.val_x.shape[0] == 20 and a.test_x.shape[0] == 30  # val and test stay whole


def test_cifar_without_data_root_names_the_flags() -> None:
    with pytest.raises(ConfigError, match=r"data_root.*download=True|download=True.*data_root"):
        load_task("cifar10", episode_seed=0, device="cpu")


def test_cifar_missing_folder_names_it(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_task("cifar10", episode_seed=0, device="cpu", data_root=tmp_path / "nowhere")
    assert str((tmp_path / "nowhere").resolve()) in str(info.value)
    assert "download=True" in str(info.value)


def test_cifar_pickles_as_its_recipe(cifar_root) -> None:
    import pickle

    data = load_task("cifar10", episode_seed=0, device="cpu", data_root=cifar_root, train_subset=30)
    blob = pickle.dumps(data)
    assert len(blob) < 2000  # the recipe, not 180 images
    again = pickle.loads(blob)
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.mean, data.mean)


# -- tinytext ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def text():
    return load_task("tinytext", episode_seed=0, device="cpu", block_size=16)


def test_tinytext_corpus_ships_with_python() -> None:
    corpus = tinytext_corpus()
    assert len(corpus) > 100_000 and "def" in corpus
    spec = task_spec("tinytext")
    assert spec.topology == "transformer" and spec.n_classes == len(set(corpus))


def test_tinytext_windows_are_next_character_targets(text) -> None:
    assert text.train_x.dtype == torch.int64 and text.train_x.shape[1] == 16
    assert text.n_items == 16 and text.vocab is not None
    for x, y in ((text.train_x, text.train_y), (text.val_x, text.val_y), (text.test_x, text.test_y)):
        assert x.shape == y.shape and x.shape[0] > 10
        assert torch.equal(x[:, 1:], y[:, :-1])   # the target is the next character
        assert torch.equal(y[:-1, -1], x[1:, 0])  # windows are consecutive, non-overlapping


def test_tinytext_is_split_by_position(text) -> None:
    corpus = tinytext_corpus()
    decode = "".join
    train = decode(text.vocab[i] for i in text.train_x.flatten().tolist())
    assert corpus.startswith(train)
    n_train, n_val = int(TEXT_SPLIT[0] * len(corpus)), int(TEXT_SPLIT[1] * len(corpus))
    val = decode(text.vocab[i] for i in text.val_x.flatten().tolist())
    test = decode(text.vocab[i] for i in text.test_x.flatten().tolist())
    assert corpus[n_train:].startswith(val) and corpus[n_train + n_val:].startswith(test)
    assert len(train) > 15 * len(val) > 0 and len(test) > 0


def test_tinytext_train_subset_takes_the_first_windows(text) -> None:
    sub = load_task("tinytext", episode_seed=5, device="cpu", block_size=16, train_subset=7)
    assert torch.equal(sub.train_x, text.train_x[:7]) and torch.equal(sub.val_x, text.val_x)
    assert text.augmentation(4, torch.Generator().manual_seed(0)) is None
