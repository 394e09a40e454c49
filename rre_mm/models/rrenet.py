"""RRENet: YOLOv8-style backbone of relaxed rotation-equivariant convolutions."""
import math
from typing import Optional, Sequence, Tuple

from mmdet.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import RREConvModule, RRELiftingConv, group_pool
from ..layers.csp_layer import RRECSPLayer, factorized_module
from ..layers.rotation import check_group_order
from ..layers.sppf import RRESPPF


def check_out_indices(out_indices: Sequence[int], num_levels: int) -> Tuple[int, ...]:
    """Raise ``ValueError`` unless every index is in ``[0, num_levels)``."""
    indices = tuple(out_indices)
    if not indices or any(not isinstance(i, int) or not 0 <= i < num_levels
                          for i in indices):
        raise ValueError(f'out_indices={out_indices!r} is invalid: use ints in '
                         f'[0, {num_levels - 1}], e.g. (2, 3, 4).')
    return indices


def check_frozen_stages(frozen_stages: int, num_levels: int) -> int:
    """Raise ``ValueError`` unless ``-1 <= frozen_stages < num_levels``."""
    if not isinstance(frozen_stages, int) or not -1 <= frozen_stages < num_levels:
        raise ValueError(f'frozen_stages={frozen_stages!r} is invalid: use -1 (train all) '
                         f'up to {num_levels - 1}.')
    return frozen_stages


@MODELS.register_module()
class RRENet(BaseModule):
    r"""YOLOv8-style backbone of relaxed rotation-equivariant convolutions
    (RREDet's backbone) from `"Relaxed Rotational Equivariance via G-Biases
    in Vision" <https://arxiv.org/abs/2408.12454>`_ (Wu et al., AAAI 2025).

    A lifting ``3 x 3`` stride-2 stem, then four stages of a stride-2
    :class:`~rre_mm.layers.RREFactorizedConv` and a C2f-style
    :class:`~rre_mm.layers.csp_layer.RRECSPLayer`; the last stage ends with an
    SPPF on group features. With G-Biases at zero (or ``relaxed=False``) the
    network is equivariant to 90-degree rotations on input sizes where every
    stride-2 layer gets an odd input size (``H = W = 2^5 m + 1``, e.g. 65, 129):

    .. math::
        f_\ell(\mathrm{rot90}(x)) = L_{n/4}\, f_\ell(x)

    for each level :math:`\ell`, where :math:`L_s` rotates the maps and rolls
    the group axis by :math:`s` (the pooled outputs are just rotated). On
    other sizes the error is small but not zero.

    Output fields per level (``widen_factor=1``): stem, stage 1..4

    - ``'n'``: 16, 32, 64, 128, 256 (``out_indices=(2, 3, 4)`` gives 64, 128, 256)
    - ``'s'``: 32, 64, 128, 256, 512 (128, 256, 512)
    - ``'m'``: 48, 96, 192, 384, 576 (192, 384, 576)

    Args:
        arch (str): ``'n'``, ``'s'`` or ``'m'``. (default: :obj:`'n'`)
        group_order (int): :math:`n`, one of 2, 4, 6, 8. (default: :obj:`4`)
        relaxed (bool): Learn G-Biases. :obj:`False` is the strict baseline
            without G-Bias parameters. (default: :obj:`True`)
        widen_factor (float): Multiplies the fields of every level.
            (default: :obj:`1.0`)
        deepen_factor (float): Multiplies the bottlenecks per stage.
            (default: :obj:`1.0`)
        out_indices (Sequence[int]): Levels to return, 0 is the stem.
            (default: :obj:`(2, 3, 4)`)
        frozen_stages (int): Freeze levels ``0..frozen_stages`` (parameters
            and norm statistics); -1 freezes nothing. (default: :obj:`-1`)
        norm_eval (bool): Keep every batch norm in eval mode while training.
            (default: :obj:`False`)
        pool_outputs (bool): Max-pool over the group axis, returning
            ``[B, C, H, W]`` for plain necks such as ``CSPNeXtPAFPN``.
            :obj:`False` returns flat group features ``[B, C * n, H, W]`` for
            :class:`RREPAFPN`. (default: :obj:`True`)
        norm_cfg (dict): Norm config. (default:
            :obj:`dict(type='BN', momentum=0.03, eps=0.001)`)
        act_cfg (dict): Activation config. (default:
            :obj:`dict(type='SiLU', inplace=True)`)
        init_cfg (dict or list[dict], optional): mmengine init config, e.g.
            ``dict(type='Pretrained', checkpoint=path, prefix='backbone.')``.
            (default: :obj:`None`, PyTorch's default initialisation)

    Example:
        >>> import torch
        >>> from rre_mm.models import RRENet
        >>> model = RRENet(arch='n').eval()
        >>> outputs = model(torch.rand(1, 3, 65, 65))
        >>> for level in outputs:
        ...     print(tuple(level.shape))
        (1, 64, 9, 9)
        (1, 128, 5, 5)
        (1, 256, 3, 3)
    """

    # Columns: in_fields, out_fields, num_blocks, add_identity, use_sppf.
    arch_settings = {
        'n': [[16, 32, 1, True, False], [32, 64, 2, True, False],
              [64, 128, 2, True, False], [128, 256, 1, True, True]],
        's': [[32, 64, 1, True, False], [64, 128, 2, True, False],
              [128, 256, 2, True, False], [256, 512, 1, True, True]],
        'm': [[48, 96, 2, True, False], [96, 192, 4, True, False],
              [192, 384, 4, True, False], [384, 576, 2, True, True]],
    }

    def __init__(self, arch: str = 'n', group_order: int = 4, relaxed: bool = True,
                 widen_factor: float = 1.0, deepen_factor: float = 1.0,
                 out_indices: Sequence[int] = (2, 3, 4), frozen_stages: int = -1,
                 norm_eval: bool = False, pool_outputs: bool = True,
                 norm_cfg: dict = dict(type='BN', momentum=0.03, eps=0.001),
                 act_cfg: Optional[dict] = dict(type='SiLU', inplace=True),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if arch not in self.arch_settings:
            raise ValueError(f'arch={arch!r} is not supported: use one of '
                             f'{sorted(self.arch_settings)}.')
        for name, value in (('widen_factor', widen_factor), ('deepen_factor', deepen_factor)):
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f'{name}={value!r} is invalid: use a positive number.')
        self.group_order = check_group_order(group_order)
        setting = self.arch_settings[arch]
        self.out_indices = check_out_indices(out_indices, len(setting) + 1)
        self.frozen_stages = check_frozen_stages(frozen_stages, len(setting) + 1)
        self.norm_eval = norm_eval
        self.pool_outputs = pool_outputs

        def widen(fields: int) -> int:
            return max(int(fields * widen_factor), 1)

        stem_fields = widen(setting[0][0])
        self.stem = RREConvModule(
            RRELiftingConv(3, stem_fields, 3, group_order, stride=2, relaxed=relaxed),
            norm_cfg, act_cfg)
        self.out_fields = [stem_fields]
        self.layers = ['stem']
        for index, (in_fields, out_fields, num_blocks, add_identity, use_sppf) in \
                enumerate(setting):
            in_fields, out_fields = widen(in_fields), widen(out_fields)
            num_blocks = max(round(num_blocks * deepen_factor), 1)
            stage = [
                factorized_module(in_fields, out_fields, group_order, relaxed, norm_cfg,
                                  act_cfg, stride=2),
                RRECSPLayer(out_fields, out_fields, num_blocks, group_order, relaxed,
                            add_identity, norm_cfg=norm_cfg, act_cfg=act_cfg),
            ]
            if use_sppf:
                stage.append(RRESPPF(out_fields, out_fields, group_order, 5, norm_cfg,
                                     act_cfg))
            self.add_module(f'stage{index + 1}', nn.Sequential(*stage))
            self.layers.append(f'stage{index + 1}')
            self.out_fields.append(out_fields)

        self._freeze_stages()

    @property
    def out_channels(self) -> list:
        """Channels of each returned level, as a neck's ``in_channels`` needs them."""
        scale = 1 if self.pool_outputs else self.group_order
        return [self.out_fields[i] * scale for i in self.out_indices]

    def _freeze_stages(self) -> None:
        for index in range(self.frozen_stages + 1):
            layer = getattr(self, self.layers[index])
            layer.eval()
            for param in layer.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'RRENet':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return one tensor per level in ``out_indices``; ``x`` is ``[B, 3, H, W]``."""
        outputs = []
        for index, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if index in self.out_indices:
                outputs.append(group_pool(x, self.group_order) if self.pool_outputs else x)
        return tuple(outputs)
