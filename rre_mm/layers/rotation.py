"""Filter rotations of the cyclic group C_n as fixed index permutations."""
import math
from functools import lru_cache
from typing import Tuple

import torch

SUPPORTED_GROUP_ORDERS = (2, 4, 6, 8)


def check_group_order(group_order: int) -> int:
    """Validate ``group_order`` and return it as an ``int``."""
    if isinstance(group_order, bool) or not isinstance(group_order, int) \
            or group_order not in SUPPORTED_GROUP_ORDERS:
        raise ValueError(
            f'group_order={group_order!r} is not supported: use one of '
            f'{SUPPORTED_GROUP_ORDERS} (rotations by 360/n degrees).')
    return group_order


def _rot90_index(kernel_size: int, times: int) -> torch.Tensor:
    grid = torch.arange(kernel_size * kernel_size).view(kernel_size, kernel_size)
    return torch.rot90(grid, times, dims=(0, 1)).reshape(-1)


def _ring_shift_index(kernel_size: int, angle: float) -> torch.Tensor:
    """Rotate a ``k x k`` grid by ``angle`` radians as a pixel permutation.

    Every square ring of pixels (same Chebyshev distance from the centre) is
    shifted cyclically by the whole number of positions nearest to ``angle``,
    so rings map onto themselves and the result is a bijection. For multiples
    of 90 degrees the shift is exact and equals :func:`torch.rot90`.
    """
    centre = (kernel_size - 1) / 2
    index = torch.arange(kernel_size * kernel_size)
    rings = {}
    for i in range(kernel_size):
        for j in range(kernel_size):
            y, x = i - centre, j - centre
            radius = max(abs(y), abs(x))
            rings.setdefault(radius, []).append((math.atan2(y, x), i * kernel_size + j))

    for radius, pixels in rings.items():
        if radius == 0:
            continue
        pixels.sort()
        ring = [flat for _, flat in pixels]
        length = len(ring)
        shift = int(math.floor(angle / (2 * math.pi) * length + 0.5))
        for position, flat in enumerate(ring):
            # The output pixel at angle phi reads the input pixel at phi + angle,
            # the same direction as torch.rot90(x, 1, dims=(-2, -1)).
            index[flat] = ring[(position + shift) % length]
    return index


@lru_cache(maxsize=None)
def _rotation_index_cached(group_order: int, kernel_size: int) -> Tuple[Tuple[int, ...], ...]:
    n, k = group_order, kernel_size
    if n in (2, 4):
        # Rotations by 180 or 90 degrees are exact.
        step = 4 // n
        return tuple(tuple(_rot90_index(k, r * step).tolist()) for r in range(n))

    # C8: R_r = rot90^(r // 2) after P45^(r % 2). C6: R_r = rot180^(r // 3) after
    # P60 or P120. Composing this way keeps R_{r + n/4} = rot90(R_r) for C8 and
    # R_{r + n/2} = rot180(R_r) for C6 exactly.
    sub_order = n // 4 if n == 8 else n // 2
    coarse_times = 1 if n == 8 else 2
    perms = []
    for r in range(n):
        coarse = _rot90_index(k, (r // sub_order) * coarse_times)
        fine = _ring_shift_index(k, 2 * math.pi * (r % sub_order) / n)
        # (A after B) reads W[b[a[p]]].
        perms.append(tuple(fine[coarse].tolist()))
    return tuple(perms)


def rotation_index(group_order: int, kernel_size: int) -> torch.Tensor:
    r"""Return the pixel permutations that rotate a ``k x k`` filter.

    Row ``r`` of the result, shape ``[n, k * k]``, satisfies
    ``(R_r W).flatten()[p] = W.flatten()[index[r, p]]`` where :math:`R_r`
    rotates by :math:`2 \pi r / n`. Multiples of 90 degrees use
    :func:`torch.rot90` and are exact. The 45 degree (C8) and 60/120 degree
    (C6) steps are ring shifts (see :func:`_ring_shift_index`), which are
    nearest-neighbour approximations of a rotation.

    .. note::
        A ``2 x 2`` filter has one ring of four pixels, so its 45 degree
        "rotation" is the 90 degree one. This only matters for C8 with even
        kernels (the transposed upsampling conv).

    Args:
        group_order (int): :math:`n`, one of 2, 4, 6, 8.
        kernel_size (int): Filter size :math:`k`.
    """
    check_group_order(group_order)
    if not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f'kernel_size={kernel_size!r} is invalid: use a positive int.')
    return torch.tensor(_rotation_index_cached(group_order, kernel_size), dtype=torch.long)


def rotate_filter(weight: torch.Tensor, group_order: int, steps: int) -> torch.Tensor:
    """Rotate the last two (square) axes of ``weight`` by ``steps`` group elements."""
    k = weight.shape[-1]
    index = rotation_index(group_order, k)[steps % group_order].to(weight.device)
    flat = weight.reshape(*weight.shape[:-2], k * k)
    return flat.index_select(-1, index).reshape(weight.shape)
