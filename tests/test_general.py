"""fastdiff.sampling.general, EDM's generalized sampler: formulas, a plain re-implementation, fastdiff.sample and the oracle.

The Gaussian mixture is an exact denoiser at every sigma, so it drives every schedule; wrapped as the raw network F
of a VP/VE/iDDPM preconditioner (exact_precond) it also tests the preconditioned nets the sampler is made for.
"""
from __future__ import annotations

import math

import pytest
import torch

import fastdiff
from fastdiff import testing
from fastdiff.testing import SyncCounter, assert_close, assert_equal, fitted_slope, torch_threads
from fastdiff import schedules
from fastdiff.sampling.general import plan_general, run_general, sample_general
from fastdiff.schedules import discretize, ode_schedule, vp_betas
from fastdiff.rng import SAMPLER_OFFSET

F64 = torch.float64
INF = float("inf")
VP = dict(discretization="vp", schedule="vp", scaling="vp")  # EDM Table 1's "VP" column
VE = dict(discretization="ve", schedule="ve", scaling="none")  # "VE"
IDDPM = dict(discretization="iddpm", schedule="linear", scaling="none")  # "iDDPM"
SETTINGS = {"vp": VP, "ve": VE, "iddpm": IDDPM}
CHURN = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These small tensors run fastest on one thread, and the machine is shared: restore the setting afterwards."""
    with torch_threads(1):
        yield


# --------------------------------------------------------------------------------------------------------
# Fixtures: mixtures, exact preconditioned nets, the paper's closed forms written out here.
# --------------------------------------------------------------------------------------------------------

def mixture_6d():
    """A 6-D mixture; as a net it takes x of any shape [B, ...] with 6 values per sample."""
    return fastdiff.GaussianMixture(torch.linspace(-1, 1, 18).reshape(3, 6), [0.3, 0.5, 0.2], [0.5, 0.3, 0.2])


LATENTS = fastdiff.randn(list(range(5)), (5, 2, 3), dtype=F64)


class ExactF:
    """The raw network F of a preconditioner that makes D exactly the mixture's denoiser: F = (D - c_skip x) / c_out.

    F sees only (c_in x, c_noise), so it recovers sigma from c_noise and x from c_in (EDM Table 1, written here).
    """

    def __init__(self, mix):
        self.mix, self.precond = mix, None

    def sigma_of(self, c_noise: torch.Tensor) -> torch.Tensor:
        p, c = self.precond, c_noise.to(F64)
        if isinstance(p, fastdiff.VPPrecond):  # c_noise = (M-1) t, sigma = sqrt(exp(beta_d t^2/2 + beta_min t) - 1)
            t = c / (p.M - 1)
            return (torch.exp(0.5 * p.beta_d * t**2 + p.beta_min * t) - 1).sqrt()
        if isinstance(p, fastdiff.VEPrecond):  # c_noise = ln(sigma / 2)
            return 2 * c.exp()
        if isinstance(p, fastdiff.iDDPMPrecond):  # c_noise = M - 1 - j
            return p.u[(p.M - 1 - c).round().long()]
        raise TypeError(type(p))

    def __call__(self, x_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma_of(c_noise)
        s = sigma.reshape(-1, *[1] * (x_in.ndim - 1))
        if isinstance(self.precond, fastdiff.VEPrecond):  # c_skip = 1, c_out = sigma, c_in = 1
            x = x_in.to(F64)
            F = (self.mix(x, sigma) - x) / s
        else:  # VP and iDDPM: c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1)
            x = x_in.to(F64) * (s**2 + 1).sqrt()
            F = (self.mix(x, sigma) - x) / -s
        return F.to(x_in.dtype)


def exact_precond(mix, precond_cls, **kwargs):
    """precond_cls(F) whose D(x; sigma) is mix.denoise(x, sigma) (at every sigma the preconditioner can evaluate)."""
    F = ExactF(mix)
    net = precond_cls(F, **kwargs)
    F.precond = net
    return net


PRECONDS = {"vp": fastdiff.VPPrecond, "ve": fastdiff.VEPrecond, "iddpm": fastdiff.iDDPMPrecond}


@pytest.mark.parametrize("name", PRECONDS)
def test_exact_precond_is_the_mixture(name):
    """The fixture itself: the wrapped net equals the mixture's denoiser (float64 to 1e-12; its own levels for iDDPM)."""
    mix = mixture_6d()
    net = exact_precond(mix, PRECONDS[name])
    x = 3 * LATENTS
    for sigma in (0.03, 0.4, 2.0, 50.0):
        sigma = net.round_sigma(torch.tensor(sigma, dtype=F64))
        assert_close(net(x, sigma), mix(x, sigma), rtol=1e-12, atol=1e-12, name=f"{name} sigma={float(sigma)}")


def vp_closed(t, beta_d=19.9, beta_min=0.1):
    """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), EDM Table 1 as printed."""
    t = torch.as_tensor(t, dtype=F64)
    return (torch.exp(0.5 * beta_d * t**2 + beta_min * t) - 1).sqrt()


def iddpm_levels(M=1000, C_1=0.001, C_2=0.008):
    """u_M = 0, u_{j-1} = sqrt((u_j^2 + 1) / max(alpha_bar(j-1)/alpha_bar(j), C_1) - 1) (EDM Table 1), float64."""
    alpha_bar = lambda j: math.sin(0.5 * math.pi * j / M / (C_2 + 1)) ** 2  # noqa: E731
    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C_1) - 1)
    return torch.tensor(u, dtype=F64)


def plain_general_sampler(net, latents, randn_like, num_steps, discretization, schedule, scaling, solver="heun",
                          alpha=1.0, S_churn=0.0, S_min=0.0, S_max=INF, S_noise=1.0, epsilon_s=1e-3, rho=7.0):
    """EDM's generalized sampler in float64, one line per formula of EDM Table 1 / docs/formulas.md#general-ode-sampler,
    independent of fastdiff.sampling.general. (Like fastdiff, t_hat = t_i on steps without churn.)"""
    sigma_min = {"vp": float(vp_closed(epsilon_s)), "ve": 0.02, "iddpm": 0.002, "edm": 0.002}[discretization]
    sigma_max = {"vp": float(vp_closed(1.0)), "ve": 100.0, "iddpm": 81.0, "edm": 80.0}[discretization]
    sigma_min = max(sigma_min, getattr(net, "sigma_min", 0.0))
    sigma_max = min(sigma_max, getattr(net, "sigma_max", INF))
    beta_d = 2 * (math.log(sigma_min**2 + 1) / epsilon_s - math.log(sigma_max**2 + 1)) / (epsilon_s - 1)
    beta_min = math.log(sigma_max**2 + 1) - 0.5 * beta_d
    i = torch.arange(num_steps, dtype=F64)
    if discretization == "vp":
        sigma_steps = vp_closed(1 + i / (num_steps - 1) * (epsilon_s - 1), beta_d, beta_min)
    elif discretization == "ve":
        sigma_steps = (sigma_max**2 * (sigma_min**2 / sigma_max**2) ** (i / (num_steps - 1))).sqrt()
    elif discretization == "iddpm":
        u = iddpm_levels()
        inside = ((u >= sigma_min) & (u <= sigma_max)).nonzero().flatten()
        j0, j1 = int(inside[0]), int(inside[-1])
        sigma_steps = u[torch.floor(j0 + (j1 - j0) / (num_steps - 1) * i + 0.5).long()]
    else:
        sigma_steps = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    if schedule == "vp":
        sigma = lambda t: vp_closed(t, beta_d, beta_min)  # noqa: E731
        sigma_deriv = lambda t: 0.5 * (beta_min + beta_d * t) * (sigma(t) + 1 / sigma(t))  # noqa: E731
        sigma_inv = lambda s: ((beta_min**2 + 2 * beta_d * (s**2 + 1).log()).sqrt() - beta_min) / beta_d  # noqa: E731
    elif schedule == "ve":
        sigma, sigma_deriv, sigma_inv = (lambda t: t.sqrt()), (lambda t: 0.5 / t.sqrt()), (lambda s: s**2)
    else:
        sigma, sigma_deriv, sigma_inv = (lambda t: t), (lambda t: torch.ones_like(t)), (lambda s: s)
    if scaling == "vp":
        s = lambda t: 1 / (1 + sigma(t) ** 2).sqrt()  # noqa: E731
        s_deriv = lambda t: -sigma(t) * sigma_deriv(t) * s(t) ** 3  # noqa: E731
    else:
        s, s_deriv = (lambda t: torch.ones_like(t)), (lambda t: torch.zeros_like(t))
    round_sigma = getattr(net, "round_sigma", lambda x: x)
    t_steps = torch.cat([sigma_inv(round_sigma(sigma_steps)), torch.zeros(1, dtype=F64)])

    def d(x, t):
        D = net(x / s(t), sigma(t).expand(x.shape[0])).to(F64)
        return (sigma_deriv(t) / sigma(t) + s_deriv(t) / s(t)) * x - sigma_deriv(t) * s(t) / sigma(t) * D

    x_next = latents.to(F64) * (sigma(t_steps[0]) * s(t_steps[0]))
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= float(sigma(t_cur)) <= S_max else 0.0
        t_hat = sigma_inv(round_sigma(sigma(t_cur) + gamma * sigma(t_cur))) if gamma > 0 else t_cur
        noise = (sigma(t_hat) ** 2 - sigma(t_cur) ** 2).clamp(min=0).sqrt() * s(t_hat) * S_noise * randn_like(x_cur)
        x_hat = s(t_hat) / s(t_cur) * x_cur + noise
        h = t_next - t_hat
        d_cur = d(x_hat, t_hat)
        if solver == "euler" or i == num_steps - 1:
            x_next = x_hat + h * d_cur
        else:
            x_prime, t_prime = x_hat + alpha * h * d_cur, t_hat + alpha * h
            x_next = x_hat + h * ((1 - 1 / (2 * alpha)) * d_cur + 1 / (2 * alpha) * d(x_prime, t_prime))
    return x_next


def seeded_randn_like(seed):
    generator = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(x.shape, generator=generator, dtype=x.dtype)


class Recorder:
    """Wraps a denoiser, forwarding its range and round_sigma, and records every call's input and sigma."""

    def __init__(self, net):
        self.net, self.inputs, self.sigmas, self.labels = net, [], [], []
        for name in ("sigma_min", "sigma_max", "round_sigma"):
            if hasattr(net, name):
                setattr(self, name, getattr(net, name))

    def __call__(self, x, sigma, *labels):
        self.inputs.append(x)
        self.sigmas.append(sigma)
        self.labels.append(labels)
        return self.net(x, sigma)


# --------------------------------------------------------------------------------------------------------
# 1. sigma(t), s(t) and the general ODE.
# --------------------------------------------------------------------------------------------------------

TIMES = {"vp": torch.tensor([1e-3, 0.01, 0.2, 0.5, 1.0], dtype=F64), "ve": torch.tensor([4e-4, 0.3, 7.0, 1e4], dtype=F64),
         "linear": torch.tensor([0.002, 0.5, 3.0, 80.0], dtype=F64)}
BETAS = dict(beta_d=17.3, beta_min=0.4)


def test_schedules_match_table_1():
    """sigma(t), sigma_inv and s(t) against EDM Table 1's closed forms; "edm" is the same schedule as "linear"."""
    vp = ode_schedule("vp", "vp", **BETAS)
    t = TIMES["vp"]
    sigma = vp_closed(t, **BETAS)
    assert_close(vp.sigma(t), sigma, rtol=1e-13, name="vp sigma")
    assert_close(vp.s(t), 1 / (1 + sigma**2).sqrt(), rtol=1e-13, name="vp s")
    inv = ((BETAS["beta_min"] ** 2 + 2 * BETAS["beta_d"] * (1 + sigma**2).log()).sqrt() - BETAS["beta_min"]) / BETAS["beta_d"]
    assert_close(vp.sigma_inv(sigma), inv, rtol=1e-12, name="vp sigma_inv")
    ve = ode_schedule("ve", "none")
    assert_close(ve.sigma(TIMES["ve"]), TIMES["ve"].sqrt(), name="ve sigma")
    assert_close(ve.sigma_inv(TIMES["ve"]), TIMES["ve"] ** 2, name="ve sigma_inv")
    assert_equal(ve.s(TIMES["ve"]), torch.ones(4, dtype=F64), name="s = 1 without scaling")
    for name in ("edm", "linear"):
        lin = ode_schedule(name)
        assert_equal(lin.sigma(TIMES["linear"]), TIMES["linear"], name=f"{name} sigma")
        assert_equal(lin.sigma_inv(TIMES["linear"]), TIMES["linear"], name=f"{name} sigma_inv")


@pytest.mark.parametrize("scaling", ["none", "vp"])
@pytest.mark.parametrize("schedule", ["vp", "ve", "linear"])
def test_derivatives_match_finite_differences(schedule, scaling):
    """sigma'(t) and s'(t) equal 4th-order central differences of sigma(t) and s(t) (relative error < 1e-7)."""
    sched = ode_schedule(schedule, scaling, **BETAS)
    t = TIMES[schedule]
    h = 1e-3 * t

    def fd(f):
        return (-f(t + 2 * h) + 8 * f(t + h) - 8 * f(t - h) + f(t - 2 * h)) / (12 * h)

    assert_close(sched.sigma_deriv(t), fd(sched.sigma), rtol=1e-7, atol=0.0, name="sigma'")
    assert_close(sched.s_deriv(t), fd(sched.s), rtol=1e-7, atol=1e-12, name="s'")


@pytest.mark.parametrize("schedule", ["vp", "ve", "linear"])
def test_sigma_inv_inverts_sigma(schedule):
    """sigma_inv(sigma(t)) = t and sigma(sigma_inv(sigma)) = sigma to a few ulps, from t ~ 1e-3 up."""
    sched = ode_schedule(schedule, **BETAS)
    t = TIMES[schedule]
    assert_close(sched.sigma_inv(sched.sigma(t)), t, rtol=1e-13, atol=0.0, name="sigma_inv o sigma")
    sigmas = torch.tensor([0.003, 0.1, 1.0, 40.0, 150.0], dtype=F64)
    assert_close(sched.sigma(sched.sigma_inv(sigmas)), sigmas, rtol=1e-13, atol=0.0, name="sigma o sigma_inv")


def test_vp_betas_put_the_range_at_epsilon_s_and_1():
    """vp_betas(sigma(eps), sigma(1), eps) recovers (19.9, 0.1); for any range the derived schedule hits both ends."""
    beta_d, beta_min = vp_betas(float(vp_closed(1e-3)), float(vp_closed(1.0)), 1e-3)
    assert beta_d == pytest.approx(19.9, rel=1e-12) and beta_min == pytest.approx(0.1, rel=1e-10)
    for sigma_min, sigma_max, eps in ((0.002, 80.0, 1e-3), (0.02, 100.0, 1e-2), (0.5, 3.0, 0.1)):
        beta_d, beta_min = vp_betas(sigma_min, sigma_max, eps)
        assert float(vp_closed(eps, beta_d, beta_min)) == pytest.approx(sigma_min, rel=1e-9)
        assert float(vp_closed(1.0, beta_d, beta_min)) == pytest.approx(sigma_max, rel=1e-12)
    with pytest.raises(ValueError, match=r"sigma_min: no increasing VP schedule .* beta_d=-"):
        vp_betas(1.0, 1.2, 0.5)


@pytest.mark.parametrize("scaling", ["none", "vp"])
@pytest.mark.parametrize("schedule", ["vp", "ve", "linear"])
def test_general_ode_follows_the_exact_flow(schedule, scaling):
    """For data N(0, c^2 I) the probability flow is x~(sigma) = k sqrt(sigma^2 + c^2), so x(t) = s(t) x~(sigma(t));
    the general ODE's dx/dt = A x - B D(x/s; sigma) equals a central difference of that path (rel. error < 1e-7)."""
    c, k = 0.7, torch.tensor([0.3, -1.1, 2.0], dtype=F64)
    sched = ode_schedule(schedule, scaling, **BETAS)
    for t in TIMES[schedule].tolist():
        path = lambda t: float(sched.s(t)) * k * math.sqrt(float(sched.sigma(t)) ** 2 + c**2)  # noqa: E731
        sigma, x = float(sched.sigma(t)), path(t)
        denoised = c**2 / (c**2 + sigma**2) * (x / float(sched.s(t)))  # the exact denoiser of N(0, c^2)
        h = 2e-3 * t
        numeric = (-path(t + 2 * h) + 8 * path(t + h) - 8 * path(t - h) + path(t - 2 * h)) / (12 * h)
        assert_close(sched.derivative(x, denoised, t), numeric, rtol=1e-7, atol=1e-9, name=f"dx/dt at t={t}")


# --------------------------------------------------------------------------------------------------------
# 2. Discretizations, default ranges, the net's range and rounding.
# --------------------------------------------------------------------------------------------------------

def test_edm_discretization_is_karras():
    """discretization "edm" is EDM Eq. 5 (karras_sigmas without the final 0), float64."""
    levels = discretize("edm", 18, 0.002, 80.0, rho=7.0)
    assert levels.dtype == F64 and levels.shape == (18,)
    assert_equal(levels, fastdiff.karras_sigmas(18, 0.002, 80.0, 7.0)[:-1])


@pytest.mark.parametrize("num_steps", [2, 18, 50])
def test_vp_discretization(num_steps):
    """vp: sigma(t_i), t_i = 1 + i/(N-1)(eps - 1) with the derived betas: from sigma_max at t=1 to sigma_min at t=eps."""
    sigma_min, sigma_max, eps = 0.02, 60.0, 1e-3
    levels = discretize("vp", num_steps, sigma_min, sigma_max, epsilon_s=eps)
    beta_d = 2 * (math.log(sigma_min**2 + 1) / eps - math.log(sigma_max**2 + 1)) / (eps - 1)
    beta_min = math.log(sigma_max**2 + 1) - 0.5 * beta_d
    t = torch.tensor([1 + i / (num_steps - 1) * (eps - 1) for i in range(num_steps)], dtype=F64)
    assert_close(levels, vp_closed(t, beta_d, beta_min), rtol=1e-12, name="vp levels")
    assert float(levels[0]) == pytest.approx(sigma_max, rel=1e-13)
    assert float(levels[-1]) == pytest.approx(sigma_min, rel=1e-9)
    assert_close(schedules.vp_time_steps(num_steps, eps), t, name="vp times")


def test_ve_discretization_is_geometric():
    """ve: sigma_i = sigma_max (sigma_min/sigma_max)^(i/(N-1)), i.e. t = sigma^2 geometric."""
    levels = discretize("ve", 25, 0.02, 100.0)
    expected = torch.tensor([100.0 * (0.02 / 100.0) ** (i / 24) for i in range(25)], dtype=F64)
    assert_close(levels, expected, rtol=1e-13, name="ve levels")
    assert float(levels[0]) == pytest.approx(100.0, rel=1e-15) and float(levels[-1]) == pytest.approx(0.02, rel=1e-13)


@pytest.mark.parametrize("num_steps", [2, 18, 64, 256])
def test_iddpm_discretization_is_table_1(num_steps):
    """iddpm: u_j at j = floor(j0 + (M-1-j0)/(N-1) i + 1/2), j0 = 8 for sigma_max = 81 (EDM Table 1), the u_j
    computed here; the first level is the largest u_j <= sigma_max and the last is u_{M-1}."""
    u = iddpm_levels()
    assert_close(fastdiff.iDDPMPrecond.discrete_sigmas(1000, 0.001, 0.008), u, rtol=1e-14, name="u_j")
    j0 = 8
    assert float(u[j0]) <= 81.0 < float(u[j0 - 1])
    indices = [math.floor(j0 + (999 - j0) / (num_steps - 1) * i + 0.5) for i in range(num_steps)]
    levels = discretize("iddpm", num_steps, 0.002, 81.0)
    assert_close(levels, u[indices], rtol=1e-14, name="iddpm levels")
    assert float(levels[-1]) == pytest.approx(float(u[999]), rel=1e-14)
    # A narrower range picks its levels from the u_j inside it, the end points included.
    inside = [j for j in range(1000) if 0.1 <= float(u[j]) <= 10.0]
    narrow = discretize("iddpm", 5, 0.1, 10.0)
    assert_close(narrow, u[[math.floor(inside[0] + (inside[-1] - inside[0]) / 4 * i + 0.5) for i in range(5)]],
                 rtol=1e-14, name="narrow iddpm levels")


@pytest.mark.parametrize("discretization", ["edm", "vp", "ve", "iddpm"])
def test_one_step_starts_at_sigma_max(discretization):
    """num_steps = 1 gives one level at the top of the range (no division by N - 1 = 0)."""
    levels = discretize(discretization, 1, *schedules.default_sigma_range(discretization))
    assert levels.shape == (1,) and float(levels[0]) == pytest.approx(
        {"edm": 80.0, "vp": 152.16697, "ve": 100.0, "iddpm": 80.2037}[discretization], rel=1e-5)


@pytest.mark.parametrize("name, sigma_range", [
    ("edm", (0.002, 80.0)), ("vp", (0.0104860, 152.16697)), ("ve", (0.02, 100.0)), ("iddpm", (0.0064254, 80.20370))])
def test_default_ranges(name, sigma_range):
    """Without a net range, the plan's sigma(t_0) and sigma(t_{N-1}) are the discretization's defaults (vp:
    sigma(eps_s) and sigma(1); iddpm: the u_j inside [0.002, 81]); the last time is 0."""
    plan = plan_general(None, 12, discretization=name)
    assert plan.sigma[0] == pytest.approx(sigma_range[1], rel=1e-5)
    assert plan.sigma[-2] == pytest.approx(sigma_range[0], rel=1e-5)
    assert plan.t[-1] == 0.0 and len(plan.t) == 13


@pytest.mark.parametrize("name", ["vp", "ve", "iddpm"])
def test_range_is_clamped_to_the_net(name):
    """A preconditioned net's own range clamps the defaults: VP with beta_d=10 tops out at sigma(1) = 12.81,
    VE at its sigma_max=30, iDDPM's sigma_min is u_999 = 0.00643; vp's betas then come from the clamped range."""
    mix = mixture_6d()
    net = {"vp": lambda: exact_precond(mix, fastdiff.VPPrecond, beta_d=10.0),
           "ve": lambda: exact_precond(mix, fastdiff.VEPrecond, sigma_min=0.05, sigma_max=30.0),
           "iddpm": lambda: exact_precond(mix, fastdiff.iDDPMPrecond)}[name]()
    plan = plan_general(net, 10, **SETTINGS[name])
    top = 80.20370184547417 if name == "iddpm" else net.sigma_max  # iddpm: u_8, the largest level <= 81
    assert plan.sigma[0] == pytest.approx(top, rel=1e-10)
    assert plan.sigma[-2] == pytest.approx(max(net.sigma_min, schedules.default_sigma_range(SETTINGS[name]["discretization"])[0]),
                                           rel=1e-9)
    if name == "vp":  # sigma(1) = 12.81 = sqrt(exp(5.1) - 1), and t runs from 1 to epsilon_s under the derived betas
        assert plan.sigma[0] == pytest.approx(math.sqrt(math.exp(5.1) - 1), rel=1e-12)
        assert plan.t[0] == pytest.approx(1.0, rel=1e-12) and plan.t[-2] == pytest.approx(1e-3, rel=1e-9)


def test_round_sigma_snaps_every_level_the_net_sees():
    """With an iDDPM net every sigma the net is given (schedules linear and vp, with churn) is one of its levels u_j."""
    mix = mixture_6d()
    u = set(iddpm_levels().tolist())
    for schedule, scaling in (("linear", "none"), ("vp", "vp")):
        net = Recorder(exact_precond(mix, fastdiff.iDDPMPrecond))
        sample_general(net, LATENTS, num_steps=10, discretization="edm", schedule=schedule, scaling=scaling,
                       seeds=[1, 2, 3, 4, 5], S_churn=20.0)
        seen = torch.cat(net.sigmas).tolist()
        nearest = [min(u, key=lambda level: abs(level - s)) for s in seen]
        assert all(abs(s - v) <= 1e-12 * v for s, v in zip(seen, nearest)), (schedule, seen)


# --------------------------------------------------------------------------------------------------------
# 3. The plan and the loop.
# --------------------------------------------------------------------------------------------------------

def test_plan_churn_scalars():
    """gamma_i > 0 exactly where S_min <= sigma(t_i) <= S_max; sigma(t_hat) = (1 + gamma) sigma(t_i); the noise std is
    sqrt(sigma(t_hat)^2 - sigma(t_i)^2) s(t_hat) S_noise; without churn t_hat = t_i and nothing is added."""
    plan = plan_general(None, 16, S_churn=30.0, S_min=0.1, S_max=20.0, S_noise=1.01, **VP)
    sched = plan.schedule
    gamma = min(30.0 / 16, math.sqrt(2) - 1)
    for i in range(16):
        sigma = plan.sigma[i]
        assert plan.gamma[i] == (gamma if 0.1 <= sigma <= 20.0 else 0.0)
        assert plan.sigma_hat[i] == pytest.approx(sigma * (1 + plan.gamma[i]), rel=1e-12)
        s_hat = float(sched.s(plan.t_hat[i]))
        assert plan.noise_std[i] == pytest.approx(math.sqrt(plan.sigma_hat[i] ** 2 - sigma**2) * s_hat * 1.01, rel=1e-9, abs=1e-15)
        assert plan.scale_ratio[i] == pytest.approx(s_hat / float(sched.s(plan.t[i])), rel=1e-14)
        if plan.gamma[i] == 0:
            assert plan.t_hat[i] == plan.t[i] and plan.noise_std[i] == 0.0
    assert 0 < sum(g > 0 for g in plan.gamma) < 16
    deterministic = plan_general(None, 16, **VP)
    assert deterministic.noise_std == (0.0,) * 16 and deterministic.t_hat == deterministic.t[:-1]


@pytest.mark.parametrize("solver, nfe", [("heun", 35), ("euler", 18)])
def test_network_evaluations_and_randn_like_calls(solver, nfe):
    """Heun makes 2N-1 evaluations (Euler on the step to t = 0), Euler N; randn_like is called once per step."""
    net, draws = Recorder(mixture_6d()), []
    sample_general(net, LATENTS, randn_like=lambda x: draws.append(1) or torch.randn_like(x), solver=solver, **VE)
    assert len(net.sigmas) == nfe and len(draws) == 18
    assert plan_general(None, 18, solver=solver, **VE).nfe == nfe


def test_net_sees_x_over_s_at_sigma():
    """With VP scaling the net's input is x/s(t): the first call sees latents * sigma_max (x_0 = latents sigma s);
    sigmas are [B] in the state dtype; class_labels are passed through."""
    net = Recorder(mixture_6d())
    labels = torch.arange(5)
    sample_general(net, LATENTS.float(), labels, num_steps=6, **VP)
    plan = plan_general(None, 6, **VP)
    assert plan.x0_scale == pytest.approx(plan.sigma[0] * float(plan.schedule.s(plan.t[0])), rel=1e-15)
    assert_close(net.inputs[0], LATENTS.float() * plan.sigma[0], rtol=1e-6, name="first net input")
    assert all(s.shape == (5,) and s.dtype == torch.float32 for s in net.sigmas)
    assert_close(net.sigmas[0], torch.full((5,), plan.sigma_hat[0], dtype=torch.float32), name="first sigma")
    assert_close(net.sigmas[1], torch.full((5,), plan.sigma_prime[0], dtype=torch.float32), name="second sigma")
    assert all(labels_seen[0] is labels for labels_seen in net.labels)


def test_seeded_noise_is_the_documented_stream():
    """seeds= draws fastdiff.randn(seeds, shape, offset=SAMPLER_OFFSET + i) at step i: the same as a randn_like
    serving that stream (churn on every step, so every step draws)."""
    seeds = [10, 20, 30, 40, 50]
    steps = iter(range(100))
    stream = lambda x: fastdiff.randn(seeds, x.shape, offset=SAMPLER_OFFSET + next(steps), dtype=x.dtype)  # noqa: E731
    settings = dict(num_steps=8, S_churn=15.0, **VP)
    got = sample_general(mixture_6d(), LATENTS, seeds=seeds, **settings)
    want = sample_general(mixture_6d(), LATENTS, randn_like=stream, **settings)
    assert_equal(got, want)
    other = sample_general(mixture_6d(), LATENTS, seeds=[10, 20, 31, 40, 50], **settings)
    assert torch.equal(other[1], got[1]) and not torch.allclose(other[2], got[2])  # a seed moves only its sample


def test_noise_only_on_churn_steps_and_generator_untouched(monkeypatch):
    """With seeds, ops.churn runs only where gamma_i > 0, at offset SAMPLER_OFFSET + i; a deterministic run without
    seeds leaves torch's default generator alone."""
    offsets, real_churn = [], fastdiff.ops.churn

    def recording_churn(x, seeds, offset, noise_std, **kwargs):
        offsets.append(int(offset))
        return real_churn(x, seeds, offset, noise_std, **kwargs)

    monkeypatch.setattr(fastdiff.ops, "churn", recording_churn)
    settings = dict(num_steps=10, S_churn=20.0, S_min=0.5, S_max=20.0, **VE)
    plan = plan_general(None, **settings)
    sample_general(mixture_6d(), LATENTS, seeds=[1, 2, 3, 4, 5], **settings)
    churn_steps = [i for i, g in enumerate(plan.gamma) if g > 0]
    assert 0 < len(churn_steps) < 10 and offsets == [SAMPLER_OFFSET + i for i in churn_steps]
    torch.manual_seed(0)
    before = torch.get_rng_state()
    sample_general(mixture_6d(), LATENTS, num_steps=4, **VP)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("settings", [VP, VE, IDDPM], ids=["vp", "ve", "iddpm"])
def test_loop_never_syncs(settings):
    """run_general reads no device value on the host (the plan is host work done before it): none with
    nonfinite="ignore", one for the non-finite report after the loop otherwise; the counter does see a sync when
    there is one."""
    net = mixture_6d()
    plan = plan_general(net, 8, alpha=0.7, S_churn=20.0, S_min=0.1, S_max=30.0, **settings)
    seeds = torch.tensor([1, 2, 3, 4, 5])
    with SyncCounter() as counter:
        run_general(net, LATENTS.float(), plan, None, None, seeds, torch.float32, backend="reference",
                    nonfinite="ignore")
    assert counter.syncs == []
    with SyncCounter() as counter:
        run_general(net, LATENTS.float(), plan, None, None, seeds, torch.float32, backend="reference")
    assert counter.syncs == ["aten::nonzero"]
    with SyncCounter() as counter:
        run_general(lambda x, s: net(x, s) + 0 * float(s[0]), LATENTS.float(), plan, None, None, seeds, torch.float32,
                    nonfinite="ignore")
    assert len(counter.syncs) == plan.nfe


def test_result_shape_and_dtype_and_strided_latents():
    """The result has the latents' shape and dtype (state float32 unless float64); strided latents sample like
    their contiguous copy."""
    for dtype in (torch.float16, torch.float32, torch.float64):
        x = sample_general(mixture_6d(), LATENTS.to(dtype), num_steps=4, **VP)
        assert x.dtype == dtype and x.shape == LATENTS.shape
    wide = fastdiff.randn([1, 2, 3], (3, 2, 6), dtype=torch.float32)[..., ::2]
    assert not wide.is_contiguous()
    settings = dict(num_steps=5, S_churn=10.0, seeds=[4, 5, 6], **VE)
    assert_equal(sample_general(mixture_6d(), wide, **settings), sample_general(mixture_6d(), wide.contiguous(), **settings))


# --------------------------------------------------------------------------------------------------------
# 4. Against fastdiff.sample (EDM settings) and against the plain sampler written above (every setting).
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("churn", [{}, CHURN], ids=["deterministic", "churn"])
@pytest.mark.parametrize("solver", ["heun", "euler"])
@pytest.mark.parametrize("schedule", ["edm", "linear"])
def test_edm_settings_equal_fastdiff_sample(schedule, solver, churn, dtype):
    """discretization edm, schedule edm/linear, scaling none, alpha 1: fastdiff.sample's result for the same seeds,
    to float rounding (float64: 1e-12; float32: 1e-4, as test_sampler allows the float32 state against float64)."""
    mix = fastdiff.GaussianMixture.ring()
    latents = torch.randn(300, 2, generator=torch.Generator().manual_seed(5), dtype=dtype)
    seeds = list(range(300))
    got = sample_general(mix, latents, num_steps=14, solver=solver, schedule=schedule, seeds=seeds, **churn)
    want = fastdiff.sample(mix, latents, num_steps=14, solver=solver, seeds=seeds, **churn)
    tol = 1e-12 if dtype == F64 else 1e-4
    assert got.dtype == dtype
    assert_close(got, want, rtol=tol, atol=tol, name=f"{schedule} {solver} {dtype}")


@pytest.mark.parametrize("precond", ["iddpm", "ve", "vp"])
def test_edm_settings_equal_fastdiff_sample_with_preconditioned_nets(precond):
    """The same with a preconditioned net (its range, round_sigma), with churn and class labels: float64 to 1e-12."""
    net = exact_precond(mixture_6d(), PRECONDS[precond])
    seeds = [3, 1, 4, 1, 5]
    got = sample_general(net, LATENTS, num_steps=9, seeds=seeds, S_churn=30.0, S_min=0.01, S_max=10.0)
    want = fastdiff.sample(net, LATENTS, num_steps=9, seeds=seeds, S_churn=30.0, S_min=0.01, S_max=10.0)
    assert_close(got, want, rtol=1e-12, atol=1e-12, name=precond)


PLAIN_CASES = {
    "vp churn alpha=0.8": (lambda mix: mix, dict(alpha=0.8, **CHURN, **VP)),
    "ve churn euler": (lambda mix: mix, dict(solver="euler", **CHURN, **VE)),
    "iddpm mixture": (lambda mix: mix, dict(**CHURN, **IDDPM)),
    "iddpm precond churn": (lambda mix: exact_precond(mix, fastdiff.iDDPMPrecond), dict(S_churn=20.0, **IDDPM)),
    "iddpm levels on the vp schedule": (lambda mix: exact_precond(mix, fastdiff.iDDPMPrecond),
                                        dict(discretization="iddpm", schedule="vp", scaling="vp", alpha=0.6, S_churn=10.0)),
    "vp precond, edm steps": (lambda mix: exact_precond(mix, fastdiff.VPPrecond),
                              dict(discretization="edm", schedule="vp", scaling="vp", alpha=0.5)),
    "ve precond, vp steps, ve schedule": (lambda mix: exact_precond(mix, fastdiff.VEPrecond),
                                          dict(discretization="vp", schedule="ve", scaling="none", **CHURN)),
}


@pytest.mark.parametrize("case", PLAIN_CASES)
def test_float64_matches_the_plain_general_sampler(case):
    """Every discretization/schedule/scaling/alpha, with churn from a randn_like: the plain sampler's result
    (float64, 1e-10: the two evaluate the same formulas in different orders)."""
    make_net, settings = PLAIN_CASES[case]
    net = make_net(mixture_6d())
    got = sample_general(net, LATENTS, randn_like=seeded_randn_like(7), num_steps=11, **settings)
    want = plain_general_sampler(net, LATENTS, seeded_randn_like(7), 11, **settings)
    assert_close(got, want, rtol=1e-10, atol=1e-10, name=case)


# --------------------------------------------------------------------------------------------------------
# 5. Convergence to the exact probability-flow solution.
# --------------------------------------------------------------------------------------------------------

MIXTURE_3D = dict(means=[[1.5, 0.5, 0.0], [-1.0, 0.0, 1.0], [0.0, -1.2, -0.5]], stds=[0.4, 0.3, 0.5], weights=[5.0, 3.0, 2.0])
CONVERGENCE_STEPS = [16, 32, 64, 128]


def rk4_probability_flow(mix, x, sigma_max, sigma_min, num_steps=500):
    """Classical RK4 for EDM's ODE dx~/du = x~ - D(x~; e^u), u = log sigma, from sigma_max down to sigma_min."""
    return fastdiff.testing.rk4_probability_flow(mix.denoise, x, sigma_max, sigma_min, num_steps)


@pytest.fixture(scope="module")
def flow_problem():
    """The 3-D mixture, 64 float64 latents, and the exact endpoints x~(sigma_min) per default range (RK4, 500 steps;
    within 1e-8 of 1000 steps for the VP range, while the samplers' errors are 1e-3 and more)."""
    mix = fastdiff.GaussianMixture(**MIXTURE_3D)
    latents = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = {}
    for name in ("edm", "vp", "ve"):
        sigma_min, sigma_max = schedules.default_sigma_range(name)
        exact[name] = rk4_probability_flow(mix, latents * sigma_max, sigma_max, sigma_min)
    sigma_min, sigma_max = schedules.default_sigma_range("vp")
    finer = rk4_probability_flow(mix, latents * sigma_max, sigma_max, sigma_min, 1000)
    assert_close(exact["vp"], finer, rtol=0.0, atol=1e-8, name="RK4 500 vs 1000 steps")
    return mix, latents, exact


def flow_endpoint(mix, latents, num_steps, settings):
    """x~ = x / s(t) at sigma_min: the run on the discretization's levels without the step to t = 0."""
    discretization = settings.get("discretization", "edm")
    levels = discretize(discretization, num_steps, *schedules.default_sigma_range(discretization))
    x = sample_general(mix, latents, sigmas=levels, **settings)
    plan = plan_general(None, sigmas=levels, **settings)
    assert plan.sigma[-1] == pytest.approx(float(levels[-1]), rel=1e-12)
    return x / float(plan.schedule.s(plan.t[-1]))


ORDER_CASES = {
    "vp heun": (dict(solver="heun", **VP), "vp", 1.7, 2.4),
    "vp euler": (dict(solver="euler", **VP), "vp", 0.8, 1.3),
    "vp heun alpha=1.5": (dict(solver="heun", alpha=1.5, **VP), "vp", 1.7, 2.4),
    "ve heun": (dict(solver="heun", **VE), "ve", 1.7, 2.5),
    "ve euler": (dict(solver="euler", **VE), "ve", 0.8, 1.3),
    "edm heun alpha=0.5": (dict(solver="heun", alpha=0.5), "edm", 1.6, 2.4),
    "edm steps on the vp schedule, alpha=0.75": (dict(solver="heun", alpha=0.75, schedule="vp", scaling="vp"), "edm", 1.6, 2.4),
}


@pytest.mark.parametrize("case", ORDER_CASES)
def test_convergence_order(flow_problem, case):
    """x/s at sigma_min approaches the exact probability-flow endpoint like N^-1 (Euler) or N^-2 (second order,
    any alpha)."""
    mix, latents, exact = flow_problem
    settings, range_name, low, high = ORDER_CASES[case]
    errors = [float((flow_endpoint(mix, latents, n, settings) - exact[range_name]).abs().max()) for n in CONVERGENCE_STEPS]
    slope = fitted_slope(CONVERGENCE_STEPS, errors)
    print(f"{case}: N={CONVERGENCE_STEPS} max errors={['%.3e' % e for e in errors]} slope={slope:.3f}")
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert low < slope < high, (slope, errors)


def test_vp_ode_reaches_the_edm_ode_endpoint(flow_problem):
    """The VP ODE (scaled state, VP time) and fastdiff.sample's EDM ODE, both at 128 steps over the same sigma range,
    end at the same x~(sigma_min) within 5e-3 (each is ~2e-3 from the exact endpoint)."""
    mix, latents, exact = flow_problem
    vp = flow_endpoint(mix, latents, 128, VP)
    sigma_min, sigma_max = schedules.default_sigma_range("vp")
    edm = fastdiff.sample(mix, latents, sigmas=fastdiff.karras_sigmas(128, sigma_min, sigma_max)[:-1], dtype=F64)
    assert float((vp - edm).abs().max()) < 5e-3
    assert float((vp - exact["vp"]).abs().max()) < 3e-3 and float((edm - exact["vp"]).abs().max()) < 3e-3


def test_alpha_changes_the_result(flow_problem):
    """alpha = 1 is Heun (fastdiff.sample's result); alpha = 0.5 gives a different, still second-order, result."""
    mix, latents, _ = flow_problem
    heun = sample_general(mix, latents, num_steps=16)
    assert_close(heun, fastdiff.sample(mix, latents, num_steps=16), rtol=1e-12, atol=1e-12, name="alpha=1 is Heun")
    midpoint = sample_general(mix, latents, num_steps=16, alpha=0.5)
    assert float((midpoint - heun).abs().max()) > 1e-3


# --------------------------------------------------------------------------------------------------------
# 6. The sampled distribution on the ring, against the oracle's own noise floor.
# --------------------------------------------------------------------------------------------------------

NUM_SAMPLES = 8192
FLOOR_FACTOR = 2.5  # pass: distance to an exact draw < 2.5x the mean exact-vs-exact distance
# Measured ratios (distance / floor; floor 0.0127, its four pairs 0.0084..0.0180): VP N=64 1.08, VE N=64 1.14,
# iDDPM N=32 1.08 and N=18 1.28 (mixture or exact preconditioned net alike); with churn 0.73..1.72.
RING_STEPS = {"vp": 64, "ve": 64, "iddpm": 32}


@pytest.fixture(scope="module")
def ring_problem():
    """The ring, an exact reference draw, the noise floor (mean SW of 4 exact-vs-exact pairs), latents, seeds."""
    return testing.ring_problem(NUM_SAMPLES, 1234, seeds_as_list=True)


@pytest.mark.parametrize("name, net_kind", [("vp", "mixture"), ("ve", "mixture"), ("iddpm", "mixture"), ("vp", "precond"),
                                            ("ve", "precond")])
def test_original_samplers_reproduce_ring(ring_problem, name, net_kind):
    """EDM Table 1's VP, VE and iDDPM settings (deterministic), with the mixture or (VP, VE) the exact preconditioned
    net: sliced W1 to an exact draw < 2.5x the noise floor, ~1/8 of the samples per mode. (The iDDPM net is shown
    equal to the mixture by the next test: its argmin over 1001 levels per sample makes an 8192-sample run slow.)"""
    mix, reference, floor, latents, _ = ring_problem
    net = mix if net_kind == "mixture" else exact_precond(mix, PRECONDS[name])
    x = sample_general(net, latents, num_steps=RING_STEPS[name], **SETTINGS[name])
    assert x.dtype == latents.dtype and x.shape == latents.shape
    testing.check_reproduces_ring(mix, x, reference, floor, f"{name} {net_kind} N={RING_STEPS[name]}", FLOOR_FACTOR)


@pytest.mark.parametrize("name", ["vp", "ve", "iddpm"])
def test_preconditioned_nets_sample_like_the_mixture(ring_problem, name):
    """In float64, with churn, the exact VP/VE/iDDPM-preconditioned net gives the samples of the mixture given the
    net's range and round_sigma (to 1e-10; measured 6e-14): the sampler feeds a preconditioner what it should."""
    mix, _, _, latents, seeds = ring_problem
    latents, seeds = latents[:256].double(), seeds[:256]
    settings = dict(num_steps=RING_STEPS[name], seeds=seeds, **CHURN, **SETTINGS[name])
    net = exact_precond(mix, PRECONDS[name])
    mixture_with_the_nets_levels = Recorder(mix)
    for attribute in ("sigma_min", "sigma_max", "round_sigma"):
        setattr(mixture_with_the_nets_levels, attribute, getattr(net, attribute))
    assert_close(sample_general(net, latents, **settings), sample_general(mixture_with_the_nets_levels, latents, **settings),
                 rtol=1e-10, atol=1e-10, name=name)


@pytest.mark.parametrize("name", ["vp", "ve", "iddpm"])
def test_stochastic_samplers_reproduce_ring(ring_problem, name):
    """The same settings with churn (S_churn=40, S_min=0.05, S_max=50, S_noise=1.003, seeded)."""
    mix, reference, floor, latents, seeds = ring_problem
    x = sample_general(mix, latents, num_steps=RING_STEPS[name], seeds=seeds, **CHURN, **SETTINGS[name])
    testing.check_reproduces_ring(mix, x, reference, floor, f"{name} churn", FLOOR_FACTOR)


@pytest.mark.parametrize("label, kwargs", [
    ("ve N=8", dict(num_steps=8, **VE)),
    ("vp S_noise=1.5 heavy churn", dict(num_steps=18, S_churn=80.0, S_noise=1.5, **VP)),
])
def test_distribution_check_detects_wrong_sampler(ring_problem, label, kwargs):
    """A deliberately poor configuration lands clearly (> 1.5x) above the pass threshold, so the check can fail."""
    mix, reference, floor, latents, seeds = ring_problem
    x = sample_general(mix, latents, seeds=seeds, **kwargs)
    distance, _ = testing.ring_distance(mix, x, reference, floor, label)
    assert distance > 1.5 * FLOOR_FACTOR * floor, (label, distance, floor)


# --------------------------------------------------------------------------------------------------------
# 7. Errors name the argument, the value and what is accepted.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(solver="rk4"), ValueError, "solver: expected one of 'heun', 'euler', got 'rk4'"),
    (dict(discretization="cosine"), ValueError, "discretization: expected one of 'edm', 'vp', 've', 'iddpm', got 'cosine'"),
    (dict(schedule="cosine"), ValueError, "schedule: expected one of 'edm', 'linear', 'vp', 've', got 'cosine'"),
    (dict(scaling="ve"), ValueError, "scaling: expected one of 'none', 'vp', got 've'"),
    (dict(alpha=0.0), ValueError, r"alpha: must be > 0 \(1 is Heun's method, 0.5 the midpoint method\), got 0.0"),
    (dict(alpha=-1.0), ValueError, "alpha: must be > 0"),
    (dict(alpha=math.nan), ValueError, "alpha: expected a finite number, got nan"),
    (dict(alpha=1.5, num_steps=16), ValueError, r"alpha: the second-order point .* alpha=1.5 puts it at -"),
    (dict(epsilon_s=0.0, **VP), ValueError, "epsilon_s: must be > 0"),
    (dict(epsilon_s=1.0, **VP), ValueError, r"epsilon_s: must be in \(0, 1\), got 1.0"),
    (dict(sigma_min=1.0, sigma_max=0.5), ValueError, "sigma_min: must be below sigma_max"),
    (dict(sigma_min=-0.1), ValueError, "sigma_min: must be > 0"),
    (dict(sigma_max=INF), ValueError, "sigma_max: expected a finite number, or a net with a finite sigma_max"),
    (dict(num_steps=0), ValueError, "num_steps: must be >= 1, got 0"),
    (dict(rho=0.0), ValueError, "rho: must be > 0"),
    (dict(M=1), ValueError, "M: must be >= 2", ),
    (dict(sigma_min=0.007, sigma_max=0.009, **IDDPM), ValueError, r"sigma_min: no iDDPM level u_j .* \[0.007, 0.009\]"),
    (dict(sigma_min=1.0, sigma_max=1.2, epsilon_s=0.5, **VP), ValueError, "sigma_min: no increasing VP schedule"),
    (dict(S_churn=-1.0), ValueError, "S_churn: must be >= 0.0, got -1.0"),
    (dict(S_min=5.0, S_max=1.0), ValueError, "S_min: must not exceed S_max"),
    (dict(sigmas=[1.0, 0.5, 0.0], num_steps=5), ValueError, "sigmas: replaces the discretization, so num_steps=5"),
    (dict(sigmas=[1.0, 2.0, 0.0]), ValueError, "sigmas: expected a strictly decreasing schedule"),
    (dict(seeds=[1, 2]), ValueError, "seeds: expected 5 seeds"),
    (dict(seeds=[1] * 5, randn_like=torch.randn_like), ValueError, "seeds: pass either randn_like or seeds"),
    (dict(dtype=torch.float16), ValueError, "dtype: expected torch.float32 or torch.float64"),
    (dict(backend="gpu"), ValueError, "backend: expected one of 'auto', 'reference'"),
    (dict(randn_like=lambda x: torch.ones(())), ValueError, r"randn_like: expected randn_like\(x\) to return the shape"),
])
def test_bad_input_names_the_argument(kwargs, error, match):
    """Each bad input raises an error naming the argument, the value and what is accepted (M=1 only matters to iddpm,
    which is why it is checked there)."""
    if "M" in kwargs:
        kwargs = dict(kwargs, **IDDPM)
    with pytest.raises(error, match=match):
        sample_general(mixture_6d(), LATENTS, **kwargs)


def test_net_and_latents_are_checked():
    """A non-callable net, non-float latents and a net returning the wrong shape are named."""
    with pytest.raises(TypeError, match="net: expected a callable denoiser"):
        sample_general(None, LATENTS)
    with pytest.raises(TypeError, match="latents: expected a floating-point tensor"):
        sample_general(mixture_6d(), LATENTS.long())
    with pytest.raises(ValueError, match=r"net: expected net\(x, sigma\) to return the shape \(5, 2, 3\)"):
        sample_general(lambda x, s: x[:, :1], LATENTS, **VP)
    with pytest.raises(ValueError, match=r"schedule: expected one of"):
        ode_schedule("cosine")
    with pytest.raises(ValueError, match=r"discretization: expected one of"):
        discretize("cosine", 4, 0.1, 1.0)


def test_alpha_with_euler_is_refused():
    """alpha sets Heun's second-order step: given with solver='euler' it is an error, not ignored."""
    with pytest.raises(ValueError, match=r"alpha: sets the second-order step of solver='heun'; solver='euler' takes "
                                         r"none, got alpha=0.5"):
        fastdiff.sampling.general.sample_general(fastdiff.GaussianMixture.ring(), torch.zeros(2, 2), solver="euler", alpha=0.5)
