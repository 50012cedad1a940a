"""Helpers for tests: the one place where fastdiff's tolerances, its distribution check on the ring and the list
of compiled backends under test live (tests/conftest.py turns the latter into fixtures).

Tolerances are per dtype of the result being checked. A failed comparison names the worst element, its
index and both values, so a kernel bug can be found from the message alone.
"""
from __future__ import annotations

import contextlib
import math
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .metrics import sliced_wasserstein
from .mixture import GaussianMixture

# (rtol, atol) of a result computed in the given dtype against a float64 (or same-dtype) reference.
TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (1.6e-2, 1e-5),
    torch.float16: (2e-3, 1e-5),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for results of `dtype`."""
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype: no tolerance defined for {dtype}; defined for {', '.join(map(str, TOLERANCES))}")
    return TOLERANCES[dtype]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype | None = None,
                 rtol: float | None = None, atol: float | None = None, name: str = "result") -> None:
    """Assert |actual - expected| <= atol + rtol |expected| elementwise (NaNs must match).

    The tolerance is that of `dtype` (default: actual's dtype) unless rtol/atol are given.
    """
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    default_rtol, default_atol = tolerance(dtype or actual.dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    a = actual.detach().to(device="cpu", dtype=torch.float64)
    e = expected.detach().to(device="cpu", dtype=torch.float64)
    nan_mismatch = a.isnan() != e.isnan()
    both_same_inf = (a == e) & a.isinf()
    error = (a - e).abs().nan_to_num(0.0).masked_fill(both_same_inf, 0.0)
    excess = error - (atol + rtol * e.abs().nan_to_num(0.0))
    excess = excess.masked_fill(nan_mismatch, float("inf"))
    if a.numel() == 0 or bool((excess <= 0).all()):
        return
    flat = int(excess.reshape(-1).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), a.shape)) if a.ndim else ()
    bad = int((excess > 0).sum())
    raise AssertionError(
        f"{name}: {bad} of {a.numel()} elements outside rtol={rtol:g}, atol={atol:g}; worst at index {index}: "
        f"actual {a.reshape(-1)[flat].item()!r}, expected {e.reshape(-1)[flat].item()!r}, "
        f"|diff| {error.reshape(-1)[flat].item():.3g}")


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, name: str = "result") -> None:
    """Assert bitwise equality (same shape, dtype and values; NaNs compare equal); name the first difference."""
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        raise AssertionError(f"{name}: {actual.dtype} {tuple(actual.shape)} != expected {expected.dtype} {tuple(expected.shape)}")
    both_nan = actual.isnan() & expected.isnan() if actual.is_floating_point() else torch.zeros_like(actual, dtype=torch.bool)
    differ = (actual != expected) & ~both_nan
    if not bool(differ.any()):
        return
    first = tuple(int(i) for i in differ.nonzero()[0])
    raise AssertionError(f"{name}: {int(differ.sum())} of {actual.numel()} elements differ; first at index {first}: "
                         f"actual {actual[first].item()!r}, expected {expected[first].item()!r}")


def assert_error_bounded(actual: torch.Tensor, eager: torch.Tensor, exact: torch.Tensor, *, factor: float = 2.0,
                         name: str = "result") -> None:
    """flash-attention's rule: actual's max error against `exact` (a float64 computation) is at most `factor` times
    the max error of `eager` (the same computation in eager PyTorch in actual's dtype), plus one rounding step
    (rtol of actual's dtype times max |exact|) so that an exact eager result still leaves room for rounding.
    """
    exact64 = exact.detach().to(device="cpu", dtype=torch.float64)
    err_actual = (actual.detach().to(device="cpu", dtype=torch.float64) - exact64).abs().max().item()
    err_eager = (eager.detach().to(device="cpu", dtype=torch.float64) - exact64).abs().max().item()
    slack = tolerance(actual.dtype)[0] * exact64.abs().max().item()
    if not err_actual <= factor * err_eager + slack:
        raise AssertionError(f"{name}: max error {err_actual:.3g} against float64 exceeds {factor:g} x eager's {err_eager:.3g} "
                             f"+ rounding slack {slack:.3g}")


def rk4_probability_flow(denoiser, x: torch.Tensor, sigma_from: float, sigma_to: float, num_steps: int) -> torch.Tensor:
    """The exact-enough probability-flow endpoint the samplers are checked against: classical RK4 on EDM's ODE
    dx/du = x - D(x; e^u), u = log sigma, from sigma_from to sigma_to in num_steps equal steps of u."""
    u0 = math.log(sigma_from)
    h = (math.log(sigma_to) - u0) / num_steps

    def f(x, u):
        return x - denoiser(x, math.exp(u))

    for i in range(num_steps):
        u = u0 + i * h
        k1 = f(x, u)
        k2 = f(x + 0.5 * h * k1, u + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, u + 0.5 * h)
        k4 = f(x + h * k3, u + h)
        x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def fitted_slope(steps, errors) -> float:
    """The convergence order: minus the least-squares slope of log(error) against log(number of steps)."""
    lx = torch.tensor([math.log(n) for n in steps], dtype=torch.float64)
    ly = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return -float((lx * ly).sum() / (lx * lx).sum())


class SyncCounter(TorchDispatchMode):
    """Records, in order, the ops that read a device value on the host (`syncs`) and the tensors made from host
    data (`host_to_device`: torch.tensor(...) of host values, a copy to the device on a GPU)."""

    SYNCS = frozenset({"aten::_local_scalar_dense", "aten::is_nonzero", "aten::item", "aten::nonzero", "aten::equal"})
    HOST_TO_DEVICE = frozenset({"aten::lift_fresh"})

    def __init__(self):
        super().__init__()
        self.syncs, self.host_to_device = [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in self.SYNCS:
            self.syncs.append(name)
        if name in self.HOST_TO_DEVICE:
            self.host_to_device.append(name)
        return func(*args, **(kwargs or {}))


# ---------------------------------------------------------------------------------------------------------
# The distribution check: samples of the 8-mode ring against an exact draw, relative to the oracle's noise floor.
# ---------------------------------------------------------------------------------------------------------

RING_FLOOR_FACTOR = 2.5  # pass: sliced W1 to an exact draw < 2.5x the floor (each test file says what it measured)


class RingProblem(NamedTuple):
    """The ring mixture, an exact reference draw, the noise floor, latents [n, 2] and one seed per sample."""

    mix: GaussianMixture
    reference: torch.Tensor
    floor: float
    latents: torch.Tensor
    seeds: torch.Tensor | list


def ring_problem(num_samples: int, seed: int = 1234, *, floor: str = "pairs", latents_dtype=torch.float32,
                 seeds_as_list: bool = False) -> RingProblem:
    """The ring and everything a distribution check on it needs, all drawn from one torch generator seeded `seed`,
    in this order: the reference, the floor's draws, the latents, the seeds (in [0, 2^62)).

    floor "pairs": the mean sliced W1 of 4 pairs of exact draws; "reference": the mean sliced W1 of 8 exact draws to
    the reference (so an unlucky reference raises the floor with the distance).
    """
    mix = GaussianMixture.ring()
    g = torch.Generator().manual_seed(seed)
    reference = mix.sample(num_samples, generator=g)
    if floor == "pairs":
        noise_floor = sum(sliced_wasserstein(mix.sample(num_samples, generator=g), mix.sample(num_samples, generator=g))
                          for _ in range(4)) / 4
    elif floor == "reference":
        noise_floor = sum(sliced_wasserstein(mix.sample(num_samples, generator=g), reference) for _ in range(8)) / 8
    else:
        raise ValueError(f"floor: expected 'pairs' or 'reference', got {floor!r}")
    latents = torch.randn(num_samples, 2, generator=g, dtype=latents_dtype)
    seeds = torch.randint(0, 2**62, (num_samples,), generator=g)
    return RingProblem(mix, reference, noise_floor, latents, seeds.tolist() if seeds_as_list else seeds)


def ring_distance(mix: GaussianMixture, x: torch.Tensor, reference: torch.Tensor, floor: float,
                  label: str) -> tuple[float, torch.Tensor]:
    """(sliced W1 of the samples x to the reference, the fraction of samples nearest each mode), printed with the
    ratio to the floor so that a run's log shows the margin."""
    distance = sliced_wasserstein(x, reference)
    nearest = torch.cdist(x.to(torch.float64), mix.means).argmin(dim=1)
    fractions = torch.bincount(nearest, minlength=mix.means.shape[0]).to(torch.float64) / x.shape[0]
    print(f"{label}: SW={distance:.4f} floor={floor:.4f} ratio={distance / floor:.2f} "
          f"fractions={[round(f, 4) for f in fractions.tolist()]}")
    return distance, fractions


def check_reproduces_ring(mix: GaussianMixture, x: torch.Tensor, reference: torch.Tensor, floor: float, label: str,
                          factor: float = RING_FLOOR_FACTOR) -> tuple[float, torch.Tensor]:
    """Assert that samples x reproduce the ring: finite, sliced W1 to the reference below `factor` times the floor,
    and each mode's share of the samples within 4.5 standard errors of 1/8. Returns ring_distance's values."""
    distance, fractions = ring_distance(mix, x, reference, floor, label)
    assert bool(torch.isfinite(x).all()), f"{label}: non-finite samples"
    assert distance < factor * floor, (label, distance, floor)
    p = 1.0 / 8
    se = math.sqrt(p * (1 - p) / x.shape[0])
    assert bool(((fractions - p).abs() < 4.5 * se).all()), (label, fractions)
    return distance, fractions


# ---------------------------------------------------------------------------------------------------------
# Backends and threads.
# ---------------------------------------------------------------------------------------------------------

TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # without a GPU, Triton runs in its interpreter
BACKEND_DEVICES = {"triton": TRITON_DEVICE, "cpu": "cpu", "cuda": "cuda"}  # the device each compiled backend runs on


def compiled_backend_params() -> list[str]:
    """The compiled backends the op tests run on, as fixture parameters: "triton", "cpu-1-thread" (the C++ kernels
    with torch's threads set to 1), and "cuda" wherever the C++ CUDA part is built and a GPU is present."""
    from .ops import backends

    params = ["triton", "cpu-1-thread"]
    if torch.cuda.is_available():
        probe = torch.empty(1, device="cuda")
        if not backends.reasons("cuda", probe, (probe,)):
            params.append("cuda")
    return params


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op thread count set to `count` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


K_DIFFUSION_VERSION = "0.1.1.post1"  # the release the benchmarks and tests compare against
_K_DIFFUSION_PACKAGE = "_fastdiff_k_diffusion"  # the synthetic parent package its sampling module is loaded under


def k_diffusion_sampling():
    """k-diffusion's `k_diffusion/sampling.py`, from the installed k-diffusion release, loaded on its own.

    The functions in the returned module (sample_heun, sample_euler_ancestral, sample_dpmpp_2m, ...) are k-diffusion's
    own code, executed unmodified from the installed file. Only its package is replaced: k-diffusion's __init__ and
    utils import torchvision, wandb and more, of which sampling.py uses one helper, `utils.append_dims`. So the file is
    executed as the submodule `sampling` of a synthetic package whose `utils` holds just that helper (written here).
    Its remaining imports (scipy, torchdiffeq, torchsde, tqdm) are the real ones; install k-diffusion itself without
    dependencies, so that it cannot replace torch:

        pip install --no-deps "k-diffusion==0.1.1.post1"   (scipy, torchdiffeq, torchsde, tqdm: fastdiff's test extra)

    Raises ImportError naming what is missing. The module is loaded once and cached.
    """
    return _k_diffusion_module("sampling")


def k_diffusion_external():
    """k-diffusion's `k_diffusion/external.py` (its model wrappers), loaded the way k_diffusion_sampling() loads
    sampling.py: the installed file, unmodified, in the same synthetic package (it imports only `sampling` and
    `utils.append_dims`).

    Its classes are the wrappers k-diffusion users put around other libraries' models: `DiscreteEpsDDPMDenoiser` and
    `DiscreteVDDPMDenoiser` (a discrete-time eps or v network and its alphas_cumprod), `CompVisDenoiser`,
    `CompVisVDenoiser`, `OpenAIDenoiser` and `VDenoiser`. Each is a denoiser D(x, sigma) that fastdiff.sample takes
    as it is. Raises ImportError naming what is missing; loaded once and cached.
    """
    return _k_diffusion_module("external")


def _k_diffusion_module(name: str):
    """The installed k-diffusion's `<name>.py` ("sampling" or "external"), executed as a submodule of the synthetic
    package `_fastdiff_k_diffusion` (see k_diffusion_sampling)."""
    import importlib.metadata
    import importlib.util
    import sys
    import types
    from pathlib import Path

    loaded = sys.modules.get(f"{_K_DIFFUSION_PACKAGE}.{name}")
    if loaded is not None:
        return loaded
    if name != "sampling":
        _k_diffusion_module("sampling")  # external.py imports it: the package and its utils exist from here on
    install = f'pip install --no-deps "k-diffusion=={K_DIFFUSION_VERSION}"'
    try:
        version = importlib.metadata.version("k-diffusion")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"k-diffusion is not installed; install it with `{install}`") from None
    if version != K_DIFFUSION_VERSION:
        raise ImportError(f"k-diffusion {version} is installed; fastdiff compares against {K_DIFFUSION_VERSION}: "
                          f"`{install}`")
    spec = importlib.util.find_spec("k_diffusion")  # finds the package without running its __init__
    path = Path(spec.origin).parent / f"{name}.py"
    if not path.is_file():
        raise ImportError(f"k-diffusion {version} has no {name}.py at {path}; reinstall it with `{install}`")

    added = []  # what this call put into sys.modules, taken out again if the file fails to execute
    package = sys.modules.get(_K_DIFFUSION_PACKAGE)
    if package is None:
        def append_dims(x, target_dims):
            """x with trailing size-1 dimensions until it has target_dims dimensions (a view)."""
            missing = target_dims - x.ndim
            if missing < 0:
                raise ValueError(f"append_dims: x has {x.ndim} dimensions, more than target_dims={target_dims}")
            for _ in range(missing):
                x = x.unsqueeze(-1)
            return x

        package = types.ModuleType(_K_DIFFUSION_PACKAGE, "k-diffusion's sampling module without the rest of its package")
        package.__path__ = []  # a package with no files of its own: its submodules are placed below by hand
        utils = types.ModuleType(f"{_K_DIFFUSION_PACKAGE}.utils",
                                 "the one helper of k_diffusion.utils that sampling.py and external.py use")
        utils.append_dims = append_dims
        package.utils = utils
        sys.modules[_K_DIFFUSION_PACKAGE], sys.modules[utils.__name__] = package, utils
        added += [_K_DIFFUSION_PACKAGE, utils.__name__]
    spec = importlib.util.spec_from_file_location(f"{_K_DIFFUSION_PACKAGE}.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    added.append(spec.name)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for entry in added:
            sys.modules.pop(entry, None)
        raise
    setattr(package, name, module)
    return module


# ---------------------------------------------------------------------------------------------------------
# Small models for solver tests.
# ---------------------------------------------------------------------------------------------------------

def tanh_denoiser(dim: int = 4, seed: int = 0):
    """A small smooth denoiser D(x; sigma) on [B, dim] (or [B, ..., dim]) tensors: a fixed random tanh layer, weighted
    as a denoiser's output is (its data part fades as sigma grows), in the state's dtype."""
    W = 0.3 * torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def net(x, sigma):
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.tanh(x @ W.to(x.dtype)) / (1 + s**2) + 0.3 * x * s**2 / (1 + s**2)
    return net


def counting(net):
    """(net wrapped, calls): every call's first sigma appended to `calls` as a float, so a test can compare the number
    and the levels of two samplers' network evaluations."""
    calls = []

    def wrapped(x, sigma, *args, **kwargs):
        calls.append(float(sigma.reshape(-1)[0]))
        return net(x, sigma, *args, **kwargs)
    return wrapped, calls


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


def tiny_unet(seed: int = 0, **config):
    """A diffusers UNet2DModel small enough for tests (8x8, 3 channels, two 32-channel blocks), random weights from
    torch's generator seeded `seed`, in eval mode; `config` overrides its settings. Needs diffusers (the test extra)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    settings = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 32), layers_per_block=1,
                    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                    norm_num_groups=8)
    return UNet2DModel(**{**settings, **config}).eval()
