"""PyTorch re-statement of the official AdderNet adder layer (huawei-noah/AdderNet `adder.py`),
written from ../shared/specs/ADDERNET.md sections 1-2: the ground truth the tests compare to.

Layouts are PyTorch's: X is NCHW, W is OIHW. Only tests and benchmarks import this module.
"""

import math

import torch
import torch.nn.functional as F


class OfficialAdderFunction(torch.autograd.Function):
    """Y = -sum_k |W_col - X_col| with the paper's hand-written backward (spec 2.1-2.3)."""

    @staticmethod
    def forward(ctx, w_col, x_col, adaptive_eta):
        # w_col: (C_out, K), x_col: (K, L); the (C_out, K, L) tensor is what the official code
        # materialises.
        ctx.save_for_backward(w_col, x_col)
        ctx.adaptive_eta = adaptive_eta
        return -(w_col.unsqueeze(2) - x_col.unsqueeze(0)).abs().sum(1)

    @staticmethod
    def backward(ctx, grad_output):
        w_col, x_col = ctx.saved_tensors
        diff = x_col.unsqueeze(0) - w_col.unsqueeze(2)  # X - F
        grad_w = (diff * grad_output.unsqueeze(1)).sum(2)  # full precision, Eq. 5
        if ctx.adaptive_eta is not None:  # Eq. 12-13, inside backward as the official code
            grad_w = (
                grad_w / grad_w.norm(p=2).clamp(min=1e-12)
                * math.sqrt(w_col.size(0) * w_col.size(1)) * ctx.adaptive_eta
            )
        grad_x = (-diff.clamp(-1, 1) * grad_output.unsqueeze(1)).sum(0)  # HT(F - X)
        return grad_w, grad_x, None


def official_adder2d(x, w, stride=1, padding=0, adaptive_eta=None):
    """The official `adder2d_function`: unfold, adder, reshape back to NCHW.

    Args:
      x: (N, C_in, H, W).
      w: (C_out, C_in, k, k).
      adaptive_eta: None for the plain gradients, 0.2 for the official training backward.
    """
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    h_out = (h - kh + 2 * padding) // stride + 1
    w_out = (wd - kw + 2 * padding) // stride + 1
    x_col = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, C*k*k, L)
    x_col = x_col.permute(1, 2, 0).reshape(c * kh * kw, -1)
    out = OfficialAdderFunction.apply(w.reshape(o, -1), x_col, adaptive_eta)
    return out.reshape(o, h_out, w_out, n).permute(3, 0, 1, 2)


class OfficialAdder2d(torch.nn.Module):
    """The official `adder2d` module: weight named `adder`, N(0, 1) init, optional bias."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=False, adaptive_eta=0.2):
        super().__init__()
        self.stride, self.padding, self.adaptive_eta = stride, padding, adaptive_eta
        self.adder = torch.nn.Parameter(
            torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.b = torch.nn.Parameter(torch.rand(out_channels)) if bias else None

    def forward(self, x):
        out = official_adder2d(x, self.adder, self.stride, self.padding, self.adaptive_eta)
        return out if self.b is None else out + self.b[None, :, None, None]
