"""`adder2d`: the adder convolution with the AdderNet training gradients (custom VJP).

Forward (paper Eq. 2):   Y[n,i,j,o] = -sum_{u,v,c} |Xpad[n, i*s+u, j*s+v, c] - F[u,v,c,o]|
Backward, as the official `adder.py` (ADDERNET.md section 2):
  dL/dF = sum_{n,i,j} (Xpad - F) * g                   full-precision gradient, paper Eq. 5
  dL/dX = fold(sum_o HT(F - Xpad) * g), HT = clip(., -1, 1)       paper Eq. 6-7
The adaptive learning-rate scaling of Eq. 12-13 is not part of the op: it is the optax
transformation `addernet_jax.training.optimizer.scale_by_adaptive_lr`, applied to the global
gradient (ADDERNET.md 11).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from addernet_jax.ops import pallas, reference, shifted
from addernet_jax.ops.geometry import Geometry, PaddingLike, check_operands


@dataclasses.dataclass(frozen=True)
class Implementation:
    """The three functions an adder implementation provides; the VJP rule is shared."""

    forward: callable
    input_grad: callable
    weight_grad: callable


IMPLEMENTATIONS: dict[str, Implementation] = {
    "reference": Implementation(
        reference.forward_reference,
        reference.input_grad_reference,
        reference.weight_grad_reference,
    ),
    "shifted": Implementation(
        shifted.forward_shifted,
        shifted.input_grad_shifted,
        shifted.weight_grad_shifted,
    ),
    "pallas": Implementation(
        pallas.forward_pallas,
        pallas.input_grad_pallas,
        shifted.weight_grad_shifted,  # a conv weight gradient + correction: no kernel needed
    ),
}

INPUT_GRADS = ("hardtanh", "sign")


# impl='auto', by backend. Derived from benchmarks/adder_layer.py (benchmarks/RESULTS.md):
#   cpu  'shifted'  every ResNet-20/50 layer shape: forward 0.75-2.1x, forward+backward
#                   0.9-1.9x of lax.conv (2 Zen 5 cores, 512-bit vectors); 'reference'
#                   materialises N*H*W*k*k*C_in*C_out floats (GBs) and 'pallas' only interprets.
#   gpu  'shifted'  XLA-fused, works on every GPU; 'pallas' (Triton) has only been run in
#                   interpret mode so far: force it with impl='pallas' and benchmark it on your
#                   card (benchmarks/adder_layer.py --impls shifted,pallas) before relying on it.
#   tpu  'shifted'  the Pallas kernels target Triton (GPU) only.
# No shape changes the choice on any backend measured so far.
AUTO_IMPLEMENTATION = {"cpu": "shifted", "gpu": "shifted", "tpu": "shifted"}


def select_implementation(backend: str, geometry: Geometry, kernel_shape: Sequence[int]) -> str:
    """The implementation that `impl='auto'` runs for a backend and layer (AUTO_IMPLEMENTATION;
    the geometry and kernel shape are part of the rule's signature, unused so far)."""
    del geometry, kernel_shape
    return AUTO_IMPLEMENTATION.get(backend, "shifted")


@dataclasses.dataclass(frozen=True)
class _Static:
    geometry: Geometry
    impl: str
    input_grad: str


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _adder2d(x, w, static: _Static):
    return IMPLEMENTATIONS[static.impl].forward(x, w, static.geometry)


def _adder2d_fwd(x, w, static: _Static):
    return _adder2d(x, w, static), (x, w)


def _adder2d_bwd(static: _Static, residuals, g):
    x, w = residuals
    impl = IMPLEMENTATIONS[static.impl]
    dx = impl.input_grad(x, w, g, static.geometry, static.input_grad)
    dw = impl.weight_grad(x, w, g, static.geometry)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_adder2d.defvjp(_adder2d_fwd, _adder2d_bwd)


def adder2d(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = 0,
    impl: str = "auto",
    input_grad: str = "hardtanh",
) -> jax.Array:
    """Adder convolution: negative L1 distance between each zero-padded patch and each filter.

    Args:
      x: input, NHWC, floating point.
      kernel: filters, HWIO (kh, kw, C_in, C_out).
      bias: optional (C_out,), added after the distance (official `bias=True`).
      stride: int or (sh, sw).
      padding: int (each side, as the official code), (ph, pw), ((top, bottom), (left, right)),
        'SAME' or 'VALID'. Padded positions are zeros and contribute |F| (ADDERNET.md 1.2).
      impl: 'auto', or one of `IMPLEMENTATIONS` to force it.
      input_grad: 'hardtanh' (paper, official) or 'sign' (the exact derivative, ADDERNET.md U10).
    Returns:
      (N, H_out, W_out, C_out), values <= 0 without bias.
    Raises:
      ValueError: naming the shapes when the operands do not fit together.
    """
    geometry = check_operands(x, kernel, bias, stride, padding)
    if impl == "auto":
        impl = select_implementation(jax.default_backend(), geometry, jnp.shape(kernel))
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown adder2d impl {impl!r}; choose 'auto' or one of "
                         f"{sorted(IMPLEMENTATIONS)}")
    if input_grad not in INPUT_GRADS:
        raise ValueError(f"unknown input_grad {input_grad!r}; choose one of {INPUT_GRADS}")
    y = _adder2d(x, kernel, _Static(geometry, impl, input_grad))
    return y if bias is None else y + bias.astype(y.dtype)
