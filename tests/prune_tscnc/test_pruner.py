"""Tests of TSCNCPruner, wrap() and their use in a Torch-Pruning sparse-training loop."""

import copy
import inspect
import warnings

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune as torch_prune

from prune_tscnc import TSCNCPruner, wrap


class SmallNet(nn.Module):
    """Conv-BN stages, a frozen conv and a linear head: enough for groups of every kind."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        return self.head(x.mean(dim=(2, 3)))


def _make_model(seed=0, freeze_conv3=True):
    torch.manual_seed(seed)
    model = SmallNet()
    with torch.no_grad():
        # Nonzero BatchNorm shifts, so that their sparsity gradient is nonzero too.
        for norm in (model.bn1, model.bn2):
            norm.bias.uniform_(-0.5, 0.5)
            norm.weight.uniform_(0.5, 1.5)
    if freeze_conv3:
        model.conv3.requires_grad_(False)
    return model


def _inputs(seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 8, 8, generator=generator)


def _backward(model, inputs):
    model.zero_grad(set_to_none=True)
    loss = model(inputs).square().mean()
    loss.backward()
    return loss


def _grads(model):
    return {
        name: None if parameter.grad is None else parameter.grad.clone()
        for name, parameter in model.named_parameters()
    }


def _changed(before, model):
    changed = set()
    for name, parameter in model.named_parameters():
        old = before[name]
        if old is None and parameter.grad is None:
            continue
        if old is None or parameter.grad is None or not torch.equal(old, parameter.grad):
            changed.add(name)
    return changed


# Parameters that TSCNC changes in SmallNet with head ignored and conv3 frozen.
_WEIGHTS = {"conv1.weight", "conv2.weight"}
_EXPECTED = {
    ("structured", False): _WEIGHTS | {"bn1.weight", "bn2.weight"},
    ("structured", True): _WEIGHTS | {"bn1.weight", "bn2.weight", "conv1.bias", "conv2.bias",
                                      "bn1.bias", "bn2.bias"},
    ("unstructured", False): _WEIGHTS,
    ("unstructured", True): _WEIGHTS | {"conv1.bias", "conv2.bias"},
}

_CALLS = {
    "model": (lambda pruner, model, loss: pruner.regularize(model), False),
    "model_loss": (lambda pruner, model, loss: pruner.regularize(model, loss), False),
    "reg": (lambda pruner, model, loss: pruner.regularize(model, reg=1e-3), False),
    "alpha": (lambda pruner, model, loss: pruner.regularize(model, alpha=2**4), False),
    "bias": (lambda pruner, model, loss: pruner.regularize(model, bias=True), True),
    "alpha_bias": (lambda pruner, model, loss: pruner.regularize(model, alpha=4, bias=True),
                   True),
}


@pytest.mark.parametrize("sparsity", ["structured", "unstructured"])
@pytest.mark.parametrize("call", list(_CALLS))
def test_regularize_changes_only_targeted_grads(sparsity, call):
    model = _make_model()
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, pruning_ratio=0.5, ignored_layers=[model.head],
                         sparsity=sparsity, lambda_sparse=1e-2, lambda_cond=1e-2)
    loss = _backward(model, inputs)
    before = _grads(model)

    regularize, with_bias = _CALLS[call]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        regularize(pruner, model, loss)

    assert _changed(before, model) == _EXPECTED[(sparsity, with_bias)]
    assert torch.equal(before["head.weight"], model.head.weight.grad)
    assert torch.equal(before["head.bias"], model.head.bias.grad)
    assert model.conv3.weight.grad is None


@pytest.mark.parametrize("cond_form", ["cheap", "exact"])
def test_regularize_adds_the_penalty_gradient(cond_form):
    model = _make_model()
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, ignored_layers=[model.head], cond_form=cond_form,
                         lambda_sparse=1e-2, lambda_cond=1e-1, kappa_target=1.0)
    _backward(model, inputs)
    before = _grads(model)

    total, targets = pruner.tscnc.penalty()
    expected = dict(zip(map(id, targets), torch.autograd.grad(total, targets)))
    pruner.regularize(model)

    for name, parameter in model.named_parameters():
        if id(parameter) in expected:
            added = parameter.grad - before[name]
            assert torch.allclose(added, expected[id(parameter)], atol=1e-7), name


def test_reg_overrides_lambda_sparse_for_one_call():
    model = _make_model()
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, ignored_layers=[model.head], sparsity="unstructured",
                         lambda_sparse=1e-2, lambda_cond=0.0)
    _backward(model, inputs)
    before = model.conv1.weight.grad.clone()
    pruner.regularize(model)
    added_default = model.conv1.weight.grad - before

    before = model.conv1.weight.grad.clone()
    pruner.regularize(model, reg=2e-2)
    added_doubled = model.conv1.weight.grad - before

    assert torch.allclose(added_doubled, 2.0 * added_default, atol=1e-8)


def test_alpha_warns_once():
    model = _make_model()
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, ignored_layers=[model.head])
    _backward(model, inputs)

    with pytest.warns(UserWarning, match="ignores `alpha`"):
        pruner.regularize(model, alpha=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruner.regularize(model, alpha=4)


@pytest.mark.parametrize("sparsity", ["structured", "unstructured"])
def test_regularize_after_step_and_update(sparsity):
    model = _make_model(freeze_conv3=False)
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, pruning_ratio=0.5, ignored_layers=[model.head],
                         sparsity=sparsity, lambda_sparse=1e-2, lambda_cond=1e-2)
    pruner.step()
    pruner.update_regularizer()
    assert model.conv1.out_channels == 4
    assert model.conv2.out_channels == 8

    _backward(model, inputs)
    before = _grads(model)
    pruner.regularize(model)

    changed = _changed(before, model)
    assert {"conv1.weight", "conv2.weight", "conv3.weight"} <= changed
    assert "head.weight" not in changed
    for name, parameter in model.named_parameters():
        assert parameter.grad.shape == parameter.shape, name
        assert torch.isfinite(parameter.grad).all(), name


def test_stale_groups_refresh_without_update_call():
    model = _make_model(freeze_conv3=False)
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, pruning_ratio=0.5, ignored_layers=[model.head],
                         sparsity="structured", lambda_sparse=1e-2)
    pruner.step()

    _backward(model, inputs)
    before = _grads(model)
    pruner.regularize(model)
    assert "conv1.weight" in _changed(before, model)


def test_iterative_pruning_loop_runs():
    model = _make_model(freeze_conv3=False)
    inputs = _inputs()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    pruner = TSCNCPruner(model, inputs, pruning_ratio=0.5, iterative_steps=2,
                         ignored_layers=[model.head], lambda_cond=1e-2, cond_form="exact")
    for _ in range(2):
        pruner.update_regularizer()
        for _ in range(2):
            optimizer.zero_grad()
            model(inputs).square().mean().backward()
            pruner.regularize(model)
            optimizer.step()
        pruner.step()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)

    assert model.conv2.out_channels == 8
    assert torch.isfinite(model(inputs)).all()


def test_cond_every_skips_and_scales():
    model = _make_model()
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, ignored_layers=[model.head], lambda_sparse=0.0,
                         lambda_cond=1e-2, cond_every=2)
    _backward(model, inputs)
    total, _ = pruner.tscnc.penalty()
    single = TSCNCPruner(model, inputs, ignored_layers=[model.head], lambda_sparse=0.0,
                         lambda_cond=1e-2).tscnc.penalty()[0]
    assert torch.allclose(total, 2.0 * single, atol=1e-7)

    pruner.regularize(model)
    before = _grads(model)
    pruner.regularize(model)
    assert _changed(before, model) == set()


def test_data_parallel_wrapper_is_unwrapped():
    model = _make_model()
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, ignored_layers=[model.head])
    _backward(model, inputs)
    before = _grads(model)

    pruner.regularize(nn.DataParallel(model))
    assert "conv1.weight" in _changed(before, model)


def test_regularize_rejects_other_model():
    model = _make_model()
    pruner = TSCNCPruner(model, _inputs(), ignored_layers=[model.head])
    with pytest.raises(ValueError, match="different model"):
        pruner.regularize(_make_model())
    with pytest.raises(TypeError, match="nn.Module"):
        pruner.regularize("model")
    with pytest.raises(TypeError, match="alpha="):
        pruner.regularize(model, 16)
    with pytest.raises(ValueError, match="`reg`"):
        pruner.regularize(model, reg=-1.0)


def test_masked_model_keeps_masked_grads():
    model = _make_model(freeze_conv3=False)
    torch_prune.l1_unstructured(model.conv2, "weight", amount=0.9)
    mask = model.conv2.weight_mask.bool()
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, ignored_layers=[model.head], sparsity="unstructured",
                         lambda_sparse=1e-2, lambda_cond=1e-2)
    _backward(model, inputs)
    before = model.conv2.weight_orig.grad.clone()
    pruner.regularize(model)
    added = model.conv2.weight_orig.grad - before

    assert torch.count_nonzero(added[~mask]) == 0
    assert torch.count_nonzero(added[mask]) > 0


def test_warns_once_when_nothing_is_targeted():
    model = _make_model()
    inputs = _inputs()
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    pruner = TSCNCPruner(model, inputs, ignored_layers=[model.head])
    _backward(model, inputs)

    with pytest.warns(UserWarning, match="no layer to regularise"):
        pruner.regularize(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruner.regularize(model)


def test_wrap_adds_to_group_norm_regularizer():
    model_plain = _make_model()
    model_wrapped = copy.deepcopy(model_plain)
    inputs = _inputs()
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    plain = tp.pruner.GroupNormPruner(model_plain, inputs, importance, reg=1e-3,
                                      ignored_layers=[model_plain.head])
    wrapped = wrap(
        tp.pruner.GroupNormPruner(model_wrapped, inputs, importance, reg=1e-3,
                                  ignored_layers=[model_wrapped.head]),
        lambda_sparse=1e-2, lambda_cond=1e-2,
    )

    _backward(model_plain, inputs)
    raw = _grads(model_plain)
    _backward(model_wrapped, inputs)
    total, targets = wrapped.tscnc.penalty()
    tscnc_grads = dict(zip(map(id, targets), torch.autograd.grad(total, targets)))

    plain.regularize(model_plain, alpha=2**4)
    wrapped.regularize(model_wrapped, alpha=2**4)

    for (name, p_plain), p_wrapped in zip(model_plain.named_parameters(),
                                          model_wrapped.parameters()):
        if p_plain.grad is None:
            continue
        own = p_plain.grad - raw[name]
        expected = p_plain.grad + tscnc_grads.get(id(p_wrapped), torch.zeros_like(own))
        assert torch.allclose(p_wrapped.grad, expected, atol=1e-7), name
    assert not torch.equal(model_wrapped.conv1.weight.grad, model_plain.conv1.weight.grad)
    assert torch.count_nonzero(model_plain.conv1.weight.grad - raw["conv1.weight"]) > 0


@pytest.mark.parametrize("call", ["loss", "reg", "bias"])
def test_wrap_accepts_all_calling_forms(call):
    model = _make_model()
    inputs = _inputs()
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    pruner = wrap(tp.pruner.BNScalePruner(model, inputs, importance,
                                          ignored_layers=[model.head]))
    loss = _backward(model, inputs)
    before = _grads(model)

    if call == "loss":
        pruner.regularize(model, loss)
    elif call == "reg":
        pruner.regularize(model, reg=1e-3)
    else:
        pruner.regularize(model, bias=True)
    assert {"conv1.weight", "bn1.weight"} <= _changed(before, model)
    assert torch.equal(before["head.weight"], model.head.weight.grad)


def test_wrap_refreshes_after_step():
    model = _make_model(freeze_conv3=False)
    inputs = _inputs()
    pruner = wrap(tp.pruner.GroupNormPruner(model, inputs,
                                            tp.importance.GroupMagnitudeImportance(p=2),
                                            pruning_ratio=0.5, ignored_layers=[model.head]))
    pruner.step()
    pruner.update_regularizer()
    _backward(model, inputs)
    before = _grads(model)
    pruner.regularize(model)
    assert "conv1.weight" in _changed(before, model)


def test_wrap_rejects_bad_input():
    model = _make_model()
    inputs = _inputs()
    with pytest.raises(TypeError, match="BasePruner"):
        wrap(model)
    pruner = TSCNCPruner(model, inputs, ignored_layers=[model.head])
    with pytest.raises(ValueError, match="already"):
        wrap(pruner)
    plain = tp.pruner.GroupNormPruner(model, inputs, tp.importance.GroupMagnitudeImportance())
    with pytest.raises(ValueError, match="lambda_cond"):
        wrap(plain, lambda_cond=-1.0)

    wrapped = wrap(tp.pruner.BNScalePruner(model, inputs,
                                           tp.importance.GroupMagnitudeImportance()))
    with pytest.raises(TypeError, match="reg="):
        wrapped.regularize(model, 1e-4)
    with pytest.raises(TypeError, match="unexpected"):
        wrapped.regularize(model, strength=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(pruning_ratio=1.5), "`pruning_ratio` must be a fraction"),
    (dict(pruning_ratio=1.0), "`pruning_ratio` must be a fraction"),
    (dict(cond_form="svd"), "`cond_form` must be one of"),
])
def test_pruner_rejects_bad_arguments(kwargs, match):
    model = _make_model()
    with pytest.raises(ValueError, match=match):
        TSCNCPruner(model, _inputs(), **kwargs)


def test_signature_covers_base_pruner():
    base = inspect.signature(tp.pruner.BasePruner.__init__).parameters
    ours = inspect.signature(TSCNCPruner.__init__).parameters
    assert set(base) <= set(ours)
    assert list(ours)[:4] == ["self", "model", "example_inputs", "importance"]
    regularize = inspect.signature(TSCNCPruner.regularize).parameters
    assert list(regularize)[:3] == ["self", "model", "loss"]


def test_default_importance_is_group_magnitude():
    model = _make_model()
    pruner = TSCNCPruner(model, _inputs())
    assert isinstance(pruner.importance, tp.importance.GroupMagnitudeImportance)
    assert pruner.importance.p == 2


def test_reg_alias_and_foreign_arguments():
    model = _make_model()
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, reg=3e-4)
    assert pruner.tscnc.lambda_sparse == 3e-4
    with pytest.warns(UserWarning, match="alpha"):
        TSCNCPruner(model, inputs, alpha=4)
    with pytest.raises(TypeError, match="unexpected"):
        TSCNCPruner(model, inputs, lambda_sparsity=1e-4)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"lambda_sparse": -1e-4}, ValueError),
        ({"lambda_cond": -1e-4}, ValueError),
        ({"a": 0.0}, ValueError),
        ({"cond_form": "fast"}, ValueError),
        ({"kappa_target": 0.9}, ValueError),
        ({"sparsity": "channel"}, ValueError),
        ({"cond_every": 0}, ValueError),
    ],
)
def test_pruner_rejects_bad_arguments(kwargs, error):
    model = _make_model()
    with pytest.raises(error):
        TSCNCPruner(model, _inputs(), **kwargs)


def test_pruner_rejects_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        TSCNCPruner([nn.Linear(2, 2)], torch.randn(1, 2))


def test_separate_pruners_do_not_share_state():
    model_a = _make_model()
    model_b = _make_model()
    inputs = _inputs()
    pruner_a = TSCNCPruner(model_a, inputs)
    pruner_b = TSCNCPruner(model_b, inputs)
    assert pruner_a.out_channel_groups is not pruner_b.out_channel_groups
    assert pruner_a.in_channel_groups is not pruner_b.in_channel_groups


@pytest.mark.parametrize("sparsity", ["structured", "unstructured"])
def test_layer_frozen_after_construction_is_skipped(sparsity):
    model = _make_model()
    inputs = _inputs()
    pruner = TSCNCPruner(model, inputs, ignored_layers=[model.head], sparsity=sparsity,
                         lambda_sparse=1e-2, lambda_cond=1e-2)
    _backward(model, inputs)
    model.conv2.weight.requires_grad_(False)
    before = _grads(model)
    pruner.regularize(model)

    changed = _changed(before, model)
    assert "conv2.weight" not in changed
    assert "conv1.weight" in changed


def test_pruner_built_on_data_parallel_model():
    model = _make_model()
    inputs = _inputs()
    pruner = TSCNCPruner(nn.DataParallel(model), inputs, ignored_layers=[model.head])
    assert pruner.model is model
