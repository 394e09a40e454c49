"""Differentiable TSCNC constraints: transformed-L1 sparsity and condition-number penalties."""

from .checks import CONDITION_FORMS, SPARSITY_MODES
from .conditioning import (
    cheap_condition_penalty,
    condition_number,
    condition_penalty,
    exact_condition_penalty,
    layer_condition_numbers,
    layer_condition_penalty,
    matrix_condition_penalty,
    svd_condition_penalty,
)
from .reshape import is_depthwise, module_matrices, weight_to_matrices
from .sparsity import (
    channel_norms,
    layer_sparsity_penalty,
    normalized_transformed_l1,
    sparsity_penalty,
    transformed_l1,
)
from .targets import effective_weight, trainable_parameter, unwrap_model, weight_layers

__all__ = [
    "CONDITION_FORMS",
    "SPARSITY_MODES",
    "channel_norms",
    "cheap_condition_penalty",
    "condition_number",
    "condition_penalty",
    "effective_weight",
    "exact_condition_penalty",
    "is_depthwise",
    "layer_condition_numbers",
    "layer_condition_penalty",
    "layer_sparsity_penalty",
    "matrix_condition_penalty",
    "module_matrices",
    "normalized_transformed_l1",
    "sparsity_penalty",
    "svd_condition_penalty",
    "trainable_parameter",
    "transformed_l1",
    "unwrap_model",
    "weight_layers",
    "weight_to_matrices",
]
