"""Argument checks shared by the public API: each error names the argument, the value and what is accepted."""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch


def check_int(name: str, value, minimum: int | None = None) -> int:
    """An integer (Python or numpy, not a bool) of at least `minimum`, returned as int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def check_shape(name: str, shape, min_ndim: int = 0, what: str = "") -> tuple[int, ...]:
    """A tensor shape: an int n (the shape (n,)) or a sequence (tuple, list, torch.Size) of ints >= 0, at least
    `min_ndim` of them; Python or numpy ints, not bools, floats or strings. Returned as a tuple of ints.
    `what` describes the dimensions in errors, e.g. "(batch, ...)"."""
    accepted = f"an int or a sequence of non-negative ints{' ' + what if what else ''}"
    if _is_int(shape):
        shape = (shape,)
    elif isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"{name}: expected {accepted}, got {shape!r} of type {type(shape).__name__}")
    for i, size in enumerate(shape):
        if not _is_int(size):
            raise TypeError(f"{name}: expected {accepted}, got {tuple(shape)!r}: dimension {i} is {size!r}, a "
                            f"{type(size).__name__}")
        if size < 0:
            raise ValueError(f"{name}: expected {accepted}, got {tuple(shape)!r}: dimension {i} is {size}, below 0")
    if len(shape) < min_ndim:
        raise ValueError(f"{name}: expected {accepted} with at least {min_ndim} dimension{'s' if min_ndim > 1 else ''}, "
                         f"got {tuple(shape)!r}")
    return tuple(int(size) for size in shape)


def _is_int(value) -> bool:
    """A Python or numpy integer (or a symbolic one, in a shape traced by torch.compile), not a bool."""
    return isinstance(value, (numbers.Integral, torch.SymInt)) and not isinstance(value, bool)


def check_real(name: str, value, *, minimum: float | None = None, allow_inf: bool = False) -> float:
    """A real number (Python, numpy or a one-element floating tensor; not NaN; +inf only if allowed), as float."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0)):
        accepted = "a finite number or +inf" if allow_inf else "a finite number"
        raise ValueError(f"{name}: expected {accepted}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def check_positive(name: str, value, allow_inf: bool = False) -> float:
    """A real number > 0."""
    value = check_real(name, value, allow_inf=allow_inf)
    if not value > 0:
        raise ValueError(f"{name}: must be > 0, got {value}")
    return value


def check_below(low_name: str, low: float, high_name: str, high: float) -> None:
    """low < high, e.g. sigma_min < sigma_max."""
    if not low < high:
        raise ValueError(f"{low_name}: must be below {high_name}, got {low_name}={low} and {high_name}={high}")


def check_unit_interval(name: str, value) -> float:
    """A real number in the open interval (0, 1)."""
    value = check_positive(name, value)
    if not value < 1:
        raise ValueError(f"{name}: must be in (0, 1), got {value}")
    return value


def check_output(name: str, out, like: torch.Tensor, what: str) -> torch.Tensor:
    """A callable's result: a floating tensor of like's shape on like's device (`what` names the call)."""
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        got = out.dtype if isinstance(out, torch.Tensor) else type(out).__name__
        raise TypeError(f"{name}: expected {what} to return a floating-point tensor, got {got}")
    if out.shape != like.shape:
        raise ValueError(f"{name}: expected {what} to return the shape {tuple(like.shape)}, got {tuple(out.shape)}")
    if out.device != like.device:
        raise ValueError(f"{name}: expected {what} to return a tensor on {like.device}, got one on {out.device}")
    return out


def check_choice(name: str, value, accepted, *, allow_none: bool = False):
    """One of the `accepted` names (a string; None too when allow_none), returned as it is."""
    if (value is None and allow_none) or (isinstance(value, str) and value in accepted):
        return value
    options = ", ".join(map(repr, accepted)) + (" or None" if allow_none else "")
    raise ValueError(f"{name}: expected one of {options}, got {value!r}")


def check_bool(name: str, value) -> bool:
    """True or False (not 0, 1 or another truthy value)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def as_float_tensor(value) -> torch.Tensor:
    """A time or noise level as a floating tensor: floating tensors as they are, integer tensors and Python numbers
    (or sequences of them) in float64, never float32."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value
    return torch.as_tensor(value, dtype=torch.float64)


def check_floating(name: str, t) -> None:
    """A floating-point tensor with a batch dimension, [B, ...]."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim < 1:
        got = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"{name}: expected a floating-point tensor of shape [B, ...], got {got}")


def check_like(name: str, t, like: torch.Tensor) -> None:
    """A floating-point tensor of like's shape on like's device."""
    check_floating(name, t)
    if t.shape != like.shape:
        raise ValueError(f"{name}: expected the shape {tuple(like.shape)}, got {tuple(t.shape)}")
    if t.device != like.device:
        raise ValueError(f"{name}: expected a tensor on {like.device}, got one on {t.device}")
