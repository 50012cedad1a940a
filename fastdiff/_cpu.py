"""The C++ CPU backend: the CPU kernels of the `fastdiff` ops, in fastdiff._C (csrc/bindings.cpp, csrc/cpu/).

Importing this module loads the CPU part (fastdiff/_compiled.py) and raises ImportError with the reason when it
cannot be loaded (fastdiff/backends.py turns that into a reason). The functions have the Triton backend's
signatures; fastdiff/backends.py sends them CPU tensors only.
"""
from __future__ import annotations

from ._compiled import *  # noqa: F401,F403  (the ops of torch.ops.fastdiff)
