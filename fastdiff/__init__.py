"""fastdiff: fast sampling and training of diffusion models, with a pure-PyTorch reference path.

`import fastdiff` needs only torch: Triton, a GPU and the compiled extension are all optional.
"""
from ._version import __version__
from .backends import BackendUnavailableError
from .loss import EDMLoss, VELoss, VPLoss
from .mixture import GaussianMixture
from .precond import EDMPrecond, VEPrecond, VPPrecond, iDDPMPrecond
from .ops import randn  # the generator through the backend dispatch (reference: fastdiff.rng.randn)
from .sampler import StepPlan, plan_steps, sample
from .schedules import karras_sigmas

__all__ = [
    "__version__",
    "BackendUnavailableError",
    "EDMLoss",
    "EDMPrecond",
    "GaussianMixture",
    "StepPlan",
    "VELoss",
    "VEPrecond",
    "VPLoss",
    "VPPrecond",
    "iDDPMPrecond",
    "karras_sigmas",
    "plan_steps",
    "randn",
    "sample",
]
