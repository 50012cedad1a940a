"""Test set-up: without a CUDA device, Triton kernels run on CPU tensors through Triton's interpreter.

TRITON_INTERPRET must be set before triton is first imported, which is why it is set here, at collection.
On a machine with a GPU the same tests run the compiled kernels on CUDA tensors.

The fixtures shared by several test files live here; reusable test functions (tolerances, the ring's distribution
check, the list of compiled backends) in fastdiff.testing.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.pop("FASTDIFF_BACKEND", None)  # the tests choose their backends themselves

import torch._functorch.config as functorch_config  # noqa: E402

import fastdiff.sampling.graph as graphed  # noqa: E402
from fastdiff.testing import compiled_backend_params, torch_threads  # noqa: E402


@pytest.fixture(params=compiled_backend_params())
def backend(request):
    """A compiled backend (tests/test_fused_ops.py, tests/test_fused_loss.py): "triton", the C++ CPU kernels with
    torch's thread count set to 1 (restored afterwards: small inputs run on one thread anyway, and the thread tests
    set 2 themselves), and "cuda" where it is built. A test that parametrizes `backend` itself overrides this."""
    name, _, threads = request.param.partition("-")
    if not threads:
        yield name
        return
    with torch_threads(int(threads[0])):
        yield name


@pytest.fixture
def opaque_triton_ops():
    """Keep triton_ops opaque to AOTAutograd: the interpreter cannot run a kernel on fake tensors.

    On a GPU, torch.compile decomposes triton_ops into their kernels; under TRITON_INTERPRET=1 that tracing
    would execute the interpreted kernel on FakeTensors, so the tests check the op-level path instead.
    """
    if torch.cuda.is_available():
        yield
        return
    with functorch_config.patch(decompose_custom_triton_ops=False):
        yield


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


@pytest.fixture
def emulated_graphs(monkeypatch):
    """sample(cuda_graph=...) with emulated graphs on CPU tensors, and an empty cache before and after."""
    monkeypatch.setattr(graphed, "_graph_kind_for", lambda latents: "emulated")
    graphed.clear_cache()
    yield
    graphed.clear_cache()


@pytest.fixture(scope="module")
def unet():
    """fastdiff.testing.tiny_unet(): a tiny random-weight diffusers UNet2DModel, one per test module."""
    from fastdiff.testing import tiny_unet

    return tiny_unet()
