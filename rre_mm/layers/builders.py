"""Build normalisation and activation layers from MMCV-style config dicts."""
from typing import Optional

from torch import nn

_NORM_TYPES = {
    'BN': nn.BatchNorm2d,
    'BN2d': nn.BatchNorm2d,
    'SyncBN': nn.SyncBatchNorm,
}
_ACT_ALIASES = {'Swish': 'SiLU'}


def build_norm(norm_cfg: dict, num_features: int) -> nn.Module:
    """Build a batch norm over ``num_features`` channels from ``norm_cfg``.

    Supported types: ``'BN'``, ``'BN2d'``, ``'SyncBN'``, ``'GN'`` (which needs
    ``num_groups``). The other keys are passed to the constructor, except
    ``requires_grad``, which freezes the affine parameters when false.
    """
    if not isinstance(norm_cfg, dict) or 'type' not in norm_cfg:
        raise TypeError(f'norm_cfg={norm_cfg!r} is invalid: use a dict with a "type" key, '
                        f'e.g. dict(type="BN", momentum=0.03, eps=0.001).')
    cfg = dict(norm_cfg)
    norm_type = cfg.pop('type')
    requires_grad = cfg.pop('requires_grad', True)
    if norm_type == 'GN':
        if 'num_groups' not in cfg:
            raise ValueError('norm_cfg type "GN" needs num_groups, e.g. '
                             'dict(type="GN", num_groups=8).')
        layer = nn.GroupNorm(num_channels=num_features, **cfg)
    elif norm_type in _NORM_TYPES:
        layer = _NORM_TYPES[norm_type](num_features, **cfg)
    else:
        raise ValueError(f'norm_cfg type {norm_type!r} is not supported: use one of '
                         f'{sorted(_NORM_TYPES) + ["GN"]}.')
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return layer


def build_activation(act_cfg: Optional[dict]) -> nn.Module:
    """Build an activation from ``act_cfg`` such as ``dict(type='SiLU', inplace=True)``.

    ``type`` names any class in :mod:`torch.nn` (``'Swish'`` means ``'SiLU'``);
    :obj:`None` returns ``nn.Identity()``. Pointwise activations commute with
    rotations and group shifts, so any of them keeps equivariance.
    """
    if act_cfg is None:
        return nn.Identity()
    if not isinstance(act_cfg, dict) or 'type' not in act_cfg:
        raise TypeError(f'act_cfg={act_cfg!r} is invalid: use None or a dict with a '
                        f'"type" key, e.g. dict(type="SiLU", inplace=True).')
    cfg = dict(act_cfg)
    act_type = cfg.pop('type')
    act_type = _ACT_ALIASES.get(act_type, act_type)
    act_class = getattr(nn, act_type, None) if isinstance(act_type, str) else None
    if act_class is None or not isinstance(act_class, type) \
            or not issubclass(act_class, nn.Module):
        raise ValueError(f'act_cfg type {act_type!r} is not an activation in torch.nn: '
                         f'use e.g. "SiLU", "ReLU" or "LeakyReLU".')
    return act_class(**cfg)
