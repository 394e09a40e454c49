"""Tests for the CIFAR models and for rebuilding structurally pruned checkpoints."""

import pytest
import torch
import torch_pruning as tp

from prune_tscnc.data import CIFAR10_MEAN, CIFAR10_STD
from prune_tscnc.models import InputNormalization, SmallCNN, build_model, resize_to_state_dict


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "vgg11", "vgg16"])
def test_output_shape(name):
    model = build_model(name, num_classes=7).eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 7)


def test_resnet18_parameter_count():
    # 11,173,962 is the usual count of the CIFAR ResNet-18 with 10 classes.
    assert sum(p.numel() for p in build_model("resnet18").parameters()) == 11_173_962


def test_input_normalization_values():
    layer = InputNormalization()
    x = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(layer(x), torch.zeros(1, 3, 2, 2), atol=1e-6)
    y = x + torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert torch.allclose(layer(y), torch.ones(1, 3, 2, 2), atol=1e-6)


@pytest.mark.parametrize("name", ["resnet", "vgg19", ""])
def test_unknown_name_rejected(name):
    with pytest.raises(ValueError, match="unknown model name"):
        build_model(name)


def test_small_cnn_rejects_zero_width():
    with pytest.raises(ValueError, match="width"):
        SmallCNN(width=0)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_resize_loads_pruned_state(name):
    torch.manual_seed(0)
    model = build_model(name, **({"width": 8} if name == "resnet18" else {})).eval()
    classifier = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.BasePruner(model, torch.zeros(1, 3, 32, 32), tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.5, ignored_layers=[classifier])
    pruner.step()
    state = model.state_dict()

    fresh = build_model(name, **({"width": 8} if name == "resnet18" else {}))
    resize_to_state_dict(fresh, state)
    fresh.load_state_dict(state)
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(fresh.eval()(x), model(x), atol=1e-5)
