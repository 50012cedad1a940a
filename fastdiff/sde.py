"""Score SDEs (Song et al. 2021; docs/formulas.md#score-sdes): the VE, VP and sub-VP SDEs, their reverse-time SDE and
probability-flow ODE, the predictor-corrector and ODE samplers, and likelihoods along the probability flow.

A score function is score_fn(x, t) ~ grad_x log p_t(x) with t of shape [B]; `score_from_denoiser` makes one from
any EDM denoiser D(x; sigma) (a preconditioned network, or fastdiff.GaussianMixture for an exact score).

Every SDE here is linear, dx = f(t) x dt + g(t) dw, with the Gaussian kernel x_t | x_0 ~ N(s(t) x_0, std(t)^2 I):
`marginal_coefficients(t)` gives (s, std). In EDM's terms x_t = s (x_0 + sigma n) with sigma = std / s, so
score_t(x) = (s D(x / s; sigma) - x) / std^2 and Tweedie's denoiser is E[x_0 | x_t] = (x + std^2 score) / s.

The samplers start from x_T, a sample of the prior N(0, prior_std^2 I), as score_sde's do:
    x = pc_sample(sde, score_fn, sde.prior_sampling(shape, seeds), seeds=seeds)
or from unit-variance noise given as latents= (x_T = prior_std * latents).

Random numbers come from fastdiff's per-sample generator (fastdiff.ops.randn) keyed by `seeds`: the sampler's
k-th normal draw is taken at offset SAMPLER_OFFSET + k (see pc_sample), a likelihood's Hutchinson probe at
PROBE_OFFSET. ode_sample and likelihood integrate with torchdiffeq, an optional dependency
(pip install torchdiffeq, or pip install 'fastdiff[sde]'), imported when they are called.
"""
from __future__ import annotations

import copy
import math
import sys
import warnings
from typing import NamedTuple

import torch

from . import ops
from ._memory import on_devices, require_memory
from ._nonfinite import NonfiniteCheck, check_nonfinite
from ._validate import (as_float_tensor, check_below, check_bool, check_choice, check_int, check_output, check_positive,
                        check_real, check_shape)
from .schedules import linear_beta, linear_beta_integral, linear_discrete_betas, smld_levels, smld_sigma
from .rng import PROBE_OFFSET, SAMPLER_OFFSET, draw_seeds, seeds_tensor

PREDICTORS = ("reverse_diffusion", "euler_maruyama", "ancestral")
CORRECTORS = ("langevin", "ald")
LANGEVIN_NORMS = ("batch", "sample")
PROBES = ("rademacher", "gaussian")
ADAPTIVE_RK = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")  # torchdiffeq's solvers that take step_t
LEVEL_ULPS = 4  # level(t) allows t this many ulps (of t's dtype) below a level, e.g. a float32 t on the grid


# --------------------------------------------------------------------------------------------------------
# The forward SDEs.
# --------------------------------------------------------------------------------------------------------

class SDE:
    """A linear forward SDE dx = f(x, t) dt + g(t) dw on [0, T] with N discretisation levels.

    Subclasses define sde(), marginal_coefficients(), prior_std, sampling_eps and _make_tables().
    """

    T = 1.0
    prior_std: float  # the prior is N(0, prior_std^2 I)
    sampling_eps: float  # the sampler's default final time (docs/formulas.md#forward-sdes)

    def __init__(self, N: int):
        self.N = check_int("N", N, minimum=2)
        _require_level_memory("N", self.N)
        self._device_tables: dict = {}
        self._make_tables()

    def _make_tables(self, name: str = "N") -> None:
        """Build the float64 host tables of the N-level discretisation (`name`: the argument that set N)."""

    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(drift f(x, t) of x's shape, diffusion g(t) of shape [B])."""
        raise NotImplementedError

    def marginal_coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(s(t), std(t)) of the kernel x_t | x_0 ~ N(s x_0, std^2 I), each of t's shape."""
        raise NotImplementedError

    def marginal_prob(self, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean s(t) x0 of x0's shape, std(t) of shape [B]) of the kernel p_0t(x_t | x_0)."""
        scale, std = self.marginal_coefficients(_time(t, x0))
        return _per_sample(scale, x0) * x0, std

    def prior_sampling(self, shape, seeds=None, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """A sample of the prior N(0, prior_std^2 I): prior_std * eps with eps = fastdiff.randn(seeds, shape) (offset
        0, the latents' stream); seeds are drawn from torch's default generator when omitted. This is the x_T that
        pc_sample and ode_sample start from, as in score_sde: pc_sample(sde, score_fn, sde.prior_sampling(shape))."""
        shape = check_shape("shape", shape, min_ndim=1, what="(batch, ...)")
        if seeds is None:
            seeds = draw_seeds(shape[0], device)
        return self.prior_std * ops.randn(seeds, shape, dtype=dtype, device=device)

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I) per sample [B]: -D/2 log(2 pi prior_std^2) - |z|^2 / (2 prior_std^2)."""
        flat = z.reshape(z.shape[0], -1)
        D = flat.shape[1]
        return -0.5 * D * math.log(2 * math.pi * self.prior_std**2) - flat.pow(2).sum(1) / (2 * self.prior_std**2)

    def level(self, t) -> torch.Tensor:
        """The discrete level i = floor(t (N - 1) / T) of time t (int64, clamped to [0, N-1]), in float64, allowing
        t LEVEL_ULPS ulps of its dtype below a level so that a rounded t on a level maps to that level."""
        t = as_float_tensor(t)
        slack = LEVEL_ULPS * torch.finfo(t.dtype).eps * (self.N - 1)
        i = torch.floor(t.to(torch.float64) * (self.N - 1) / self.T + slack)
        return i.clamp(0, self.N - 1).to(torch.int64)

    def discretize(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(f, G) of one step x_{i+1} = x_i + f + G z of size dt = T / N; the default is Euler-Maruyama:
        f = f(x, t) dt, G = g(t) sqrt(dt)."""
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def langevin_alpha(self, t) -> torch.Tensor:
        """alpha_i of the Langevin correctors' step 2 alpha_i (snr ...)^2: 1 except for the beta schedules."""
        return torch.ones_like(as_float_tensor(t), dtype=torch.float64)

    def reverse(self, score_fn, probability_flow: bool = False) -> "ReverseSDE":
        """The reverse-time SDE dx = [f - g^2 score] dt + g dw_bar, or with probability_flow=True the probability-flow
        ODE dx = [f - g^2 score / 2] dt."""
        return ReverseSDE(self, score_fn, probability_flow)

    def with_steps(self, N: int, name: str = "N") -> "SDE":
        """The same SDE discretised with N levels (`name` is the argument that errors name)."""
        clone = copy.copy(self)
        clone.N = check_int(name, N, minimum=2)
        _require_level_memory(name, clone.N)
        clone._device_tables = {}
        clone._make_tables(name)
        return clone

    def _table(self, name: str, device) -> torch.Tensor:
        """A float64 table (e.g. discrete_sigmas) on a device, copied there once."""
        key = (name, torch.device(device))
        if key not in self._device_tables:
            self._device_tables[key] = getattr(self, name).to(device)
        return self._device_tables[key]

    def __repr__(self) -> str:
        params = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._params)
        return f"{type(self).__name__}({params}, N={self.N})"

    _params: tuple = ()


class VESDE(SDE):
    """Variance exploding (SMLD): dx = sqrt(d[sigma^2]/dt) dw, sigma(t) = sigma_min (sigma_max / sigma_min)^t."""

    sampling_eps = 1e-5
    _params = ("sigma_min", "sigma_max")

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        check_below("sigma_min", self.sigma_min, "sigma_max", self.sigma_max)
        super().__init__(N)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def _make_tables(self, name: str = "N") -> None:
        # sigma_i = sigma(i / (N - 1)), i = 0..N-1: the levels of SMLD's noise-conditional score network
        self.discrete_sigmas = smld_levels(self.N, self.sigma_min, self.sigma_max)

    def sigma(self, t) -> torch.Tensor:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return smld_sigma(t, self.sigma_min, self.sigma_max)

    def sde(self, x, t):
        """f = 0, g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min))."""
        t = _time(t, x)
        return torch.zeros_like(x), self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def marginal_coefficients(self, t):
        """s = 1, std = sigma(t)."""
        t = as_float_tensor(t)
        return torch.ones_like(t), self.sigma(t)

    def discretize(self, x, t):
        """SMLD's step from level i to i-1: f = 0, G = sqrt(sigma_i^2 - sigma_{i-1}^2) (sigma_{-1} = 0)."""
        sigma, adjacent = self._adjacent_sigmas(self.level(t).to(x.device))
        return torch.zeros_like(x), (sigma**2 - adjacent**2).sqrt().to(x.dtype)

    def ancestral_step(self, x, t, score) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestral sampling from level i to i-1: (mean x + (sigma_i^2 - sigma_{i-1}^2) score,
        std sqrt(sigma_{i-1}^2 (sigma_i^2 - sigma_{i-1}^2) / sigma_i^2) of shape [B])."""
        sigma, adjacent = self._adjacent_sigmas(self.level(t).to(x.device))
        mean = x + _per_sample((sigma**2 - adjacent**2).to(x.dtype), x) * score
        std = (adjacent**2 * (sigma**2 - adjacent**2) / sigma**2).sqrt()
        return mean, std.to(x.dtype)

    def _adjacent_sigmas(self, i: torch.Tensor):
        """(sigma_i, sigma_{i-1}) in float64, sigma_{-1} = 0."""
        sigmas = self._table("discrete_sigmas", i.device)
        adjacent = torch.where(i == 0, torch.zeros_like(sigmas[i]), sigmas[(i - 1).clamp(min=0)])
        return sigmas[i], adjacent


class _LinearBetaSDE(SDE):
    """The VP family's schedule beta(t) = beta_min + t (beta_max - beta_min) and its discrete betas."""

    sampling_eps = 1e-3
    prior_std = 1.0
    _params = ("beta_min", "beta_max")

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        self.beta_min = check_positive("beta_min", beta_min)
        self.beta_max = check_positive("beta_max", beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_min: must not exceed beta_max, got beta_min={self.beta_min} and beta_max={self.beta_max}")
        super().__init__(N)

    def _make_tables(self, name: str = "N") -> None:
        # DDPM's beta_i = beta(i / (N - 1)) / N, alpha_i = 1 - beta_i
        if not self.beta_max / self.N < 1:
            raise ValueError(f"{name}: the discrete betas beta(t) / N reach beta_max / N = {self.beta_max / self.N:g}, "
                             f"but alpha_i = 1 - beta_i must stay positive; use more than {self.beta_max:g} levels, "
                             f"got {self.N}")
        self.discrete_betas = linear_discrete_betas(self.N, self.beta_min, self.beta_max)
        self.alphas = 1.0 - self.discrete_betas

    def beta(self, t) -> torch.Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return linear_beta(t, self.beta_min, self.beta_max)

    def beta_integral(self, t) -> torch.Tensor:
        """int_0^t beta(s) ds = beta_min t + (beta_max - beta_min) t^2 / 2."""
        return linear_beta_integral(t, self.beta_min, self.beta_max)

    def langevin_alpha(self, t) -> torch.Tensor:
        """alpha_i = 1 - beta_i at t's level."""
        i = self.level(t)
        return self._table("alphas", i.device)[i]


class VPSDE(_LinearBetaSDE):
    """Variance preserving (DDPM): dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw."""

    def sde(self, x, t):
        """f = -beta(t) x / 2, g = sqrt(beta(t))."""
        beta = self.beta(_time(t, x))
        return -0.5 * _per_sample(beta, x) * x, beta.sqrt()

    def marginal_coefficients(self, t):
        """s = exp(-B/2), std = sqrt(1 - exp(-B)) with B = int_0^t beta."""
        B = self.beta_integral(t)
        return (-0.5 * B).exp(), (-torch.expm1(-B)).sqrt()

    def discretize(self, x, t):
        """DDPM's step at level i: f = sqrt(alpha_i) x - x, G = sqrt(beta_i)."""
        i = self.level(t).to(x.device)
        alpha, beta = self._table("alphas", x.device)[i], self._table("discrete_betas", x.device)[i]
        return _per_sample((alpha.sqrt() - 1).to(x.dtype), x) * x, beta.sqrt().to(x.dtype)

    def ancestral_step(self, x, t, score) -> tuple[torch.Tensor, torch.Tensor]:
        """DDPM's ancestral step at level i: (mean (x + beta_i score) / sqrt(1 - beta_i), std sqrt(beta_i) [B])."""
        i = self.level(t).to(x.device)
        beta = self._table("discrete_betas", x.device)[i].to(x.dtype)
        return (x + _per_sample(beta, x) * score) / _per_sample((1 - beta).sqrt(), x), beta.sqrt()


class subVPSDE(_LinearBetaSDE):  # noqa: N801 - the paper's name
    """sub-VP: dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw."""

    def sde(self, x, t):
        """f = -beta(t) x / 2, g = sqrt(beta(t) (1 - exp(-2 B(t))))."""
        t = _time(t, x)
        beta = self.beta(t)
        discount = -torch.expm1(-2 * self.beta_integral(t))
        return -0.5 * _per_sample(beta, x) * x, (beta * discount).sqrt()

    def marginal_coefficients(self, t):
        """s = exp(-B/2), std = 1 - exp(-B) with B = int_0^t beta."""
        B = self.beta_integral(t)
        return (-0.5 * B).exp(), -torch.expm1(-B)


LEVEL_TABLE_BYTES = 8  # at least, per level: the discretisation's float64 table (VE's sigmas; VP's betas and alphas)
PC_HOST_BYTES_PER_STEP = 40  # pc_sample's time grid, a float64 tensor and a list of Python floats


def _require_level_memory(name: str, N: int) -> None:
    """Refuse N levels whose tables cannot fit (NotEnoughMemoryError)."""
    require_memory(name, str(N), {torch.device("cpu"): N * LEVEL_TABLE_BYTES}, "the discretisation's tables",
                   "use fewer levels")


def _time(t, x: torch.Tensor) -> torch.Tensor:
    """t as a floating tensor [B] on x's device (a scalar is given to every sample), in x's (at least float32) dtype."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    t = as_float_tensor(t).to(device=x.device, dtype=dtype)
    if t.numel() == 1:
        return t.reshape(1).expand(x.shape[0])
    if t.numel() != x.shape[0]:
        raise ValueError(f"t: expected one time or one per sample (shape [{x.shape[0]}]), got shape {tuple(t.shape)}")
    return t.reshape(x.shape[0])


def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [B] (or scalar) value shaped [B, 1, ..., 1] to broadcast against x."""
    value = torch.as_tensor(value, device=x.device)
    if value.ndim == 0:
        return value
    return value.reshape(-1, *([1] * (x.ndim - 1)))


# --------------------------------------------------------------------------------------------------------
# The reverse-time SDE and the probability-flow ODE.
# --------------------------------------------------------------------------------------------------------

class ReverseSDE:
    """dx = [f - w g^2 score] dt + (1 - pf) g dw_bar, run from T to 0: w = 1 for the reverse-time SDE, w = 1/2 and
    no noise for the probability-flow ODE (probability_flow=True)."""

    def __init__(self, forward: SDE, score_fn, probability_flow: bool = False):
        _check_sde(forward)
        _check_score_fn(score_fn)
        check_bool("probability_flow", probability_flow)
        self.forward, self.score_fn, self.probability_flow = forward, score_fn, probability_flow

    @property
    def N(self) -> int:
        return self.forward.N

    @property
    def T(self) -> float:
        return self.forward.T

    def sde(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(drift f - w g^2 score, diffusion g, or 0 for the probability flow) at (x, t)."""
        drift, diffusion = self.forward.sde(x, t)
        return self._reverse(x, t, drift, diffusion)

    def discretize(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(f - w G^2 score, G, or 0 for the probability flow) of the forward discretisation (f, G) at (x, t)."""
        f, G = self.forward.discretize(x, t)
        return self._reverse(x, t, f, G)

    def _reverse(self, x, t, f, G):
        weight = 0.5 if self.probability_flow else 1.0
        score = _score(self.score_fn, x, _time(t, x))
        reverse_f = f - _per_sample(G.to(x.dtype) ** 2, x) * score * weight
        return reverse_f, torch.zeros_like(G) if self.probability_flow else G


def _score(score_fn, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """score_fn(x, t), checked."""
    return check_output("score_fn", score_fn(x, t), x, "score_fn(x, t)")


def score_from_denoiser(net, sde: SDE, class_labels=None):
    """score_fn(x, t) = (s D(x / s; sigma) - x) / std^2 for an EDM denoiser net(x, sigma[, class_labels]), with
    (s, std) = sde.marginal_coefficients(t) and sigma = std / s (VE: s = 1, score = (D(x; std) - x) / std^2).

    net sees sigma of shape [B] in x's dtype (and class_labels, when given, at every call). The division by std^2
    amplifies D's rounding by s / std^2: at sub-VP's small std (1.1e-4 at t = 1e-3) a float32 D leaves no correct
    digit in the score, so run such SDEs in float64 or use a network that predicts the score itself.
    """
    if not callable(net):
        raise TypeError(f"net: expected a callable denoiser net(x, sigma[, class_labels]), got {type(net).__name__}")
    _check_sde(sde)

    def score_fn(x: torch.Tensor, t) -> torch.Tensor:
        scale, std = sde.marginal_coefficients(_time(t, x))
        s = _per_sample(scale, x)
        sigma = std / scale
        denoised = net(x / s, sigma) if class_labels is None else net(x / s, sigma, class_labels)
        check_output("net", denoised, x, "net(x, sigma)")
        return (s * denoised.to(x.dtype) - x) / _per_sample(std, x) ** 2

    return score_fn


def tweedie_denoise(sde: SDE, score_fn, x: torch.Tensor, t) -> torch.Tensor:
    """Tweedie's formula E[x_0 | x_t = x] = (x + std(t)^2 score(x, t)) / s(t)."""
    t = _time(t, x)
    scale, std = sde.marginal_coefficients(t)
    return (x + _per_sample(std, x) ** 2 * _score(score_fn, x, t)) / _per_sample(scale, x)


# --------------------------------------------------------------------------------------------------------
# The predictor-corrector sampler.
# --------------------------------------------------------------------------------------------------------

def pc_sample(sde: SDE, score_fn, x_T: torch.Tensor | None = None, predictor="reverse_diffusion", corrector="langevin",
              snr: float = 0.16, n_steps: int = 1, eps: float | None = None, denoise: bool = True, seeds=None,
              num_steps: int | None = None, langevin_norms: str = "batch", *, latents: torch.Tensor | None = None,
              nonfinite: str = "warn") -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Algorithms 2-3); returns samples of x_T's shape and dtype.

    The start is given one of two ways: x_T, a sample of the prior N(0, prior_std^2 I) [B, ...], as score_sde's
    samplers take it (x_T = sde.prior_sampling(shape, seeds)); or latents=, unit-variance noise, x_T = prior_std *
    latents (fastdiff.randn(seeds, shape)). The two agree for the VP family (prior_std = 1); for VE, prior_std is
    sigma_max. The third argument used to be the latents, so an x_T whose root mean square is below prior_std / 4
    (with at least 16 values: a prior sample is that small with probability < 1e-7) warns that it looks like
    unit-variance latents. On the grid t_i = linspace(T, eps, N)
    (N = num_steps, default sde.N; eps defaults to sde.sampling_eps), step i runs the corrector's n_steps at t_i,
    then the predictor from t_i to t_{i+1}; the last step (at t = eps) runs the corrector only, so the state ends
    at eps. denoise=True then applies Tweedie's formula at eps, (x + std^2 score) / s. (score_sde's loop instead
    takes a last predictor step from eps and returns its noise-free mean: for reverse diffusion that is the same
    formula up to O(eps).) score_fn is called N n_steps (corrector) + (N - 1) (predictor) + 1 (denoise) times,
    with t of shape [B] in the state's dtype.

    predictor: "reverse_diffusion" (x - f + G z with the reverse discretisation (f, G) = sde.reverse().discretize),
    "euler_maruyama" (x + drift dt + g sqrt(-dt) z, dt = t_{i+1} - t_i), "ancestral" (VESDE and VPSDE only) or None.
    corrector: "langevin" (x + e score + sqrt(2 e) z with e = 2 alpha_i (snr |z| / |score|)^2), "ald" (annealed
    Langevin, e = 2 alpha_i (snr std(t))^2) or None; alpha_i = 1 - beta_i for the VP family, else 1.
    langevin_norms: "batch" takes |z| and |score| as batch means of the per-sample norms, as score_sde does;
    "sample" takes each sample's own. Per-sample norms keep a sample independent of its batch but bias the result
    in low dimension, where the step, growing with the sample's own |z|^2 and 1 / |score|^2, is far from constant:
    on a Gaussian with reverse diffusion and N = 100 the variance came out x4.4 to x34 in 2-D and x1.29 in 16-D
    (batch norms: x1.00 to x1.04 and x1.03); the bias shrinks like 1 / D, so use it for high-dimensional data only.

    The state is float32 (float64 for float64 x_T). The k-th normal draw of the run, k = 0, 1, ... in the order
    the steps use them (per step: the corrector's n_steps, then the predictor's one), is
    fastdiff.randn(seeds, shape, offset=SAMPLER_OFFSET + k); seeds (one int per sample) are drawn from torch's
    default generator when omitted. Without batch norms a sample's result does not depend on its batch.

    nonfinite says what to do if NaN or inf appear, as in fastdiff.sample: "warn" (default), "raise"
    (FloatingPointError) or "ignore"; the report names the first step whose state held them, or x_T (latents).
    """
    _check_sde(sde)
    _check_score_fn(score_fn)
    start, scale, start_name = _prior_start(sde, x_T, latents)
    state_dtype = _check_latents(start, start_name)
    check_choice("predictor", predictor, PREDICTORS, allow_none=True)
    check_choice("corrector", corrector, CORRECTORS, allow_none=True)
    if predictor is None and corrector is None:
        raise ValueError("predictor: expected a predictor, a corrector or both, got predictor=None and corrector=None")
    if predictor == "ancestral" and not hasattr(sde, "ancestral_step"):
        raise ValueError(f"predictor: 'ancestral' is defined for VESDE and VPSDE only, got {type(sde).__name__}; "
                         "use 'reverse_diffusion' or 'euler_maruyama'")
    snr = check_positive("snr", snr)
    n_steps = check_int("n_steps", n_steps, minimum=1)
    check_choice("langevin_norms", langevin_norms, LANGEVIN_NORMS)
    check_nonfinite(nonfinite)
    unused = {None: {"snr": (snr, 0.16), "n_steps": (n_steps, 1), "langevin_norms": (langevin_norms, "batch")},
              "ald": {"langevin_norms": (langevin_norms, "batch")}}.get(corrector, {})
    for name, (value, default) in unused.items():  # refused rather than ignored
        if value != default:
            raise ValueError(f"{name}: corrector={corrector!r} does not use it, got {name}={value!r}; "
                             f"it sets the Langevin corrector{'s' if name != 'langevin_norms' else ''}")
    eps = _check_eps(eps, sde)
    check_bool("denoise", denoise)
    _require_pc_memory(sde, num_steps, n_steps if corrector else 0, predictor is not None, start, state_dtype)
    if num_steps is not None:
        sde = sde.with_steps(num_steps, name="num_steps")
    N, batch, device = sde.N, start.shape[0], start.device

    timesteps = torch.linspace(sde.T, eps, N, dtype=torch.float64)
    grid = timesteps.tolist()  # the per-step scalars, on the host
    times = timesteps.to(device=device, dtype=state_dtype)[:, None].expand(N, batch)  # row i: t_i for every sample
    draws = N * (n_steps if corrector else 0) + (N - 1) * (1 if predictor else 0)
    noise = _NoiseStream(seeds, start, state_dtype, draws)
    rsde = sde.reverse(score_fn)
    finite_check = NonfiniteCheck(nonfinite, N + denoise, state_dtype, device)  # the steps, then the denoising
    if start_name == "x_T":
        _warn_if_unit_scaled(sde, start, "pc_sample")

    with torch.no_grad():  # sampling records no autograd graph (docs/sampling.md#no-autograd)
        x = _scaled(start, scale, state_dtype)
        finite_check.record(-1, x)
        for i in range(N):
            t = times[i]
            if corrector is not None:
                x = _correct(corrector, sde, score_fn, x, t, snr, n_steps, langevin_norms, noise)
            if predictor is not None and i < N - 1:
                x = _predict(predictor, sde, rsde, score_fn, x, t, grid[i + 1] - grid[i], noise)
            finite_check.record(i, x)
        if denoise:
            x = tweedie_denoise(sde, score_fn, x, times[N - 1])
            finite_check.record(N, x)

    def where(i: int) -> str:
        if i == N:
            return f"in the denoising step at t = {grid[-1]:.6g}, after the {N} steps"
        return f"at step {i} of {N} (t {grid[i]:.6g}" + (f" -> {grid[i + 1]:.6g})" if i < N - 1 else ")")

    finite_check.report(where, "check score_fn's output at that time", inputs=start_name, stacklevel=2)
    return x.to(start.dtype)


PRIOR_SCALE_RATIO = 4  # an x_T whose RMS is below prior_std / 4 looks like unit-variance latents (when prior_std >= 4)
PRIOR_SCALE_MIN_NUMEL = 16  # ... and has this many values at least: a prior sample is then that small w.p. 6e-8


def _prior_start(sde: SDE, x_T, latents) -> tuple[torch.Tensor, float, str]:
    """(the given start, the factor that makes it x_T, its argument's name): x_T itself, a sample of the prior, or
    latents, unit-variance noise, times prior_std. Exactly one of them is given."""
    if (x_T is None) == (latents is None):
        got = "both" if x_T is not None else "neither"
        raise TypeError(f"x_T: expected either x_T, a sample of the prior N(0, prior_std^2 I) such as "
                        f"sde.prior_sampling(shape, seeds), or latents=, unit-variance noise (x_T = prior_std * "
                        f"latents), got {got}")
    return (x_T, 1.0, "x_T") if latents is None else (latents, sde.prior_std, "latents")


def _scaled(start: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """x_T in the state's dtype: the start times scale (a prior sample is taken as it is)."""
    x = start.to(dtype)
    return x if scale == 1 else scale * x


def _warn_if_unit_scaled(sde: SDE, x_T: torch.Tensor, sampler: str) -> None:
    """Warn when x_T looks like unit-variance latents for a prior of std >= PRIOR_SCALE_RATIO (VE): the sampler's
    third argument was the latents before it became x_T. One host sync, before the loop, and only for such priors."""
    if sde.prior_std < PRIOR_SCALE_RATIO or x_T.numel() < PRIOR_SCALE_MIN_NUMEL:
        return
    rms = float(torch.linalg.vector_norm(x_T.detach(), dtype=torch.float64)) / math.sqrt(x_T.numel())
    if rms < sde.prior_std / PRIOR_SCALE_RATIO:  # (False for NaN: the non-finite report covers that)
        warnings.warn(f"x_T: its root mean square {rms:.3g} is far below the prior's std {sde.prior_std:g} "
                      f"({type(sde).__name__}): {sampler} takes x_T as a sample of the prior N(0, prior_std^2 I), e.g. "
                      f"sde.prior_sampling(shape, seeds); pass unit-variance noise as latents= (x_T = prior_std * "
                      f"latents), which is what {sampler}'s third argument used to be", RuntimeWarning, stacklevel=3)


def _require_pc_memory(sde: SDE, num_steps, corrector_steps: int, predicts: bool, latents: torch.Tensor,
                       state_dtype: torch.dtype) -> None:
    """Refuse, before building anything, a number of steps whose tables cannot fit: the time grid on the host and,
    on the latents' device, its copy in the state dtype and one int64 noise offset per draw."""
    name, N = ("num_steps", check_int("num_steps", num_steps, minimum=2)) if num_steps is not None else ("sde", sde.N)
    draws = N * corrector_steps + (N - 1) * predicts
    itemsize = torch.empty((), dtype=state_dtype).element_size()
    needs = on_devices(N * (PC_HOST_BYTES_PER_STEP + (LEVEL_TABLE_BYTES if num_steps is not None else 0)),
                       latents.device, N * itemsize + 8 * draws)
    require_memory(name, f"{N} steps" if name == "sde" else str(N), needs,
                   "pc_sample's time grid and per-draw noise offsets", "use fewer steps (num_steps=)")


class _NoiseStream:
    """The sampler's normal draws in order: draw k is fastdiff.randn(seeds, shape, offset=SAMPLER_OFFSET + k)."""

    def __init__(self, seeds, latents: torch.Tensor, dtype: torch.dtype, count: int):
        batch, device = latents.shape[0], latents.device
        self.seeds = draw_seeds(batch, device) if seeds is None else seeds_tensor(seeds, batch, device)
        self.shape, self.dtype, self.k = tuple(latents.shape), dtype, 0
        self.offsets = SAMPLER_OFFSET + torch.arange(count, dtype=torch.int64, device=device)

    def __call__(self) -> torch.Tensor:
        z = ops.randn(self.seeds, self.shape, offset=self.offsets[self.k], dtype=self.dtype)
        self.k += 1
        return z


def _predict(name, sde, rsde, score_fn, x, t, dt: float, noise) -> torch.Tensor:
    """One predictor step from t to t + dt (dt < 0)."""
    if name == "reverse_diffusion":
        f, G = rsde.discretize(x, t)
        return x - f + _per_sample(G, x) * noise()
    if name == "euler_maruyama":
        drift, diffusion = rsde.sde(x, t)
        return x + drift * dt + _per_sample(diffusion, x) * math.sqrt(-dt) * noise()
    mean, std = sde.ancestral_step(x, t, _score(score_fn, x, t))  # "ancestral"
    return mean + _per_sample(std, x) * noise()


def _correct(name, sde, score_fn, x, t, snr: float, n_steps: int, langevin_norms: str, noise) -> torch.Tensor:
    """n_steps Langevin steps x + step score + sqrt(2 step) z at time t."""
    alpha = sde.langevin_alpha(t).to(device=x.device, dtype=x.dtype)
    if name == "ald":
        std = sde.marginal_coefficients(t)[1]
        step = _per_sample(2 * alpha * (snr * std) ** 2, x)
    for _ in range(n_steps):
        score = _score(score_fn, x, t)
        z = noise()
        if name == "langevin":
            score_norm = score.reshape(x.shape[0], -1).norm(dim=1)
            noise_norm = z.reshape(x.shape[0], -1).norm(dim=1)
            if langevin_norms == "batch":
                score_norm, noise_norm = score_norm.mean(), noise_norm.mean()
            step = _per_sample(2 * alpha * (snr * noise_norm / score_norm) ** 2, x)
        x = x + step * score + (2 * step).sqrt() * z
    return x


# --------------------------------------------------------------------------------------------------------
# The probability-flow ODE: sampling and likelihood.
# --------------------------------------------------------------------------------------------------------

class ODESample(NamedTuple):
    """ode_sample's result: the samples and the number of score evaluations."""

    samples: torch.Tensor
    nfe: int


class Likelihood(NamedTuple):
    """likelihood's result: log p(x) per sample [B] in nats, and the number of ODE function evaluations."""

    logp: torch.Tensor
    nfe: int


def ode_sample(sde: SDE, score_fn, x_T: torch.Tensor | None = None, rtol: float = 1e-5, atol: float = 1e-5,
               eps: float | None = None, denoise: bool = False, method: str = "dopri5", options=None, *,
               latents: torch.Tensor | None = None, nonfinite: str = "warn") -> ODESample:
    """Integrate the probability-flow ODE dx/dt = f - g^2 score / 2 from x_T at t = T to t = eps (default
    sde.sampling_eps) with torchdiffeq.odeint(method, rtol, atol, options); denoise=True adds Tweedie's formula at
    eps. Returns ODESample(samples of x_T's shape and dtype, nfe = score evaluations).

    The start is given as in pc_sample: x_T, a sample of the prior (sde.prior_sampling(shape, seeds)), or latents=,
    unit-variance noise with x_T = prior_std * latents (and the same warning for an x_T that looks like latents).
    The state is float32 (float64 for float64 x_T); the adaptive step size is shared by the whole batch.
    nonfinite says what to do if NaN or inf appear, as in fastdiff.sample ("warn", "raise" or "ignore"): the report
    says whether the integration or the denoising step made them. When x_T (latents) holds them, or the drift makes
    them during the integration, the solver cannot go on (its step size is shared by the batch): that raises
    FloatingPointError, with either setting but "ignore", saying which, and at what t.
    """
    odeint = _odeint(method)
    _check_sde(sde)
    _check_score_fn(score_fn)
    start, scale, start_name = _prior_start(sde, x_T, latents)
    state_dtype = _check_latents(start, start_name)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    eps = _check_eps(eps, sde)
    check_bool("denoise", denoise)
    finite_check = NonfiniteCheck(nonfinite, 1 + denoise, state_dtype, start.device)  # the integration, denoising
    rsde = sde.reverse(score_fn, probability_flow=True)
    batch, nfe = start.shape[0], 0
    if start_name == "x_T":
        _warn_if_unit_scaled(sde, start, "ode_sample")

    evaluations = []  # (t, whether the drift was finite) of each evaluation, device values read only on failure

    def drift(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        t = _inside(t, eps, sde.T).to(x.dtype)
        out = rsde.sde(x, t.expand(batch))[0]
        if finite_check.mode != "ignore":
            evaluations.append((t, out.isfinite().all()))
        return out

    times = torch.tensor([sde.T, eps], dtype=state_dtype, device=start.device)
    with torch.no_grad():
        x = _scaled(start, scale, state_dtype)
        finite_check.record(-1, x)
        if finite_check.mode != "ignore" and finite_check.first_nonfinite() == 0:  # (a sync, as the solver's steps)
            raise FloatingPointError(finite_check.message(0, str, "", start_name) + "; the integration cannot "
                                     "start from them (its adaptive step size is shared by the batch)")
        try:
            x = odeint(drift, x, times, rtol=rtol, atol=atol, method=method, options=_options(options, method, eps))[-1]
        except AssertionError as error:  # torchdiffeq's "underflow in dt": NaN or inf made its error estimate useless
            bad = [float(t) for t, finite in evaluations if not bool(finite)]
            if not bad:
                raise
            # The integration runs from T down: the largest such t is where it first met them (the step-size probes
            # may have evaluated below it).
            raise FloatingPointError(
                f"non-finite values (NaN or inf) in the sampler state first appeared in the integration from t = "
                f"{sde.T:g} to {eps:g}: the drift held them at t = {max(bad):.6g}, and the solver could not go on "
                f"(torchdiffeq: {error}); check score_fn's output there") from error
        finite_check.record(0, x)
        if denoise:
            x = tweedie_denoise(sde, score_fn, x, eps)
            finite_check.record(1, x)
            nfe += 1
    stages = (f"in the integration from t = {sde.T:g} to {eps:g}", f"in the denoising step at t = {eps:g}")
    finite_check.report(stages.__getitem__, "check score_fn's output there", inputs=start_name, stacklevel=2)
    return ODESample(x.to(start.dtype), nfe)


def likelihood(sde: SDE, score_fn, x: torch.Tensor, exact_divergence: bool = False, probe: str = "rademacher",
               rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-5, seeds=None, method: str = "dopri5",
               options=None) -> Likelihood:
    """log p(x) per sample (nats): log p_eps(x) = log p_T(x_T) + int_eps^T div f~(x_t, t) dt along the
    probability-flow ODE dx/dt = f~ = f - g^2 score / 2, integrated forward from x at t = eps with the divergence
    (torchdiffeq.odeint). log p_T is sde.prior_logp. Returns Likelihood(logp [B], nfe).

    The divergence is exact (one autograd pass per dimension: for low dimension) with exact_divergence=True, else
    Hutchinson's z^T (d f~/dx) z with one probe z per sample fixed for the whole integration: "rademacher" (+-1) or
    "gaussian", from fastdiff's generator keyed by seeds at PROBE_OFFSET (seeds drawn from torch's default generator
    when omitted); the estimate is unbiased over probes. score_fn must be differentiable in x.
    """
    odeint = _odeint(method)
    _check_sde(sde)
    _check_score_fn(score_fn)
    state_dtype = _check_latents(x, "x")
    check_bool("exact_divergence", exact_divergence)
    check_choice("probe", probe, PROBES)
    if exact_divergence and (probe != "rademacher" or seeds is not None):
        name, value = ("probe", probe) if probe != "rademacher" else ("seeds", seeds)
        raise ValueError(f"{name}: exact_divergence=True uses no Hutchinson probe, got {name}={value!r}; "
                         "pass exact_divergence=False to estimate the divergence with probes")
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    eps = _check_eps(eps, sde)
    rsde = sde.reverse(score_fn, probability_flow=True)
    batch, nfe = x.shape[0], 0
    z = None if exact_divergence else _probe(probe, seeds, x, state_dtype)

    def dynamics(t: torch.Tensor, state):
        nonlocal nfe
        nfe += 1
        x_t = state[0].detach().requires_grad_(True)
        with torch.enable_grad():
            drift = rsde.sde(x_t, _inside(t, eps, sde.T).to(x_t.dtype).expand(batch))[0]
            divergence = _exact_divergence(drift, x_t) if z is None else _hutchinson_divergence(drift, x_t, z)
        return drift.detach(), divergence.detach()

    times = torch.tensor([eps, sde.T], dtype=state_dtype, device=x.device)
    state = (x.detach().to(state_dtype), torch.zeros(batch, dtype=state_dtype, device=x.device))
    solution = odeint(dynamics, state, times, rtol=rtol, atol=atol, method=method, options=_options(options, method, sde.T))
    x_T, delta_logp = (s[-1] for s in solution)
    return Likelihood((sde.prior_logp(x_T) + delta_logp).detach(), nfe)


def _options(options, method: str, end: float) -> dict | None:
    """torchdiffeq's options, plus step_t = [end] for its adaptive Runge-Kutta solvers: they would otherwise step past
    the end of the interval and interpolate back, evaluating the drift where t < 0 (VP's std is NaN there)."""
    if method not in ADAPTIVE_RK:
        return options
    options = dict(options or {})
    options.setdefault("step_t", torch.tensor([end], dtype=torch.float64))
    return options


def _inside(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """t clamped into [lo, hi]: only torchdiffeq's initial step-size probe evaluates outside the interval (step_t keeps
    the steps inside), and it only picks the first step size."""
    return t.clamp(lo, hi)


def _exact_divergence(drift: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_j d drift_j / d x_j per sample, one autograd pass per dimension j (samples must not interact)."""
    flat = drift.reshape(x.shape[0], -1)
    D = flat.shape[1]
    divergence = torch.zeros(x.shape[0], dtype=drift.dtype, device=x.device)
    for j in range(D):
        (grad,) = torch.autograd.grad(flat[:, j].sum(), x, retain_graph=j < D - 1)
        divergence = divergence + grad.reshape(x.shape[0], -1)[:, j]
    return divergence


def _hutchinson_divergence(drift: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """z^T (d drift / d x) z per sample, by one vector-Jacobian product."""
    (grad,) = torch.autograd.grad((drift * z).sum(), x)
    return (grad * z).reshape(x.shape[0], -1).sum(1)


def _probe(kind: str, seeds, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Hutchinson's probe from each sample's stream at PROBE_OFFSET: N(0, I), or its signs (Rademacher)."""
    seeds = draw_seeds(x.shape[0], x.device) if seeds is None else seeds_tensor(seeds, x.shape[0], x.device)
    z = ops.randn(seeds, x.shape, offset=PROBE_OFFSET, dtype=dtype)
    return z if kind == "gaussian" else torch.where(z >= 0, 1.0, -1.0).to(dtype)


def bits_per_dim(logp: torch.Tensor, num_dims, offset: float = 7.0) -> torch.Tensor:
    """Bits per dimension -logp / (D ln 2) + offset of log-likelihoods logp [B] (nats) of D-dimensional data.

    The offset makes it the discrete data's bits. With values k in {0..levels-1} dequantized as
    x = lo + (hi - lo) (k + u) / levels, u ~ U[0, 1)^D, each k owns a bin of width (hi - lo) / levels per dimension,
    so (Jensen) -log2 P(k) / D <= E_u[-log2 p(x)] / D + log2(levels / (hi - lo)): offset =
    dequantization_offset(levels, (lo, hi)), and logp should be taken at dequantized data. The default 7 =
    log2(256 / 2) is score_sde's for 8-bit images in [-1, 1] (x = (k + u) / 128 - 1); use 8 for [0, 1]
    (x = (k + u) / 256). num_dims is D, or the data x [B, ...] (D = x[0].numel()).
    """
    if isinstance(num_dims, torch.Tensor):
        num_dims = num_dims[0].numel() if num_dims.ndim >= 1 and num_dims.shape[0] > 0 else 0
    D = check_int("num_dims", num_dims, minimum=1)
    offset = check_real("offset", offset)
    return -logp / (D * math.log(2)) + offset


def dequantization_offset(levels: int = 256, data_range=(-1.0, 1.0)) -> float:
    """log2(levels / (hi - lo)): bits_per_dim's offset for `levels` quantization levels spread over data_range."""
    levels = check_int("levels", levels, minimum=2)
    lo, hi = (check_real("data_range", v) for v in data_range)
    check_below("data_range[0]", lo, "data_range[1]", hi)
    return math.log2(levels / (hi - lo))


def _odeint(method: str):
    """torchdiffeq.odeint, imported on first use (an optional dependency), after checking `method`."""
    try:
        from torchdiffeq import odeint
    except ImportError as error:
        raise ImportError("fastdiff.sde's ODE sampler and likelihood need torchdiffeq, an optional dependency: "
                          "pip install torchdiffeq (or pip install 'fastdiff[sde]')") from error
    solvers = getattr(sys.modules.get("torchdiffeq._impl.odeint"), "SOLVERS", None)
    if solvers is not None and method not in solvers:
        raise ValueError(f"method: expected one of torchdiffeq's solvers ({', '.join(map(repr, solvers))}), got {method!r}")
    return odeint


# --------------------------------------------------------------------------------------------------------
# Argument checks.
# --------------------------------------------------------------------------------------------------------

def _check_sde(sde) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde: expected a fastdiff.sde SDE (VESDE, VPSDE, subVPSDE), got {type(sde).__name__}")


def _check_score_fn(score_fn) -> None:
    if not callable(score_fn):
        raise TypeError(f"score_fn: expected a callable score_fn(x, t), got {type(score_fn).__name__}")


def _check_latents(latents, name: str = "latents") -> torch.dtype:
    """A floating tensor [B, ...] with B >= 1; returns the state dtype (float64 for float64, else float32)."""
    if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
        got = f"dtype {latents.dtype}" if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise TypeError(f"{name}: expected a floating-point tensor of shape [B, ...], got {got}")
    if latents.ndim < 1 or latents.shape[0] < 1:
        raise ValueError(f"{name}: expected shape [B, ...] with B >= 1, got {tuple(latents.shape)}")
    return torch.float64 if latents.dtype == torch.float64 else torch.float32


def _check_eps(eps, sde: SDE) -> float:
    """The final (or, for likelihood, initial) time: in (0, T); None means sde.sampling_eps."""
    if eps is None:
        return sde.sampling_eps
    eps = check_positive("eps", eps)
    if not eps < sde.T:
        raise ValueError(f"eps: must be below T = {sde.T}, got {eps}")
    return eps
