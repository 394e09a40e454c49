"""Small RRE classifier for 32 x 32 images (CIFAR layout)."""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .base import check_positive_int
from .builders import build_activation
from .conv_module import RREConvModule
from .csp_layer import factorized_module, pointwise_module
from .lifting_conv import RRELiftingConv
from .pooling import group_pool
from .rotation import check_group_order


class RREResidualBlock(nn.Module):
    """Two factorised ``3 x 3`` RRE convs with an identity or ``1 x 1`` group-conv shortcut."""

    def __init__(self, in_fields: int, out_fields: int, stride: int, group_order: int,
                 relaxed: bool, norm_cfg: dict, act_cfg: Optional[dict]) -> None:
        super().__init__()
        self.conv1 = factorized_module(in_fields, out_fields, group_order, relaxed, norm_cfg,
                                       act_cfg, stride=stride)
        self.conv2 = factorized_module(out_fields, out_fields, group_order, relaxed,
                                       norm_cfg, None)
        self.shortcut = None
        if stride != 1 or in_fields != out_fields:
            self.shortcut = pointwise_module(in_fields, out_fields, group_order, norm_cfg,
                                             None, stride=stride)
        self.act = build_activation(act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv2(self.conv1(x)) + identity)


class RRECifarNet(nn.Module):
    r"""Classifier of relaxed rotation-equivariant convolutions for 32 x 32
    images, after the CIFAR networks of `"Relaxed Rotational Equivariance via
    G-Biases in Vision" <https://arxiv.org/abs/2408.12454>`_ (Wu et al.,
    AAAI 2025).

    Lifting ``3 x 3`` conv, four stages of residual blocks of factorised
    convs (stride 2 at the start of stages 2-4), max pool over the group
    axis, global average pool, linear layer. The logits are invariant to
    90-degree rotations of the input (C4, C8 with zero G-Biases) when every
    stride-2 layer gets an odd input size, e.g. 33 x 33 or 65 x 65.

    Widths and blocks per stage: ``'n'`` [16, 32, 64, 128] x [1, 2, 2, 1],
    ``'s'`` [32, 64, 128, 256] x [1, 2, 2, 1], ``'m'`` [48, 96, 192, 384] x
    [2, 4, 4, 2]. With C4 and 100 classes ``'n'`` has 261,012 parameters of
    which 24,768 are G-Biases (236,244 without).

    .. note::
        The paper reports 663,796 parameters for its C4 ``'n'`` net (625,012
        without G-Biases, so 38,784 G-Bias entries). 38,784 is not a multiple
        of :math:`n k^2 = 36`, so the paper's net holds G-Biases that are not
        ``3 x 3`` filters per field and group element, and its exact block
        structure is not reproduced here (this one has about 2.5 times fewer
        weights).

    Args:
        arch (str, optional): ``'n'``, ``'s'`` or ``'m'``. (default: :obj:`'n'`)
        num_classes (int, optional): Output classes. (default: :obj:`100`)
        group_order (int, optional): :math:`n`, one of 2, 4, 6, 8. (default: :obj:`4`)
        relaxed (bool, optional): Learn G-Biases. (default: :obj:`True`)
        norm_cfg (dict, optional): Norm config. (default: :obj:`dict(type='BN')`)
        act_cfg (dict, optional): Activation config.
            (default: :obj:`dict(type='ReLU', inplace=True)`)

    Shapes:
        - input: :math:`[B, 3, H, W]`
        - output: :math:`[B, \text{num\_classes}]`
    """

    # Columns: fields per stage, residual blocks per stage.
    arch_settings = {
        'n': ([16, 32, 64, 128], [1, 2, 2, 1]),
        's': ([32, 64, 128, 256], [1, 2, 2, 1]),
        'm': ([48, 96, 192, 384], [2, 4, 4, 2]),
    }

    def __init__(self, arch: str = 'n', num_classes: int = 100, group_order: int = 4,
                 relaxed: bool = True, norm_cfg: dict = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU', inplace=True)) -> None:
        super().__init__()
        if arch not in self.arch_settings:
            raise ValueError(f'arch={arch!r} is not supported: use one of '
                             f'{sorted(self.arch_settings)}.')
        check_positive_int('num_classes', num_classes)
        self.group_order = check_group_order(group_order)
        widths, blocks = self.arch_settings[arch]

        self.stem = RREConvModule(RRELiftingConv(3, widths[0], 3, group_order,
                                                 relaxed=relaxed), norm_cfg, act_cfg)
        stages = []
        in_fields = widths[0]
        for index, (fields, num_blocks) in enumerate(zip(widths, blocks)):
            for block_index in range(num_blocks):
                stride = 2 if index > 0 and block_index == 0 else 1
                stages.append(RREResidualBlock(in_fields, fields, stride, group_order,
                                               relaxed, norm_cfg, act_cfg))
                in_fields = fields
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(in_fields, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = group_pool(self.stages(self.stem(x)), self.group_order)
        return self.classifier(F.adaptive_avg_pool2d(features, 1).flatten(1))
