"""fastdiff: fast sampling and training of diffusion models, with a pure-PyTorch reference path.

`import fastdiff` needs only torch: Triton, a GPU and the compiled extension are all optional.
"""
from ._version import __version__
from . import data, nets, quality, sde
from ._memory import NotEnoughMemoryError
from .adapters import diffusers_generate, diffusers_latents, from_diffusers  # diffusers' UNets and latents (diffusers is not imported)
from .adapters import load_edm  # NVlabs/edm network pickles
from .ddpm import DDPM
from .loss import DDPMLoss, EDMLoss, VELoss, VPLoss
from .mixture import GaussianMixture
from .models import load_model, pretrained, save_model
from .ops import BackendUnavailableError, backends
from .ops import randn  # the generator through the backend dispatch (reference: fastdiff.rng.randn)
from .precond import EDMPrecond, VEPrecond, VPPrecond, iDDPMPrecond
from .sampling import (BrownianNoise, CaptureError, CaptureReport, ClassifierFreeGuidance, ClassifierGuidance, GraphedSampler,
                       Inpainting, StepPlan, check_capture, grad_log_p_from_logits, inpaint, plan_steps, sample,
                       sample_general)
from .schedules import karras_sigmas
from .training import TrainConfig, TrainResult, train

__all__ = [
    "__version__",
    "BackendUnavailableError",
    "BrownianNoise",
    "CaptureError",
    "CaptureReport",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "DDPM",
    "DDPMLoss",
    "EDMLoss",
    "EDMPrecond",
    "GaussianMixture",
    "GraphedSampler",
    "Inpainting",
    "NotEnoughMemoryError",
    "StepPlan",
    "TrainConfig",
    "TrainResult",
    "VELoss",
    "VEPrecond",
    "VPLoss",
    "VPPrecond",
    "iDDPMPrecond",
    "check_capture",
    "diffusers_generate",
    "diffusers_latents",
    "from_diffusers",
    "grad_log_p_from_logits",
    "inpaint",
    "karras_sigmas",
    "load_edm",
    "load_model",
    "plan_steps",
    "pretrained",
    "randn",
    "sample",
    "sample_general",
    "save_model",
    "train",
]
