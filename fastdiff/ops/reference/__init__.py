"""The reference path: one pure-PyTorch function per fused op, the specification every kernel is tested against.

The formulas, their sources and the rules every backend follows are in docs/formulas.md#fused-ops.

Each op here has twins of the same stem name in `kernels/` (Triton) and, as they land, `csrc/` (C++/CUDA).
The generator's reference (op `randn`) is fastdiff/rng.py.
"""
from ...rng import randn
from .churn import churn
from .combine import combine
from .euler_step import euler_step
from .heun_step import heun_step
from .loss import loss_error, loss_input
from .multistep_step import multistep_step
from .skip_mix import skip_mix

__all__ = ["churn", "combine", "euler_step", "heun_step", "loss_error", "loss_input", "multistep_step", "randn", "skip_mix"]
