"""An isotropic Gaussian mixture whose denoiser, score, density and samples are exact.

If data ~ sum_k w_k N(mu_k, s_k^2 I), the noised data at level sigma is sum_k w_k N(mu_k, (s_k^2 + sigma^2) I)
and the ideal denoiser is
    D(x; sigma) = sum_k r_k(x) (mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)),
with r_k the posterior weight of component k (docs/formulas.md#gaussian-mixture-oracle). It is the built-in model
of `fastdiff sample` and the oracle the tests measure samplers against.
"""
from __future__ import annotations

import math

import torch

from ._validate import check_int


class GaussianMixture:
    """sum_k weights[k] N(means[k], stds[k]^2 I) over R^dim; callable as a denoiser net(x, sigma)."""

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means: expected shape [K, dim] with K >= 1 and dim >= 1, got {tuple(means.shape)}")
        if not bool(torch.isfinite(means).all()):
            raise ValueError(f"means: every mean must be finite, got {means.tolist()}")
        K = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.shape not in ((), (1,), (K,)):
            raise ValueError(f"stds: expected one standard deviation or {K} (one per component), got shape {tuple(stds.shape)}")
        stds = stds.expand(K).clone()
        if not bool(((stds > 0) & torch.isfinite(stds)).all()):
            raise ValueError(f"stds: every standard deviation must be finite and > 0, got {stds.tolist()}")
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,) or not bool(((weights > 0) & torch.isfinite(weights)).all()):
            raise ValueError(f"weights: expected {K} finite positive weights, got {weights.tolist()}")
        self.means, self.stds, self.weights = means, stds, weights / weights.sum()
        self._tables: dict = {}  # (device, dtype) -> (means, stds, log weights), made on first use there

    def tables_on(self, device, dtype):
        """(means, stds, weights) on a device and dtype, copied once: later calls copy nothing from the host, so
        a CUDA graph can capture the denoiser (after one warm-up call on the device)."""
        key = (torch.device(device), dtype)
        if key not in self._tables:
            self._tables[key] = tuple(t.to(device=device, dtype=dtype) for t in (self.means, self.stds, self.weights))
        return self._tables[key]

    @classmethod
    def ring(cls, num_components: int = 8, radius: float = 1.0, std: float = 0.08) -> "GaussianMixture":
        """The built-in 2-D data set: equal-weight Gaussians evenly spaced on a circle."""
        angles = torch.arange(num_components, dtype=torch.float64) * (2 * math.pi / num_components)
        return cls(torch.stack([radius * angles.cos(), radius * angles.sin()], dim=1), std)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _components(self, x: torch.Tensor, sigma):
        """Flattened x [B, dim], per-component variances [B, K] and posterior weights r [B, K]."""
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"x: expected {self.dim} values per sample, got shape {tuple(x.shape)}")
        dtype = torch.promote_types(x.dtype, torch.float32)
        flat = flat.to(dtype)
        means, stds, weights = self.tables_on(x.device, dtype)
        sigma = torch.as_tensor(sigma, device=x.device, dtype=dtype).reshape(-1, 1).expand(x.shape[0], 1)
        var = stds**2 + sigma**2  # [B, K]
        sq_dist = ((flat[:, None, :] - means) ** 2).sum(-1)  # [B, K]
        log_joint = weights.log() - 0.5 * self.dim * (2 * math.pi * var).log() - 0.5 * sq_dist / var
        return flat, means, stds, var, log_joint

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log p(x; sigma), the density of the data noised to level sigma, per sample [B]."""
        *_, log_joint = self._components(x, sigma)
        return log_joint.logsumexp(dim=1)

    def denoise(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The exact denoiser E[y | y + sigma n = x], shape and device of x, dtype fp32 or fp64."""
        flat, means, stds, var, log_joint = self._components(x, sigma)
        r = log_joint.softmax(dim=1)  # [B, K]
        shrink = stds**2 / var  # [B, K]
        D = (r[:, :, None] * (means + shrink[:, :, None] * (flat[:, None, :] - means))).sum(1)
        return D.reshape(x.shape)

    __call__ = denoise

    def score(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """grad_x log p(x; sigma) = (D(x; sigma) - x) / sigma^2."""
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))
        return (self.denoise(x, sigma) - x) / sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
        """n exact samples of the data, [n, dim]."""
        n = check_int("n", n, minimum=1)
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[component] + self.stds[component, None] * noise).to(dtype)
