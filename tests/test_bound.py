"""fastdiff.ops.bound: the step ops a sampling loop calls, bound once to a backend, and the loop that uses them.

Each bound op is the public op's computation without its checks: the same bits as fastdiff.ops.<name>(...,
backend=...), its out= form writing into the given tensor. The sampling loop resolves its backend and checks its
tensors once per call, then calls only bound ops: no public (checked) op and no backend resolution per step.
"""
import importlib.util
import os

import pytest
import torch

import fastdiff
from fastdiff import ops
from fastdiff.ops.bound import STEP_OPS, bound
from fastdiff.testing import assert_equal

BACKENDS = ["reference"] + (["cpu"] if not ops.backends.install_reasons("cpu") else []) + \
    (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" and importlib.util.find_spec("triton") else [])


def step_args(name):
    """Arguments of step op `name` as a sampling loop passes them: contiguous state, per-sample or one-value tensors."""
    g = torch.Generator().manual_seed(0)
    x, d, d2 = (torch.randn(3, 2, 5, generator=g) for _ in range(3))
    t_hat, t_next = torch.tensor([2.0, 2.0, 2.0]), torch.tensor([1.5, 1.5, 1.5])
    return {"churn": (x, torch.tensor([1, 2, 3]), torch.tensor(7, dtype=torch.int64), torch.tensor(0.3)),
            "euler_step": (x, d, t_hat, t_next),
            "heun_step": (x, d, d2, t_hat, t_next),
            "multistep_step": (x, d, d2, torch.tensor(0.4), t_hat, t_next),
            # combine's positional form: x, h0..h3 (None where absent), coeffs, seeds, offset, noise
            "combine": (x, d, None, d2, None, torch.tensor([0.9, 0.2, -0.1, 0.3, 0.5, 0.7]), torch.tensor([1, 2, 3]),
                        torch.tensor(7, dtype=torch.int64), None)}[name]


def public_op(name, args, backend):
    """The checked public op on a bound op's arguments (combine's public form takes its history as one sequence and
    its noise by keyword)."""
    if name == "combine":
        x, h0, h1, h2, h3, coeffs, seeds, offset, noise = args
        return ops.combine(x, (h0, h1, h2, h3), coeffs, seeds=seeds, offset=offset, noise=noise, backend=backend)
    return getattr(ops, name)(*args, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", STEP_OPS)
def test_bound_ops_are_the_public_ops_unchecked(backend, name):
    table, args = bound(backend), step_args(name)
    want = public_op(name, args, backend)
    assert_equal(getattr(table, name)(*args), want)
    out = torch.full_like(want, float("nan"))
    assert getattr(table, f"{name}_out")(*args, out) is None
    assert_equal(out, want)
    assert bound(backend) is table  # bound once per backend


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="backend: expected one of 'reference', 'cpu', 'cuda', 'triton', got 'gpu'"):
        bound("gpu")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", ["heun", "euler_ancestral", "dpmpp_2m"])
def test_loop_resolves_once_and_calls_no_checked_op(backend, solver, monkeypatch):
    """A sampling call resolves its backend once, whatever its number of steps, and never calls the public ops."""
    resolved = []
    real_resolve = ops.backends.resolve
    monkeypatch.setattr(ops.backends, "resolve", lambda *a, **k: resolved.append(1) or real_resolve(*a, **k))
    for name in STEP_OPS:
        def refuse(*args, name=name, **kwargs):
            raise AssertionError(f"the loop called the checked fastdiff.ops.{name}")

        monkeypatch.setattr(ops, name, refuse)
        monkeypatch.setattr(ops.dispatch, name, refuse)
    net = fastdiff.GaussianMixture(torch.linspace(-1, 1, 12).reshape(3, 4), [0.3, 0.5, 0.2], [0.5, 0.3, 0.2])
    x = fastdiff.randn([1, 2, 3], (3, 4))
    for reuse in (False, True):
        resolved.clear()
        out = fastdiff.sample(net, x, num_steps=6, solver=solver, seeds=[1, 2, 3], backend=backend, S_churn=0.0,
                              reuse_buffers=reuse)
        assert resolved == [1] and out.shape == x.shape and bool(out.isfinite().all())
