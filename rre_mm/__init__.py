"""rre_mm: relaxed rotation-equivariant convolutions (G-Biases) for MMDetection 3.x.

``rre_mm.layers`` is plain PyTorch and always imported. The MMDetection
modules (``RRENet``, ``RREPAFPN``, ``RREResNet``) are registered in
``mmdet.registry.MODELS`` when mmdet is importable, so a config with
``custom_imports=dict(imports=['rre_mm'], allow_failed_imports=False)``
finds them.
"""
from importlib.util import find_spec

from . import layers

if find_spec('mmdet') is not None:
    from . import models  # noqa: F401  (registers the MMDetection modules)
    from . import datasets, engine  # noqa: F401  (Rot90, checkpoint fix)
