r"""Differentiable channel norms of Torch-Pruning groups, for the structured sparsity term.

A Torch-Pruning group lists every slice that is removed together with one channel of its
root layer: the root's output filter, the following layers' input slices and the
normalisation layers' affine weights. The group norm of root channel :math:`c` is

.. math::
    \|g_c\|_2 = \Big( \sum_{(\ell, i) \mapsto c} \|W_\ell[i]\|_2^2 \Big)^{1/2},

the same quantity that ``tp.importance.GroupMagnitudeImportance(p=2)`` ranks, but summed
instead of averaged over layers and kept differentiable.
"""

from typing import Dict, Iterable, List, Optional, Set, Tuple

import torch
from torch import Tensor, nn

from .sparsity import normalized_transformed_l1, safe_sqrt
from .targets import effective_weight, trainable_parameter

NORM_LAYER_TYPES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_WEIGHT_LAYER_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def _is_targeted(module: nn.Module, name: str, ignored: Set[nn.Module]) -> bool:
    parameter = trainable_parameter(module, name)
    return module not in ignored and parameter is not None and parameter.requires_grad


def _channel_squares(module: nn.Module, squared: Tensor, out_channels: bool) -> Optional[Tensor]:
    """Sum the squared weight ``squared`` over every output (or input) channel slice.

    Returns None for slices that the group norm leaves out.
    """
    if isinstance(module, NORM_LAYER_TYPES):
        if not out_channels or squared.dim() != 1:
            return None
        return squared

    # Input channels of a grouped convolution are spread over the groups' weight blocks.
    # NOTE: they are left out of the group norm rather than approximated.
    if not out_channels and isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        return None

    # Linear and convolution weights are [out, in, ...], transposed convolutions [in, out, ...].
    transposed = getattr(module, "transposed", False)
    channel_dim = 0 if out_channels != transposed else 1
    other_dims = [dim for dim in range(squared.dim()) if dim != channel_dim]
    return squared.sum(dim=other_dims)


def group_channel_norms(
    group,
    dependency_graph,
    ignored: Set[nn.Module],
    bias: bool = False,
    cache: Optional[Dict] = None,
) -> Tuple[Optional[Tensor], List[nn.Parameter]]:
    """Compute the differentiable group norm of every root channel of a Torch-Pruning group.

    Slices of ignored or frozen layers count in the norm as constants, so they get no
    gradient.

    Args:
        group (torch_pruning.dependency.Group): a group from
            ``DependencyGraph.get_all_groups()``.
        dependency_graph (torch_pruning.DependencyGraph): the graph that built the group.
        ignored (set): modules whose parameters must not change.
        bias (bool, optional): also count the biases of output-channel slices.
            (default: :obj:`False`)
        cache (dict, optional): per-channel sums already computed in this pass, shared
            between groups because a layer's output and input channels sit in different
            groups. (default: :obj:`None`)

    Returns:
        tuple: the norms :obj:`[num_root_channels]` in float32 (None if no slice is
        supported) and the parameters that receive gradients.
    """
    num_channels = len(group[0].idxs)
    squares = None
    targets: List[nn.Parameter] = []
    if cache is None:
        cache = {}

    for position, (dependency, idxs) in enumerate(group):
        module = dependency.target.module
        if not isinstance(module, _WEIGHT_LAYER_TYPES + NORM_LAYER_TYPES):
            continue
        if trainable_parameter(module, "weight") is None:
            continue
        root_idxs = group[position].root_idxs
        if any(index is None for index in root_idxs):
            continue

        handler = dependency.handler
        if dependency_graph.is_out_channel_pruning_fn(handler):
            out_channels = True
        elif dependency_graph.is_in_channel_pruning_fn(handler):
            out_channels = False
        else:
            continue

        names = ["weight"]
        if bias and out_channels and trainable_parameter(module, "bias") is not None:
            names.append("bias")
        for name in names:
            targeted = _is_targeted(module, name, ignored)
            # One squared tensor per parameter serves both its output and input slices.
            squared_key = (id(module), name, targeted)
            if squared_key not in cache:
                tensor = effective_weight(module, name)
                tensor = tensor.float() if targeted else tensor.detach().float()
                cache[squared_key] = tensor.square()
            key = squared_key + (out_channels,)
            if key not in cache:
                squared = cache[squared_key]
                cache[key] = squared if name == "bias" else _channel_squares(
                    module, squared, out_channels
                )
            channel_squares = cache[key]
            if channel_squares is None:
                continue
            index = torch.as_tensor(idxs, dtype=torch.long, device=channel_squares.device)
            contribution = channel_squares.index_select(0, index)

            if squares is None:
                squares = contribution.new_zeros(num_channels)
            root_index = torch.as_tensor(root_idxs, dtype=torch.long, device=squares.device)
            squares = squares.index_add(0, root_index, contribution.to(squares.device))
            if targeted:
                targets.append(trainable_parameter(module, name))

    if squares is None:
        return None, targets
    return safe_sqrt(squares), targets


def structured_group_penalty(
    groups: Iterable,
    dependency_graph,
    ignored: Set[nn.Module],
    a: float = 1.0,
    bias: bool = False,
) -> Tuple[Optional[Tensor], List[nn.Parameter]]:
    r"""Sum the scale-normalised transformed-L1 penalty of the group norms over all groups.

    .. math::
        \mathrm{TSC}_{struct} = \sum_{\text{groups}} \frac{1}{C} \sum_{c=1}^{C}
        \rho_a\!\left(\frac{\|g_c\|_2}{s}\right),

    with :math:`s` the group's mean nonzero channel norm, see
    :func:`~prune_tscnc.constraints.normalized_transformed_l1`. Groups with no targeted
    parameter are skipped.

    Returns:
        tuple: the float32 penalty (None if no group is targeted) and the parameters that
        receive gradients, without duplicates.
    """
    total = None
    targets: List[nn.Parameter] = []
    seen = set()
    cache: Dict = {}
    for group in groups:
        with torch.autocast(device_type=_device_type(group), enabled=False):
            norms, group_targets = group_channel_norms(
                group, dependency_graph, ignored, bias, cache
            )
            if norms is None or not group_targets:
                continue
            term = normalized_transformed_l1(norms, a)
        total = term if total is None else total + term
        for parameter in group_targets:
            if id(parameter) not in seen:
                seen.add(id(parameter))
                targets.append(parameter)
    return total, targets


def _device_type(group) -> str:
    for dependency, _ in group:
        module = dependency.target.module
        if not isinstance(module, nn.Module):
            continue
        parameter = trainable_parameter(module, "weight")
        if parameter is not None:
            return parameter.device.type
    return "cpu"
