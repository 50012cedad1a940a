"""fastdiff.from_diffusers against diffusers itself (installed with the test extra; nothing is downloaded: every model
is a tiny random-weight UNet built from a config after seeding torch).

1. The denoiser: D(x; sigma) is the x_0 prediction diffusers' own Euler step makes from the same UNet output, for
   epsilon, v_prediction and sample models; its time steps are diffusers' `_sigma_to_t`; its levels are the
   scheduler's sigmas bit for bit (any beta schedule, trained betas, zero terminal SNR).
2. The loops: the same latents, the adapter and the scheduler's sigmas give, through fastdiff.sample, what diffusers'
   own denoising loop gives (Euler, Heun, DPM-Solver++(2M), DDIM; epsilon and v; evenly spaced time steps and Karras
   sigmas), to float32 precision; and a tolerance check that a wrong time step would fail.
3. dtypes (bf16 and fp16 UNets, float64 states), keyword arguments and class labels, learned variance, errors, and
   `import fastdiff` without diffusers.

Float32 precision, here: max |fastdiff - diffusers| <= LOOP_RTOL * max |diffusers| over the final samples. The two
loops do the same arithmetic in a different order (e.g. x_next = D + (t_next/t)(x - D) against x + (x - D)/t *
(t_next - t)), so single roundings differ and are carried through the steps; and a Karras level's time step comes
from float32 sigmas here but from float64 ones in diffusers (one float32 ulp of t at most, checked below). The
differences measured are below 1e-6 of the result's scale; LOOP_RTOL = 1e-5 leaves a margin of 10 while still
failing a time step off by a few thousandths (a tiny UNet's output moves by ~3e-5 of its scale per 1e-3 of t: the
negative controls below show a rounded time step fails by more than 10 times LOOP_RTOL).
"""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import fastdiff
from fastdiff.adapters.diffusers import DiffusersDenoiser
from fastdiff.testing import assert_close, assert_equal, tiny_unet

from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       FlowMatchEulerDiscreteScheduler, HeunDiscreteScheduler, UNet2DConditionModel)

# diffusers' schedulers call np.array on torch tensors, which numpy 2 reports as deprecated: their noise, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

LOOP_RTOL = 1e-5
STEPS = 8
SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)  # Stable Diffusion's schedule


# --------------------------------------------------------------------------------------------------------
# Tiny models and diffusers' own loop.
# --------------------------------------------------------------------------------------------------------



def tiny_conditional_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 32),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=8, attention_head_dim=8).eval()


def noise(*shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def diffusers_loop(unet, scheduler, latents, steps=STEPS, **unet_kwargs) -> torch.Tensor:
    """diffusers' denoising loop, as its pipelines write it."""
    scheduler.set_timesteps(steps)
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        x = scheduler.step(unet(model_input, t, **unet_kwargs).sample, t, x).prev_sample
    return x


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| over max |expected|."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


# --------------------------------------------------------------------------------------------------------
# 1. The denoiser.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_denoiser_is_diffusers_x0_prediction(unet, prediction_type):
    """D(x; sigma) at each level of an Euler schedule is the pred_original_sample of diffusers' Euler step (EDM's
    variables: the state x is x_edm) from the UNet's output at that level's time step."""
    scheduler = EulerDiscreteScheduler(prediction_type=prediction_type, use_karras_sigmas=True)
    scheduler.set_timesteps(STEPS)
    D = fastdiff.from_diffusers(unet, scheduler)
    x = noise(2, 3, 8, 8) * 3
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            sigma = scheduler.sigmas[i]
            output = unet(scheduler.scale_model_input(x * sigma, t), t).sample
            expected = scheduler.step(output, t, x * sigma).pred_original_sample
            actual = D(x * sigma, sigma.expand(2))
            assert actual.dtype == torch.float32
            assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()),
                         name=f"{prediction_type} D at sigma {float(sigma):.4g}")


def test_v_prediction_conversion_from_the_vp_relations(unet):
    """D for a v model is x_0 = sqrt(a) x_t - sqrt(1 - a) v with x_t = sqrt(a) x_edm (written here in float64)."""
    scheduler = DDIMScheduler(prediction_type="v_prediction")
    D = fastdiff.from_diffusers(unet, scheduler)
    for t in (0, 250, 999):
        a = float(scheduler.alphas_cumprod[t])
        sigma = float(D.train_sigmas[t])
        x_edm = noise(1, 3, 8, 8, seed=t).double() * (1 + sigma)
        x_t = (a**0.5 * x_edm).float()
        with torch.no_grad():
            v = unet(x_t, torch.tensor([float(t)])).sample.double()
            actual = D(x_edm, torch.tensor([sigma], dtype=torch.float64))
        expected = a**0.5 * (a**0.5 * x_edm) - (1 - a) ** 0.5 * v
        assert actual.dtype == torch.float64
        assert_close(actual, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()), name=f"v at t={t}")


@pytest.mark.parametrize("config", [dict(), SD_BETAS, dict(beta_schedule="squaredcos_cap_v2"),
                                    dict(trained_betas=np.linspace(1e-4, 0.02, 1000) ** 1.2)],
                         ids=["linear", "scaled_linear", "squaredcos_cap_v2", "trained_betas"])
def test_levels_are_the_schedulers_sigmas(unet, config):
    """train_sigmas[t] is, bit for bit, the sigma diffusers makes for time step t; sigma_min and sigma_max are its
    ends, the table stays float64 (module.half() leaves it alone), and integer time steps come back exactly."""
    scheduler = EulerDiscreteScheduler(timestep_spacing="trailing", **config)
    D = fastdiff.from_diffusers(unet, scheduler)
    assert D.train_sigmas.dtype == torch.float64 and D.num_train_timesteps == 1000
    assert_equal(D.train_sigmas.float(), scheduler.sigmas[:-1].flip(0), name="levels")
    assert D.sigma_min == float(D.train_sigmas[0]) and D.sigma_max == float(D.train_sigmas[-1])
    scheduler.set_timesteps(STEPS)  # "trailing": integer time steps, at the levels themselves
    half = fastdiff.from_diffusers(tiny_unet(), scheduler).half()
    assert half.unet.dtype == torch.float16 and half.train_sigmas.dtype == torch.float64
    assert_equal(D.timestep(scheduler.sigmas[:-1]).float(), scheduler.timesteps, name="time steps at levels")


@pytest.mark.parametrize("config", [dict(), SD_BETAS, dict(beta_schedule="squaredcos_cap_v2")],
                         ids=["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("steps", [5, 30, 100])
def test_time_steps_are_diffusers_sigma_to_t(unet, config, steps):
    """Between levels (Karras sigmas), t(sigma) is diffusers' `_sigma_to_t` (ln sigma interpolated) in float32, to
    one float32 ulp of t = 999 (6.1e-5): diffusers interpolates from the float64 Karras sigma, the adapter from the
    float32 one fastdiff.sample hands it. A linear interpolation in sigma would be off by thousandths."""
    scheduler = EulerDiscreteScheduler(use_karras_sigmas=True, **config)
    scheduler.set_timesteps(steps)
    D = fastdiff.from_diffusers(unet, scheduler)
    t = D.timestep(scheduler.sigmas[:-1]).float()
    ulp = float(np.spacing(np.float32(999)))
    assert float((t - scheduler.timesteps).abs().max()) <= ulp, (t - scheduler.timesteps).abs().max()
    assert t.dtype == torch.float32


def test_quantize_timestep_is_dpm_solvers_rounding(unet):
    """DPMSolverMultistepScheduler with Karras sigmas rounds its time steps but keeps its sigmas:
    quantize="timestep" gives the UNet those rounded time steps and leaves the schedule alone."""
    scheduler = DPMSolverMultistepScheduler(use_karras_sigmas=True)
    scheduler.set_timesteps(20)
    D = fastdiff.from_diffusers(unet, scheduler, quantize="timestep")
    assert_equal(D.timestep(scheduler.sigmas[:-1]).long(), scheduler.timesteps, name="rounded time steps")
    assert_equal(D.round_sigma(scheduler.sigmas), scheduler.sigmas, name="round_sigma")


def test_quantize_true_snaps_the_schedule(unet):
    """quantize=True: round_sigma snaps to the nearest level (in ln sigma), fastdiff.sample's plan visits levels only,
    and at a level D is the same as without quantizing."""
    scheduler = EulerDiscreteScheduler()
    D = fastdiff.from_diffusers(unet, scheduler, quantize=True)
    levels = D.train_sigmas
    sigma = torch.tensor([0.5, 3.0, 80.0], dtype=torch.float64)
    snapped = D.round_sigma(sigma)
    nearest = (sigma.log()[:, None] - levels.log()[None]).abs().argmin(dim=1)
    assert_equal(snapped, levels[nearest], name="round_sigma")
    plan = fastdiff.plan_steps(D, num_steps=6)
    assert all(float(levels[(levels - t).abs().argmin()]) == t for t in plan.t[:-1])
    x = noise(2, 3, 8, 8) * float(snapped[1])
    with torch.no_grad():
        assert_equal(D(x, snapped[1].float()), fastdiff.from_diffusers(unet, scheduler)(x, snapped[1].float()))
    assert_equal(fastdiff.from_diffusers(unet, scheduler).round_sigma(sigma), sigma, name="identity without quantize")


# --------------------------------------------------------------------------------------------------------
# 2. The loops.
# --------------------------------------------------------------------------------------------------------

def sample_like_diffusers(D, scheduler, latents, solver, *, vp_start: bool, sigmas=None) -> torch.Tensor:
    """fastdiff.sample over the scheduler's sigmas, from diffusers' starting point: start_scale is init_noise_sigma
    for Euler and Heun (in EDM's units already), sqrt(1 + sigma_max^2) for DPM-Solver and DDIM (whose x_T = latents
    is in VP units); see docs/sampling.md#models-from-diffusers."""
    sigmas = scheduler.sigmas if sigmas is None else sigmas
    start_scale = (1 + float(sigmas[0]) ** 2) ** 0.5 if vp_start else scheduler.init_noise_sigma
    return fastdiff.sample(D, latents, sigmas=sigmas, solver=solver, start_scale=start_scale)


LOOPS = {  # name: (scheduler class, its settings, fastdiff solver, the schedule: "levels" or "karras")
    "euler": (EulerDiscreteScheduler, dict(timestep_spacing="trailing"), "euler"),
    "euler-karras": (EulerDiscreteScheduler, dict(use_karras_sigmas=True), "euler"),
    "heun": (HeunDiscreteScheduler, dict(timestep_spacing="trailing"), "heun"),
    "heun-karras": (HeunDiscreteScheduler, dict(use_karras_sigmas=True), "heun"),
    "heun-leading": (HeunDiscreteScheduler, dict(timestep_spacing="leading"), "heun"),  # init_noise_sigma != s0
    "dpmpp_2m": (DPMSolverMultistepScheduler, dict(timestep_spacing="trailing"), "dpmpp_2m"),
    "dpmpp_2m-karras": (DPMSolverMultistepScheduler, dict(use_karras_sigmas=True), "dpmpp_2m"),
    "ddim": (DDIMScheduler, dict(clip_sample=False), "ddim"),
}


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("loop", list(LOOPS))
def test_loop_matches_diffusers(unet, loop, prediction_type):
    """The same latents through diffusers' loop and through fastdiff.sample(from_diffusers(unet, scheduler),
    sigmas=scheduler.sigmas) agree to float32 precision.

    Heun: HeunDiscreteScheduler.sigmas repeats every inner level (the Euler point and the corrector share it:
    s0, s1, s1, ..., s_(N-1), s_(N-1), 0); solver="heun" takes them as they are, as the N-step schedule.
    DPM-Solver: the Karras time steps are rounded (quantize="timestep"); the first and last steps are first order in
    both (lower_order_final, final_sigmas_type "zero"). DDIM (eta = 0, clip_sample off, as fastdiff does not clip):
    it has no sigmas; its steps go from t_i to t_i - T / N, which with its default "leading" spacing is the next
    listed time step and after the last one a = 1, so the schedule is the levels of its time steps, then 0."""
    cls, settings, solver = LOOPS[loop]
    scheduler = cls(prediction_type=prediction_type, **settings)
    latents = noise(2, 3, 8, 8)
    expected = diffusers_loop(unet, scheduler, latents)
    D = fastdiff.from_diffusers(unet, scheduler, quantize="timestep" if loop == "dpmpp_2m-karras" else False)
    if cls is DDIMScheduler:
        assert scheduler.config.timestep_spacing == "leading" and scheduler.config.set_alpha_to_one
        sigmas = torch.cat([D.train_sigmas[scheduler.timesteps], torch.zeros(1, dtype=torch.float64)])
    else:
        sigmas = scheduler.sigmas
        assert sigmas.dtype == torch.float32 and float(sigmas[-1]) == 0  # as they are after set_timesteps
    actual = sample_like_diffusers(D, scheduler, latents, solver, sigmas=sigmas,
                                   vp_start=cls in (DPMSolverMultistepScheduler, DDIMScheduler))
    assert actual.dtype == torch.float32 and torch.isfinite(expected).all()
    error = relative_error(actual, expected)
    assert error <= LOOP_RTOL, f"{loop} {prediction_type}: max relative difference {error:.3g}"


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_wrong_time_step_fails_the_tolerance(unet, prediction_type):
    """Negative controls: with Karras sigmas, the nearest trained time step instead of the interpolated one (Euler),
    or the interpolated one instead of DPM-Solver's rounded one, misses diffusers by more than 10 LOOP_RTOL."""
    latents = noise(2, 3, 8, 8)
    euler = EulerDiscreteScheduler(prediction_type=prediction_type, use_karras_sigmas=True)
    expected = diffusers_loop(unet, euler, latents)
    rounded = sample_like_diffusers(fastdiff.from_diffusers(unet, euler, quantize="timestep"), euler, latents, "euler",
                                    vp_start=False)
    assert relative_error(rounded, expected) > 10 * LOOP_RTOL
    dpm = DPMSolverMultistepScheduler(prediction_type=prediction_type, use_karras_sigmas=True)
    expected = diffusers_loop(unet, dpm, latents)
    interpolated = sample_like_diffusers(fastdiff.from_diffusers(unet, dpm), dpm, latents, "dpmpp_2m", vp_start=True)
    assert relative_error(interpolated, expected) > 10 * LOOP_RTOL


@pytest.mark.parametrize("options", [dict(euler_at_final=True), dict(lower_order_final=False)])
def test_dpm_solver_final_step_options(unet, options):
    """euler_at_final and lower_order_final change nothing with final_sigmas_type "zero": the step into 0 is first
    order either way, as in fastdiff (with 20 steps, where lower_order_final alone would not apply)."""
    scheduler = DPMSolverMultistepScheduler(timestep_spacing="trailing", **options)
    latents = noise(2, 3, 8, 8)
    expected = diffusers_loop(unet, scheduler, latents, steps=20)
    actual = sample_like_diffusers(fastdiff.from_diffusers(unet, scheduler), scheduler, latents, "dpmpp_2m",
                                   vp_start=True)
    assert relative_error(actual, expected) <= LOOP_RTOL


@pytest.mark.parametrize("steps, options", [(20, {}), (STEPS, dict(lower_order_final=False))])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_dpm_solver_ending_at_sigma_min(unet, prediction_type, steps, options):
    """final_sigmas_type "sigma_min" ends at the lowest level instead of 0: diffusers returns that state in VP units,
    x / sqrt(1 + sigma_min^2). Its last step is then second order (from 15 steps on, or with lower_order_final off),
    as dpmpp_2m's step to a level above 0 is."""
    scheduler = DPMSolverMultistepScheduler(prediction_type=prediction_type, timestep_spacing="trailing",
                                            final_sigmas_type="sigma_min", **options)
    latents = noise(2, 3, 8, 8)
    expected = diffusers_loop(unet, scheduler, latents, steps=steps)
    sigma_min = float(scheduler.sigmas[-1])
    assert sigma_min > 0
    actual = sample_like_diffusers(fastdiff.from_diffusers(unet, scheduler), scheduler, latents, "dpmpp_2m",
                                   vp_start=True)
    assert relative_error(actual / (1 + sigma_min**2) ** 0.5, expected) <= LOOP_RTOL


def test_euler_leading_spacing_starts_at_init_noise_sigma(unet):
    """With "leading" spacing Euler starts at latents * sqrt(sigma_max^2 + 1) (its init_noise_sigma), not at
    latents * sigma_max; with the latents scaled to that start, the loops agree."""
    scheduler = EulerDiscreteScheduler(prediction_type="v_prediction", timestep_spacing="leading")
    latents = noise(2, 3, 8, 8)
    expected = diffusers_loop(unet, scheduler, latents)
    assert float(scheduler.init_noise_sigma) != float(scheduler.sigmas[0])
    actual = sample_like_diffusers(fastdiff.from_diffusers(unet, scheduler), scheduler, latents, "euler",
                                   vp_start=False)
    assert relative_error(actual, expected) <= LOOP_RTOL


@pytest.mark.parametrize("settings", [dict(timestep_spacing="trailing"), dict(use_karras_sigmas=True)],
                         ids=["trailing", "karras"])
def test_zero_terminal_snr(unet, settings):
    """rescale_betas_zero_snr (a_(T-1) = 0): the top level is diffusers' stand-in, sigma = 4096, finite; DDIM (which
    keeps the 0) and Euler (which already replaced it) give the same levels; a v model's loop matches Euler's."""
    scheduler = EulerDiscreteScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, **SD_BETAS,
                                       **settings)
    D = fastdiff.from_diffusers(unet, scheduler)
    ddim = fastdiff.from_diffusers(unet, DDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                                      **SD_BETAS))
    assert float(DDIMScheduler(rescale_betas_zero_snr=True, **SD_BETAS).alphas_cumprod[-1]) == 0.0
    assert D.zero_snr and ddim.zero_snr and D.sigma_max == ddim.sigma_max == pytest.approx(4096, rel=1e-6)
    assert_equal(D.train_sigmas, ddim.train_sigmas, name="levels")
    latents = noise(2, 3, 8, 8)
    expected = diffusers_loop(unet, scheduler, latents)
    actual = sample_like_diffusers(D, scheduler, latents, "euler", vp_start=False)
    assert relative_error(actual, expected) <= LOOP_RTOL


def test_zero_terminal_snr_below_the_stand_in(unet):
    """The linear schedule rescaled has a_998 = 4.2e-9 < 2^-24: the stand-in is then a_998^2 / a_997, so that the
    levels keep increasing and sigma_max stays finite."""
    scheduler = DDIMScheduler(rescale_betas_zero_snr=True)
    a = scheduler.alphas_cumprod.double()
    D = fastdiff.from_diffusers(unet, scheduler)
    assert float(a[-2]) < 2.0**-24
    assert bool((D.train_sigmas[1:] > D.train_sigmas[:-1]).all())
    stand_in = float(torch.tensor(float(a[-2] ** 2 / a[-3]), dtype=torch.float32))
    assert D.sigma_max == pytest.approx(((1 - stand_in) / stand_in) ** 0.5, rel=1e-6)
    with torch.no_grad():
        x = fastdiff.sample(D, noise(2, 3, 8, 8), num_steps=4, sigma_max=float("inf"))
    assert torch.isfinite(x).all()


# --------------------------------------------------------------------------------------------------------
# 3. dtypes, keyword arguments, labels, learned variance.
# --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_unet(dtype):
    """A bf16 or fp16 UNet gets its input in its dtype and the time steps in float32 (bf16 would round t = 999 to
    1000); D comes back in the state's dtype, close to the float32 UNet's; fastdiff.sample runs end to end."""
    reference = tiny_unet()
    low = tiny_unet().to(dtype)
    scheduler = EulerDiscreteScheduler(prediction_type="v_prediction")
    seen = {}
    low.register_forward_pre_hook(lambda module, args: seen.update(x=args[0].dtype, t=args[1]))
    D = fastdiff.from_diffusers(low, scheduler)
    x = noise(2, 3, 8, 8) * 5
    sigma = torch.tensor([5.0, 5.0])
    with torch.no_grad():
        actual = D(x, sigma)
        expected = fastdiff.from_diffusers(reference, scheduler)(x, sigma)
        sampled = fastdiff.sample(D, noise(2, 3, 8, 8), num_steps=3)
    assert seen["x"] == dtype and seen["t"].dtype == torch.float32
    assert actual.dtype == torch.float32 and sampled.dtype == torch.float32 and torch.isfinite(sampled).all()
    assert relative_error(actual, expected) < 3e-2


def test_float64_state(unet):
    """float64 latents give a float64 state and result; the UNet still runs in float32."""
    scheduler = EulerDiscreteScheduler(timestep_spacing="trailing")
    scheduler.set_timesteps(4)
    D = fastdiff.from_diffusers(unet, scheduler)
    latents = noise(2, 3, 8, 8)
    with torch.no_grad():
        x64 = fastdiff.sample(D, latents.double(), sigmas=scheduler.sigmas, solver="euler")
        x32 = fastdiff.sample(D, latents, sigmas=scheduler.sigmas, solver="euler")
    assert x64.dtype == torch.float64
    assert relative_error(x64, x32) < 1e-5


def test_keyword_arguments_go_to_the_unet():
    """encoder_hidden_states reach a UNet2DConditionModel (cast to a bf16 UNet's dtype); with_kwargs binds them for
    fastdiff.sample, whose loop then matches diffusers' conditional Euler loop."""
    unet = tiny_conditional_unet()
    scheduler = EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="trailing")
    D = fastdiff.from_diffusers(unet, scheduler)
    latents, context = noise(2, 4, 8, 8), noise(2, 5, 16, seed=2)
    sigma = torch.tensor([2.0, 2.0])
    with torch.no_grad():
        direct = D(latents * 2, sigma, encoder_hidden_states=context)
        bound = D.with_kwargs(encoder_hidden_states=context)
        assert_equal(bound(latents * 2, sigma), direct)
        assert_equal(D(latents * 2, sigma, encoder_hidden_states=context), direct)  # D itself is unchanged
        other = D(latents * 2, sigma, encoder_hidden_states=context.flip(0))
    assert relative_error(other, direct) > 1e-3  # the context matters
    expected = diffusers_loop(unet, scheduler, latents, encoder_hidden_states=context)
    actual = sample_like_diffusers(bound, scheduler, latents, "euler", vp_start=False)
    assert relative_error(actual, expected) <= LOOP_RTOL
    assert bound.sigma_max == D.sigma_max and bound.round_sigma is not None
    with torch.no_grad():
        low = fastdiff.from_diffusers(tiny_conditional_unet().to(torch.bfloat16), scheduler)
        assert low(latents * 2, sigma, encoder_hidden_states=context).dtype == torch.float32


def test_extra_args_reach_the_unet_without_a_closure():
    """fastdiff.sample(D, ..., extra_args={"encoder_hidden_states": emb}) passes them to every UNet call: the same
    result as D.with_kwargs(...) bit for bit, and diffusers' conditional loop to float32 precision."""
    unet = tiny_conditional_unet()
    scheduler = EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="trailing")
    D = fastdiff.from_diffusers(unet, scheduler)
    latents, context = noise(2, 4, 8, 8), noise(2, 5, 16, seed=2)
    expected = diffusers_loop(unet, scheduler, latents, encoder_hidden_states=context)
    actual = fastdiff.sample(D, latents, sigmas=scheduler.sigmas, solver="euler",
                             start_scale=scheduler.init_noise_sigma, extra_args={"encoder_hidden_states": context})
    bound = fastdiff.sample(D.with_kwargs(encoder_hidden_states=context), latents, sigmas=scheduler.sigmas,
                            solver="euler", start_scale=scheduler.init_noise_sigma)
    assert_equal(actual, bound)
    assert relative_error(actual, expected) <= LOOP_RTOL


class CountingUNet(torch.nn.Module):
    """A UNet that records the batch of every call."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.batches, self.config, self.dtype = unet, [], unet.config, unet.dtype

    def forward(self, sample, timestep, **kwargs):
        self.batches.append(sample.shape[0])
        return self.unet(sample, timestep, **kwargs)


@pytest.mark.parametrize("solver", ["euler", "dpmpp_2m"])
def test_guidance_by_uncond_args_is_the_two_call_cfg(solver):
    """guidance=w with uncond_args: one UNet call of 2B per evaluation ([cond; uncond] text embeddings), equal (to
    float32 precision: the batched convolutions round differently) to guidance written by hand with two calls,
    D_u + w (D_c - D_u); w = 1 is the conditional sampler and w = 0 the unconditional one, with B per call."""
    unet = CountingUNet(tiny_conditional_unet())
    scheduler = EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="trailing")
    D = fastdiff.from_diffusers(unet, scheduler)
    latents, cond, uncond = noise(2, 4, 8, 8), noise(2, 5, 16, seed=2), noise(2, 5, 16, seed=3)
    w, kw = 4.0, dict(num_steps=5, solver=solver)

    def two_calls(x, sigma):
        D_u = D(x, sigma, encoder_hidden_states=uncond)
        return D_u + w * (D(x, sigma, encoder_hidden_states=cond) - D_u)

    two_calls.sigma_min, two_calls.sigma_max, two_calls.round_sigma = D.sigma_min, D.sigma_max, D.round_sigma
    by_hand = fastdiff.sample(two_calls, latents, **kw)
    unet.batches.clear()
    guided = fastdiff.sample(D, latents, guidance=w, extra_args={"encoder_hidden_states": cond},
                             uncond_args={"encoder_hidden_states": uncond}, **kw)
    assert unet.batches == [4] * 5  # one call of 2B per evaluation
    assert relative_error(guided, by_hand) <= LOOP_RTOL
    assert relative_error(guided, fastdiff.sample(D, latents, extra_args={"encoder_hidden_states": cond}, **kw)) > 1e-3
    for weight, args in ((1.0, cond), (0.0, uncond)):
        unet.batches.clear()
        plain = fastdiff.sample(D, latents, extra_args={"encoder_hidden_states": args}, **kw)
        assert_equal(fastdiff.sample(D, latents, guidance=weight, extra_args={"encoder_hidden_states": cond},
                                     uncond_args={"encoder_hidden_states": uncond}, **kw), plain)
        assert set(unet.batches) == {2}


def test_class_labels_reach_the_unet():
    """fastdiff.sample's class_labels are the UNet's class_labels."""
    unet = tiny_unet(num_class_embeds=4)
    D = fastdiff.from_diffusers(unet, EulerDiscreteScheduler())
    x, sigma = noise(2, 3, 8, 8), torch.tensor([1.0, 1.0])
    labels = torch.tensor([1, 3])
    with torch.no_grad():
        expected = x - unet(x / 2**0.5, D.timestep(sigma).float(), class_labels=labels).sample
        assert_close(D(x, sigma, labels), expected)
        assert fastdiff.sample(D, x, labels, num_steps=2).shape == x.shape


def test_learned_variance_takes_the_first_half():
    """A UNet of a scheduler with variance_type "learned_range" returns 2C channels; D uses the first C, as
    diffusers' DPM-Solver does, and the loops agree."""
    unet = tiny_unet(out_channels=6)
    scheduler = DPMSolverMultistepScheduler(variance_type="learned_range", timestep_spacing="trailing")
    latents = noise(2, 3, 8, 8)
    expected = diffusers_loop(unet, scheduler, latents)
    actual = sample_like_diffusers(fastdiff.from_diffusers(unet, scheduler), scheduler, latents, "dpmpp_2m",
                                   vp_start=True)
    assert relative_error(actual, expected) <= LOOP_RTOL
    with pytest.raises(ValueError, match="unet: expected unet"):
        fastdiff.from_diffusers(unet, EulerDiscreteScheduler())(latents, 1.0)


def test_outputs_of_any_form_and_a_plain_callable():
    """A tensor, an object with .sample or a tuple; a plain callable and a scheduler-like object without diffusers'
    classes."""
    scheduler = types.SimpleNamespace(alphas_cumprod=torch.linspace(0.99, 0.01, 50),
                                      config={"prediction_type": "sample"})
    x = noise(2, 3)
    for wrap in (lambda y: y, lambda y: types.SimpleNamespace(sample=y), lambda y: (y,)):
        D = fastdiff.from_diffusers(lambda x_t, t: wrap(x_t * 2), scheduler)
        assert_close(D(x, 1.0), x / 2**0.5 * 2)
    assert isinstance(D, DiffusersDenoiser) and isinstance(D, torch.nn.Module)
    assert "prediction_type='sample'" in repr(D)


# --------------------------------------------------------------------------------------------------------
# Errors and the import.
# --------------------------------------------------------------------------------------------------------

def test_errors_name_the_argument_and_what_is_accepted(unet):
    with pytest.raises(TypeError, match="scheduler: .*alphas_cumprod.*FlowMatchEulerDiscreteScheduler has none"):
        fastdiff.from_diffusers(unet, FlowMatchEulerDiscreteScheduler())
    with pytest.raises(ValueError, match="prediction_type: expected one of 'epsilon', 'v_prediction', 'sample', got "
                                         "'flow_prediction' .flow matching"):
        fastdiff.from_diffusers(unet, DPMSolverMultistepScheduler(prediction_type="flow_prediction"))
    with pytest.raises(ValueError, match="use_flow_sigmas: expected False"):
        fastdiff.from_diffusers(unet, DPMSolverMultistepScheduler(use_flow_sigmas=True))
    with pytest.raises(ValueError, match="timestep_type: expected 'discrete'.*'continuous'"):
        fastdiff.from_diffusers(unet, EulerDiscreteScheduler(timestep_type="continuous",
                                                             prediction_type="v_prediction"))
    with pytest.raises(ValueError, match="quantize: expected False, True or 'timestep', got 'nearest'"):
        fastdiff.from_diffusers(unet, EulerDiscreteScheduler(), quantize="nearest")
    with pytest.raises(TypeError, match="unet: expected a diffusers model or a callable"):
        fastdiff.from_diffusers("unet", EulerDiscreteScheduler())
    fake = lambda table, **config: types.SimpleNamespace(alphas_cumprod=table, config=config)  # noqa: E731
    with pytest.raises(ValueError, match="scheduler: expected a diffusers scheduler whose config has a prediction"):
        fastdiff.from_diffusers(unet, fake(torch.linspace(0.9, 0.1, 10)))
    with pytest.raises(ValueError, match="alphas_cumprod: expected a strictly decreasing table .* at time step 1"):
        fastdiff.from_diffusers(unet, fake(torch.tensor([0.9, 0.5, 0.5, 0.1]), prediction_type="epsilon"))
    with pytest.raises(ValueError, match=r"alphas_cumprod: expected values in \(0, 1\).* got 1.0 at time step 0"):
        fastdiff.from_diffusers(unet, fake(torch.tensor([1.0, 0.5, 0.1]), prediction_type="epsilon"))
    with pytest.raises(ValueError, match="alphas_cumprod: expected a 1-D floating table"):
        fastdiff.from_diffusers(unet, fake(torch.tensor([3, 2, 1]), prediction_type="epsilon"))
    bad = fastdiff.from_diffusers(lambda x_t, t: "nothing",
                                  fake(torch.linspace(0.9, 0.1, 10), prediction_type="epsilon"))
    with pytest.raises(TypeError, match="unet: expected unet.x_t, t. to return a tensor.*got str"):
        bad(noise(2, 3), 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("kind", ["one", "list", "list of one", "none"])
def test_diffusers_latents_are_randn_tensors(kind, dtype):
    """diffusers_latents draws, bit for bit, what diffusers.utils.torch_utils.randn_tensor draws for a generator, a
    list of them (one per sample), a list of one (the whole batch from it) and None (torch's default generator)."""
    from diffusers.utils.torch_utils import randn_tensor

    shape = (3, 4, 8, 8)

    def generators():
        return {"one": torch.Generator().manual_seed(5), "none": None,
                "list": [torch.Generator().manual_seed(s) for s in (5, 6, 7)],
                "list of one": [torch.Generator().manual_seed(5)]}[kind]

    torch.manual_seed(1)
    expected = randn_tensor(shape, generator=generators(), device=torch.device("cpu"), dtype=dtype)
    torch.manual_seed(1)
    got = fastdiff.diffusers_latents(shape, generators(), dtype=dtype, device="cpu")
    assert got.dtype == dtype and torch.equal(got, expected)


def test_a_diffusers_seed_gives_the_diffusers_result(unet):
    """A pipeline's seed, its latents (diffusers_latents) and its start (start_scale=init_noise_sigma): the loop's
    result to float32 precision, with nothing converted by hand."""
    scheduler = EulerDiscreteScheduler(prediction_type="v_prediction", timestep_spacing="leading")
    latents = fastdiff.diffusers_latents((2, 3, 8, 8), [torch.Generator().manual_seed(s) for s in (0, 1)])
    expected = diffusers_loop(unet, scheduler, latents)
    actual = fastdiff.sample(fastdiff.from_diffusers(unet, scheduler), latents, sigmas=scheduler.sigmas,
                             solver="euler", start_scale=scheduler.init_noise_sigma)
    assert relative_error(actual, expected) <= LOOP_RTOL


@pytest.mark.parametrize("args, kwargs, error, match", [
    (((2, 3), "seed"), {}, TypeError, "generator: expected a torch.Generator, a list of them"),
    (((2, 3), [torch.Generator()] * 3), {}, ValueError, r"generator: expected one torch.Generator per sample \(2\)"),
    (((2, 3), [torch.Generator(), 1]), {}, TypeError, "generator: expected a torch.Generator, a list of them"),
    (((2, 3.0), None), {}, ValueError, r"shape: expected a tuple of non-negative ints \(batch, ...\), got \(2, 3.0\)"),
    (((2, 3), None), dict(dtype=torch.int64), TypeError, "dtype: expected a floating torch.dtype, got torch.int64"),
])
def test_diffusers_latents_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastdiff.diffusers_latents(*args, **kwargs)


def test_import_fastdiff_without_diffusers():
    """`import fastdiff` never imports diffusers, and the adapter works on diffusers-like objects without it."""
    code = ("import sys; sys.modules['diffusers'] = None\n"
            "import types, torch, fastdiff\n"
            "s = types.SimpleNamespace(alphas_cumprod=torch.linspace(0.99, 0.01, 20),\n"
            "                          config={'prediction_type': 'epsilon'})\n"
            "D = fastdiff.from_diffusers(lambda x, t: torch.zeros_like(x), s)\n"
            "print(tuple(fastdiff.sample(D, torch.randn(2, 3), num_steps=2).shape))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 3)"
    plain = subprocess.run([sys.executable, "-c", "import sys, fastdiff; print('diffusers' in sys.modules)"],
                           capture_output=True, text=True, timeout=120)
    assert plain.stdout.strip() == "False", plain.stderr
