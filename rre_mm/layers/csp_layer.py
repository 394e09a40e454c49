"""Bottleneck and C2f-style cross-stage-partial layer built from RRE convolutions."""
from typing import Optional

import torch
from torch import Tensor, nn

from .base import check_positive_int
from .conv_module import RREConvModule
from .factorized_conv import RREFactorizedConv
from .group_conv import RREGroupConv

_DEFAULT_NORM = dict(type='BN', momentum=0.03, eps=0.001)
_DEFAULT_ACT = dict(type='SiLU', inplace=True)


def pointwise_module(in_fields: int, out_fields: int, group_order: int,
                     norm_cfg: Optional[dict], act_cfg: Optional[dict],
                     stride: int = 1) -> RREConvModule:
    """``1 x 1`` group conv (no G-Bias, nothing to relax at one pixel), norm, activation."""
    conv = RREGroupConv(in_fields, out_fields, 1, group_order, stride=stride, relaxed=False)
    return RREConvModule(conv, norm_cfg, act_cfg)


def factorized_module(in_fields: int, out_fields: int, group_order: int, relaxed: bool,
                      norm_cfg: Optional[dict], act_cfg: Optional[dict], kernel_size: int = 3,
                      stride: int = 1) -> RREConvModule:
    """:class:`RREFactorizedConv`, norm, activation."""
    conv = RREFactorizedConv(in_fields, out_fields, kernel_size, group_order, stride,
                             relaxed=relaxed)
    return RREConvModule(conv, norm_cfg, act_cfg)


class RREBottleneck(nn.Module):
    """Two factorised ``3 x 3`` RRE conv modules with an optional identity shortcut.

    Args:
        in_fields (int): Input fields.
        out_fields (int): Output fields.
        group_order (int, optional): :math:`n`. (default: :obj:`4`)
        relaxed (bool, optional): Learn G-Biases. (default: :obj:`True`)
        add_identity (bool, optional): Add the input to the output when
            ``in_fields == out_fields``. (default: :obj:`True`)
        norm_cfg (dict, optional): Norm config.
            (default: :obj:`dict(type='BN', momentum=0.03, eps=0.001)`)
        act_cfg (dict, optional): Activation config.
            (default: :obj:`dict(type='SiLU', inplace=True)`)
    """

    def __init__(self, in_fields: int, out_fields: int, group_order: int = 4,
                 relaxed: bool = True, add_identity: bool = True,
                 norm_cfg: Optional[dict] = _DEFAULT_NORM,
                 act_cfg: Optional[dict] = _DEFAULT_ACT) -> None:
        super().__init__()
        self.conv1 = factorized_module(in_fields, out_fields, group_order, relaxed, norm_cfg,
                                       act_cfg)
        self.conv2 = factorized_module(out_fields, out_fields, group_order, relaxed, norm_cfg,
                                       act_cfg)
        self.add_identity = add_identity and in_fields == out_fields

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class RRECSPLayer(nn.Module):
    r"""C2f-style cross-stage-partial layer (as in YOLOv8) on C_n group features.

    A ``1 x 1`` group conv makes ``2 * hidden`` fields, the second half runs
    through ``num_blocks`` :class:`RREBottleneck` in sequence, and every
    intermediate result is concatenated and mixed by a final ``1 x 1`` group
    conv. Splitting and concatenating whole fields keeps equivariance.

    Args:
        in_fields (int): Input fields.
        out_fields (int): Output fields.
        num_blocks (int, optional): Bottlenecks. (default: :obj:`1`)
        group_order (int, optional): :math:`n`. (default: :obj:`4`)
        relaxed (bool, optional): Learn G-Biases. (default: :obj:`True`)
        add_identity (bool, optional): Shortcuts in the bottlenecks.
            (default: :obj:`True`)
        expand_ratio (float, optional): ``hidden = int(out_fields * expand_ratio)``.
            (default: :obj:`0.5`)
        norm_cfg (dict, optional): Norm config.
            (default: :obj:`dict(type='BN', momentum=0.03, eps=0.001)`)
        act_cfg (dict, optional): Activation config.
            (default: :obj:`dict(type='SiLU', inplace=True)`)

    Shapes:
        - input: :math:`[B, C_{in} \cdot n, H, W]`
        - output: :math:`[B, C_{out} \cdot n, H, W]`
    """

    def __init__(self, in_fields: int, out_fields: int, num_blocks: int = 1,
                 group_order: int = 4, relaxed: bool = True, add_identity: bool = True,
                 expand_ratio: float = 0.5, norm_cfg: Optional[dict] = _DEFAULT_NORM,
                 act_cfg: Optional[dict] = _DEFAULT_ACT) -> None:
        super().__init__()
        check_positive_int('num_blocks', num_blocks)
        self.hidden = max(int(out_fields * expand_ratio), 1)
        self.group_order = group_order
        self.main_conv = pointwise_module(in_fields, 2 * self.hidden, group_order, norm_cfg,
                                          act_cfg)
        self.blocks = nn.ModuleList(
            RREBottleneck(self.hidden, self.hidden, group_order, relaxed, add_identity,
                          norm_cfg, act_cfg) for _ in range(num_blocks))
        self.final_conv = pointwise_module((2 + num_blocks) * self.hidden, out_fields,
                                           group_order, norm_cfg, act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.main_conv(x).split(self.hidden * self.group_order, dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.final_conv(torch.cat(parts, dim=1))
