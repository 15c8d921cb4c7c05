"""PyTorch re-implementations of the official AdderNet models (huawei-noah/AdderNet `adder.py`,
`resnet20.py`, `resnet50.py`), written from ../shared/specs/ADDERNET.md 1 and 5.1/5.5, with
forward passes: the ground truth that converted checkpoints are compared against.

Two formulations of the adder layer (forward only; tests run under `torch.no_grad()`):
  - 'official': the official `adder2d_function` literally: im2col with `F.unfold`, broadcast the
    (C_out, K, L) difference, abs, sum. Materialises C_out * K * L floats: fine for a batch of 64
    CIFAR images, far too slow for 10,000 on a CPU.
  - 'fast': im2col by strided views of the channels-last input, then the L1 distance between
    every patch row and every filter in a loop that `torch.compile` (inductor, C++) fuses and
    vectorises; where compilation is unavailable, `torch.cdist(rows, filters, p=1)` (about 3x
    slower). Tests show that it equals 'official' (to float32 rounding).
Layouts are PyTorch's: NCHW activations, OIHW filters. Only tests import this module.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

FORMULATIONS = ("official", "fast")


def adder2d_official(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """adder.py `adder2d_function` + `adder.forward`: Y = -sum |W_col - X_col| (paper Eq. 2)."""
    n_filters, _, h_filter, w_filter = w.size()
    n_x, _, h_x, w_x = x.size()
    h_out = int((h_x - h_filter + 2 * padding) / stride + 1)
    w_out = int((w_x - w_filter + 2 * padding) / stride + 1)
    x_col = F.unfold(
        x.view(1, -1, h_x, w_x), h_filter, dilation=1, padding=padding, stride=stride
    ).view(n_x, -1, h_out * w_out)
    x_col = x_col.permute(1, 2, 0).contiguous().view(x_col.size(1), -1)
    w_col = w.view(n_filters, -1)
    out = -(w_col.unsqueeze(2) - x_col.unsqueeze(0)).abs().sum(1)
    out = out.view(n_filters, h_out, w_out, n_x)
    return out.permute(3, 0, 1, 2).contiguous()


def _patch_rows(x: torch.Tensor, k: int, stride: int, padding: int):
    """im2col by strided views of the channels-last padded input: (N*H_out*W_out, k*k*C) rows
    in (u, v, c) order (so that the copy moves runs of C contiguous floats), H_out, W_out."""
    xp = F.pad(x, (padding, padding, padding, padding)).permute(0, 2, 3, 1).contiguous()
    patches = xp.unfold(1, k, stride).unfold(2, k, stride)  # N, Ho, Wo, C, k(u), k(v)
    h_out, w_out = patches.shape[1:3]
    rows = patches.permute(0, 1, 2, 4, 5, 3).reshape(-1, k * k * x.shape[1])
    return rows, h_out, w_out


def _l1_distances(rows: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """(L, K), (O, K) -> (L, O): sum_k |rows - filters|, reduced along the contiguous K."""
    return (rows[:, None, :] - filters[None, :, :]).abs().sum(-1)


def _negative_l1(rows: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    return -_l1_distances(rows, filters)


@functools.cache
def _negative_l1_kernel():
    """`_negative_l1` compiled by inductor (C++: one fused, vectorised loop, no (L, O, K) tensor;
    the row count is dynamic, so one compilation per layer shape serves every batch size), or
    `-torch.cdist(p=1)` where compilation fails (no C++ toolchain)."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    compiled = torch.compile(_negative_l1, fullgraph=True)

    def kernel(rows, filters):
        torch._dynamo.mark_dynamic(rows, 0)
        return compiled(rows, filters)

    try:
        if torch.equal(kernel(torch.zeros(2, 3), torch.ones(4, 3)), torch.full((2, 4), -3.0)):
            return kernel
    except Exception:  # any inductor or toolchain failure
        pass
    return lambda rows, filters: -torch.cdist(rows, filters, p=1.0)


def adder2d_fast(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """`adder2d_official`'s values (up to float rounding) without its (O, K, L) tensor."""
    rows, h_out, w_out = _patch_rows(x, w.shape[-1], stride, padding)
    filters = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)  # (O, k*k*C), (u, v, c) order
    out = _negative_l1_kernel()(rows, filters)  # (N*Ho*Wo, O)
    return out.view(x.shape[0], h_out, w_out, -1).permute(0, 3, 1, 2)


class Adder2d(nn.Module):
    """adder.py `adder2d`: filters `adder` (O, I, k, k) ~ N(0, 1), no bias (as every official
    model). `formulation` picks 'official' or 'fast' (see the module docstring)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.adder = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.formulation = "official"

    def forward(self, x):
        fn = adder2d_official if self.formulation == "official" else adder2d_fast
        return fn(x, self.adder, self.stride, self.padding)


def set_formulation(model: nn.Module, formulation: str) -> nn.Module:
    """Switches every adder layer of `model` to 'official' or 'fast'; returns `model`."""
    assert formulation in FORMULATIONS, formulation
    for module in model.modules():
        if isinstance(module, Adder2d):
            module.formulation = formulation
    return model


# ---------------------------------------------------------------------------------------------
# resnet20.py (ADDERNET.md 5.1)


def conv3x3(in_planes, out_planes, stride=1):
    """resnet20.py: the 3x3 'convolution' of a block is an adder layer."""
    return Adder2d(in_planes, out_planes, 3, stride=stride, padding=1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu(out)


class CifarResNet(nn.Module):
    """resnet20.py `ResNet`: conv3x3 stem, three stages, AvgPool(8) -> conv1x1 -> BN(logits)."""

    def __init__(self, block, layers, num_classes=10):
        super().__init__()
        self.inplanes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 16, layers[0])
        self.layer2 = self._make_layer(block, 32, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 64, layers[2], stride=2)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Conv2d(64 * block.expansion, num_classes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                Adder2d(self.inplanes, planes * block.expansion, 1, stride=stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.bn2(self.fc(self.avgpool(x)))
        return x.view(x.size(0), -1)


def resnet20(num_classes=10) -> CifarResNet:
    return CifarResNet(BasicBlock, [3, 3, 3], num_classes)


# ---------------------------------------------------------------------------------------------
# resnet50.py (ADDERNET.md 5.5)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = Adder2d(inplanes, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = Adder2d(planes, planes, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = Adder2d(planes, planes * 4, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return self.relu(out)


class ImageNetResNet(nn.Module):
    """resnet50.py `ResNet`: conv7x7/2 + maxpool stem, four stages, AdaptiveAvgPool(1) ->
    conv1x1 with bias -> BN(logits)."""

    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(512 * block.expansion, num_classes, 1)  # bias=True (default)
        self.bn2 = nn.BatchNorm2d(num_classes)

    _make_layer = CifarResNet._make_layer

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.bn2(self.fc(self.avgpool(x)))
        return x.view(x.size(0), -1)


def resnet50(num_classes=1000) -> ImageNetResNet:
    return ImageNetResNet(Bottleneck, [3, 4, 6, 3], num_classes)


def resnet18(num_classes=1000) -> ImageNetResNet:
    """Inferred (ADDERNET.md 5.4): torchvision ResNet-18 topology with the resnet50.py head."""
    return ImageNetResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet34(num_classes=1000) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, [3, 4, 6, 3], num_classes)


# ---------------------------------------------------------------------------------------------
# VGG-small (ADDERNET.md 5.3, LQ-Nets) and LeNet-5-BN (5.6, the U7 default), as our models
# define them: conv0 / conv1 and fc / fc3 multiplicative.


class VGGSmall(nn.Module):
    """conv0 BN ReLU; conv1 pool BN ReLU; conv2 BN ReLU; conv3 pool BN ReLU; conv4 BN ReLU;
    conv5 pool BN ReLU; flatten (C, H, W order); fc."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 128, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(128)
        for i, (cin, cout) in enumerate(
            ((128, 128), (128, 256), (256, 256), (256, 512), (512, 512)), start=1
        ):
            setattr(self, f"conv{i}", Adder2d(cin, cout, 3, padding=1))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
        self.fc = nn.Linear(512 * 4 * 4, num_classes)

    def forward(self, x):
        x = F.relu(self.bn0(self.conv0(x)))
        for i in range(1, 6):
            x = getattr(self, f"conv{i}")(x)
            if i % 2:
                x = F.max_pool2d(x, 2)
            x = F.relu(getattr(self, f"bn{i}")(x))
        return self.fc(x.flatten(1))


class LeNet5(nn.Module):
    """conv5x5 pad 2, BN, ReLU, pool; adder5x5, BN, ReLU, pool; adder 'FC' 400->120 and 120->84
    (1x1 adders on the flattened features), each BN, ReLU; Linear 84->classes."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = Adder2d(6, 16, 5)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc1 = Adder2d(400, 120, 1)
        self.bn3 = nn.BatchNorm2d(120)
        self.fc2 = Adder2d(120, 84, 1)
        self.bn4 = nn.BatchNorm2d(84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = x.reshape(x.size(0), -1, 1, 1)  # (N, 400, 1, 1), C-H-W order
        x = F.relu(self.bn3(self.fc1(x)))
        x = F.relu(self.bn4(self.fc2(x)))
        return self.fc3(x.flatten(1))


def to_cnn(model: nn.Module) -> nn.Module:
    """The CNN baseline: every adder layer replaced by a bias-free nn.Conv2d of the same shape
    (its weight is then `weight` where the adder's is `adder`)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Adder2d):
                out_c, in_c, k, _ = child.adder.shape
                conv = nn.Conv2d(in_c, out_c, k, child.stride, child.padding, bias=False)
                setattr(parent, name, conv)
    return model


BUILDERS = {
    "resnet20": lambda n: CifarResNet(BasicBlock, [3, 3, 3], n),
    "resnet32": lambda n: CifarResNet(BasicBlock, [5, 5, 5], n),
    "resnet44": lambda n: CifarResNet(BasicBlock, [7, 7, 7], n),
    "resnet56": lambda n: CifarResNet(BasicBlock, [9, 9, 9], n),
    "vgg_small": VGGSmall,
    "lenet5": LeNet5,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
}


def build(name: str, num_classes: int, variant: str = "adder") -> nn.Module:
    """The PyTorch model of a registry name, 'adder' or 'cnn' variant."""
    model = BUILDERS[name](num_classes)
    return to_cnn(model) if variant == "cnn" else model


def lenet5(num_classes=10, variant="adder") -> nn.Module:
    return build("lenet5", num_classes, variant)
