"""k-diffusion's own model wrappers (`k_diffusion.external`, loaded by fastdiff.testing.k_diffusion_external from the
installed release) are denoisers that fastdiff.sample takes as they are.

1. Around a diffusers UNet, k-diffusion's DiscreteEpsDDPMDenoiser / DiscreteVDDPMDenoiser and fastdiff.from_diffusers
   are the same D(x; sigma): both interpolate the time step in log sigma (or round it, quantize=True) over the
   scheduler's alphas_cumprod. Measured: at most 6e-7 of the output's scale apart (float32 roundings of sigma, t and
   the scalings, taken in a different order); the bound 5e-6 still fails a time step off by one (checked below).
2. fastdiff.sample(wrapper, latents, sigmas=...) is k-diffusion's own sample_heun / sample_euler (identical bits)
   and sample_dpmpp_2m / sample_euler_ancestral (float32 rounding; ancestral given fastdiff's documented noise
   through k-diffusion's noise_sampler) with the same wrapper and sigmas.
"""
from __future__ import annotations

import pytest
import torch

import fastdiff
from fastdiff.rng import SAMPLER_OFFSET
from fastdiff.testing import assert_equal, k_diffusion_external, k_diffusion_sampling

from diffusers import EulerDiscreteScheduler, UNet2DModel

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

D_RTOL = 5e-6  # max |k-diffusion wrapper - from_diffusers| / max |from_diffusers|; measured <= 6e-7
LOOP_RTOL = 1e-5  # the same over whole float32 loops (rounding carried through the steps)
WRAPPERS = {"epsilon": "DiscreteEpsDDPMDenoiser", "v_prediction": "DiscreteVDDPMDenoiser"}


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 32), layers_per_block=1,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       norm_num_groups=8).eval()


def wrap(unet, prediction_type: str, quantize: bool = False):
    """What a k-diffusion user writes around a diffusers UNet: the wrapper for its prediction type, the scheduler's
    alphas_cumprod, and the UNet's output tensor."""
    scheduler = EulerDiscreteScheduler(prediction_type=prediction_type)
    wrapper = getattr(k_diffusion_external(), WRAPPERS[prediction_type])
    return wrapper(lambda x, t, **kwargs: unet(x, t, **kwargs).sample, scheduler.alphas_cumprod, quantize=quantize), \
        scheduler


def relative_error(actual, expected) -> float:
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


def latents(seed: int = 1):
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_the_wrappers_are_k_diffusions_own():
    """The classes come from the installed k-diffusion's external.py, which uses the installed sampling.py."""
    external = k_diffusion_external()
    assert external.__file__.replace("\\", "/").endswith("k_diffusion/external.py")
    assert external.sampling is k_diffusion_sampling()
    assert k_diffusion_external() is external  # loaded once


@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("prediction_type", list(WRAPPERS))
@torch.no_grad()
def test_wrapper_is_from_diffusers(unet, prediction_type, quantize):
    """k-diffusion's wrapper and fastdiff.from_diffusers give the same D(x; sigma) across the range, between trained
    levels too; and have the same sigma_min and sigma_max."""
    W, scheduler = wrap(unet, prediction_type, quantize)
    D = fastdiff.from_diffusers(unet, scheduler, quantize=quantize)
    assert float(W.sigma_min) == pytest.approx(D.sigma_min, rel=1e-6)
    assert float(W.sigma_max) == pytest.approx(D.sigma_max, rel=1e-6)
    x = latents()
    for level in (150.0, 14.6, 3.3, 1.0, 0.2, 0.03, 0.0101):
        sigma = torch.full((2,), level)
        error = relative_error(W(x * level, sigma), D(x * level, sigma))
        assert error <= D_RTOL, f"sigma {level}: {error:.3g}"


@torch.no_grad()
def test_a_time_step_off_by_one_fails_the_tolerance(unet):
    """Negative control for D_RTOL: the wrapper asked for the next trained time step differs by more than 10 D_RTOL."""
    W, scheduler = wrap(unet, "epsilon", quantize=True)
    D = fastdiff.from_diffusers(unet, scheduler, quantize=True)
    x, level = latents(), 1.0
    sigma = torch.full((2,), level)
    next_level = W.t_to_sigma(W.sigma_to_t(sigma) + 1)
    assert relative_error(W(x * level, next_level), D(x * level, sigma)) > 10 * D_RTOL


@pytest.mark.parametrize("prediction_type", list(WRAPPERS))
@pytest.mark.parametrize("solver", ["heun", "euler", "dpmpp_2m"])
@torch.no_grad()
def test_sample_with_a_wrapper_is_k_diffusions_sampler(unet, prediction_type, solver):
    """Karras sigmas over the wrapper's range: fastdiff.sample equals k-diffusion's sample_<solver> with the same
    wrapper; Euler and Heun to the bit (the same float32 operations per step)."""
    kd = k_diffusion_sampling()
    W, _ = wrap(unet, prediction_type)
    sigmas = kd.get_sigmas_karras(8, float(W.sigma_min), float(W.sigma_max))
    x = latents()
    expected = getattr(kd, f"sample_{solver}")(W, x * sigmas[0], sigmas, disable=True)
    actual = fastdiff.sample(W, x, sigmas=sigmas, solver=solver)
    if solver in ("heun", "euler"):
        assert_equal(actual, expected)
    else:
        assert relative_error(actual, expected) <= LOOP_RTOL


@torch.no_grad()
def test_euler_ancestral_with_fastdiffs_noise_is_k_diffusions(unet):
    """k-diffusion's sample_euler_ancestral, fed fastdiff.randn(seeds, shape, offset=SAMPLER_OFFSET + i) at step i
    through its noise_sampler, is fastdiff.sample(solver="euler_ancestral", seeds=seeds)."""
    kd = k_diffusion_sampling()
    W, _ = wrap(unet, "epsilon")
    sigmas = kd.get_sigmas_karras(6, float(W.sigma_min), float(W.sigma_max))
    seeds = [3, 11]
    x = fastdiff.randn(seeds, (2, 3, 8, 8))
    step = iter(range(len(sigmas)))
    noise = lambda sigma, sigma_next: fastdiff.randn(seeds, x.shape, offset=SAMPLER_OFFSET + next(step))  # noqa: E731
    expected = kd.sample_euler_ancestral(W, x * sigmas[0], sigmas, disable=True, noise_sampler=noise)
    actual = fastdiff.sample(W, x, sigmas=sigmas, solver="euler_ancestral", seeds=seeds)
    assert relative_error(actual, expected) <= LOOP_RTOL
    other = fastdiff.sample(W, x, sigmas=sigmas, solver="euler_ancestral", seeds=[4, 12])
    assert relative_error(other, expected) > 100 * LOOP_RTOL  # the noise matters: the comparison can fail
