"""Triton kernel for op `heun_step` (reference twin: fastdiff/ops/reference/heun_step.py; docs/formulas.md#heun-step)."""
import triton
import triton.language as tl

from ._utils import BLOCK, LAUNCH_OPTIONS, grid_1d, load_per_sample, sample_of


@triton.jit
def _heun_step_kernel(x_hat_ptr, denoised_ptr, denoised_next_ptr, t_hat_ptr, t_next_ptr, out_ptr, numel, numel_per_sample,
                      T_HAT_PER_SAMPLE: tl.constexpr, T_NEXT_PER_SAMPLE: tl.constexpr,
                      BLOCK: tl.constexpr):
    """out = x_hat + (t_next - t_hat) * (d_cur + d_prime) / 2, float32 math.

    d_cur = (x_hat - denoised) / t_hat; x_next = x_hat + (t_next - t_hat) d_cur is recomputed rather than
    read back; d_prime = (x_next - denoised_next) / t_next.
    """
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    sample = sample_of(idx, numel, numel_per_sample) if T_HAT_PER_SAMPLE or T_NEXT_PER_SAMPLE else 0
    t_hat = load_per_sample(t_hat_ptr, sample, T_HAT_PER_SAMPLE)
    t_next = load_per_sample(t_next_ptr, sample, T_NEXT_PER_SAMPLE)
    x_hat = tl.load(x_hat_ptr + idx, mask=mask).to(tl.float32)
    denoised = tl.load(denoised_ptr + idx, mask=mask).to(tl.float32)
    denoised_next = tl.load(denoised_next_ptr + idx, mask=mask).to(tl.float32)
    h = t_next - t_hat
    d_cur = (x_hat - denoised) / t_hat
    x_next = x_hat + h * d_cur
    d_prime = (x_next - denoised_next) / t_next
    out = x_hat + h * (0.5 * d_cur + 0.5 * d_prime)
    tl.store(out_ptr + idx, out.to(out_ptr.dtype.element_ty), mask=mask)


def launch_heun_step(x_hat, denoised, denoised_next, t_hat, t_next, out, wrap=lambda kernel: kernel):
    """Write Heun's corrected step into `out`; tensors contiguous, t_hat/t_next of one value or one per sample."""
    numel = out.numel()
    if numel:
        wrap(_heun_step_kernel)[grid_1d(numel)](
            x_hat, denoised, denoised_next, t_hat, t_next, out, numel, numel // out.shape[0],
            T_HAT_PER_SAMPLE=t_hat.numel() > 1, T_NEXT_PER_SAMPLE=t_next.numel() > 1, BLOCK=BLOCK, **LAUNCH_OPTIONS)
    return out
