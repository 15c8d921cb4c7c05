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
