"""In-memory tasks: the digits split, synthetic generation, devices and dtypes (spec 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from esper_env.config import EsperConfig
from esper_env.errors import ConfigError
from esper_env.nn.data import load_task
from esper_env.tasks import TASKS
from esper_env.tasks.splits import SPLIT_SEED, stratified_split

N_DIGITS = 1797
SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def split_tensors(data) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s: (getattr(data, f"{s}_x"), getattr(data, f"{s}_y")) for s in SPLITS}


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", episode_seed=0, device="cpu")


def test_data_digits_split_sizes(digits) -> None:
    sizes = {s: len(y) for s, (_, y) in split_tensors(digits).items()}
    assert sum(sizes.values()) == N_DIGITS
    for s, frac in FRACTIONS.items():
        assert abs(sizes[s] - frac * N_DIGITS) <= 10, sizes  # at most one rounding per class
    for s, (x, y) in split_tensors(digits).items():
        assert x.shape == (sizes[s], 1, 8, 8)
        assert y.shape == (sizes[s],)


def test_data_digits_split_is_stratified(digits) -> None:
    parts = {s: y.numpy() for s, (_, y) in split_tensors(digits).items()}
    all_y = np.concatenate(list(parts.values()))
    for c in range(10):
        n_c = int((all_y == c).sum())
        assert n_c > 0
        for s, frac in FRACTIONS.items():
            got = int((parts[s] == c).sum())
            assert abs(got - frac * n_c) <= 1.0, (c, s, got, frac * n_c)


def test_data_digits_matches_sklearn_class_counts(digits) -> None:
    from sklearn.datasets import load_digits

    target = load_digits().target
    all_y = np.concatenate([y.numpy() for _, (_, y) in split_tensors(digits).items()])
    assert np.array_equal(np.bincount(all_y, minlength=10), np.bincount(target, minlength=10))


def test_data_digits_splits_are_disjoint(digits) -> None:
    rows = {s: {r.tobytes() for r in x.reshape(len(x), -1).numpy()}
            for s, (x, _) in split_tensors(digits).items()}
    for s, (x, _) in split_tensors(digits).items():
        assert len(rows[s]) == len(x)  # digits has no duplicate images
    assert not rows["train"] & rows["val"]
    assert not rows["train"] & rows["test"]
    assert not rows["val"] & rows["test"]


def test_data_digits_standardised_with_train_statistics(digits) -> None:
    x = digits.train_x
    assert abs(float(x.mean())) < 1e-4
    assert abs(float(x.std(unbiased=False)) - 1.0) < 1e-4


def test_data_digits_identical_across_calls(digits) -> None:
    again = load_task("digits", episode_seed=123, device="cpu")
    for s in SPLITS:
        for a, b in zip(split_tensors(digits)[s], split_tensors(again)[s], strict=True):
            assert torch.equal(a, b)


def test_data_stratified_split_partitions_indices() -> None:
    labels = np.repeat(np.arange(3), [10, 7, 13])
    tr, va, te = stratified_split(labels, (0.6, 0.2, 0.2), SPLIT_SEED)
    allidx = np.concatenate([tr, va, te])
    assert np.array_equal(np.sort(allidx), np.arange(len(labels)))
    again = stratified_split(labels, (0.6, 0.2, 0.2), SPLIT_SEED)
    for a, b in zip((tr, va, te), again, strict=True):
        assert np.array_equal(a, b)


def test_data_synthetic_same_seed_identical() -> None:
    a = load_task("synthetic", episode_seed=7, device="cpu")
    b = load_task("synthetic", episode_seed=7, device="cpu")
    for s in SPLITS:
        for ta, tb in zip(split_tensors(a)[s], split_tensors(b)[s], strict=True):
            assert torch.equal(ta, tb)


def test_data_synthetic_different_seed_differs() -> None:
    a = load_task("synthetic", episode_seed=7, device="cpu")
    b = load_task("synthetic", episode_seed=8, device="cpu")
    for s in SPLITS:
        xa, xb = split_tensors(a)[s][0], split_tensors(b)[s][0]
        assert xa.shape == xb.shape
        assert not torch.equal(xa, xb), s


@pytest.mark.parametrize("per_class", [4, 40, 55])
def test_data_synthetic_sizes_and_balance(per_class: int) -> None:
    spec = TASKS["synthetic"].spec
    data = load_task("synthetic", episode_seed=1, device="cpu", synthetic_samples=per_class)
    parts = split_tensors(data)
    assert sum(len(y) for _, y in parts.values()) == spec.n_classes * per_class
    for _, y in parts.values():
        counts = torch.bincount(y, minlength=spec.n_classes)
        assert len(counts) == spec.n_classes
        assert int(counts.max()) - int(counts.min()) == 0  # equal per-class counts in each split
    for s, frac in FRACTIONS.items():
        assert abs(len(parts[s][1]) - frac * spec.n_classes * per_class) <= spec.n_classes, s


@pytest.mark.parametrize("per_class", [5, 6, 7, 40])
def test_data_synthetic_smallest_allowed_sizes_give_nonempty_splits(per_class: int) -> None:
    """Every ``synthetic_samples`` the config accepts must give splits holding every class.

    Validation and the final test accuracy divide by the split size, so an empty val or test
    split would make ``Trainer.validate`` raise ZeroDivisionError.
    """
    EsperConfig(task="synthetic", synthetic_samples=per_class)  # accepted by validation
    data = load_task("synthetic", episode_seed=0, device="cpu", synthetic_samples=per_class)
    for split, (_, y) in split_tensors(data).items():
        assert len(torch.unique(y)) == data.spec.n_classes, split


@pytest.mark.parametrize("per_class", [2, 3, 4])
def test_data_synthetic_sizes_that_would_empty_a_split_are_rejected(per_class: int) -> None:
    with pytest.raises(ConfigError, match=f"synthetic_samples={per_class} is invalid"):
        EsperConfig(task="synthetic", synthetic_samples=per_class)


def test_data_synthetic_leaves_global_rng(rng_guard) -> None:
    load_task("synthetic", episode_seed=3, device="cpu")


@pytest.mark.parametrize("task", ["digits", "synthetic"])
@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "meta"])
def test_data_device_and_dtypes(task: str, device) -> None:
    data = load_task(task, episode_seed=0, device=device)
    want = torch.device(device)
    spec = TASKS[task].spec
    assert data.spec is spec
    for s, (x, y) in split_tensors(data).items():
        assert x.device == want and y.device == want, s
        assert x.dtype == torch.float32 and y.dtype == torch.int64, s
        assert x.shape[1:] == (spec.in_channels, spec.image_size, spec.image_size)
        assert x.shape[0] == y.shape[0] > 0


# -- training subset and label noise (instance sets) -----------------------------------------------

def test_subsample_and_corrupt_is_stratified_exact_and_seeded() -> None:
    from esper_env.nn.data import subsample_and_corrupt

    labels = np.repeat(np.arange(10), 30)
    kept, y = subsample_and_corrupt(labels, 10, 0.5, 0.2, seed=3)
    assert len(kept) == 150 and len(set(kept)) == 150
    assert np.bincount(labels[kept], minlength=10).tolist() == [15] * 10  # stratified
    wrong = y != labels[kept]
    assert wrong.sum() == 30                                              # exactly 20 %
    again = subsample_and_corrupt(labels, 10, 0.5, 0.2, seed=3)
    assert np.array_equal(again[0], kept) and np.array_equal(again[1], y)
    other = subsample_and_corrupt(labels, 10, 0.5, 0.2, seed=4)
    assert not np.array_equal(other[0], kept)
    full, clean = subsample_and_corrupt(labels, 10, 1.0, 0.0, seed=3)
    assert np.array_equal(full, np.arange(300)) and np.array_equal(clean, labels)


def test_load_task_fraction_and_noise_touch_only_the_training_split() -> None:
    base = load_task("digits", episode_seed=1, device="cpu")
    small = load_task("digits", episode_seed=1, device="cpu", train_fraction=0.25,
                      label_noise=0.3)
    assert abs(small.train_x.shape[0] - base.train_x.shape[0] / 4) <= 10
    for a, b in ((base.val_x, small.val_x), (base.val_y, small.val_y),
                 (base.test_x, small.test_x), (base.test_y, small.test_y)):
        assert torch.equal(a, b)
    # every kept sample is a training sample; about 30 % of its labels are wrong
    rows = {tuple(r.flatten().tolist()): int(lbl) for r, lbl in zip(base.train_x, base.train_y,
                                                                      strict=True)}
    truth = torch.tensor([rows[tuple(r.flatten().tolist())] for r in small.train_x])
    assert abs(float((truth != small.train_y).float().mean()) - 0.3) < 0.01
    assert not torch.equal(load_task("digits", episode_seed=2, device="cpu",
                                     train_fraction=0.25).train_x, small.train_x)
