"""Triton kernel for op `multistep_step` (reference twin: fastdiff/ops/reference/multistep_step.py;
docs/formulas.md#multistep-step)."""
import triton
import triton.language as tl

from ._utils import BLOCK, LAUNCH_OPTIONS, grid_1d, load_per_sample, sample_of


@triton.jit
def _multistep_step_kernel(x_ptr, denoised_ptr, denoised_prev_ptr, c_ptr, t_ptr, t_next_ptr, out_ptr, numel,
                           numel_per_sample, C_PER_SAMPLE: tl.constexpr, T_PER_SAMPLE: tl.constexpr,
                           T_NEXT_PER_SAMPLE: tl.constexpr, BLOCK: tl.constexpr):
    """out = D' + (t_next / t) (x - D') with D' = D + c (D - D_prev), in float32: DPM-Solver++(2M)'s extrapolated
    denoised and the Euler step to t_next in one pass."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    sample = sample_of(idx, numel, numel_per_sample) if C_PER_SAMPLE or T_PER_SAMPLE or T_NEXT_PER_SAMPLE else 0
    c = load_per_sample(c_ptr, sample, C_PER_SAMPLE)
    ratio = load_per_sample(t_next_ptr, sample, T_NEXT_PER_SAMPLE) / load_per_sample(t_ptr, sample, T_PER_SAMPLE)
    x = tl.load(x_ptr + idx, mask=mask).to(tl.float32)
    denoised = tl.load(denoised_ptr + idx, mask=mask).to(tl.float32)
    denoised_prev = tl.load(denoised_prev_ptr + idx, mask=mask).to(tl.float32)
    d_ext = denoised + c * (denoised - denoised_prev)
    out = d_ext + ratio * (x - d_ext)
    tl.store(out_ptr + idx, out.to(out_ptr.dtype.element_ty), mask=mask)


def launch_multistep_step(x, denoised, denoised_prev, c, t, t_next, out, wrap=lambda kernel: kernel):
    """Write the multistep step into `out`; tensors contiguous, c/t/t_next of one value or one per sample."""
    numel = out.numel()
    if numel:
        wrap(_multistep_step_kernel)[grid_1d(numel)](
            x, denoised, denoised_prev, c, t, t_next, out, numel, numel // out.shape[0],
            C_PER_SAMPLE=c.numel() > 1, T_PER_SAMPLE=t.numel() > 1, T_NEXT_PER_SAMPLE=t_next.numel() > 1,
            BLOCK=BLOCK, **LAUNCH_OPTIONS)
    return out
