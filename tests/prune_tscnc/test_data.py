"""Tests for the CIFAR-10 ImageFolder loader and tensor transforms, on the embedded images."""

import numpy as np
import pytest
import torch

from prune_tscnc.data import (
    CIFAR10_CLASSES,
    CIFAR10Folder,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    ToTensor,
    default_data_root,
    make_loader,
    train_transform,
)


@pytest.fixture(scope="module")
def small_train():
    return CIFAR10Folder(split="train", max_per_class=5)


def test_default_root_exists():
    assert (default_data_root() / "train").is_dir()
    assert (default_data_root() / "test").is_dir()


@pytest.mark.parametrize("split, per_class", [("train", 400), ("test", 100)])
def test_full_split_counts(split, per_class):
    dataset = CIFAR10Folder(split=split)
    assert len(dataset) == 10 * per_class
    assert torch.equal(torch.bincount(dataset.targets), torch.full((10,), per_class))


def test_class_names_standard_order(small_train):
    assert tuple(small_train.classes) == CIFAR10_CLASSES
    assert small_train.class_to_idx["truck"] == 9


def test_item_shape_and_range(small_train):
    image, label = small_train[0]
    assert image.shape == (3, 32, 32)
    assert image.dtype == torch.float32
    assert 0.0 <= float(image.min())
    assert float(image.max()) <= 1.0
    assert label == 0


def test_labels_match_folders(small_train):
    for path, label in zip(small_train.files, small_train.targets.tolist()):
        assert path.parent.name == CIFAR10_CLASSES[label]


def test_tensors_match_items(small_train):
    images, labels = small_train.tensors()
    assert images.shape == (50, 3, 32, 32)
    assert torch.allclose(images[7], small_train[7][0], atol=0)
    assert int(labels[7]) == small_train[7][1]


def test_max_per_class_takes_first_files():
    dataset = CIFAR10Folder(split="test", max_per_class=2)
    assert [p.name for p in dataset.files[:2]] == sorted(p.name for p in dataset.files[:2])
    assert len(dataset) == 20


def _batches(seed):
    dataset = CIFAR10Folder(split="train", transform=train_transform(seed), max_per_class=3)
    return list(make_loader(dataset, batch_size=8, shuffle=True, seed=seed))


def test_loader_deterministic_with_seed():
    first, second = _batches(0), _batches(0)
    for (images_a, labels_a), (images_b, labels_b) in zip(first, second):
        assert torch.equal(labels_a, labels_b)
        assert torch.equal(images_a, images_b)


def test_loader_differs_across_seeds():
    first, second = _batches(0), _batches(1)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, second))


def test_to_tensor_layout():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    tensor = ToTensor()(image)
    assert tensor.shape == (3, 2, 3)
    assert torch.allclose(tensor[1, 0, 2], torch.tensor(image[0, 2, 1] / 255.0, dtype=torch.float32), atol=1e-7)


def test_to_tensor_rejects_float():
    with pytest.raises(TypeError, match="uint8"):
        ToTensor()(np.zeros((4, 4, 3), dtype=np.float32))


def test_normalize_per_channel():
    x = torch.ones(3, 2, 2)
    out = Normalize(mean=(0.5, 1.0, 0.0), std=(0.5, 1.0, 2.0))(x)
    assert torch.allclose(out[:, 0, 0], torch.tensor([1.0, 0.0, 0.5]), atol=1e-7)


def test_random_crop_is_window_of_padded():
    x = torch.rand(3, 32, 32)
    padded = torch.nn.functional.pad(x, [4] * 4)
    windows = [padded[:, top:top + 32, left:left + 32] for top in range(9) for left in range(9)]
    for seed in range(10):
        crop = RandomCrop(32, 4, torch.Generator().manual_seed(seed))(x)
        assert crop.shape == (3, 32, 32)
        assert any(torch.equal(crop, window) for window in windows)


def test_random_crop_zero_padding_visible():
    x = torch.ones(1, 8, 8)
    crops = [RandomCrop(8, 4, torch.Generator().manual_seed(s))(x) for s in range(30)]
    assert any(float(c.min()) == 0.0 for c in crops)


def test_flip_probability_one_flips():
    x = torch.arange(6.0).view(1, 2, 3)
    assert torch.equal(RandomHorizontalFlip(1.0)(x), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x), x)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"split": "val"}, ValueError, "split"),
        ({"max_per_class": 0}, ValueError, "max_per_class"),
        ({"root": "/nonexistent/cifar"}, FileNotFoundError, "not found"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        CIFAR10Folder(**kwargs)


def test_bad_flip_probability():
    with pytest.raises(ValueError, match="probability"):
        RandomHorizontalFlip(1.5)
