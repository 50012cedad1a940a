"""solver="dpm_adaptive" (fastdiff.sampling.adaptive) against k-diffusion 0.1.1.post1's own sample_dpm_adaptive
(fastdiff.testing.k_diffusion_sampling), on the exact denoiser of a Gaussian mixture and on a small tanh net.

1. float64, eta = 0: the same result to 1e-10 of its scale (measured up to 8e-14; 6e-13 with noise) and the same
   attempts: the same NFE, accepted and rejected counts, and per attempt the same level, error norm and next step
   length. k-diffusion is given sigma_min, sigma_max, rtol and atol as float64 tensors: with Python floats it
   makes its levels with torch.tensor(sigma), float32, so its steps sit up to a float32 rounding away from the
   float64 ones and its result moves by 1e-7 (order 2) to 3e-4 (order 3) of the scale (test 2 shows it; the
   counts stay the same).
2. float32: the same counts, and fastdiff's distance to the float64 result at most twice k-diffusion's own float32
   distance to it (fastdiff.testing.assert_error_bounded). Closer agreement is not to be had: where a step's error
   is far below the tolerance (the first steps from sigma_max = 80, error ~1e-9), float32 rounding dominates the
   error estimate, the next step's length follows that rounding, and the result moves by up to 1.2e-3 of its scale
   (fastdiff's and k-diffusion's float32 results alike, measured against float64).
3. eta > 0: the same noise given to both (k-diffusion's BrownianTreeNoiseSampler, or fastdiff's seed stream handed
   to k-diffusion as a noise_sampler): the same result (float64 to 1e-10) and counts; another seed moves it.
4. rtol sets the work and the error: a smaller rtol takes more network evaluations and lands nearer the exact
   probability-flow solution (an RK4 reference).
5. The callback, the front door, and errors.
"""
from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch

import fastdiff
from fastdiff import testing
from fastdiff.rng import ADAPTIVE_OFFSET, STREAMS
from fastdiff.sampling.adaptive import AdaptiveSettings, StepSizeController, sample_dpm_adaptive
from fastdiff.testing import assert_equal, assert_error_bounded, counting as counted, relative_error as relative
from fastdiff.testing import tanh_denoiser

pytestmark = [
    # k-diffusion copies its float64 tensor arguments with torch.tensor(...), which warns; torchsde warns when a
    # query lands a rounding error outside the tree's interval (k-diffusion's own runs do too).
    pytest.mark.filterwarnings("ignore:To copy construct from a tensor"),
    pytest.mark.filterwarnings("ignore:Should have t"),
]

F64 = torch.float64
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
BACKENDS = ["reference"]  # float64: the reference path (the C++ backend: test_cpu_backend_is_the_reference_bit_for_bit)
F64_RTOL = 1e-10  # max |fastdiff - k-diffusion| / max |k-diffusion| in float64; measured up to 6.4e-13


def K():
    return testing.k_diffusion_sampling()


def mixture_problem(seed: int = 0, dim: int = 6, batch: int = 4):
    """A 5-component mixture with its exact denoiser, and float64 latents."""
    g = torch.Generator().manual_seed(seed)
    mix = fastdiff.GaussianMixture(torch.randn(5, dim, generator=g, dtype=F64), 0.3)
    return mix, torch.randn(batch, dim, generator=g, dtype=F64)




def problem(name: str):
    mix, latents = mixture_problem()
    return (mix if name == "mixture" else tanh_denoiser(6)), latents






def k_sample(net, latents, order, *, float64_host=True, rtol=0.05, atol=0.0078, callback=None, **kwargs):
    """k-diffusion's sample_dpm_adaptive from latents * sigma_max: (x, info). With float64_host, its sigma_min,
    sigma_max, rtol and atol are float64 tensors, so its host arithmetic (levels, step lengths) is float64."""
    def host(value):
        return torch.tensor(value, dtype=F64) if float64_host else value
    return K().sample_dpm_adaptive(net, latents * SIGMA_MAX, host(SIGMA_MIN), host(SIGMA_MAX), order=order,
                                   rtol=host(rtol), atol=host(atol), callback=callback, disable=True,
                                   return_info=True, **kwargs)


def attempts_of(records):
    """(sigma, error, h, n_accept) of each attempt reported to a callback (k-diffusion's tensors as floats)."""
    return [(float(r["sigma"]), float(r["error"]), float(r["h"]), int(r["n_accept"])) for r in records]


# ---------------------------------------------------------------------------------------------------------
# 1-2. Against k-diffusion, deterministic
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("net_name", ["mixture", "tanh"])
@pytest.mark.parametrize("order", [2, 3])
def test_float64_equals_k_diffusion(order, net_name, backend):
    net, latents = problem(net_name)
    ours_net, calls = counted(net)
    ours_records, k_records = [], []
    x, info = sample_dpm_adaptive(ours_net, latents, order=order, backend=backend, callback=ours_records.append)
    k_net, k_calls = counted(net)
    kx, k_info = k_sample(k_net, latents, order, callback=k_records.append)
    print(f"order {order} {net_name}: fastdiff {info}, k-diffusion {k_info}, relative difference "
          f"{relative(x, kx):.3g}")
    assert info == k_info
    assert info["nfe"] == len(calls) == len(k_calls) == order * info["steps"]
    assert info["steps"] == info["n_accept"] + info["n_reject"] and info["n_reject"] > 0  # the control acted
    assert relative(x, kx) <= F64_RTOL
    assert x.dtype == F64
    ours, theirs = attempts_of(ours_records), attempts_of(k_records)
    assert len(ours) == len(theirs) == info["steps"]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a[3] == b[3], f"attempt {i}: accepted steps {a[3]} != {b[3]}"
        for name, u, v in zip(("sigma", "error", "h"), a[:3], b[:3]):
            assert math.isclose(u, v, rel_tol=1e-8, abs_tol=1e-14), f"attempt {i}: {name} {u!r} != {v!r}"
    for a, b in zip(calls, k_calls):  # the same network calls, at the same levels
        assert math.isclose(a, b, rel_tol=1e-8)


@pytest.mark.parametrize("order", [2, 3])
def test_k_diffusion_with_python_floats_steps_on_float32_levels(order):
    """Test 1 hands k-diffusion float64 tensors. Called with Python floats, as usual, it computes its levels in
    float32 (torch.tensor(80.0)): the same steps and counts, a result off by a float32 rounding of the levels
    carried through the run (measured 1e-7 at order 2, 3e-4 at order 3)."""
    net, latents = mixture_problem()
    x, info = sample_dpm_adaptive(net, latents, order=order, backend="reference")
    kx, k_info = k_sample(net, latents, order, float64_host=False)
    difference = relative(x, kx)
    print(f"order {order}: {info} vs {k_info}, relative difference {difference:.3g}")
    assert info == k_info
    assert 1e-10 < difference < 1e-3


@pytest.mark.parametrize("eta", [0.0, 0.8])
@pytest.mark.parametrize("order", [2, 3])
def test_cpu_backend_is_the_reference_bit_for_bit(order, eta):
    """float32 on the C++ CPU kernels: the same attempts and the same bits as the reference path (its combine equals
    the reference's bit for bit; noise, with eta > 0, given as a tensor, so the generator's last-ulp differences in
    log/sin/cos do not enter)."""
    net, latents64 = mixture_problem(1)
    latents = latents64.float()
    noise = lambda sigma, sigma_next: fastdiff.randn([1, 2, 3, 4], latents.shape,  # noqa: E731
                                                     offset=int(1e6 * float(sigma_next)))
    kwargs = dict(order=order, eta=eta, noise_sampler=noise if eta else None)
    x_ref, info_ref = sample_dpm_adaptive(net, latents, backend="reference", **kwargs)
    x_cpu, info_cpu = sample_dpm_adaptive(net, latents, backend="cpu", **kwargs)
    assert info_cpu == info_ref
    assert_equal(x_cpu, x_ref)


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_float32_as_accurate_as_k_diffusion(seed, order):
    net, latents64 = mixture_problem(seed)
    latents = latents64.float()
    x, info = sample_dpm_adaptive(net, latents, order=order, backend="reference")
    kx, k_info = k_sample(net, latents, order, float64_host=False)  # k-diffusion as it is used, in float32
    exact, _ = k_sample(net, latents64, order)  # float64
    print(f"seed {seed} order {order}: fastdiff {info['nfe']} NFE, k-diffusion {k_info['nfe']}; relative to "
          f"float64: fastdiff {relative(x, exact):.3g}, k-diffusion {relative(kx, exact):.3g}; to each other "
          f"{relative(x, kx):.3g}")
    assert info == k_info
    assert x.dtype == torch.float32
    assert_error_bounded(x, kx, exact, factor=2.0, name=f"dpm_adaptive float32 order {order}")


# ---------------------------------------------------------------------------------------------------------
# 3. With noise
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("eta,S_noise", [(1.0, 1.0), (0.5, 0.8)])
def test_eta_with_a_brownian_tree_equals_k_diffusion(order, eta, S_noise):
    net, latents = mixture_problem()

    def tree(seed):
        return K().BrownianTreeNoiseSampler(latents * SIGMA_MAX, SIGMA_MIN, SIGMA_MAX, seed=seed)

    x, info = sample_dpm_adaptive(net, latents, order=order, eta=eta, S_noise=S_noise, noise_sampler=tree(42),
                                  backend="reference")
    kx, k_info = k_sample(net, latents, order, eta=eta, s_noise=S_noise, noise_sampler=tree(42))
    other, _ = sample_dpm_adaptive(net, latents, order=order, eta=eta, S_noise=S_noise, noise_sampler=tree(43),
                                   backend="reference")
    print(f"order {order} eta {eta}: {info} vs {k_info}, relative difference {relative(x, kx):.3g}, another "
          f"tree {relative(other, kx):.3g}")
    assert info == k_info
    assert relative(x, kx) <= F64_RTOL
    assert relative(other, kx) > 1e-2  # the noise is used


def seed_stream(seeds, like):
    """fastdiff's noise for solver='dpm_adaptive' as a k-diffusion noise_sampler: the k-th call returns the draw
    of the k-th accepted step (k-diffusion calls its sampler once per accepted step)."""
    count = [0]

    def noise_sampler(sigma, sigma_next):
        z = fastdiff.randn(seeds, like.shape, offset=ADAPTIVE_OFFSET + count[0], dtype=like.dtype)
        count[0] += 1
        return z
    return noise_sampler


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("order", [2, 3])
def test_eta_from_seeds_equals_k_diffusion_given_that_noise(order, dtype):
    net, latents64 = mixture_problem()
    latents, seeds, eta = latents64.to(dtype), [11, 12, 13, 14], 0.7
    x, info = sample_dpm_adaptive(net, latents, order=order, eta=eta, seeds=seeds, backend="reference")
    kx, k_info = k_sample(net, latents, order, float64_host=dtype == F64, eta=eta,
                          noise_sampler=seed_stream(seeds, latents))
    print(f"order {order} {dtype}: {info} vs {k_info}, relative difference {relative(x, kx):.3g}")
    assert info == k_info
    if dtype == F64:
        assert relative(x, kx) <= F64_RTOL
    else:
        exact, _ = k_sample(net, latents64, order, eta=eta, noise_sampler=seed_stream(seeds, latents64))
        assert_error_bounded(x, kx, exact, factor=2.0, name=f"dpm_adaptive float32 eta order {order}")
    again, _ = sample_dpm_adaptive(net, latents, order=order, eta=eta, seeds=torch.tensor(seeds),
                                   backend="reference")
    assert_equal(again, x)
    other, _ = sample_dpm_adaptive(net, latents, order=order, eta=eta, seeds=[21, 22, 23, 24], backend="reference")
    assert relative(other, x) > 1e-2


def test_eta_zero_draws_no_noise():
    """eta = 0 (the default) is the ODE solver: seeds are checked and unused, randn_like is never called, and a
    noise_sampler, which would be unused, is an error."""
    net, latents = mixture_problem()
    plain, _ = sample_dpm_adaptive(net, latents, backend="reference")
    seeded, _ = sample_dpm_adaptive(net, latents, seeds=[1, 2, 3, 4], backend="reference")
    assert_equal(seeded, plain)

    def never(*args):
        raise AssertionError("no noise is drawn with eta = 0")
    with pytest.raises(ValueError, match="noise_sampler: .*would be unused"):
        sample_dpm_adaptive(net, latents, noise_sampler=never, backend="reference")
    assert_equal(sample_dpm_adaptive(net, latents, randn_like=never, backend="reference")[0], plain)


def test_eta_with_randn_like_draws_once_per_accepted_step():
    net, latents = mixture_problem()
    seeds = [5, 6, 7, 8]
    count = [0]

    def randn_like(x):
        z = fastdiff.randn(seeds, x.shape, offset=ADAPTIVE_OFFSET + count[0], dtype=x.dtype)
        count[0] += 1
        return z
    x, info = sample_dpm_adaptive(net, latents, eta=1.0, randn_like=randn_like, backend="reference")
    from_seeds, _ = sample_dpm_adaptive(net, latents, eta=1.0, seeds=seeds, backend="reference")
    # the last accepted step lands on sigma_min itself and adds no noise (sigma_up = 0 there)
    assert count[0] == info["n_accept"] - 1
    assert relative(x, from_seeds) < 1e-14


def test_the_noise_stream_is_registered():
    assert any(stream.start == ADAPTIVE_OFFSET and "dpm_adaptive" in stream.drawn_by for stream in STREAMS)


# ---------------------------------------------------------------------------------------------------------
# 4. The control is real
# ---------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def exact_flow() -> torch.Tensor:
    """The probability-flow solution of mixture_problem() at SIGMA_MIN: RK4 in 500 steps of ln sigma (6e-9 of the
    scale from 4000 steps; the solver's errors below are 5e-4 and more)."""
    net, latents = mixture_problem()
    return testing.rk4_probability_flow(net, latents * SIGMA_MAX, SIGMA_MAX, SIGMA_MIN, 500)


@pytest.mark.parametrize("order", [2, 3])
def test_rtol_sets_the_work_and_the_error(order):
    net, latents = mixture_problem()
    exact = exact_flow()
    rows = []
    for rtol in (0.2, 0.05, 0.01, 0.002):
        x, info = sample_dpm_adaptive(net, latents, order=order, rtol=rtol, atol=1e-4, backend="reference")
        _, k_info = k_sample(net, latents, order, rtol=rtol, atol=1e-4)
        rows.append((rtol, info["nfe"], k_info["nfe"], relative(x, exact)))
        print(f"order {order} rtol {rtol}: NFE {info['nfe']} (k-diffusion {k_info['nfe']}), accepted "
              f"{info['n_accept']}, rejected {info['n_reject']}, error {rows[-1][3]:.3g}")
        assert info == k_info
    nfes, errors = [r[1] for r in rows], [r[3] for r in rows]
    assert all(a < b for a, b in zip(nfes, nfes[1:])), nfes
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0] / 20


def test_settings_change_the_steps():
    net, latents = mixture_problem()
    base = sample_dpm_adaptive(net, latents, backend="reference")[1]
    for change in (dict(atol=0.05), dict(h_init=0.5), dict(pcoeff=0.3, icoeff=0.6), dict(accept_safety=0.5)):
        info = sample_dpm_adaptive(net, latents, backend="reference", **change)[1]
        _, k_info = k_sample(net, latents, 3, **change)
        assert info == k_info, change
        assert info != base, change


def test_controller_limits_each_change_of_h():
    settings = AdaptiveSettings()
    for error in (0.0, 1e-12, 0.5, 1.0, 3.0, 1e9):
        controller = StepSizeController(1.0, settings, 3)
        accepted = controller.propose(error)
        assert 1 - math.pi / 4 <= controller.h <= 1 + math.pi / 2
        assert accepted == (error <= 1.0)  # the I controller accepts what is within the tolerance (and a bit more)


# ---------------------------------------------------------------------------------------------------------
# 5. Callback, front door, errors
# ---------------------------------------------------------------------------------------------------------

def test_callback_sees_every_attempt_with_k_diffusions_keys():
    net, latents = mixture_problem()
    ours, theirs = [], []
    x, info = sample_dpm_adaptive(net, latents, backend="reference", callback=ours.append)
    k_sample(net, latents, 3, callback=theirs.append)
    assert set(ours[0]) == set(theirs[0]) | {"accepted"}
    assert [r["i"] for r in ours] == list(range(info["steps"]))
    assert sum(r["accepted"] for r in ours) == info["n_accept"] == ours[-1]["n_accept"]
    assert ours[-1]["nfe"] == info["nfe"]
    assert ours[-1]["accepted"] and ours[-1]["x"] is not None
    assert_equal(ours[-1]["x"], x)
    levels = [r["sigma"] for r in ours]
    assert all(a >= b for a, b in zip(levels, levels[1:])) and levels[-1] == pytest.approx(SIGMA_MIN, rel=1e-4)
    assert all(r["t"] == pytest.approx(-math.log(r["sigma"])) and r["sigma_hat"] == r["sigma"] for r in ours)
    for before, after in zip(ours, ours[1:]):
        if not after["accepted"]:
            assert after["x"] is before["x"]  # a rejected attempt leaves the state as it was


def test_sample_is_sample_dpm_adaptive():
    net, latents = mixture_problem()
    x, _ = sample_dpm_adaptive(net, latents, order=2, rtol=0.02, h_init=0.1, eta=0.5, seeds=[1, 2, 3, 4],
                               backend="reference")
    y = fastdiff.sample(net, latents, solver="dpm_adaptive", order=2, adaptive=dict(rtol=0.02, h_init=0.1),
                        eta=0.5, seeds=[1, 2, 3, 4], backend="reference")
    assert_equal(y, x)
    z = fastdiff.sample(net, latents, solver="dpm_adaptive", order=2, adaptive=dict(rtol=0.02, h_init=0.1),
                        eta=0.5, seeds=[1, 2, 3, 4], backend="reference", cuda_graph="auto")  # eager here
    assert_equal(z, x)
    default = fastdiff.sample(net, latents, solver="dpm_adaptive", backend="reference")
    assert_equal(default, sample_dpm_adaptive(net, latents, backend="reference")[0])


def test_levels_are_clamped_to_the_net():
    net, latents = mixture_problem()
    bounded, calls = counted(net)
    bounded.sigma_min, bounded.sigma_max = 0.01, 20.0
    x = fastdiff.sample(bounded, latents, solver="dpm_adaptive", backend="reference")
    assert max(calls) == pytest.approx(20.0) and min(calls) >= 0.01 * (1 - 1e-12)
    expected, _ = sample_dpm_adaptive(net, latents, sigma_min=0.01, sigma_max=20.0, backend="reference")
    assert_equal(x, expected)


def test_state_dtype_and_result_dtype():
    net, latents = mixture_problem()
    seen = []

    def net_seeing(x, sigma):
        seen.append((x.dtype, sigma.dtype, tuple(sigma.shape)))
        return net(x, sigma)
    x = fastdiff.sample(net_seeing, latents.half(), solver="dpm_adaptive", backend="reference")
    assert x.dtype == torch.float16 and set(seen) == {(torch.float32, torch.float32, (4,))}
    with torch.enable_grad():
        y = fastdiff.sample(net, latents.float().requires_grad_(), solver="dpm_adaptive", backend="reference")
    assert not y.requires_grad


def test_class_labels_and_extra_args_reach_the_net():
    net, latents = mixture_problem()
    seen = []

    def conditional(x, sigma, class_labels, scale=None):
        seen.append((class_labels, scale))
        return net(x, sigma)
    labels = torch.arange(4)
    fastdiff.sample(conditional, latents, labels, solver="dpm_adaptive", extra_args=dict(scale=2.0),
                    backend="reference")
    assert all(l is labels and s == 2.0 for l, s in seen)


ERRORS = [
    (dict(sigmas=[80.0, 1.0, 0.0]), ValueError, r"sigmas: solver='dpm_adaptive' chooses its own steps"),
    (dict(num_steps=10), ValueError, r"num_steps: solver='dpm_adaptive' chooses its own steps.*num_steps=10"),
    (dict(rho=5.0), ValueError, r"rho: .*rho=5.0 would be ignored"),
    (dict(cuda_graph=True), ValueError, r"cuda_graph: solver='dpm_adaptive' cannot be captured in a CUDA graph: "
                                        r"it reads each step's error norm back to the host"),
    (dict(reuse_buffers=True), ValueError, r"reuse_buffers"),
    (dict(order=4), ValueError, r"order: expected 2 \(DPM-Solver-12\) or 3 \(DPM-Solver-23\).*got 4"),
    (dict(order=1), ValueError, r"order: expected 2 .* got 1"),
    (dict(S_churn=1.0), ValueError, r"S_churn: solver='dpm_adaptive' takes no churn"),
    (dict(eta=-0.5), ValueError, r"eta: must be >= 0"),
    (dict(adaptive=dict(rtol=-0.1)), ValueError, r"adaptive\['rtol'\]: must be >= 0.0, got -0.1"),
    (dict(adaptive=dict(atol=0.0)), ValueError, r"adaptive\['atol'\]: must be > 0, got 0.0"),
    (dict(adaptive=dict(h_init=float("inf"))), ValueError, r"adaptive\['h_init'\]: expected a finite number"),
    (dict(adaptive=dict(accept_safety=1.5)), ValueError, r"adaptive\['accept_safety'\]: expected a number in "
                                                         r"\(0, 1\].*got 1.5"),
    (dict(adaptive=dict(icoeff=0.0)), ValueError, r"pcoeff \+ icoeff \+ dcoeff must be > 0"),
    (dict(adaptive=dict(rtol="big")), TypeError, r"adaptive\['rtol'\]: expected a real number, got 'big'"),
    (dict(adaptive=dict(tolerance=0.1)), TypeError, r"adaptive: 'tolerance' is not a setting of "
                                                    r"solver='dpm_adaptive'.*rtol, atol, h_init, pcoeff, icoeff, "
                                                    r"dcoeff, accept_safety"),
    (dict(adaptive=0.05), TypeError, r"adaptive: expected a dict"),
    (dict(seeds=[1, 2, 3, 4], noise_sampler=lambda s, t: s), ValueError, r"noise_sampler: it gives every noise"),
    (dict(init=torch.zeros(4, 6), strength=0.5), ValueError, r"init: img2img runs the last part of a fixed schedule"),
    (dict(sigma_min=0.0), ValueError, r"sigma_min: must be > 0"),
    (dict(sigma_min=5.0, sigma_max=1.0), ValueError, r"sigma_min"),
]


@pytest.mark.parametrize("kwargs,error,match", ERRORS, ids=[str(list(e[0])) for e in ERRORS])
def test_errors(kwargs, error, match):
    net, latents = mixture_problem()
    with pytest.raises(error, match=match):
        fastdiff.sample(net, latents, solver="dpm_adaptive", backend="reference", **kwargs)


def test_adaptive_belongs_to_dpm_adaptive_only():
    net, latents = mixture_problem()
    for solver in ("heun", "dpmpp_2m", "lms"):
        with pytest.raises(ValueError, match=rf"adaptive: only solver='dpm_adaptive' takes adaptive .*"
                                             rf"solver='{solver}'"):
            fastdiff.sample(net, latents, solver=solver, adaptive=dict(rtol=0.1), backend="reference")


def test_keyword_errors_name_the_keyword():
    net, latents = mixture_problem()
    with pytest.raises(ValueError, match=r"^rtol: must be >= 0.0, got -1.0"):
        sample_dpm_adaptive(net, latents, rtol=-1.0, backend="reference")


def test_no_plan_and_no_graph():
    net, latents = mixture_problem()
    with pytest.raises(ValueError, match=r"solver: 'dpm_adaptive' chooses its steps while it runs"):
        fastdiff.plan_steps(net, solver="dpm_adaptive")
    with pytest.raises(ValueError, match=r"solver: 'dpm_adaptive' chooses its steps while it runs"):
        fastdiff.GraphedSampler(net, latents, solver="dpm_adaptive", graph="emulated")


def test_nonfinite_stops_the_loop_and_is_reported():
    net, latents = mixture_problem()

    def breaks_below_one(x, sigma):
        out = net(x, sigma)
        return out * float("nan") if float(sigma[0]) < 1.0 else out
    with pytest.warns(RuntimeWarning, match=r"attempt \d+ .*error norm is nan, so no step size can follow"):
        x, info = sample_dpm_adaptive(breaks_below_one, latents, backend="reference")
    assert x.isnan().all() and info["n_accept"] > 0
    with pytest.raises(FloatingPointError, match="error norm is nan"):
        fastdiff.sample(breaks_below_one, latents, solver="dpm_adaptive", backend="reference", nonfinite="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastdiff.sample(breaks_below_one, latents, solver="dpm_adaptive", backend="reference", nonfinite="ignore")
    bad = latents.clone()
    bad[0, 0] = float("inf")
    with pytest.warns(RuntimeWarning, match="already in the latents"):
        fastdiff.sample(net, bad, solver="dpm_adaptive", backend="reference")
    with pytest.raises(FloatingPointError, match=r"after the noise of its accepted step .* Check the noise"):
        fastdiff.sample(net, latents, solver="dpm_adaptive", backend="reference", eta=1.0, nonfinite="raise",
                        noise_sampler=lambda s, t: torch.full_like(latents, float("nan")))
