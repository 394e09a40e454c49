"""Full group convolution: C_n group features to C_n group features."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RREConvBase, check_flat_input, check_positive_int


class RREGroupConv(RREConvBase):
    r"""Relaxed rotation-equivariant group convolution from
    `"Relaxed Rotational Equivariance via G-Biases in Vision"
    <https://arxiv.org/abs/2408.12454>`_ (Wu et al., AAAI 2025).

    Each output element :math:`r` uses the filter rotated by :math:`R_r` and
    cyclically shifted along the input group axis, plus a G-Bias:

    .. math::
        K_r[o, c, j] = R_r W[o, c, (j - r) \bmod n] + B_{o,r}, \qquad
        y_{o,r} = \sum_{c,j} K_r[o, c, j] \star x_{c,j}.

    The G-Bias :math:`B_{o,r}` is one ``k x k`` filter per output field and
    element, shared by every input channel and element, zero at
    initialisation. For :math:`L_s` (rotate maps by :math:`s` elements and roll
    the group axis by :math:`s`),

    .. math::
        y(L_s x)_{o,r} - (L_s\, y(x))_{o,r}
        = L_s \Big[\sum_{c,j} \left(R_{-s} B_{o,r} - B_{o,r-s}\right)
          \star x_{c,j}\Big],

    zero for :math:`B = 0` and linear in :math:`B`. Exactness conditions are
    those of :class:`RRELiftingConv`. With ``kernel_size=1`` and
    ``relaxed=False`` this is the pointwise group convolution of
    :class:`RREFactorizedConv`.

    Args:
        in_fields (int): Input fields :math:`C_{in}` (``in_fields * n`` channels).
        out_fields (int): Output fields :math:`C_{out}`.
        kernel_size (int, optional): Filter size :math:`k`. (default: :obj:`3`)
        group_order (int, optional): :math:`n`, one of 2, 4, 6, 8. (default: :obj:`4`)
        stride (int, optional): Stride. (default: :obj:`1`)
        padding (int, optional): Zero padding; :obj:`None` means ``k // 2``.
            (default: :obj:`None`)
        bias (bool, optional): Add a bias per output field. (default: :obj:`False`)
        relaxed (bool, optional): Learn G-Biases; :obj:`False` has no G-Bias
            parameter. (default: :obj:`True`)

    Shapes:
        - input: :math:`[B, C_{in} \cdot n, H, W]`, channel ``c * n + j``.
        - output: :math:`[B, C_{out} \cdot n, H', W']`.
    """

    def __init__(self, in_fields: int, out_fields: int, kernel_size: int = 3,
                 group_order: int = 4, stride: int = 1, padding: Optional[int] = None,
                 bias: bool = False, relaxed: bool = True) -> None:
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(group_order, kernel_size, stride, padding, relaxed)
        self.in_fields = check_positive_int('in_fields', in_fields)
        self.out_fields = check_positive_int('out_fields', out_fields)
        k, n = kernel_size, group_order
        self.weight = nn.Parameter(torch.empty(out_fields, in_fields, n, k, k))
        self.g_bias = nn.Parameter(torch.zeros(out_fields, n, k, k)) if self.relaxed else None
        self.bias = nn.Parameter(torch.zeros(out_fields)) if bias else None

        # Index into W[o].reshape(-1) for every (r, c, j, pixel), in the order of
        # the expanded weight, so a single index_select along dim 1 builds it.
        # Its size, n * C_in * n * k * k, does not grow with C_out.
        r = torch.arange(n).view(n, 1, 1, 1)
        c = torch.arange(in_fields).view(1, in_fields, 1, 1)
        j = torch.arange(n).view(1, 1, n, 1)
        pixel = self.rotation_index.view(n, 1, 1, k * k)
        index = c * (n * k * k) + ((j - r) % n) * (k * k) + pixel
        self.register_buffer('expansion_index', index.reshape(-1), persistent=False)
        self.reset_parameters()

    @property
    def in_channels(self) -> int:
        return self.in_fields * self.group_order

    @property
    def out_channels(self) -> int:
        return self.out_fields * self.group_order

    def expand_weight(self) -> Tensor:
        """Return the ``[C_out * n, C_in * n, k, k]`` filter bank."""
        c_out, c_in, n, k, _ = self.weight.shape
        expanded = self.weight.reshape(c_out, -1).index_select(1, self.expansion_index)
        if self.g_bias is not None:
            expanded = (expanded.view(c_out, n, c_in, n, k * k)
                        + self.g_bias.view(c_out, n, 1, 1, k * k))
        return expanded.reshape(c_out * n, c_in * n, k, k)

    def _check_input(self, x: Tensor) -> None:
        check_flat_input(x, self.in_channels, type(self).__name__, self.in_fields,
                         self.group_order)

    def _convolve(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f'{self.in_fields}, {self.out_fields}, ' + super().extra_repr()
