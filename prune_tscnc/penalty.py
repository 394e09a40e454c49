r"""The TSCNC penalty as a plain PyTorch loss term, with no Torch-Pruning needed.

Feng, Lin, Gao and Wei, `"Lipschitz Constant Meets Condition Number: Learning Robust and
Compact Deep Neural Networks" <https://arxiv.org/abs/2503.20454>`_ (2025).
"""

from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from .constraints.checks import (
    check_condition_args,
    check_module,
    check_non_negative,
    check_transform_a,
)
from .constraints.conditioning import condition_penalty
from .constraints.sparsity import sparsity_penalty


def penalty(
    model: nn.Module,
    lambda_sparse: float = 1e-4,
    lambda_cond: float = 1e-4,
    a: float = 1.0,
    form: str = "cheap",
    structured: bool = False,
    ignored_layers: Optional[Iterable[nn.Module]] = None,
    kappa_target: float = 10.0,
    eps: float = 1e-6,
    bias: bool = False,
) -> Tensor:
    r"""Compute the TSCNC penalty, a scalar to add to the training loss before ``backward()``.

    .. math::
        \mathcal{L}_{TSCNC}(\theta) = \lambda_s \, \mathrm{TSC}(\theta)
        + \lambda_c \, \mathrm{CNC}(\theta)

    with the transformed sparse constraint
    :math:`\mathrm{TSC}` (:func:`~prune_tscnc.constraints.sparsity_penalty`, scale-normalised
    :math:`\rho_a(x) = (a + 1)|x| / (a + |x|)` per layer) and the condition number constraint
    :math:`\mathrm{CNC}` (:func:`~prune_tscnc.constraints.condition_penalty`), both summed
    over the :obj:`nn.Linear` and :obj:`nn.Conv*d` layers that are neither ignored nor
    frozen. Both terms are computed in float32, also under :func:`torch.autocast`. Layers
    masked with :obj:`torch.nn.utils.prune` use their effective weight, and the gradient
    reaches ``weight_orig`` through the fixed mask. Under DistributedDataParallel every rank
    has the same weights, so every rank computes the same penalty, and its gradient is
    averaged with the loss gradient as usual.

    Example:
        >>> loss = criterion(model(x), y) + penalty(model, lambda_sparse=1e-4, lambda_cond=1e-3)
        >>> loss.backward()

    Args:
        model (torch.nn.Module): the model, possibly wrapped in DistributedDataParallel.
        lambda_sparse (float, optional): weight :math:`\lambda_s \ge 0` of the sparsity
            term. (default: :obj:`1e-4`)
        lambda_cond (float, optional): weight :math:`\lambda_c \ge 0` of the condition
            term. (default: :obj:`1e-4`)
        a (float, optional): transformed-L1 parameter, > 0; towards 0 it counts nonzeros,
            towards infinity it becomes L1. (default: :obj:`1.0`)
        form (str, optional): condition penalty form, :obj:`"cheap"` (log-determinant of the
            short-side Gram matrix), :obj:`"exact"` (extreme singular values from the float64
            Gram matrix) or :obj:`"exact_svd"` (the same value through an SVD, slower on CPU).
            (default: :obj:`"cheap"`)
        structured (bool, optional): penalise filter norms instead of single weights.
            (default: :obj:`False`)
        ignored_layers (list, optional): modules to leave out, with their submodules.
            (default: :obj:`None`)
        kappa_target (float, optional): condition number the exact forms tolerate, >= 1.
            (default: :obj:`10.0`)
        eps (float, optional): floor (exact forms) or jitter (cheap form), in (0, 1).
            (default: :obj:`1e-6`)
        bias (bool, optional): also apply the sparsity term to biases.
            (default: :obj:`False`)

    Returns:
        torch.Tensor: float32 scalar on the model's device.
    """
    check_module(model)
    lambda_sparse = check_non_negative(lambda_sparse, "lambda_sparse")
    lambda_cond = check_non_negative(lambda_cond, "lambda_cond")
    a = check_transform_a(a)
    check_condition_args(form, kappa_target, eps)
    ignored_layers = list(ignored_layers) if ignored_layers is not None else None

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    total = torch.zeros((), dtype=torch.float32, device=device)
    if lambda_sparse > 0:
        sparse_term = sparsity_penalty(
            model, a=a, structured=structured, ignored_layers=ignored_layers, bias=bias
        )
        total = total + lambda_sparse * sparse_term
    if lambda_cond > 0:
        cond_term = condition_penalty(
            model, form=form, kappa_target=kappa_target, eps=eps, ignored_layers=ignored_layers
        )
        total = total + lambda_cond * cond_term
    return total
