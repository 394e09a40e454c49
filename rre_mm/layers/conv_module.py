"""Conv, group batch norm and activation as one module, with batch-norm folding."""
from typing import Optional

import torch
from torch import Tensor, nn

from .builders import build_activation
from .norm import GroupBatchNorm


def fold_batch_norm(conv: nn.Module, norm: GroupBatchNorm) -> nn.Module:
    """Fold an eval-mode :class:`GroupBatchNorm` into the plain ``conv`` in place.

    ``conv`` is an ``nn.Conv2d`` or ``nn.ConvTranspose2d`` whose output
    channel ``c * n + r`` belongs to field ``c``.
    """
    bn, n = norm.bn, norm.group_order
    if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_var is None:
        raise ValueError(f'{type(bn).__name__} cannot be folded into a convolution: only '
                         f'batch norms with running statistics can (norm_cfg type BN or '
                         f'SyncBN).')
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.affine:
            shift = shift + bn.bias
        scale = scale.repeat_interleave(n).to(conv.weight.dtype)
        shift = shift.repeat_interleave(n).to(conv.weight.dtype)

        if isinstance(conv, nn.ConvTranspose2d):
            groups = conv.groups
            weight = conv.weight.view(groups, conv.in_channels // groups,
                                      conv.out_channels // groups, *conv.kernel_size)
            weight.mul_(scale.view(groups, 1, -1, 1, 1))
        else:
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(shift.clone())
        else:
            conv.bias.mul_(scale).add_(shift)
    return conv


class RREConvModule(nn.Module):
    r"""An RRE convolution followed by :class:`GroupBatchNorm` and an activation.

    The norm and the pointwise activation commute with rotations and group
    shifts, so the module is as equivariant as its convolution.
    :meth:`switch_to_deploy` replaces the convolution by plain
    ``nn.Conv2d``/``nn.ConvTranspose2d`` layers with the batch norm folded in.

    Args:
        conv (nn.Module): An RRE convolution with ``out_fields`` (or
            ``fields``), ``group_order`` and ``to_plain()``.
        norm_cfg (dict, optional): Norm config; :obj:`None` for no norm.
            (default: :obj:`dict(type='BN', momentum=0.03, eps=0.001)`)
        act_cfg (dict, optional): Activation config; :obj:`None` for none.
            (default: :obj:`dict(type='SiLU', inplace=True)`)

    Shapes:
        - input: as ``conv``; output: ``[B, out_fields * n, H', W']``.
    """

    def __init__(self, conv: nn.Module,
                 norm_cfg: Optional[dict] = dict(type='BN', momentum=0.03, eps=0.001),
                 act_cfg: Optional[dict] = dict(type='SiLU', inplace=True)) -> None:
        super().__init__()
        self.conv = conv
        self.out_fields = getattr(conv, 'out_fields', getattr(conv, 'fields', None))
        self.group_order = conv.group_order
        self.norm = (GroupBatchNorm(self.out_fields, self.group_order, norm_cfg)
                     if norm_cfg is not None else None)
        self.act = build_activation(act_cfg)
        self.deployed = False

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        x = self.conv(x, **kwargs)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x)

    def switch_to_deploy(self) -> None:
        """Replace conv and norm by plain convolutions with the norm folded in."""
        if self.deployed:
            return
        plain = self.conv.to_plain()
        if self.norm is not None:
            last = plain[-1] if isinstance(plain, nn.Sequential) else plain
            fold_batch_norm(last, self.norm)
            self.norm = None
        self.conv = plain
        self.deployed = True
