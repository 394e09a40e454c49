"""Selection of the layers and parameters that the TSCNC constraints act on."""

from typing import Iterable, Iterator, List, Optional, Set, Tuple

from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from .reshape import CONDITION_LAYER_TYPES


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the model inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _mask_hook(module: nn.Module, name: str) -> Optional[torch_prune.BasePruningMethod]:
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name == name:
            return hook
    return None


def trainable_parameter(module: nn.Module, name: str = "weight") -> Optional[nn.Parameter]:
    """Return the parameter that receives the gradients of ``module.<name>``.

    For a layer masked with :obj:`torch.nn.utils.prune` this is ``<name>_orig``, because
    ``module.<name>`` is then a plain tensor recomputed as ``<name>_orig * <name>_mask``.
    Returns :obj:`None` if the layer has no such parameter.
    """
    if _mask_hook(module, name) is not None:
        return getattr(module, name + "_orig")
    parameter = getattr(module, name, None)
    return parameter if isinstance(parameter, nn.Parameter) else None


def effective_weight(module: nn.Module, name: str = "weight") -> Tensor:
    """Return ``module.<name>`` as the forward pass uses it, in a fresh autograd graph.

    For a masked layer the stored ``module.<name>`` belongs to the graph of the last forward
    pass, which ``loss.backward()`` has already freed, so the product
    ``<name>_orig * <name>_mask`` is recomputed here. Its gradient reaches ``<name>_orig``
    multiplied by the mask, so masked entries stay masked.
    """
    hook = _mask_hook(module, name)
    if hook is not None:
        return hook.apply_mask(module)
    return getattr(module, name)


def expand_ignored(ignored_layers: Optional[Iterable[nn.Module]]) -> Set[nn.Module]:
    """Return the ignored layers together with all their submodules."""
    ignored: Set[nn.Module] = set()
    for layer in ignored_layers or ():
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"`ignored_layers` must contain nn.Module objects, got {type(layer).__name__}."
            )
        ignored.update(layer.modules())
    return ignored


def weight_layers(
    model: nn.Module,
    ignored_layers: Optional[Iterable[nn.Module]] = None,
) -> List[Tuple[str, nn.Module]]:
    """List the linear and convolution layers whose weights the constraints may change.

    A layer is left out if it is in ``ignored_layers`` (or inside one of them) or if its
    weight parameter has ``requires_grad=False``.

    Returns:
        list: ``(qualified name, module)`` pairs in ``model.named_modules()`` order.
    """
    model = unwrap_model(model)
    ignored = expand_ignored(ignored_layers)
    return list(_iter_weight_layers(model, ignored))


def _iter_weight_layers(model: nn.Module, ignored: Set[nn.Module]) -> Iterator[Tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if not isinstance(module, CONDITION_LAYER_TYPES) or module in ignored:
            continue
        parameter = trainable_parameter(module)
        if parameter is None or not parameter.requires_grad:
            continue
        yield name, module
