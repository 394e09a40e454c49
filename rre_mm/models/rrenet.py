"""RRENet: YOLOv8-style backbone of relaxed rotation-equivariant convolutions."""
from typing import Optional, Sequence, Tuple

from mmdet.registry import MODELS
from torch import Tensor, nn

from ..layers import RREConvModule, RRELiftingConv
from ..layers.csp_layer import RRECSPLayer, factorized_module
from ..layers.rotation import check_group_order
from ..layers.sppf import RRESPPF
from .backbone_base import RREBackboneBase, check_frozen_stages, check_out_indices


@MODELS.register_module()
class RRENet(RREBackboneBase):
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

    def _frozen_modules(self) -> list:
        return [getattr(self, name) for name in self.layers[:self.frozen_stages + 1]]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Return one tensor per level in ``out_indices``; ``x`` is ``[B, 3, H, W]``."""
        outputs = []
        for index, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if index in self.out_indices:
                outputs.append(self._level_output(x))
        return tuple(outputs)
