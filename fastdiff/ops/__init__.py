"""fastdiff.ops: the fused elementwise ops of diffusion sampling and training, one dispatch point for every backend.

Where each part of an op lives (docs/backends.md has the table per op):

    dispatch.py      the public functions below: check the inputs, resolve the backend, call it
    backends.py      which backend runs given inputs, and why the others cannot ("auto", or one by name)
    reference/       the specification: one pure-PyTorch function per op (docs/formulas.md#fused-ops)
    kernels/         the Triton kernels, one file per op; _triton.py registers them as torch ops
    registration.py  the C++ op library torch.ops.fastdiff (csrc/): its fake kernels and autograd; the dispatcher
                     picks the CPU or CUDA kernel by the inputs' device
    autograd.py      the backward passes of the compiled skip_mix and loss_error, shared by Triton and C++
"""
from __future__ import annotations

from . import backends, reference
from .backends import BackendUnavailableError, resolve
from .dispatch import (churn, combine, euler_step, heun_step, loss_error, loss_input, multistep_step, overlaps_differently,
                       randn, skip_mix)

__all__ = ["BackendUnavailableError", "backends", "churn", "combine", "euler_step", "heun_step", "loss_error", "loss_input",
           "multistep_step", "overlaps_differently", "randn", "reference", "resolve", "skip_mix"]
