"""MMDetection modules built from the RRE layers (registered in ``mmdet.registry.MODELS``)."""
from .rre_pafpn import RREPAFPN
from .rre_resnet import RREResNet
from .rrenet import RRENet

__all__ = ['RRENet', 'RREPAFPN', 'RREResNet']
