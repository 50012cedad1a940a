"""The solvers beside EDM's in fastdiff.sample: "ddim", "euler_ancestral" and "dpmpp_2m" (issue 8, part 4).

Each is checked against a plain implementation written here from its paper's formulas (DDIM in its own VP
variables, DPM-Solver++(2M) in lambda = -log sigma), against the Gaussian-mixture oracle (convergence order of
the ODE solvers to the exact probability-flow solution; the sampled distribution against the oracle's own noise
floor), for fastdiff's generator contract (seeds, offsets, randn_like), for capture safety, and for its errors.
"""
from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch

import fastdiff
from fastdiff import testing
from fastdiff.testing import SyncCounter, assert_close, assert_equal, torch_threads
import fastdiff.ops
from fastdiff.rng import SAMPLER_OFFSET
from fastdiff.sampling.loop import run_plan
from fastdiff.sampling.plan import SampleOptions, StepPlan
from fastdiff.schedules import ddpm_alphas_cumprod

F64 = torch.float64
NEW_SOLVERS = ("ddim", "euler_ancestral", "dpmpp_2m")
FUSED = (["cpu"] if not fastdiff.ops.backends.install_reasons("cpu") else []) + \
    (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" and importlib.util.find_spec("triton") else [])
LATENTS = fastdiff.randn(list(range(5)), (5, 2, 3), dtype=F64)
SEEDS = [11, 12, 13, 14, 15]
LABELS = torch.arange(5)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Every tensor here is tiny: one intra-op thread is faster, and on a busy machine much faster (restored after)."""
    with torch_threads(1):
        yield


def mixture_net(dim=6):
    """An exact denoiser for a 6-D mixture on [B, 2, 3], nudged by integer class labels when given."""
    gm = fastdiff.GaussianMixture(torch.linspace(-1, 1, 3 * dim).reshape(3, dim), [0.3, 0.5, 0.2], [0.5, 0.3, 0.2])

    def net(x, sigma, labels=None):
        out = gm(x, sigma)
        return out if labels is None else out + 1e-3 * labels.to(out.dtype).reshape(-1, *[1] * (x.ndim - 1))

    return net


class Recorder:
    """Wraps a denoiser and records every call's sigma and labels."""

    def __init__(self, net):
        self.net, self.sigmas, self.labels = net, [], []

    def __call__(self, x, sigma, *labels):
        self.sigmas.append(sigma)
        self.labels.append(labels)
        return self.net(x, sigma, *labels)


def seeded_randn_like(seed):
    """A randn_like with its own torch.Generator, so two samplers can be given the same noise."""
    generator = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(x.shape, generator=generator, dtype=x.dtype)


# --------------------------------------------------------------------------------------------------------
# 1. Plain implementations from the papers, independent of fastdiff.
# --------------------------------------------------------------------------------------------------------

def plain_ddim(net, latents, alpha_bars, eta=0.0, randn_like=None, labels=None):
    """DDIM (Song et al. 2021, Eq. 12) in its own variables, x_VP = sqrt(alpha_bar) x: x0 from the EDM denoiser at
    sigma = sqrt((1 - alpha_bar) / alpha_bar); the noise z drawn once per step; the last alpha_bar is 1 (x = x0)."""
    a = alpha_bars
    x = (1 - a[0]).sqrt() * latents.to(F64)  # the VP image of fastdiff's start latents * sigma_0
    for i in range(len(a) - 1):
        a_t, a_prev = a[i], a[i + 1]
        sigma = ((1 - a_t) / a_t).sqrt()
        x0 = net(x / a_t.sqrt(), sigma.expand(x.shape[0]), *([] if labels is None else [labels])).to(F64)
        eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        std = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
        z = randn_like(x) if randn_like is not None else torch.zeros_like(x)
        x = a_prev.sqrt() * x0 + (1 - a_prev - std**2).sqrt() * eps + std * z
    return x


def plain_dpmpp_2m(net, latents, sigmas, labels=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2) with lambda = -log sigma, data prediction D, float64; first
    order (x_next = (sigma_next/sigma) x - expm1(-h) D) on the first step, and x_next = D on a step into 0 (where h
    is infinite): k-diffusion's sample_dpmpp_2m's rule, so a last step to a level above 0 is second order."""
    sigmas = [float(s) for s in sigmas]
    x, D_prev = latents.to(F64) * sigmas[0], None
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        D = net(x, torch.full((x.shape[0],), s, dtype=F64), *([] if labels is None else [labels])).to(F64)
        if s_next == 0:
            x = D
            continue
        h = math.log(s) - math.log(s_next)
        if D_prev is None:
            D_hat = D
        else:
            r = (math.log(sigmas[i - 1]) - math.log(s)) / h
            D_hat = (1 + 1 / (2 * r)) * D - 1 / (2 * r) * D_prev
        x = (s_next / s) * x - math.expm1(-h) * D_hat
        D_prev = D
    return x


def plain_euler_ancestral(net, latents, sigmas, noise, eta=1.0, labels=None):
    """k-diffusion's Euler ancestral: Euler to sigma_down, then + noise(i) * sigma_up when sigma_up > 0, float64."""
    sigmas = [float(s) for s in sigmas]
    x = latents.to(F64) * sigmas[0]
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        D = net(x, torch.full((x.shape[0],), s, dtype=F64), *([] if labels is None else [labels])).to(F64)
        up = min(s_next, eta * math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
        down = math.sqrt(s_next**2 - up**2)
        x = x + (down - s) * (x - D) / s
        if up > 0:
            x = x + noise(i, x) * up
    return x


def ddim_alpha_bars(num_steps):
    """DDPM's linear schedule at num_steps evenly spaced timesteps from T-1 down, then alpha_bar = 1 (clean data)."""
    alphas_cumprod = ddpm_alphas_cumprod(1000)
    steps = torch.linspace(999, 0, num_steps).round().long()
    return torch.cat([alphas_cumprod[steps], torch.ones(1, dtype=F64)])


def vp_sigmas(alpha_bars):
    return ((1 - alpha_bars) / alpha_bars).sqrt()


@pytest.mark.parametrize("num_steps", [1, 10])
def test_ddim_is_what_users_call_ddim(num_steps):
    """solver="ddim" on DDIM's noise levels is DDIM's deterministic update (eta = 0) written in DDIM's variables."""
    net = mixture_net()
    alpha_bars = ddim_alpha_bars(num_steps)
    got = fastdiff.sample(net, LATENTS, LABELS, solver="ddim", sigmas=vp_sigmas(alpha_bars), dtype=F64)
    assert_close(got, plain_ddim(net, LATENTS, alpha_bars, labels=LABELS), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_euler_ancestral_is_ddim_with_eta(eta):
    """solver="euler_ancestral" with eta is DDIM with that eta, given the same noise (randn_like once per step)."""
    net = mixture_net()
    alpha_bars = ddim_alpha_bars(12)
    got = fastdiff.sample(net, LATENTS, solver="euler_ancestral", eta=eta, sigmas=vp_sigmas(alpha_bars), dtype=F64,
                          randn_like=seeded_randn_like(3))
    want = plain_ddim(net, LATENTS, alpha_bars, eta=eta, randn_like=seeded_randn_like(3))
    assert_close(got, want, rtol=1e-10, atol=1e-10)
    other = fastdiff.sample(net, LATENTS, solver="euler_ancestral", eta=eta, sigmas=vp_sigmas(alpha_bars),
                            dtype=F64, randn_like=seeded_randn_like(4))
    assert (other - got).abs().max() > 1e-3  # the noise does matter: the comparison can fail


def test_ddim_is_euler():
    """"ddim" builds the very plan of "euler" (without churn), on the Karras schedule and on a net's rounded levels."""
    assert fastdiff.plan_steps(num_steps=9, solver="ddim") == fastdiff.plan_steps(num_steps=9, solver="euler")
    net = fastdiff.iDDPMPrecond(lambda x, c: torch.zeros_like(x))
    assert fastdiff.plan_steps(net, num_steps=7, solver="ddim") == fastdiff.plan_steps(net, num_steps=7, solver="euler")
    net = mixture_net()
    assert_equal(fastdiff.sample(net, LATENTS.float(), solver="ddim", num_steps=7),
                 fastdiff.sample(net, LATENTS.float(), solver="euler", num_steps=7))


@pytest.mark.parametrize("schedule", [dict(num_steps=9), dict(sigmas=[20.0, 7.0, 3.0, 1.0, 0.3, 0.05])])
def test_dpmpp_2m_matches_the_paper(schedule):
    """dtype=float64 dpmpp_2m equals Lu et al.'s DPM-Solver++(2M) written in lambda (a schedule to 0 and one ending
    above 0), labels passed through."""
    net = mixture_net()
    sigmas = fastdiff.karras_sigmas(schedule["num_steps"]) if "num_steps" in schedule else schedule["sigmas"]
    got = fastdiff.sample(net, LATENTS, LABELS, solver="dpmpp_2m", dtype=F64, **schedule)
    assert_close(got, plain_dpmpp_2m(net, LATENTS, sigmas, labels=LABELS), rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("sigmas", [[20.0, 7.0, 3.0, 1.0, 0.3, 0.05], [14.6, 6.0, 2.1, 0.7, 0.2, 0.0], [3.0, 1.0, 0.5]])
def test_dpmpp_2m_matches_k_diffusion(sigmas, dtype):
    """dpmpp_2m equals k-diffusion's own sample_dpmpp_2m (fastdiff.testing.k_diffusion_sampling) on the same schedule,
    to the dtype's precision: a schedule ending above 0 (its last step second order in both), one ending in 0 (first
    order into 0), and two steps."""
    k = fastdiff.testing.k_diffusion_sampling()
    net = mixture_net()
    latents = LATENTS.to(dtype)
    levels = torch.tensor(sigmas, dtype=dtype)
    want = k.sample_dpmpp_2m(lambda x, s: net(x, s).to(dtype), latents * levels[0], levels, disable=True)
    got = fastdiff.sample(net, latents, sigmas=sigmas, solver="dpmpp_2m", dtype=dtype)
    if dtype == F64:
        assert_close(got, want, rtol=1e-12, atol=1e-12)
    else:
        assert_close(got, want, dtype=torch.float32)


@pytest.mark.parametrize("eta, sigmas", [(1.0, None), (0.4, None), (2.5, None), (1.0, [30.0, 5.0, 1.0, 0.2, 0.01])])
def test_euler_ancestral_matches_k_diffusion_on_the_documented_stream(eta, sigmas):
    """With seeds, euler_ancestral equals k-diffusion's Euler ancestral fed fastdiff.randn(seeds, shape,
    offset=SAMPLER_OFFSET + i) at step i: eta <= 1, eta > 1 (sigma_up clipped at sigma_next), and a schedule that
    ends above 0 (its last step adds noise too)."""
    net = mixture_net()
    schedule = dict(num_steps=10) if sigmas is None else dict(sigmas=sigmas)
    levels = fastdiff.karras_sigmas(10) if sigmas is None else sigmas
    got = fastdiff.sample(net, LATENTS, LABELS, solver="euler_ancestral", eta=eta, seeds=SEEDS, dtype=F64, **schedule)
    noise = lambda i, x: fastdiff.randn(SEEDS, x.shape, offset=SAMPLER_OFFSET + i, dtype=F64)  # noqa: E731
    want = plain_euler_ancestral(net, LATENTS, levels, noise, eta=eta, labels=LABELS)
    assert_close(got, want, rtol=1e-11, atol=1e-11)


# --------------------------------------------------------------------------------------------------------
# 2. The plans: every per-step scalar on the host.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0, 3.0])
def test_ancestral_plan(eta):
    """sigma_down^2 + sigma_up^2 = t_{i+1}^2, sigma_up = min(t_{i+1}, eta t_{i+1} sqrt(1 - t_{i+1}^2 / t_i^2)), no
    noise into 0, S_noise scales the noise; no churn (t_hat = t), one evaluation per step."""
    plan = fastdiff.plan_steps(num_steps=8, solver="euler_ancestral", eta=eta, S_noise=1.25)
    t = plan.t
    assert plan.t_hat == t[:-1] and plan.gamma == (0.0,) * 8 and plan.correct == (False,) * 8 and plan.nfe == 8
    assert plan.noise_after
    for i in range(8):
        up = min(t[i + 1], eta * t[i + 1] * math.sqrt(1 - t[i + 1] ** 2 / t[i] ** 2))
        assert plan.noise_std[i] == pytest.approx(1.25 * up, rel=1e-14, abs=0)
        assert plan.t_down[i] ** 2 + up**2 == pytest.approx(t[i + 1] ** 2, rel=1e-13)
    assert plan.noise_std[-1] == 0.0 and plan.t_down[-1] == 0.0
    if eta == 0.0:
        assert plan.t_down == t[1:] and set(plan.noise_std) == {0.0}
    if eta == 3.0:  # clipped: all of t_{i+1} is noise, the Euler step goes to the denoised
        assert plan.t_down[:-1] == (0.0,) * 7


def test_dpmpp_2m_plan():
    """c_i = h_i / (2 h_{i-1}) with h_i = log(t_i / t_{i+1}), 0 on the first step and on a step into 0: 1/2 on a
    geometric schedule, also on a last step to a level above 0; a step after a zero-length one (a rounded schedule)
    is first order."""
    plan = fastdiff.plan_steps(sigmas=[16.0, 8.0, 4.0, 2.0, 1.0, 0.0], solver="dpmpp_2m")
    assert plan.multistep == (0.0, 0.5, 0.5, 0.5, 0.0)
    assert fastdiff.plan_steps(sigmas=[16.0, 8.0, 4.0, 2.0, 1.0], solver="dpmpp_2m").multistep == (0.0, 0.5, 0.5, 0.5)
    assert plan.noise_std == (0.0,) * 5 and plan.t_down is None and plan.nfe == 5
    karras = fastdiff.plan_steps(num_steps=6, solver="dpmpp_2m")
    t = karras.t
    for i in range(1, 5):
        h, h_last = math.log(t[i] / t[i + 1]), math.log(t[i - 1] / t[i])
        assert karras.multistep[i] == pytest.approx(h / (2 * h_last), rel=1e-14)

    class Rounded:
        """A net whose noise levels are integers (round_sigma), so 5.2 and 4.9 both become 5."""

        def round_sigma(self, sigma):
            return torch.as_tensor(sigma).round()

    plan = fastdiff.plan_steps(Rounded(), sigmas=[10.0, 5.2, 4.9, 2.2, 1.2, 0.0], solver="dpmpp_2m")
    assert plan.t == (10.0, 5.0, 5.0, 2.0, 1.0, 0.0)
    c3 = math.log(2.0) / (2 * math.log(5.0 / 2.0))
    assert plan.multistep[:3] == (0.0, 0.0, 0.0) and plan.multistep[3] == pytest.approx(c3) and plan.multistep[4] == 0.0


def test_rounded_schedule_with_a_zero_length_step_samples():
    """A zero-length step (a rounded schedule) leaves the state as it is and gives no NaN in any new solver."""
    gm = mixture_net()

    class Rounded:
        def round_sigma(self, sigma):
            return torch.as_tensor(sigma).round()

        def __call__(self, x, sigma):
            return gm(x, sigma)

    for solver in NEW_SOLVERS:
        with torch.no_grad():
            x = fastdiff.sample(Rounded(), LATENTS, sigmas=[10.0, 5.2, 4.9, 2.2, 1.2, 0.0], solver=solver, seeds=SEEDS,
                                nonfinite="raise")
        assert bool(x.isfinite().all())


def test_few_steps_of_dpmpp_2m_are_ddim_and_eta_zero_is_ddim():
    """With N <= 2 every dpmpp_2m step is first order, i.e. DDIM; euler_ancestral with eta = 0 adds nothing and
    is DDIM (and Euler) bit for bit, with seeds (no draw) and with a randn_like (called as often)."""
    net = mixture_net()
    for n in (1, 2):
        assert_equal(fastdiff.sample(net, LATENTS, solver="dpmpp_2m", num_steps=n),
                     fastdiff.sample(net, LATENTS, solver="ddim", num_steps=n))
    for dtype in (torch.float32, F64):
        ddim = fastdiff.sample(net, LATENTS, LABELS, solver="ddim", num_steps=9, dtype=dtype)
        for kwargs in (dict(seeds=SEEDS), dict(randn_like=seeded_randn_like(0)), {}):
            got = fastdiff.sample(net, LATENTS, LABELS, solver="euler_ancestral", eta=0.0, num_steps=9, dtype=dtype,
                                  **kwargs)
            assert_equal(got, ddim)
            assert_equal(got, fastdiff.sample(net, LATENTS, LABELS, solver="euler", num_steps=9, dtype=dtype, **kwargs))
    assert (fastdiff.sample(net, LATENTS, solver="dpmpp_2m", num_steps=3) - fastdiff.sample(
        net, LATENTS, solver="ddim", num_steps=3)).abs().max() > 1e-3  # from N = 3 on, the middle step is second order


# --------------------------------------------------------------------------------------------------------
# 3. The oracle: convergence order of the ODE solvers, and the sampled distribution.
# --------------------------------------------------------------------------------------------------------

MIXTURE_3D = dict(means=[[1.5, 0.5, 0.0], [-1.0, 0.0, 1.0], [0.0, -1.2, -0.5]], stds=[0.4, 0.3, 0.5],
                  weights=[5.0, 3.0, 2.0])
ORDER_STEPS = [32, 64, 128]  # schedule lengths N; h halves from one to the next


def fixed_sigma_min_run(mix, latents, solver, n):
    """The solver on the Karras schedule of n levels that ends at sigma_min = 0.002 (no step to 0), float64."""
    return fastdiff.sample(mix, latents, sigmas=fastdiff.karras_sigmas(n)[:-1], solver=solver, dtype=F64)


@pytest.fixture(scope="module")
def flow_problem():
    """The 3-D mixture, 64 latents and the probability-flow solution at sigma_min: Heun with 2048 levels; with the
    difference to Heun with 1024 levels, about 3x Heun-2048's own error (second order: error(1024) ~ 4 error(2048))."""
    mix = fastdiff.GaussianMixture(**MIXTURE_3D)
    latents = torch.randn(64, mix.dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = fixed_sigma_min_run(mix, latents, "heun", 2048)
    coarser = fixed_sigma_min_run(mix, latents, "heun", 1024)
    return mix, latents, exact, float((exact - coarser).abs().max())


# Measured (max error against Heun-2048, N = 32, 64, 128): ddim 1.72e-1, 8.62e-2, 4.31e-2 (ratios 1.99, 2.00);
# dpmpp_2m 3.33e-2, 7.26e-3, 1.70e-3 (ratios 4.58, 4.26; 4.13 from 128 to 256). Heun-1024 vs 2048: 1.8e-5.
@pytest.mark.parametrize("solver, low, high", [("ddim", 1.8, 2.2), ("dpmpp_2m", 3.6, 5.0)])
def test_ode_solver_convergence_order(flow_problem, solver, low, high):
    """Halving h halves ddim's error (first order) and quarters dpmpp_2m's (second order)."""
    mix, latents, exact, reference_error = flow_problem
    errors = [float((fixed_sigma_min_run(mix, latents, solver, n) - exact).abs().max()) for n in ORDER_STEPS]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    print(f"{solver}: N={ORDER_STEPS} errors={['%.3e' % e for e in errors]} ratios={['%.2f' % r for r in ratios]} "
          f"reference error < {reference_error:.1e}")
    assert min(errors) > 50 * reference_error  # the reference is exact at the scale of the errors measured
    assert all(low < r < high for r in ratios), (solver, ratios, errors)


def test_euler_ancestral_eta_zero_converges_like_ddim(flow_problem):
    """euler_ancestral with eta = 0 is the deterministic ODE solver: it has ddim's error at every N."""
    mix, latents, exact, _ = flow_problem
    for n in ORDER_STEPS[:2]:
        x = fastdiff.sample(mix, latents, sigmas=fastdiff.karras_sigmas(n)[:-1], solver="euler_ancestral", eta=0.0,
                            dtype=F64)
        assert_equal(x, fixed_sigma_min_run(mix, latents, "ddim", n))


NUM_SAMPLES = 8192
FLOOR_FACTOR = 2.5  # pass: sliced W1 to an exact draw < 2.5x the mean exact-vs-exact distance (test_oracle's rule)
# Measured ratios to the floor (8192 samples; here, and over 6 other draws of reference, floor, latents and seeds):
# ddim N=64 1.30 (0.79-1.74), dpmpp_2m N=32 1.10 (0.45-1.60), euler_ancestral N=128 1.55 (0.84-1.15), eta=0.5 N=64
# 1.07 (0.73-1.79); an exact draw itself 0.77-1.42, test_oracle's Heun N=18 0.94-2.18. Wrong samplers: dpmpp_2m N=3
# 26x, euler_ancestral N=4 15x, the ancestral noise without the step down to sigma_down 12x.
GOOD = {
    "ddim N=64": dict(solver="ddim", num_steps=64),
    "dpmpp_2m N=32": dict(solver="dpmpp_2m", num_steps=32),
    "euler_ancestral N=128": dict(solver="euler_ancestral", num_steps=128),
    "euler_ancestral eta=0.5 N=64": dict(solver="euler_ancestral", num_steps=64, eta=0.5),
}


@pytest.fixture(scope="module")
def ring_problem():
    """The ring, an exact reference draw, the noise floor (mean SW of 4 exact-vs-exact pairs), latents, seeds."""
    return testing.ring_problem(NUM_SAMPLES, 1234)


@pytest.mark.parametrize("label", GOOD)
def test_solver_reproduces_ring(ring_problem, label):
    """Each new solver, with the exact denoiser: sliced W1 < 2.5x the noise floor and ~1/8 of the samples per mode
    (within 4.5 standard errors)."""
    mix, reference, floor, latents, seeds = ring_problem
    x = fastdiff.sample(mix, latents, seeds=seeds, **GOOD[label])
    testing.check_reproduces_ring(mix, x, reference, floor, label, FLOOR_FACTOR)


def overnoised_ancestral_plan():
    """A plausible bug: the ancestral noise added, but the Euler step taken to t_{i+1} instead of sigma_down."""
    plan = fastdiff.plan_steps(num_steps=64, solver="euler_ancestral")
    return StepPlan(t=plan.t, t_hat=plan.t_hat, gamma=plan.gamma, noise_std=plan.noise_std, correct=plan.correct,
                    t_down=plan.t[1:], noise_after=True)


@pytest.mark.parametrize("label", ["dpmpp_2m N=3", "euler_ancestral N=4", "overnoised ancestral"])
def test_distribution_check_detects_wrong_samplers(ring_problem, label):
    """Too few steps, or the ancestral step without its step down, land clearly (> 1.5x) above the threshold."""
    mix, reference, floor, latents, seeds = ring_problem
    if label == "overnoised ancestral":
        x = run_plan(mix, latents, overnoised_ancestral_plan(), None, None, seeds, torch.float32, None, "warn")
    else:
        solver, n = label.split(" N=")
        x = fastdiff.sample(mix, latents, seeds=seeds, solver=solver, num_steps=int(n))
    distance, _ = testing.ring_distance(mix, x, reference, floor, label)
    assert bool(torch.isfinite(x).all())
    assert distance > 1.5 * FLOOR_FACTOR * floor, (label, distance / floor)


# --------------------------------------------------------------------------------------------------------
# 4. fastdiff's sampler contract: generator, labels, callback, non-finite values, backends.
# --------------------------------------------------------------------------------------------------------

def test_ancestral_draws_only_where_it_adds_noise(churn_offsets):
    """With seeds, step i draws at offset SAMPLER_OFFSET + i, only where sigma_up > 0: never on the step to 0
    (nor anywhere with eta = 0), on the last step of a schedule that ends above 0."""
    offsets = churn_offsets
    for kwargs, steps in ((dict(num_steps=6), range(5)), (dict(sigmas=[9.0, 3.0, 1.0, 0.1]), range(3)),
                          (dict(num_steps=6, eta=0.0), [])):
        offsets.clear()
        fastdiff.sample(mixture_net(), LATENTS.float(), seeds=SEEDS, solver="euler_ancestral", **kwargs)
        assert offsets == [SAMPLER_OFFSET + i for i in steps]
    for solver in ("ddim", "dpmpp_2m"):
        fastdiff.sample(mixture_net(), LATENTS.float(), seeds=SEEDS, solver=solver, num_steps=6)
    assert offsets == []


@pytest.mark.parametrize("solver", NEW_SOLVERS)
def test_randn_like_is_called_once_per_step(solver):
    """A user randn_like is called once per step by every solver (EDM's rule), whether or not the step adds noise;
    the net is called once per step."""
    net, draws = Recorder(mixture_net()), []
    fastdiff.sample(net, LATENTS, randn_like=lambda x: draws.append(1) or torch.randn_like(x), solver=solver,
                    num_steps=7)
    assert len(draws) == 7 and len(net.sigmas) == 7 == fastdiff.plan_steps(num_steps=7, solver=solver).nfe


def test_seeds_make_ancestral_samples_repeatable_and_batch_independent():
    """A sample depends only on its latents and seed: the same alone or in any batch; another seed changes it;
    omitted seeds come from torch's generator (torch.manual_seed repeats the run)."""
    net, settings = mixture_net(), dict(solver="euler_ancestral", num_steps=10)
    batch = fastdiff.sample(net, fastdiff.randn([3, 7, 11], (3, 2, 3)), seeds=[3, 7, 11], **settings)
    alone = fastdiff.sample(net, fastdiff.randn([7], (1, 2, 3)), seeds=[7], **settings)
    assert_equal(batch[1:2], alone)
    assert_equal(batch, fastdiff.sample(net, fastdiff.randn([3, 7, 11], (3, 2, 3)), seeds=[3, 7, 11], **settings))
    other = fastdiff.sample(net, fastdiff.randn([3, 7, 11], (3, 2, 3)), seeds=[3, 8, 11], **settings)
    assert_equal(other[0], batch[0])
    assert (other[1] - batch[1]).abs().max() > 1e-3
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(fastdiff.sample(net, LATENTS.float(), **settings))
    assert_equal(runs[0], runs[1])


@pytest.mark.parametrize("solver", ["ddim", "dpmpp_2m"])
def test_deterministic_solvers_leave_torch_generator_alone(solver):
    """ddim and dpmpp_2m add no noise: no seeds are drawn, and seeds do not change the result."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    x = fastdiff.sample(mixture_net(), LATENTS, num_steps=5, solver=solver)
    assert torch.equal(torch.get_rng_state(), before)
    assert_equal(x, fastdiff.sample(mixture_net(), LATENTS, num_steps=5, solver=solver, seeds=SEEDS))


@pytest.mark.parametrize("solver", NEW_SOLVERS)
def test_labels_callback_and_sigmas_reach_the_net(solver):
    """The net sees sigma [B] at each t_i once per step and the labels as a third argument; callback gets the
    step's x, i, sigma, sigma_hat and the raw denoised once per step."""
    net, seen = Recorder(mixture_net()), []
    plan = fastdiff.plan_steps(num_steps=6, solver=solver)
    fastdiff.sample(net, LATENTS, LABELS, seeds=SEEDS, solver=solver, num_steps=6, dtype=F64, callback=seen.append)
    assert [float(s[0]) for s in net.sigmas] == list(plan.t[:-1])
    assert all(s.shape == (5,) for s in net.sigmas) and all(labels[0] is LABELS for labels in net.labels)
    assert [d["i"] for d in seen] == list(range(6)) and [d["sigma"] for d in seen] == list(plan.t[:-1])
    assert all(set(d) == {"x", "i", "sigma", "sigma_hat", "denoised"} for d in seen)
    assert_equal(seen[2]["denoised"], mixture_net()(seen[2]["x"], net.sigmas[2], LABELS))


def nan_below(threshold):
    net = mixture_net()
    return lambda x, sigma: net(x, sigma) + torch.where(sigma.reshape(-1, 1, 1) < threshold, float("nan"), 0.0)


@pytest.mark.parametrize("solver", NEW_SOLVERS)
def test_nonfinite_values_are_reported(solver):
    """NaN from the net is reported at the first step that evaluates it below sigma 1; "raise" raises."""
    plan = fastdiff.plan_steps(num_steps=10, solver=solver)
    first_bad = next(i for i in range(10) if plan.t[i] < 1.0)
    with pytest.warns(RuntimeWarning, match=f"first appeared at step {first_bad} of 10"):
        fastdiff.sample(nan_below(1.0), LATENTS, num_steps=10, solver=solver, seeds=SEEDS)
    with pytest.raises(FloatingPointError, match=f"step {first_bad} of 10"):
        fastdiff.sample(nan_below(1.0), LATENTS, num_steps=10, solver=solver, seeds=SEEDS, nonfinite="raise")


@pytest.mark.parametrize("solver, kwargs", [("ddim", {}), ("dpmpp_2m", {}), ("euler_ancestral", {}),
                                            ("euler_ancestral", dict(eta=0.3, S_noise=1.01))])
def test_backends_and_buffer_reuse_agree(solver, kwargs):
    """Every fused backend gives the reference path's float32 result (within float32 rounding), and fixed buffers
    (reuse_buffers=True) the same bits as new tensors per step; half latents give a half result."""
    net, latents = mixture_net(), LATENTS.float()
    settings = dict(solver=solver, num_steps=8, seeds=SEEDS, **kwargs)
    reference = fastdiff.sample(net, latents, LABELS, backend="reference", **settings)
    for backend in FUSED:
        fresh = fastdiff.sample(net, latents, LABELS, backend=backend, **settings)
        assert_close(fresh, reference, rtol=1e-5, atol=1e-5, name=backend)
        assert_equal(fastdiff.sample(net, latents, LABELS, backend=backend, reuse_buffers=True, **settings), fresh)
    half = fastdiff.sample(net, latents.half(), LABELS, **settings)
    assert half.dtype == torch.float16 and half.shape == latents.shape


@pytest.mark.parametrize("solver", NEW_SOLVERS)
def test_loop_never_syncs_and_copies_tables_once(solver):
    """The loop reads no device value on the host, and copies host data only for its tables (t, t_hat, noise_std,
    plus t_down for ancestral and the multistep weights for dpmpp_2m: one copy for all of them), however many steps
    it takes."""
    net, copies, seeds, latents = mixture_net(), [], torch.tensor(SEEDS), LATENTS.float()
    for num_steps in (5, 11):
        plan = fastdiff.plan_steps(num_steps=num_steps, solver=solver)
        with SyncCounter() as counter:
            run_plan(net, latents, plan, None, None, seeds, torch.float32, None, "ignore", "reference")
        assert counter.syncs == []
        copies.append(len(counter.host_to_device))
    assert copies[0] == copies[1] == 1


# --------------------------------------------------------------------------------------------------------
# 5. Capture safety: the checker, and graphs replaying the loop.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("solver, kwargs", [("ddim", {}), ("dpmpp_2m", {}), ("euler_ancestral", {}),
                                            ("euler_ancestral", dict(eta=0.5))])
def test_check_capture_passes(solver, kwargs, backend):
    """fastdiff.check_capture passes each new solver's loop on the fixed buffers, with labels, on the mixture; the
    sampler's kernels per step follow the plan: the Euler step (multistep_step where dpmpp_2m extrapolates, one
    kernel for the extrapolation and the step) and aminmax, plus the ancestral noise (churn) where it adds any."""
    report = fastdiff.check_capture(mixture_net(), LATENTS.float(), LABELS, solver=solver, num_steps=6,
                                    seeds=SEEDS, backend=backend, **kwargs)
    assert report.ok, str(report)
    plan = fastdiff.plan_steps(num_steps=6, solver=solver, **kwargs)
    assert [k for k, _ in report.kernels_per_step] == [2 + (std > 0) for std in plan.noise_std]
    assert any(std > 0 for std in plan.noise_std) or solver != "euler_ancestral"


@pytest.mark.parametrize("reuse_buffers", [True, False])
def test_dpmpp_2m_steps_run_one_fused_op(reuse_buffers):
    """Outside the net, each dpmpp_2m step runs one fastdiff op: multistep_step where the plan extrapolates
    (c_i != 0), euler_step elsewhere; written into the state with reuse_buffers, allocating otherwise."""
    from torch.utils._python_dispatch import TorchDispatchMode

    per_step, state = [], {"in_net": False}

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not state["in_net"] and per_step and func._schema.name.startswith("fastdiff::"):
                per_step[-1].append(func._schema.name.split("::")[1])
            return func(*args, **(kwargs or {}))

    net = mixture_net()

    def recorded_net(x, sigma, *labels):
        state["in_net"] = True
        try:
            return net(x, sigma, *labels)
        finally:
            state["in_net"] = False

    options = SampleOptions(num_steps=6, solver="dpmpp_2m", backend="cpu", reuse_buffers=reuse_buffers)
    loop, _ = fastdiff.sampling.loop.build_loop(recorded_net, LATENTS.float(), options=options)
    loop.on_step = lambda i: per_step.append([])
    with torch.no_grad(), Recorder():
        loop.run(LATENTS.float())
    suffix = "_out" if reuse_buffers else ""
    want = [[("multistep_step" if c != 0 else "euler_step") + suffix] for c in loop.plan.multistep]
    assert per_step[:6] == want and any(c != 0 for c in loop.plan.multistep)


@pytest.mark.parametrize("solver, kwargs, other", [
    ("dpmpp_2m", {}, dict(num_steps=6, rho=3.0)),
    ("euler_ancestral", dict(eta=0.5), dict(num_steps=6, eta=0.8, sigma_max=40.0)),
    ("ddim", {}, dict(sigmas=[50.0, 20.0, 5.0, 1.0, 0.3, 0.01, 0.0])),
])
def test_emulated_graph_replays_equal_eager_sampling(solver, kwargs, other):
    """A GraphedSampler (graph="emulated": the recorded ops replayed without the Python code, as a CUDA graph does)
    equals eager sampling on fixed buffers bit for bit, with new latents, seeds and labels per call, and after
    set_plan() of a schedule with other values (so every per-step value, the multistep weights too, is read from
    device memory, not frozen at capture)."""
    if not FUSED:
        pytest.fail("no fused backend runs CPU tensors here (fastdiff._C not built, no Triton interpreter)")
    net, backend = mixture_net(), FUSED[0]
    settings = dict(solver=solver, num_steps=6, backend=backend, **kwargs)
    sampler = fastdiff.GraphedSampler(net, LATENTS.float(), LABELS, graph="emulated", **settings)
    other_plan = fastdiff.plan_steps(solver=solver, **other)
    for call in range(3):
        if call == 2:
            sampler.set_plan(other_plan)
            settings = dict(solver=solver, backend=backend, **other)
        latents, seeds, labels = fastdiff.randn([call, 9, 4, 7, 1], (5, 2, 3)), [call * 10 + b for b in range(5)], \
            LABELS.roll(call)
        got = sampler(latents, seeds=seeds, class_labels=labels)
        assert_equal(got, fastdiff.sample(net, latents, labels, seeds=seeds, reuse_buffers=True, **settings))


# --------------------------------------------------------------------------------------------------------
# 6. Errors.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(solver="ddim", eta=0.5), ValueError,
     r"eta: only the ancestral and SDE solvers \('euler_ancestral', .*\) take eta .* solver='ddim' adds none \(DDIM's eta = 0\); DDIM with eta > 0 "
     r"is solver='euler_ancestral' with that eta"),
    (dict(solver="dpmpp_2m", eta=0.0), ValueError, r"eta: only the ancestral and SDE solvers \('euler_ancestral', .*\) take eta .*got eta=0.0"),
    (dict(solver="heun", eta=1.0), ValueError, r"eta: only the ancestral and SDE solvers \('euler_ancestral', .*\) take eta"),
    (dict(eta=0.5), ValueError, r"eta: only the ancestral and SDE solvers \('euler_ancestral'"),  # the default solver is heun
    (dict(solver="euler_ancestral", eta=-0.1), ValueError, r"eta: must be >= 0.0, got -0.1"),
    (dict(solver="euler_ancestral", eta=math.nan), ValueError, r"eta: expected a finite number, got nan"),
    (dict(solver="euler_ancestral", eta="1"), TypeError, r"eta: expected a real number"),
    (dict(solver="euler_ancestral", S_churn=10.0), ValueError,
     r"S_churn: solver='euler_ancestral' takes no churn \(it adds its own noise after each step, set by eta and "
     r"scaled by S_noise\); S_churn, S_min, S_max set EDM's churn, for solver='euler', 'heun' or 'dpm_2'; got S_churn=10.0"),
    (dict(solver="dpmpp_2m", S_churn=1.0), ValueError, r"S_churn: solver='dpmpp_2m' takes no churn \(it is a "
                                                       r"deterministic multistep solver\)"),
    (dict(solver="ddim", S_churn=40.0), ValueError, r"S_churn: solver='ddim' takes no churn \(it is deterministic "
                                                    r"DDIM; EDM's stochastic sampler with the same update is "
                                                    r"solver='euler'\)"),
    (dict(solver="ddim", S_min=0.05), ValueError, r"S_min: solver='ddim' takes no churn"),
    (dict(solver="euler_ancestral", S_max=50.0), ValueError, r"S_max: solver='euler_ancestral' takes no churn"),
    (dict(solver="dpmpp_2m", S_noise=1.003), ValueError, r"S_noise: solver='dpmpp_2m' takes no churn .*S_churn, "
                                                         r"S_min, S_max, S_noise set EDM's churn"),
    (dict(solver="dpmp_2m"), ValueError,
     r"solver: expected one of 'euler', 'heun', 'euler_ancestral', 'dpmpp_2m', 'ddim', 'dpm_2', .*'unipc', 'dpm_adaptive', got 'dpmp_2m'"),
])
def test_bad_solver_arguments_name_the_argument(kwargs, error, match):
    """eta for a solver that adds no noise, churn for a solver without it, a bad eta, an unknown solver: each names
    the argument, the solver and what is accepted, rather than being ignored."""
    with pytest.raises(error, match=match):
        fastdiff.sample(mixture_net(), LATENTS, **kwargs)


def test_accepted_combinations():
    """S_noise scales euler_ancestral's noise (k-diffusion's s_noise); default churn arguments and eta=1 with
    cuda_graph (the default eta) are fine; plan_steps takes eta too."""
    net = mixture_net()
    loud = fastdiff.sample(net, LATENTS, solver="euler_ancestral", S_noise=1.5, seeds=SEEDS, num_steps=5)
    assert (loud - fastdiff.sample(net, LATENTS, solver="euler_ancestral", seeds=SEEDS, num_steps=5)).abs().max() > 1e-3
    fastdiff.sample(net, LATENTS, solver="ddim", S_churn=0.0, S_min=0.0, S_max=math.inf, S_noise=1.0, num_steps=3)
    fastdiff.sample(net, LATENTS, solver="euler_ancestral", eta=1.0, cuda_graph="auto", seeds=SEEDS, num_steps=3)
    assert fastdiff.plan_steps(num_steps=4, solver="euler_ancestral", eta=0.5) != \
        fastdiff.plan_steps(num_steps=4, solver="euler_ancestral")


def test_sample_cuda_graph_takes_eta(monkeypatch):
    """sample(cuda_graph=True) passes eta to its cached graph: emulated graphs (on CPU) equal eager sampling for
    two etas, and a new eta reuses the capture (same structure, new values)."""
    from fastdiff.sampling import graph as graphed

    monkeypatch.setattr(graphed, "_graph_kind_for", lambda latents: "emulated")
    graphed.clear_cache()
    try:
        net = mixture_net()
        for eta in (0.5, 1.0):
            kw = dict(solver="euler_ancestral", eta=eta, seeds=SEEDS, num_steps=4)
            assert_equal(fastdiff.sample(net, LATENTS.float(), cuda_graph=True, **kw),
                         fastdiff.sample(net, LATENTS.float(), **kw))
        assert len(graphed._cache) == 1
    finally:
        graphed.clear_cache()
