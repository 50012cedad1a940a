"""The solver programs (fastdiff.sampling.programs: dpm_2, dpm_2_ancestral, dpmpp_2s_ancestral, dpmpp_sde,
dpmpp_2m_sde, dpmpp_3m_sde, lms) against k-diffusion's own functions and against the Gaussian-mixture oracle.

1. Peers: on identical sigmas and identical noise (k-diffusion's own BrownianTreeNoiseSampler given to both, or
   fastdiff's documented stream given to k-diffusion), fastdiff.sample equals k-diffusion 0.1.1.post1's
   sample_<solver> (fastdiff.testing.k_diffusion_sampling) to 1e-12 in float64 and 1e-5 of the scale in float32
   (measured up to 2.6e-6: the same arithmetic in another order, carried through 9 steps), with the same network
   calls; the noise matters (other seeds move the result by more than 1e-3).
2. The oracle: the deterministic ones show their order when the steps are halved; every one reproduces the
   ring mixture within the noise floor's band.
3. Streams, batch invariance, callbacks and errors.
"""
from __future__ import annotations

import pytest
import torch

import fastdiff
from fastdiff import testing
from fastdiff.rng import SAMPLER_OFFSET, SUBSTEP_OFFSET
from fastdiff.sampling.programs import PROGRAM_SOLVERS
from fastdiff.testing import assert_close, assert_equal, counting as counted, fitted_slope, relative_error
from fastdiff.testing import tanh_denoiser as tanh_net

# torchsde warns when a query lands a rounding error outside the tree's interval (k-diffusion's own runs do too).
pytestmark = pytest.mark.filterwarnings("ignore:Should have t")

F64 = torch.float64
BACKENDS = ["reference", "cpu", "triton"]  # triton: its interpreter without a GPU; the compiled ones run float32
F64_BACKENDS = ["reference"]  # a float64 state runs on the reference path only


def backend_dtypes():
    return [(b, F64) for b in F64_BACKENDS] + [(b, torch.float32) for b in BACKENDS]
F32_RTOL = 1e-5  # float32: max |fastdiff - k-diffusion| / max |k-diffusion|; measured up to 2.6e-6
DETERMINISTIC = {  # solver: (k-diffusion keyword arguments, fastdiff keyword arguments), noise off
    "dpm_2": ({}, {}),
    "lms": ({}, {}),
    "lms order 2": (dict(order=2), dict(order=2)),
    "dpm_2_ancestral eta 0": (dict(eta=0.0), dict(eta=0.0)),
    "dpmpp_2s_ancestral eta 0": (dict(eta=0.0), dict(eta=0.0)),
    "dpmpp_sde eta 0": (dict(eta=0.0), dict(eta=0.0)),
    "dpmpp_2m_sde eta 0": (dict(eta=0.0), dict(eta=0.0)),
    "dpmpp_2m_sde heun eta 0": (dict(eta=0.0, solver_type="heun"), dict(eta=0.0, solver_type="heun")),
    "dpmpp_3m_sde eta 0": (dict(eta=0.0), dict(eta=0.0)),
}
STOCHASTIC = {
    "euler_ancestral": {},
    "dpm_2_ancestral": {},
    "dpm_2_ancestral eta 0.5": dict(eta=0.5, s_noise=1.1),
    "dpmpp_2s_ancestral": {},
    "dpmpp_sde": {},
    "dpmpp_sde eta 0.7": dict(eta=0.7),
    "dpmpp_2m_sde": {},
    "dpmpp_2m_sde heun": dict(solver_type="heun"),
    "dpmpp_3m_sde": {},
    "dpmpp_3m_sde eta 0.5": dict(eta=0.5, s_noise=0.9),
}


def name_of(case: str) -> str:
    return case.split(" ")[0]


def fastdiff_kwargs(k_kwargs: dict) -> dict:
    """k-diffusion's keyword names -> fastdiff.sample's."""
    return {("S_noise" if k == "s_noise" else k): v for k, v in k_kwargs.items()}








def schedule(dtype, n: int = 10, to_zero: bool = True):
    kd = testing.k_diffusion_sampling()
    sigmas = kd.get_sigmas_karras(n, 0.03, 20.0).to(dtype)
    return sigmas if to_zero else sigmas[:-1]


LATENTS = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=F64)


# --------------------------------------------------------------------------------------------------------
# 1. Against k-diffusion.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("to_zero", [True, False])
@pytest.mark.parametrize("backend, dtype", backend_dtypes())
@pytest.mark.parametrize("case", list(DETERMINISTIC))
def test_deterministic_equals_k_diffusion(case, dtype, to_zero, backend):
    """Same sigmas (ending at 0, or above it), no noise: k-diffusion's sample_<solver> and fastdiff.sample agree to
    float precision, with the same network calls at the same levels."""
    kd = testing.k_diffusion_sampling()
    k_kwargs, f_kwargs = DETERMINISTIC[case]
    sigmas, latents = schedule(dtype, to_zero=to_zero), LATENTS.to(dtype)
    k_net, k_calls = counted(tanh_net())
    f_net, f_calls = counted(tanh_net())
    expected = getattr(kd, f"sample_{name_of(case)}")(k_net, latents * sigmas[0], sigmas, disable=True, **k_kwargs)
    actual = fastdiff.sample(f_net, latents, sigmas=sigmas, solver=name_of(case), backend=backend, **f_kwargs)
    assert actual.dtype == dtype and actual.shape == latents.shape
    assert len(f_calls) == len(k_calls)
    assert f_calls == pytest.approx(k_calls, rel=1e-6 if dtype == torch.float32 else 1e-13)
    error = relative_error(actual, expected)
    assert error <= (1e-12 if dtype == F64 else F32_RTOL), f"{case} {dtype}: {error:.3g}"


@pytest.mark.parametrize("backend, dtype", backend_dtypes())
@pytest.mark.parametrize("case", list(STOCHASTIC))
def test_stochastic_equals_k_diffusion_with_the_same_noise_sampler(case, dtype, backend):
    """k-diffusion's own BrownianTreeNoiseSampler (seeded per sample), one made for each run, given to both:
    the same samples to float precision (so a k-diffusion run is reproduced exactly); a tree of other seeds gives
    other samples."""
    kd = testing.k_diffusion_sampling()
    kwargs = STOCHASTIC[case]
    sigmas, latents = schedule(dtype), LATENTS.to(dtype)
    x_start = latents * sigmas[0]

    def tree(seeds=(1, 2, 3, 4, 5)):
        return kd.BrownianTreeNoiseSampler(x_start, sigmas[-2], sigmas[0], seed=list(seeds))

    expected = getattr(kd, f"sample_{name_of(case)}")(tanh_net(), x_start, sigmas, disable=True,
                                                       noise_sampler=tree(), **kwargs)
    actual = fastdiff.sample(tanh_net(), latents, sigmas=sigmas, solver=name_of(case), backend=backend,
                             noise_sampler=tree(), **fastdiff_kwargs(kwargs))
    other = fastdiff.sample(tanh_net(), latents, sigmas=sigmas, solver=name_of(case), backend=backend,
                            noise_sampler=tree((6, 7, 8, 9, 10)), **fastdiff_kwargs(kwargs))
    error = relative_error(actual, expected)
    assert error <= (1e-12 if dtype == F64 else F32_RTOL), f"{case} {dtype}: {error:.3g}"
    assert relative_error(other, expected) > 1e-3  # the noise matters: the comparison can fail


@pytest.mark.parametrize("backend, dtype", backend_dtypes())
@pytest.mark.parametrize("case", ["dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
                                  "dpmpp_3m_sde"])
def test_default_noise_is_the_documented_stream(case, backend, dtype):
    """With seeds, step i's noise is fastdiff.randn(seeds, shape, offset=SAMPLER_OFFSET + i) (dpmpp_sde's substep:
    SUBSTEP_OFFSET + i): k-diffusion fed exactly those through its noise_sampler gives the same samples."""
    kd = testing.k_diffusion_sampling()
    seeds = [11, 12, 13, 14, 15]
    sigmas = schedule(dtype)
    latents = fastdiff.randn(seeds, (5, 4), dtype=dtype)
    levels = sigmas.tolist()
    mid = {}
    if case == "dpmpp_sde":  # its draws come as (sigma, sigma_mid) then (sigma, sigma_next) each step
        from fastdiff.sampling.programs import k_diffusion_levels
        mid = {k_diffusion_levels(levels[i], levels[i + 1], dtype)[0][1]: i for i in range(len(levels) - 2)}

    def noise(sigma, sigma_next):
        sigma_next = float(sigma_next)
        if sigma_next in mid:
            return fastdiff.randn(seeds, (5, 4), offset=SUBSTEP_OFFSET + mid[sigma_next], dtype=dtype)
        step = min(range(len(levels) - 1), key=lambda i: abs(levels[i + 1] - sigma_next))
        return fastdiff.randn(seeds, (5, 4), offset=SAMPLER_OFFSET + step, dtype=dtype)

    expected = getattr(kd, f"sample_{case}")(tanh_net(), latents * sigmas[0], sigmas, disable=True, noise_sampler=noise)
    actual = fastdiff.sample(tanh_net(), latents, sigmas=sigmas, solver=case, seeds=seeds, backend=backend)
    error = relative_error(actual, expected)
    assert error <= (1e-12 if dtype == F64 else F32_RTOL), f"{case} {backend}: {error:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["dpmpp_sde", "dpmpp_3m_sde", "dpm_2_ancestral"])
def test_seeded_samples_do_not_depend_on_the_batch(solver, backend):
    """A sample's result depends on its seed alone: the batch [a, b, c] is the batches [a] and [b, c] stacked."""
    seeds = [5, 6, 7]
    latents = fastdiff.randn(seeds, (3, 4))
    whole = fastdiff.sample(tanh_net(), latents, num_steps=6, solver=solver, seeds=seeds, backend=backend)
    parts = torch.cat([fastdiff.sample(tanh_net(), latents[:1], num_steps=6, solver=solver, seeds=seeds[:1],
                                       backend=backend),
                       fastdiff.sample(tanh_net(), latents[1:], num_steps=6, solver=solver, seeds=seeds[1:],
                                       backend=backend)])
    assert_equal(whole, parts)
    assert relative_error(fastdiff.sample(tanh_net(), latents, num_steps=6, solver=solver, seeds=[8, 9, 10],
                                          backend=backend), whole) > 1e-3


@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_callback_once_per_step(solver):
    """callback gets k-diffusion's dict once per step: x, i, sigma, sigma_hat and the step's first denoised."""
    seen = []
    fastdiff.sample(tanh_net(), LATENTS.float(), num_steps=5, solver=solver, seeds=[1, 2, 3, 4, 5],
                    backend="reference", callback=seen.append)
    assert [info["i"] for info in seen] == list(range(5))
    assert all(set(info) == {"x", "i", "sigma", "sigma_hat", "denoised"} for info in seen)
    assert all(info["x"].shape == LATENTS.shape for info in seen)


def test_nfe_of_each_program():
    """Network evaluations: one a step, two for the midpoint solvers (one on a step to 0), as in k-diffusion."""
    t = fastdiff.karras_sigmas(8).tolist()
    from fastdiff.sampling.programs import solver_program
    nfe = {name: solver_program(name, t).nfe for name in PROGRAM_SOLVERS}
    assert nfe == {"dpm_2": 15, "dpm_2_ancestral": 15, "dpmpp_2s_ancestral": 15, "dpmpp_sde": 15,
                   "dpmpp_2m_sde": 8, "dpmpp_3m_sde": 8, "lms": 8, "unipc": 8}


# --------------------------------------------------------------------------------------------------------
# 2. The oracle.
# --------------------------------------------------------------------------------------------------------

ORDER_STEPS = [16, 32, 64, 128]


@pytest.fixture(scope="module")
def convergence_problem():
    """The 3-D mixture of test_oracle, 64 float64 latents and the exact PF-ODE endpoints (RK4, 2000 steps)."""
    mix = fastdiff.GaussianMixture(means=[[1.5, 0.5, 0.0], [-1.0, 0.0, 1.0], [0.0, -1.2, -0.5]], stds=[0.4, 0.3, 0.5],
                                   weights=[5.0, 3.0, 2.0])
    latents = torch.randn(64, mix.dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = testing.rk4_probability_flow(mix.denoise, latents * 80.0, 80.0, 0.002, 2000)
    return mix, latents, exact


@pytest.mark.parametrize("solver, kwargs, low, high", [
    ("dpm_2", {}, 1.7, 2.5),
    ("lms", {}, 2.6, 4.5),
    ("lms", dict(order=2), 1.6, 2.4),
    ("dpmpp_2s_ancestral", dict(eta=0.0), 1.6, 2.4),
    ("dpmpp_2m_sde", dict(eta=0.0), 1.7, 2.5),
    ("dpmpp_3m_sde", dict(eta=0.0), 2.4, 3.5),
])
def test_convergence_order(convergence_problem, solver, kwargs, low, high):
    """Max error against the exact PF-ODE solution falls like N^-p when the steps are halved: p about 2 for the
    second-order solvers (measured 1.8-2.2), above 2.4 for dpmpp_3m_sde and LMS(4) (measured 2.7 and 3.0 over
    N = 16..128: their lower-order first steps weigh on the slope)."""
    mix, latents, exact = convergence_problem
    errors = []
    for n in ORDER_STEPS:
        sigmas = fastdiff.karras_sigmas(n)[:-1]  # ends at sigma_min: no step to 0
        out = fastdiff.sample(mix, latents, sigmas=sigmas, solver=solver, dtype=F64, backend="reference", **kwargs)
        errors.append(float((out - exact).abs().max()))
    slope = fitted_slope(ORDER_STEPS, errors)
    print(f"{solver} {kwargs}: N={ORDER_STEPS} errors={['%.3e' % e for e in errors]} slope={slope:.2f}")
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert low < slope < high, (slope, errors)


FLOOR_FACTOR = 2.5  # as test_oracle's: sliced W1 to an exact draw < 2.5x the exact-vs-exact distance


@pytest.fixture(scope="module")
def ring_problem():
    return testing.ring_problem(8192, 1234, seeds_as_list=True)


RING_STEPS = {"dpm_2": 24, "lms": 24, "unipc": 24, "dpmpp_2s_ancestral": 24}  # the SDE solvers take 48 (measured at 24 steps:
# ratios 1.5-1.7, and 2.6 for dpmpp_3m_sde, whose noise needs finer steps; at 48: 0.97-1.18)


@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_reproduces_ring(ring_problem, solver):
    """Every solver, seeded noise where it adds any: the ring within the noise floor's band."""
    mix, reference, floor, latents, seeds = ring_problem
    n = RING_STEPS.get(solver, 48)
    x = fastdiff.sample(mix, latents, num_steps=n, solver=solver, seeds=seeds, backend="reference")
    testing.check_reproduces_ring(mix, x, reference, floor, f"{solver} N={n}", FLOOR_FACTOR)


def test_ring_check_detects_a_wrong_noise_scale(ring_problem):
    """Negative control: dpmpp_2m_sde with S_noise 2.5 lands clearly above the pass threshold."""
    mix, reference, floor, latents, seeds = ring_problem
    x = fastdiff.sample(mix, latents, num_steps=48, solver="dpmpp_2m_sde", S_noise=2.5, seeds=seeds,
                        backend="reference")
    distance, _ = testing.ring_distance(mix, x, reference, floor, "dpmpp_2m_sde S_noise=2.5")
    assert distance > 1.5 * FLOOR_FACTOR * floor


# --------------------------------------------------------------------------------------------------------
# 3. Errors.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(solver="lms", eta=0.5), ValueError, "eta"),
    (dict(solver="dpm_2", eta=0.5), ValueError, "eta"),
    (dict(solver="lms", S_churn=10.0), ValueError, "S_churn"),
    (dict(solver="dpmpp_sde", S_churn=10.0), ValueError, "S_churn"),
    (dict(solver="lms", order=5), ValueError, "order"),
    (dict(solver="lms", order=0), ValueError, "order"),
    (dict(solver="dpm_2", order=2), ValueError, "order"),
    (dict(solver="dpmpp_2m_sde", solver_type="euler"), ValueError, "solver_type"),
    (dict(solver="dpmpp_3m_sde", solver_type="heun"), ValueError, "solver_type"),
    (dict(solver="dpmpp_sde", noise_sampler=3), TypeError, "noise_sampler"),
    (dict(solver="dpmpp_sde", noise_sampler=lambda s, t: None, seeds=[1, 2, 3, 4, 5]), ValueError, "noise_sampler"),
    (dict(solver="lms", noise_sampler=lambda s, t: None), ValueError, "noise_sampler"),
    (dict(solver="heun", noise_sampler=lambda s, t: None), ValueError, "noise_sampler"),
    (dict(solver="dpmpp_sde", noise_sampler=lambda s, t: torch.zeros(5)), ValueError, "noise_sampler"),
    (dict(solver="dpmpp_sde", cuda_graph=True), fastdiff.CaptureError, "cuda_graph=True: CUDA graphs need CUDA"),
])
def test_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastdiff.sample(tanh_net(), LATENTS.float(), num_steps=4, backend="reference", **kwargs)


# --------------------------------------------------------------------------------------------------------
# 4. Brownian-tree noise.
# --------------------------------------------------------------------------------------------------------

def test_brownian_noise_is_increments_of_one_path_per_sample():
    """BrownianNoise: each draw is a standard normal (over 6,000 values: mean within 0.06, std within 0.05 of 1);
    adjacent intervals add up to the whole one (W is one path); reversing an interval flips the sign; a sample's
    path depends on its seed alone."""
    noise = fastdiff.BrownianNoise([1, 2, 3], (3, 2000), sigma_min=0.01, sigma_max=10.0)
    z = noise(5.0, 2.0)
    assert z.shape == (3, 2000) and z.dtype == torch.float32
    assert abs(float(z.mean())) < 0.06 and abs(float(z.std()) - 1) < 0.05
    whole = noise(5.0, 2.0) * 3**0.5
    parts = noise(5.0, 3.0) * 2**0.5 + noise(3.0, 2.0)
    assert_close(parts, whole, rtol=0, atol=1e-5)
    assert_equal(noise(2.0, 5.0), -z)
    assert_equal(fastdiff.BrownianNoise([2], (1, 2000), sigma_min=0.01, sigma_max=10.0)(5.0, 2.0), z[1:2])
    assert relative_error(fastdiff.BrownianNoise([4, 5, 6], (3, 2000), 0.01, 10.0)(5.0, 2.0), z) > 0.5


def test_brownian_samples_change_less_with_the_step_count():
    """noise_sampler="brownian": going from 12 to 24 steps moves dpmpp_2m_sde's samples by less than half of what it
    moves them with independent draws per step (measured: 0.29 against 0.86 on the ring)."""
    mix = fastdiff.GaussianMixture.ring()
    seeds = list(range(256))
    latents = fastdiff.randn(seeds, (256, 2))
    moved = {}
    for kind in ("brownian", None):
        extra = dict(noise_sampler="brownian") if kind else {}
        a, b = (fastdiff.sample(mix, latents, num_steps=n, solver="dpmpp_2m_sde", seeds=seeds, backend="reference",
                                **extra) for n in (12, 24))
        moved[kind] = float((a - b).abs().mean())
    assert moved["brownian"] < 0.5 * moved[None], moved


def test_brownian_noise_errors():
    with pytest.raises(ValueError, match="sigma_min"):
        fastdiff.BrownianNoise([1], (1, 3), sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="noise_sampler"):
        fastdiff.sample(tanh_net(), LATENTS.float(), num_steps=4, solver="dpmpp_sde", noise_sampler="brown")
    with pytest.raises(ValueError, match="noise_sampler"):
        fastdiff.sample(tanh_net(), LATENTS.float(), num_steps=4, solver="lms", noise_sampler="brownian")


def test_dpm_2_calls_randn_like_every_step_as_k_diffusion():
    """With churn limited by S_max, dpm_2 calls randn_like on every step (as k-diffusion's sample_dpm_2 and EDM's
    sampler draw their eps), so the same seeded torch.randn_like gives k-diffusion's samples; and heun/euler call it
    as often."""
    kd = testing.k_diffusion_sampling()
    sigmas = schedule(F64)
    net = tanh_net()
    torch.manual_seed(5)
    expected = kd.sample_dpm_2(net, LATENTS * sigmas[0], sigmas, s_churn=5.0, s_tmax=10.0, disable=True)
    torch.manual_seed(5)
    calls = []
    counting_randn = lambda x: calls.append(1) or torch.randn_like(x)  # noqa: E731
    actual = fastdiff.sample(net, LATENTS, sigmas=sigmas, solver="dpm_2", randn_like=counting_randn, S_churn=5.0,
                             S_max=10.0, backend="reference")
    assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    assert len(calls) == len(sigmas) - 1


def test_brownian_noise_refuses_levels_outside_its_range():
    noise = fastdiff.BrownianNoise(list(range(4)), (4, 2), sigma_min=0.01, sigma_max=10.0)
    with pytest.raises(ValueError, match=r"outside its range \[sigma_min=0.01, sigma_max=10.0\]"):
        noise(80.0, 40.0)
    assert noise(10.0 * (1 + 1e-7), 5.0).shape == (4, 2)  # a float32 rounding above sigma_max is clamped


@pytest.mark.parametrize("kwargs", [dict(solver="dpmpp_2m_sde", eta=0.0), dict(solver="dpm_adaptive")])
def test_a_noise_sampler_that_would_be_unused_is_an_error(kwargs):
    with pytest.raises(ValueError, match="noise_sampler: .*would be unused"):
        fastdiff.sample(tanh_net(), LATENTS.float(), noise_sampler=lambda s, t: torch.zeros(5, 4), **kwargs)
