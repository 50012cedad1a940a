"""solver="unipc" (fastdiff.sampling.programs.unipc; docs/formulas.md#unipc) against diffusers' own
UniPCMultistepScheduler loop, against the Gaussian-mixture oracle, and its errors.

1. The loops: the same latents through diffusers' loop (its defaults: data prediction, "bh2", the corrector on every
   step, lower_order_final, final_sigmas_type "zero") and through fastdiff.sample(from_diffusers(unet, scheduler),
   sigmas=scheduler.sigmas, solver="unipc", order=solver_order) agree to float32 precision: max |fastdiff -
   diffusers| <= LOOP_RTOL max |diffusers|, as in tests/test_diffusers.py (measured: <= 1.3e-6). Tiny random-weight
   UNets, nothing downloaded. Negative controls: diffusers without its corrector or with another order, and
   fastdiff's program with one coefficient off by 1%, miss by more than 10 LOOP_RTOL.
2. The program: one network evaluation per step, each state update one combine of at most four stored tensors,
   the orders of diffusers' warm-up and lower_order_final, and every update affine (its weights sum to 1).
3. The oracle: closer to the exact probability-flow solution than Euler at the same steps, and converging at the
   rates of UniPC-p (p + 1 from the corrector).
4. Errors: eta, churn, an order outside 1..3, a repeated level.
"""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import fastdiff
from fastdiff.sampling import SampleOptions, programs
from fastdiff.sampling.program_loop import ProgramLoop
from fastdiff.sampling.programs import Combine, Eval, Move
from fastdiff.testing import fitted_slope, rk4_probability_flow

diffusers = pytest.importorskip("diffusers")
from diffusers import UniPCMultistepScheduler  # noqa: E402

# diffusers' schedulers call np.array on torch tensors, which numpy 2 reports as deprecated: their noise, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# The compiled backends get the op `combine` on another branch; until that is merged, only the reference runs the
# solver programs. After the merge this becomes ["reference", *compiled backends] with no other change.
BACKENDS = ["reference", "cpu"]  # (triton: covered by test_programs and test_combine)

LOOP_RTOL = 1e-5
F64 = torch.float64


# --------------------------------------------------------------------------------------------------------
# A tiny model and diffusers' own loop (as in tests/test_diffusers.py).
# --------------------------------------------------------------------------------------------------------



def noise(*shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def diffusers_loop(unet, scheduler, latents, steps) -> torch.Tensor:
    """diffusers' denoising loop, as its pipelines write it."""
    scheduler.set_timesteps(steps)
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(unet(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| over max |expected|."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


def fastdiff_like_diffusers(unet, scheduler, latents, order, backend) -> torch.Tensor:
    """fastdiff.sample over the scheduler's sigmas (after set_timesteps), from its start x_T = latents in VP units,
    which is latents * sqrt(1 + sigma_max^2) in EDM's. diffusers' UniPC hands the UNet integer time steps (rounded
    from the Karras levels, whose sigmas it keeps unrounded): quantize="timestep" does the same (at the default
    spacing the levels sit at integer time steps, so it changes nothing there)."""
    D = fastdiff.from_diffusers(unet, scheduler, quantize="timestep")
    sigmas = scheduler.sigmas
    assert sigmas.dtype == torch.float32
    return fastdiff.sample(D, latents, sigmas=sigmas, solver="unipc", order=order, backend=backend,
                           start_scale=(1 + float(sigmas[0]) ** 2) ** 0.5)


# --------------------------------------------------------------------------------------------------------
# 1. The loops.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps", [8, 20])
@pytest.mark.parametrize("spacing", ["linspace", "karras"])
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_unipc_matches_diffusers(unet, prediction_type, order, spacing, steps, backend):
    """fastdiff's unipc is diffusers' UniPCMultistepScheduler(solver_order=order) to float32 precision, with its
    default time steps ("linspace") and with Karras sigmas, below and above 15 steps (lower_order_final applies at
    any step count in UniPC: the last step is first order and the one before at most second)."""
    scheduler = UniPCMultistepScheduler(prediction_type=prediction_type, solver_order=order,
                                        use_karras_sigmas=spacing == "karras")
    assert scheduler.config.predict_x0 and scheduler.config.solver_type == "bh2"
    assert scheduler.config.lower_order_final and scheduler.config.final_sigmas_type == "zero"
    latents = noise(2, 3, 8, 8)
    expected = diffusers_loop(unet, scheduler, latents, steps)
    assert float(scheduler.sigmas[-1]) == 0 and len(scheduler.timesteps) == steps
    actual = fastdiff_like_diffusers(unet, scheduler, latents, order, backend)
    assert actual.dtype == torch.float32 and torch.isfinite(expected).all()
    error = relative_error(actual, expected)
    print(f"unipc {prediction_type} order {order} {spacing} {steps} steps: max relative difference {error:.3g}")
    assert error <= LOOP_RTOL, f"max relative difference {error:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_unipc_ending_at_sigma_min(unet, prediction_type, backend):
    """final_sigmas_type "sigma_min": the last step lands on the lowest level instead of 0, a first-order UniP step
    from a corrected state (not the step onto D); diffusers returns that state in VP units, x / sqrt(1 + s^2)."""
    scheduler = UniPCMultistepScheduler(prediction_type=prediction_type, final_sigmas_type="sigma_min")
    latents = noise(2, 3, 8, 8)
    expected = diffusers_loop(unet, scheduler, latents, 8)
    sigma_min = float(scheduler.sigmas[-1])
    assert sigma_min > 0
    actual = fastdiff_like_diffusers(unet, scheduler, latents, None, backend)
    assert relative_error(actual / (1 + sigma_min**2) ** 0.5, expected) <= LOOP_RTOL


def with_corrector_weight_scaled(program, factor: float):
    """The program with every corrector's weight on the new result D (rho_last B(h)) times `factor`, the change
    taken from D1's weight so that each update stays affine: a perturbed coefficient."""
    steps = []
    for step in program.steps:
        changed = []
        for op in step:
            if isinstance(op, Combine) and op.dst == "xp":
                a, w_new, w_prev, *rest = op.coeffs
                op = dataclasses.replace(op, coeffs=(a, w_new * factor, w_prev - w_new * (factor - 1), *rest))
            changed.append(op)
        steps.append(tuple(changed))
    return dataclasses.replace(program, steps=tuple(steps))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("steps", [8, 20])
def test_a_changed_solver_fails_the_tolerance(unet, prediction_type, steps):
    """Negative controls, against fastdiff's default unipc (within LOOP_RTOL of diffusers'): diffusers with its
    corrector off on every step, or with order 3 instead of 2, ends more than 10 LOOP_RTOL away (measured: >= 1.7e-3);
    so does fastdiff's program with the corrector's weight on the new result off by 1% (measured: >= 2e-4), run
    through the same loop."""
    latents = noise(2, 3, 8, 8)
    scheduler = UniPCMultistepScheduler(prediction_type=prediction_type)
    reference = diffusers_loop(unet, scheduler, latents, steps)
    actual = fastdiff_like_diffusers(unet, scheduler, latents, None, BACKENDS[0])
    assert relative_error(actual, reference) <= LOOP_RTOL
    for changed in (dict(disable_corrector=list(range(steps))), dict(solver_order=3)):
        other = diffusers_loop(unet, UniPCMultistepScheduler(prediction_type=prediction_type, **changed), latents,
                               steps)
        assert relative_error(actual, other) > 10 * LOOP_RTOL, changed

    D = fastdiff.from_diffusers(unet, scheduler, quantize="timestep")
    t = scheduler.sigmas.double().tolist()
    program = dataclasses.replace(programs.unipc(t, 2), start_scale=(1 + t[0] ** 2) ** 0.5)
    for factor, close in ((1.0, True), (1.01, False)):
        loop = ProgramLoop(D, with_corrector_weight_scaled(program, factor), latents, torch.float32,
                           backend=BACKENDS[0])
        error = relative_error(loop.run(latents), reference)
        assert (error <= LOOP_RTOL) if close else (error > 10 * LOOP_RTOL), (factor, error)


# --------------------------------------------------------------------------------------------------------
# 2. The program.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, order, expected", [
    (8, 2, [1, 2, 2, 2, 2, 2, 2, 1]),
    (20, 2, [1] + [2] * 18 + [1]),
    (8, 3, [1, 2, 3, 3, 3, 3, 2, 1]),
    (3, 3, [1, 2, 1]),
    (1, 2, [1]),
])
def test_orders_are_diffusers_warm_up_and_lower_order_final(steps, order, expected):
    assert programs.unipc_orders(steps, order) == expected


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("to_zero", [True, False])
def test_program_shape(order, to_zero):
    """One evaluation per step; step 0 keeps its state as the corrected one (a Move), every later step corrects it
    (one combine of the previous predictor's order + 1 results) and predicts (one combine of this step's order);
    a step to 0 is the Move onto D. Every combine reads at most four results, and is affine."""
    t = fastdiff.karras_sigmas(9).tolist()
    if not to_zero:
        t = t[:-1]
    program = programs.unipc(t, order)
    N = len(t) - 1
    orders = programs.unipc_orders(N, order)
    assert program.nfe == N and program.num_steps == N and not program.adds_noise()
    assert program.rotate == (("D", "D1", "D2", "D3"),)
    for i, step in enumerate(program.steps):
        assert step[0] == Eval("D", "x", t[i])
        if to_zero and i == N - 1:
            assert step[1:] == (Move("x", "D"),)
            continue
        corrector, predictor = step[1:]
        if i == 0:
            assert corrector == Move("xp", "x")
        else:
            assert (corrector.dst, corrector.src) == ("xp", "xp")
            assert corrector.history == ("D", "D1", "D2", "D3")[:orders[i - 1] + 1]
        assert (predictor.dst, predictor.src) == ("x", "xp")
        assert predictor.history == ("D", "D1", "D2")[:orders[i]]
        for op in step[1:]:
            if isinstance(op, Combine):
                a, *weights, n = op.coeffs
                assert n == 0 and op.noise is None and len(op.history) <= 4
                assert math.isclose(a + sum(weights), 1.0, rel_tol=0, abs_tol=1e-12), op


def test_phi_terms_series_and_recursion_agree():
    """_phi_terms sums g_k = sum_(j > k) hh^(j - k) / j! as a series below |hh| = 1 and by the recursion above;
    on either side of the switch both give the same values, and g_1 = (e^hh - 1 - hh) / hh."""
    for hh in (-0.999, -1.001, 0.999, 1.001, -0.3, -2.5):
        g = programs._phi_terms(hh, 3)
        assert math.isclose(g[0], (math.expm1(hh) - hh) / hh, rel_tol=1e-13)
        assert math.isclose(g[1], (math.expm1(hh) - hh - hh**2 / 2) / hh**2, rel_tol=1e-12)
        assert math.isclose(g[2], (math.expm1(hh) - hh - hh**2 / 2 - hh**3 / 6) / hh**3, rel_tol=1e-11)
    hh = -1e-4  # g_k = hh / (k + 1)! (1 + hh / (k + 2) + ...): no cancellation left to lose digits to
    for g, k in zip(programs._phi_terms(hh, 3), (1, 2, 3)):
        assert math.isclose(g, hh / math.factorial(k + 1) * (1 + hh / (k + 2) + hh**2 / ((k + 2) * (k + 3))),
                            rel_tol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_callback_sees_each_step_once(backend):
    """The callback runs once per step, at the predicted state the network is evaluated at."""
    mix = fastdiff.GaussianMixture.ring()
    seen = []
    fastdiff.sample(mix, noise(4, 2), num_steps=6, solver="unipc", backend=backend,
                    callback=lambda info: seen.append((info["i"], info["sigma"], info["sigma_hat"])))
    t = fastdiff.plan_steps(mix, num_steps=6).t
    assert seen == [(i, t[i], t[i]) for i in range(6)]


# --------------------------------------------------------------------------------------------------------
# 3. The Gaussian-mixture oracle.
# --------------------------------------------------------------------------------------------------------

SIGMA_MAX, SIGMA_MIN = 80.0, 0.002


@pytest.fixture(scope="module")
def ode_problem():
    """A 3-D mixture, 64 float64 latents and the exact PF-ODE endpoints at SIGMA_MIN (RK4, 2000 steps, converged to
    1e-9 per tests/test_oracle.py)."""
    mix = fastdiff.GaussianMixture(means=[[1.5, 0.5, 0.0], [-1.0, 0.0, 1.0], [0.0, -1.2, -0.5]],
                                   stds=[0.4, 0.3, 0.5], weights=[5.0, 3.0, 2.0])
    latents = torch.randn(64, mix.dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = rk4_probability_flow(mix.denoise, latents * SIGMA_MAX, SIGMA_MAX, SIGMA_MIN, 2000)
    return mix, latents, exact


def ode_error(problem, steps, backend="reference", **kwargs) -> float:
    """Max error against the exact endpoint after `steps` steps of the Karras schedule ending at SIGMA_MIN."""
    mix, latents, exact = problem
    sigmas = fastdiff.karras_sigmas(steps + 1, SIGMA_MIN, SIGMA_MAX)[:-1]  # no step to 0
    out = fastdiff.sample(mix, latents, sigmas=sigmas, dtype=F64, backend=backend, **kwargs)
    return float((out - exact).abs().max())


@pytest.mark.parametrize("backend", ["reference"])  # a float64 problem: the reference path
def test_unipc_beats_euler_on_the_oracle(ode_problem, backend):
    """With the same network evaluations, unipc ends closer to the exact ODE solution than Euler (measured max
    errors: 0.33 against 0.47 at 10 steps, 0.048 against 0.26 at 20)."""
    for steps, factor in ((10, 1.0), (20, 0.25)):
        unipc = ode_error(ode_problem, steps, backend, solver="unipc")
        euler = ode_error(ode_problem, steps, backend, solver="euler")
        assert unipc < factor * euler, (steps, unipc, euler)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_convergence_order(ode_problem, order):
    """UniPC-p with its corrector converges faster than order p (measured slopes over 32, 64, 128 steps: 1.9, 2.7
    and 4.4 for p = 1, 2, 3; the last step, first order and uncorrected, is short near SIGMA_MIN)."""
    steps = [32, 64, 128]
    errors = [ode_error(ode_problem, n, solver="unipc", order=order) for n in steps]
    slope = fitted_slope(steps, errors)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert slope > order + 0.5, (slope, errors)


# --------------------------------------------------------------------------------------------------------
# 4. Errors.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(eta=0.5), r"eta: only the ancestral and SDE solvers .* solver='unipc' adds none"),
    (dict(S_churn=10.0), r"S_churn: solver='unipc' takes no churn \(it is a deterministic multistep"),
    (dict(S_noise=1.1), r"S_noise: solver='unipc' takes no churn"),
    (dict(order=4), r"order: expected 1, 2 or 3 for solver='unipc', got 4"),
    (dict(order=0), r"order: must be >= 1, got 0"),
])
def test_unipc_settings_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastdiff.sample(fastdiff.GaussianMixture.ring(), noise(2, 2), num_steps=4, solver="unipc",
                        backend="reference", **kwargs)


def test_order_belongs_to_lms_unipc_and_dpm_adaptive():
    with pytest.raises(ValueError, match=r"order: only solver='lms', 'unipc' .* and 'dpm_adaptive' .* take order, "
                                         r"got order=2 with solver='euler'"):
        SampleOptions(solver="euler", order=2)
    with pytest.raises(ValueError, match=r"order: expected 1, 2, 3 or 4 for solver='lms', got 5"):
        SampleOptions(solver="lms", order=5)
    assert SampleOptions(solver="unipc", order=3).order == 3


def test_a_repeated_level_is_an_error():
    """A net whose round_sigma maps two levels onto one makes a zero-length step, which UniPC's log-step ratios
    cannot divide by: an error naming the levels, not NaN."""
    mix = fastdiff.GaussianMixture.ring()

    def net(x, sigma):
        return mix.denoise(x, sigma)

    net.round_sigma = lambda sigma: torch.as_tensor(sigma).round()
    with pytest.raises(ValueError, match=r"sigmas: solver='unipc' needs strictly decreasing levels"):
        fastdiff.sample(net, noise(2, 2), sigmas=[3.2, 2.9, 1.0, 0.0], solver="unipc", backend="reference")
