"""The samplers against the Gaussian-mixture oracle (docs/formulas.md#edm-sampler and docs/formulas.md#gaussian-mixture-oracle).

The oracle `fastdiff.GaussianMixture` is first checked against a plain implementation written here; then it
is the exact denoiser against which the sampler's convergence order and output distribution are measured.
"""
from __future__ import annotations

import math

import pytest
import torch

import fastdiff
from fastdiff import testing
from fastdiff.testing import assert_close, assert_equal, fitted_slope

F64 = torch.float64


# --------------------------------------------------------------------------------------------------------
# An independent, plain implementation of an isotropic Gaussian mixture's noised log-density.
# --------------------------------------------------------------------------------------------------------

MIXTURE_2D = dict(means=[[1.0, 0.5], [-1.0, 0.0], [0.3, -1.2]], stds=[0.4, 0.3, 0.5], weights=[0.5, 0.3, 0.2])
MIXTURE_3D = dict(means=[[1.5, 0.5, 0.0], [-1.0, 0.0, 1.0], [0.0, -1.2, -0.5]], stds=[0.4, 0.3, 0.5],
                  weights=[5.0, 3.0, 2.0])  # unnormalised on purpose: the oracle must normalise them
MIXTURES = {"2d": MIXTURE_2D, "3d": MIXTURE_3D}


def plain_log_prob(x: torch.Tensor, sigma, means, stds, weights) -> torch.Tensor:
    """log sum_k w_k N(x; mu_k, (s_k^2 + sigma^2) I), one component at a time; x [B, d], sigma scalar or [B]."""
    weights = [w / sum(weights) for w in weights]
    sigma = torch.as_tensor(sigma, dtype=x.dtype)
    d = x.shape[1]
    terms = []
    for mu, s, w in zip(means, stds, weights):
        var = s**2 + sigma**2
        sq = ((x - torch.tensor(mu, dtype=x.dtype)) ** 2).sum(dim=1)
        terms.append(math.log(w) - 0.5 * d * torch.log(2 * math.pi * var) - 0.5 * sq / var)
    stacked = torch.stack(terms, dim=1)  # [B, K]
    top = stacked.max(dim=1, keepdim=True).values
    return (top + (stacked - top).exp().sum(dim=1, keepdim=True).log()).squeeze(1)


def plain_score(x: torch.Tensor, sigma, params) -> torch.Tensor:
    """grad_x of plain_log_prob by torch.autograd."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(plain_log_prob(x, sigma, **params).sum(), x)
    return grad


def probe_points(dim: int, seed: int) -> torch.Tensor:
    """A mix of near-component, in-between and far-away points [48, dim] in float64."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([0.7 * torch.randn(16, dim, generator=g, dtype=F64),
                      2.0 * torch.randn(16, dim, generator=g, dtype=F64),
                      6.0 * torch.randn(16, dim, generator=g, dtype=F64)])


SIGMAS = [0.0, 0.002, 0.1, 0.7, 3.0, 80.0]


# --------------------------------------------------------------------------------------------------------
# 1. The oracle.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MIXTURES)
def test_oracle_log_prob_matches_plain_logsumexp(name):
    """log_prob(x, sigma) equals a per-component log-sum-exp of Gaussians of variance s_k^2 + sigma^2."""
    params = MIXTURES[name]
    mix = fastdiff.GaussianMixture(**params)
    x = probe_points(mix.dim, seed=1)
    for sigma in SIGMAS:
        assert_close(mix.log_prob(x, sigma), plain_log_prob(x, sigma, **params), name=f"log_prob sigma={sigma}")
    assert_close(mix.log_prob(x), plain_log_prob(x, 0.0, **params), name="log_prob default sigma=0")
    per_sample = torch.linspace(0.01, 20.0, x.shape[0], dtype=F64)  # one sigma per row
    assert_close(mix.log_prob(x, per_sample), plain_log_prob(x, per_sample, **params), name="log_prob sigma [B]")


def test_oracle_density_integrates_to_one():
    """exp(log_prob) of the 2-D mixture, noised to sigma = 0.3, integrates to 1 over the plane."""
    mix = fastdiff.GaussianMixture(**MIXTURE_2D)
    ticks = torch.linspace(-7.0, 7.0, 561, dtype=F64)
    grid = torch.cartesian_prod(ticks, ticks)
    cell = float(ticks[1] - ticks[0]) ** 2
    total = float(mix.log_prob(grid, 0.3).exp().sum()) * cell
    assert abs(total - 1.0) < 1e-9, total


@pytest.mark.parametrize("name", MIXTURES)
def test_oracle_denoise_is_tweedie(name):
    """denoise(x, sigma) = x + sigma^2 grad log p(x; sigma), the gradient by autograd of the plain density."""
    params = MIXTURES[name]
    mix = fastdiff.GaussianMixture(**params)
    x = probe_points(mix.dim, seed=2)
    for sigma in SIGMAS[1:]:
        expected = x + sigma**2 * plain_score(x, sigma, params)
        # Near sigma = 80, D ~ mean is the difference of two ~80-sized terms: allow a few ulps of 80 there.
        assert_close(mix.denoise(x, sigma), expected, atol=1e-12 * max(1.0, sigma), name=f"denoise sigma={sigma}")
        assert_close(mix(x, sigma), expected, atol=1e-12 * max(1.0, sigma), name=f"__call__ sigma={sigma}")
    # Per-sample sigma [B], as the sampler passes it, and a [B, 1, d] input shape.
    per_sample = torch.linspace(0.002, 10.0, x.shape[0], dtype=F64)
    expected = x + per_sample[:, None] ** 2 * plain_score(x, per_sample, params)
    assert_close(mix.denoise(x, per_sample), expected, atol=1e-11, name="denoise sigma [B]")
    assert_close(mix.denoise(x[:, None, :], per_sample), expected[:, None, :], atol=1e-11, name="denoise [B,1,d]")
    # A float32 input gets a float32 result within float32 tolerance.
    result32 = mix.denoise(x.float(), per_sample.float())
    assert result32.dtype == torch.float32
    assert_close(result32, expected, dtype=torch.float32, atol=1e-5, name="denoise float32")


@pytest.mark.parametrize("name", MIXTURES)
def test_oracle_score_is_autograd_gradient(name):
    """score(x, sigma) equals the autograd gradient of the plain log-density."""
    params = MIXTURES[name]
    mix = fastdiff.GaussianMixture(**params)
    x = probe_points(mix.dim, seed=3)
    for sigma in SIGMAS[1:]:
        expected = plain_score(x, sigma, params)
        # score = (D - x) / sigma^2: the rounding of D (~1e-16 |x|) is amplified by 1/sigma^2.
        atol = 1e-12 * max(1.0, 1.0 / sigma**2)
        assert_close(mix.score(x, sigma), expected, rtol=1e-10, atol=atol, name=f"score sigma={sigma}")
    per_sample = torch.linspace(0.05, 10.0, x.shape[0], dtype=F64)
    assert_close(mix.score(x, per_sample), plain_score(x, per_sample, params), rtol=1e-10, atol=1e-9,
                 name="score sigma [B]")


@pytest.mark.parametrize("name", MIXTURES)
def test_oracle_sample_moments(name):
    """sample(n) has the mixture's mean and covariance within 4.5 standard errors, and is seed-repeatable."""
    params = MIXTURES[name]
    mix = fastdiff.GaussianMixture(**params)
    n = 200_000
    x = mix.sample(n, generator=torch.Generator().manual_seed(11))
    assert x.shape == (n, mix.dim) and x.dtype == F64
    assert_equal(mix.sample(1000, generator=torch.Generator().manual_seed(5)),
                 mix.sample(1000, generator=torch.Generator().manual_seed(5)), name="same seed")

    w = torch.tensor(params["weights"], dtype=F64)
    w = w / w.sum()
    mu = torch.tensor(params["means"], dtype=F64)
    s = torch.tensor(params["stds"], dtype=F64)
    mean = (w[:, None] * mu).sum(0)
    second = sum(w[k] * (s[k] ** 2 * torch.eye(mix.dim, dtype=F64) + torch.outer(mu[k], mu[k]))
                 for k in range(len(w)))
    cov = second - torch.outer(mean, mean)

    centred = x - mean
    mean_se = (cov.diagonal() / n).sqrt()
    assert bool(((x.mean(0) - mean).abs() <= 4.5 * mean_se).all()), (x.mean(0), mean, mean_se)
    products = centred[:, :, None] * centred[:, None, :]  # [n, d, d]
    cov_se = (products.var(0) / n).sqrt()
    emp_cov = products.mean(0)
    assert bool(((emp_cov - cov).abs() <= 4.5 * cov_se).all()), (emp_cov, cov, cov_se)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=[0.3, -0.1]), "stds"),
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=0.0), "stds"),
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=float("nan")), "stds"),
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=0.3, weights=[0.5, 0.3, 0.2]), "weights"),
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=0.3, weights=[0.5]), "weights"),
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=0.3, weights=[1.5, -0.5]), "weights"),
    (dict(means=[[0.0, 0.0], [1.0, 1.0]], stds=0.3, weights=[1.0, 0.0]), "weights"),
    (dict(means=[0.0, 1.0], stds=0.3), "means"),
    (dict(means=torch.zeros(0, 2), stds=0.3), "means"),
])
def test_oracle_rejects_bad_input(kwargs, argument):
    """Bad constructor input raises ValueError whose message starts with the argument's name."""
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        fastdiff.GaussianMixture(**kwargs)


@pytest.mark.parametrize("stds", [[0.3, 0.3, 0.3], [[0.3, 0.3]]])
def test_oracle_rejects_wrong_std_count(stds):
    """One std per component (or one shared): a std list of the wrong length or shape raises ValueError naming stds."""
    with pytest.raises(ValueError, match=r"^stds:"):
        fastdiff.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], stds)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(stds=[0.3, float("inf")]), "stds"),
    (dict(stds=0.3, weights=[float("inf"), 1.0]), "weights"),
])
def test_oracle_rejects_infinite_parameters(kwargs, argument):
    """An infinite std or weight (which would make denoise/weights NaN) raises ValueError naming the argument."""
    with pytest.raises(ValueError, match=rf"^{argument}:"):
        fastdiff.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], **kwargs)


@pytest.mark.parametrize("n, error, match", [
    (2.5, TypeError, "n: expected an int, got 2.5 of type float"),
    ("3", TypeError, "n: expected an int, got '3' of type str"),
    (True, TypeError, "n: expected an int, got True of type bool"),
    (0, ValueError, "n: must be >= 1, got 0"),
])
def test_oracle_sample_count_is_checked(n, error, match):
    """GaussianMixture.sample(n) takes a count of samples: anything else raises an error naming n."""
    with pytest.raises(error, match=match):
        fastdiff.GaussianMixture.ring().sample(n)


# --------------------------------------------------------------------------------------------------------
# 2. Convergence order of the deterministic sampler against an independent RK4 solution of the PF-ODE.
# --------------------------------------------------------------------------------------------------------

SIGMA_MAX, SIGMA_MIN = 80.0, 0.002
CONVERGENCE_STEPS = [16, 32, 64, 128]  # schedule lengths N (N - 1 sampler steps); asymptotic from N = 16 on


def rk4_probability_flow(mix, x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Classical RK4 for dx/du = x - D(x; e^u), u = log sigma, from SIGMA_MAX down to SIGMA_MIN."""
    return fastdiff.testing.rk4_probability_flow(mix.denoise, x, SIGMA_MAX, SIGMA_MIN, num_steps)


@pytest.fixture(scope="module")
def convergence_problem():
    """The 3-D mixture, 64 float64 latents and the exact PF-ODE endpoints (RK4, 2000 steps)."""
    mix = fastdiff.GaussianMixture(**MIXTURE_3D)
    latents = torch.randn(64, mix.dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = rk4_probability_flow(mix, latents * SIGMA_MAX, 2000)
    return mix, latents, exact


def test_reference_ode_solution_is_converged(convergence_problem):
    """Doubling the RK4 steps (2000 -> 4000) changes the reference endpoints by less than 1e-9."""
    mix, latents, exact = convergence_problem
    finer = rk4_probability_flow(mix, latents * SIGMA_MAX, 4000)
    assert_close(exact, finer, rtol=0.0, atol=1e-9, name="RK4 2000 vs 4000 steps")


@pytest.mark.parametrize("solver, low, high", [("euler", 0.8, 1.3), ("heun", 1.7, 2.4)])
def test_sampler_convergence_order(convergence_problem, solver, low, high):
    """Max error against the exact PF-ODE solution falls like N^-1 for Euler and N^-2 for Heun."""
    mix, latents, exact = convergence_problem
    errors = []
    for n in CONVERGENCE_STEPS:
        sigmas = fastdiff.karras_sigmas(n)[:-1]  # ends at sigma_min: no step to 0
        out = fastdiff.sample(mix, latents, sigmas=sigmas, solver=solver, dtype=F64)
        assert out.dtype == F64 and out.shape == latents.shape
        errors.append(float((out - exact).abs().max()))
    slope = fitted_slope(CONVERGENCE_STEPS, errors)
    print(f"{solver}: N={CONVERGENCE_STEPS} max errors={['%.3e' % e for e in errors]} slope={slope:.3f}")
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert low < slope < high, (slope, errors)


# --------------------------------------------------------------------------------------------------------
# 3. The sampled distribution on the built-in ring, against the oracle's own noise floor.
# --------------------------------------------------------------------------------------------------------

NUM_SAMPLES = 8192
FLOOR_FACTOR = 2.5  # pass: distance to an exact draw < 2.5x the exact-vs-exact distance (measured: Heun 1.5x, churn 1.1x)
STOCHASTIC = dict(num_steps=64, S_churn=40, S_min=0.05, S_max=50, S_noise=1.003)


@pytest.fixture(scope="module")
def ring_problem():
    """The ring, an exact reference draw, the noise floor (mean SW of 4 exact-vs-exact pairs), latents, seeds."""
    return testing.ring_problem(NUM_SAMPLES, 1234, seeds_as_list=True)


def test_deterministic_heun_reproduces_ring(ring_problem):
    """Deterministic Heun, N = 18: sliced W1 to an exact draw < 2.5x the noise floor, ~1/8 of samples per mode."""
    mix, reference, floor, latents, _ = ring_problem
    x = fastdiff.sample(mix, latents, num_steps=18)
    assert x.dtype == latents.dtype and x.shape == latents.shape
    testing.check_reproduces_ring(mix, x, reference, floor, "heun N=18", FLOOR_FACTOR)


def test_stochastic_sampler_reproduces_ring(ring_problem):
    """Stochastic sampling (64 steps, S_churn=40, seeded): sliced W1 < 2.5x the noise floor, ~1/8 per mode."""
    mix, reference, floor, latents, seeds = ring_problem
    x = fastdiff.sample(mix, latents, seeds=seeds, **STOCHASTIC)
    testing.check_reproduces_ring(mix, x, reference, floor, "stochastic N=64", FLOOR_FACTOR)
    assert_equal(fastdiff.sample(mix, latents[:256], seeds=seeds[:256], **STOCHASTIC), x[:256], name="seeded rerun")


@pytest.mark.parametrize("label, kwargs", [
    ("S_noise=1.5 heavy churn", dict(num_steps=18, S_churn=80, S_noise=1.5)),
    ("euler N=2", dict(num_steps=2, solver="euler")),
])
def test_distribution_check_detects_wrong_sampler(ring_problem, label, kwargs):
    """A deliberately wrong configuration lands clearly (> 1.5x) above the pass threshold, so the check can fail."""
    mix, reference, floor, latents, seeds = ring_problem
    x = fastdiff.sample(mix, latents, seeds=seeds, **kwargs)
    distance, _ = testing.ring_distance(mix, x, reference, floor, label)
    assert distance > 1.5 * FLOOR_FACTOR * floor, (label, distance, floor)
