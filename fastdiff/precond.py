"""EDM preconditioners (Karras et al. 2022, Table 1): wrap a raw network F into a denoiser D(x; sigma).

D(x; sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma))      (docs/formulas.md#preconditioning)

Each preconditioner calls `model(c_in * x, c_noise)` (or `model(c_in * x, c_noise, class_labels)` when
labels are given) with c_noise of shape [B], and computes the skip mix in float32 (float64 when x is
float64) whatever dtype F returns.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from . import ops
from .ops.backends import prepare
from .ops.reference.skip_mix import compute_dtype, per_sample, skip_coefficients
from .schedules import iddpm_alpha_bar, iddpm_levels, vp_sigma, vp_sigma_inv
from ._validate import (as_float_tensor, check_below, check_int, check_output, check_positive, check_real,
                        check_unit_interval)


class Precond(nn.Module):
    """Shared forward of the four preconditioners; subclasses set `kind` and define `input_coefficients(sigma)`.

    `backend` chooses who runs the skip mix (fastdiff.ops.skip_mix): "auto" by default.
    """

    kind: str  # the skip-mix coefficients of fastdiff.ops.skip_mix: "edm", "vp", "ve" or "iddpm"
    sigma_data: float = 0.5  # only EDM's skip mix uses it
    sigma_min: float
    sigma_max: float

    def __init__(self, model: nn.Module, backend: str = "auto"):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model: expected a callable network F(x, c_noise[, class_labels]), got {type(model).__name__}")
        self.model = model
        self.backend = prepare(backend)

    # EDM's names for what the network takes, read from the fastdiff network inside (UNet: in_channels,
    # img_resolution, num_classes; MLP: dim, num_classes); None where the network does not say.
    @property
    def img_resolution(self):
        return getattr(self.model, "img_resolution", None)

    @property
    def img_channels(self):
        return getattr(self.model, "in_channels", None)

    @property
    def label_dim(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or 0)

    @property
    def sample_shape(self):
        """The shape of one sample, (C, H, W) for a U-Net or (dim,) for an MLP; None if the network does not say."""
        if self.img_channels is not None and self.img_resolution is not None:
            return (self.img_channels, self.img_resolution, self.img_resolution)
        dim = getattr(self.model, "dim", None)
        return (dim,) if dim is not None else None

    def with_model(self, model) -> "Precond":
        """The same preconditioner around another network (sharing everything else), e.g. F wrapped in DDP."""
        clone = copy.copy(self)
        clone._modules = dict(self._modules)
        clone._modules["model"] = model
        return clone

    def input_coefficients(self, sigma: torch.Tensor):
        """(c_in, c_noise) for a [B] tensor of sigmas."""
        raise NotImplementedError

    def coefficients(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in, c_noise) of EDM Table 1 for a [B] tensor of sigmas."""
        c_skip, c_out = skip_coefficients(self.kind, sigma, self.sigma_data)
        return (c_skip, c_out, *self.input_coefficients(sigma))

    def round_sigma(self, sigma):
        """The noise level the network is evaluated at: the identity for continuous-time preconditioners."""
        return as_float_tensor(sigma)

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        """D(x; sigma) for x of shape [B, ...] and sigma a scalar or of shape [B] (or [B, 1, ..., 1])."""
        x, sigma = _prepare(x, sigma)
        c_in, c_noise = self.input_coefficients(sigma)
        model_input = per_sample(c_in, x) * x
        F = self.model(model_input, c_noise) if class_labels is None else self.model(model_input, c_noise, class_labels)
        check_output("model", F, x, "the network")
        return ops.skip_mix(x, F, sigma, precond=self.kind, sigma_data=self.sigma_data, backend=self.backend)


class EDMPrecond(Precond):
    """EDM preconditioning: c_skip = sd^2/(s^2+sd^2), c_out = s*sd/sqrt(s^2+sd^2), c_in = 1/sqrt(s^2+sd^2), c_noise = ln(s)/4."""

    kind = "edm"

    def __init__(self, model, sigma_data: float = 0.5, sigma_min: float = 0.0, sigma_max: float = float("inf"), *,
                 backend: str = "auto"):
        super().__init__(model, backend)
        self.sigma_data = check_positive("sigma_data", sigma_data)
        self.sigma_min = check_real("sigma_min", sigma_min, minimum=0.0)
        self.sigma_max = check_positive("sigma_max", sigma_max, allow_inf=True)
        check_below("sigma_min", self.sigma_min, "sigma_max", self.sigma_max)

    def input_coefficients(self, sigma):
        c_in = 1 / (self.sigma_data**2 + sigma**2).sqrt()
        c_noise = sigma.log() / 4
        return c_in, c_noise


class VPPrecond(Precond):
    """VP preconditioning: c_skip = 1, c_out = -s, c_in = 1/sqrt(s^2+1), c_noise = (M-1) sigma_inv(s)."""

    kind = "vp"

    def __init__(self, model, beta_d: float = 19.9, beta_min: float = 0.1, M: int = 1000, epsilon_t: float = 1e-5, *,
                 backend: str = "auto"):
        super().__init__(model, backend)
        self.beta_d = check_positive("beta_d", beta_d)
        self.beta_min = check_real("beta_min", beta_min, minimum=0.0)
        self.M = check_int("M", M, minimum=2)
        self.epsilon_t = check_unit_interval("epsilon_t", epsilon_t)
        self.sigma_min = float(self.sigma(torch.tensor(self.epsilon_t, dtype=torch.float64)))
        self.sigma_max = float(self.sigma(torch.tensor(1.0, dtype=torch.float64)))

    def sigma(self, t) -> torch.Tensor:
        return vp_sigma(t, self.beta_d, self.beta_min)

    def sigma_inv(self, sigma) -> torch.Tensor:
        return vp_sigma_inv(sigma, self.beta_d, self.beta_min)

    def input_coefficients(self, sigma):
        c_in = 1 / (sigma**2 + 1).sqrt()
        c_noise = (self.M - 1) * self.sigma_inv(sigma)
        return c_in, c_noise


class VEPrecond(Precond):
    """VE preconditioning: c_skip = 1, c_out = s, c_in = 1, c_noise = ln(s/2)."""

    kind = "ve"

    def __init__(self, model, sigma_min: float = 0.02, sigma_max: float = 100.0, *, backend: str = "auto"):
        super().__init__(model, backend)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        check_below("sigma_min", self.sigma_min, "sigma_max", self.sigma_max)

    def input_coefficients(self, sigma):
        c_in = torch.ones_like(sigma)
        c_noise = (0.5 * sigma).log()
        return c_in, c_noise


class iDDPMPrecond(Precond):
    """iDDPM preconditioning: c_skip = 1, c_out = -s, c_in = 1/sqrt(s^2+1), c_noise = M-1-argmin_j |s - u_j|.

    u_j are the M+1 discrete noise levels of the cosine schedule (u_M = 0), computed in float64
    (docs/formulas.md#iddpm-levels).
    """

    kind = "iddpm"

    def __init__(self, model, C_1: float = 0.001, C_2: float = 0.008, M: int = 1000, *, backend: str = "auto"):
        super().__init__(model, backend)
        self.C_1 = check_positive("C_1", C_1)
        self.C_2 = check_positive("C_2", C_2)
        self.M = check_int("M", M, minimum=2)
        # A plain attribute, not a buffer: module.half() must not round the noise levels. Levels are float64;
        # EDM keeps them in float32, so its sigma values differ from these from the 4th significant digit.
        self.u = self.discrete_sigmas(self.M, self.C_1, self.C_2)
        self._u_on = {self.u.device: self.u}  # one copy per device, so a forward never copies host to device
        self._ascending_on = {}
        self.sigma_min = float(self.u[self.M - 1])
        self.sigma_max = float(self.u[0])

    alpha_bar = staticmethod(iddpm_alpha_bar)  # alpha_bar(j) = sin(pi/2 * j / (M (C_2 + 1)))^2
    discrete_sigmas = staticmethod(iddpm_levels)  # discrete_sigmas(M, C_1, C_2): the levels u_0 > ... > u_M = 0

    def sigma_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """argmin_j |sigma - u_j| for every element of sigma (ties to the lower j, as argmin)."""
        device = sigma.device
        if device not in self._ascending_on:  # u_M = 0, ..., u_0, made once per device
            self._ascending_on[device] = self.levels_on(device).flip(0)
        return self.M - nearest_level(sigma, self._ascending_on[device], ties="upper")

    def levels_on(self, device) -> torch.Tensor:
        """The levels u_j as float64 on `device`, copied there once."""
        if device not in self._u_on:
            self._u_on[device] = self.u.to(device)
        return self._u_on[device]

    def round_sigma(self, sigma):
        """Snap each sigma to the nearest discrete level u_j (keeps the shape; float64 for non-float input)."""
        sigma = as_float_tensor(sigma)
        return self.levels_on(sigma.device)[self.sigma_index(sigma)].to(sigma.dtype)

    def input_coefficients(self, sigma):
        c_in = 1 / (sigma**2 + 1).sqrt()
        c_noise = (self.M - 1 - self.sigma_index(sigma)).to(sigma.dtype)
        return c_in, c_noise


def nearest_level(sigma: torch.Tensor, levels: torch.Tensor, ties: str = "lower") -> torch.Tensor:
    """The index of the level nearest to each element of sigma, for ascending float64 `levels` (int64, sigma's shape).

    A binary search between the two neighbouring levels, O(log M) per element; `ties` picks the lower or the upper
    of two equally near levels."""
    s = sigma.to(torch.float64).reshape(-1)
    upper = torch.searchsorted(levels, s).clamp_(1, levels.numel() - 1)
    lower = upper - 1
    below, above = (s - levels[lower]).abs(), (levels[upper] - s).abs()
    take_lower = below <= above if ties == "lower" else below < above
    return torch.where(take_lower, lower, upper).reshape(sigma.shape)


def _prepare(x: torch.Tensor, sigma) -> tuple[torch.Tensor, torch.Tensor]:
    """Check x, bring x to the compute dtype and sigma to a [B] tensor in the same dtype and device."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x: expected a floating-point tensor of shape [B, ...], got {got}")
    if x.ndim < 1:
        raise ValueError("x: expected shape [B, ...] with a batch dimension, got a 0-d tensor")
    sigma_t = as_float_tensor(sigma).to(x.device)
    dtype = compute_dtype(x)  # x alone sets the precision: a float64 sigma must not turn a float32 net to float64
    batch = x.shape[0]
    if sigma_t.numel() == 1:
        sigma_t = sigma_t.reshape(1).expand(batch)
    elif sigma_t.numel() == batch and all(s == 1 for s in sigma_t.shape[1:]) and sigma_t.ndim >= 1:
        sigma_t = sigma_t.reshape(batch)
    else:
        raise ValueError(f"sigma: expected a scalar or one value per sample (shape [{batch}]), got shape {tuple(sigma_t.shape)}")
    return x.to(dtype), sigma_t.to(dtype)
