"""Test set-up: without a CUDA device, Triton kernels run on CPU tensors through Triton's interpreter.

TRITON_INTERPRET must be set before triton is first imported, which is why it is set here, at collection.
On a machine with a GPU the same tests run the compiled kernels on CUDA tensors.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.pop("FASTDIFF_BACKEND", None)  # the tests choose their backends themselves


import pytest  # noqa: E402


@pytest.fixture
def churn_offsets(monkeypatch):
    """The noise offset of every churn (functional or out=) that fastdiff.sample's loop runs, in order.

    The loop calls its backend's ops through fastdiff.ops.bound, not the checked fastdiff.ops.churn, so this wraps
    the churn ops of the table the loop binds."""
    from types import SimpleNamespace

    import fastdiff.sampling.loop as loop_module

    offsets, real_bound = [], loop_module.bound

    def recording(op):
        def churn(x, seeds, offset, noise_std, *out):
            offsets.append(int(offset))
            return op(x, seeds, offset, noise_std, *out)

        return churn

    def recording_bound(backend):
        table = real_bound(backend)
        return SimpleNamespace(**{**vars(table), "churn": recording(table.churn),
                                  "churn_out": recording(table.churn_out)})

    monkeypatch.setattr(loop_module, "bound", recording_bound)
    return offsets
