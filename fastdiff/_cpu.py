"""The C++ CPU backend: the CPU kernels of the `fastdiff` ops, in fastdiff._C (csrc/bindings.cpp, csrc/cpu/).

Importing this module loads the CPU part (fastdiff/_compiled.py) and raises ImportError with the reason when it
cannot be loaded (fastdiff/backends.py turns that into a reason). The functions have the Triton backend's
signatures; fastdiff/backends.py sends them CPU tensors only.
"""
from __future__ import annotations

from ._compiled import (churn, churn_out, euler_step, euler_step_out, heun_step, heun_step_out,  # noqa: F401
                        loss_error, loss_input, randn, skip_mix, skip_mix_out, stream_words)
