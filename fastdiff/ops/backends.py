"""Which backend runs the fused ops, and why the others cannot.

Backends: "reference" (pure PyTorch, the specification), "triton" (kernels/), "cpu" (C++, csrc/cpu) and
"cuda" (csrc/cuda). `backend="auto"` takes the fastest backend that can run the given inputs; the environment
variable FASTDIFF_BACKEND replaces "auto". A backend asked for by name never falls back: it runs, or
raises BackendUnavailableError with every reason it cannot.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

from .._validate import check_choice

BACKENDS = ("reference", "triton", "cpu", "cuda")
ACCEPTED = ("auto",) + BACKENDS
AUTO_ORDER = ("cuda", "triton", "cpu", "reference")  # fastest first
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what the fused kernels take as state
ENV_VAR = "FASTDIFF_BACKEND"

log = logging.getLogger("fastdiff")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name and cannot run these inputs; the message lists every reason."""


def check_name(name) -> str:
    return check_choice("backend", name, ACCEPTED)


def triton_interpreted() -> bool:
    """True when TRITON_INTERPRET=1: Triton kernels then run on CPU tensors through the interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_INSTALL_REASONS: dict[str, tuple[str, ...]] = {}  # a plain dict (not lru_cache) so torch.compile traces lookups


def install_reasons(name: str) -> tuple[str, ...]:
    """Why `name` cannot run at all in this installation (empty when it can run on some inputs); found once."""
    if name not in _INSTALL_REASONS:
        _INSTALL_REASONS[name] = _find_install_reasons(check_name(name))
    return _INSTALL_REASONS[name]


def prepare(backend: str = "auto") -> str:
    """Check `backend` and find, now, the install reasons of every backend it may resolve to.

    Finding them imports the backends' modules; objects that dispatch later (preconditioners, losses) call this
    when built, so that a first call under torch.compile(fullgraph=True) traces no import. Returns `backend`.
    """
    for name in AUTO_ORDER if check_name(backend) == "auto" else (backend,):
        install_reasons(name)
    return backend


def _find_install_reasons(name: str) -> tuple[str, ...]:
    if name == "reference":
        return ()
    if name == "triton":
        reasons = []
        if importlib.util.find_spec("triton") is None:
            reasons.append("the triton package is not installed (pip install triton)")
        if not hasattr(torch.library, "triton_op"):
            reasons.append(f"torch {torch.__version__} has no torch.library.triton_op (needs torch >= 2.6)")
        if not reasons:
            try:
                from . import _triton  # noqa: F401  (imports triton and registers the ops)
            except Exception as error:  # a broken triton install must not break `import fastdiff`
                reasons.append(f"importing the Triton kernels failed: {type(error).__name__}: {error}")
        return tuple(reasons)
    module, extension = ("_cpu", "fastdiff._C") if name == "cpu" else ("_cuda", "fastdiff._C_cuda")
    try:
        importlib.import_module(f".{module}", __package__)  # loads the extension and registers its ops
    except ImportError as error:
        return (f"the C++ extension {extension} is not available: {error}",)
    except RuntimeError as error:  # built from older sources: an op the Python side registers is missing
        return (f"the C++ extension {extension} is out of date with this fastdiff (rebuild it with "
                f"`pip install --no-build-isolation -e .`): {error}",)
    return ()


def input_reasons(name: str, state: torch.Tensor | None, tensors: tuple[torch.Tensor, ...]) -> list[str]:
    """Why `name` cannot run on these inputs: `state` is the tensor whose dtype the result takes."""
    reasons = []
    if name == "reference":
        return reasons
    devices = {t.device.type for t in tensors}
    if len(devices) > 1:
        reasons.append(f"the tensors are on different device types {sorted(devices)}")
    if name == "cpu" and devices - {"cpu"}:
        reasons.append(f"the C++ CPU kernels take CPU tensors, got tensors on {sorted(devices - {'cpu'})}")
    if name == "cuda" and devices - {"cuda"}:
        reasons.append(f"the CUDA kernels take CUDA tensors, got tensors on {sorted(devices - {'cuda'})}")
    if name == "cuda" and not tensors and not torch.cuda.is_available():
        reasons.append("no CUDA device is available")  # no inputs to go by: the machine decides
    if name == "triton":
        if "cpu" in devices and not triton_interpreted():
            reasons.append("the tensors are on the CPU; Triton kernels run on CUDA devices (or on the CPU under TRITON_INTERPRET=1)")
        if devices - {"cpu", "cuda"}:
            reasons.append(f"Triton kernels run on CUDA devices, got {sorted(devices - {'cpu', 'cuda'})}")
    if state is not None and state.dtype not in KERNEL_DTYPES:
        reasons.append(f"the fused kernels compute in float32 and take float32/float16/bfloat16 state, got {state.dtype} "
                       f"(backend='reference' runs float64; 'auto' picks it)")
    return reasons


def reasons(name: str, state: torch.Tensor | None = None, tensors: tuple[torch.Tensor, ...] = ()) -> list[str]:
    """Every reason `name` cannot run these inputs; an empty list means it can."""
    found = list(install_reasons(name))
    return found + input_reasons(name, state, tensors) if not found else found


def resolve(backend: str = "auto", state: torch.Tensor | None = None, tensors: tuple[torch.Tensor, ...] = ()) -> str:
    """The backend that runs these inputs. 'auto' (or FASTDIFF_BACKEND) picks the fastest that can; a named one must."""
    check_name(backend)
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto")
        check_choice(ENV_VAR, backend, ACCEPTED)
    if backend != "auto":
        found = reasons(backend, state, tensors)
        if found:
            raise BackendUnavailableError(f"backend={backend!r} cannot run: " + "; ".join(found))
        return backend
    skipped = []
    for name in AUTO_ORDER:
        found = reasons(name, state, tensors)
        if name == "triton" and not found and all(t.device.type == "cpu" for t in tensors):
            found = ["the Triton interpreter is for testing, not speed"]
        if not found:
            if skipped and name == "reference" and any(t.device.type == "cuda" for t in tensors):
                _log_fallback(tuple(skipped))
            return name
        skipped.append(f"{name}: {'; '.join(found)}")
    raise AssertionError("the reference backend can always run")  # pragma: no cover


@functools.lru_cache(maxsize=64)
def _log_fallback(skipped: tuple[str, ...]) -> None:
    """One log line per distinct reason set when CUDA inputs end up on the reference path."""
    log.warning("fastdiff: running the reference path on CUDA tensors because %s", " | ".join(skipped))


def info() -> dict[str, list[str]]:
    """Every backend with the reasons it cannot run in this installation (empty when it can)."""
    return {name: list(install_reasons(name)) for name in BACKENDS}
