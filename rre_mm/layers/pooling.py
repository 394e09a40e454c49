"""Pooling over the group axis: invariant features for plain necks and heads."""
from torch import Tensor, nn

from .base import check_positive_int
from .rotation import check_group_order

_MODES = ('max', 'mean')


def group_pool(x: Tensor, group_order: int, mode: str = 'max') -> Tensor:
    r"""Pool ``[B, C * n, H, W]`` group features over the group axis to ``[B, C, H, W]``.

    Max or mean over :math:`r` is invariant to the group shift, so rotating
    the input by one group element only rotates the pooled maps.
    """
    check_group_order(group_order)
    if mode not in _MODES:
        raise ValueError(f'mode={mode!r} is not supported: use one of {_MODES}.')
    if x.dim() != 4 or x.shape[1] % group_order != 0:
        raise ValueError(f'group_pool expects [batch, fields * {group_order}, H, W], got '
                         f'shape {tuple(x.shape)}: the channel count must be a multiple of '
                         f'group_order.')
    batch, channels, height, width = x.shape
    grouped = x.reshape(batch, channels // group_order, group_order, height, width)
    return grouped.amax(2) if mode == 'max' else grouped.mean(2)


class GroupPool(nn.Module):
    """Module form of :func:`group_pool`.

    Args:
        fields (int): Fields :math:`C`, checked against the input.
        group_order (int, optional): :math:`n`. (default: :obj:`4`)
        mode (str, optional): ``'max'`` or ``'mean'``. (default: :obj:`'max'`)
    """

    def __init__(self, fields: int, group_order: int = 4, mode: str = 'max') -> None:
        super().__init__()
        self.fields = check_positive_int('fields', fields)
        self.group_order = check_group_order(group_order)
        if mode not in _MODES:
            raise ValueError(f'mode={mode!r} is not supported: use one of {_MODES}.')
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and x.shape[1] != self.fields * self.group_order:
            raise ValueError(f'GroupPool expects {self.fields * self.group_order} channels '
                             f'({self.fields} fields x {self.group_order}), got shape '
                             f'{tuple(x.shape)}.')
        return group_pool(x, self.group_order, self.mode)

    def extra_repr(self) -> str:
        return f'fields={self.fields}, group_order={self.group_order}, mode={self.mode!r}'
