"""The CUDA backend: the CUDA kernels of the `fastdiff` ops, in fastdiff._C_cuda (csrc/cuda/), built when torch is
a CUDA build.

Importing this module loads the CPU part, which defines the ops, then the CUDA part, which registers their CUDA
kernels (fastdiff/_ext.py), and raises ImportError with the reason when either cannot be loaded
(fastdiff/ops/backends.py turns that into a reason). The functions are the CPU backend's, the same torch.ops.fastdiff
ops: the dispatcher runs the CUDA kernels on CUDA tensors, which fastdiff/ops/backends.py sends here only.
"""
from __future__ import annotations

from .._ext import load

load("cuda")  # after the CPU part: registers the CUDA kernels of torch.ops.fastdiff

from .registration import *  # noqa: E402,F401,F403  (the ops of torch.ops.fastdiff)
