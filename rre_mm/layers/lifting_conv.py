"""Lifting convolution: image to C_n group features."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RREConvBase, check_flat_input, check_positive_int


class RRELiftingConv(RREConvBase):
    r"""Relaxed rotation-equivariant lifting convolution from
    `"Relaxed Rotational Equivariance via G-Biases in Vision"
    <https://arxiv.org/abs/2408.12454>`_ (Wu et al., AAAI 2025).

    Maps an image to features on :math:`\mathbb{Z}^2 \rtimes C_n`, one map per
    output field :math:`o` and group element :math:`r`:

    .. math::
        y_{o,r} = \sum_c \left(R_r W_{o,c} + B_{o,r}\right) \star x_c,

    where :math:`R_r` rotates a filter by :math:`2 \pi r / n` and the G-Bias
    :math:`B_{o,r}` (a ``k x k`` filter, shared by the input channels) is
    zero at initialisation. With :math:`L_s` the rotation of a map by
    :math:`s` group elements (:math:`s = n/4` is 90 degrees),

    .. math::
        y(L_s x)_r - L_s\, y(x)_{r-s}
        = L_s \Big[\sum_c \left(R_{-s} B_{o,r} - B_{o,r-s}\right) \star x_c\Big],

    which is zero for :math:`B = 0` (strict equivariance) or
    :math:`B_{o,r} = R_r B_{o,0}`, and linear in :math:`B`. The identity is
    exact for stride 1 and odd ``kernel_size`` with ``padding = k // 2`` and
    the rotations that :func:`torch.rot90` performs (C2, C4, and the
    90-degree subgroup of C8). Strided layers keep it only when the sampling
    grid is symmetric (odd input sizes for stride 2).

    Args:
        in_channels (int): Image channels :math:`C_{in}`.
        out_fields (int): Output fields :math:`C_{out}`; the output has
            ``out_fields * group_order`` channels.
        kernel_size (int, optional): Filter size :math:`k`. (default: :obj:`3`)
        group_order (int, optional): :math:`n`, one of 2, 4, 6, 8. (default: :obj:`4`)
        stride (int, optional): Stride. (default: :obj:`1`)
        padding (int, optional): Zero padding; :obj:`None` means ``k // 2``.
            (default: :obj:`None`)
        bias (bool, optional): Add a bias per output field. (default: :obj:`False`)
        relaxed (bool, optional): Learn G-Biases. :obj:`False` builds the strict
            group convolution with no G-Bias parameter. (default: :obj:`True`)

    Shapes:
        - input: :math:`[B, C_{in}, H, W]`
        - output: :math:`[B, C_{out} \cdot n, H', W']`, channel ``o * n + r``.
    """

    def __init__(self, in_channels: int, out_fields: int, kernel_size: int = 3,
                 group_order: int = 4, stride: int = 1, padding: Optional[int] = None,
                 bias: bool = False, relaxed: bool = True) -> None:
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(group_order, kernel_size, stride, padding, relaxed)
        self.in_channels = check_positive_int('in_channels', in_channels)
        self.out_fields = check_positive_int('out_fields', out_fields)
        k, n = kernel_size, group_order
        self.weight = nn.Parameter(torch.empty(out_fields, in_channels, k, k))
        self.g_bias = nn.Parameter(torch.zeros(out_fields, n, k, k)) if self.relaxed else None
        self.bias = nn.Parameter(torch.zeros(out_fields)) if bias else None

        # Index into W[o].reshape(-1) for every (r, c, pixel), in the order of
        # the expanded weight.
        channel = torch.arange(in_channels).view(1, in_channels, 1)
        index = channel * (k * k) + self.rotation_index.view(n, 1, k * k)
        self.register_buffer('expansion_index', index.reshape(-1), persistent=False)
        self.reset_parameters()

    @property
    def out_channels(self) -> int:
        return self.out_fields * self.group_order

    def expand_weight(self) -> Tensor:
        """Return the ``[C_out * n, C_in, k, k]`` filter bank."""
        c_out, c_in, k, _ = self.weight.shape
        n = self.group_order
        rotated = self.weight.reshape(c_out, -1).index_select(1, self.expansion_index)
        rotated = rotated.view(c_out, n, c_in, k * k)
        if self.g_bias is not None:
            rotated = rotated + self.g_bias.view(c_out, n, 1, k * k)
        return rotated.reshape(c_out * n, c_in, k, k)

    def _check_input(self, x: Tensor) -> None:
        check_flat_input(x, self.in_channels, type(self).__name__, None, None)

    def _convolve(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f'{self.in_channels}, {self.out_fields}, ' + super().extra_repr()
