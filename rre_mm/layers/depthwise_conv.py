"""Depthwise convolution on C_n group features, and its transposed version."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import RREConvBase, check_flat_input, check_positive_int


class RREDepthwiseConv(RREConvBase):
    r"""Relaxed rotation-equivariant depthwise convolution from
    `"Relaxed Rotational Equivariance via G-Biases in Vision"
    <https://arxiv.org/abs/2408.12454>`_ (Wu et al., AAAI 2025).

    Every map :math:`(c, r)` is filtered on its own (``groups = C * n``) by
    the rotated shared filter :math:`D_c` plus a G-Bias:

    .. math::
        y_{c,r} = \left(R_r D_c + B_{c,r}\right) \star x_{c,r}.

    For :math:`L_s` (rotate maps by :math:`s` elements, roll the group axis by
    :math:`s`) the relaxation error is

    .. math::
        y(L_s x)_{c,r} - (L_s\, y(x))_{c,r}
        = L_s \Big[\left(R_{-s} B_{c,r} - B_{c,r-s}\right) \star x_{c,r-s}\Big],

    zero for :math:`B = 0` and linear in :math:`B`. Exactness conditions are
    those of :class:`RRELiftingConv`.

    Args:
        fields (int): Fields :math:`C` (``fields * n`` channels in and out).
        kernel_size (int, optional): Filter size :math:`k`. (default: :obj:`3`)
        group_order (int, optional): :math:`n`, one of 2, 4, 6, 8. (default: :obj:`4`)
        stride (int, optional): Stride. (default: :obj:`1`)
        padding (int, optional): Zero padding; :obj:`None` means ``k // 2``.
            (default: :obj:`None`)
        bias (bool, optional): Add a bias per field. (default: :obj:`False`)
        relaxed (bool, optional): Learn G-Biases; :obj:`False` has no G-Bias
            parameter. (default: :obj:`True`)

    Shapes:
        - input: :math:`[B, C \cdot n, H, W]`
        - output: :math:`[B, C \cdot n, H', W']`
    """

    def __init__(self, fields: int, kernel_size: int = 3, group_order: int = 4,
                 stride: int = 1, padding: Optional[int] = None, bias: bool = False,
                 relaxed: bool = True) -> None:
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(group_order, kernel_size, stride, padding, relaxed)
        self.fields = check_positive_int('fields', fields)
        k, n = kernel_size, group_order
        self.weight = nn.Parameter(torch.empty(fields, k, k))
        self.g_bias = nn.Parameter(torch.zeros(fields, n, k, k)) if self.relaxed else None
        self.bias = nn.Parameter(torch.zeros(fields)) if bias else None
        self.reset_parameters()

    @property
    def in_channels(self) -> int:
        return self.fields * self.group_order

    out_channels = in_channels

    def expand_weight(self) -> Tensor:
        """Return the ``[C * n, 1, k, k]`` depthwise filter bank."""
        c, k, _ = self.weight.shape
        n = self.group_order
        rotated = self.weight.reshape(c, k * k).index_select(1, self.rotation_index.reshape(-1))
        rotated = rotated.view(c, n, k * k)
        if self.g_bias is not None:
            rotated = rotated + self.g_bias.view(c, n, k * k)
        return rotated.reshape(c * n, 1, k, k)

    def _check_input(self, x: Tensor) -> None:
        check_flat_input(x, self.in_channels, type(self).__name__, self.fields,
                         self.group_order)

    def _convolve(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, groups=self.in_channels)

    def _plain_groups(self) -> int:
        return self.in_channels

    def extra_repr(self) -> str:
        return f'{self.fields}, ' + super().extra_repr()


class RREDepthwiseTransposedConv(RREDepthwiseConv):
    r"""Depthwise transposed convolution on C_n group features (upsampling).

    The transposed counterpart of :class:`RREDepthwiseConv`, used with
    ``kernel_size = stride = 2`` to double the resolution: every input pixel of
    map :math:`(c, r)` writes the ``2 x 2`` block
    :math:`x_{c,r}[i, j] \left(R_r D_c + B_{c,r}\right)`. Transposed
    convolution obeys the same rotation rule as convolution
    (:math:`T_W(L x) = L\, T_{L^{-1} W}(x)`), so equivariance and the
    relaxation error are those of :class:`RREDepthwiseConv`, exact for every
    input size when ``padding = 0`` and ``kernel_size == stride``.

    .. note::
        With C8 a ``2 x 2`` filter cannot be rotated by 45 degrees: odd
        elements reuse the 90-degree rotation (see :func:`rotation_index`), so
        only the 90-degree subgroup is represented faithfully.

    Args:
        fields (int): Fields :math:`C`.
        group_order (int, optional): :math:`n`. (default: :obj:`4`)
        kernel_size (int, optional): Filter size. (default: :obj:`2`)
        stride (int, optional): Upsampling factor. (default: :obj:`2`)
        padding (int, optional): Padding; :obj:`None` means
            ``(kernel_size - stride + 1) // 2``. (default: :obj:`None`)
        bias (bool, optional): Add a bias per field. (default: :obj:`False`)
        relaxed (bool, optional): Learn G-Biases. (default: :obj:`True`)

    Shapes:
        - input: :math:`[B, C \cdot n, H, W]`
        - output: :math:`[B, C \cdot n, 2H, 2W]` for the defaults.
    """

    transposed = True

    def __init__(self, fields: int, group_order: int = 4, kernel_size: int = 2,
                 stride: int = 2, padding: Optional[int] = None, bias: bool = False,
                 relaxed: bool = True) -> None:
        padding = (kernel_size - stride + 1) // 2 if padding is None else padding
        super().__init__(fields, kernel_size, group_order, stride, padding, bias, relaxed)

    def _convolve(self, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                  output_size: Optional[Sequence[int]] = None) -> Tensor:
        output_padding = 0
        if output_size is not None:
            # nn.ConvTranspose2d's rule: pick the output_padding that reaches output_size.
            output_padding = []
            for axis, target in enumerate(output_size[-2:]):
                smallest = ((x.shape[axis - 2] - 1) * self.stride - 2 * self.padding
                            + self.kernel_size)
                if not 0 <= target - smallest < self.stride:
                    raise ValueError(
                        f'output_size={tuple(output_size)} is unreachable from input shape '
                        f'{tuple(x.shape)}: the output side must be in '
                        f'[{smallest}, {smallest + self.stride - 1}].')
                output_padding.append(target - smallest)
            output_padding = tuple(output_padding)
        return F.conv_transpose2d(x, weight, bias, self.stride, self.padding, output_padding,
                                  groups=self.in_channels)

