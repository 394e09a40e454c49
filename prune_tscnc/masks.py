r"""Unstructured global magnitude pruning with masks that stay fixed during fine-tuning.

:func:`global_magnitude_prune` ranks the weights of all targeted ``nn.Conv2d`` and ``nn.Linear``
layers together by :math:`|w|` (optionally divided by the layer's RMS) with ``torch.nn.utils.prune.global_unstructured`` and zeroes the
``round(sparsity * N)`` smallest, where ``N`` counts the targeted weights. The masks are then made
permanent (``prune.remove``) and kept in a :class:`MaskSet`, so ``module.weight`` stays a plain
``nn.Parameter``: regularisers that write into ``weight.grad`` after ``loss.backward()`` (such as
``TSCNCPruner.regularize``) see the real parameter instead of PyTorch's ``weight_orig``. Call
:meth:`MaskSet.mask_gradients` before and :meth:`MaskSet.apply` after each ``optimizer.step()``
so momentum and weight decay cannot revive a pruned weight.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

__all__ = ["SCORES", "MaskSet", "global_magnitude_prune", "prunable_layers", "sparsity_summary"]


def prunable_layers(model: nn.Module, ignored_layers: Iterable[nn.Module] | None = None) -> list[tuple[str, nn.Module]]:
    """Return ``(name, module)`` for every ``nn.Conv2d`` and ``nn.Linear`` not in ``ignored_layers``."""
    ignored = {id(module) for module in (ignored_layers or ())}
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and id(module) not in ignored
    ]


class MaskSet:
    """Binary weight masks ``{layer name: mask}`` with the same shape as each layer's weight.

    Args:
        model (nn.Module): the model the masks belong to
        masks (dict): layer name to a 0/1 tensor shaped like ``layer.weight``
    """

    def __init__(self, model: nn.Module, masks: dict[str, Tensor]):
        modules = dict(model.named_modules())
        for name, mask in masks.items():
            if name not in modules:
                raise KeyError(f"mask given for {name!r}, which is not a submodule of the model")
            if tuple(mask.shape) != tuple(modules[name].weight.shape):
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(mask.shape)}, but the weight has shape "
                    f"{tuple(modules[name].weight.shape)}"
                )
        self.model = model
        self.masks = {name: mask.detach().to(modules[name].weight.device, torch.bool) for name, mask in masks.items()}

    def _weights(self):
        modules = dict(self.model.named_modules())
        for name, mask in self.masks.items():
            yield modules[name].weight, mask

    @torch.no_grad()
    def apply(self) -> None:
        """Zero every pruned weight in place."""
        for weight, mask in self._weights():
            weight.mul_(mask)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradient of every pruned weight in place."""
        for weight, mask in self._weights():
            if weight.grad is not None:
                weight.grad.mul_(mask)

    def state_dict(self) -> dict[str, Tensor]:
        """Return the masks as CPU ``bool`` tensors, loadable with ``torch.load(weights_only=True)``."""
        return {name: mask.cpu() for name, mask in self.masks.items()}

    def num_pruned(self) -> int:
        return sum(int((~mask).sum()) for mask in self.masks.values())

    def num_targeted(self) -> int:
        return sum(mask.numel() for mask in self.masks.values())

    def sparsity(self) -> float:
        """Return the fraction of targeted weights that the masks remove."""
        return self.num_pruned() / max(self.num_targeted(), 1)


SCORES = ("magnitude", "normalized_magnitude")


def global_magnitude_prune(
    model: nn.Module,
    sparsity: float,
    ignored_layers: Iterable[nn.Module] | None = None,
    score: str = "magnitude",
) -> MaskSet:
    r"""Prune the lowest-scoring weights across all targeted layers together.

    With ``score="magnitude"`` the score is :math:`|w|`. With ``score="normalized_magnitude"``
    it is :math:`|w| / \mathrm{RMS}(W_\ell)`, the magnitude relative to the root mean square of
    its layer :math:`\ell`. A convolution followed by batch norm computes the same function at
    any weight scale, so raw magnitudes compare arbitrary per-layer scales. After short training,
    the layers with the largest fan-in keep their small initial scale and can lose every weight
    (layer collapse). The normalised score removes that scale and still ranks globally.

    Biases, batch-norm parameters and layers in ``ignored_layers`` (typically the classifier) are
    left dense.

    Args:
        model (nn.Module): model to prune in place
        sparsity (float): fraction of targeted weights to remove, in [0, 1) (e.g. :obj:`0.9`)
        ignored_layers (iterable of nn.Module, optional): layers to keep dense (default: :obj:`None`)
        score (str): ``"magnitude"`` or ``"normalized_magnitude"`` (default: :obj:`"magnitude"`)

    Returns:
        MaskSet: the fixed masks; the model's weights are already multiplied by them.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"sparsity must be a float in [0, 1), got {sparsity!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}; use e.g. 0.9 for 90 %")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    layers = prunable_layers(model, ignored_layers)
    if not layers:
        raise ValueError("no nn.Conv2d or nn.Linear layer is left to prune; check ignored_layers")

    importance_scores = None
    if score == "normalized_magnitude":
        importance_scores = {}
        for _, module in layers:
            weight = module.weight.detach()
            rms = weight.square().mean().sqrt().clamp_min(torch.finfo(weight.dtype).tiny)
            importance_scores[(module, "weight")] = weight.abs() / rms

    prune.global_unstructured(
        [(module, "weight") for _, module in layers],
        pruning_method=prune.L1Unstructured,
        importance_scores=importance_scores,
        amount=float(sparsity),
    )

    masks = {}
    for name, module in layers:
        masks[name] = module.weight_mask.detach().clone()
        prune.remove(module, "weight")
    return MaskSet(model, masks)


@torch.no_grad()
def sparsity_summary(model: nn.Module, ignored_layers: Iterable[nn.Module] | None = None) -> dict:
    """Count zero weights per targeted layer and the parameters of the whole model.

    Returns a dict with ``layers`` (name to ``{"numel", "zeros", "sparsity"}``), ``targeted_sparsity``
    (zeros over all targeted weights), ``num_parameters`` and ``num_nonzero_parameters`` (all
    parameters, including biases and batch norm).
    """
    layers = {}
    zeros_total = 0
    numel_total = 0
    for name, module in prunable_layers(model, ignored_layers):
        zeros = int((module.weight == 0).sum())
        numel = module.weight.numel()
        layers[name] = {"numel": numel, "zeros": zeros, "sparsity": zeros / numel}
        zeros_total += zeros
        numel_total += numel

    num_parameters = sum(p.numel() for p in model.parameters())
    num_nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return {
        "layers": layers,
        "targeted_sparsity": zeros_total / max(numel_total, 1),
        "num_parameters": num_parameters,
        "num_nonzero_parameters": num_nonzero,
    }
