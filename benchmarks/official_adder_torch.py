"""The benchmark baseline: the official AdderNet layer as huawei-noah/AdderNet `adder.py` computes
it (ADDERNET.md sections 1-2): unfold, broadcast to (C_out, C_in*k*k, N*H_out*W_out), abs, sum,
and the hand-written backward including the adaptive scaling. NCHW / OIHW, float32, CPU.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


class OfficialAdder(torch.autograd.Function):
    """-sum |W_col - X_col| with the paper's full-precision / HardTanh backward."""

    @staticmethod
    def forward(ctx, w_col, x_col):
        ctx.save_for_backward(w_col, x_col)
        return -(w_col.unsqueeze(2) - x_col.unsqueeze(0)).abs().sum(1)

    @staticmethod
    def backward(ctx, grad_output):
        w_col, x_col = ctx.saved_tensors
        grad_w = ((x_col.unsqueeze(0) - w_col.unsqueeze(2)) * grad_output.unsqueeze(1)).sum(2)
        grad_w = grad_w / grad_w.norm(p=2).clamp(min=1e-12) * math.sqrt(grad_w.numel()) / 5
        grad_x = (-(x_col.unsqueeze(0) - w_col.unsqueeze(2)).clamp(-1, 1)
                  * grad_output.unsqueeze(1)).sum(0)
        return grad_w, grad_x


def official_adder2d(x, w, stride, padding):
    """The official `adder2d_function`: NCHW input, OIHW weight."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    h_out = (h - k + 2 * padding) // stride + 1
    w_out = (wd - k + 2 * padding) // stride + 1
    x_col = F.unfold(x, k, padding=padding, stride=stride)
    x_col = x_col.permute(1, 2, 0).contiguous().view(c * k * k, -1)
    out = OfficialAdder.apply(w.view(o, -1), x_col)
    return out.view(o, h_out, w_out, n).permute(3, 0, 1, 2).contiguous()


def official_operands(x: np.ndarray, w: np.ndarray, g: np.ndarray):
    """NHWC / HWIO numpy operands -> torch NCHW / OIHW leaves (and the NCHW cotangent)."""
    x = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    w = torch.tensor(w.transpose(3, 2, 0, 1).copy(), requires_grad=True)
    return x, w, torch.tensor(g.transpose(0, 3, 1, 2).copy())


def official_step(x, w, g, stride, padding, backward):
    """One forward (no autograd graph) or one forward + backward of the official layer."""
    if not backward:
        with torch.no_grad():
            return official_adder2d(x, w, stride, padding)
    x.grad = w.grad = None
    official_adder2d(x, w, stride, padding).backward(g)
    return None


class OfficialAdderLayer(torch.nn.Module):
    """The official `adder2d` module: filters `adder` ~ N(0, 1), no bias."""

    def __init__(self, c_in, c_out, kernel, stride=1, padding=0):
        super().__init__()
        self.stride, self.padding = stride, padding
        self.adder = torch.nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))

    def forward(self, x):
        return official_adder2d(x, self.adder, self.stride, self.padding)


class BasicBlock(torch.nn.Module):
    """resnet20.py BasicBlock with adder 3x3s and an adder 1x1 + BN projection shortcut."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = OfficialAdderLayer(c_in, c_out, 3, stride, 1)
        self.bn1 = torch.nn.BatchNorm2d(c_out)
        self.conv2 = OfficialAdderLayer(c_out, c_out, 3, 1, 1)
        self.bn2 = torch.nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = torch.nn.Sequential(OfficialAdderLayer(c_in, c_out, 1, stride, 0),
                                                  torch.nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class OfficialResNet20(torch.nn.Module):
    """resnet20.py: conv stem, three stages of three BasicBlocks, AvgPool(8), 1x1 conv, BN."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        blocks, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.blocks = torch.nn.Sequential(*blocks)
        self.fc = torch.nn.Conv2d(64, num_classes, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(num_classes)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn1(self.conv1(x))))
        x = torch.nn.functional.avg_pool2d(x, 8)
        return self.bn2(self.fc(x)).flatten(1)


def official_train_step_fn(batch_size: int, seed: int = 0):
    """A closure running one official training step (forward, custom backward with the adaptive
    scaling, SGD momentum 0.9 / weight decay 5e-4) on a fixed random batch."""
    torch.manual_seed(seed)
    model = OfficialResNet20()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (batch_size,))

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss

    return step


def official_eval_fn(batch_size: int, seed: int = 0):
    """A closure running the official model's eval-mode forward on a fixed random batch."""
    torch.manual_seed(seed)
    model = OfficialResNet20().eval()
    images = torch.randn(batch_size, 3, 32, 32)

    def forward():
        with torch.no_grad():
            return model(images)

    return forward
