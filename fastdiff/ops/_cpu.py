"""The C++ CPU backend: the CPU kernels of the `fastdiff` ops, in fastdiff._C (csrc/bindings.cpp, csrc/cpu/).

Importing this module loads the CPU part (fastdiff/ops/registration.py) and raises ImportError with the reason when it
cannot be loaded (fastdiff/ops/backends.py turns that into a reason). The functions have the Triton backend's
signatures; fastdiff/ops/backends.py sends them CPU tensors only.
"""
from __future__ import annotations

from .registration import *  # noqa: F401,F403  (the ops of torch.ops.fastdiff)
