"""fastdiff.ops: the fused elementwise ops of diffusion sampling, one dispatch point for every backend.

Every op takes `backend="auto" | "reference" | "triton" | "cpu" | "cuda"` (see fastdiff/ops/backends.py), checks
its inputs once here, and runs the same formula on whichever backend it dispatches to
(docs/formulas.md#fused-ops):

    randn(seeds, shape, offset)                    eps: fastdiff's normal stream of each sample's seed
    churn(x, seeds, offset, noise_std)             x + noise_std * eps
    euler_step(x_hat, denoised, t_hat, t_next)     x_hat + (t_next - t_hat) (x_hat - denoised) / t_hat
    heun_step(x_hat, denoised, denoised_next, t_hat, t_next)
                                                   x_hat + (t_next - t_hat) (d_cur + d_prime) / 2
    multistep_step(x, denoised, denoised_prev, c, t, t_next)
                                                   D' + (t_next / t) (x - D'), D' = D + c (D - D_prev)
    combine(x, history, coeffs, seeds=, offset=, noise=)
                                                   a x + w0 h0 + ... + w3 h3 + n z: a solver's update, z drawn or given
    skip_mix(x, F, sigma, precond, sigma_data)     c_skip(sigma) x + c_out(sigma) F
    loss_input(y, sigma, c_in, seeds)              c_in (y + sigma n): a denoising loss's network input
    loss_error(y, F, sigma, c_skip, c_out, weight, seeds)
                                                   weight (c_skip (y + sigma n) + c_out F - y)^2, with d/dF

Per-step values (offset, noise_std, t_hat, t_next, c, sigma) may be Python numbers or tensors of one value or one
per sample ([B]); combine's six coeffs are shared by every sample (a tensor of 6 values, or 6 numbers). A sampling
loop passes device tensors, so no per-step value is ever baked into a kernel launch. `out=` writes the result into
a given contiguous tensor (which may be one of the inputs: every op is elementwise), so a loop can run on fixed
buffers. The fused kernels compute in float32 and return the state's dtype (float32 for skip_mix); the
reference also runs float64.
"""
from __future__ import annotations

import math

import torch

from . import reference
from .._validate import check_choice
from .._validate import check_floating as _check_floating, check_like as _check_like
from .backends import resolve
from .reference.skip_mix import PRECOND_CODES, PRECONDS
from ..rng import LOSS_NOISE_OFFSET, MASK32, MAX_OFFSET, check_randn_args, normal_from_seeds, seeds_tensor

def randn(seeds, shape, *, offset=0, dtype: torch.dtype = torch.float32, device=None, backend: str = "auto") -> torch.Tensor:
    """Standard normals of `shape` ([B, ...]) whose sample b comes from the stream of seeds[b] at `offset`."""
    seeds, shape = check_randn_args(seeds, shape, dtype, device)
    offset = _offset_tensor(offset, seeds.device)
    name = resolve(backend, torch.empty(0, dtype=dtype, device=seeds.device), (seeds, offset))
    if name == "reference":
        return normal_from_seeds(seeds, shape, offset & MASK32, (offset >> 32) & MASK32, dtype)
    return _impl(name).randn(seeds, offset, list(shape), dtype)


def churn(x: torch.Tensor, seeds, offset, noise_std, *, out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """x + noise_std * eps with eps = randn(seeds, x.shape, offset=offset): stochastic churn's noise injection."""
    _check_floating("x", x)
    seeds = seeds_tensor(seeds, batch_size=x.shape[0], device=x.device)
    offset = _offset_tensor(offset, x.device)
    noise_std = _per_sample_value("noise_std", noise_std, x)
    _check_out(out, x, x.dtype, (("x", x),))
    name = resolve(backend, x, (x, seeds, offset, noise_std))
    x = x.contiguous()
    if name == "reference":
        return _into(out, reference.churn(x, seeds, offset, noise_std))
    if out is not None:
        _impl(name).churn_out(x, seeds, offset, noise_std, out)
        return out
    return _impl(name).churn(x, seeds, offset, noise_std)


def euler_step(x_hat: torch.Tensor, denoised: torch.Tensor, t_hat, t_next, *, out: torch.Tensor | None = None,
               backend: str = "auto") -> torch.Tensor:
    """x_hat + (t_next - t_hat) d_cur with d_cur = (x_hat - denoised) / t_hat; the result has x_hat's dtype."""
    _check_floating("x_hat", x_hat)
    _check_like("denoised", denoised, x_hat)
    t_hat, t_next = _per_sample_value("t_hat", t_hat, x_hat), _per_sample_value("t_next", t_next, x_hat)
    _check_out(out, x_hat, x_hat.dtype, (("x_hat", x_hat), ("denoised", denoised)))
    name = resolve(backend, x_hat, (x_hat, denoised, t_hat, t_next))
    if name == "reference":
        return _into(out, reference.euler_step(x_hat, denoised, t_hat, t_next))
    args = (x_hat.contiguous(), denoised.contiguous(), t_hat, t_next)
    if out is not None:
        _impl(name).euler_step_out(*args, out)
        return out
    return _impl(name).euler_step(*args)


def heun_step(x_hat: torch.Tensor, denoised: torch.Tensor, denoised_next: torch.Tensor, t_hat, t_next, *,
              out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """Heun's step x_hat + (t_next - t_hat) (d_cur + d_prime) / 2, given denoised = D(x_hat; t_hat) and
    denoised_next = D(x_next; t_next) for the Euler point x_next (which is recomputed, not passed)."""
    _check_floating("x_hat", x_hat)
    _check_like("denoised", denoised, x_hat)
    _check_like("denoised_next", denoised_next, x_hat)
    t_hat, t_next = _per_sample_value("t_hat", t_hat, x_hat), _per_sample_value("t_next", t_next, x_hat)
    _check_out(out, x_hat, x_hat.dtype, (("x_hat", x_hat), ("denoised", denoised), ("denoised_next", denoised_next)))
    name = resolve(backend, x_hat, (x_hat, denoised, denoised_next, t_hat, t_next))
    if name == "reference":
        return _into(out, reference.heun_step(x_hat, denoised, denoised_next, t_hat, t_next))
    args = (x_hat.contiguous(), denoised.contiguous(), denoised_next.contiguous(), t_hat, t_next)
    if out is not None:
        _impl(name).heun_step_out(*args, out)
        return out
    return _impl(name).heun_step(*args)


def multistep_step(x: torch.Tensor, denoised: torch.Tensor, denoised_prev: torch.Tensor, c, t, t_next, *,
                   out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """DPM-Solver++(2M)'s step in one pass: D' + (t_next / t) (x - D') with D' = D + c (D - D_prev), the denoised
    extrapolated with the previous step's, then the Euler step from t to t_next; the result has x's dtype.

    denoised = D(x; t) and denoised_prev = D_prev, the previous step's; c is the extrapolation weight
    (StepPlan.multistep). With c = 0 this is the Euler step written as DDIM's update.
    """
    _check_floating("x", x)
    _check_like("denoised", denoised, x)
    _check_like("denoised_prev", denoised_prev, x)
    c, t, t_next = (_per_sample_value(n, v, x) for n, v in (("c", c), ("t", t), ("t_next", t_next)))
    _check_out(out, x, x.dtype, (("x", x), ("denoised", denoised), ("denoised_prev", denoised_prev)))
    name = resolve(backend, x, (x, denoised, denoised_prev, c, t, t_next))
    if name == "reference":
        return _into(out, reference.multistep_step(x, denoised, denoised_prev, c, t, t_next))
    args = (x.contiguous(), denoised.contiguous(), denoised_prev.contiguous(), c, t, t_next)
    if out is not None:
        _impl(name).multistep_step_out(*args, out)
        return out
    return _impl(name).multistep_step(*args)


def combine(x: torch.Tensor, history, coeffs, *, seeds=None, offset=None, noise: torch.Tensor | None = None,
            out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """A solver's update in one pass: a x + w0 h0 + w1 h1 + w2 h2 + w3 h3 + n z with (a, w0, w1, w2, w3, n) = coeffs;
    the result has x's dtype.

    history is a sequence of up to four tensors of x's shape (the stored denoised values or derivatives the update
    reads: h0, h1, ...), any of them None; an absent one's weight is not read. coeffs holds the six values, shared by
    every sample: a tensor of 6 values or a sequence of 6 numbers. z is fastdiff's noise randn(seeds, x.shape,
    offset=offset) when seeds is given (offset then required, as for churn), the given tensor `noise` (of x's
    shape), or absent (n not read) when neither is given.
    """
    _check_floating("x", x)
    history = _history(history, x)
    coeffs = _coeffs(coeffs, x)
    if seeds is not None and noise is not None:
        raise ValueError("seeds, noise: expected one source of noise, seeds (drawn in the kernel) or noise (a tensor), got both")
    if seeds is not None:
        if offset is None:
            raise ValueError("offset: expected the stream offset of the noise drawn from seeds (an int in [0, 2^64) or an "
                             "int64 tensor of one value), got None")
        seeds = seeds_tensor(seeds, batch_size=x.shape[0], device=x.device)
        offset = _offset_tensor(offset, x.device)
    elif offset is not None:
        raise ValueError(f"offset: only read with seeds (the noise is {'given' if noise is not None else 'absent'}), "
                         f"got {offset!r} without seeds")
    if noise is not None:
        _check_like("noise", noise, x)
    names = ("h0", "h1", "h2", "h3")
    inputs = (("x", x),) + tuple((n, h) for n, h in zip(names, history) if h is not None) + \
        ((("noise", noise),) if noise is not None else ())
    _check_out(out, x, x.dtype, inputs)
    tensors = tuple(t for _, t in inputs) + (coeffs,) + ((seeds, offset) if seeds is not None else ())
    name = resolve(backend, x, tensors)
    if name == "reference":
        return _into(out, reference.combine(x, *history, coeffs, seeds, offset, noise))
    args = (x.contiguous(), *(_contiguous(h) for h in history), coeffs, seeds, offset, _contiguous(noise))
    if out is not None:
        _impl(name).combine_out(*args, out)
        return out
    return _impl(name).combine(*args)


def _history(history, x: torch.Tensor) -> tuple:
    """combine's history as four entries h0..h3 (None where absent), each present one a tensor of x's shape."""
    if isinstance(history, torch.Tensor) or not isinstance(history, (list, tuple)):
        raise TypeError(f"history: expected a list or tuple of up to 4 tensors (or None), got {type(history).__name__}")
    if len(history) > 4:
        raise ValueError(f"history: expected up to 4 tensors (h0..h3), got {len(history)}")
    for k, h in enumerate(history):
        if h is not None:
            _check_like(f"history[{k}]", h, x)
    return tuple(history) + (None,) * (4 - len(history))


def _coeffs(coeffs, x: torch.Tensor) -> torch.Tensor:
    """combine's coefficients (a, w0, w1, w2, w3, n) as a floating tensor of shape [6] on x's device; Python numbers
    become float64 for a float64 x (the reference path's precision), float32 otherwise."""
    if isinstance(coeffs, torch.Tensor):
        if not coeffs.is_floating_point():
            raise TypeError(f"coeffs: expected a floating-point tensor, got a tensor of dtype {coeffs.dtype}")
        if coeffs.numel() != 6 or coeffs.ndim > 1:
            raise ValueError(f"coeffs: expected 6 values (a, w0, w1, w2, w3, n), got a tensor of shape {tuple(coeffs.shape)}")
        if coeffs.device != x.device:
            raise ValueError(f"coeffs: expected a tensor on {x.device}, got one on {coeffs.device}")
        return coeffs.reshape(6)
    if not isinstance(coeffs, (list, tuple)):
        raise TypeError(f"coeffs: expected a tensor or a sequence of 6 numbers, got {type(coeffs).__name__}")
    if len(coeffs) != 6:
        raise ValueError(f"coeffs: expected 6 values (a, w0, w1, w2, w3, n), got {len(coeffs)}")
    for c in coeffs:
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            raise TypeError(f"coeffs: expected real numbers, got {c!r} of type {type(c).__name__}")
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.tensor([float(c) for c in coeffs], dtype=dtype, device=x.device)


def skip_mix(x: torch.Tensor, F: torch.Tensor, sigma, *, precond: str = "edm", sigma_data: float = 0.5,
             out: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """D = c_skip(sigma) x + c_out(sigma) F with EDM Table 1's coefficients for `precond` ("edm", "vp", "ve", "iddpm").

    The result is float32 (float64 on the reference path when x or F is float64). Differentiable in x, F and sigma.
    """
    _check_floating("x", x)
    _check_like("F", F, x)
    check_choice("precond", precond, PRECONDS)
    if isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float)) or not sigma_data > 0 or math.isinf(sigma_data):
        raise ValueError(f"sigma_data: expected a finite number > 0, got {sigma_data!r}")
    sigma = _per_sample_value("sigma", sigma, x)
    state = x if F.dtype != torch.float64 else F  # a float64 F keeps the computation on the reference path
    name = resolve(backend, state, (x, F, sigma))
    if name == "reference":
        result = reference.skip_mix(x, F, sigma, precond, float(sigma_data))
        _check_out(out, x, result.dtype, (("x", x), ("F", F)))
        return _into(out, result)
    _check_out(out, x, torch.float32, (("x", x), ("F", F)))
    args = (x.contiguous(), F.contiguous(), sigma, PRECOND_CODES[precond], float(sigma_data))
    if out is not None:
        _impl(name).skip_mix_out(*args, out)
        return out
    return _impl(name).skip_mix(*args)


def loss_input(y: torch.Tensor, sigma, c_in, *, seeds=None, offset=LOSS_NOISE_OFFSET, noise: torch.Tensor | None = None,
               backend: str = "auto") -> torch.Tensor:
    """The network's input of a denoising loss, c_in * (y + sigma * n), in y's dtype.

    n is `noise` when given, else fastdiff's normal stream of seeds[b] at `offset` (drawn in-kernel); sigma and
    c_in are one value or one per sample. Not differentiable on the fused backends (training differentiates
    through the network, not the data); the reference path is plain torch.
    """
    _check_floating("y", y)
    seeds, offset, noise = _loss_noise_args(y, seeds, offset, noise)
    values = [_per_sample_value(name, value, y) for name, value in (("sigma", sigma), ("c_in", c_in))]
    name = resolve(backend, y, (y, seeds, offset, *values) + ((noise,) if noise is not None else ()))
    if name == "reference":
        return reference.loss_input(y, seeds, offset, noise, *values)
    _refuse_grad(name, (("y", y), ("sigma", values[0]), ("c_in", values[1]), ("noise", noise)))
    return _impl(name).loss_input(y.contiguous(), seeds, offset, _contiguous(noise), *_kernel_values(values, y))


def loss_error(y: torch.Tensor, F: torch.Tensor, sigma, c_skip, c_out, weight, *, seeds=None, offset=LOSS_NOISE_OFFSET,
               noise: torch.Tensor | None = None, backend: str = "auto") -> torch.Tensor:
    """The elementwise loss after the network: weight * (c_skip * (y + sigma * n) + c_out * F - y)^2, float32
    (float64 on the reference path for float64 inputs), with n as in loss_input.

    Differentiable in F: the fused backends compute dloss/dF = 2 weight c_out (D - y) in the same pass and save
    it, so the backward pass is one product. They refuse inputs other than F that require a gradient.
    """
    _check_floating("y", y)
    _check_like("F", F, y)
    seeds, offset, noise = _loss_noise_args(y, seeds, offset, noise)
    names = ("sigma", "c_skip", "c_out", "weight")
    values = [_per_sample_value(n, v, y) for n, v in zip(names, (sigma, c_skip, c_out, weight))]
    state = y if F.dtype != torch.float64 else F
    name = resolve(backend, state, (y, F, seeds, offset, *values) + ((noise,) if noise is not None else ()))
    if name == "reference":
        return reference.loss_error(y, F, seeds, offset, noise, *values)
    _refuse_grad(name, (("y", y), ("noise", noise)) + tuple(zip(names, values)))
    loss, _ = _impl(name).loss_error(y.contiguous(), F.contiguous(), seeds, offset, _contiguous(noise),
                                     *_kernel_values(values, y))
    return loss


def _loss_noise_args(y, seeds, offset, noise):
    """(seeds, offset, noise) of the loss ops: either noise (y's shape and device) or seeds; offset as for churn."""
    if noise is not None:
        _check_like("noise", noise, y)
        seeds = torch.zeros(y.shape[0], dtype=torch.int64, device=y.device) if seeds is None else \
            seeds_tensor(seeds, batch_size=y.shape[0], device=y.device)
    elif seeds is None:
        raise ValueError("seeds: expected one seed per sample (the noise is drawn from their streams) or noise=, got neither")
    else:
        seeds = seeds_tensor(seeds, batch_size=y.shape[0], device=y.device)
    return seeds, _offset_tensor(offset, y.device), noise


def _kernel_values(values, like: torch.Tensor) -> list[torch.Tensor]:
    """Per-sample values as the compiled kernels take them: float32, contiguous, one per sample."""
    return [v.to(torch.float32).expand(like.shape[0]).contiguous() for v in values]


def _contiguous(t):
    return None if t is None else t.contiguous()


def _refuse_grad(backend: str, tensors) -> None:
    """The fused loss ops differentiate in F only: an input that needs another gradient goes to the reference path."""
    if not torch.is_grad_enabled():
        return
    for arg, t in tensors:
        if t is not None and t.requires_grad:
            raise ValueError(f"{arg}: requires a gradient, but backend={backend!r} differentiates the loss in F only; "
                             f"detach {arg} or use backend='reference'")


def _impl(name: str):
    """The module whose functions run backend `name` (resolve() has already checked it can)."""
    if name == "triton":
        from . import _triton

        return _triton
    if name == "cpu":
        from . import _cpu

        return _cpu
    if name == "cuda":
        from . import _cuda

        return _cuda
    raise AssertionError(f"backend {name!r} has no implementation")  # resolve() never returns one


def overlaps_differently(t: torch.Tensor, buffer: torch.Tensor) -> bool:
    """True when t and buffer share memory other than as the very same elements (host metadata only).

    An op may write its result over an input it reads elementwise, but not over memory that another input reads
    at other indices: the result would then depend on the order in which elements are written.
    """
    if t.untyped_storage().data_ptr() != buffer.untyped_storage().data_ptr():
        return False
    return not (t.data_ptr() == buffer.data_ptr() and t.stride() == buffer.stride() and t.shape == buffer.shape)


def _check_out(out, like: torch.Tensor, dtype: torch.dtype, inputs: tuple = ()) -> None:
    """An out= tensor: like's shape and device, the result's dtype, contiguous; it may be one of the inputs
    exactly, but must not overlap one otherwise."""
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out: expected a tensor, got {type(out).__name__}")
    if out.shape != like.shape or out.dtype != dtype or out.device != like.device or not out.is_contiguous():
        raise ValueError(f"out: expected a contiguous {dtype} tensor of shape {tuple(like.shape)} on {like.device}, got a "
                         f"{'' if out.is_contiguous() else 'non-contiguous '}{out.dtype} tensor of shape {tuple(out.shape)} "
                         f"on {out.device}")
    for name, t in inputs:
        if overlaps_differently(t, out):
            raise ValueError(f"out: overlaps the input {name} other than element for element; pass a separate tensor "
                             f"or {name} itself")


def _into(out, result: torch.Tensor) -> torch.Tensor:
    """The reference path's out=: the result copied into `out` (or returned as it is)."""
    return result if out is None else out.copy_(result)


def _per_sample_value(name: str, value, like: torch.Tensor) -> torch.Tensor:
    """A value for all samples or one per sample, as a floating tensor of shape [] or [B] on like's device.

    Tensors may have shape [], [1], [B] or [B, 1, ..., 1]; Python numbers become float64 for float64 inputs
    (the reference path's precision), float32 otherwise.
    """
    batch = like.shape[0]
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point value, got a tensor of dtype {value.dtype}")
        per_sample = value.ndim >= 1 and value.shape[0] == batch and value.numel() == batch
        if value.numel() != 1 and not per_sample:
            raise ValueError(f"{name}: expected one value or one per sample (shape [{batch}]), got shape {tuple(value.shape)}")
        if value.device != like.device:
            raise ValueError(f"{name}: expected a tensor on {like.device}, got one on {value.device}")
        return value.reshape(()) if value.numel() == 1 else value.reshape(batch)  # [B] may be empty
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number or a tensor, got {type(value).__name__}")
    dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
    return torch.tensor(float(value), dtype=dtype, device=like.device)


def _offset_tensor(offset, device) -> torch.Tensor:
    """A stream offset as an int64 tensor of one value: an int in [0, 2^64) or such a tensor (kept on the device)."""
    if isinstance(offset, torch.Tensor):
        if offset.dtype != torch.int64 or offset.numel() != 1:
            raise ValueError(f"offset: expected an int64 tensor of one value, got {offset.dtype} of shape {tuple(offset.shape)}")
        return offset.reshape(()).to(device)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_OFFSET:
        raise ValueError(f"offset: expected an int in [0, 2^64), got {offset!r}")
    return torch.tensor(offset - 2**64 if offset >= 2**63 else offset, dtype=torch.int64, device=device)
