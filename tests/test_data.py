"""Dataset builders: shapes, dtypes, determinism, registry errors, byte-corpus batching."""
import random

import numpy as np
import pytest
import torch

from workbench.data import DATASETS, Dataset, load_dataset
from workbench.data.digits import stratified_split
from workbench.data.text import (
    eval_windows, iter_source_files, load_stdlib_bytes, sample_batch, stdlib_dir,
)

CLASSIFICATION = {"mnist1d": (40, 10), "digits": (64, 10), "synthetic": (8, 4)}


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
def test_classification_shapes(name):
    ds = load_dataset(name, seed=0, size="ci")
    input_dim, n_classes = CLASSIFICATION[name]
    assert (ds.name, ds.task) == (name, "classification")
    assert (ds.input_dim, ds.n_classes) == (input_dim, n_classes)
    for x, y in [(ds.x_train, ds.y_train), (ds.x_test, ds.y_test)]:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), input_dim) and len(y) > 0
        assert 0 <= int(y.min()) and int(y.max()) < n_classes
        assert torch.isfinite(x).all()
    assert len(ds.y_train.unique()) == n_classes


def test_bytes_shapes():
    ds = load_dataset("bytes", size="ci")
    assert (ds.task, ds.vocab_size, ds.block_size) == ("lm", 256, 64)
    assert ds.x_train.dtype == ds.x_test.dtype == torch.uint8
    assert ds.x_train.ndim == ds.x_test.ndim == 1
    assert ds.y_train is None and ds.y_test is None
    assert len(ds.x_test) == pytest.approx(0.1 * (len(ds.x_train) + len(ds.x_test)), abs=1)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_same_seed_same_data(name):
    a, b = load_dataset(name, seed=3, size="ci"), load_dataset(name, seed=3, size="ci")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    if a.y_train is not None:
        assert torch.equal(a.y_train, b.y_train)


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
def test_other_seed_other_data(name):
    a, b = load_dataset(name, seed=0, size="ci"), load_dataset(name, seed=1, size="ci")
    assert not torch.equal(a.x_train, b.x_train)


def test_ci_is_smaller_than_default():
    for name in ("mnist1d", "bytes", "synthetic"):
        assert load_dataset(name, size="ci").n_train < load_dataset(name, size="default").n_train


def test_unknown_name_and_size_raise():
    with pytest.raises(ValueError, match="bytes, digits, mnist1d, synthetic"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="ci"):
        load_dataset("digits", size="huge")


def test_mnist1d_leaves_global_rng_alone():
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    load_dataset("mnist1d", seed=7, size="ci")
    assert (np.random.rand(), random.random()) == expected


def test_digits_split_is_stratified_and_standardized():
    y = np.repeat(np.arange(10), 50)
    train, test = stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([train, test])) == list(range(500))
    assert (np.bincount(y[test]) == 10).all()
    ds = load_dataset("digits", seed=0)
    assert ds.x_train.mean().abs() < 1e-4
    varying = ds.x_train.std(0) > 0
    assert torch.allclose(ds.x_train.std(0, unbiased=False)[varying], torch.ones(1), atol=1e-3)


def test_stdlib_walk_is_sorted_and_skips_site_packages():
    paths = [str(p) for _, p in zip(range(300), iter_source_files(stdlib_dir()))]
    assert paths == sorted(paths) and len(paths) == 300
    assert all(p.endswith(".py") and "site-packages" not in p for p in paths)
    assert len(load_stdlib_bytes(12_345)) == 12_345


def test_sample_batch_targets_are_next_bytes():
    tokens = torch.arange(100, dtype=torch.uint8)
    x, y = sample_batch(tokens, 5, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)
    with pytest.raises(ValueError):
        sample_batch(tokens, 2, 100)


def test_eval_windows_are_fixed_and_in_range():
    tokens = torch.arange(250, dtype=torch.uint8)
    x, y = eval_windows(tokens, 10, 1000)
    assert x.shape == (24, 10) and torch.equal(y, x + 1)
    assert x[0, 0] == 0 and y[-1, -1] == 249
    assert torch.equal(eval_windows(tokens, 10, 1000)[0], x)


@pytest.mark.parametrize("name", ["synthetic", "bytes"])
def test_get_batch_is_seeded(name):
    ds = load_dataset(name, size="ci")
    a = ds.get_batch("train", 4, torch.Generator().manual_seed(0))
    b = ds.to("cpu").get_batch("train", 4, torch.Generator().manual_seed(0))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert a[1].dtype == torch.int64 and len(a[0]) == 4
    with pytest.raises(ValueError, match="split"):
        ds.split("dev")
    assert isinstance(ds, Dataset)
