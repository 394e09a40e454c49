"""Spatial pyramid pooling (fast) on C_n group features."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .csp_layer import _DEFAULT_ACT, _DEFAULT_NORM, pointwise_module


class RRESPPF(nn.Module):
    r"""SPPF of YOLOv5/v8 on group features: ``1 x 1`` group conv, three
    chained ``k x k`` max pools (stride 1), concatenation, ``1 x 1`` group conv.

    Max pooling acts on each map :math:`(c, r)` alone with a square window, so
    it commutes with rotating the maps and rolling the group axis: the layer
    is exactly equivariant for every input size.

    Args:
        in_fields (int): Input fields.
        out_fields (int): Output fields.
        group_order (int, optional): :math:`n`. (default: :obj:`4`)
        kernel_size (int, optional): Odd max-pool window. (default: :obj:`5`)
        norm_cfg (dict, optional): Norm config.
            (default: :obj:`dict(type='BN', momentum=0.03, eps=0.001)`)
        act_cfg (dict, optional): Activation config.
            (default: :obj:`dict(type='SiLU', inplace=True)`)
    """

    def __init__(self, in_fields: int, out_fields: int, group_order: int = 4,
                 kernel_size: int = 5, norm_cfg: Optional[dict] = _DEFAULT_NORM,
                 act_cfg: Optional[dict] = _DEFAULT_ACT) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size={kernel_size!r} is invalid: use an odd positive '
                             f'int so the pooling window is centred.')
        hidden = max(in_fields // 2, 1)
        self.kernel_size = kernel_size
        self.conv1 = pointwise_module(in_fields, hidden, group_order, norm_cfg, act_cfg)
        self.conv2 = pointwise_module(4 * hidden, out_fields, group_order, norm_cfg, act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        parts = [self.conv1(x)]
        for _ in range(3):
            parts.append(F.max_pool2d(parts[-1], self.kernel_size, 1, self.kernel_size // 2))
        return self.conv2(torch.cat(parts, dim=1))
