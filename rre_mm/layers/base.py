"""Shared machinery of the RRE convolutions: weight expansion cache, deployment and checks."""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .rotation import check_group_order, rotation_index


def check_positive_int(name: str, value) -> int:
    """Raise ``ValueError`` unless ``value`` is a positive ``int``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name}={value!r} is invalid: use a positive int.')
    return value


def check_flat_input(x: Tensor, expected_channels: int, layer: str, fields: Optional[int],
                     group_order: Optional[int]) -> None:
    """Raise ``ValueError`` unless ``x`` is ``[batch, expected_channels, H, W]``."""
    if not isinstance(x, Tensor):
        raise TypeError(f'{layer} expects a torch.Tensor, got {type(x).__name__}.')
    if x.dim() != 4:
        raise ValueError(
            f'{layer} expects a 4-D tensor [batch, channels, height, width], got shape '
            f'{tuple(x.shape)}. Flatten 5-D features [B, C, n, H, W] with '
            f'x.flatten(1, 2) first.')
    if x.shape[1] != expected_channels:
        hint = ''
        if fields is not None and group_order is not None and x.shape[1] == fields:
            hint = (f' It has {fields} channels, which looks group-pooled: pass the '
                    f'features before group pooling (e.g. RRENet(pool_outputs=False)).')
        elif group_order is not None:
            hint = (f' Group features are flattened [B, fields * n, H, W] with '
                    f'n = group_order = {group_order}.')
        raise ValueError(
            f'{layer} expects {expected_channels} input channels, got shape '
            f'{tuple(x.shape)}.{hint}')


class RREConvBase(nn.Module):
    """Base of the RRE convolutions: expands the weight, caches it in eval mode.

    Subclasses create ``weight``, ``g_bias`` (``None`` when strict) and ``bias``
    (``None`` without bias), and define :meth:`expand_weight` (the ``nn.Conv2d``
    shaped weight) and :meth:`_convolve`. In eval mode the expanded weight and bias
    are cached as plain attributes, which are never part of ``state_dict``, so the
    keys are the same in train and eval mode. The cache is rebuilt whenever a
    parameter is replaced or modified in place (it keys on each tensor's storage
    and version counter), and dropped by ``train()``.

    The cache is used only when no gradient can flow into the parameters
    (``torch.no_grad()`` or frozen parameters). Otherwise the weight is
    expanded at each call, so autograd records it.
    """

    #: Whether :meth:`to_plain` returns an ``nn.ConvTranspose2d``.
    transposed = False

    def __init__(self, group_order: int, kernel_size: int, stride: int, padding: int,
                 relaxed: bool) -> None:
        super().__init__()
        self.group_order = check_group_order(group_order)
        self.kernel_size = check_positive_int('kernel_size', kernel_size)
        self.stride = check_positive_int('stride', stride)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f'padding={padding!r} is invalid: use a non-negative int.')
        self.padding = padding
        self.relaxed = bool(relaxed)
        # Non-persistent, so it follows .to(device) but stays out of state_dict.
        self.register_buffer('rotation_index', rotation_index(group_order, kernel_size),
                             persistent=False)
        self._cache: Optional[Tuple[Tensor, Optional[Tensor]]] = None
        self._cache_key: Optional[Tuple] = None

    def reset_parameters(self) -> None:
        """Initialise ``weight`` like ``nn.Conv2d``; G-Biases and bias start at zero."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.g_bias is not None:
            nn.init.zeros_(self.g_bias)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def expand_weight(self) -> Tensor:
        """Return the expanded filter bank in the layout of the plain conv."""
        raise NotImplementedError

    def expanded_bias(self) -> Optional[Tensor]:
        """Return the conv bias repeated over the group axis, or ``None``."""
        if self.bias is None:
            return None
        return self.bias.repeat_interleave(self.group_order)

    def _convolve(self, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                  **kwargs) -> Tensor:
        raise NotImplementedError

    def _check_input(self, x: Tensor) -> None:
        raise NotImplementedError

    def _plain_groups(self) -> int:
        """Return ``groups`` of the plain conv that :meth:`to_plain` builds."""
        return 1

    def _parameter_key(self) -> Tuple:
        return tuple((p.data_ptr(), p._version, p.dtype, p.device)
                     for p in self._parameters.values() if p is not None)

    def cached_weight(self) -> Tuple[Tensor, Optional[Tensor]]:
        """Return the expanded weight and bias, from the cache when it is still valid."""
        key = self._parameter_key()
        if self._cache is None or key != self._cache_key:
            with torch.no_grad():
                self._cache = (self.expand_weight(), self.expanded_bias())
            self._cache_key = key
        return self._cache

    def _use_cache(self) -> bool:
        if self.training:
            return False
        if not torch.is_grad_enabled():
            return True
        return not any(p.requires_grad for p in self._parameters.values() if p is not None)

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        self._check_input(x)
        if self._use_cache():
            weight, bias = self.cached_weight()
        else:
            weight, bias = self.expand_weight(), self.expanded_bias()
        return self._convolve(x, weight, bias, **kwargs)

    def train(self, mode: bool = True) -> 'RREConvBase':
        super().train(mode)
        if mode:
            self._cache = None
            self._cache_key = None
        return self

    def to_plain(self) -> nn.Module:
        """Return a plain ``nn.Conv2d``/``nn.ConvTranspose2d`` with identical output."""
        plain_type = nn.ConvTranspose2d if self.transposed else nn.Conv2d
        conv = plain_type(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                          self.padding, groups=self._plain_groups(),
                          bias=self.bias is not None, device=self.weight.device,
                          dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.expand_weight())
            if self.bias is not None:
                conv.bias.copy_(self.expanded_bias())
        return conv

    def extra_repr(self) -> str:
        return (f'group_order={self.group_order}, kernel_size={self.kernel_size}, '
                f'stride={self.stride}, padding={self.padding}, relaxed={self.relaxed}')
