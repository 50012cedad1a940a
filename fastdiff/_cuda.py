"""The CUDA backend: the fastdiff_cuda ops of fastdiff._C_cuda (csrc/cuda/), built when torch is a CUDA build.

Importing this module loads the compiled extension (fastdiff/_ext.py: the installed one when it was built for
this torch, else a `fastdiff build` one) and raises ImportError with the reason when neither can be loaded
(fastdiff/backends.py turns that into a reason). The functions have the Triton backend's signatures.
"""
from __future__ import annotations

from ._compiled import register
from ._ext import load

load("cuda")  # registers torch.ops.fastdiff_cuda

_ops = register("fastdiff_cuda")
randn, churn, euler_step, heun_step, skip_mix = _ops.randn, _ops.churn, _ops.euler_step, _ops.heun_step, _ops.skip_mix
churn_out, euler_step_out, heun_step_out, skip_mix_out = (_ops.churn_out, _ops.euler_step_out, _ops.heun_step_out,
                                                          _ops.skip_mix_out)
loss_input, loss_error = _ops.loss_input, _ops.loss_error
