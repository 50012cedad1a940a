"""fastdiff.adapters: other libraries' models as fastdiff denoisers D(x; sigma) in EDM's variables.

    diffusers.py   from_diffusers(unet, scheduler): a diffusers UNet and its scheduler's noise schedule

An adapter never imports the library it adapts: it reads the objects it is given, so `import fastdiff` needs none of
them installed.
"""
from __future__ import annotations

from .diffusers import DiffusersDenoiser, from_diffusers

__all__ = ["DiffusersDenoiser", "from_diffusers"]
