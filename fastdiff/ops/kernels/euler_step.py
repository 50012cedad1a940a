"""Triton kernel for op `euler_step` (reference twin: fastdiff/ops/reference/euler_step.py; docs/formulas.md#euler-step)."""
import triton
import triton.language as tl

from ._utils import BLOCK, LAUNCH_OPTIONS, grid_1d, load_per_sample, sample_of


@triton.jit
def _euler_step_kernel(x_hat_ptr, denoised_ptr, t_hat_ptr, t_next_ptr, out_ptr, numel, numel_per_sample,
                       T_HAT_PER_SAMPLE: tl.constexpr, T_NEXT_PER_SAMPLE: tl.constexpr,
                       BLOCK: tl.constexpr):
    """out = x_hat + (t_next - t_hat) * d_cur with d_cur = (x_hat - denoised) / t_hat, in float32."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    sample = sample_of(idx, numel, numel_per_sample) if T_HAT_PER_SAMPLE or T_NEXT_PER_SAMPLE else 0
    t_hat = load_per_sample(t_hat_ptr, sample, T_HAT_PER_SAMPLE)
    t_next = load_per_sample(t_next_ptr, sample, T_NEXT_PER_SAMPLE)
    x_hat = tl.load(x_hat_ptr + idx, mask=mask).to(tl.float32)
    denoised = tl.load(denoised_ptr + idx, mask=mask).to(tl.float32)
    d_cur = (x_hat - denoised) / t_hat
    x_next = x_hat + (t_next - t_hat) * d_cur
    tl.store(out_ptr + idx, x_next.to(out_ptr.dtype.element_ty), mask=mask)


def launch_euler_step(x_hat, denoised, t_hat, t_next, out, wrap=lambda kernel: kernel):
    """Write the Euler step into `out`; tensors contiguous, t_hat/t_next of one value or one per sample."""
    numel = out.numel()
    if numel:
        wrap(_euler_step_kernel)[grid_1d(numel)](
            x_hat, denoised, t_hat, t_next, out, numel, numel // out.shape[0],
            T_HAT_PER_SAMPLE=t_hat.numel() > 1, T_NEXT_PER_SAMPLE=t_next.numel() > 1, BLOCK=BLOCK, **LAUNCH_OPTIONS)
    return out
