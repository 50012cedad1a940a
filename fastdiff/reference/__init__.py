"""The reference path: one pure-PyTorch function per fused op, the specification every kernel is tested against.

Each op here has twins of the same stem name in `kernels/` (Triton) and `csrc/` (C++/CUDA) once those
backends implement it.
"""
from .skip_mix import skip_mix

__all__ = ["skip_mix"]
