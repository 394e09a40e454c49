r"""Transformed sparse constraint (TSC): the transformed-L1 penalty on weights or channels.

The penalty follows Zhang and Xin, `"Minimization of transformed L1 penalty"
<https://doi.org/10.1007/s10107-018-1280-x>`_ (Math. Program. 2018), as used by Feng et al.,
`"Lipschitz Constant Meets Condition Number: Learning Robust and Compact Deep Neural
Networks" <https://arxiv.org/abs/2503.20454>`_ (2025).
"""

from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from .checks import check_module, check_transform_a
from .targets import effective_weight, trainable_parameter, weight_layers

# Scales below this are treated as an all-zero layer, whose penalty and gradient are zero.
_TINY_SCALE = 1e-12


def transformed_l1(x: Tensor, a: float = 1.0) -> Tensor:
    r"""Apply the transformed-L1 function elementwise.

    .. math::
        \rho_a(x) = \frac{(a + 1)\,|x|}{a + |x|}

    :math:`\rho_a(0) = 0` and :math:`\rho_a(\pm 1) = 1` for every :math:`a > 0`. As
    :math:`a \to 0`, :math:`\rho_a(x) \to \mathbb{1}[x \ne 0]` (the L0 count after summing),
    and as :math:`a \to \infty`, :math:`\rho_a(x) \to |x|` (L1). The value saturates at
    :math:`a + 1` for large :math:`|x|`, so large weights are barely penalised for small
    :math:`a`.

    Args:
        x (torch.Tensor): input of any shape.
        a (float, optional): shape parameter, > 0. (default: :obj:`1.0`)

    Returns:
        torch.Tensor: :math:`\rho_a(x)`, same shape as :obj:`x`.
    """
    a = check_transform_a(a)
    magnitude = x.abs()
    return (a + 1.0) * magnitude / (a + magnitude)


def normalized_transformed_l1(values: Tensor, a: float = 1.0) -> Tensor:
    r"""Return the mean of :math:`\rho_a(|v| / s)` over ``values``, with a detached scale.

    .. math::
        \mathrm{TSC}(v) = \frac{1}{N} \sum_{i=1}^{N} \rho_a\!\left(\frac{|v_i|}{s}\right),
        \qquad s = \operatorname{mean}\{\, |v_i| : v_i \ne 0 \,\}

    Dividing by :math:`s` makes :obj:`a` mean the same for every layer whatever its
    initialisation scale: values at the layer's typical magnitude map to about 1. The mean
    runs over nonzero entries only, so entries already pruned to zero do not shrink the
    scale. :math:`s` is detached, so the gradient is that of :math:`\rho_a` at fixed scale
    (a reweighted L1 step) and the penalty still shrinks the layer. Second derivatives
    are not supported.

    Args:
        values (torch.Tensor): weights or channel norms of one layer or group, any shape.
        a (float, optional): transformed-L1 parameter, > 0. (default: :obj:`1.0`)

    Returns:
        torch.Tensor: scalar in :math:`[0, a + 1)`; zero for an all-zero input.
    """
    a = check_transform_a(a)
    with torch.no_grad():
        count = torch.count_nonzero(values).clamp_min(1)
        total = torch.linalg.vector_norm(values, ord=1)
        scale = (total / count).clamp_min(_TINY_SCALE)
    return _ScaledTransformedL1Mean.apply(values, scale, a)


class _ScaledTransformedL1Mean(torch.autograd.Function):
    """``mean(rho_a(|v| / scale))`` for a constant scale, with a fused gradient."""

    @staticmethod
    def forward(ctx, values: Tensor, scale: Tensor, a: float) -> Tensor:
        scaled = values.abs().div_(scale)
        shifted = scaled + a
        value = scaled.div_(shifted).mean() * (a + 1.0)
        ctx.save_for_backward(values, scale, shifted)
        ctx.a = a
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_value: Tensor):
        values, scale, shifted = ctx.saved_tensors
        a = ctx.a
        # d rho_a(t) / dt = a (a + 1) / (a + t)^2, and dt / dv = sign(v) / scale.
        factor = grad_value * (a * (a + 1.0)) / (scale * values.numel())
        grad = values.sign().mul_(factor).div_(shifted.square())
        return grad, None, None


def channel_norms(weight: Tensor, transposed: bool = False) -> Tensor:
    """Return the L2 norm of each output channel (filter) of a weight, shape :obj:`[out]`.

    The gradient is zero, not NaN, for all-zero channels.
    """
    if transposed:
        weight = weight.transpose(0, 1)
    squares = weight.reshape(weight.shape[0], -1).square().sum(dim=1)
    return safe_sqrt(squares)


def safe_sqrt(squares: Tensor) -> Tensor:
    """Return ``sqrt(squares)`` with a zero gradient, instead of an infinite one, at zero."""
    positive = squares > 0
    safe = torch.where(positive, squares, torch.ones_like(squares))
    return torch.where(positive, safe.sqrt(), torch.zeros_like(squares))


def layer_sparsity_penalty(
    module: nn.Module,
    a: float = 1.0,
    structured: bool = False,
    bias: bool = False,
) -> Tensor:
    r"""Compute the scale-normalised transformed-L1 penalty of one linear or convolution layer.

    Unstructured, the penalty is :func:`normalized_transformed_l1` over the weight entries;
    structured, over the L2 norms of the output channels (filters). With :obj:`bias=True`
    the bias entries add a second term of the same kind. Computed in float32.

    Args:
        module (torch.nn.Module): the layer; masked layers use their effective weight.
        a (float, optional): transformed-L1 parameter, > 0. (default: :obj:`1.0`)
        structured (bool, optional): penalise channel norms instead of entries.
            (default: :obj:`False`)
        bias (bool, optional): also penalise the bias. (default: :obj:`False`)

    Returns:
        torch.Tensor: float32 scalar.
    """
    weight = effective_weight(module)
    with torch.autocast(device_type=weight.device.type, enabled=False):
        weight = weight.float()
        if structured:
            values = channel_norms(weight, transposed=getattr(module, "transposed", False))
        else:
            values = weight
        total = normalized_transformed_l1(values, a)

        bias_parameter = trainable_parameter(module, "bias")
        if bias and bias_parameter is not None and bias_parameter.requires_grad:
            total = total + normalized_transformed_l1(effective_weight(module, "bias").float(), a)
    return total


def sparsity_penalty(
    model: nn.Module,
    a: float = 1.0,
    structured: bool = False,
    ignored_layers: Optional[Iterable[nn.Module]] = None,
    bias: bool = False,
) -> Tensor:
    r"""Sum the scale-normalised transformed-L1 penalty over the linear and convolution layers.

    .. math::
        \mathrm{TSC}(\theta) = \sum_{\ell} \frac{1}{N_\ell} \sum_{i=1}^{N_\ell}
        \rho_a\!\left(\frac{|v_{\ell,i}|}{s_\ell}\right)

    where :math:`v_\ell` are the weights of layer :math:`\ell` (unstructured) or its filter
    norms (structured) and :math:`s_\ell` is their mean nonzero magnitude, see
    :func:`normalized_transformed_l1`. Each layer contributes at most :math:`a + 1`.

    Plain PyTorch: the structured form uses each layer's own output channels. The
    :class:`~prune_tscnc.TSCNCPruner` uses whole Torch-Pruning groups instead, which also
    couple the following layers' input channels and the normalisation layers.

    Args:
        model (torch.nn.Module): the model, possibly wrapped in DistributedDataParallel.
        a (float, optional): transformed-L1 parameter, > 0. (default: :obj:`1.0`)
        structured (bool, optional): penalise filter norms instead of single weights.
            (default: :obj:`False`)
        ignored_layers (list, optional): modules to leave out, with their submodules.
            (default: :obj:`None`)
        bias (bool, optional): also penalise biases. (default: :obj:`False`)

    Returns:
        torch.Tensor: float32 scalar, differentiable; zero if no layer is targeted.
    """
    check_module(model)
    a = check_transform_a(a)
    layers = weight_layers(model, ignored_layers)

    total = torch.zeros((), dtype=torch.float32, device=_model_device(model))
    for _, module in layers:
        total = total + layer_sparsity_penalty(module, a, structured=structured, bias=bias)
    return total


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")
