"""Training losses of EDM (Karras et al. 2022, Section 5 and Table 1): unreduced weighted squared errors.

loss = lambda(sigma) * (D(y + sigma * n; sigma) - y)^2, elementwise, with n ~ N(0, I) and y the clean images.
EDM's training loop then sums over elements and divides by the batch size.
"""
from __future__ import annotations

import torch

from .precond import vp_sigma
from .reference.skip_mix import compute_dtype, per_sample
from ._validate import check_below, check_output, check_positive, check_real, check_unit_interval


class DiffusionLoss:
    """Shared call of the losses; subclasses define `draw_sigma(batch, device)` and `weight(sigma)`."""

    def draw_sigma(self, batch: int, device) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, net, images: torch.Tensor, class_labels=None, *, sigma=None, noise=None) -> torch.Tensor:
        """Weighted squared error of net's denoising of images, same shape as images (fp32, or fp64 for fp64 images).

        sigma ([B]) and noise (unit variance, images' shape) are drawn from torch's default generator
        unless given.
        """
        if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim < 1:
            got = f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"images: expected a floating-point tensor of shape [B, ...], got {got}")
        dtype = compute_dtype(images)
        batch = images.shape[0]
        y = images.to(dtype)
        if sigma is None:
            sigma = self.draw_sigma(batch, images.device).to(dtype)
        else:
            sigma = _check_sigma(sigma, batch, images.device, dtype)
        if noise is None:
            noise = torch.randn_like(y)
        elif not isinstance(noise, torch.Tensor) or noise.shape != images.shape:
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise: expected a tensor of the images' shape {tuple(images.shape)}, got {got}")
        n = noise.to(dtype) * per_sample(sigma, y)
        D_yn = net(y + n, sigma) if class_labels is None else net(y + n, sigma, class_labels)
        check_output("net", D_yn, images, "the denoiser")
        return per_sample(self.weight(sigma), y) * (D_yn.to(dtype) - y) ** 2


class EDMLoss(DiffusionLoss):
    """sigma = exp(P_mean + P_std * n), n ~ N(0, 1); lambda = (sigma^2 + sd^2) / (sigma * sd)^2."""

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5):
        self.P_mean = check_real("P_mean", P_mean)
        self.P_std = check_real("P_std", P_std, minimum=0.0)
        self.sigma_data = check_positive("sigma_data", sigma_data)

    def draw_sigma(self, batch, device):
        rnd_normal = torch.randn(batch, device=device)
        return (rnd_normal * self.P_std + self.P_mean).exp()

    def weight(self, sigma):
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


class VPLoss(DiffusionLoss):
    """sigma = sigma_VP(1 + u (epsilon_t - 1)), u ~ U(0, 1); lambda = 1 / sigma^2."""

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, epsilon_t: float = 1e-5):
        self.beta_d = check_positive("beta_d", beta_d)
        self.beta_min = check_real("beta_min", beta_min, minimum=0.0)
        self.epsilon_t = check_unit_interval("epsilon_t", epsilon_t)

    def draw_sigma(self, batch, device):
        rnd_uniform = torch.rand(batch, device=device)
        return vp_sigma(1 + rnd_uniform * (self.epsilon_t - 1), self.beta_d, self.beta_min)

    def weight(self, sigma):
        return 1 / sigma**2


class VELoss(DiffusionLoss):
    """sigma = sigma_min (sigma_max / sigma_min)^u, u ~ U(0, 1); lambda = 1 / sigma^2."""

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        check_below("sigma_min", self.sigma_min, "sigma_max", self.sigma_max)

    def draw_sigma(self, batch, device):
        rnd_uniform = torch.rand(batch, device=device)
        return self.sigma_min * ((self.sigma_max / self.sigma_min) ** rnd_uniform)

    def weight(self, sigma):
        return 1 / sigma**2


def _check_sigma(sigma, batch: int, device, dtype) -> torch.Tensor:
    sigma = sigma if isinstance(sigma, torch.Tensor) else torch.tensor(sigma, dtype=torch.float64)  # never via float32
    sigma = sigma.to(device)
    if sigma.shape != (batch,):
        raise ValueError(f"sigma: expected one noise level per sample (shape [{batch}]), got shape {tuple(sigma.shape)}")
    if not sigma.is_floating_point():
        raise TypeError(f"sigma: expected a floating-point tensor, got {sigma.dtype}")
    if not bool((sigma > 0).all()) or not bool(torch.isfinite(sigma).all()):
        raise ValueError(f"sigma: every noise level must be finite and > 0, got {sigma.tolist()}")
    return sigma.to(dtype)
