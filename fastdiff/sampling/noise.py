"""Brownian-tree noise for the SDE solvers: fastdiff.BrownianNoise, a noise_sampler(sigma, sigma_next) whose draws
are increments of one Brownian motion per sample, so that a sample changes little when the number of steps does
(docs/sampling.md#noise). Built on torchsde (fastdiff's `sde` extra, also in the test extra)."""
from __future__ import annotations

import math

import torch

from .._validate import check_positive
from ..rng import seeds_tensor


class BrownianNoise:
    """noise_sampler(sigma, sigma_next) = (W_b(sigma_next) - W_b(sigma)) / sqrt|sigma_next - sigma| for each sample b:
    a standard normal for every query, and queries over adjacent intervals are increments of the same path W_b.

    One torchsde Brownian interval per sample, keyed by that sample's seed (so a sample's noise does not depend on
    the batch it is drawn in), over [sigma_min, sigma_max] (a schedule's lowest level above 0 and its highest), with
    `shape` the shape of one sample, or of the batch ([B, ...]: its first dimension must be the number of seeds).
    The path is in the variable sigma itself (k-diffusion's BrownianTreeNoiseSampler offers a transform; this one
    has none). tol is the interval length below which torchsde stops bisecting (its default 1e-6 of the range's
    scale here).

        noise = fastdiff.BrownianNoise(seeds, latents.shape, sigma_min=0.002, sigma_max=80.0, device=latents.device)
        x = fastdiff.sample(net, latents, solver="dpmpp_2m_sde", noise_sampler=noise)

    sample(..., noise_sampler="brownian", seeds=seeds) builds one over the call's own schedule.
    """

    def __init__(self, seeds, shape, sigma_min: float, sigma_max: float, *, dtype=torch.float32, device=None,
                 tol: float | None = None):
        try:
            import torchsde
        except ImportError:
            raise ImportError("fastdiff.BrownianNoise needs torchsde: pip install torchsde (or fastdiff[sde])") from None
        shape = tuple(int(n) for n in shape)
        seeds = seeds_tensor(seeds, batch_size=shape[0] if len(shape) > 1 else None, device="cpu")
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min: expected less than sigma_max, got sigma_min={sigma_min} and "
                             f"sigma_max={sigma_max}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.tol = 1e-6 * self.sigma_max if tol is None else check_positive("tol", tol)
        self.sample_shape = (1, *shape[1:]) if len(shape) > 1 else (1,)
        self.dtype, self.device = dtype, torch.device("cpu") if device is None else torch.device(device)
        self.paths = [torchsde.BrownianInterval(t0=self.sigma_min, t1=self.sigma_max, size=self.sample_shape,
                                                dtype=dtype, device=self.device, entropy=int(seed), tol=self.tol,
                                                halfway_tree=True, pool_size=24)
                      for seed in seeds.tolist()]

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        low, high = sorted((float(sigma), float(sigma_next)))
        if high - low <= 0:
            raise ValueError(f"BrownianNoise: expected two different noise levels, got {sigma} and {sigma_next}")
        slack = 1e-5  # a level rounded just outside the range (a float32 schedule) is clamped to it
        if low < self.sigma_min * (1 - slack) or high > self.sigma_max * (1 + slack):
            raise ValueError(f"BrownianNoise: asked for the noise between sigma {sigma} and {sigma_next}, outside its "
                             f"range [sigma_min={self.sigma_min}, sigma_max={self.sigma_max}]; make it with a range "
                             f"that covers the schedule's levels above 0")
        low, high = max(low, self.sigma_min), min(high, self.sigma_max)
        sign = 1.0 if float(sigma_next) > float(sigma) else -1.0
        increments = torch.cat([path(low, high) for path in self.paths])
        return increments * (sign / math.sqrt(high - low))


def brownian_for(seeds, latents: torch.Tensor, t: tuple[float, ...], state_dtype: torch.dtype) -> BrownianNoise:
    """The BrownianNoise of sample(..., noise_sampler="brownian"): over the schedule t's levels above 0."""
    levels = [v for v in t if v > 0]
    return BrownianNoise(seeds, latents.shape, min(levels), max(levels), dtype=state_dtype, device=latents.device)
