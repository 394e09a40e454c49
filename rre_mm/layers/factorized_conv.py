"""Factorised group convolution: pointwise group conv, then depthwise RRE conv."""
from typing import Optional

from torch import Tensor, nn

from .depthwise_conv import RREDepthwiseConv, RREDepthwiseTransposedConv
from .group_conv import RREGroupConv


class RREFactorizedConv(nn.Module):
    r"""Factorised relaxed rotation-equivariant convolution, the building block
    of the detector in `"Relaxed Rotational Equivariance via G-Biases in
    Vision" <https://arxiv.org/abs/2408.12454>`_ (Wu et al., AAAI 2025).

    A ``1 x 1`` group convolution whose copy for element :math:`r` is the
    weight rolled by :math:`r` along the group axis (no G-Bias), followed by a
    depthwise ``k x k`` convolution with filter :math:`R_r D_c + B_{c,r}`:

    .. math::
        z_{o,r} = \sum_{c,j} P[o, c, (j - r) \bmod n]\, x_{c,j}, \qquad
        y_{o,r} = \left(R_r D_o + B_{o,r}\right) \star z_{o,r}.

    The pointwise step is strictly equivariant, so the relaxation error is the
    one of :class:`RREDepthwiseConv` applied to :math:`z`:
    :math:`y(L_s x) - L_s y(x) = L_s[(R_{-s} B_{o,r} - B_{o,r-s}) \star z_{o,r-s}]`.
    It costs :math:`n C_{in} C_{out} + k^2 C_{out}` weights instead of
    :math:`n C_{in} C_{out} k^2` for :class:`RREGroupConv`.

    Args:
        in_fields (int): Input fields :math:`C_{in}`.
        out_fields (int): Output fields :math:`C_{out}`.
        kernel_size (int, optional): Depthwise filter size. (default: :obj:`3`)
        group_order (int, optional): :math:`n`, one of 2, 4, 6, 8. (default: :obj:`4`)
        stride (int, optional): Stride of the depthwise step. (default: :obj:`1`)
        padding (int, optional): Depthwise zero padding; :obj:`None` means
            ``k // 2``. (default: :obj:`None`)
        relaxed (bool, optional): Learn G-Biases in the depthwise step.
            (default: :obj:`True`)
        transposed (bool, optional): Use :class:`RREDepthwiseTransposedConv`
            (upsampling by ``stride``) as the second step.
            (default: :obj:`False`)

    Shapes:
        - input: :math:`[B, C_{in} \cdot n, H, W]`
        - output: :math:`[B, C_{out} \cdot n, H', W']`
    """

    def __init__(self, in_fields: int, out_fields: int, kernel_size: int = 3,
                 group_order: int = 4, stride: int = 1, padding: Optional[int] = None,
                 relaxed: bool = True, transposed: bool = False) -> None:
        super().__init__()
        self.in_fields = in_fields
        self.out_fields = out_fields
        self.group_order = group_order
        self.pointwise = RREGroupConv(in_fields, out_fields, 1, group_order, relaxed=False)
        if transposed:
            self.depthwise = RREDepthwiseTransposedConv(
                out_fields, group_order, kernel_size, stride, padding, relaxed=relaxed)
        else:
            self.depthwise = RREDepthwiseConv(out_fields, kernel_size, group_order, stride,
                                              padding, relaxed=relaxed)

    @property
    def in_channels(self) -> int:
        return self.pointwise.in_channels

    @property
    def out_channels(self) -> int:
        return self.depthwise.out_channels

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.depthwise(self.pointwise(x), **kwargs)

    def to_plain(self) -> 'PlainFactorizedConv':
        """Return the plain ``1 x 1`` conv and depthwise conv with identical output."""
        return PlainFactorizedConv(self.pointwise.to_plain(), self.depthwise.to_plain())


class PlainFactorizedConv(nn.Sequential):
    """``nn.Sequential`` of a pointwise and a depthwise conv that passes keyword
    arguments (``output_size`` of a transposed conv) to the second one."""

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self[1](self[0](x), **kwargs)
