"""fastdiff: fast sampling and training of diffusion models, with a pure-PyTorch reference path.

`import fastdiff` needs only torch: Triton, a GPU and the compiled extension are all optional.
"""
from ._version import __version__
from . import data, nets
from .backends import BackendUnavailableError
from .capture import CaptureError, CaptureReport, check_capture
from .graphed import GraphedSampler
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
    "DDPMLoss",
    "EDMLoss",
    "EDMPrecond",
    "GaussianMixture",
    "GraphedSampler",
    "StepPlan",
    "TrainConfig",
    "TrainResult",
    "VELoss",
    "VEPrecond",
    "VPLoss",
    "VPPrecond",
    "iDDPMPrecond",
    "check_capture",
    "karras_sigmas",
    "plan_steps",
    "randn",
    "sample",
    "train",
]
