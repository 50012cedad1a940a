"""fastdiff.diffusers_generate(pipe, ...): a Stable-Diffusion-like pipeline's images with fastdiff's loop.

Nothing is downloaded and transformers is not needed: the pipeline is a namespace of tiny random-weight diffusers
components built from configs (UNet2DConditionModel, AutoencoderKL, the scheduler). The reference is
StableDiffusionPipeline.__call__'s steps written out with those components and the scheduler's own methods (the
pipeline class itself needs transformers' CLIP classes, which are not installed here): randn_tensor's latents,
init_noise_sigma, the CFG loop of one 2B UNet call, vae.decode and the image processor's (x / 2 + 0.5).clamp(0, 1).
Text prompts go through pipe.tokenizer and pipe.text_encoder; a stand-in tokenizer and encoder (plain torch) check
that path, which a real CLIPTokenizer / CLIPTextModel take the same way.
"""
from __future__ import annotations

import types

import pytest
import torch

import fastdiff

from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler
from diffusers import UNet2DConditionModel

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SD_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
STEPS, DIM, TOKENS = 6, 16, 7
LOOP_RTOL = 1e-5


def components():
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 32),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=DIM,
                                norm_num_groups=8, attention_head_dim=8).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=16).eval()
    return unet, vae


@pytest.fixture(scope="module")
def parts():
    return components()


def make_pipe(parts, scheduler, **more):
    unet, vae = parts
    return types.SimpleNamespace(unet=unet, vae=vae, scheduler=scheduler, vae_scale_factor=2, **more)


def embeddings(batch, seed):
    return torch.randn(batch, TOKENS, DIM, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def pipeline_steps(pipe, cond, uncond, guidance_scale, generator, steps=STEPS):
    """StableDiffusionPipeline.__call__ after encode_prompt, with diffusers' own scheduler loop."""
    unet, scheduler, vae = pipe.unet, pipe.scheduler, pipe.vae
    latents = torch.randn((cond.shape[0], 4, 8, 8), generator=generator, dtype=cond.dtype)  # randn_tensor
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    cfg = guidance_scale > 1
    hidden = torch.cat([uncond, cond]) if cfg else cond
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if cfg else latents, t)
        noise = unet(model_input, t, encoder_hidden_states=hidden).sample
        if cfg:
            noise_uncond, noise_text = noise.chunk(2)
            noise = noise_uncond + guidance_scale * (noise_text - noise_uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
    image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    return latents, (image / 2 + 0.5).clamp(0, 1)


def relative_error(actual, expected) -> float:
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


SCHEDULERS = {
    "euler": lambda: EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="trailing"),
    "heun": lambda: HeunDiscreteScheduler(**SD_BETAS, timestep_spacing="trailing"),
}


@pytest.mark.parametrize("guidance_scale", [7.5, 1.0])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_matches_the_pipelines_steps(parts, name, guidance_scale):
    cond, uncond = embeddings(2, seed=1), embeddings(2, seed=2)
    pipe = make_pipe(parts, SCHEDULERS[name]())
    expected_latents, expected = pipeline_steps(pipe, cond, uncond, guidance_scale, torch.Generator().manual_seed(5))
    kwargs = dict(prompt_embeds=cond, negative_prompt_embeds=uncond if guidance_scale > 1 else None,
                  num_inference_steps=STEPS, guidance_scale=guidance_scale)
    latents = fastdiff.diffusers_generate(pipe, generator=torch.Generator().manual_seed(5), output_type="latent",
                                          **kwargs)
    image = fastdiff.diffusers_generate(pipe, generator=torch.Generator().manual_seed(5), **kwargs)
    assert relative_error(latents, expected_latents) <= LOOP_RTOL
    assert image.shape == (2, 3, 16, 16) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert float((image - expected).abs().max()) <= 1e-5


def test_dpm_solver_starts_from_vp_latents(parts):
    """DPM-Solver's init_noise_sigma is 1 (x_T = latents in VP units): the start is latents * sqrt(1 + s0^2)."""
    cond, uncond = embeddings(1, seed=3), embeddings(1, seed=4)
    pipe = make_pipe(parts, DPMSolverMultistepScheduler(**SD_BETAS, timestep_spacing="trailing"))
    expected, _ = pipeline_steps(pipe, cond, uncond, 5.0, torch.Generator().manual_seed(0))
    actual = fastdiff.diffusers_generate(pipe, prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=5.0,
                                         num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                                         output_type="latent")
    assert relative_error(actual, expected) <= LOOP_RTOL


class Tokens(types.SimpleNamespace):
    pass


class StandInTokenizer:
    """Characters to ids, padded to model_max_length, as a CLIPTokenizer call returns them (input_ids, attention_mask)."""

    model_max_length = TOKENS

    def __init__(self):
        self.calls = []

    def __call__(self, texts, padding, max_length, truncation, return_tensors):
        assert (padding, truncation, return_tensors) == ("max_length", True, "pt")
        self.calls.append(list(texts))
        ids = [[1 + ord(c) % 50 for c in text][:max_length] for text in texts]
        ids = [row + [0] * (max_length - len(row)) for row in ids]
        return Tokens(input_ids=torch.tensor(ids), attention_mask=(torch.tensor(ids) > 0).long())


class StandInEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.embed = torch.nn.Embedding(64, DIM)
        self.config = types.SimpleNamespace(use_attention_mask=False)

    def forward(self, input_ids, attention_mask=None):
        return (self.embed(input_ids),)


def test_text_prompts_go_through_tokenizer_and_encoder(parts):
    tokenizer, encoder = StandInTokenizer(), StandInEncoder()
    pipe = make_pipe(parts, EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="trailing"), tokenizer=tokenizer,
                     text_encoder=encoder)
    prompts = ["a cat", "a dog"]
    with torch.no_grad():
        cond = encoder(tokenizer(prompts, "max_length", TOKENS, True, "pt").input_ids)[0]
        uncond = encoder(tokenizer(["", ""], "max_length", TOKENS, True, "pt").input_ids)[0]
    tokenizer.calls.clear()
    by_text = fastdiff.diffusers_generate(pipe, prompts, num_inference_steps=3, guidance_scale=4.0,
                                          generator=torch.Generator().manual_seed(2), output_type="latent")
    assert tokenizer.calls == [prompts, ["", ""]]  # the empty negative prompt, as the pipeline's default
    by_embeds = fastdiff.diffusers_generate(pipe, prompt_embeds=cond, negative_prompt_embeds=uncond,
                                            num_inference_steps=3, guidance_scale=4.0,
                                            generator=torch.Generator().manual_seed(2), output_type="latent")
    assert torch.equal(by_text, by_embeds)
    two_each = fastdiff.diffusers_generate(pipe, prompts, negative_prompt="blurry", num_inference_steps=3,
                                           num_images_per_prompt=2, generator=torch.Generator().manual_seed(2),
                                           output_type="latent")
    assert two_each.shape == (4, 4, 8, 8) and tokenizer.calls[-1] == ["blurry", "blurry"]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(), ValueError, "prompt: pass either prompt .* or prompt_embeds .*got neither"),
    (dict(prompt_embeds=torch.zeros(1, TOKENS, DIM)), ValueError, "negative_prompt_embeds: with prompt_embeds"),
    (dict(prompt_embeds=torch.zeros(1, DIM), guidance_scale=1.0), ValueError, r"prompt_embeds: expected a floating "
                                                                               r"tensor \[B, tokens, dim\]"),
    (dict(prompt="a cat"), TypeError, "prompt: encoding text needs pipe.tokenizer"),
    (dict(prompt_embeds=torch.zeros(1, TOKENS, DIM), guidance_scale=1.0, output_type="pil"), ValueError,
     "output_type: expected one of 'pt', 'latent', got 'pil'"),
    (dict(prompt_embeds=torch.zeros(1, TOKENS, DIM), guidance_scale=1.0, num_inference_steps=0), ValueError,
     "num_inference_steps: must be >= 1"),
    (dict(prompt_embeds=torch.zeros(1, TOKENS, DIM), guidance_scale=1.0, height=15), ValueError,
     "height, width: expected multiples of the VAE's scale factor 2"),
])
def test_bad_arguments(parts, kwargs, error, match):
    pipe = make_pipe(parts, EulerDiscreteScheduler(**SD_BETAS))
    with pytest.raises(error, match=match):
        fastdiff.diffusers_generate(pipe, **kwargs)


def test_not_a_pipeline(parts):
    with pytest.raises(TypeError, match="pipe: expected a StableDiffusionPipeline-like object .*without `vae`"):
        fastdiff.diffusers_generate(types.SimpleNamespace(unet=parts[0], scheduler=EulerDiscreteScheduler()),
                                    prompt_embeds=torch.zeros(1, TOKENS, DIM))
