"""Validation of the user-facing TSCNC arguments, shared by the penalty and the pruners."""

import math
from typing import Any

from torch import nn

CONDITION_FORMS = ("cheap", "exact", "exact_svd")
SPARSITY_MODES = ("structured", "unstructured")


def check_module(model: Any, argument: str = "model") -> None:
    """Raise TypeError unless ``model`` is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`{argument}` must be a torch.nn.Module, got {type(model).__name__}. "
            "Pass the model itself (a DistributedDataParallel wrapper is fine)."
        )


def check_non_negative(value: Any, argument: str) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{argument}` must be a number, got {type(value).__name__}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"`{argument}` must be finite and >= 0, got {value}. "
            "Use 0 to switch that term off."
        )
    return float(value)


def check_transform_a(a: Any) -> float:
    """Return the transformed-L1 parameter ``a`` as a float, or raise if it is not > 0."""
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        raise TypeError(f"`a` must be a number, got {type(a).__name__}.")
    if not math.isfinite(a) or a <= 0:
        raise ValueError(
            f"`a` must be finite and > 0, got {a}. Small values (0.1) approach an L0 "
            "count and large values (100) approach L1; 1.0 is a good start."
        )
    return float(a)


def check_condition_args(form: Any, kappa_target: Any, eps: Any, form_argument: str = "form") -> None:
    """Raise ValueError or TypeError for an invalid condition-constraint setting.

    ``form_argument`` is the caller's name for the form (``cond_form`` in the pruners).
    """
    if form not in CONDITION_FORMS:
        raise ValueError(f"`{form_argument}` must be one of {CONDITION_FORMS}, got {form!r}.")
    if isinstance(kappa_target, bool) or not isinstance(kappa_target, (int, float)):
        raise TypeError(f"`kappa_target` must be a number, got {type(kappa_target).__name__}.")
    if not math.isfinite(kappa_target) or kappa_target < 1:
        raise ValueError(
            f"`kappa_target` must be finite and >= 1 (a condition number is never below 1), "
            f"got {kappa_target}."
        )
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"`eps` must be a number, got {type(eps).__name__}.")
    if not 0 < eps < 1:
        raise ValueError(f"`eps` must lie in (0, 1), got {eps}. The default 1e-6 suits float32.")


def check_sparsity_mode(sparsity: Any) -> None:
    """Raise ValueError unless ``sparsity`` names a supported mode."""
    if sparsity not in SPARSITY_MODES:
        raise ValueError(f"`sparsity` must be one of {SPARSITY_MODES}, got {sparsity!r}.")
