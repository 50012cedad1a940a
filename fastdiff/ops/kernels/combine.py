"""Triton kernel for op `combine` (reference twin: fastdiff/ops/reference/combine.py; docs/formulas.md#combine).

One pass over the state for a solver's whole update: out = a x + w0 h0 + w1 h1 + w2 h2 + w3 h3 + n z. Which h's
are present and where z comes from are constexprs, so each launch reads only the tensors it uses and a kernel
without drawn noise carries no Philox code.
"""
import triton
import triton.language as tl

from ._philox import block_normals
from ._utils import BLOCK, NOISE_LAUNCH_OPTIONS, grid_1d

NO_NOISE, DRAWN_NOISE, GIVEN_NOISE = 0, 1, 2  # the kernel's NOISE: z absent, drawn from the seeds' streams, or read


@triton.jit
def _add_term(acc, coeffs_ptr, k: tl.constexpr, ptr, idx, mask):
    """acc + coeffs[k] * ptr[idx], in float32."""
    return acc + tl.load(coeffs_ptr + k).to(tl.float32) * tl.load(ptr + idx, mask=mask).to(tl.float32)


@triton.jit
def _combine_kernel(x_ptr, h0_ptr, h1_ptr, h2_ptr, h3_ptr, coeffs_ptr, noise_ptr, seeds_ptr, offset_ptr, out_ptr, numel,
                    numel_per_sample, HAS_H0: tl.constexpr, HAS_H1: tl.constexpr, HAS_H2: tl.constexpr,
                    HAS_H3: tl.constexpr, NOISE: tl.constexpr, GROUPED: tl.constexpr, BLOCK: tl.constexpr):
    """out = a x + w0 h0 + w1 h1 + w2 h2 + w3 h3 + n z with (a, w0, w1, w2, w3, n) = coeffs, in float32: acc = a x,
    then acc + w_k h_k for each present h_k in order, then acc + n z (NOISE: z absent, the stream of each sample's
    seed at *offset_ptr, or the tensor at noise_ptr; GROUPED as for the noise kernel)."""
    pid = tl.program_id(0).to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    acc = tl.load(coeffs_ptr).to(tl.float32) * tl.load(x_ptr + idx, mask=mask).to(tl.float32)
    if HAS_H0:
        acc = _add_term(acc, coeffs_ptr, 1, h0_ptr, idx, mask)
    if HAS_H1:
        acc = _add_term(acc, coeffs_ptr, 2, h1_ptr, idx, mask)
    if HAS_H2:
        acc = _add_term(acc, coeffs_ptr, 3, h2_ptr, idx, mask)
    if HAS_H3:
        acc = _add_term(acc, coeffs_ptr, 4, h3_ptr, idx, mask)
    if NOISE == 1:  # DRAWN_NOISE
        offset = tl.load(offset_ptr)
        z = block_normals(seeds_ptr, pid, numel, numel_per_sample, offset & 0xFFFFFFFF, (offset >> 32) & 0xFFFFFFFF,
                          GROUPED=GROUPED, BLOCK=BLOCK)
        acc = acc + tl.load(coeffs_ptr + 5).to(tl.float32) * z
    elif NOISE == 2:  # GIVEN_NOISE
        acc = _add_term(acc, coeffs_ptr, 5, noise_ptr, idx, mask)
    tl.store(out_ptr + idx, acc.to(out_ptr.dtype.element_ty), mask=mask)


def launch_combine(x, h0, h1, h2, h3, coeffs, seeds, offset, noise, out, wrap=lambda kernel: kernel):
    """Write the combination into `out`. x, the present h's, noise and out are contiguous of x's shape; coeffs holds
    6 floating values; seeds (int64 [B]) and offset (int64, one value) are read when seeds is not None, and then
    noise must be None. Absent tensors are passed to the kernel as x, which it never reads in their place."""
    numel = out.numel()
    if numel == 0:
        return out
    if seeds is not None and (noise is not None or offset is None):
        raise ValueError("combine: seeds need an offset and exclude noise")
    numel_per_sample = numel // out.shape[0]
    kind = DRAWN_NOISE if seeds is not None else GIVEN_NOISE if noise is not None else NO_NOISE
    h = [t if t is not None else x for t in (h0, h1, h2, h3)]
    wrap(_combine_kernel)[grid_1d(numel)](
        x, *h, coeffs, noise if noise is not None else x, seeds if seeds is not None else x,
        offset if seeds is not None else x, out, numel, numel_per_sample,
        HAS_H0=h0 is not None, HAS_H1=h1 is not None, HAS_H2=h2 is not None, HAS_H3=h3 is not None, NOISE=kind,
        GROUPED=numel_per_sample % 4 == 0, BLOCK=BLOCK, **NOISE_LAUNCH_OPTIONS)
    return out
