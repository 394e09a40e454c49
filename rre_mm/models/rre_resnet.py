"""RREResNet: ResNet-style backbone of relaxed rotation-equivariant convolutions."""
from typing import Optional, Sequence, Tuple

import torch.nn.functional as F
from mmdet.registry import MODELS
from torch import Tensor, nn

from ..layers import RREConvModule, RRELiftingConv
from ..layers.base import check_positive_int
from ..layers.builders import build_activation
from ..layers.csp_layer import factorized_module, pointwise_module
from ..layers.rotation import check_group_order
from .backbone_base import RREBackboneBase, check_frozen_stages, check_out_indices


class RREBasicBlock(nn.Module):
    """Two factorised ``3 x 3`` RRE convs with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_fields: int, fields: int, stride: int, group_order: int,
                 relaxed: bool, norm_cfg: dict, act_cfg: dict) -> None:
        super().__init__()
        out_fields = fields * self.expansion
        self.conv1 = factorized_module(in_fields, fields, group_order, relaxed, norm_cfg,
                                       act_cfg, stride=stride)
        self.conv2 = factorized_module(fields, out_fields, group_order, relaxed, norm_cfg,
                                       None)
        self.downsample = None
        if stride != 1 or in_fields != out_fields:
            self.downsample = pointwise_module(in_fields, out_fields, group_order, norm_cfg,
                                               None, stride=stride)
        self.act = build_activation(act_cfg)

    def residual(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.act(self.residual(x) + identity)


class RREBottleneckBlock(RREBasicBlock):
    """``1 x 1``, factorised ``3 x 3``, ``1 x 1`` RRE convs with a residual (ResNet-50)."""

    expansion = 4

    def __init__(self, in_fields: int, fields: int, stride: int, group_order: int,
                 relaxed: bool, norm_cfg: dict, act_cfg: dict) -> None:
        super().__init__(in_fields, fields, stride, group_order, relaxed, norm_cfg, act_cfg)
        self.conv1 = pointwise_module(in_fields, fields, group_order, norm_cfg, act_cfg)
        self.conv2 = factorized_module(fields, fields, group_order, relaxed, norm_cfg,
                                       act_cfg, stride=stride)
        self.conv3 = pointwise_module(fields, fields * self.expansion, group_order, norm_cfg,
                                      None)

    def residual(self, x: Tensor) -> Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


@MODELS.register_module()
class RREResNet(RREBackboneBase):
    r"""ResNet-style backbone of relaxed rotation-equivariant convolutions.

    Built from the layers of `"Relaxed Rotational Equivariance via G-Biases in
    Vision" <https://arxiv.org/abs/2408.12454>`_ (Wu et al., AAAI 2025) in the
    layout of ResNet: a lifting ``7 x 7`` stride-2 stem, ``3 x 3`` stride-2
    max pool, then four residual stages whose ``3 x 3`` convs are
    :class:`~rre_mm.layers.RREFactorizedConv` and whose ``1 x 1`` convs are
    group convs. Outputs are max-pooled over the group axis, so the module
    replaces ``ResNet`` in configs written for ResNet + FPN. With G-Biases at
    zero it is exactly equivariant to 90-degree rotations (C4, C8) on sizes
    ``2^5 m + 1``: :math:`f_\ell(\mathrm{rot90}(x)) = \mathrm{rot90}(f_\ell(x))`.

    The default ``base_channels`` keeps the parameter count near the plain
    ResNet of the same depth. Counted with C4 and G-Biases: depth 18 with 88
    fields has 10.8 M (ResNet-18 without classifier: 11.2 M), depth 34 with
    88 fields has 19.5 M (21.3 M), and depth 50 with 40 fields has 21.1 M
    (23.5 M). A factorised
    ``3 x 3`` conv costs about :math:`n/9` of a dense one of the same fields,
    but the ``1 x 1`` group convs cost :math:`n` times a plain ``1 x 1``, which
    is why depth 50 needs far fewer fields. Activations, and so FLOPs, are
    :math:`n` times those of a plain net of the same fields. Output fields
    per stage are ``base_channels * 2^i * expansion`` (``expansion`` 1 for
    depths 18 and 34, 4 for 50); read them from :attr:`out_channels`.

    Args:
        depth (int): 18, 34 or 50. (default: :obj:`18`)
        group_order (int): :math:`n`, one of 2, 4, 6, 8. (default: :obj:`4`)
        relaxed (bool): Learn G-Biases. (default: :obj:`True`)
        base_channels (int, optional): Fields of the stem and the first
            stage; :obj:`None` takes 88 for depths 18 and 34 and 40 for 50.
            (default: :obj:`None`)
        out_indices (Sequence[int]): Stages to return. (default: :obj:`(0, 1, 2, 3)`)
        frozen_stages (int): -1 freezes nothing, 0 the stem, ``i`` the stem
            and stages ``1..i``. (default: :obj:`-1`)
        norm_eval (bool): Keep batch norms in eval mode while training.
            (default: :obj:`True`)
        pool_outputs (bool): Max-pool over the group axis. (default: :obj:`True`)
        norm_cfg (dict): Norm config. (default: :obj:`dict(type='BN')`)
        act_cfg (dict): Activation config. (default: :obj:`dict(type='ReLU', inplace=True)`)
        init_cfg (dict or list[dict], optional): mmengine init config.
            (default: :obj:`None`)

    Example:
        >>> import torch
        >>> from rre_mm.models import RREResNet
        >>> model = RREResNet(depth=18, base_channels=16).eval()
        >>> for level in model(torch.rand(1, 3, 65, 65)):
        ...     print(tuple(level.shape))
        (1, 16, 17, 17)
        (1, 32, 9, 9)
        (1, 64, 5, 5)
        (1, 128, 3, 3)
    """

    default_base_channels = {18: 88, 34: 88, 50: 40}

    # Columns: block type, blocks per stage.
    arch_settings = {
        18: (RREBasicBlock, (2, 2, 2, 2)),
        34: (RREBasicBlock, (3, 4, 6, 3)),
        50: (RREBottleneckBlock, (3, 4, 6, 3)),
    }

    def __init__(self, depth: int = 18, group_order: int = 4, relaxed: bool = True,
                 base_channels: Optional[int] = None, out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = True, pool_outputs: bool = True,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU', inplace=True),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'depth={depth!r} is not supported: use one of '
                             f'{sorted(self.arch_settings)}.')
        self.group_order = check_group_order(group_order)
        if base_channels is None:
            base_channels = self.default_base_channels[depth]
        check_positive_int('base_channels', base_channels)
        block, stage_blocks = self.arch_settings[depth]
        self.out_indices = check_out_indices(out_indices, len(stage_blocks))
        self.frozen_stages = check_frozen_stages(frozen_stages, len(stage_blocks) + 1)
        self.norm_eval = norm_eval
        self.pool_outputs = pool_outputs

        self.stem = RREConvModule(
            RRELiftingConv(3, base_channels, 7, group_order, stride=2, relaxed=relaxed),
            norm_cfg, act_cfg)
        in_fields = base_channels
        self.res_layers = []
        self.out_fields = []
        for index, num_blocks in enumerate(stage_blocks):
            fields = base_channels * 2 ** index
            stride = 1 if index == 0 else 2
            layers = []
            for block_index in range(num_blocks):
                layers.append(block(in_fields, fields, stride if block_index == 0 else 1,
                                    group_order, relaxed, norm_cfg, act_cfg))
                in_fields = fields * block.expansion
            self.add_module(f'layer{index + 1}', nn.Sequential(*layers))
            self.res_layers.append(f'layer{index + 1}')
            self.out_fields.append(in_fields)

        self._freeze_stages()

    def _frozen_modules(self) -> list:
        if self.frozen_stages < 0:
            return []
        return [self.stem] + [getattr(self, name)
                              for name in self.res_layers[:self.frozen_stages]]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return one tensor per stage in ``out_indices``; ``x`` is ``[B, 3, H, W]``."""
        x = F.max_pool2d(self.stem(x), 3, 2, 1)
        outputs = []
        for index, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if index in self.out_indices:
                outputs.append(self._level_output(x))
        return tuple(outputs)
