"""fastdiff: fast sampling and training of diffusion models, with a pure-PyTorch reference path.

`import fastdiff` needs only torch: Triton, a GPU and the compiled extension are all optional.
"""
from ._version import __version__
from . import data, nets, sde
from ._memory import NotEnoughMemoryError
from .backends import BackendUnavailableError
from .capture import CaptureError, CaptureReport, check_capture
from .ddpm import DDPM
from .general import sample_general
from .graphed import GraphedSampler
from .guidance import ClassifierFreeGuidance, ClassifierGuidance, Inpainting, grad_log_p_from_logits, inpaint
from .loss import DDPMLoss, EDMLoss, VELoss, VPLoss
from .mixture import GaussianMixture
from .precond import EDMPrecond, VEPrecond, VPPrecond, iDDPMPrecond
from .ops import randn  # the generator through the backend dispatch (reference: fastdiff.rng.randn)
from .sampler import StepPlan, plan_steps, sample
from .schedules import karras_sigmas
from .training import TrainConfig, TrainResult, train

__all__ = [
    "__version__",
    "BackendUnavailableError",
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
    "grad_log_p_from_logits",
    "inpaint",
    "karras_sigmas",
    "plan_steps",
    "randn",
    "sample",
    "sample_general",
    "train",
]
