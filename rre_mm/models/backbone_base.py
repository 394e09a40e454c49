"""Shared parts of the RRE backbones: argument checks, stage freezing, ``norm_eval``, outputs."""
from typing import List, Sequence, Tuple

from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import group_pool


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


class RREBackboneBase(BaseModule):
    """Base of :class:`~rre_mm.models.RRENet` and :class:`~rre_mm.models.RREResNet`.

    Subclasses set ``group_order``, ``out_indices``, ``norm_eval``, ``pool_outputs`` and
    ``out_fields`` (fields of every level), and return the modules that ``frozen_stages``
    freezes from :meth:`_frozen_modules`. Frozen modules stay in eval mode with
    ``requires_grad=False`` whatever ``train()`` is called with, as in MMDetection's
    backbones.
    """

    group_order: int
    out_indices: Tuple[int, ...]
    norm_eval: bool
    pool_outputs: bool
    out_fields: List[int]

    @property
    def out_channels(self) -> List[int]:
        """Channels of each returned level, as a neck's ``in_channels`` needs them."""
        scale = 1 if self.pool_outputs else self.group_order
        return [self.out_fields[i] * scale for i in self.out_indices]

    def _frozen_modules(self) -> List[nn.Module]:
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'RREBackboneBase':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def _level_output(self, x: Tensor) -> Tensor:
        """Pool a returned level over the group axis when ``pool_outputs`` is set."""
        return group_pool(x, self.group_order) if self.pool_outputs else x
