"""Which backend runs the fused ops, and why the others cannot.

Only the reference path exists in this version; the Triton and C++/CUDA backends register here as they
land. A backend asked for by name never falls back silently: it runs, or raises with its reasons.
"""
from __future__ import annotations

import importlib.util

BACKENDS = ("reference", "triton", "cpu", "cuda")
ACCEPTED = ("auto",) + BACKENDS


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name and cannot run; the message lists every reason."""


def unavailable_reasons(name: str) -> list[str]:
    """Why `name` cannot run here: an empty list means it can."""
    check_name(name)
    if name == "reference":
        return []
    reasons = [f"the {name} kernels are not implemented in this version of fastdiff"]
    if name == "triton" and importlib.util.find_spec("triton") is None:
        reasons.append("the triton package is not installed (pip install triton)")
    return reasons


def resolve(backend: str) -> str:
    """The backend that will run: 'auto' picks the fastest available one; a named one must be available."""
    check_name(backend)
    if backend == "auto":
        return next(name for name in BACKENDS if not unavailable_reasons(name))
    reasons = unavailable_reasons(backend)
    if reasons:
        raise BackendUnavailableError(f"backend={backend!r} cannot run: " + "; ".join(reasons))
    return backend


def check_name(name) -> str:
    if name not in ACCEPTED:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, ACCEPTED))}, got {name!r}")
    return name


def info() -> dict[str, list[str]]:
    """Every backend with its reasons for being unavailable (empty when available)."""
    return {name: unavailable_reasons(name) for name in BACKENDS}
