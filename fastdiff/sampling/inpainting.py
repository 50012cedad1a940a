"""fastdiff.inpaint: sample x given x[mask] = known, by the replacement method on the shared sampler (the
Inpainting denoiser of fastdiff.sampling.guidance run by fastdiff.sample) or by sequential Monte Carlo.

The SMC sampler keeps its own loop: its state is K weighted particles per sample that are resampled between steps
(a gather across the particle axis that depends on the weights), and its transition is a Gaussian reverse step
given D, not one of the plan's solver updates; nothing of fastdiff.sampling.loop's per-sample elementwise step fits.
"""
from __future__ import annotations

import math

import torch

from .._nonfinite import NonfiniteCheck, check_nonfinite, steps_where
from .._validate import check_bool, check_choice, check_int, check_output
from ..rng import (SMC_LATENTS_OFFSET, SMC_OBSERVATION_OFFSET, SMC_PROPOSAL_OFFSET, SMC_RESAMPLE_OFFSET, draw_seeds,
                   randn, seeds_tensor)
from .front import sample
from .guidance import (INPAINT_METHODS, SMC_NUM_PARTICLES, SMC_NUM_STEPS, SMC_SCHEDULE_ARGUMENTS, Inpainting,
                       _check_known, _check_mask)
from .plan import check_sigmas, karras_schedule, round_levels


def inpaint(net, latents: torch.Tensor, known: torch.Tensor, mask, class_labels=None, *, seeds=None, noise="level",
            method="replacement", num_particles=None, return_particles=False, **sample_kwargs):
    """Samples of latents' shape whose known part (mask = 1) equals `known` exactly and whose rest is sampled
    given it, by one of two methods:

    - method="replacement" (default): fastdiff.sample of Inpainting(net, known, mask, seeds, noise=noise), the
      replacement method (fast, but biased when the parts depend on each other: see Inpainting). Every other
      keyword goes to fastdiff.sample.
    - method="smc": sequential Monte Carlo with num_particles = K particles per sample (default 64), exact as K
      and the number of steps grow: see _smc_inpaint. It takes the schedule's keywords num_steps (default 128),
      sigma_min, sigma_max, rho (EDM's schedule, clamped to the net's range) or sigmas, and no others; each step
      calls the net once on B * K samples. return_particles=True returns (particles [B, K, ...], weights [B, K]
      float64, summing to 1 per sample) instead of one particle per sample drawn by those weights. Its error is
      mostly the steps' (the Gaussian reverse transition), not the particles': on the 4-D mixture of
      tests/test_guidance.py, a mode of exact conditional weight 0.667 gets 0.549, 0.605, 0.655, 0.663 of the
      samples for N = 32, 64, 128, 256 (K = 64), and 0.630, 0.659, 0.655, 0.676 for K = 4, 16, 64, 256 (N = 128).

    seeds (one int per sample; drawn from torch's default generator when omitted) key all the noise: the
    observation noise and, unless sample_kwargs has randn_like, the sampler's own noise. Both methods take
    fastdiff.sample's `nonfinite` ("warn", "raise" or "ignore").
    """
    check_choice("method", method, INPAINT_METHODS)
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point() or latents.ndim < 1:
        raise TypeError(f"latents: expected a floating-point tensor of shape [B, ...], got {type(latents).__name__}")
    known = _check_known(known)
    if known.shape != latents.shape:
        raise ValueError(f"known: expected the shape of latents {tuple(latents.shape)}, got {tuple(known.shape)}")
    if known.device != latents.device:
        raise ValueError(f"known: expected a tensor on latents' device {latents.device}, got one on {known.device}")
    if seeds is None:
        seeds = draw_seeds(latents.shape[0])
    seeds = seeds_tensor(seeds, latents.shape[0], latents.device)
    nonfinite = check_nonfinite(sample_kwargs.pop("nonfinite", "warn"))
    if method == "smc":
        if noise != "level":
            raise ValueError(f"noise: only method='replacement' takes noise=, got noise={noise!r} with method='smc'")
        num_particles = check_int("num_particles", SMC_NUM_PARTICLES if num_particles is None else num_particles, 1)
        check_bool("return_particles", return_particles)
        mask = _check_mask(mask, known)
        if class_labels is not None and (not isinstance(class_labels, torch.Tensor) or class_labels.ndim < 1
                                         or class_labels.shape[0] != latents.shape[0]):
            got = tuple(class_labels.shape) if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
            raise ValueError(f"class_labels: expected a tensor with one row per sample ({latents.shape[0]}), got {got}")
        sigmas = _smc_schedule(net, **sample_kwargs)
        with torch.no_grad():  # sampling records no autograd graph (docs/sampling.md#no-autograd)
            return _smc_inpaint(net, latents, known, mask, class_labels, seeds, sigmas, num_particles,
                                return_particles, nonfinite)
    if num_particles is not None:
        raise ValueError(f"num_particles: only method='smc' takes particles, got num_particles={num_particles!r} "
                         f"with method='replacement'")
    if return_particles is not False:
        raise ValueError(f"return_particles: only method='smc' returns particles, got return_particles="
                         f"{return_particles!r} with method='replacement'")
    wrapper = Inpainting(net, known, mask, seeds, noise=noise)
    if sample_kwargs.get("randn_like") is None:
        sample_kwargs["seeds"] = seeds
    x = sample(wrapper, latents, class_labels, nonfinite=nonfinite, **sample_kwargs)
    return torch.where(wrapper.mask, known.to(x.dtype), x)


def _smc_schedule(net, **given) -> list[float]:
    """The noise levels sigma_0 > ... > sigma_N of inpaint(method="smc"): EDM's schedule (num_steps default 128)
    or `sigmas`, through net.round_sigma when the net has one; strictly decreasing."""
    for name in given:
        if name not in SMC_SCHEDULE_ARGUMENTS:
            raise TypeError(f"{name}: not an argument of inpaint(method='smc'), which takes "
                            f"{', '.join(SMC_SCHEDULE_ARGUMENTS)} (and no sampler settings)")
    if "sigmas" in given:
        others = [name for name in given if name != "sigmas"]
        if others:
            raise ValueError(f"sigmas: replaces the Karras schedule, so {', '.join(others)} would be ignored; pass "
                             f"either sigmas or those")
        t = check_sigmas("sigmas", given["sigmas"])
    else:
        t = karras_schedule(net, check_int("num_steps", given.get("num_steps", SMC_NUM_STEPS), minimum=1),
                             given.get("sigma_min", 0.002), given.get("sigma_max", 80.0), given.get("rho", 7.0))
    round_sigma = getattr(net, "round_sigma", None)
    if round_sigma is not None:  # a repeated level would be a zero-variance transition: an error, not a skip
        t = check_sigmas("net.round_sigma(sigmas)", torch.cat([round_levels(round_sigma, t[:-1]), t[-1:]]))
    return t.tolist()


def _smc_inpaint(net, latents, known, mask, class_labels, seeds, sigmas, K, return_particles, nonfinite="warn"):
    """Sequential Monte Carlo inpainting (SMCDiff, Trippe et al. 2022) on EDM's x_sigma = x_0 + sigma n.

    The observation gets one forward-noised path y_0..y_N (y_N = known); K particles per sample take Gaussian
    reverse transitions N(m, v I) given x_0 = D(x_i; sigma_i), are weighted by N(y_{i+1}; m, v I) on the known
    coordinates, resampled systematically when ESS < K/2, and have their known part set to y_{i+1}; the step into
    sigma = 0 is x = D. The weighted particles tend to the exact conditional as K grows and the steps shrink.
    The formulas and the derivation are in docs/formulas.md#smc-inpainting.

    All noise is each sample's stream (SMC_*_OFFSET): the resampling uniforms are ndtr of its normals.
    """
    B, shape = latents.shape[0], tuple(latents.shape[1:])
    dtype = torch.float64 if latents.dtype == torch.float64 else torch.float32
    device, N = latents.device, len(sigmas) - 1
    known_mask = mask.expand(known.shape).unsqueeze(1)  # [B, 1, ...]
    increments = [math.sqrt(sigmas[i] ** 2 - sigmas[i + 1] ** 2) for i in range(N)]

    def observation_step(i: int) -> torch.Tensor:
        """sqrt(sigma_i^2 - sigma_{i+1}^2) z_i, float64 [B, ...]."""
        return increments[i] * randn(seeds, (B, *shape), offset=SMC_OBSERVATION_OFFSET + i, dtype=torch.float64)

    y = known.to(torch.float64)
    for i in range(N):
        y = y + observation_step(i)  # y_0 = y + sum_i increment_i; the loop below walks it back down
    particles = torch.cat([latents.to(dtype)[:, None],
                           randn(seeds, (B, K - 1, *shape), offset=SMC_LATENTS_OFFSET, dtype=dtype)], dim=1)
    x = torch.where(known_mask, y[:, None].to(dtype), sigmas[0] * particles)
    finite_check = NonfiniteCheck(nonfinite, N, dtype, device)
    finite_check.record(-1, x)
    log_w = torch.zeros(B, K, dtype=torch.float64, device=device)
    labels = None if class_labels is None else class_labels.repeat_interleave(K, dim=0)
    for i in range(N):
        sigma = torch.full((B * K,), sigmas[i], dtype=dtype, device=device)
        flat = x.reshape(B * K, *shape)
        D = check_output("net", net(flat, sigma) if labels is None else net(flat, sigma, labels), flat, "net(x, sigma)")
        D = D.to(dtype).reshape(B, K, *shape)
        if sigmas[i + 1] == 0:
            x = D
            finite_check.record(i, x)
            break
        ratio = sigmas[i + 1] ** 2 / sigmas[i] ** 2
        std = sigmas[i + 1] * math.sqrt(1 - ratio)
        mean = D + ratio * (x - D)
        y = y - observation_step(i)
        residual = torch.where(known_mask, (y[:, None] - mean) / std, 0.0)
        log_w = log_w - 0.5 * residual.square().reshape(B, K, -1).sum(-1).to(torch.float64)
        log_w = log_w - log_w.logsumexp(dim=1, keepdim=True)
        ancestors, log_w = _resample_when_degenerate(log_w, _uniforms(seeds, SMC_RESAMPLE_OFFSET + i))
        mean = torch.take_along_dim(mean, ancestors.reshape(B, K, *([1] * len(shape))), dim=1)
        noise = randn(seeds, (B, K, *shape), offset=SMC_PROPOSAL_OFFSET + i, dtype=dtype)
        x = torch.where(known_mask, y[:, None].to(dtype), mean + std * noise)
        finite_check.record(i, x)
    finite_check.report(steps_where(N, lambda i: f"sigma {sigmas[i]:.6g} -> {sigmas[i + 1]:.6g}"),
                        "check the net's output at that noise level", stacklevel=3)
    x = torch.where(known_mask, known[:, None].to(dtype), x).to(latents.dtype)
    weights = log_w.exp()
    if return_particles:
        return x, weights
    pick = _pick(weights, _uniforms(seeds, SMC_RESAMPLE_OFFSET + N))
    return x[torch.arange(B, device=device), pick]


def _uniforms(seeds: torch.Tensor, offset: int) -> torch.Tensor:
    """One uniform in (0, 1) per sample, ndtr of the sample's normal at `offset`: float64 [B]."""
    return torch.special.ndtr(randn(seeds, (seeds.numel(), 1), offset=offset, dtype=torch.float64)[:, 0])


def _resample_when_degenerate(log_w: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ancestor indices [B, K], log-weights): systematic resampling of the samples whose ESS = 1 / sum w^2 < K/2
    (their weights become uniform), the identity elsewhere. log_w is normalized per sample."""
    B, K = log_w.shape
    weights = log_w.exp()
    degenerate = weights.square().sum(dim=1) * (K / 2) > 1  # ESS < K / 2
    positions = (u[:, None] + torch.arange(K, dtype=torch.float64, device=log_w.device)) / K
    resampled = _inverse_cdf(weights, positions)
    keep = torch.arange(K, device=log_w.device).expand(B, K)
    ancestors = torch.where(degenerate[:, None], resampled, keep)
    return ancestors, torch.where(degenerate[:, None], -math.log(K), log_w)


def _inverse_cdf(weights: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Index j with cumsum(w)[j-1] <= position < cumsum(w)[j] for each position in [0, 1): [B, M] int64."""
    cumulative = weights.cumsum(dim=1)
    cumulative = cumulative / cumulative[:, -1:]  # so rounding never leaves a position past the last particle
    return torch.searchsorted(cumulative, positions.contiguous(), right=True).clamp(max=weights.shape[1] - 1)


def _pick(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One particle index per sample drawn with probabilities `weights` [B, K] by the uniforms u [B]."""
    return _inverse_cdf(weights, u[:, None])[:, 0]
