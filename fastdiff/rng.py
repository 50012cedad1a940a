"""fastdiff's counter-based random numbers: Philox4x32-10 with a Box-Muller normal transform.

This module is the specification of the stream; every backend (Triton, C++, CUDA) reproduces it.

The stream, per sample:
    key      = (seed mod 2^32, seed div 2^32)                    seed: 0 <= seed < 2^63
    counter  = (block mod 2^32, block div 2^32, offset mod 2^32, offset div 2^32)
    words    = philox4x32_10(counter, key)                      four uint32 words w0..w3
    element e of the sample (C order over the non-batch dims) is lane e % 4 of block e // 4.
The normal transform (float32 arithmetic), applied to the pairs (w0, w1) -> lanes 0, 1 and
(w2, w3) -> lanes 2, 3:
    u1 = ((w_a >> 8) + 1) * 2^-24          in (0, 1], exact in float32
    u2 = (w_b >> 8) * 2^-24                in [0, 1), exact in float32
    r  = sqrt(-2 * log(u1));  theta = float32(2*pi) * u2
    lane_a = r * cos(theta);  lane_b = r * sin(theta)
So |z| <= sqrt(48 ln 2) ~= 5.77, and a sample's values depend only on its seed, the offset and the
element index: never on the batch it is in or the device.

Offsets in use: every stream a sample's noise is drawn from is named in STREAMS below, the one registry of offsets;
a module that draws imports its offset from here.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import NamedTuple, Sequence

import torch

from ._validate import check_shape

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
MASK32 = 0xFFFFFFFF
MAX_SEED = 2**63 - 1
MAX_OFFSET = 2**64 - 1
TWO_PI_F32 = float(torch.tensor(2 * math.pi, dtype=torch.float32))

# ----------------------------------------------------------------------------------------------------------------
# The stream offsets: the one place that says which part of a sample's stream each kind of draw uses. Each named
# stream lies within one value of the offset's high word; one that adds a step index i (or a draw count k) to its
# start has room for runs of up to MAX_STEPS steps, far more than any run can take or hold tables for
# (tests/test_rng.py checks that the ranges below do not overlap). The numbers are part of every result: changing
# one changes what every seed draws.
# ----------------------------------------------------------------------------------------------------------------
STREAM_SPAN = 1 << 32  # the offsets one high word holds
MAX_STEPS = STREAM_SPAN - 1  # steps (or draws) a stepped stream has room for: i < MAX_STEPS, and SMC's final pick at + N
LATENTS_OFFSET = 0  # fastdiff.randn's default: latents, SDE.prior_sampling, a GraphedSampler's omitted latents
SAMPLER_OFFSET = 1 << 32  # + i: the sampler's noise at step i (EDM churn, ancestral, DDPM/DDIM); + k: pc_sample's k-th draw
LOSS_NOISE_OFFSET = 2 << 32  # a training loss draws its noise n at this offset of each sample's stream
LOSS_SIGMA_OFFSET = (2 << 32) + 1  # ... and the normal behind its noise level (or time step) here
PROBE_OFFSET = 3 << 32  # the likelihood's Hutchinson probe (fastdiff.sde.likelihood)
INPAINT_OFFSET = 8 << 32  # replacement inpainting's observation noise: + 0 for noise="fixed"; noise="level" draws at
#                           + 1 + (the float32 bit pattern of sigma), below 2^32, so within this high word
SMC_OBSERVATION_OFFSET = 9 << 32  # + i: SMC inpainting's z_i of the observation's forward increment sigma_{i+1} -> sigma_i
SMC_PROPOSAL_OFFSET = 10 << 32  # + i: the proposal noise of the sample's K particles, shape [K, ...]
SMC_RESAMPLE_OFFSET = 11 << 32  # + i: the normal behind step i's resampling uniform; + N: the final pick
SMC_LATENTS_OFFSET = 12 << 32  # the initial noise of particles 1..K-1, shape [K - 1, ...] (particle 0: the latents)
SUBSTEP_OFFSET = 13 << 32  # + i: the noise of step i's substep, for solvers that draw twice a step (dpmpp_sde)
ADAPTIVE_OFFSET = 14 << 32  # + k: the noise after the k-th accepted step of solver="dpm_adaptive" (k = 0, 1, ...)


class Stream(NamedTuple):
    """A named part of every sample's stream: the offsets start .. start + size - 1, and who draws there."""

    name: str
    start: int
    size: int  # how many consecutive offsets it may use: 1 for a single draw, more where a step index is added
    drawn_by: str


STREAMS = (
    Stream("latents", LATENTS_OFFSET, 1, "fastdiff.randn (default offset), SDE.prior_sampling, GraphedSampler, "
           "sample(init=x0, latents=None)'s noise added to x0 (img2img)"),
    Stream("sampler", SAMPLER_OFFSET, MAX_STEPS, "fastdiff.sample, sample_general, DDPM.sample/ddim_sample (+ step i); "
           "pc_sample (+ draw k)"),
    Stream("loss noise", LOSS_NOISE_OFFSET, 1, "the training losses' n (fastdiff.loss, ops.loss_input/loss_error)"),
    Stream("loss sigma", LOSS_SIGMA_OFFSET, 1, "the training losses' noise level or time step (fastdiff.loss)"),
    Stream("likelihood probe", PROBE_OFFSET, 1, "fastdiff.sde.likelihood's Hutchinson probe"),
    Stream("inpainting observation", INPAINT_OFFSET, STREAM_SPAN, "Inpainting: noise='fixed' at + 0, noise='level' at "
           "+ 1 + float32 bits of sigma"),
    Stream("smc observation", SMC_OBSERVATION_OFFSET, MAX_STEPS, "inpaint(method='smc'): the observation path (+ i)"),
    Stream("smc proposal", SMC_PROPOSAL_OFFSET, MAX_STEPS, "inpaint(method='smc'): the particles' proposals (+ i)"),
    Stream("smc resample", SMC_RESAMPLE_OFFSET, MAX_STEPS + 1, "inpaint(method='smc'): resampling (+ i), the final "
           "pick (+ N)"),
    Stream("smc latents", SMC_LATENTS_OFFSET, 1, "inpaint(method='smc'): particles 1..K-1's initial noise"),
    Stream("sampler substep", SUBSTEP_OFFSET, MAX_STEPS, "fastdiff.sample(solver='dpmpp_sde'): the substep's noise of "
           "step i (+ i)"),
    Stream("adaptive", ADAPTIVE_OFFSET, MAX_STEPS, "fastdiff.sample(solver='dpm_adaptive', eta > 0): the noise after "
           "its k-th accepted step (+ k); rejected steps draw none"),
)


def _mulhilo32(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product a * b, for a < 2^32 and int64 b in [0, 2^32).

    Splitting b into 16-bit limbs keeps every partial product below 2^63, so int64 never overflows.
    """
    p_lo = a * (b & 0xFFFF)  # < 2^48
    p_hi = a * (b >> 16)  # < 2^48; stands for p_hi * 2^16
    s = p_lo + ((p_hi & 0xFFFF) << 16)  # < 2^49
    return (p_hi >> 16) + (s >> 32), s & MASK32


def philox4x32(counter: Sequence[torch.Tensor], key: Sequence[torch.Tensor], rounds: int = PHILOX_ROUNDS):
    """Philox4x32-R of Salmon et al. (2011) on int64 tensors holding uint32 values; returns 4 words.

    counter: four broadcastable int64 tensors (c0..c3); key: two (k0, k1). Values must lie in [0, 2^32).
    """
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) for c in counter)
    k0, k1 = (torch.as_tensor(k, dtype=torch.int64) for k in key)
    for r in range(rounds):
        if r > 0:  # the key schedule: bump the key between rounds
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo32(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo32(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def box_muller(w_a: torch.Tensor, w_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float32 standard normals from two uint32 words (held in int64), as specified above."""
    u1 = ((w_a >> 8) + 1).to(torch.float32) * 2.0**-24
    u2 = (w_b >> 8).to(torch.float32) * 2.0**-24
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = TWO_PI_F32 * u2
    return r * torch.cos(theta), r * torch.sin(theta)


SEED_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def seeds_tensor(seeds, batch_size: int | None = None, device=None) -> torch.Tensor:
    """Per-sample seeds as an int64 tensor of shape [B].

    A list takes ints in [0, 2^63). A tensor of an integer dtype is taken as it is, its int64 bit pattern
    being the 64-bit key; its values are never read back to the host, so checking it costs no device sync.
    A torch.Generator gives one seed per sample, drawn from it (as draw_seeds draws from torch's default generator,
    so the same generator state gives the same seeds); a list of generators, one per sample, gives one seed drawn
    from each. Either way the generators advance: each call draws new seeds.
    """
    is_tensor = isinstance(seeds, torch.Tensor)  # asked first: torch.compile cannot trace isinstance(tensor, Generator)
    if not is_tensor and (isinstance(seeds, torch.Generator) or _generators(seeds)):
        return _seeds_from_generators(seeds, batch_size, device)
    if is_tensor:
        if seeds.dtype not in SEED_DTYPES:
            accepted = ", ".join(str(d) for d in SEED_DTYPES)
            raise TypeError(f"seeds: expected a tensor of integers ({accepted}), got dtype {seeds.dtype}")
        if seeds.ndim != 1:
            raise ValueError(f"seeds: expected one seed per sample (a 1-D sequence), got shape {tuple(seeds.shape)}")
        out = seeds.to(device=device, dtype=torch.int64).contiguous()  # the kernels read seeds[b] directly
    else:
        if isinstance(seeds, int):
            raise TypeError(f"seeds: expected one int per sample (a list or 1-D tensor), got the int {seeds}")
        values = [operator.index(s) if _is_integer(s) else s for s in seeds]
        for s in values:
            if not isinstance(s, int) or isinstance(s, bool):
                raise TypeError(f"seeds: expected ints, got {s!r} of type {type(s).__name__}")
            if not 0 <= s <= MAX_SEED:
                raise ValueError(f"seeds: every seed must be in [0, 2^63), got {s}")
        out = torch.tensor(values, dtype=torch.int64, device=device)
    if batch_size is not None and out.numel() != batch_size:
        raise ValueError(f"seeds: expected {batch_size} seeds (one per sample in the batch), got {out.numel()}")
    return out


def draw_seeds(batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh per-sample seeds in [0, 2^63 - 1), int64 [batch] on `device`, drawn from torch's default CPU generator
    whatever the device, so torch.manual_seed repeats them on every machine. The one way fastdiff draws seeds a
    user did not give (sample, DDPM, the SDE samplers, inpainting, the training losses), and, from `generator` (on
    its own device) when given, the way it turns a user's torch.Generator into seeds."""
    if generator is None:
        return torch.randint(0, MAX_SEED, (batch,), dtype=torch.int64).to(device)
    return torch.randint(0, MAX_SEED, (batch,), dtype=torch.int64, generator=generator,
                         device=generator.device).to(device)


def _generators(seeds) -> bool:
    """Whether seeds is a list or tuple holding torch.Generators (then it must hold nothing else)."""
    if not isinstance(seeds, (list, tuple)) or not any(isinstance(s, torch.Generator) for s in seeds):
        return False
    other = next((s for s in seeds if not isinstance(s, torch.Generator)), None)
    if other is not None:
        raise TypeError(f"seeds: expected ints or torch.Generators (one per sample), not a mix; got {other!r} of "
                        f"type {type(other).__name__} beside a torch.Generator")
    return True


def _seeds_from_generators(seeds, batch_size: int | None, device) -> torch.Tensor:
    """seeds_tensor of a torch.Generator (batch_size seeds from it) or a list of them (one seed from each)."""
    if isinstance(seeds, torch.Generator):
        if batch_size is None:
            raise ValueError("seeds: a torch.Generator gives one seed per sample, but here the batch size is not known; "
                             "pass a list of ints or of generators")
        return draw_seeds(batch_size, device, generator=seeds)
    if batch_size is not None and len(seeds) != batch_size:
        raise ValueError(f"seeds: expected {batch_size} torch.Generators (one per sample in the batch), got "
                         f"{len(seeds)}; a single torch.Generator gives every sample its seed")
    return torch.cat([draw_seeds(1, "cpu", generator=g) for g in seeds]).to(device)


def _is_integer(value) -> bool:
    """Python and numpy integers (not bools, not floats)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _philox_blocks(seeds: torch.Tensor, numel: int, offset_lo, offset_hi) -> torch.Tensor:
    """The words of every block a sample of `numel` elements needs: int64 of shape [B, ceil(numel/4), 4]."""
    blocks = torch.arange((numel + 3) // 4, dtype=torch.int64, device=seeds.device)
    words = philox4x32(
        (blocks & MASK32, blocks >> 32, offset_lo, offset_hi),
        ((seeds & MASK32)[:, None], ((seeds >> 32) & MASK32)[:, None]),
    )
    return torch.stack(torch.broadcast_tensors(*words), dim=-1)


def philox_words(seeds, numel: int, offset: int = 0) -> torch.Tensor:
    """The raw uint32 stream (held in int64) of each sample: shape [B, numel]; element e is lane e%4 of block e//4."""
    seeds = seeds_tensor(seeds)
    offset_lo, offset_hi = split_offset(offset, seeds.device)
    return _philox_blocks(seeds, numel, offset_lo, offset_hi).reshape(seeds.numel(), -1)[:, :numel]


def randn(seeds, shape, *, offset: int = 0, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Standard normal tensor of `shape` whose sample b is drawn from the stream of seeds[b] at `offset`.

    shape[0] must equal len(seeds). The values are computed in float32 and then cast to `dtype`.
    """
    seeds, shape = check_randn_args(seeds, shape, dtype, device)
    return normal_from_seeds(seeds, shape, *split_offset(offset, seeds.device), dtype)


def check_randn_args(seeds, shape, dtype, device) -> tuple[torch.Tensor, tuple[int, ...]]:
    """randn's arguments checked: the seeds as an int64 [B] tensor (on `device`, else the seeds' own) and the shape."""
    shape = check_shape("shape", shape, min_ndim=1, what="(batch, ...)")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype}")
    if device is None and isinstance(seeds, torch.Tensor):
        device = seeds.device
    return seeds_tensor(seeds, batch_size=shape[0], device=device), shape


def normal_from_seeds(seeds: torch.Tensor, shape, offset_lo, offset_hi, dtype: torch.dtype) -> torch.Tensor:
    """randn without argument checks, for loops: seeds a checked int64 [B] tensor, the offset as two uint32 halves.

    The halves may be ints or int64 device tensors (a sampler keeps its per-step offsets on the device, so
    a step never copies a host value to the device).
    """
    numel = math.prod(shape[1:])
    blocks = (numel + 3) // 4  # explicit sizes: an empty batch leaves nothing to infer a -1 from
    words = _philox_blocks(seeds, numel, offset_lo, offset_hi).reshape(shape[0], blocks, 2, 2)  # [B, blocks, pair, word]
    normals = torch.stack(box_muller(words[..., 0], words[..., 1]), dim=-1)  # pair 0 -> lanes 0, 1; pair 1 -> 2, 3
    return normals.reshape(shape[0], 4 * blocks)[:, :numel].reshape(shape).to(dtype)


def split_offset(offset, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A checked 64-bit offset as (low, high) uint32 halves in int64 tensors."""
    offset = _check_offset(offset)
    return torch.tensor(offset & MASK32, device=device), torch.tensor(offset >> 32, device=device)


def _check_offset(offset) -> int:
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise ValueError(f"offset: expected an int in [0, 2^64), got {offset!r}")
    return offset
