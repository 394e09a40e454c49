"""Tests of the TSCNC constraints: values, gradients, reshaping and numerical safety."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from prune_tscnc import condition_number, layer_condition_numbers, penalty, transformed_l1
from prune_tscnc.constraints import (
    cheap_condition_penalty,
    condition_penalty,
    effective_weight,
    exact_condition_penalty,
    is_depthwise,
    layer_condition_penalty,
    matrix_condition_penalty,
    module_matrices,
    normalized_transformed_l1,
    sparsity_penalty,
    svd_condition_penalty,
    weight_to_matrices,
)
from prune_tscnc.constraints.conditioning import _inverse_and_log_det


@pytest.mark.parametrize("shape", [(5, 5), (8, 3), (3, 8), (16, 40)])
@pytest.mark.parametrize("seed", [0, 1])
def test_condition_number_matches_numpy(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(*shape, generator=generator)

    expected = np.linalg.cond(weight.double().numpy())
    assert math.isclose(condition_number(weight), expected, rel_tol=1e-9)


def test_condition_number_linear_module():
    torch.manual_seed(0)
    layer = nn.Linear(7, 4)
    expected = np.linalg.cond(layer.weight.detach().double().numpy())
    assert math.isclose(condition_number(layer), expected, rel_tol=1e-9)


def test_condition_number_singular_is_inf():
    weight = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    assert condition_number(weight) == math.inf
    assert condition_number(torch.zeros(3, 4)) == math.inf


def test_grouped_conv_matrices_and_kappa():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, groups=2)
    matrices = module_matrices(conv)

    assert matrices.shape == (2, 3, 18)
    for group in range(2):
        block = conv.weight[3 * group: 3 * (group + 1)].reshape(3, -1)
        assert torch.equal(matrices[group], block)

    kappas = condition_number(conv, reduction="none")
    for group in range(2):
        expected = np.linalg.cond(matrices[group].detach().double().numpy())
        assert math.isclose(float(kappas[group]), expected, rel_tol=1e-9)
    assert math.isclose(condition_number(conv, "max"), float(kappas.max()), rel_tol=1e-12)
    assert math.isclose(condition_number(conv, "mean"), float(kappas.mean()), rel_tol=1e-12)


def test_transposed_conv_matrices():
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(4, 6, 3, groups=2)  # weight [4, 3, 3, 3]
    matrices = module_matrices(conv)

    assert matrices.shape == (2, 2, 27)
    assert torch.equal(matrices[1], conv.weight[2:4].reshape(2, -1))


def test_conv1d_and_conv3d_matrices():
    assert module_matrices(nn.Conv1d(3, 5, 4)).shape == (1, 5, 12)
    assert module_matrices(nn.Conv3d(2, 4, 3)).shape == (1, 4, 54)


def test_weight_to_matrices_bad_groups():
    with pytest.raises(ValueError, match="not divisible"):
        weight_to_matrices(torch.randn(5, 2, 3, 3), groups=2)


@pytest.mark.parametrize("form", ["cheap", "exact"])
def test_depthwise_conv_is_skipped(form):
    torch.manual_seed(0)
    depthwise = nn.Conv2d(4, 4, 3, groups=4)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), depthwise)

    assert is_depthwise(depthwise)
    assert not is_depthwise(model[0])
    assert layer_condition_penalty(depthwise, form).item() == 0.0
    assert list(layer_condition_numbers(model)) == ["0"]

    condition_penalty(model, form=form, kappa_target=1.0).backward()
    assert depthwise.weight.grad is None or torch.count_nonzero(depthwise.weight.grad) == 0
    assert torch.count_nonzero(model[0].weight.grad) > 0


def test_exact_penalty_hand_values():
    matrix = torch.diag(torch.tensor([4.0, 1.0]))
    value = exact_condition_penalty(matrix, kappa_target=2.0)
    assert torch.allclose(value, torch.tensor(math.log(2.0) ** 2), atol=1e-6)

    below_target = exact_condition_penalty(matrix, kappa_target=5.0)
    assert below_target.item() == 0.0

    # sigma = (3, 1, 0): the floor eps * sigma_1 = 0.03 replaces sigma_3, so kappa = 100.
    singular = torch.diag(torch.tensor([3.0, 1.0, 0.0]))
    floored = exact_condition_penalty(singular, kappa_target=10.0, eps=1e-2)
    assert torch.allclose(floored, torch.tensor(math.log(10.0) ** 2), atol=1e-5)


@pytest.mark.parametrize("transpose", [False, True])
def test_cheap_penalty_hand_values(transpose):
    # Singular values (2, 1): mean eigenvalue d = 2.5, normalised eigenvalues (1.6, 0.4).
    matrix = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    if transpose:
        matrix = matrix.T
    eps = 1e-6
    mean_log = (math.log((1.6 + eps) / (1 + eps)) + math.log((0.4 + eps) / (1 + eps))) / 2

    value = cheap_condition_penalty(matrix, eps=eps)
    assert torch.allclose(value, torch.tensor(mean_log**2, dtype=torch.float64), atol=1e-12)


def test_cheap_penalty_zero_when_orthogonal():
    torch.manual_seed(0)
    orthogonal, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    value = cheap_condition_penalty(3.0 * orthogonal[:4])
    assert torch.allclose(value, torch.zeros((), dtype=torch.float64), atol=1e-20)


def test_cheap_penalty_scale_invariant():
    torch.manual_seed(0)
    matrix = torch.randn(4, 9, dtype=torch.float64)
    small = cheap_condition_penalty(matrix)
    large = cheap_condition_penalty(100.0 * matrix)
    assert torch.allclose(small, large, atol=1e-12)


def test_transformed_l1_hand_values():
    x = torch.tensor([0.0, 1.0, -3.0])
    assert torch.allclose(transformed_l1(x, a=1.0), torch.tensor([0.0, 1.0, 1.5]), atol=1e-7)
    assert torch.allclose(transformed_l1(torch.tensor(0.5), a=2.0), torch.tensor(0.6), atol=1e-7)


def test_normalized_transformed_l1_hand_value():
    # Mean nonzero magnitude 2 gives [0, 0.5, 1.5]; rho_1 of those is [0, 2/3, 1.2].
    values = torch.tensor([0.0, 1.0, -3.0])
    expected = (0.0 + 2.0 / 3.0 + 1.2) / 3.0
    value = normalized_transformed_l1(values, a=1.0)
    assert torch.allclose(value, torch.tensor(expected), atol=1e-6)


def test_normalized_transformed_l1_all_zero():
    values = torch.zeros(5, requires_grad=True)
    value = normalized_transformed_l1(values)
    value.backward()
    assert value.item() == 0.0
    assert torch.isfinite(values.grad).all()


def test_transformed_l1_small_a_counts_nonzeros():
    x = torch.tensor([0.0, 0.5, -2.0, 0.0, 3.0], dtype=torch.float64)
    count = transformed_l1(x, a=1e-8).sum()
    assert torch.allclose(count, torch.tensor(3.0, dtype=torch.float64), atol=1e-6)


def test_transformed_l1_large_a_is_l1():
    x = torch.tensor([0.0, 0.5, -2.0, 3.0], dtype=torch.float64)
    value = transformed_l1(x, a=1e8)
    assert torch.allclose(value, x.abs(), rtol=1e-7, atol=0.0)


def test_transformed_l1_gradcheck():
    x = torch.tensor([0.3, -1.2, 2.5, -0.05], dtype=torch.float64, requires_grad=True)
    for a in (0.1, 1.0, 10.0):
        assert torch.autograd.gradcheck(lambda t, a=a: transformed_l1(t, a), (x,))


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (2, 4, 7)])
def test_cheap_penalty_gradcheck(shape):
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(cheap_condition_penalty, (matrix,))


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (2, 4, 7)])
def test_exact_penalty_gradcheck(shape):
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda m: exact_condition_penalty(m, kappa_target=1.0), (matrix,)
    )


def _zero_row_matrix():
    matrix = torch.randn(4, 6)
    matrix[2] = 0.0
    return matrix


def _rank_one_matrix():
    return torch.outer(torch.randn(4), torch.randn(6))


@pytest.mark.parametrize("form", ["cheap", "exact", "exact_svd"])
@pytest.mark.parametrize(
    "make_matrix",
    [_zero_row_matrix, _rank_one_matrix, lambda: torch.zeros(4, 6), lambda: torch.zeros(6, 4)],
    ids=["zero_row", "rank_one", "all_zero", "all_zero_tall"],
)
def test_penalty_finite_on_degenerate_matrices(form, make_matrix):
    torch.manual_seed(0)
    matrix = make_matrix().requires_grad_()
    value = matrix_condition_penalty(matrix, form=form, kappa_target=2.0)
    (gradient,) = torch.autograd.grad(value, matrix)

    assert torch.isfinite(value)
    assert torch.isfinite(gradient).all()


def test_log_det_fallback_for_indefinite_matrix():
    # The second matrix is not positive definite, so Cholesky fails and eigh takes over.
    good = torch.diag(torch.tensor([2.0, 0.5]))
    bad = torch.diag(torch.tensor([1.0, -1e-9]))
    inverse, log_det = _inverse_and_log_det(torch.stack([good, bad]))

    assert torch.allclose(log_det[0], torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(inverse[0], torch.diag(torch.tensor([0.5, 2.0])), atol=1e-6)
    assert torch.isfinite(log_det).all()
    assert torch.isfinite(inverse).all()


def _masked_linear(seed):
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(1600, 16, bias=False)
    with torch.no_grad():
        # Row scales from 1 to 1e-3 make the matrix badly conditioned.
        scales = torch.logspace(0, -3, 16).unsqueeze(1)
        layer.weight.copy_(torch.randn(16, 1600, generator=generator) * scales)
    mask = torch.rand(16, 1600, generator=generator) < 0.01
    torch_prune.custom_from_mask(layer, "weight", mask)
    return layer, mask


@pytest.mark.parametrize("form", ["cheap", "exact", "exact_svd"])
def test_condition_term_lowers_kappa_under_fixed_mask(form):
    layer, mask = _masked_linear(seed=0)
    model = nn.Sequential(layer)
    kappa_before = condition_number(layer)
    optimizer = torch.optim.Adam([layer.weight_orig], lr=1e-2)

    for _ in range(10):
        optimizer.zero_grad()
        condition_penalty(model, form=form, kappa_target=1.0).backward()
        optimizer.step()

    kappa_after = condition_number(layer)
    assert math.isfinite(kappa_before)
    assert kappa_after < 0.1 * kappa_before
    assert torch.count_nonzero(layer.weight[~mask]) == 0
    assert torch.equal(layer.weight_mask.bool(), mask)


def test_masked_layer_gradient_reaches_weight_orig():
    layer, mask = _masked_linear(seed=1)
    weight = effective_weight(layer)
    assert torch.equal(weight, layer.weight_orig * layer.weight_mask)

    penalty(nn.Sequential(layer), lambda_sparse=1.0, lambda_cond=1.0).backward()
    assert layer.weight_orig.grad is not None
    assert torch.count_nonzero(layer.weight_orig.grad[~mask]) == 0
    assert torch.count_nonzero(layer.weight_orig.grad[mask]) > 0


def test_penalty_is_float32_under_bfloat16_autocast():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = penalty(model, lambda_sparse=1e-2, lambda_cond=1e-2, form="exact")
        cheap = condition_penalty(model, form="cheap")
    value.backward()

    assert value.dtype == torch.float32
    assert cheap.dtype == torch.float32
    assert torch.isfinite(model[0].weight.grad).all()


def test_penalty_on_bfloat16_weights_gives_float32():
    torch.manual_seed(0)
    model = nn.Linear(8, 4).to(torch.bfloat16)
    value = penalty(model, lambda_cond=1.0)
    value.backward()

    assert value.dtype == torch.float32
    assert model.weight.grad.dtype == torch.bfloat16


def test_penalty_combines_terms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    total = penalty(model, lambda_sparse=0.3, lambda_cond=0.7, a=2.0, form="exact",
                    kappa_target=1.5)
    expected = 0.3 * sparsity_penalty(model, a=2.0) + 0.7 * condition_penalty(
        model, form="exact", kappa_target=1.5
    )
    assert torch.allclose(total, expected, atol=1e-6)


def test_penalty_skips_ignored_and_frozen_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Linear(4, 3))
    model[3].weight.requires_grad_(False)
    penalty(model, lambda_sparse=1.0, lambda_cond=1.0, ignored_layers=[model[2]]).backward()

    assert model[0].weight.grad is not None
    assert model[2].weight.grad is None
    assert model[3].weight.grad is None


def test_structured_sparsity_uses_filter_norms():
    conv = nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([3.0, 4.0, 0.0, 0.0, 1.0, 0.0]).reshape(3, 2, 1, 1))
    # Filter norms [5, 0, 1], mean nonzero 3: rho_1 of [5/3, 0, 1/3], averaged.
    expected = (2 * (5 / 3) / (1 + 5 / 3) + 0.0 + 2 * (1 / 3) / (1 + 1 / 3)) / 3
    value = sparsity_penalty(conv, a=1.0, structured=True)
    assert torch.allclose(value, torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"lambda_sparse": -1.0}, ValueError),
        ({"lambda_cond": -0.1}, ValueError),
        ({"lambda_cond": float("nan")}, ValueError),
        ({"lambda_cond": "1e-4"}, TypeError),
        ({"a": 0.0}, ValueError),
        ({"a": -2.0}, ValueError),
        ({"form": "svd"}, ValueError),
        ({"kappa_target": 0.5}, ValueError),
        ({"eps": 0.0}, ValueError),
    ],
)
def test_penalty_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        penalty(nn.Linear(3, 2), **kwargs)


@pytest.mark.parametrize("function", [penalty, condition_penalty, sparsity_penalty,
                                      layer_condition_numbers])
def test_non_module_input_raises_type_error(function):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        function(torch.randn(3, 3))


def test_condition_number_rejects_bad_input():
    with pytest.raises(TypeError):
        condition_number([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(TypeError):
        condition_number(nn.ReLU())
    with pytest.raises(ValueError):
        condition_number(torch.randn(3, 3), reduction="sum")
    with pytest.raises(ValueError):
        condition_number(torch.randn(3))


def test_transformed_l1_rejects_bad_a():
    with pytest.raises(ValueError, match="`a`"):
        transformed_l1(torch.ones(2), a=0.0)


@pytest.mark.parametrize("shape", [(4, 9), (9, 4), (3, 6, 6)])
def test_exact_matches_svd_reference(shape):
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(*shape, generator=generator, dtype=torch.float64, requires_grad=True)
    value = exact_condition_penalty(matrix, kappa_target=1.5)
    reference = svd_condition_penalty(matrix, kappa_target=1.5)
    (grad,) = torch.autograd.grad(value.sum(), matrix)
    (reference_grad,) = torch.autograd.grad(reference.sum(), matrix)

    assert torch.allclose(value, reference, atol=1e-10)
    assert torch.allclose(grad, reference_grad, atol=1e-8)


def test_exact_flat_beyond_floor():
    matrix = torch.diag(torch.tensor([4.0, 1.0, 0.0])).requires_grad_()
    beyond_floor = exact_condition_penalty(matrix, kappa_target=2.0, eps=1e-2)
    (grad,) = torch.autograd.grad(beyond_floor, matrix)
    assert beyond_floor.item() > 0
    assert torch.count_nonzero(grad) == 0


def test_exact_flat_below_target():
    well_conditioned = torch.diag(torch.tensor([2.0, 1.0])).requires_grad_()
    (grad,) = torch.autograd.grad(exact_condition_penalty(well_conditioned, 5.0), well_conditioned)
    assert torch.count_nonzero(grad) == 0


def test_exact_rejects_non_finite_weights():
    matrix = torch.ones(3, 4)
    matrix[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        exact_condition_penalty(matrix)


def test_exact_resolves_large_kappa_in_float32():
    # kappa = 1e5 is beyond what a float32 Gram matrix resolves, but not a float64 one.
    matrix = torch.diag(torch.tensor([1.0, 1e-5])).float()
    value = exact_condition_penalty(matrix, kappa_target=1.0)
    expected = math.log(1e5) ** 2
    assert value.dtype == torch.float32
    assert torch.allclose(value, torch.tensor(expected), rtol=1e-5)


def test_normalized_transformed_l1_gradient_at_fixed_scale():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(40, generator=generator, dtype=torch.float64)
    values[::7] = 0.0
    values.requires_grad_()
    scale = values.detach().abs().sum() / torch.count_nonzero(values.detach())

    (fused,) = torch.autograd.grad(normalized_transformed_l1(values, a=0.5), values)
    (reference,) = torch.autograd.grad(transformed_l1(values / scale, a=0.5).mean(), values)
    assert torch.allclose(fused, reference, atol=1e-12)
