"""The sampler's step ops bound to one backend, unchecked: what a sampling loop calls on every step.

The public ops (fastdiff.ops.churn, euler_step, ..., dispatch.py) check their tensors and resolve the backend on
every call: several microseconds, several times a kernel's cost on a small batch. A sampling loop checks its
tensors and resolves its backend once per call (fastdiff.sampling.loop.build_loop), then calls `bound(backend)`'s
ops, which go straight to the op itself: the registered op (torch.ops.fastdiff.* for "cpu" and "cuda",
torch.ops.fastdiff_triton.* for "triton") or the reference function. So the caller must pass what the public ops
would have made of their arguments:

  - tensors on the backend's device, the state contiguous in a dtype the backend takes (backends.resolve said so);
  - per-step values as tensors of one value or one per sample, on that device (a loop's table views), seeds as an
    int64 tensor [B] and the noise offset as an int64 tensor of one value; never Python numbers (the registered ops
    refuse them, and a sampling loop must not make tensors from them). combine(x, h0, h1, h2, h3, coeffs, seeds,
    offset, noise) takes its six coefficients as one tensor and None for each absent h, and for seeds and offset or
    noise when its update draws or reads no noise;
  - `out` (the last argument of each <name>_out) contiguous, of the state's shape and dtype, and either one of the
    inputs exactly or overlapping none of them. The C++ ops check contiguity, shapes and overlaps themselves; the
    Triton and reference ones do not, so the loop makes the net's outputs contiguous before they reach an op.

Each table has, for every name in STEP_OPS, the functional op <name>(*args) -> Tensor and <name>_out(*args, out),
which writes into `out` and returns nothing. A new step op is one more name in STEP_OPS, once it exists as
reference.<name> and as the <name> and <name>_out ops of every compiled backend.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import torch

from . import reference

STEP_OPS = ("churn", "euler_step", "heun_step", "multistep_step", "combine")
NAMESPACES = {"cpu": "fastdiff", "cuda": "fastdiff", "triton": "fastdiff_triton"}  # each compiled backend's op library


@functools.lru_cache(maxsize=None)
def bound(backend: str) -> SimpleNamespace:
    """The step ops of a resolved backend ("reference", "cpu", "cuda" or "triton"), with no checks in between."""
    table = {}
    if backend == "reference":
        for name in STEP_OPS:
            function = getattr(reference, name)
            table[name], table[f"{name}_out"] = function, _writing_into_out(function)
    else:
        if backend not in NAMESPACES:
            raise ValueError(f"backend: expected one of 'reference', {', '.join(map(repr, NAMESPACES))}, got {backend!r}")
        _load(backend)
        library = getattr(torch.ops, NAMESPACES[backend])
        for name in STEP_OPS:
            table[name], table[f"{name}_out"] = _callable(getattr(library, name)), _callable(getattr(library, f"{name}_out"))
    return SimpleNamespace(backend=backend, **table)


def _callable(packet):
    """The op's default overload as the dispatcher's own callable: OpOverload.__call__ only forwards to its `_op`
    (a Python frame per call, a quarter of a small kernel's cost), so `_op` is taken where it exists."""
    overload = packet.default
    return getattr(overload, "_op", overload)


def _writing_into_out(function):
    """The reference function as an out= op: its result copied into `out`."""

    def into_out(*args):
        args[-1].copy_(function(*args[:-1]))

    return into_out


def _load(backend: str) -> None:
    """Import the module that registers the backend's ops (backends.resolve has already found that it can)."""
    if backend == "triton":
        from . import _triton  # noqa: F401
    elif backend == "cpu":
        from . import _cpu  # noqa: F401
    else:
        from . import _cuda  # noqa: F401
