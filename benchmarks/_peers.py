"""The peers the whole-sampler benchmarks time next to fastdiff: the real code of k-diffusion and of diffusers.

Both are driven with the same EDM denoiser D(x, sigma) and the same sigmas (a float32 tensor ending in 0) as
fastdiff.sample, so that the rows of a table differ only in the sampler:

  k-diffusion   its own `sample_heun` (k-diffusion 0.1.1.post1's sampling.py, loaded unmodified by
                fastdiff.testing.k_diffusion_sampling()), called as a k-diffusion user calls it.
  diffusers     HeunDiscreteScheduler's own step loop, as its pipelines run it: set_timesteps, then for each time
                step scale_model_input, the model, and scheduler.step. The scheduler's sigma table is set to the
                shared schedule (in its own layout: the inner levels twice, one for each of Heun's two stages), and
                prediction_type="sample" makes its step take the model's output as the denoised x0. The model is
                D at the scheduler's current level, given x back from the scaled input (x_in sqrt(sigma^2 + 1)),
                so that a diffusers row costs its scheduler's work plus one multiplication per call.

diffusers' Heun has no churn (its gamma is always 0), so `diffusers_heun` is only offered for S_churn = 0.
"""
from __future__ import annotations

import torch

from fastdiff.testing import k_diffusion_sampling


def kdiffusion_heun(net, sigmas: torch.Tensor, churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf")):
    """A sampler f(latents) -> samples: k-diffusion's real sample_heun from latents * sigmas[0] (churn, s_tmin and
    s_tmax are fastdiff's S_churn, S_min and S_max)."""
    kd = k_diffusion_sampling()  # ImportError names what to install

    def run(latents):
        return kd.sample_heun(net, latents * sigmas[0], sigmas, disable=True, s_churn=churn,
                              s_tmin=s_tmin, s_tmax=s_tmax)

    return run


def diffusers_heun(net, sigmas: torch.Tensor):
    """A sampler f(latents) -> samples: diffusers' HeunDiscreteScheduler step loop over `sigmas` (see above)."""
    from diffusers import HeunDiscreteScheduler

    scheduler = HeunDiscreteScheduler(prediction_type="sample")
    steps = sigmas.numel() - 1
    # diffusers' layout of a Heun schedule: s0, s1, s1, s2, s2, ..., s_(n-1), s_(n-1), 0 (2n entries, 2n-1 steps)
    table = torch.cat([sigmas[:1], sigmas[1:-1].repeat_interleave(2), sigmas[-1:]]).float()

    def run(latents):
        scheduler.set_timesteps(steps, device=latents.device)
        scheduler.sigmas = table.to(latents.device)
        x = latents * table[0]
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x, t)
            sigma = scheduler.sigmas[scheduler.step_index]
            denoised = net(x_in * (sigma**2 + 1) ** 0.5, sigma.expand(x.shape[0]))
            x = scheduler.step(denoised, t, x).prev_sample
        return x

    return run
