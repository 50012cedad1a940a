"""Triton kernels for fastdiff's noise: the normal stream (op `randn`) and noise injection (op `churn`).

Reference twins: fastdiff/rng.py (`randn`) and fastdiff/ops/reference/churn.py (`churn`); the stream is specified in
docs/formulas.md#random-numbers.
"""
import torch
import triton
import triton.language as tl

from ._philox import block_normals, stream_words
from ._utils import BLOCK, NOISE_LAUNCH_OPTIONS, grid_1d, load_per_sample, sample_of


@triton.jit
def _noise_kernel(x_ptr, out_ptr, seeds_ptr, offset_ptr, std_ptr, numel, numel_per_sample,
                  HAS_X: tl.constexpr, STD_PER_SAMPLE: tl.constexpr, GROUPED: tl.constexpr, BLOCK: tl.constexpr):
    """out = x + std * eps (HAS_X) or out = eps, with eps the stream of each sample's seed at offset *offset_ptr
    (GROUPED: numel_per_sample % 4 == 0, see block_normals)."""
    offset = tl.load(offset_ptr)
    pid = tl.program_id(0).to(tl.int64)
    eps = block_normals(seeds_ptr, pid, numel, numel_per_sample, offset & 0xFFFFFFFF, (offset >> 32) & 0xFFFFFFFF,
                        GROUPED=GROUPED, BLOCK=BLOCK)
    idx = pid * BLOCK + tl.arange(0, BLOCK)
    sample = sample_of(idx, numel, numel_per_sample) if STD_PER_SAMPLE else 0
    mask = idx < numel
    if HAS_X:
        x = tl.load(x_ptr + idx, mask=mask).to(tl.float32)
        eps = x + load_per_sample(std_ptr, sample, STD_PER_SAMPLE) * eps
    tl.store(out_ptr + idx, eps.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _words_kernel(out_ptr, seeds_ptr, offset_ptr, numel, numel_per_sample, BLOCK: tl.constexpr):
    """out[b, e] = word e % 4 of block e // 4 of the stream of seeds[b] (the raw uint32 values, stored as int64)."""
    offset = tl.load(offset_ptr)
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    sample = sample_of(idx, numel, numel_per_sample)
    e = idx - (idx // numel_per_sample) * numel_per_sample
    w0, w1, w2, w3 = stream_words(seeds_ptr, sample, e >> 2, offset & 0xFFFFFFFF, (offset >> 32) & 0xFFFFFFFF)
    lane = e & 3
    word = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
    tl.store(out_ptr + idx, word.to(tl.int64), mask=idx < numel)


def launch_noise(x, out, seeds, offset, std, wrap=lambda kernel: kernel):
    """Fill `out` ([B, ...], contiguous) with x + std * eps, or eps when x is None; every argument is a tensor."""
    numel = out.numel()
    if numel == 0:
        return out
    numel_per_sample = numel // out.shape[0]
    wrap(_noise_kernel)[grid_1d(numel)](
        x if x is not None else out, out, seeds, offset, std if std is not None else offset, numel, numel_per_sample,
        HAS_X=x is not None, STD_PER_SAMPLE=std is not None and std.numel() > 1,
        GROUPED=numel_per_sample % 4 == 0, BLOCK=BLOCK, **NOISE_LAUNCH_OPTIONS)
    return out


def philox_words(seeds: torch.Tensor, numel_per_sample: int, offset: torch.Tensor) -> torch.Tensor:
    """The raw stream words [B, numel_per_sample] (uint32 values in int64), for bit-exact tests against the reference."""
    out = torch.empty(seeds.numel(), numel_per_sample, dtype=torch.int64, device=seeds.device)
    if out.numel():
        _words_kernel[grid_1d(out.numel())](out, seeds, offset, out.numel(), numel_per_sample, BLOCK=BLOCK, **NOISE_LAUNCH_OPTIONS)
    return out
