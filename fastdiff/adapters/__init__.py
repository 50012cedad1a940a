"""fastdiff.adapters: other libraries' models as fastdiff denoisers D(x; sigma) in EDM's variables.

    diffusers.py   from_diffusers(unet, scheduler): a diffusers UNet and its scheduler's noise schedule;
                   diffusers_latents(shape, generator): the latents diffusers draws for a generator;
                   diffusers_generate(pipe, prompt): a Stable-Diffusion-like pipeline's images by fastdiff
    edm.py         load_edm(path): the `ema` network of an NVlabs/edm network pickle (NVlabs' modules on sys.path)

An adapter never imports the library it adapts: it reads the objects it is given, so `import fastdiff` needs none of
them installed.
"""
from __future__ import annotations

from .diffusers import DiffusersDenoiser, diffusers_generate, diffusers_latents, from_diffusers
from .edm import load_edm

__all__ = ["DiffusersDenoiser", "diffusers_generate", "diffusers_latents", "from_diffusers", "load_edm"]
