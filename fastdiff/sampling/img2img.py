"""img2img for fastdiff.sample(..., init=x0, strength=s): start part of the way down the schedule from a noised x0
(SDEdit, Meng et al. 2022; diffusers' img2img pipelines), docs/sampling.md#img2img and
docs/formulas.md#img2img.

With the schedule t_0 > ... > t_N (= 0) that the call would sample, strength s runs its last
n = min(int(N s), N) steps, as diffusers' StableDiffusionImg2ImgPipeline.get_timesteps does (int, not round: the
same number of steps as diffusers for every s). The state starts at

    x = x0 + t_(N-n) z          (diffusers' add_noise, in EDM's variables: x_t = sqrt(a) x0 + sqrt(1 - a) z)

with z the call's latents, or, when latents is None, fastdiff.randn(seeds, x0.shape) (the seeds' "latents" stream,
offset LATENTS_OFFSET = 0 in fastdiff.rng.STREAMS: the latents the same seeds would give a call from pure noise).
Then the loop runs the remaining schedule t_(N-n), ..., t_N with any solver; its step i (counted from the start of
that remaining part) draws its noise at SAMPLER_OFFSET + i, as any call's step i does. n = 0 (s = 0, or N s < 1)
returns x0 unchanged, as diffusers would (it runs no step); s = 1 noises x0 to the top level t_0, whose noise
dominates x0 but does not erase it, again as in diffusers.
"""
from __future__ import annotations

import torch

from .._validate import check_real
from ..ops import randn  # through the backend dispatch, as fastdiff.randn
from ..rng import LATENTS_OFFSET, seeds_tensor
from .plan import SCHEDULE_DEFAULTS, SampleOptions, make_plan


def steps_to_run(num_steps: int, strength: float) -> int:
    """How many of num_steps steps img2img runs at this strength: min(int(num_steps * strength), num_steps)."""
    return min(int(num_steps * strength), num_steps)


def check_strength(strength) -> float:
    strength = check_real("strength", strength, minimum=0.0)
    if strength > 1:
        raise ValueError(f"strength: expected a number in [0, 1] (the part of the schedule to run: 1 from the top "
                         f"level, 0 returns init), got {strength}")
    return strength


def check_init(init, latents) -> torch.Tensor:
    if not isinstance(init, torch.Tensor) or not init.is_floating_point() or init.ndim < 1:
        what = (f"a tensor of dtype {init.dtype} and shape {tuple(init.shape)}" if isinstance(init, torch.Tensor)
                else f"{type(init).__name__}")
        raise TypeError(f"init: expected a floating-point tensor [B, ...] (the data x0 to start from), got {what}")
    if not torch.isfinite(init).all():
        raise ValueError("init: expected finite values (the data x0 to start from), got NaN or inf")
    if latents is not None and isinstance(latents, torch.Tensor) and latents.shape != init.shape:
        raise ValueError(f"latents: with init, the latents are the noise added to init and need its shape "
                         f"{tuple(init.shape)}, got {tuple(latents.shape)} (or pass latents=None to draw them from "
                         f"seeds)")
    return init


def img2img_start(net, latents, init, strength, seeds, options: SampleOptions):
    """(x_start, options for the remaining schedule, seeds) for sample(init=..., strength=...), or (x0, None, seeds)
    when no step is left to run. x_start is in the state's dtype; the options start the loop at x_start itself
    (start_scale 1) over the truncated schedule."""
    strength = check_strength(strength)
    init = check_init(init, latents)
    if options.start_scale is not None:
        raise ValueError(f"start_scale: scales latents at the top of the schedule, which img2img does not start from "
                         f"(it starts at init + sigma z at the level `strength` picks); leave start_scale out with "
                         f"init, got start_scale={options.start_scale!r}")
    if latents is None:
        if seeds is None:
            raise ValueError("latents: with init and latents=None the noise is drawn from seeds; pass seeds (one int "
                             "per sample, or a torch.Generator) or latents (the noise, init's shape)")
        seeds = seeds_tensor(seeds, init.shape[0], init.device)
        noise_dtype = torch.float64 if init.dtype == torch.float64 else torch.float32
        latents = randn(seeds, init.shape, offset=LATENTS_OFFSET, dtype=noise_dtype, device=init.device,
                        backend=options.backend)
    elif not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents: expected a tensor (the noise added to init) or None, got {type(latents).__name__}")
    t = make_plan(net, options).t  # the whole schedule, as this call would sample it (rounded by the net)
    total = len(t) - 1
    run = steps_to_run(total, strength)
    if run == 0:
        return init.clone(), None, seeds
    rest = t[total - run:]
    state = options.state_dtype(latents)
    x = init.to(state) + torch.tensor(rest[0], dtype=state, device=init.device) * latents.to(state)
    # the remaining levels as an explicit schedule (the Karras arguments back at their defaults, which sigmas=
    # requires), started at x itself
    remaining = options.replace(sigmas=torch.tensor(rest, dtype=torch.float64), start_scale=1.0, **SCHEDULE_DEFAULTS)
    return x, remaining, seeds
