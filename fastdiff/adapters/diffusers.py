"""diffusers models as EDM denoisers: fastdiff.from_diffusers(unet, scheduler) (docs/formulas.md#models-from-diffusers).

A diffusers UNet of a discrete-time VP model (DDPM's family: Stable Diffusion, DeepFloyd IF, the DDPM and DDIM
pipelines) takes x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) n at a time step t and predicts the noise n ("epsilon"),
v = sqrt(a_t) n - sqrt(1 - a_t) x_0 ("v_prediction") or x_0 ("sample"); a_t is the scheduler's alphas_cumprod.
In EDM's variables, x = x_t / sqrt(a_t) is the data plus noise of std sigma = sqrt((1 - a) / a), so

    x_t = x / sqrt(sigma^2 + 1)                                  (what the schedulers' scale_model_input computes)
    epsilon:       D(x; sigma) = x - sigma eps
    v_prediction:  D(x; sigma) = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) v
    sample:        D(x; sigma) = the model's output

and the time step the UNet sees is t(sigma), linear in ln sigma between the two neighbouring trained levels (as
diffusers' Euler, Heun and DPM-Solver schedulers and k-diffusion find it), or the nearest trained time step with
`quantize`. This module reads the objects it is given and never imports diffusers.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn

from .. import ops
from ..ops.backends import prepare
from ..ops.reference.skip_mix import per_sample
from .._validate import as_float_tensor
from ..precond import _prepare
from .._validate import check_output

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
QUANTIZE = (False, True, "timestep")
# A zero-terminal-SNR schedule (rescale_betas_zero_snr=True) has a_(T-1) = 0, an infinite top sigma. diffusers' Euler
# and DPM-Solver schedulers replace that a by 2^-24 (float16's smallest subnormal), which puts the top level at
# sigma = sqrt((1 - 2^-24) / 2^-24) = 4096 (to float32 rounding); fastdiff does the same, so sigma_max stays finite.
# When a_(T-2) is already below 2^-24 (the linear schedule 1e-4..0.02 rescaled: a_998 = 4.2e-9), that stand-in would
# put the top level below the one before it; fastdiff then takes a_(T-2)^2 / a_(T-3), the previous step's ratio again,
# so that the levels keep increasing (docs/formulas.md#models-from-diffusers).
ZERO_SNR_ALPHA_CUMPROD = 2.0**-24
LEARNED_VARIANCE = ("learned", "learned_range")
SCHEDULERS = ("DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler, HeunDiscreteScheduler, "
              "DPMSolverMultistepScheduler, ...")


def from_diffusers(unet, scheduler, *, quantize=False, backend: str = "auto") -> "DiffusersDenoiser":
    """A diffusers UNet as an EDM denoiser D(x, sigma, **kwargs) for fastdiff.sample; see DiffusersDenoiser.

        D = fastdiff.from_diffusers(unet, scheduler)
        x = fastdiff.sample(D, latents, num_steps=32, solver="dpmpp_2m")

    unet: a diffusers model (UNet2DModel, UNet2DConditionModel, ...) or any callable unet(x_t, t, **kwargs) returning
    a tensor, an object with `.sample`, or a tuple whose first item is the prediction. scheduler: any diffusers
    scheduler with an `alphas_cumprod` table and `config.prediction_type` "epsilon", "v_prediction" or "sample".
    quantize: False (t(sigma) interpolated in ln sigma), True (the nearest trained level: round_sigma snaps the
    schedule to the trained levels) or "timestep" (the nearest trained time step, the noise level kept as given).
    backend: who runs the skip mix (fastdiff.ops.skip_mix).
    """
    return DiffusersDenoiser(unet, scheduler, quantize=quantize, backend=backend)


class DiffusersDenoiser(nn.Module):
    """A diffusers UNet and its scheduler's noise schedule as an EDM denoiser D(x; sigma) (x at noise level sigma,
    variance exploding; docs/formulas.md#models-from-diffusers).

    forward(x, sigma, class_labels=None, **unet_kwargs): x [B, ...] in float32 or float64 (the state's dtype; lower
    precisions compute in float32), sigma a scalar or [B]. The UNet gets x / sqrt(sigma^2 + 1) in its own dtype
    (unet.dtype: a bf16 or fp16 UNet gets bf16 or fp16 input) and the time steps t(sigma) as float32 [B], as
    diffusers' pipelines pass them (never in bf16 or fp16, which would round t = 999 to 1000); its output is
    converted back to x's dtype before the skip mix, so D is in the state's dtype. Keyword arguments
    (encoder_hidden_states, added_cond_kwargs, ...) go to the UNet, their floating-point tensors (also those inside
    a dict) cast to its dtype as a pipeline would have made them; class_labels pass as given. `with_kwargs(...)`
    binds keyword arguments for fastdiff.sample, which calls net(x, sigma[, class_labels]).

    The schedule is the scheduler's own: train_sigmas[t] = sqrt((1 - a_t) / a_t) (float64 [T], ascending in t),
    computed from scheduler.alphas_cumprod in that table's precision (float32 in diffusers), so that the levels are,
    bit for bit, the sigmas diffusers' schedulers make from it. Any beta schedule and trained betas work, since only
    alphas_cumprod is read. A zero-terminal-SNR schedule (a_(T-1) = 0, an infinite top level) has that a replaced
    by 2^-24, as diffusers' Euler and DPM-Solver schedulers do (top level sigma = 4096), or, if a_(T-2) is already
    below 2^-24, by a_(T-2)^2 / a_(T-3), which keeps the levels increasing. sigma_min = train_sigmas[0] and
    sigma_max = train_sigmas[-1] clamp fastdiff.sample's schedule.

    quantize=False: t(sigma) is interpolated linearly in ln sigma between the neighbouring levels (diffusers'
    `_sigma_to_t`, k-diffusion's DiscreteSchedule), clamped to [0, T-1]; round_sigma is the identity.
    quantize=True: the UNet sees the nearest trained level (nearest in ln sigma, the interpolated t rounded half to
    even) and round_sigma snaps fastdiff.sample's schedule to those levels, as EDM does for iDDPM models.
    quantize="timestep": the nearest trained time step, with the noise level kept as given (round_sigma is the
    identity): what DPMSolverMultistepScheduler does with use_karras_sigmas (it rounds its time steps, not its
    sigmas) and k-diffusion's quantize=True.

    The scheduler's sampler-side options (DDIM's clip_sample, thresholding, ...) belong to its step and are not part
    of D. A UNet of a scheduler with variance_type "learned" or "learned_range" returns twice the input's channels:
    the first half is the prediction, as in diffusers' schedulers.
    """

    def __init__(self, unet, scheduler, *, quantize=False, backend: str = "auto"):
        super().__init__()
        if not callable(unet):
            raise TypeError(f"unet: expected a diffusers model or a callable unet(x_t, t, **kwargs), got "
                            f"{type(unet).__name__}")
        if not any(quantize is q or (isinstance(q, str) and quantize == q) for q in QUANTIZE):
            raise ValueError(f"quantize: expected False, True or 'timestep', got {quantize!r}")
        self.unet = unet
        self.quantize = quantize
        self.backend = prepare(backend)
        alphas_cumprod, self.zero_snr = _alphas_cumprod(scheduler)
        self.prediction_type = _prediction_type(scheduler)
        _refuse_unsupported(scheduler)
        # A plain attribute, not a buffer: module.half() must not round the noise levels.
        self.train_sigmas = _levels(alphas_cumprod, scheduler)
        self.num_train_timesteps = self.train_sigmas.numel()
        self.sigma_min = float(self.train_sigmas[0])
        self.sigma_max = float(self.train_sigmas[-1])
        self.learned_variance = _setting(scheduler, "variance_type", None) in LEARNED_VARIANCE
        self.unet_kwargs: dict = {}
        self._tables: dict = {}  # device -> (levels, ln levels) as float64 there, copied once

    def extra_repr(self) -> str:
        return (f"prediction_type={self.prediction_type!r}, num_train_timesteps={self.num_train_timesteps}, "
                f"sigma_min={self.sigma_min:.6g}, sigma_max={self.sigma_max:.6g}, quantize={self.quantize!r}"
                + (", zero_snr=True" if self.zero_snr else ""))

    def with_kwargs(self, **unet_kwargs) -> "DiffusersDenoiser":
        """The same denoiser (sharing the UNet) that passes these keyword arguments to the UNet on every call, e.g.
        `D.with_kwargs(encoder_hidden_states=emb)` for fastdiff.sample; a call's own keywords override them."""
        clone = copy.copy(self)
        clone.unet_kwargs = {**self.unet_kwargs, **unet_kwargs}
        return clone

    def _table(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        device = torch.device(device)
        if device not in self._tables:
            levels = self.train_sigmas.to(device)
            self._tables[device] = (levels, levels.log())
        return self._tables[device]

    def timestep(self, sigma) -> torch.Tensor:
        """The time step the UNet is given at each sigma, as float64 (sigma's shape): ln sigma interpolated between
        the neighbouring trained levels, clamped to [0, T-1]; rounded half to even with quantize (True or
        "timestep"). A sigma that is a level (after the round trip through float32) gives that level's t exactly."""
        sigma = as_float_tensor(sigma)
        levels, log_levels = self._table(sigma.device)
        s = sigma.to(torch.float64).reshape(-1).log()
        low = (torch.searchsorted(log_levels, s, right=True) - 1).clamp_(0, levels.numel() - 2)
        below, above = log_levels[low], log_levels[low + 1]
        w = ((s - below) / (above - below)).clamp_(0, 1)
        t = (1 - w) * low + w * (low + 1)
        if self.quantize is not False:
            t = t.round()
        return t.reshape(sigma.shape)

    def round_sigma(self, sigma):
        """With quantize=True, each sigma snapped to the nearest trained level (in ln sigma); otherwise sigma as it is
        (float64 for a Python number). Keeps the shape; fastdiff.sample snaps its schedule with it."""
        sigma = as_float_tensor(sigma)
        if self.quantize is not True:
            return sigma
        levels, _ = self._table(sigma.device)
        return levels[self.timestep(sigma).long()].to(sigma.dtype)

    def unet_dtype(self, like: torch.Tensor) -> torch.dtype:
        """The dtype the UNet runs in: its `dtype` (diffusers' models have one), else that of its first floating
        parameter, else like's."""
        dtype = getattr(self.unet, "dtype", None)
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            return dtype
        if isinstance(self.unet, nn.Module):
            for parameter in self.unet.parameters():
                if parameter.is_floating_point():
                    return parameter.dtype
        return like.dtype

    def forward(self, x: torch.Tensor, sigma, class_labels=None, **unet_kwargs) -> torch.Tensor:
        """D(x; sigma) in x's dtype (float32 for lower precisions), for x [B, ...] and sigma a scalar or [B]."""
        x, sigma = _prepare(x, sigma)
        model_input = x / per_sample((sigma**2 + 1) ** 0.5, x)  # x_t, as the schedulers' scale_model_input
        dtype = self.unet_dtype(x)
        kwargs = {name: _cast(value, dtype) for name, value in {**self.unet_kwargs, **unet_kwargs}.items()}
        if class_labels is not None:
            kwargs["class_labels"] = class_labels
        t = self.timestep(sigma).to(torch.float32)
        prediction = _prediction(self.unet(model_input.to(dtype), t, **kwargs))
        if self.learned_variance and prediction.ndim >= 2 and prediction.shape[1] == 2 * x.shape[1]:
            prediction = prediction[:, : x.shape[1]]  # the variance's channels follow the prediction's
        check_output("unet", prediction, x, "unet(x_t, t)")
        prediction = prediction.to(x.dtype)
        if self.prediction_type == "epsilon":  # x - sigma eps: EDM's c_skip = 1, c_out = -sigma
            return ops.skip_mix(x, prediction, sigma, precond="iddpm", backend=self.backend)
        if self.prediction_type == "v_prediction":  # EDM's skip mix with sigma_data = 1, c_out applied to -v
            return ops.skip_mix(x, prediction.neg(), sigma, precond="edm", sigma_data=1.0, backend=self.backend)
        return prediction


# -------------------------------------------------------------------------------------------------------------
# Reading the scheduler.
# -------------------------------------------------------------------------------------------------------------

_MISSING = object()


def diffusers_latents(shape, generator=None, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Unit-variance latents of `shape` drawn exactly as diffusers' pipelines draw them
    (diffusers.utils.torch_utils.randn_tensor), so that a diffusers seed gives the diffusers latents: with one
    torch.Generator (or None: torch's default generator), torch.randn(shape) from it; with a list of generators, one
    per sample, each sample's torch.randn((1, ...)) from its own (a list of one is the single generator, as there).
    The numbers are drawn on the generators' device (a CPU generator for CUDA latents draws on the CPU and moves
    them, as diffusers does) in `dtype`, then put on `device` (default: the generators', else the CPU).

    These are the latents before the scheduler's init_noise_sigma: pass them to fastdiff.sample with
    start_scale=scheduler.init_noise_sigma (docs/sampling.md#models-from-diffusers).
    """
    shape = _check_latents_shape(shape)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    generators = _check_generators(generator, shape[0])
    if isinstance(generators, list) and len(generators) == 1:
        generators = generators[0]  # as diffusers: a list of one is that generator, for the whole batch
    first = generators[0] if isinstance(generators, list) else generators
    device = torch.device(device) if device is not None else (first.device if first is not None else torch.device("cpu"))
    draw_device = device
    if first is not None and first.device.type != device.type:
        if first.device.type != "cpu":
            raise ValueError(f"generator: a {first.device.type} generator cannot draw {device.type} latents (device="
                             f"{device}); use a CPU generator or one on {device.type}")
        draw_device = torch.device("cpu")
    if isinstance(generators, list):
        draws = [torch.randn((1, *shape[1:]), generator=g, device=draw_device, dtype=dtype) for g in generators]
        return torch.cat(draws, dim=0).to(device)
    return torch.randn(shape, generator=generators, device=draw_device, dtype=dtype).to(device)


OUTPUT_TYPES = ("pt", "latent")
DEFAULT_SOLVERS = {"EulerDiscreteScheduler": "euler", "HeunDiscreteScheduler": "heun",
                   "EulerAncestralDiscreteScheduler": "euler_ancestral", "DPMSolverMultistepScheduler": "dpmpp_2m"}


def diffusers_generate(pipe, prompt=None, *, prompt_embeds=None, negative_prompt=None, negative_prompt_embeds=None,
                       num_inference_steps: int = 50, guidance_scale: float = 7.5, num_images_per_prompt: int = 1,
                       height: int | None = None, width: int | None = None, generator=None, solver: str | None = None,
                       seeds=None, quantize=False, backend: str = "auto", cuda_graph=False,
                       output_type: str = "pt") -> torch.Tensor:
    """A Stable-Diffusion-like diffusers pipeline's images, sampled by fastdiff (docs/sampling.md#diffusers-pipelines).

        images = fastdiff.diffusers_generate(pipe, "a photo of a cat", num_inference_steps=25,
                                             generator=torch.Generator().manual_seed(0))

    pipe: any object with `unet` (a UNet2DConditionModel-like callable), `scheduler` (a diffusers scheduler with
    sigmas after set_timesteps: Euler, Heun, Euler ancestral, DPM-Solver, ...) and `vae` (AutoencoderKL-like:
    decode(z).sample and config.scaling_factor), and, for `prompt` strings, `tokenizer` and `text_encoder` as in
    StableDiffusionPipeline. It runs what the pipeline's __call__ runs, with fastdiff's loop in place of the
    scheduler's: the prompt encoded as encode_prompt does (tokenizer padded to model_max_length, the encoder's last
    hidden state; "" for the negative prompt), or `prompt_embeds` / `negative_prompt_embeds` [B, tokens, dim] as
    given; latents from `generator` by diffusers_latents (the pipeline's latents for that generator) in the
    embeddings' dtype, of shape [B * num_images_per_prompt, unet in_channels, height / f, width / f] with f the VAE's
    scale factor; scheduler.set_timesteps(num_inference_steps) and its sigmas; classifier-free guidance when
    guidance_scale > 1 (diffusers' rule), as one 2B UNet call per evaluation (guidance=, extra_args=,
    uncond_args= with encoder_hidden_states); then vae.decode(latents / scaling_factor) and (image / 2 + 0.5)
    clamped to [0, 1], as the pipeline's image processor does for output_type="pt". output_type="latent" returns the
    latents instead. No safety checker runs.

    solver: fastdiff's solver; default the scheduler's own ("euler" for EulerDiscreteScheduler, "heun",
    "euler_ancestral", "dpmpp_2m" for DPMSolverMultistepScheduler). The start follows the scheduler: latents *
    init_noise_sigma, or, for a scheduler whose init_noise_sigma is 1 (DPM-Solver: x_T = latents in VP units),
    latents * sqrt(1 + sigmas[0]^2). seeds: fastdiff's seeds for the noise stochastic solvers add (see
    fastdiff.sample). quantize: from_diffusers' (use "timestep" for DPM-Solver with Karras sigmas). backend,
    cuda_graph: fastdiff.sample's. Returns a float tensor [N, C, H, W] (pixels in [0, 1], or latents).
    """
    from ..sampling import sample
    from .._validate import check_int, check_real

    for name in ("unet", "scheduler", "vae"):
        if getattr(pipe, name, None) is None:
            raise TypeError(f"pipe: expected a StableDiffusionPipeline-like object with unet, scheduler and vae, got "
                            f"{type(pipe).__name__} without `{name}`")
    steps = check_int("num_inference_steps", num_inference_steps, minimum=1)
    per_prompt = check_int("num_images_per_prompt", num_images_per_prompt, minimum=1)
    scale = check_real("guidance_scale", guidance_scale)
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type: expected one of {', '.join(map(repr, OUTPUT_TYPES))}, got {output_type!r}")
    unet, scheduler, vae = pipe.unet, pipe.scheduler, pipe.vae
    device = _module_device(unet)
    guided = scale > 1.0
    cond = _embeddings(pipe, "prompt", prompt, prompt_embeds, device)
    uncond = None
    if guided:
        if negative_prompt is None and negative_prompt_embeds is None:
            if prompt_embeds is not None:
                raise ValueError("negative_prompt_embeds: with prompt_embeds and guidance_scale > 1, pass the "
                                 "unconditional embeddings too (the text encoder's output for the empty prompt), or "
                                 "guidance_scale <= 1 (no guidance)")
            negative_prompt = ""  # the pipeline's default negative prompt
        if isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * cond.shape[0]
        uncond = _embeddings(pipe, "negative_prompt", negative_prompt, negative_prompt_embeds, device)
        if uncond.shape != cond.shape:
            raise ValueError(f"negative_prompt_embeds: expected the prompt embeddings' shape {tuple(cond.shape)}, got "
                             f"{tuple(uncond.shape)}")
    cond = cond.repeat_interleave(per_prompt, dim=0)
    uncond = None if uncond is None else uncond.repeat_interleave(per_prompt, dim=0)

    factor = getattr(pipe, "vae_scale_factor", None) or 2 ** (len(vae.config.block_out_channels) - 1)
    height = check_int("height", height if height is not None else unet.config.sample_size * factor, minimum=1)
    width = check_int("width", width if width is not None else unet.config.sample_size * factor, minimum=1)
    if height % factor or width % factor:
        raise ValueError(f"height, width: expected multiples of the VAE's scale factor {factor}, got {height}x{width}")
    shape = (cond.shape[0], unet.config.in_channels, height // factor, width // factor)
    latents = diffusers_latents(shape, generator, dtype=cond.dtype, device=device)

    scheduler.set_timesteps(steps, device=device)
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is None:
        raise ValueError(f"pipe.scheduler: {type(scheduler).__name__} has no sigmas after set_timesteps; use a "
                         f"scheduler that has them ({', '.join(DEFAULT_SOLVERS)})")
    if solver is None:
        solver = DEFAULT_SOLVERS.get(type(scheduler).__name__)
        if solver is None:
            raise ValueError(f"solver: no default for {type(scheduler).__name__}; pass fastdiff's solver= (one of "
                             f"'euler', 'heun', 'euler_ancestral', 'dpmpp_2m')")
    init_sigma = float(getattr(scheduler, "init_noise_sigma", 1.0))
    start_scale = init_sigma if init_sigma != 1.0 else (1.0 + float(sigmas[0]) ** 2) ** 0.5
    D = from_diffusers(unet, scheduler, quantize=quantize, backend=backend)
    kwargs = dict(sigmas=sigmas, solver=solver, start_scale=start_scale, seeds=seeds, backend=backend,
                  cuda_graph=cuda_graph, extra_args={"encoder_hidden_states": cond})
    if guided:
        kwargs.update(guidance=scale, uncond_args={"encoder_hidden_states": uncond})
    with torch.no_grad():
        latents = sample(D, latents, **kwargs)
        if output_type == "latent":
            return latents
        vae_dtype = next(vae.parameters()).dtype if isinstance(vae, nn.Module) else latents.dtype
        image = vae.decode((latents / vae.config.scaling_factor).to(vae_dtype), return_dict=False)[0]
    return (image / 2 + 0.5).clamp(0, 1)


def _module_device(module) -> torch.device:
    try:
        return next(module.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


def _embeddings(pipe, name: str, text, embeds, device) -> torch.Tensor:
    """Text embeddings [B, tokens, dim]: `embeds` as given, or `text` encoded as StableDiffusionPipeline.encode_prompt
    does (tokenizer padded to model_max_length and truncated, the text encoder's last hidden state)."""
    if (text is None) == (embeds is None):
        raise ValueError(f"{name}: pass either {name} (text) or {name}_embeds (a tensor [B, tokens, dim]), got "
                         f"{'both' if text is not None else 'neither'}")
    if embeds is not None:
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or not embeds.is_floating_point():
            what = f"shape {tuple(embeds.shape)}" if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(f"{name}_embeds: expected a floating tensor [B, tokens, dim], got {what}")
        return embeds.to(device)
    if isinstance(text, str):
        text = [text]
    if not isinstance(text, (list, tuple)) or not text or not all(isinstance(t, str) for t in text):
        raise TypeError(f"{name}: expected a string or a non-empty list of strings, got {text!r}")
    tokenizer, encoder = getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)
    if tokenizer is None or encoder is None:
        raise TypeError(f"{name}: encoding text needs pipe.tokenizer and pipe.text_encoder; {type(pipe).__name__} "
                        f"lacks {'tokenizer' if tokenizer is None else 'text_encoder'} (pass {name}_embeds instead)")
    tokens = tokenizer(list(text), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt")
    mask = None
    if getattr(getattr(encoder, "config", None), "use_attention_mask", False):
        mask = tokens.attention_mask.to(device)
    with torch.no_grad():
        return encoder(tokens.input_ids.to(device), attention_mask=mask)[0]


def _check_latents_shape(shape) -> tuple[int, ...]:
    """A shape (batch, ...) of non-negative ints, at least one dimension."""
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) == 0 or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"shape: expected a tuple of non-negative ints (batch, ...), got {shape!r}")
    return tuple(shape)


def _check_generators(generator, batch: int):
    """generator: None, a torch.Generator, or a list of them of length 1 or batch (all on one device type)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if not isinstance(generator, (list, tuple)) or not generator or not all(
            isinstance(g, torch.Generator) for g in generator):
        raise TypeError(f"generator: expected a torch.Generator, a list of them (one per sample) or None, got "
                        f"{generator!r}")
    if len(generator) not in (1, batch):
        raise ValueError(f"generator: expected one torch.Generator per sample ({batch}) or one for all, got "
                         f"{len(generator)}")
    if len({g.device.type for g in generator}) > 1:
        raise ValueError(f"generator: expected generators on one device type, got "
                         f"{sorted({str(g.device) for g in generator})}")
    return list(generator)


def _setting(scheduler, name: str, default=_MISSING):
    """A scheduler setting: from scheduler.config (a mapping, or an object with attributes), else the scheduler's
    own attribute, else default."""
    config = getattr(scheduler, "config", None)
    if isinstance(config, Mapping) and name in config:
        return config[name]
    if config is not None and not isinstance(config, Mapping) and hasattr(config, name):
        return getattr(config, name)
    return getattr(scheduler, name, default)


def _prediction_type(scheduler) -> str:
    value = _setting(scheduler, "prediction_type", None)
    if value == "original_sample":  # EulerDiscreteScheduler's other name for "sample"
        value = "sample"
    if value not in PREDICTION_TYPES:
        if value is None:
            raise ValueError(f"scheduler: expected a diffusers scheduler whose config has a prediction_type "
                             f"({', '.join(map(repr, PREDICTION_TYPES))}), got {type(scheduler).__name__} without one")
        why = (" (flow matching is not a variance-preserving model: its x is not x_edm / sqrt(1 + sigma^2))"
               if "flow" in str(value) else "")
        raise ValueError(f"scheduler.config.prediction_type: expected one of {', '.join(map(repr, PREDICTION_TYPES))}, "
                         f"got {value!r}{why}")
    return value


def _refuse_unsupported(scheduler) -> None:
    """Settings that change what the UNet's inputs mean, which this adapter does not model: refused, not ignored."""
    if _setting(scheduler, "use_flow_sigmas", False):
        raise ValueError("scheduler.config.use_flow_sigmas: expected False (from_diffusers adapts variance-preserving "
                         "models, not flow matching), got True")
    timestep_type = _setting(scheduler, "timestep_type", "discrete")
    if timestep_type != "discrete":
        raise ValueError(f"scheduler.config.timestep_type: expected 'discrete' (the UNet takes the trained time step "
                         f"t), got {timestep_type!r}")


def _alphas_cumprod(scheduler) -> tuple[torch.Tensor, bool]:
    """scheduler.alphas_cumprod checked ([T], T >= 2, finite, strictly decreasing from below 1, positive but for a
    last 0), on the CPU in its own floating dtype (at least float32). A zero terminal SNR (a last 0, or
    rescale_betas_zero_snr in the config) has its last a replaced by _zero_snr_stand_in. Returns (the table, whether
    it had a zero terminal SNR)."""
    table = getattr(scheduler, "alphas_cumprod", None)
    if table is None:
        raise TypeError(f"scheduler: expected a diffusers scheduler of a discrete-time VP model, with an "
                        f"alphas_cumprod table ({SCHEDULERS}); {type(scheduler).__name__} has none (flow-matching "
                        f"and continuous-time schedulers are not supported)")
    try:
        a = table.detach() if isinstance(table, torch.Tensor) else torch.as_tensor(table)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"scheduler.alphas_cumprod: expected a 1-D table of floats, got {type(table).__name__} "
                        f"({error})") from None
    if not a.is_floating_point() or a.ndim != 1 or a.numel() < 2:
        raise ValueError(f"scheduler.alphas_cumprod: expected a 1-D floating table of at least 2 values, got "
                         f"{a.dtype} of shape {tuple(a.shape)}")
    a = a.to(device="cpu", dtype=torch.promote_types(a.dtype, torch.float32), copy=True)
    values = a.tolist()
    # diffusers' Euler and DPM-Solver schedulers have already put 2^-24 in place of the 0; DDIM and DDPM keep the 0.
    zero_snr = values[-1] == 0.0 or bool(_setting(scheduler, "rescale_betas_zero_snr", False))
    if zero_snr:
        a[-1] = _zero_snr_stand_in(values)
        values[-1] = float(a[-1])
    bad = [i for i, v in enumerate(values) if not (math.isfinite(v) and 0 < v < 1)]
    if bad:
        i = bad[0]
        raise ValueError(f"scheduler.alphas_cumprod: expected values in (0, 1) (the last may be 0, a zero terminal "
                         f"SNR), got {values[i]!r} at time step {i}")
    if not all(p > n for p, n in zip(values, values[1:])):
        i = next(i for i, (p, n) in enumerate(zip(values, values[1:])) if not p > n)
        raise ValueError(f"scheduler.alphas_cumprod: expected a strictly decreasing table (every beta > 0), got "
                         f"{values[i]!r} at time step {i} and {values[i + 1]!r} at {i + 1}")
    return a, zero_snr


def _zero_snr_stand_in(values: list[float]) -> float:
    """The finite a that stands in for a zero terminal a_(T-1): diffusers' 2^-24 when it lies below a_(T-2), else
    a_(T-2)^2 / a_(T-3) (a_(-1) = 1), one more step of the previous ratio."""
    before = values[-2]
    if ZERO_SNR_ALPHA_CUMPROD < before:
        return ZERO_SNR_ALPHA_CUMPROD
    return before * before / (values[-3] if len(values) >= 3 else 1.0)


def _levels(a: torch.Tensor, scheduler) -> torch.Tensor:
    """sqrt((1 - a) / a) in a's precision (the scheduler's arithmetic, so that the levels are its sigmas bit for
    bit), returned as float64; checked strictly increasing and finite."""
    levels = ((1 - a) / a) ** 0.5
    values = levels.tolist()
    if not all(math.isfinite(v) and v > 0 for v in values) or not all(p < n for p, n in zip(values, values[1:])):
        raise ValueError(f"scheduler.alphas_cumprod: its noise levels sqrt((1 - a) / a) in {a.dtype} are not finite, "
                         f"positive and strictly increasing ({type(scheduler).__name__} with {a.numel()} time steps); "
                         f"got {values[:3]} ... {values[-3:]}")
    return levels.to(torch.float64)


# -------------------------------------------------------------------------------------------------------------
# The UNet's inputs and output.
# -------------------------------------------------------------------------------------------------------------

def _cast(value, dtype: torch.dtype):
    """A floating-point tensor (also one inside a dict, such as added_cond_kwargs) in the UNet's dtype."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, dict):
        return {key: _cast(item, dtype) for key, item in value.items()}
    return value


def _prediction(output) -> torch.Tensor:
    """The prediction from what a UNet returns: a tensor, an output object's `.sample` (UNet2DOutput and its kin) or
    the first item of a tuple (return_dict=False)."""
    if isinstance(output, torch.Tensor):
        return output
    sample = getattr(output, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"unet: expected unet(x_t, t) to return a tensor, an output with a .sample tensor or a tuple "
                    f"starting with one, got {type(output).__name__}")
