"""RREPAFPN: path-aggregation neck of relaxed rotation-equivariant convolutions."""
from typing import Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from ..layers import RREConvModule, RREFactorizedConv, group_pool
from ..layers.base import check_flat_input, check_positive_int
from ..layers.csp_layer import RRECSPLayer, factorized_module
from ..layers.rotation import check_group_order


@MODELS.register_module()
class RREPAFPN(BaseModule):
    r"""YOLOv8-style PAN neck on C_n group features (RREDet's neck) from
    `"Relaxed Rotational Equivariance via G-Biases in Vision"
    <https://arxiv.org/abs/2408.12454>`_ (Wu et al., AAAI 2025).

    The neck takes the flat group features of :class:`RRENet` with
    ``pool_outputs=False``. A top-down path upsamples with a factorised
    transposed conv, concatenates and mixes with a C2f-style layer. A
    bottom-up path does the same with stride-2 factorised convs. A factorised
    ``3 x 3`` conv maps every level to ``out_channels`` fields, and a max pool
    over the group axis makes the outputs usable by any MMDetection head.

    The upsampler is a depthwise transposed conv with ``kernel_size=3,
    stride=2, padding=1`` by default: it is the exact inverse grid of the
    backbone's stride-2 ``3 x 3`` convs on odd sizes, so the whole
    backbone + neck stays equivariant on sizes ``2^5 m + 1`` (e.g. 65, 129)
    when G-Biases are zero. A ``2 x 2`` stride-2 upsampler
    (``upsample_kernel_size=2``) shifts the grid by half a pixel, so the neck
    is then never exactly equivariant. Sizes that differ by one pixel
    (even inputs) are matched with the transposed conv's output padding.

    Args:
        in_channels (Sequence[int]): Fields per input level (not flat
            channels), e.g. ``[64, 128, 256]`` for ``RRENet(arch='n')``,
            ``[128, 256, 512]`` for ``'s'``, ``[192, 384, 576]`` for ``'m'``.
        out_channels (int): Output channels per level after group pooling.
        group_order (int): :math:`n`, one of 2, 4, 6, 8. (default: :obj:`4`)
        relaxed (bool): Learn G-Biases. (default: :obj:`True`)
        num_csp_blocks (int): Bottlenecks per C2f-style layer. (default: :obj:`1`)
        upsample_kernel_size (int): 3 or 2, see above. (default: :obj:`3`)
        pool_outputs (bool): Max-pool the outputs over the group axis;
            :obj:`False` returns flat ``[B, out_channels * n, H, W]``.
            (default: :obj:`True`)
        norm_cfg (dict): Norm config.
            (default: :obj:`dict(type='BN', momentum=0.03, eps=0.001)`)
        act_cfg (dict): Activation config. (default: :obj:`dict(type='SiLU', inplace=True)`)
        init_cfg (dict or list[dict], optional): mmengine init config.
            (default: :obj:`None`)

    Example:
        >>> import torch
        >>> from rre_mm.models import RRENet, RREPAFPN
        >>> backbone = RRENet(arch='n', pool_outputs=False).eval()
        >>> neck = RREPAFPN([64, 128, 256], out_channels=96).eval()
        >>> outputs = neck(backbone(torch.rand(1, 3, 65, 65)))
        >>> for level in outputs:
        ...     print(tuple(level.shape))
        (1, 96, 9, 9)
        (1, 96, 5, 5)
        (1, 96, 3, 3)
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, group_order: int = 4,
                 relaxed: bool = True, num_csp_blocks: int = 1, upsample_kernel_size: int = 3,
                 pool_outputs: bool = True,
                 norm_cfg: dict = dict(type='BN', momentum=0.03, eps=0.001),
                 act_cfg: Optional[dict] = dict(type='SiLU', inplace=True),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = [check_positive_int('in_channels[i]', c) for c in in_channels]
        if len(self.in_channels) < 2:
            raise ValueError(f'in_channels={in_channels!r} is invalid: give the fields of '
                             f'at least two levels, e.g. [64, 128, 256].')
        self.out_channels = check_positive_int('out_channels', out_channels)
        self.group_order = check_group_order(group_order)
        if upsample_kernel_size not in (2, 3):
            raise ValueError(f'upsample_kernel_size={upsample_kernel_size!r} is not '
                             f'supported: use 3 (grid-aligned) or 2.')
        self.pool_outputs = pool_outputs
        n, fields = group_order, self.in_channels
        blocks = dict(group_order=n, relaxed=relaxed, add_identity=False, norm_cfg=norm_cfg,
                      act_cfg=act_cfg)

        # Top-down path, from the coarsest level.
        self.upsample_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for i in range(len(fields) - 1, 0, -1):
            upsample = RREFactorizedConv(fields[i], fields[i], upsample_kernel_size, n,
                                         stride=2, relaxed=relaxed, transposed=True)
            self.upsample_layers.append(RREConvModule(upsample, norm_cfg, act_cfg))
            self.top_down_blocks.append(
                RRECSPLayer(fields[i] + fields[i - 1], fields[i - 1], num_csp_blocks,
                            **blocks))

        # Bottom-up path, from the finest level.
        self.downsample_layers = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for i in range(len(fields) - 1):
            self.downsample_layers.append(
                factorized_module(fields[i], fields[i], n, relaxed, norm_cfg, act_cfg,
                                  stride=2))
            self.bottom_up_blocks.append(
                RRECSPLayer(fields[i] + fields[i + 1], fields[i + 1], num_csp_blocks,
                            **blocks))

        self.out_convs = nn.ModuleList(
            factorized_module(c, out_channels, n, relaxed, norm_cfg, act_cfg) for c in fields)

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Map flat group features ``[B, C_l * n, H_l, W_l]`` of each level to
        ``[B, out_channels, H_l, W_l]`` (or flat ones if ``pool_outputs=False``)."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'RREPAFPN expects {len(self.in_channels)} levels, got '
                             f'{len(inputs)}: match in_channels to the backbone out_indices.')
        for level, (x, fields) in enumerate(zip(inputs, self.in_channels)):
            check_flat_input(x, fields * self.group_order, f'RREPAFPN level {level}', fields,
                             self.group_order)
        num_levels = len(inputs)

        # top-down path
        inner_outs = [inputs[-1]]
        for step, i in enumerate(range(num_levels - 1, 0, -1)):
            feat_low = inputs[i - 1]
            upsampled = self.upsample_layers[step](inner_outs[0],
                                                   output_size=feat_low.shape[-2:])
            inner_outs.insert(0, self.top_down_blocks[step](
                torch.cat([upsampled, feat_low], dim=1)))

        # bottom-up path
        outs = [inner_outs[0]]
        for i in range(num_levels - 1):
            downsampled = self.downsample_layers[i](outs[-1])
            outs.append(self.bottom_up_blocks[i](
                torch.cat([downsampled, inner_outs[i + 1]], dim=1)))

        results = []
        for out, conv in zip(outs, self.out_convs):
            out = conv(out)
            results.append(group_pool(out, self.group_order) if self.pool_outputs else out)
        return tuple(results)
