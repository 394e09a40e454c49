"""prune_tscnc: sparse and well-conditioned weights for robust compact networks (TSCNC).

A Torch-Pruning plugin after Feng, Lin, Gao and Wei, "Lipschitz Constant Meets Condition
Number: Learning Robust and Compact Deep Neural Networks" (arXiv 2503.20454, 2025).
"""

from .constraints import (
    condition_number,
    condition_penalty,
    layer_condition_numbers,
    sparsity_penalty,
    transformed_l1,
)
from .penalty import penalty

# The pruner needs torch-pruning (the `pruning` extra); the penalty and the constraints do not.
_PRUNER_NAMES = ("TSCNCPruner", "TSCNCTerm", "wrap")


def __getattr__(name):
    if name in _PRUNER_NAMES:
        from . import pruner

        return getattr(pruner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TSCNCPruner",
    "TSCNCTerm",
    "condition_number",
    "condition_penalty",
    "layer_condition_numbers",
    "penalty",
    "sparsity_penalty",
    "transformed_l1",
    "wrap",
]
