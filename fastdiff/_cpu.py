"""The C++ CPU backend: the fastdiff_cpu ops of fastdiff._C (csrc/bindings.cpp, csrc/cpu/).

Importing this module loads the compiled extension (fastdiff/_ext.py: the installed one when it was built for
this torch, else a `fastdiff build` one) and raises ImportError with the reason when neither can be loaded
(fastdiff/backends.py turns that into a reason). The functions have the Triton backend's signatures.
"""
from __future__ import annotations

import torch

from ._compiled import register
from ._ext import load

load("cpu")  # registers torch.ops.fastdiff_cpu

_ops = register("fastdiff_cpu")
randn, churn, euler_step, heun_step, skip_mix = _ops.randn, _ops.churn, _ops.euler_step, _ops.heun_step, _ops.skip_mix
churn_out, euler_step_out, heun_step_out, skip_mix_out = (_ops.churn_out, _ops.euler_step_out, _ops.heun_step_out,
                                                          _ops.skip_mix_out)
loss_input, loss_error = _ops.loss_input, _ops.loss_error
stream_words = _ops.stream_words  # the raw Philox words, for bit-exact tests


@torch.library.register_fake("fastdiff_cpu::stream_words")
def _(seeds, numel_per_sample, offset):
    return torch.empty(seeds.shape[0], numel_per_sample, dtype=torch.int64, device=seeds.device)
