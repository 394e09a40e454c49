"""Turn every RRE layer of a model into plain PyTorch layers for export."""
from torch import nn

from .conv_module import RREConvModule


def _replace_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if hasattr(child, 'to_plain'):
            setattr(module, name, child.to_plain())
        else:
            _replace_children(child)


def deploy(model: nn.Module) -> nn.Module:
    """Convert ``model`` in place for inference and return it in eval mode.

    Every :class:`RREConvModule` folds its batch norm into a plain
    ``nn.Conv2d``/``nn.ConvTranspose2d``; every other RRE convolution and
    :class:`GroupBatchNorm` becomes its plain equivalent. Outputs equal those
    of the eval-mode model up to float rounding, and export tools (ONNX,
    TorchScript) see only convolutions, batch norms, reshapes and pooling.

    .. warning::
        The result is inference-only: batch-norm statistics are frozen into the
        weights and the G-Bias / rotation structure is gone, so training it
        further breaks equivariance. Convert a copy if you need both.
    """
    model.eval()
    for module in model.modules():
        if isinstance(module, RREConvModule):
            module.switch_to_deploy()
    if hasattr(model, 'to_plain'):
        return model.to_plain().eval()
    _replace_children(model)
    return model.eval()


switch_to_deploy = deploy
