"""fastdiff.sample(init=x0, strength=s): img2img against diffusers' own img2img steps, and on a Gaussian oracle.

diffusers' side is StableDiffusionImg2ImgPipeline's logic written out with the scheduler's own methods (nothing is
downloaded: the UNet is a tiny random-weight UNet2DModel built from a config): set_timesteps, the truncated time
steps of its get_timesteps (init_timestep = min(int(N strength), N), t_start = N - init_timestep, timesteps from
t_start * order, set_begin_index), add_noise at the first of them, then the denoising loop.
"""
from __future__ import annotations

import math

import pytest
import torch

import fastdiff
from fastdiff.rng import LATENTS_OFFSET, STREAMS
from fastdiff.sampling.img2img import steps_to_run

from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

STEPS = 8
LOOP_RTOL = 1e-5  # float32 precision, as tests/test_diffusers.py measures it (max |difference| / max |diffusers|)




def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def diffusers_img2img(unet, scheduler, x0, noise, strength, steps=STEPS):
    """StableDiffusionImg2ImgPipeline's steps, on latents x0: get_timesteps, add_noise, the loop."""
    scheduler.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    if len(timesteps) == 0:
        return x0
    x = scheduler.add_noise(x0, noise, timesteps[:1].repeat(x0.shape[0]))
    for t in timesteps:
        x = scheduler.step(unet(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x


def relative_error(actual, expected) -> float:
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


CASES = {  # name: (scheduler, its settings, fastdiff solver)
    "euler": (EulerDiscreteScheduler, dict(timestep_spacing="trailing"), "euler"),
    "euler-karras": (EulerDiscreteScheduler, dict(use_karras_sigmas=True), "euler"),
    "heun": (HeunDiscreteScheduler, dict(timestep_spacing="trailing"), "heun"),
    "dpmpp_2m": (DPMSolverMultistepScheduler, dict(timestep_spacing="trailing"), "dpmpp_2m"),
}


@pytest.mark.parametrize("strength", [1.0, 0.75, 0.3])
@pytest.mark.parametrize("case", list(CASES))
def test_matches_diffusers_img2img(unet, case, strength):
    """The same x0, noise and schedule through diffusers' img2img steps and fastdiff.sample(init=, strength=)."""
    cls, settings, solver = CASES[case]
    scheduler = cls(prediction_type="epsilon", **settings)
    x0, noise = randn(2, 3, 8, 8, seed=1).clamp(-1, 1), randn(2, 3, 8, 8, seed=2)
    expected = diffusers_img2img(unet, scheduler, x0, noise, strength)
    D = fastdiff.from_diffusers(unet, scheduler)
    actual = fastdiff.sample(D, noise, sigmas=scheduler.sigmas, solver=solver, init=x0, strength=strength)
    assert actual.dtype == torch.float32 and torch.isfinite(expected).all()
    error = relative_error(actual, expected)
    assert error <= LOOP_RTOL, f"{case} strength {strength}: max relative difference {error:.3g}"


def test_number_of_steps_is_diffusers_int():
    """n = min(int(N s), N): int, not round, as get_timesteps computes it (0.29 * 100 is 28.999...)."""
    assert [steps_to_run(10, s) for s in (0, 0.05, 0.1, 0.15, 0.5, 0.99, 1)] == [0, 0, 1, 1, 5, 9, 10]
    assert steps_to_run(100, 0.29) == 28
    calls = []

    def net(x, sigma):
        calls.append(float(sigma[0]))
        return torch.zeros_like(x)

    x0 = torch.ones(1, 2)
    sigmas = fastdiff.karras_sigmas(10)
    fastdiff.sample(net, torch.zeros(1, 2), sigmas=sigmas, solver="euler", init=x0, strength=0.35)
    assert calls == pytest.approx(sigmas[7:10].tolist())  # the last 3 of 10 steps


@pytest.mark.parametrize("strength", [0.0, 0.05])
def test_no_step_returns_init(strength):
    x0 = randn(2, 4, seed=3)
    net = lambda x, sigma: pytest.fail("no step runs, so the net is not called")  # noqa: E731
    out = fastdiff.sample(net, randn(2, 4, seed=4), num_steps=10, init=x0, strength=strength)
    assert torch.equal(out, x0) and out is not x0


def gaussian_denoiser(x, sigma):
    """The exact denoiser of N(0, I) data: D(x; sigma) = x / (1 + sigma^2)."""
    return x / (1 + sigma.reshape(-1, *[1] * (x.ndim - 1)) ** 2)


def test_gaussian_oracle():
    """For N(0, I) data the probability-flow ODE maps x at sigma to x sqrt((1 + sigma'^2) / (1 + sigma^2)) at sigma',
    so img2img's deterministic result is (x0 + t z) / sqrt(1 + t^2), t the level strength starts at (Heun's error
    with 512 steps is ~1e-5 here); and it is the plain sampler run over the remaining levels from x0 + t z."""
    x0, z = randn(64, 3, seed=5).double(), randn(64, 3, seed=6).double()
    sigmas = fastdiff.karras_sigmas(512)
    out = fastdiff.sample(gaussian_denoiser, z, sigmas=sigmas, solver="heun", init=x0, strength=0.5)
    t = float(sigmas[256])
    expected = (x0 + t * z) / math.sqrt(1 + t * t)
    assert out.dtype == torch.float64
    assert torch.allclose(out, expected, atol=1e-4), float((out - expected).abs().max())
    plain = fastdiff.sample(gaussian_denoiser, x0 + t * z, sigmas=sigmas[256:], solver="heun", start_scale=1.0)
    assert torch.equal(out, plain)


@pytest.mark.parametrize("solver", ["euler", "heun", "euler_ancestral", "dpmpp_2m", "ddim"])
def test_every_solver_and_the_seeds_latents(solver):
    """latents=None draws the noise as fastdiff.randn(seeds, x0.shape) (the latents stream, offset 0): the same
    result as passing those latents; the steps' own noise (euler_ancestral) is the seeds' sampler stream."""
    x0, seeds = randn(3, 2, 4, seed=7), [11, 12, 13]
    kwargs = dict(num_steps=12, solver=solver, init=x0, strength=0.6, seeds=seeds)
    drawn = fastdiff.sample(gaussian_denoiser, None, **kwargs)
    given = fastdiff.sample(gaussian_denoiser, fastdiff.randn(seeds, x0.shape, offset=LATENTS_OFFSET), **kwargs)
    assert torch.equal(drawn, given) and torch.isfinite(drawn).all() and drawn.shape == x0.shape
    assert STREAMS[0].name == "latents" and "init" in STREAMS[0].drawn_by


def test_float64_and_dtype():
    x0 = randn(2, 3, seed=8).double()
    out = fastdiff.sample(gaussian_denoiser, None, num_steps=6, init=x0, strength=0.5, seeds=[1, 2])
    assert out.dtype == torch.float64
    out = fastdiff.sample(gaussian_denoiser, torch.zeros(2, 3), num_steps=6, init=x0.float(), strength=0.5,
                          dtype=torch.float64)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(init=torch.ones(2, 3)), ValueError, "strength: img2img needs both"),
    (dict(strength=0.5), ValueError, "init: img2img needs both"),
    (dict(init=torch.ones(2, 3), strength=1.5), ValueError, r"strength: expected a number in \[0, 1\].*1.5"),
    (dict(init=torch.ones(2, 3), strength=-0.1), ValueError, "strength: must be >= 0.0"),
    (dict(init=torch.ones(2, 3), strength="half"), TypeError, "strength: expected a real number"),
    (dict(init=torch.ones(2, 3, dtype=torch.int64), strength=0.5), TypeError, "init: expected a floating-point"),
    (dict(init=[1.0, 2.0], strength=0.5), TypeError, "init: expected a floating-point tensor.*list"),
    (dict(init=torch.full((2, 3), math.nan), strength=0.5), ValueError, "init: expected finite"),
    (dict(init=torch.ones(2, 4), strength=0.5), ValueError, r"latents: with init.*\(2, 4\), got \(2, 3\)"),
    (dict(init=torch.ones(2, 3), strength=0.5, start_scale=2.0), ValueError, "start_scale: .*img2img"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastdiff.sample(gaussian_denoiser, torch.zeros(2, 3), num_steps=6, **kwargs)


def test_no_latents_no_seeds():
    with pytest.raises(ValueError, match="latents: with init and latents=None.*pass seeds"):
        fastdiff.sample(gaussian_denoiser, None, num_steps=6, init=torch.ones(2, 3), strength=0.5)


def test_latents_not_a_tensor():
    with pytest.raises(TypeError, match="latents: expected a tensor .*or None, got list"):
        fastdiff.sample(gaussian_denoiser, [[0.0, 0.0, 0.0]], num_steps=6, init=torch.ones(1, 3), strength=0.5)


@pytest.mark.parametrize("strength", [0.3, 0.6, 1.0])
def test_mixture_oracle_stays_on_the_data(strength):
    """Data drawn from the 2-D ring mixture, edited with its exact denoiser, is still distributed as the data: the
    mean log-density of the edits is that of exact draws (4,096 points; draws differ by ~0.03 from each other)."""
    data = fastdiff.GaussianMixture.ring()
    n = 4096
    x0 = data.sample(n, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    exact = float(data.log_prob(data.sample(n, generator=torch.Generator().manual_seed(1), dtype=torch.float32)).mean())
    edited = fastdiff.sample(data, None, num_steps=32, init=x0, strength=strength, seeds=list(range(n)))
    assert abs(float(data.log_prob(edited).mean()) - exact) <= 0.1
    assert not torch.equal(edited, x0)
