"""Triton kernels for ops `loss_input` and `loss_error` (reference twins: fastdiff/ops/reference/loss.py;
docs/formulas.md#fused-loss-passes).

Both passes draw the noise n from the stream of each sample's seed (or read a given noise tensor), so the pass
after the network recomputes the noise instead of reading a stored noisy image.
"""
import triton
import triton.language as tl

from ._philox import block_normals
from ._utils import BLOCK, NOISE_LAUNCH_OPTIONS, grid_1d, load_per_sample, sample_of


@triton.jit
def _loss_noise(noise_ptr, seeds_ptr, offset_ptr, pid, idx, mask, numel, numel_per_sample,
                HAS_NOISE: tl.constexpr, GROUPED: tl.constexpr, BLOCK: tl.constexpr):
    """n for the elements idx: the given noise, or the stream of each sample's seed at *offset_ptr."""
    if HAS_NOISE:
        n = tl.load(noise_ptr + idx, mask=mask).to(tl.float32)
    else:
        offset = tl.load(offset_ptr)
        n = block_normals(seeds_ptr, pid, numel, numel_per_sample, offset & 0xFFFFFFFF, (offset >> 32) & 0xFFFFFFFF,
                          GROUPED=GROUPED, BLOCK=BLOCK)
    return n


@triton.jit
def _loss_input_kernel(y_ptr, noise_ptr, seeds_ptr, offset_ptr, sigma_ptr, c_in_ptr, out_ptr, numel, numel_per_sample,
                       HAS_NOISE: tl.constexpr, PER_SAMPLE: tl.constexpr, GROUPED: tl.constexpr, BLOCK: tl.constexpr):
    """out = c_in * (y + sigma * n) in float32, stored in out's dtype."""
    pid = tl.program_id(0).to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    sample = sample_of(idx, numel, numel_per_sample) if PER_SAMPLE else 0
    n = _loss_noise(noise_ptr, seeds_ptr, offset_ptr, pid, idx, mask, numel, numel_per_sample, HAS_NOISE, GROUPED, BLOCK)
    y = tl.load(y_ptr + idx, mask=mask).to(tl.float32)
    sigma = load_per_sample(sigma_ptr, sample, PER_SAMPLE)
    c_in = load_per_sample(c_in_ptr, sample, PER_SAMPLE)
    tl.store(out_ptr + idx, (c_in * (y + sigma * n)).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _loss_error_kernel(y_ptr, F_ptr, noise_ptr, seeds_ptr, offset_ptr, sigma_ptr, c_skip_ptr, c_out_ptr, weight_ptr,
                       loss_ptr, grad_ptr, numel, numel_per_sample,
                       HAS_NOISE: tl.constexpr, PER_SAMPLE: tl.constexpr, GROUPED: tl.constexpr, BLOCK: tl.constexpr):
    """r = D - y = c_skip * sigma * n + c_out * F + (c_skip - 1) * y; loss = weight * r^2; grad = dloss/dF = 2 weight c_out r.

    r is summed in this order so that c_skip = 1 (VP, VE, DDPM) never subtracts y from y + sigma * n: at small
    sigma that cancellation would cost the loss most of its float32 digits.
    """
    pid = tl.program_id(0).to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    sample = sample_of(idx, numel, numel_per_sample) if PER_SAMPLE else 0
    n = _loss_noise(noise_ptr, seeds_ptr, offset_ptr, pid, idx, mask, numel, numel_per_sample, HAS_NOISE, GROUPED, BLOCK)
    y = tl.load(y_ptr + idx, mask=mask).to(tl.float32)
    F = tl.load(F_ptr + idx, mask=mask).to(tl.float32)
    sigma = load_per_sample(sigma_ptr, sample, PER_SAMPLE)
    c_skip = load_per_sample(c_skip_ptr, sample, PER_SAMPLE)
    c_out = load_per_sample(c_out_ptr, sample, PER_SAMPLE)
    weight = load_per_sample(weight_ptr, sample, PER_SAMPLE)
    r = c_skip * (sigma * n) + c_out * F + (c_skip - 1.0) * y
    tl.store(loss_ptr + idx, weight * (r * r), mask=mask)
    tl.store(grad_ptr + idx, 2.0 * weight * c_out * r, mask=mask)


def _flags(y, noise, coefficients):
    numel_per_sample = y.numel() // y.shape[0]
    return numel_per_sample, dict(HAS_NOISE=noise is not None, PER_SAMPLE=any(c.numel() > 1 for c in coefficients),
                                  GROUPED=numel_per_sample % 4 == 0, BLOCK=BLOCK, **NOISE_LAUNCH_OPTIONS)


def launch_loss_input(y, seeds, offset, noise, sigma, c_in, out, wrap=lambda kernel: kernel):
    """Write c_in * (y + sigma * n) into `out`; y, noise contiguous [B, ...]; sigma, c_in float32 of 1 or B values.

    With PER_SAMPLE every coefficient tensor must hold B values (fastdiff.ops expands them).
    """
    numel = y.numel()
    if numel:
        numel_per_sample, flags = _flags(y, noise, (sigma, c_in))
        wrap(_loss_input_kernel)[grid_1d(numel)](
            y, noise if noise is not None else y, seeds, offset, sigma, c_in, out, numel, numel_per_sample, **flags)
    return out


def launch_loss_error(y, F, seeds, offset, noise, sigma, c_skip, c_out, weight, loss, grad, wrap=lambda kernel: kernel):
    """Write weight * r^2 into `loss` and 2 * weight * c_out * r into `grad` (both float32 contiguous)."""
    numel = y.numel()
    if numel:
        numel_per_sample, flags = _flags(y, noise, (sigma, c_skip, c_out, weight))
        wrap(_loss_error_kernel)[grid_1d(numel)](
            y, F, noise if noise is not None else y, seeds, offset, sigma, c_skip, c_out, weight, loss, grad,
            numel, numel_per_sample, **flags)
    return loss, grad
