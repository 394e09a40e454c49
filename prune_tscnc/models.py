r"""CIFAR-10 networks for the robust-pruning pipeline.

Every model starts with :class:`InputNormalization`, so it takes images in [0, 1] and attacks
measure the L-inf budget in pixel units (8/255 means eight grey levels).

- :class:`SmallCNN`: five 3x3 convolutions and two linear layers, for CPU demos.
- :func:`resnet18_cifar`: ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no max pool),
  He et al., "Deep Residual Learning for Image Recognition" (https://arxiv.org/abs/1512.03385).
- :class:`VGG`: VGG-11/13/16 with batch norm, Simonyan and Zisserman
  (https://arxiv.org/abs/1409.1556), with one linear classifier as is usual on CIFAR.

:func:`build_model` builds any of them by name; :func:`resize_to_state_dict` rebuilds layers
whose shapes Torch-Pruning changed, so a structurally pruned checkpoint loads into a fresh model.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from .data import CIFAR10_MEAN, CIFAR10_STD

__all__ = [
    "InputNormalization",
    "SmallCNN",
    "ResNetCIFAR",
    "VGG",
    "build_model",
    "resnet18_cifar",
    "resize_to_state_dict",
    "MODEL_NAMES",
]


class InputNormalization(nn.Module):
    r"""Per-channel normalisation as the first layer: :math:`x' = (x - \mu_c) / \sigma_c`.

    Args:
        mean (sequence of float): channel means (default: CIFAR-10 training-set mean)
        std (sequence of float): channel standard deviations (default: CIFAR-10 std)
    """

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN, std: Sequence[float] = CIFAR10_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    r"""A six-convolution CNN with global average pooling, small enough for adversarial training on a CPU.

    Layout: ``conv(w) conv(w) pool conv(2w) conv(2w) pool conv(4w) conv(4w) pool``, global average
    pooling, then ``linear(4w -> hidden) linear(hidden -> num_classes)``. Without a large flattened
    linear layer, most weights sit in the convolutions, so global magnitude pruning spreads over
    the whole network instead of emptying one fully connected layer.

    Args:
        num_classes (int): number of classes (default: :obj:`10`)
        width (int): channels of the first two convolutions, ``w`` above (default: :obj:`16`)
        hidden (int): width of the hidden linear layer (default: :obj:`64`)

    Shapes:
        - input: ``[batch, 3, 32, 32]`` in [0, 1]
        - output: logits ``[batch, num_classes]``
    """

    def __init__(self, num_classes: int = 10, width: int = 16, hidden: int = 64):
        super().__init__()
        if width <= 0 or hidden <= 0 or num_classes <= 1:
            raise ValueError(
                f"SmallCNN needs width > 0, hidden > 0 and num_classes > 1, got width={width}, "
                f"hidden={hidden}, num_classes={num_classes}"
            )
        self.normalize = InputNormalization()
        self.features = nn.Sequential(
            _conv_bn_relu(3, width),
            _conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            _conv_bn_relu(width, 2 * width),
            _conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
            _conv_bn_relu(2 * width, 4 * width),
            _conv_bn_relu(4 * width, 4 * width),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.normalize(x)))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity or 1x1-projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    r"""ResNet with the CIFAR stem: a 3x3 stride-1 first convolution and no max pool.

    Args:
        blocks_per_stage (sequence of int): basic blocks in each of the four stages
            (default: :obj:`(2, 2, 2, 2)`, ResNet-18)
        num_classes (int): number of classes (default: :obj:`10`)
        width (int): channels of the first stage, doubled at each later stage (default: :obj:`64`)

    Shapes:
        - input: ``[batch, 3, 32, 32]`` in [0, 1]
        - output: logits ``[batch, num_classes]``
    """

    def __init__(self, blocks_per_stage: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10, width: int = 64):
        super().__init__()
        if len(blocks_per_stage) != 4 or any(b <= 0 for b in blocks_per_stage):
            raise ValueError(f"blocks_per_stage must be four positive integers, got {tuple(blocks_per_stage)}")
        self.normalize = InputNormalization()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)

        stages = []
        in_channels = width
        for index, num_blocks in enumerate(blocks_per_stage):
            out_channels = width * 2**index
            stride = 1 if index == 0 else 2
            blocks = []
            for block_index in range(num_blocks):
                blocks.append(BasicBlock(in_channels, out_channels, stride if block_index == 0 else 1))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.pool(out), 1))


def resnet18_cifar(num_classes: int = 10, width: int = 64) -> ResNetCIFAR:
    """Build ResNet-18 for 32x32 inputs (11.2 M parameters at ``width=64``)."""
    return ResNetCIFAR((2, 2, 2, 2), num_classes=num_classes, width=width)


# Each entry lists output channels of 3x3 convolutions; "M" is a 2x2 max pool.
_VGG_SETTINGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    r"""VGG with batch norm for 32x32 inputs and a single linear classifier.

    Args:
        depth (int): 11, 13 or 16 (default: :obj:`16`)
        num_classes (int): number of classes (default: :obj:`10`)
        width_multiplier (float): scales every convolution's channels (default: :obj:`1.0`)

    Shapes:
        - input: ``[batch, 3, 32, 32]`` in [0, 1]
        - output: logits ``[batch, num_classes]``
    """

    def __init__(self, depth: int = 16, num_classes: int = 10, width_multiplier: float = 1.0):
        super().__init__()
        if depth not in _VGG_SETTINGS:
            raise ValueError(f"VGG depth must be one of {sorted(_VGG_SETTINGS)}, got {depth}")
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
        self.normalize = InputNormalization()

        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG_SETTINGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out_channels = max(1, int(round(item * width_multiplier)))
            layers.append(_conv_bn_relu(in_channels, out_channels))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.features(self.normalize(x))
        return self.classifier(torch.flatten(out, 1))


MODEL_NAMES = ("small_cnn", "resnet18", "vgg11", "vgg13", "vgg16")


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a model from :data:`MODEL_NAMES`; ``kwargs`` go to its constructor (e.g. ``width``)."""
    if name == "small_cnn":
        return SmallCNN(num_classes=num_classes, **kwargs)
    if name == "resnet18":
        return resnet18_cifar(num_classes=num_classes, **kwargs)
    if name.startswith("vgg") and name in MODEL_NAMES:
        return VGG(depth=int(name[3:]), num_classes=num_classes, **kwargs)
    raise ValueError(f"unknown model name {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def resize_to_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> nn.Module:
    """Replace convolutions, linear layers and batch norms whose shapes differ from ``state_dict``.

    Torch-Pruning removes channels in place, so a pruned model no longer matches the constructor's
    shapes. This rebuilds each mismatched layer with the saved shape (keeping kernel size, stride,
    padding, groups and bias) so that ``model.load_state_dict(state_dict)`` succeeds. Only
    ``nn.Conv2d``, ``nn.Linear`` and ``nn.BatchNorm2d`` are handled; other layers must already match.
    """
    replacements: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if key not in state_dict:
            continue
        weight = state_dict[key]
        if isinstance(module, nn.Conv2d) and tuple(weight.shape) != tuple(module.weight.shape):
            groups = module.groups
            if groups != 1 and groups == module.in_channels == module.out_channels:
                groups = weight.shape[0]  # depthwise stays depthwise after pruning
            replacements[name] = nn.Conv2d(
                weight.shape[1] * groups,
                weight.shape[0],
                module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=groups,
                bias=module.bias is not None,
            )
        elif isinstance(module, nn.Linear) and tuple(weight.shape) != tuple(module.weight.shape):
            replacements[name] = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        elif isinstance(module, nn.BatchNorm2d) and weight.shape[0] != module.num_features:
            replacements[name] = nn.BatchNorm2d(
                weight.shape[0], eps=module.eps, momentum=module.momentum, affine=module.affine
            )

    for name, new_module in replacements.items():
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, new_module)
    return model
