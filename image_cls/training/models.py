"""Image classifiers used as L2T-DLF students: MLP, LeNet, CIFAR ResNets, Wide ResNets.

Every model maps float images N x C x H x W to logits N x classes and keeps its
parameters untouched in forward (no in-place ops), so it can be unrolled with
``torch.func.functional_call``.
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WRN_PATTERN = "wrn-DEPTH-WIDTH"
MODEL_NAMES = ("mlp", "lenet", "resnet8", "resnet20", "resnet32", WRN_PATTERN)
_RESNET_DEPTHS = {"resnet8": 8, "resnet20": 20, "resnet32": 32}
_WRN_NAME = re.compile(r"wrn-(\d+)-(\d+)")


class MLP(nn.Module):
    """Two hidden layers (500, 300) with ReLU, as in the paper's MNIST MLP student."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, 500),
            nn.ReLU(),
            nn.Linear(500, 300),
            nn.ReLU(),
            nn.Linear(300, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class LeNet(nn.Module):
    """Caffe/Theano LeNet: conv20-pool-conv50-pool-fc500-fc (no activation after the convs)."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        feature_size = ((image_size - 4) // 2 - 4) // 2
        if feature_size < 1:
            raise ValueError(f"LeNet needs images of at least 16x16 pixels, got {image_size}x{image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, kernel_size=5),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(50 * feature_size * feature_size, 500),
            nn.ReLU(),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class ShortcutA(nn.Module):
    """Option-A shortcut (He et al. 2016): subsample by the stride, zero-pad new channels; no parameters."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    """Post-activation residual block of the CIFAR ResNets."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        needs_shortcut = stride != 1 or in_planes != planes
        self.shortcut = ShortcutA(in_planes, planes, stride) if needs_shortcut else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR (He et al. 2016, section 4.2): stages of 16/32/64 channels."""

    def __init__(self, depth: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(blocks_per_stage):
                stages.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.pool(self.stages(x))
        return self.fc(torch.flatten(x, 1))


class WideBasicBlock(nn.Module):
    """Pre-activation block of Wide ResNets: BN-ReLU-conv-BN-ReLU-dropout-conv."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        needs_projection = stride != 1 or in_planes != planes
        self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        # As in the reference code, a projection shortcut reads the activated input.
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis 2016): widths 16, 16k, 32k, 64k."""

    def __init__(self, depth: int, widen_factor: int, in_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        blocks_per_stage = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages, in_planes = [], 16
        for planes, stride in ((16 * widen_factor, 1), (32 * widen_factor, 2), (64 * widen_factor, 2)):
            for i in range(blocks_per_stage):
                stages.append(WideBasicBlock(in_planes, planes, stride if i == 0 else 1, dropout))
                in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.conv1(x))
        x = self.pool(F.relu(self.bn(x)))
        return self.fc(torch.flatten(x, 1))


def _kaiming_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)


def parse_wrn(name: str) -> tuple[int, int]:
    """(depth, widen factor) of 'wrn-DEPTH-WIDTH', or ValueError saying what is wrong."""
    match = _WRN_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)} (e.g. wrn-28-10)")
    depth, width = int(match.group(1)), int(match.group(2))
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(
            f"unknown model {name!r}: Wide ResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), "
            f"got {depth}; choose from {', '.join(MODEL_NAMES)}"
        )
    if width < 1:
        raise ValueError(f"unknown model {name!r}: Wide ResNet width must be >= 1; choose from {', '.join(MODEL_NAMES)}")
    return depth, width


def build_model(name: str, num_classes: int, in_channels: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """The student network called `name`; dropout only exists in Wide ResNets."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if dropout > 0 and not name.startswith("wrn-"):
        raise ValueError(f"dropout is only supported by Wide ResNets ({WRN_PATTERN}), not {name!r}")
    if name == "mlp":
        return MLP(in_channels * image_size * image_size, num_classes)
    if name == "lenet":
        return LeNet(in_channels, image_size, num_classes)
    if name in _RESNET_DEPTHS:
        return CifarResNet(_RESNET_DEPTHS[name], in_channels, num_classes)
    depth, width = parse_wrn(name)
    return WideResNet(depth, width, in_channels, num_classes, dropout)
