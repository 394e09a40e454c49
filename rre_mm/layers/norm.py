"""Batch normalisation of C_n group features with statistics shared over the group."""
from typing import Optional

import torch
from torch import Tensor, nn

from .base import check_flat_input, check_positive_int
from .builders import build_norm
from .rotation import check_group_order


class GroupBatchNorm(nn.Module):
    r"""Batch norm of group features ``[B, C * n, H, W]`` with one mean,
    variance, scale and shift per field :math:`c`, shared by the :math:`n`
    group elements, so it commutes with rotations and group shifts:

    .. math::
        y_{c,r} = \gamma_c \frac{x_{c,r} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c,

    with :math:`\mu_c, \sigma_c^2` taken over batch, group axis and space.

    The features are viewed as ``[B, C, n * H, W]`` and passed to the 2-D norm
    built from ``norm_cfg`` (attribute ``bn``). That child is a standard
    ``nn.BatchNorm2d``, so ``nn.SyncBatchNorm.convert_sync_batchnorm`` and
    mmengine's ``revert_sync_batchnorm`` convert it like any other.

    Args:
        fields (int): Fields :math:`C`.
        group_order (int, optional): :math:`n`. (default: :obj:`4`)
        norm_cfg (dict, optional): Norm config, see :func:`build_norm`.
            (default: :obj:`dict(type='BN')`)

    Shapes:
        - input: :math:`[B, C \cdot n, H, W]`
        - output: same as input.
    """

    def __init__(self, fields: int, group_order: int = 4,
                 norm_cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.fields = check_positive_int('fields', fields)
        self.group_order = check_group_order(group_order)
        self.bn = build_norm(norm_cfg if norm_cfg is not None else dict(type='BN'), fields)

    def forward(self, x: Tensor) -> Tensor:
        check_flat_input(x, self.fields * self.group_order, type(self).__name__,
                         self.fields, self.group_order)
        batch, _, height, width = x.shape
        out = self.bn(x.reshape(batch, self.fields, self.group_order * height, width))
        return out.reshape(batch, self.fields * self.group_order, height, width)

    def to_plain(self) -> nn.BatchNorm2d:
        """Return an eval-mode ``nn.BatchNorm2d`` over ``C * n`` channels with the
        statistics repeated over the group axis (identical output in eval mode)."""
        bn, n = self.bn, self.group_order
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_mean is None:
            raise ValueError(f'{type(bn).__name__} without running statistics cannot be '
                             f'turned into a plain BatchNorm2d: use a batch norm with '
                             f'track_running_stats=True.')
        plain = nn.BatchNorm2d(self.fields * n, eps=bn.eps, affine=True,
                               device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        with torch.no_grad():
            plain.running_mean.copy_(bn.running_mean.repeat_interleave(n))
            plain.running_var.copy_(bn.running_var.repeat_interleave(n))
            if bn.affine:
                plain.weight.copy_(bn.weight.repeat_interleave(n))
                plain.bias.copy_(bn.bias.repeat_interleave(n))
        return plain.eval()

    def extra_repr(self) -> str:
        return f'fields={self.fields}, group_order={self.group_order}'
