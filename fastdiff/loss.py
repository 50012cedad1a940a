"""Training losses of EDM (Karras et al. 2022, Section 5 and Table 1) and DDPM's L_simple: unreduced weighted
squared errors, with their elementwise work fused around the network.

loss = lambda(sigma) * (D(y + sigma * n; sigma) - y)^2, elementwise, with n ~ N(0, I) and y the clean images.
EDM's training loop then sums over elements and divides by the batch size (docs/formulas.md#training-losses).

Randomness: each sample b has a seed (given, or drawn from torch's generator); its noise n is fastdiff's normal
stream of seeds[b] at rng.LOSS_NOISE_OFFSET and its noise level comes from the stream at rng.LOSS_SIGMA_OFFSET.
Every path draws the same values, so the fused and the reference losses agree for the same seeds.

Paths: backend="reference" runs the readable formula with `net` as a black-box denoiser. A fused backend (what
"auto" picks when it can) needs `net` to be a fastdiff preconditioner (`Precond`): it runs one pass before the
network (ops.loss_input: c_in * (y + sigma * n), noise drawn in-kernel) and one after it (ops.loss_error: skip mix,
weighted error and dloss/dF, saved so that backward is one pass too).
"""
from __future__ import annotations

import functools
import logging

import torch

from . import ops
from .ops.backends import prepare, resolve
from .precond import Precond
from .ops.reference.skip_mix import compute_dtype, per_sample
from .rng import LOSS_NOISE_OFFSET, LOSS_SIGMA_OFFSET, MAX_SEED, draw_seeds, seeds_tensor
from .schedules import ddpm_alphas_cumprod, vp_sigma
from ._validate import check_below, check_int, check_output, check_positive, check_real, check_unit_interval

log = logging.getLogger("fastdiff")


class DiffusionLoss:
    """Shared call of the EDM-style losses; subclasses define `sigma_from_normal(z)` and `weight(sigma)`."""

    backend: str = "auto"

    def sigma_from_normal(self, z: torch.Tensor) -> torch.Tensor:
        """The noise levels [B] (float64) for standard normals z [B] (float64) drawn per sample."""
        raise NotImplementedError

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def draw_sigma(self, seeds: torch.Tensor) -> torch.Tensor:
        """Each sample's noise level from its seed's stream (float64 [B]); no host sync."""
        z = ops.randn(seeds, (seeds.shape[0],), offset=loss_offsets(seeds.device)[1], backend=self.backend)
        return self.sigma_from_normal(z.to(torch.float64))

    def __call__(self, net, images: torch.Tensor, class_labels=None, *, sigma=None, noise=None, seeds=None) -> torch.Tensor:
        """Weighted squared error of net's denoising of images, images' shape, float32 (float64 for float64 images).

        seeds ([B] ints) key each sample's noise and noise level; drawn from torch's generator unless given.
        sigma ([B]) and noise (unit variance, images' shape) override what the seeds would draw.
        """
        _check_images(images)
        batch = images.shape[0]
        seeds = draw_seeds(batch, images.device) if seeds is None else seeds_tensor(seeds, batch, images.device)
        if sigma is None:
            sigma = self.draw_sigma(seeds)
        else:
            sigma = _check_sigma(sigma, batch, images.device)
        sigma = sigma.to(compute_dtype(images))  # the precision the preconditioner computes its coefficients in
        if noise is not None and (not isinstance(noise, torch.Tensor) or noise.shape != images.shape):
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise: expected a tensor of the images' shape {tuple(images.shape)}, got {got}")
        if self._fused_path(net, images):
            return self._fused(net, images, class_labels, sigma, noise, seeds)
        return self._reference(net, images, class_labels, sigma, noise, seeds)

    def _fused_path(self, net, images) -> bool:
        """Whether the fused backend runs (raises when one asked for by name cannot)."""
        name = resolve(self.backend, images, (images,))
        if name == "reference":
            return False
        if not isinstance(net, Precond):
            if self.backend == "auto":  # "auto" may pick the reference path (said once); a named backend may not
                _log_reference_once(type(net).__name__)
                return False
            raise TypeError(f"net: backend={self.backend!r} fuses the loss around a fastdiff preconditioner's network "
                            f"(EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond), got a {type(net).__name__}; wrap the "
                            f"network in one, or use backend='reference'")
        return True

    def _reference(self, net, images, class_labels, sigma, noise, seeds):
        """The readable formula: lambda(sigma) * (D(y + sigma n; sigma) - y)^2 with net a black-box denoiser."""
        dtype = compute_dtype(images)
        y = images.to(dtype)
        n = noise.to(dtype) if noise is not None else ops.randn(seeds, y.shape, offset=loss_offsets(y.device)[0],
                                                                 dtype=dtype, backend="reference")
        x = y + per_sample(sigma, y) * n
        D_yn = net(x, sigma) if class_labels is None else net(x, sigma, class_labels)
        check_output("net", D_yn, images, "the denoiser")
        return per_sample(self.weight(sigma), y) * (D_yn.to(dtype) - y) ** 2

    def _fused(self, net: Precond, images, class_labels, sigma, noise, seeds):
        """Two fused passes around the raw network F of the preconditioner."""
        c_skip, c_out, c_in, c_noise = net.coefficients(sigma)
        weight = self.weight(sigma)
        common = dict(seeds=seeds, noise=noise, offset=loss_offsets(images.device)[0], backend=self.backend)
        model_input = ops.loss_input(images, sigma, c_in, **common)
        F = net.model(model_input, c_noise) if class_labels is None else net.model(model_input, c_noise, class_labels)
        check_output("model", F, images, "the network")
        return ops.loss_error(images, F, sigma, c_skip, c_out, weight, **common)


class EDMLoss(DiffusionLoss):
    """sigma = exp(P_mean + P_std * z), z ~ N(0, 1); lambda = (sigma^2 + sd^2) / (sigma * sd)^2 (docs/formulas.md#edm-loss)."""

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5, *, backend: str = "auto"):
        self.P_mean = check_real("P_mean", P_mean)
        self.P_std = check_real("P_std", P_std, minimum=0.0)
        self.sigma_data = check_positive("sigma_data", sigma_data)
        self.backend = prepare(backend)

    def sigma_from_normal(self, z):
        return (z * self.P_std + self.P_mean).exp()

    def weight(self, sigma):
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


class VPLoss(DiffusionLoss):
    """sigma = sigma_VP(1 + u (epsilon_t - 1)), u = Phi(z) ~ U(0, 1); lambda = 1 / sigma^2 (docs/formulas.md#vp-and-ve-losses)."""

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, epsilon_t: float = 1e-5, *, backend: str = "auto"):
        self.beta_d = check_positive("beta_d", beta_d)
        self.beta_min = check_real("beta_min", beta_min, minimum=0.0)
        self.epsilon_t = check_unit_interval("epsilon_t", epsilon_t)
        self.backend = prepare(backend)

    def sigma_from_normal(self, z):
        return vp_sigma(1 + torch.special.ndtr(z) * (self.epsilon_t - 1), self.beta_d, self.beta_min)

    def weight(self, sigma):
        return 1 / sigma**2


class VELoss(DiffusionLoss):
    """sigma = sigma_min (sigma_max / sigma_min)^u, u = Phi(z) ~ U(0, 1); lambda = 1 / sigma^2 (docs/formulas.md#vp-and-ve-losses)."""

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0, *, backend: str = "auto"):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        check_below("sigma_min", self.sigma_min, "sigma_max", self.sigma_max)
        self.backend = prepare(backend)

    def sigma_from_normal(self, z):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** torch.special.ndtr(z)

    def weight(self, sigma):
        return 1 / sigma**2


class DDPMLoss:
    """DDPM's L_simple (Ho et al. 2020): (n - eps_model(sqrt(a_t) y + sqrt(1 - a_t) n, t))^2 elementwise, with t
    uniform on {0, ..., T-1} and a_t = alphas_cumprod[t] (t counts from 0, the paper's t - 1; docs/formulas.md#ddpm-loss).

    The fused path writes it as an EDM loss with VP preconditioning: sigma_t = sqrt((1 - a_t) / a_t), c_in = sqrt(a_t),
    c_skip = 1, c_out = -sigma_t, weight 1 / sigma_t^2, so the same two passes run around eps_model.
    eps_model(x_t, t[, class_labels]) takes t as a float tensor [B] of time steps.
    """

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear", *, backend: str = "auto"):
        self.num_timesteps = check_int("num_timesteps", num_timesteps, minimum=1)
        self.alphas_cumprod = ddpm_alphas_cumprod(self.num_timesteps, beta_start, beta_end, beta_schedule)
        self.beta_schedule = beta_schedule
        self.backend = prepare(backend)
        self._tables = {}  # alphas_cumprod per device, copied there once

    def draw_t(self, seeds: torch.Tensor) -> torch.Tensor:
        """Each sample's time step (int64 [B]) from its seed's stream: floor(T * Phi(z))."""
        z = ops.randn(seeds, (seeds.shape[0],), offset=loss_offsets(seeds.device)[1], backend=self.backend)
        z = z.to(torch.float64)
        return (torch.special.ndtr(z) * self.num_timesteps).long().clamp_(0, self.num_timesteps - 1)

    def __call__(self, eps_model, images: torch.Tensor, class_labels=None, *, t=None, noise=None, seeds=None) -> torch.Tensor:
        """L_simple elementwise, images' shape, float32 (float64 for float64 images)."""
        _check_images(images)
        batch = images.shape[0]
        if not callable(eps_model):
            raise TypeError(f"eps_model: expected a callable eps_model(x_t, t[, class_labels]), got {type(eps_model).__name__}")
        seeds = draw_seeds(batch, images.device) if seeds is None else seeds_tensor(seeds, batch, images.device)
        t = self.draw_t(seeds) if t is None else self._check_t(t, batch, images.device)
        if noise is not None and (not isinstance(noise, torch.Tensor) or noise.shape != images.shape):
            got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
            raise ValueError(f"noise: expected a tensor of the images' shape {tuple(images.shape)}, got {got}")
        dtype = compute_dtype(images)
        alpha_bar = self._table(images.device)[t]
        t_in = t.to(dtype)
        call = (lambda x: eps_model(x, t_in)) if class_labels is None else (lambda x: eps_model(x, t_in, class_labels))
        if resolve(self.backend, images, (images,)) != "reference":
            sigma = ((1 - alpha_bar) / alpha_bar).sqrt().to(dtype)
            common = dict(seeds=seeds, noise=noise, offset=loss_offsets(images.device)[0], backend=self.backend)
            eps = call(ops.loss_input(images, sigma, alpha_bar.sqrt().to(dtype), **common))
            check_output("eps_model", eps, images, "the network")
            return ops.loss_error(images, eps, sigma, 1.0, -sigma, 1 / sigma**2, **common)
        y = images.to(dtype)
        n = noise.to(dtype) if noise is not None else ops.randn(seeds, y.shape, offset=loss_offsets(y.device)[0],
                                                                 dtype=dtype, backend="reference")
        a = per_sample(alpha_bar.to(dtype), y)
        eps = call(a.sqrt() * y + (1 - a).sqrt() * n)
        check_output("eps_model", eps, images, "the network")
        return (n - eps.to(dtype)) ** 2

    def _table(self, device) -> torch.Tensor:
        if device not in self._tables:
            self._tables[device] = self.alphas_cumprod.to(device)
        return self._tables[device]

    def _check_t(self, t, batch: int, device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        if t.shape != (batch,) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"t: expected one integer time step per sample (shape [{batch}]), got {t.dtype} of shape "
                             f"{tuple(t.shape)}")
        if not bool(((t >= 0) & (t < self.num_timesteps)).all()):
            raise ValueError(f"t: every time step must be in [0, {self.num_timesteps}), got {t.tolist()}")
        return t.long()


_OFFSETS: dict = {}  # device -> (noise offset, sigma offset) as int64 device tensors


def loss_offsets(device) -> tuple[torch.Tensor, torch.Tensor]:
    """The losses' stream offsets as int64 tensors on `device`, made once: a step copies no host value to the device."""
    device = torch.device(device)
    if device not in _OFFSETS:
        _OFFSETS[device] = (torch.tensor(LOSS_NOISE_OFFSET, dtype=torch.int64, device=device),
                            torch.tensor(LOSS_SIGMA_OFFSET, dtype=torch.int64, device=device))
    return _OFFSETS[device]


@functools.lru_cache(maxsize=16)
def _log_reference_once(net_type: str) -> None:
    log.info("fastdiff: the loss runs its reference formula for a %s (the fused passes need a fastdiff preconditioner)",
             net_type)


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim < 1:
        got = f"{images.dtype} of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"images: expected a floating-point tensor of shape [B, ...], got {got}")


def _check_sigma(sigma, batch: int, device) -> torch.Tensor:
    sigma = sigma if isinstance(sigma, torch.Tensor) else torch.tensor(sigma, dtype=torch.float64)  # never via float32
    sigma = sigma.to(device)
    if sigma.shape != (batch,):
        raise ValueError(f"sigma: expected one noise level per sample (shape [{batch}]), got shape {tuple(sigma.shape)}")
    if not sigma.is_floating_point():
        raise TypeError(f"sigma: expected a floating-point tensor, got {sigma.dtype}")
    if not bool((sigma > 0).all()) or not bool(torch.isfinite(sigma).all()):
        raise ValueError(f"sigma: every noise level must be finite and > 0, got {sigma.tolist()}")
    return sigma
