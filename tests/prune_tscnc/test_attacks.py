"""Tests for the PGD training attack and the ART evaluation wrappers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_tscnc.attacks import RobustAccuracy, accuracy, evaluate_autoattack, evaluate_pgd, pgd_attack
from prune_tscnc.data import CIFAR10Folder

EPS = 8 / 255


@pytest.fixture(scope="module")
def fitted():
    """A tiny linear classifier fitted to 20 real test images, so clean accuracy is high."""
    torch.manual_seed(0)
    images, labels = CIFAR10Folder(split="test", max_per_class=2).tensors()
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model.eval(), images, labels


def test_fitted_model_is_accurate(fitted):
    model, images, labels = fitted
    assert accuracy(model, images, labels) == 1.0


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_increases_loss(fitted, random_start):
    model, images, labels = fitted
    adversarial = pgd_attack(model, images, labels, eps=EPS, step_size=2 / 255, steps=5, random_start=random_start)
    clean_loss = F.cross_entropy(model(images), labels)
    adversarial_loss = F.cross_entropy(model(adversarial), labels)
    assert adversarial_loss > clean_loss


@pytest.mark.parametrize("steps", [0, 1, 7])
def test_pgd_stays_in_ball_and_range(fitted, steps):
    model, images, labels = fitted
    adversarial = pgd_attack(model, images, labels, eps=EPS, step_size=3 / 255, steps=steps,
                             generator=torch.Generator().manual_seed(1))
    assert float((adversarial - images).abs().max()) <= EPS + 1e-6
    assert float(adversarial.min()) >= 0.0
    assert float(adversarial.max()) <= 1.0


def test_pgd_seeded_start_repeats(fitted):
    model, images, labels = fitted
    first = pgd_attack(model, images, labels, steps=2, generator=torch.Generator().manual_seed(3))
    second = pgd_attack(model, images, labels, steps=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


def test_pgd_leaves_parameter_grads(fitted):
    model, images, labels = fitted
    model.zero_grad(set_to_none=True)
    pgd_attack(model, images, labels, steps=2)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kwargs", [{"eps": -0.1}, {"step_size": 0.0}, {"steps": -1}])
def test_pgd_rejects_bad_budget(fitted, kwargs):
    model, images, labels = fitted
    with pytest.raises(ValueError, match="PGD"):
        pgd_attack(model, images, labels, **kwargs)


def test_art_pgd_lowers_accuracy(fitted):
    model, images, labels = fitted
    result = evaluate_pgd(model, images, labels, eps=0.1, step_size=0.02, steps=10)
    assert isinstance(result, RobustAccuracy)
    assert result.num_images == 20
    assert result.clean == 1.0
    assert result.robust < result.clean
    assert result.max_perturbation <= 0.1 + 1e-5


def test_art_autoattack_runs(fitted):
    model, images, labels = fitted
    result = evaluate_autoattack(model, images[:6], labels[:6], eps=0.1, apgd_steps=5, square_queries=10, batch_size=6)
    assert result.num_images == 6
    assert result.robust <= result.clean
    assert result.max_perturbation <= 0.1 + 1e-5


def test_autoattack_at_least_as_strong_as_nothing(fitted):
    model, images, labels = fitted
    result = evaluate_autoattack(model, images, labels, eps=0.1, apgd_steps=10, square_queries=10)
    assert result.robust < 1.0


def test_autoattack_rejects_zero_budget(fitted):
    model, images, labels = fitted
    with pytest.raises(ValueError, match="apgd_steps=0"):
        evaluate_autoattack(model, images, labels, apgd_steps=0)
