"""Relaxed rotation-equivariant (RRE) layers in plain PyTorch.

Group features on C_n are stored flat as ``[B, C * n, H, W]``, channel
``c * n + r`` (field ``c``, group element ``r``).
"""
from .base import RREConvBase
from .builders import build_activation, build_norm
from .cifar_net import RRECifarNet
from .conv_module import RREConvModule, fold_batch_norm
from .csp_layer import RREBottleneck, RRECSPLayer
from .deploy import deploy, switch_to_deploy
from .depthwise_conv import RREDepthwiseConv, RREDepthwiseTransposedConv
from .factorized_conv import RREFactorizedConv
from .group_conv import RREGroupConv
from .lifting_conv import RRELiftingConv
from .norm import GroupBatchNorm
from .pooling import GroupPool, group_pool
from .rotation import SUPPORTED_GROUP_ORDERS, rotate_filter, rotation_index
from .sppf import RRESPPF

__all__ = [
    'RREConvBase', 'RRELiftingConv', 'RREGroupConv', 'RREDepthwiseConv',
    'RREDepthwiseTransposedConv', 'RREFactorizedConv', 'RREConvModule', 'GroupBatchNorm',
    'GroupPool', 'group_pool', 'RRECifarNet', 'deploy', 'switch_to_deploy', 'fold_batch_norm',
    'build_norm', 'build_activation', 'rotation_index', 'rotate_filter',
    'SUPPORTED_GROUP_ORDERS', 'RREBottleneck', 'RRECSPLayer', 'RRESPPF',
]
