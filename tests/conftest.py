"""Test set-up: without a CUDA device, Triton kernels run on CPU tensors through Triton's interpreter.

TRITON_INTERPRET must be set before triton is first imported, which is why it is set here, at collection.
On a machine with a GPU the same tests run the compiled kernels on CUDA tensors.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.pop("FASTDIFF_BACKEND", None)  # the tests choose their backends themselves
