"""Reshaping of linear and convolution weights into the matrices whose conditioning matters."""

from typing import Optional

from torch import Tensor, nn

# Layers whose weight is a linear map that the condition constraint acts on.
CONDITION_LAYER_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def weight_to_matrices(weight: Tensor, groups: int = 1, transposed: bool = False) -> Tensor:
    r"""Reshape a linear or convolution weight into one matrix per convolution group.

    A convolution with weight :math:`[C_{out}, C_{in}/g, k_1, \dots]` acts, per group, as the
    matrix :math:`[C_{out}/g, (C_{in}/g) k_1 \cdots]` on unfolded input patches. A transposed
    convolution stores :math:`[C_{in}, C_{out}/g, k_1, \dots]`, which gives the transpose of
    that matrix, with the same singular values.

    Args:
        weight (torch.Tensor): weight of shape :obj:`[out, in]` (linear) or
            :obj:`[out, in / groups, *kernel]` (convolution).
        groups (int, optional): number of convolution groups. (default: :obj:`1`)
        transposed (bool, optional): whether the weight belongs to a transposed
            convolution. (default: :obj:`False`)

    Returns:
        torch.Tensor: matrices of shape :obj:`[groups, m, n]`.
    """
    if weight.dim() < 2:
        raise ValueError(
            f"Expected a weight with at least 2 dimensions, got shape {tuple(weight.shape)}."
        )
    if weight.shape[0] % groups != 0:
        raise ValueError(
            f"The first weight dimension {weight.shape[0]} is not divisible by groups={groups}."
        )

    # Both layouts keep the group index in the first dimension, so one reshape serves both:
    # [out, in / g, *k] -> [g, out / g, in / g * prod(k)] and
    # [in, out / g, *k] -> [g, in / g, out / g * prod(k)] (transposed).
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def is_depthwise(module: nn.Module) -> bool:
    """Return whether ``module`` is a depthwise convolution (one input channel per group)."""
    if not isinstance(module, nn.modules.conv._ConvNd) or module.groups == 1:
        return False
    return module.in_channels // module.groups == 1


def module_matrices(module: nn.Module, weight: Optional[Tensor] = None) -> Tensor:
    """Return the matrices :obj:`[groups, m, n]` of a linear or convolution layer.

    Args:
        module (torch.nn.Module): an :obj:`nn.Linear` or :obj:`nn.Conv*d` layer.
        weight (torch.Tensor, optional): the weight to reshape, for example the effective
            weight of a masked layer. (default: :obj:`module.weight`)
    """
    if not isinstance(module, CONDITION_LAYER_TYPES):
        raise TypeError(
            f"Expected an nn.Linear or nn.Conv*d layer, got {type(module).__name__}."
        )
    if weight is None:
        weight = module.weight

    if isinstance(module, nn.Linear):
        return weight.unsqueeze(0)
    return weight_to_matrices(weight, groups=module.groups, transposed=module.transposed)


def short_side_first(matrices: Tensor) -> Tensor:
    """Transpose the matrices :obj:`[g, m, n]` where needed so that :obj:`m <= n`."""
    if matrices.shape[-2] > matrices.shape[-1]:
        return matrices.transpose(-2, -1)
    return matrices


__all__ = [
    "CONDITION_LAYER_TYPES",
    "is_depthwise",
    "module_matrices",
    "short_side_first",
    "weight_to_matrices",
]
