r"""TSCNC for Torch-Pruning: a drop-in pruner and a wrapper for existing pruners.

Feng, Lin, Gao and Wei, `"Lipschitz Constant Meets Condition Number: Learning Robust and
Compact Deep Neural Networks" <https://arxiv.org/abs/2503.20454>`_ (2025). Torch-Pruning
pruners regularise by adding into ``.grad`` after ``loss.backward()``; the TSCNC gradient

.. math::
    \nabla_\theta \big( \lambda_s \, \mathrm{TSC}(\theta) + \lambda_c \, \mathrm{CNC}(\theta) \big)

is added the same way, so a sparse-training loop written for
``tp.pruner.GroupNormPruner`` runs unchanged.
"""

import inspect
import types
import warnings
from typing import Any, Callable, Dict, List, Optional

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning import ops
from torch_pruning.pruner.algorithms.scheduler import linear_scheduler

from .constraints.checks import (
    check_condition_args,
    check_module,
    check_non_negative,
    check_sparsity_mode,
    check_transform_a,
)
from .constraints.conditioning import layer_condition_penalty
from .constraints.groups import structured_group_penalty
from .constraints.reshape import is_depthwise
from .constraints.sparsity import layer_sparsity_penalty
from .constraints.targets import trainable_parameter, unwrap_model, weight_layers

# Keyword arguments of other Torch-Pruning pruners that TSCNCPruner accepts, so that a script
# can swap the class name only. `reg` is used as lambda_sparse; the others have no TSCNC
# counterpart and are ignored with a warning.
_FOREIGN_PRUNER_ARGUMENTS = ("alpha", "delta_reg", "group_lasso")


class TSCNCTerm:
    r"""TSCNC gradient step bound to one Torch-Pruning pruner.

    Holds the TSCNC settings, finds the targeted layers and pruning groups of the pruner's
    model, and adds :math:`\nabla (\lambda_s \mathrm{TSC} + \lambda_c \mathrm{CNC})` into
    ``.grad``. :class:`TSCNCPruner` and :func:`wrap` both delegate to it.

    Targeted parameters are the weights of the :obj:`nn.Linear` and :obj:`nn.Conv*d` layers
    that are neither in the pruner's ``ignored_layers`` nor frozen (``requires_grad=False``).
    With ``bias=True`` their biases count too. Structured sparsity also targets the affine
    weights of the normalisation layers in the pruning groups (and their shifts with
    ``bias=True``). Nothing else is touched.

    Args:
        pruner (tp.pruner.BasePruner): the pruner whose model, dependency graph and
            ``ignored_layers`` define the targets.
        lambda_sparse, lambda_cond, a, cond_form, kappa_target, eps, sparsity, cond_every:
            see :class:`TSCNCPruner`.
    """

    def __init__(
        self,
        pruner: "tp.pruner.BasePruner",
        lambda_sparse: float = 1e-4,
        lambda_cond: float = 1e-4,
        a: float = 1.0,
        cond_form: str = "cheap",
        kappa_target: float = 10.0,
        eps: float = 1e-6,
        sparsity: str = "structured",
        cond_every: int = 1,
    ):
        self.lambda_sparse = check_non_negative(lambda_sparse, "lambda_sparse")
        self.lambda_cond = check_non_negative(lambda_cond, "lambda_cond")
        self.a = check_transform_a(a)
        check_condition_args(cond_form, kappa_target, eps, form_argument="cond_form")
        check_sparsity_mode(sparsity)
        if isinstance(cond_every, bool) or not isinstance(cond_every, int) or cond_every < 1:
            raise ValueError(f"`cond_every` must be an integer >= 1, got {cond_every!r}.")

        self.pruner = pruner
        self.cond_form = cond_form
        self.kappa_target = float(kappa_target)
        self.eps = float(eps)
        self.sparsity = sparsity
        self.cond_every = cond_every
        self.num_calls = 0
        self._warned_empty = False
        self.refresh()

    def refresh(self) -> None:
        """Re-read the targeted layers and pruning groups, for example after ``step()``."""
        pruner = self.pruner
        self.ignored = set(pruner.ignored_layers)
        self.layers = [module for _, module in weight_layers(pruner.model, pruner.ignored_layers)]
        if self.sparsity == "structured":
            self.groups = list(pruner.DG.get_all_groups(
                ignored_layers=pruner.ignored_layers,
                root_module_types=pruner.root_module_types,
            ))
        else:
            self.groups = []
        self._refreshed_at_step = pruner.current_step

    def penalty(self, lambda_sparse: Optional[float] = None, bias: bool = False):
        """Return the weighted TSCNC penalty and the parameters it targets.

        Returns:
            tuple: a float32 scalar (None if nothing is targeted) and a list of parameters.
        """
        if self._refreshed_at_step != self.pruner.current_step:
            # step() changed layer shapes, so groups built before it index missing channels.
            self.refresh()
        if lambda_sparse is None:
            lambda_sparse = self.lambda_sparse

        total = None
        targets: List[nn.Parameter] = []
        if lambda_sparse > 0:
            sparse_term, sparse_targets = self._sparsity_term(bias)
            if sparse_term is not None:
                total = lambda_sparse * sparse_term
                targets += sparse_targets

        use_condition = self.lambda_cond > 0 and self.num_calls % self.cond_every == 0
        if use_condition:
            cond_term, cond_targets = self._condition_term()
            if cond_term is not None:
                # Scaling by cond_every keeps the average strength at lambda_cond.
                weighted = (self.lambda_cond * self.cond_every) * cond_term
                total = weighted if total is None else total + weighted
                targets += cond_targets
        return total, _unique(targets)

    def _trainable_layers(self) -> List[nn.Module]:
        # Parameters frozen after refresh() are skipped too.
        return [
            module for module in self.layers
            if trainable_parameter(module, "weight").requires_grad
        ]

    def _sparsity_term(self, bias: bool):
        if self.sparsity == "structured":
            return structured_group_penalty(
                self.groups, self.pruner.DG, self.ignored, a=self.a, bias=bias
            )

        total = None
        targets: List[nn.Parameter] = []
        for module in self._trainable_layers():
            term = layer_sparsity_penalty(module, self.a, structured=False, bias=bias)
            total = term if total is None else total + term
            targets.append(trainable_parameter(module, "weight"))
            bias_parameter = trainable_parameter(module, "bias")
            if bias and bias_parameter is not None and bias_parameter.requires_grad:
                targets.append(bias_parameter)
        return total, targets

    def _condition_term(self):
        total = None
        targets: List[nn.Parameter] = []
        for module in self._trainable_layers():
            if is_depthwise(module):
                continue
            term = layer_condition_penalty(module, self.cond_form, self.kappa_target, self.eps)
            total = term if total is None else total + term
            targets.append(trainable_parameter(module, "weight"))
        return total, targets

    def add_gradients(self, lambda_sparse: Optional[float] = None, bias: bool = False) -> None:
        """Add the TSCNC gradient into ``.grad`` of every targeted parameter.

        The gradient is computed with :func:`torch.autograd.grad` on the targeted parameters
        only, so no other ``.grad`` changes. A parameter whose ``.grad`` is None (its layer
        took no part in the forward pass) gets the TSCNC gradient as its ``.grad``.
        """
        with torch.enable_grad():
            total, targets = self.penalty(lambda_sparse, bias)
        self.num_calls += 1
        if total is None or not targets:
            # Zero lambdas and calls skipped by cond_every are deliberate, so only warn when
            # no layer is targeted at all.
            if not self.layers and not targets:
                self._warn_empty()
            return

        gradients = torch.autograd.grad(total, targets, allow_unused=True)
        with torch.no_grad():
            for parameter, gradient in zip(targets, gradients):
                if gradient is None:
                    continue
                if parameter.grad is None:
                    parameter.grad = gradient.to(parameter.dtype)
                else:
                    parameter.grad.add_(gradient.to(parameter.grad.dtype))

    def _warn_empty(self) -> None:
        if self._warned_empty:
            return
        self._warned_empty = True
        # stacklevel 4 points at the user's regularize() call: _warn_empty, add_gradients,
        # regularize, caller.
        warnings.warn(
            "TSCNC regularize() found no layer to regularise: every nn.Linear/nn.Conv* layer is "
            "in ignored_layers or has requires_grad=False. The TSCNC terms have no effect; "
            "check ignored_layers and which parameters are frozen.",
            stacklevel=4,
        )


def _unique(parameters: List[nn.Parameter]) -> List[nn.Parameter]:
    seen = set()
    unique = []
    for parameter in parameters:
        if id(parameter) not in seen:
            seen.add(id(parameter))
            unique.append(parameter)
    return unique


def _check_same_model(pruner: "tp.pruner.BasePruner", model: Any) -> None:
    check_module(model)
    if unwrap_model(model) is not pruner.model:
        raise ValueError(
            "regularize() got a different model from the one the pruner was built on. Pass "
            "the same model (wrapping it in DistributedDataParallel afterwards is fine)."
        )


def _check_loss(loss: Any) -> None:
    # A number here is most likely GroupNormPruner's alpha or BNScalePruner's reg passed by
    # position, which would otherwise be dropped without notice.
    if loss is not None and not isinstance(loss, Tensor):
        raise TypeError(
            f"`loss` must be a Tensor or None, got {type(loss).__name__}. Pass "
            "GroupNormPruner's scaling as alpha=... and a coefficient as reg=..."
        )


class TSCNCPruner(tp.pruner.BasePruner):
    r"""Torch-Pruning pruner that trains sparse and well-conditioned weights (TSCNC).

    From Feng et al., `"Lipschitz Constant Meets Condition Number: Learning Robust and
    Compact Deep Neural Networks" <https://arxiv.org/abs/2503.20454>`_ (2025). After
    ``loss.backward()``, :meth:`regularize` adds the gradient of

    .. math::
        \lambda_s \, \mathrm{TSC}(\theta) + \lambda_c \, \mathrm{CNC}(\theta)

    into ``.grad``: the transformed-L1 sparsity term
    :math:`\rho_a(x) = (a + 1)|x| / (a + |x|)` on scale-normalised Torch-Pruning group norms
    (structured) or single weights (unstructured), and the condition-number term on every
    targeted :obj:`nn.Linear` and :obj:`nn.Conv*d` layer (see
    :func:`~prune_tscnc.constraints.condition_penalty`). Pruning itself (:meth:`step`) is
    Torch-Pruning's, ranked by ``importance``.

    Usage, identical to a ``GroupNormPruner`` loop::

        pruner = TSCNCPruner(model, example_inputs, pruning_ratio=0.5,
                             ignored_layers=[model.fc], lambda_cond=1e-3)
        for epoch in range(epochs):
            pruner.update_regularizer()
            for x, y in loader:
                loss = criterion(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                pruner.regularize(model)
                optimizer.step()
        pruner.step()

    The model may be wrapped in :obj:`DistributedDataParallel` or :obj:`DataParallel` before
    or after the pruner is built; the pruner traces the module inside the wrapper. :meth:`regularize` runs after
    DDP has averaged the gradients, on each rank's own copy of the weights. DDP keeps those
    copies identical, so every rank adds the same TSCNC gradient and the ranks stay in
    step. Layers masked with :obj:`torch.nn.utils.prune` are regularised through their
    effective weight ``weight_orig * weight_mask``; the gradient lands on ``weight_orig``.

    Args:
        model (torch.nn.Module): the model to prune; a DistributedDataParallel or
            DataParallel wrapper is unwrapped.
        example_inputs (torch.Tensor or list): inputs for Torch-Pruning's graph tracing.
        importance (callable, optional): group importance for :meth:`step`.
            (default: :obj:`tp.importance.GroupMagnitudeImportance(p=2)`)
        pruning_ratio, ignored_layers, iterative_steps, global_pruning, ...: every argument
            of :obj:`tp.pruner.BasePruner` (torch-pruning 1.6.1), with the same meaning and
            default, forwarded by name. ``ignored_layers`` also exempts those layers (and
            their submodules) from the TSCNC terms.
        lambda_sparse (float, optional): weight :math:`\lambda_s \ge 0` of the sparsity
            term. (default: :obj:`1e-4`)
        lambda_cond (float, optional): weight :math:`\lambda_c \ge 0` of the condition
            term. (default: :obj:`1e-4`)
        a (float, optional): transformed-L1 parameter, > 0. (default: :obj:`1.0`)
        cond_form (str, optional): :obj:`"cheap"` (log-determinant of the short-side Gram
            matrix), :obj:`"exact"` (extreme singular values from the float64 Gram
            matrix, closed-form gradient) or :obj:`"exact_svd"` (the same value through
            an SVD, several times slower on CPU). (default: :obj:`"cheap"`)
            NOTE: the exact forms' gradient grows as :math:`1 / \sigma_k`. A square layer at
            random initialisation can have :math:`\kappa` near 2000, and without gradient
            clipping one SGD step then overshoots: training diverged with
            ``lambda_cond=0.02``. Clip the total gradient norm after :meth:`regularize`.
        kappa_target (float, optional): condition number the exact forms tolerate, >= 1.
            (default: :obj:`10.0`)
        eps (float, optional): floor (exact forms) or jitter (cheap form) of the condition term.
            (default: :obj:`1e-6`)
        sparsity (str, optional): :obj:`"structured"` (Torch-Pruning group norms) or
            :obj:`"unstructured"` (single weights). (default: :obj:`"structured"`)
        cond_every (int, optional): apply the condition term on every ``cond_every``-th
            :meth:`regularize` call only, scaled by ``cond_every`` so that its average
            strength stays :math:`\lambda_c`. Use it to amortise the exact form's SVDs.
            (default: :obj:`1`)
        reg (float, optional): alias of ``lambda_sparse`` for scripts written for
            ``GroupNormPruner`` or ``BNScalePruner``; takes precedence when given.
            (default: :obj:`None`)
        **kwargs: ``alpha``, ``delta_reg`` and ``group_lasso`` of the other Torch-Pruning
            pruners are accepted so a script can swap the class name only. TSCNC has no
            counterpart for them, so they are ignored with a warning. Any other name raises
            :obj:`TypeError`.
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        importance: Optional[Callable] = None,
        global_pruning: bool = False,
        pruning_ratio: float = 0.5,
        pruning_ratio_dict: Optional[Dict] = None,
        max_pruning_ratio: float = 1.0,
        iterative_steps: int = 1,
        iterative_pruning_ratio_scheduler: Callable = linear_scheduler,
        ignored_layers: Optional[List[nn.Module]] = None,
        round_to: Optional[int] = None,
        isomorphic: bool = False,
        in_channel_groups: Optional[Dict[nn.Module, int]] = None,
        out_channel_groups: Optional[Dict[nn.Module, int]] = None,
        num_heads: Optional[Dict[nn.Module, int]] = None,
        prune_num_heads: bool = False,
        prune_head_dims: bool = True,
        head_pruning_ratio: float = 0.0,
        head_pruning_ratio_dict: Optional[Dict[nn.Module, float]] = None,
        customized_pruners: Optional[Dict] = None,
        unwrapped_parameters: Optional[Dict] = None,
        root_module_types: Optional[List] = None,
        forward_fn: Optional[Callable] = None,
        output_transform: Optional[Callable] = None,
        channel_groups: Optional[Dict[nn.Module, int]] = None,
        ch_sparsity: Optional[float] = None,
        ch_sparsity_dict: Optional[Dict[nn.Module, float]] = None,
        *,
        lambda_sparse: float = 1e-4,
        lambda_cond: float = 1e-4,
        a: float = 1.0,
        cond_form: str = "cheap",
        kappa_target: float = 10.0,
        eps: float = 1e-6,
        sparsity: str = "structured",
        cond_every: int = 1,
        reg: Optional[float] = None,
        **kwargs: Any,
    ):
        check_module(model)
        if isinstance(pruning_ratio, bool) or not isinstance(pruning_ratio, (int, float)) \
                or not 0 <= pruning_ratio < 1:
            raise ValueError(
                f"`pruning_ratio` must be a fraction in [0, 1), got {pruning_ratio!r}: it is the "
                "share of channels to remove, e.g. 0.5.")
        unknown = sorted(set(kwargs) - set(_FOREIGN_PRUNER_ARGUMENTS))
        if unknown:
            raise TypeError(f"TSCNCPruner got unexpected keyword arguments {unknown}.")
        if kwargs:
            warnings.warn(
                f"TSCNCPruner ignores {sorted(kwargs)}: these belong to other Torch-Pruning "
                "pruners and have no TSCNC counterpart.",
                stacklevel=2,
            )
        if reg is not None:
            lambda_sparse = reg
        if importance is None:
            importance = tp.importance.GroupMagnitudeImportance(p=2)
        if root_module_types is None:
            root_module_types = [ops.TORCH_CONV, ops.TORCH_LINEAR, ops.TORCH_LSTM]

        # Fresh dicts per instance: BasePruner updates these in place.
        super().__init__(
            model=unwrap_model(model),
            example_inputs=example_inputs,
            importance=importance,
            global_pruning=global_pruning,
            pruning_ratio=pruning_ratio,
            pruning_ratio_dict=pruning_ratio_dict,
            max_pruning_ratio=max_pruning_ratio,
            iterative_steps=iterative_steps,
            iterative_pruning_ratio_scheduler=iterative_pruning_ratio_scheduler,
            ignored_layers=ignored_layers,
            round_to=round_to,
            isomorphic=isomorphic,
            in_channel_groups=dict(in_channel_groups or {}),
            out_channel_groups=dict(out_channel_groups or {}),
            num_heads=dict(num_heads or {}),
            prune_num_heads=prune_num_heads,
            prune_head_dims=prune_head_dims,
            head_pruning_ratio=head_pruning_ratio,
            head_pruning_ratio_dict=head_pruning_ratio_dict,
            customized_pruners=customized_pruners,
            unwrapped_parameters=unwrapped_parameters,
            root_module_types=root_module_types,
            forward_fn=forward_fn,
            output_transform=output_transform,
            channel_groups=dict(channel_groups or {}),
            ch_sparsity=ch_sparsity,
            ch_sparsity_dict=ch_sparsity_dict,
        )
        self.tscnc = TSCNCTerm(
            self,
            lambda_sparse=lambda_sparse,
            lambda_cond=lambda_cond,
            a=a,
            cond_form=cond_form,
            kappa_target=kappa_target,
            eps=eps,
            sparsity=sparsity,
            cond_every=cond_every,
        )
        self._warned_alpha = False

    def update_regularizer(self) -> None:
        """Rebuild the targeted layers and pruning groups; call it after :meth:`step`."""
        self.tscnc.refresh()

    def regularize(
        self,
        model: nn.Module,
        loss: Optional[Tensor] = None,
        reg: Optional[float] = None,
        alpha: Optional[float] = None,
        bias: bool = False,
    ) -> None:
        """Add the TSCNC gradient into ``.grad``; call it after ``loss.backward()``.

        Accepts the calling forms of every Torch-Pruning pruner: ``regularize(model)``,
        ``regularize(model, loss)`` (``BasePruner``), ``regularize(model, alpha=..., bias=...)``
        (``GroupNormPruner``) and ``regularize(model, reg=..., bias=...)`` (``BNScalePruner``).

        Args:
            model (torch.nn.Module): the model the pruner was built on, possibly wrapped in
                DistributedDataParallel or DataParallel.
            loss (torch.Tensor, optional): accepted for ``BasePruner`` compatibility and not
                used, because the TSCNC terms depend on the weights only. (default: :obj:`None`)
            reg (float, optional): ``lambda_sparse`` for this call only.
                (default: :obj:`None`, the pruner's ``lambda_sparse``)
            alpha (float, optional): ``GroupNormPruner``'s group scaling, which TSCNC does
                not have; ignored with a one-time warning. (default: :obj:`None`)
            bias (bool, optional): also apply the sparsity term to biases.
                (default: :obj:`False`)
        """
        _check_same_model(self, model)
        _check_loss(loss)
        if reg is not None:
            reg = check_non_negative(reg, "reg")
        if alpha is not None and not self._warned_alpha:
            self._warned_alpha = True
            warnings.warn(
                "TSCNCPruner.regularize() ignores `alpha` (GroupNormPruner's group scaling); "
                "set the strengths with lambda_sparse and lambda_cond.",
                stacklevel=2,
            )
        self.tscnc.add_gradients(lambda_sparse=reg, bias=bias)


def wrap(
    pruner: "tp.pruner.BasePruner",
    lambda_sparse: float = 1e-4,
    lambda_cond: float = 1e-4,
    a: float = 1.0,
    cond_form: str = "cheap",
    kappa_target: float = 10.0,
    eps: float = 1e-6,
    sparsity: str = "structured",
    cond_every: int = 1,
) -> "tp.pruner.BasePruner":
    """Add TSCNC on top of an existing Torch-Pruning pruner's own regulariser.

    The pruner's ``regularize`` is replaced, on this instance only, by one that first runs
    the original (with the arguments its signature accepts) and then adds the TSCNC
    gradient, see :class:`TSCNCTerm`. ``update_regularizer`` likewise runs the original and
    then refreshes the TSCNC groups. ``reg`` and ``alpha`` reach the original only;
    ``bias`` reaches both.

    Args:
        pruner (tp.pruner.BasePruner): the pruner to extend, for example a
            ``GroupNormPruner``.
        lambda_sparse, lambda_cond, a, cond_form, kappa_target, eps, sparsity, cond_every:
            see :class:`TSCNCPruner`.

    Returns:
        tp.pruner.BasePruner: the same pruner object, extended in place.
    """
    if not isinstance(pruner, tp.pruner.BasePruner):
        raise TypeError(
            f"wrap() needs a torch_pruning BasePruner, got {type(pruner).__name__}."
        )
    if isinstance(pruner, TSCNCPruner) or hasattr(pruner, "tscnc"):
        raise ValueError("This pruner already applies TSCNC; wrap it only once.")

    term = TSCNCTerm(
        pruner,
        lambda_sparse=lambda_sparse,
        lambda_cond=lambda_cond,
        a=a,
        cond_form=cond_form,
        kappa_target=kappa_target,
        eps=eps,
        sparsity=sparsity,
        cond_every=cond_every,
    )
    original_regularize = pruner.regularize
    original_update = pruner.update_regularizer
    accepted = inspect.signature(original_regularize).parameters

    def regularize(self, model: nn.Module, loss: Optional[Tensor] = None, **kwargs: Any) -> None:
        _check_same_model(self, model)
        _check_loss(loss)
        unknown = sorted(set(kwargs) - set(accepted) - {"reg", "alpha", "bias"})
        if unknown:
            raise TypeError(f"regularize() got unexpected keyword arguments {unknown}.")

        forwarded = {name: value for name, value in kwargs.items() if name in accepted}
        if loss is not None and "loss" in accepted:
            forwarded["loss"] = loss
        original_regularize(model, **forwarded)
        term.add_gradients(bias=bool(kwargs.get("bias", False)))

    def update_regularizer(self) -> None:
        original_update()
        term.refresh()

    pruner.tscnc = term
    pruner.regularize = types.MethodType(regularize, pruner)
    pruner.update_regularizer = types.MethodType(update_regularizer, pruner)
    return pruner
