"""Device functions shared by the kernels: the Philox4x32-10 stream and its normal transform.

They implement the stream defined in fastdiff/rng.py (docs/formulas.md#stream-layout) word for word:
    key = (seed mod 2^32, seed div 2^32); counter = (block mod 2^32, block div 2^32, offset mod 2^32, offset div 2^32);
    element e of a sample is lane e % 4 of block e // 4;
    (w_a, w_b) -> r = sqrt(-2 ln(((w_a >> 8) + 1) 2^-24)), theta = fp32(2 pi) (w_b >> 8) 2^-24, (r cos theta, r sin theta).
"""
import triton
import triton.language as tl

from ._utils import sample_of

# Globals a kernel reads must be tl.constexpr instances (an annotation is not enough for the compiler).
TWO_POW_M24 = tl.constexpr(5.9604644775390625e-08)  # 2^-24
TWO_PI_F32 = tl.constexpr(6.2831854820251465)  # float32(2 pi)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds on uint32 tensors: returns the four output words."""
    m0 = tl.full(c0.shape, 0xD2511F53, tl.uint32)
    m1 = tl.full(c0.shape, 0xCD9E8D57, tl.uint32)
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(m0, c0)
        lo0 = m0 * c0
        hi1 = tl.umulhi(m1, c2)
        lo1 = m1 * c2
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + 0x9E3779B9  # the key schedule; the bump after the last round is never used
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@triton.jit
def box_muller(w_a, w_b):
    """Two float32 standard normals from two uint32 words (the transform of fastdiff/rng.py)."""
    u1 = ((w_a >> 8) + 1).to(tl.float32) * TWO_POW_M24
    u2 = (w_b >> 8).to(tl.float32) * TWO_POW_M24
    r = tl.sqrt_rn(-2.0 * tl.log(u1))
    theta = TWO_PI_F32 * u2
    return r * tl.cos(theta), r * tl.sin(theta)


@triton.jit
def stream_words(seeds_ptr, sample, block, offset_lo, offset_hi):
    """The four words of `block` in the stream of seeds[sample] at the given offset halves (all int64 tensors)."""
    seed = tl.load(seeds_ptr + sample)
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c0 = (block & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((block >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c2 = tl.zeros_like(c0) + offset_lo.to(tl.uint32)
    c3 = tl.zeros_like(c0) + offset_hi.to(tl.uint32)
    return philox4x32_10(c0, c1, c2, c3, k0, k1)


@triton.jit
def block_normals(seeds_ptr, pid, numel, numel_per_sample, offset_lo, offset_hi, GROUPED: tl.constexpr,
                  BLOCK: tl.constexpr):
    """The stream's normals of the flat elements pid * BLOCK + arange(BLOCK) (each in its own sample's stream).

    GROUPED (numel_per_sample % 4 == 0): one Philox call per group of four lanes, interleaved back into a flat
    block (n0 n1 n2 n3 of group 0, then group 1, ...), so each thread holds contiguous elements and its loads
    and stores stay 128-bit wide for fp16/bf16 too. Otherwise each element computes its own block and picks its
    lane (4x the Philox work, for samples of any size).
    """
    if GROUPED:
        group = pid * (BLOCK // 4) + tl.arange(0, BLOCK // 4)
        groups_per_sample = numel_per_sample // 4
        sample_of_group = tl.minimum(group // groups_per_sample, numel // numel_per_sample - 1)  # lanes past the end
        w0, w1, w2, w3 = stream_words(seeds_ptr, sample_of_group, group - sample_of_group * groups_per_sample,
                                      offset_lo, offset_hi)
        n0, n1 = box_muller(w0, w1)
        n2, n3 = box_muller(w2, w3)
        eps = tl.reshape(tl.join(tl.join(n0, n2), tl.join(n1, n3)), [BLOCK])
    else:
        idx = pid * BLOCK + tl.arange(0, BLOCK)
        sample = sample_of(idx, numel, numel_per_sample)
        e = idx - (idx // numel_per_sample) * numel_per_sample
        w0, w1, w2, w3 = stream_words(seeds_ptr, sample, e >> 2, offset_lo, offset_hi)
        lane = e & 3
        n_a, n_b = box_muller(tl.where(lane < 2, w0, w2), tl.where(lane < 2, w1, w3))
        eps = tl.where((lane & 1) == 0, n_a, n_b)
    return eps
