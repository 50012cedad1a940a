"""Reference op `combine`: a solver's update as one affine combination of the state, up to four stored tensors and
fresh noise (docs/formulas.md#combine)."""
from __future__ import annotations

import torch

from ...rng import MASK32, normal_from_seeds
from .skip_mix import compute_dtype

HISTORY = 4  # stored tensors an update may read besides the state: D_i, D_{i-1}, D_{i-2}, D_{i-3} (or derivatives)


def combine(x: torch.Tensor, h0, h1, h2, h3, coeffs: torch.Tensor, seeds, offset, noise) -> torch.Tensor:
    """a x + w0 h0 + w1 h1 + w2 h2 + w3 h3 + n z with (a, w0, w1, w2, w3, n) = coeffs; math in fp32 (fp64 for fp64 x),
    result in x's dtype.

    h0..h3 are tensors of x's shape or None (absent: their weight is not read). z is fastdiff.randn(seeds, x.shape,
    offset=offset) when seeds is given (offset: an int64 tensor of one value), the tensor `noise` when that is given
    (a noise_sampler's draw), and absent (n not read) when both are None; never both. coeffs holds the six values,
    the same for every sample (a loop's table view).

    The operations below, in this order and each rounded to the compute dtype, are the specification the compiled
    kernels follow: acc = a x; then acc = acc + w_k h_k for each present h_k in order k = 0..3; then acc = acc + n z.
    No step is fused into a multiply-add.
    """
    dtype = compute_dtype(x)
    c = coeffs.to(dtype)
    acc = c[0] * x.to(dtype)
    for k, h in enumerate((h0, h1, h2, h3)):
        if h is not None:
            acc = acc + c[1 + k] * h.to(dtype)
    if seeds is not None:
        if noise is not None:
            raise ValueError("combine: expected seeds or noise, not both")
        z = normal_from_seeds(seeds, x.shape, offset & MASK32, (offset >> 32) & MASK32, dtype)
        acc = acc + c[5] * z
    elif noise is not None:
        acc = acc + c[5] * noise.to(dtype)
    return acc.to(x.dtype)
