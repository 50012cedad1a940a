"""The fused loss ops and the losses built on them.

ops.loss_input (the network's input c_in (y + sigma n)) and ops.loss_error (weight (D - y)^2 and dloss/dF, with
D = c_skip (y + sigma n) + c_out F) on every compiled backend against their reference twins: odd shapes, batch 1,
non-contiguous inputs, every dtype, noise drawn from seeds or given, every form of the per-sample values; then
their autograd, opcheck and torch.compile; then EDMLoss, VPLoss, VELoss and DDPMLoss run fused end to end against
backend="reference" for the same seeds; last, the errors they raise.

Backends as in test_fused_ops.py: "triton" (without a GPU its kernels run on CPU tensors under TRITON_INTERPRET=1,
set by conftest.py) and "cpu" (the C++ kernels of fastdiff._C, run with 1 thread). The interpreter is slow, so
every input is small but one odd 4-D shape.
"""
import re

import pytest
import torch
from torch import nn
import triton  # noqa: F401  (the Triton backend is under test: a missing triton is a failure, not a skip)

import fastdiff
from fastdiff.ops import _cpu  # noqa: F401  (the C++ backend is under test: a failed build is a failure, not a skip)
from fastdiff.ops import _triton  # noqa: F401  (imported now, under conftest's TRITON_INTERPRET, whatever tests run first)
from fastdiff.ops import backends, reference
from fastdiff import ops
from fastdiff.nets import MLP, UNet
from fastdiff.ops.reference.loss import loss_noise
from fastdiff.ops.reference.skip_mix import per_sample
from fastdiff.rng import LOSS_NOISE_OFFSET, MAX_SEED
from fastdiff.testing import BACKEND_DEVICES, assert_close, assert_equal, assert_error_bounded, tolerance, torch_threads

DEVICES = BACKEND_DEVICES
# The `backend` and `opaque_triton_ops` fixtures are tests/conftest.py's, as in test_fused_ops.py.


@pytest.fixture(autouse=True)
def one_thread():
    """Every input here is small: torch's intra-op threads only add overhead (on a loaded 2-core machine, OpenMP
    contention slowed a tiny UNet's step 50-fold). test_cpu_threads_split_loss_work_without_changing_bits sets 2."""
    with torch_threads(1):
        yield


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------

SHAPES = [(3, 5, 37, 41), (1, 7), (2, 3), (4, 8), (1, 1), (5, 1, 3)]  # odd sizes, batch 1, sizes % 4 == 0 and not
STATE_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (y dtype, F dtype): matching, and float32 images with a bfloat16 network output (as under autocast)
YF_DTYPES = [(torch.float32, torch.float32), (torch.float16, torch.float16), (torch.bfloat16, torch.bfloat16),
             (torch.float32, torch.bfloat16)]
SEEDS = [0, 2**63 - 1, 12345, 7, 99]
SOURCES = ["seeds", "noise"]  # the noise n drawn in-kernel from each sample's seed, or given
# Shared values as Python floats and 0-d tensors on contiguous inputs (given noise in y's dtype); per-sample values
# ([B], [B, 1], float64, mixed with one shared value) on non-contiguous inputs (given noise in float32).
LAYOUTS = ["shared", "per-sample"]
RANGES = dict(sigma=(0.05, 5.0), c_in=(0.2, 1.5), c_skip=(0.1, 1.0), c_out=(-1.2, 1.2), weight=(0.3, 4.0))
FORMS = {  # how a per-sample value may be passed, by the layout using it
    "shared": dict(sigma="float", c_in="0-d", c_skip="0-d float64", c_out="float", weight="0-d"),
    "per-sample": dict(sigma="[B]", c_in="[B] float64", c_skip="[B, 1]", c_out="0-d", weight="[B] float64"),
}
F32_RTOL = tolerance(torch.float32)[0]


def make(shape, dtype, seed, noncontiguous=False, device="cpu"):
    """A random tensor; non-contiguous ones are every other element of a buffer twice as long in the last dim."""
    generator = torch.Generator().manual_seed(seed)
    if noncontiguous:
        t = torch.randn(*shape[:-1], 2 * shape[-1], generator=generator)[..., ::2]
        assert not t.is_contiguous() or t.numel() <= shape[0]  # a single element per sample cannot be strided
    else:
        t = torch.randn(*shape, generator=generator)
    return t.to(device=device, dtype=dtype)


def value(form, batch, low, high, seed, device="cpu"):
    """A per-sample value in [low, high) in one of the forms ops accept; its numbers are float32-representable,
    so every form holds exactly what the kernels compute with."""
    v = low + (high - low) * torch.rand(batch, generator=torch.Generator().manual_seed(seed))
    if form == "float":
        return float(v[0])
    if form == "0-d":
        return v[0].clone().to(device)
    if form == "0-d float64":
        return v[0].double().to(device)
    if form == "[1]":
        return v[:1].to(device)
    if form == "[B]":
        return v.to(device)
    if form == "[B] float64":
        return v.double().to(device)
    if form == "[B, 1]":
        return v.reshape(batch, 1).to(device)
    raise AssertionError(form)


def f64(v) -> torch.Tensor:
    """A per-sample value as a float64 CPU tensor of shape [] or [B], for the float64 twins."""
    t = torch.as_tensor(v, dtype=torch.float64).detach().cpu()
    return t.reshape(-1) if t.numel() > 1 else t.reshape(())


def on_cpu(v):
    return v.detach().cpu() if isinstance(v, torch.Tensor) else v


def case(shape, y_dtype, F_dtype, source, layout, device, seed=0):
    """The inputs of one comparison: (y, F, rng kwargs, per-sample values by name)."""
    noncontiguous = layout == "per-sample"
    y = make(shape, y_dtype, seed + 1, noncontiguous, device)
    F = make(shape, F_dtype, seed + 2, noncontiguous, device)
    rng = dict(seeds=torch.tensor(SEEDS[: shape[0]], device=device)) if source == "seeds" else \
        dict(noise=make(shape, torch.float32 if noncontiguous else y_dtype, seed + 3, noncontiguous, device))
    values = {name: value(FORMS[layout][name], shape[0], *RANGES[name], seed + 10 + i, device)
              for i, name in enumerate(RANGES)}
    return y, F, rng, values


def exact_noise(y, rng):
    """The (seeds, offset, noise) arguments of the float64 reference twins for the same n."""
    seeds = rng["seeds"].cpu() if "seeds" in rng else torch.zeros(y.shape[0], dtype=torch.int64)
    noise = rng["noise"].detach().cpu().double() if "noise" in rng else None
    return seeds, ops.dispatch._offset_tensor(LOSS_NOISE_OFFSET, "cpu"), noise


def exact_error_terms(y, F, rng, v):
    """float64 (r = D - y, the size S of the terms summed into r, the values viewed per sample) for the same inputs,
    with n as the reference draws it."""
    y64, F64 = y.detach().cpu().double(), F.detach().cpu().double()
    seeds, offset, noise = exact_noise(y, rng)
    n = loss_noise(y64, seeds, offset, noise, torch.float64)
    ps = {k: per_sample(f64(x), y64) for k, x in v.items()}
    x = y64 + ps["sigma"] * n
    r = ps["c_skip"] * x + ps["c_out"] * F64 - y64
    S = (ps["c_skip"] * x).abs() + (ps["c_out"] * F64).abs() + y64.abs()
    return r, S, ps


def scaled_atol(dtype, scale: torch.Tensor) -> float:
    """An absolute tolerance of `dtype`'s rtol times the largest term a result is computed from (plus its atol):
    where D - y cancels, float32 roundings of the terms, not of the result, set the error."""
    rtol, atol = tolerance(dtype)
    return atol + rtol * (scale.max().item() if scale.numel() else 0.0)


# ---------------------------------------------------------------------------------------------------------
# loss_input and loss_error against the reference ops
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", STATE_DTYPES)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_loss_input_matches_reference(shape, dtype, source, layout, backend):
    """c_in (y + sigma n) in y's dtype: within the dtype's tolerance of the reference (the in-kernel noise may
    differ from the reference's in the last float32 ulps) and within 2x eager's error against float64."""
    y, _, rng, v = case(shape, dtype, dtype, source, layout, DEVICES[backend])
    got = ops.loss_input(y, v["sigma"], v["c_in"], **rng, backend=backend)
    want = ops.loss_input(y.cpu(), on_cpu(v["sigma"]), on_cpu(v["c_in"]), **{k: t.cpu() for k, t in rng.items()},
                          backend="reference")
    exact = reference.loss_input(y.cpu().double(), *exact_noise(y, rng), f64(v["sigma"]), f64(v["c_in"]))
    assert got.dtype == dtype and got.shape == shape and got.is_contiguous() and got.device == y.device
    noise_term = (per_sample(f64(v["c_in"]) * f64(v["sigma"]), exact) * 5.8).abs()
    assert_close(got, want, dtype=dtype, atol=scaled_atol(torch.float32, noise_term) if source == "seeds" else None,
                 name="loss_input")
    assert_error_bounded(got, want, exact, name="loss_input")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("y_dtype, F_dtype", YF_DTYPES)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_loss_error_matches_reference(shape, y_dtype, F_dtype, source, layout, backend):
    """weight (D - y)^2 in float32: within float32 tolerance of the reference (atol scaled to the terms of D - y)
    and within 2x eager's error against float64."""
    y, F, rng, v = case(shape, y_dtype, F_dtype, source, layout, DEVICES[backend])
    args = (v["sigma"], v["c_skip"], v["c_out"], v["weight"])
    got = ops.loss_error(y, F, *args, **rng, backend=backend)
    want = ops.loss_error(y.cpu(), F.cpu(), *map(on_cpu, args), **{k: t.cpu() for k, t in rng.items()},
                          backend="reference")
    r, S, ps = exact_error_terms(y, F, rng, v)
    exact = ps["weight"] * r**2
    assert got.dtype == torch.float32 and got.shape == shape and got.is_contiguous() and got.device == y.device
    assert_close(got, want, rtol=F32_RTOL, atol=scaled_atol(torch.float32, ps["weight"] * S**2), name="loss_error")
    assert_error_bounded(got, want, exact, name="loss_error")


@pytest.mark.parametrize("op", ["loss_input", "loss_error"])
def test_every_form_of_a_value_gives_the_same_result(op, backend):
    """A value shared by all samples gives bit-identical results as a Python float, a 0-d or [1] tensor (float32
    or float64), or a [B] / [B, 1] tensor holding it B times; and equals the reference's."""
    device, shape = DEVICES[backend], (3, 5, 7)
    y, F = make(shape, torch.float32, 20, device=device), make(shape, torch.bfloat16, 21, device=device)
    seeds = SEEDS[:3]
    results = {}
    for form in ("float", "0-d", "0-d float64", "[1]", "[B]", "[B] float64", "[B, 1]"):
        v = {name: value(form, 3, *RANGES[name], 22 + i, device) for i, name in enumerate(RANGES)}
        if form in ("[B]", "[B] float64", "[B, 1]"):  # the first sample's value for every sample
            v = {name: x.reshape(-1)[:1].expand(3).reshape(x.shape).clone() for name, x in v.items()}
        if op == "loss_input":
            results[form] = ops.loss_input(y, v["sigma"], v["c_in"], seeds=seeds, backend=backend)
        else:
            results[form] = ops.loss_error(y, F, v["sigma"], v["c_skip"], v["c_out"], v["weight"], seeds=seeds,
                                           backend=backend)
    for form, result in results.items():
        assert_equal(result, results["float"], name=f"{op} with {form} values")
    v = {name: value("float", 3, *RANGES[name], 22 + i) for i, name in enumerate(RANGES)}
    rng = dict(seeds=torch.tensor(seeds))
    if op == "loss_input":
        want = ops.loss_input(y.cpu(), v["sigma"], v["c_in"], **rng, backend="reference")
        noise_term = torch.tensor(abs(v["c_in"] * v["sigma"]) * 5.8)  # |n| <= 5.77: the term the noise's ulps scale
        assert_close(results["float"], want, atol=scaled_atol(torch.float32, noise_term), name=op)
    else:
        want = ops.loss_error(y.cpu(), F.cpu(), v["sigma"], v["c_skip"], v["c_out"], v["weight"], **rng,
                              backend="reference")
        _, S, ps = exact_error_terms(y, F, rng, v)
        assert_close(results["float"], want, atol=scaled_atol(torch.float32, ps["weight"] * S**2), name=op)


@pytest.mark.parametrize("offset", [0, 5, LOSS_NOISE_OFFSET, 2**64 - 1])
def test_both_passes_draw_the_same_noise(offset, backend):
    """loss_input and loss_error draw the same n for the same seeds and offset (so the pass after the network needs
    no stored noise): with y = F = 0, sigma = c_in = c_skip = weight = 1, c_out = 0 they return n and n^2 exactly.
    n is fastdiff's stream at `offset` (LOSS_NOISE_OFFSET by default), whatever batch a sample is in."""
    device, shape = DEVICES[backend], (3, 5, 7)
    zeros = torch.zeros(shape, device=device)
    seeds = torch.tensor(SEEDS[:3], device=device)
    n = ops.loss_input(zeros, 1.0, 1.0, seeds=seeds, offset=offset, backend=backend)
    loss = ops.loss_error(zeros, zeros, 1.0, 1.0, 0.0, 1.0, seeds=seeds, offset=offset, backend=backend)
    assert_equal(loss, n * n, name="loss_error's n^2 vs loss_input's n squared")
    assert_close(n, ops.randn(SEEDS[:3], shape, offset=offset, backend="reference"), rtol=1e-6, atol=2e-6, name="n")
    assert float(n.std()) > 0.5  # a real draw, not zeros
    alone = ops.loss_input(zeros[1:2], 1.0, 1.0, seeds=seeds[1:2], offset=offset, backend=backend)
    assert_equal(alone, n[1:2], name="sample 1 drawn alone")
    tensor_offset = torch.tensor(offset - 2**64 if offset >= 2**63 else offset, device=device)
    assert_equal(ops.loss_input(zeros, 1.0, 1.0, seeds=seeds, offset=tensor_offset, backend=backend), n,
                 name="offset as an int64 tensor")
    if offset == LOSS_NOISE_OFFSET:
        assert_equal(ops.loss_input(zeros, 1.0, 1.0, seeds=seeds, backend=backend), n, name="the default offset")


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (2, 0, 4)])
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("form", ["float", "[B]"])
def test_zero_element_inputs(shape, source, form, backend):
    """Empty batches and empty samples give empty results of the right shape and dtype, and an empty gradient,
    on the fused backend and on the reference path alike; values shared (a float) or per sample (a [B] tensor)."""
    results = {}
    for name in (backend, "reference"):
        device = DEVICES.get(name, "cpu")
        y = torch.zeros(shape, dtype=torch.bfloat16, device=device)
        F = torch.zeros(shape, dtype=torch.bfloat16, device=device, requires_grad=True)
        rng = dict(seeds=list(range(shape[0]))) if source == "seeds" else dict(noise=torch.zeros(shape, device=device))
        sigma = 0.7 if form == "float" else torch.full((shape[0],), 0.7, device=device)
        x = ops.loss_input(y, sigma, 0.5, **rng, backend=name)
        loss = ops.loss_error(y, F, sigma, 1.0, sigma, 2.0, **rng, backend=name)
        (grad,) = torch.autograd.grad(loss.sum(), F)
        results[name] = (x, loss, grad)
    for name, (x, loss, grad) in results.items():
        assert x.shape == shape and x.dtype == torch.bfloat16, name
        assert loss.shape == shape and loss.dtype == torch.float32, name
        assert grad.shape == shape and grad.dtype == torch.bfloat16, name


@pytest.mark.parametrize("shape, y_dtype, F_dtype", [((3, 5, 67, 131), torch.float16, torch.bfloat16),
                                                     ((2, 16, 64, 128), torch.float32, torch.float32)])
@pytest.mark.parametrize("source", SOURCES)
def test_cpu_threads_split_loss_work_without_changing_bits(shape, y_dtype, F_dtype, source):
    """Inputs large enough for the C++ kernels to split across 2 threads (per-sample sizes odd and a multiple of 4)
    give the 1-thread results bit for bit, and the reference's within tolerance."""
    y, F = make(shape, y_dtype, 100), make(shape, F_dtype, 101)
    rng = dict(seeds=torch.arange(shape[0])) if source == "seeds" else dict(noise=make(shape, torch.float32, 102))
    sigma, c_skip = torch.linspace(0.3, 4.0, shape[0]), torch.tensor(0.2)

    def run():
        return (ops.loss_input(y, sigma, 0.5, **rng, backend="cpu"),
                ops.loss_error(y, F, sigma, c_skip, sigma, 2.0, **rng, backend="cpu"))

    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(2)
        two = run()
    finally:
        torch.set_num_threads(1)  # what the one_thread fixture set (and restores afterwards)
    for name, a, b in zip(("loss_input", "loss_error"), one, two):
        assert_equal(b, a, name=f"{name}: 2 threads vs 1")
    assert_close(two[0], ops.loss_input(y, sigma, 0.5, **rng, backend="reference"), dtype=y_dtype, atol=2e-5,
                 name="loss_input")
    values = dict(sigma=sigma, c_skip=c_skip, c_out=sigma, weight=2.0)
    _, S, ps = exact_error_terms(y, F, rng, values)
    assert_close(two[1], ops.loss_error(y, F, sigma, c_skip, sigma, 2.0, **rng, backend="reference"),
                 atol=scaled_atol(torch.float32, ps["weight"] * S**2), name="loss_error")


@pytest.mark.parametrize("c_out_sign", [-1.0, 1.0], ids=["vp", "ve"])
@pytest.mark.parametrize("source", SOURCES)
def test_loss_error_keeps_its_digits_at_small_sigma(c_out_sign, source, backend):
    """With c_skip = 1 (VP, VE, DDPM) the kernels sum r = sigma n + c_out F + 0 y without forming y + sigma n, so at
    sigma = 1e-3 they stay at float32 accuracy against float64 while the float32 reference, which subtracts y from
    y + sigma n, loses about 3 digits: the fused loss is the more accurate one."""
    device, shape = DEVICES[backend], (4, 3, 33)
    sigma = torch.tensor(1e-3)  # float32: every computation below uses these exact numbers
    c_out, weight = c_out_sign * sigma, 1 / sigma**2
    y, F = make(shape, torch.float32, 30, device=device), make(shape, torch.float32, 31, device=device)
    rng = dict(seeds=SEEDS[:4]) if source == "seeds" else dict(noise=make(shape, torch.float32, 32, device=device))
    got = ops.loss_error(y, F, sigma.to(device), 1.0, c_out.to(device), weight.to(device), **rng, backend=backend)
    eager = ops.loss_error(y.cpu(), F.cpu(), sigma, 1.0, c_out, weight, **{k: on_cpu(t) for k, t in rng.items()},
                           backend="reference")
    seeds, offset, noise = exact_noise(y, {k: torch.as_tensor(t) for k, t in rng.items()})
    exact = reference.loss_error(y.cpu().double(), F.cpu().double(), seeds, offset, noise, f64(sigma), f64(1.0),
                                 f64(c_out), f64(weight))
    scale = exact.abs().max().item()
    err_got = (got.cpu().double() - exact).abs().max().item() / scale
    err_eager = (eager.double() - exact).abs().max().item() / scale
    assert err_got < 1e-6, f"fused loss error {err_got:.3g} of max |loss| at sigma = 1e-3"
    assert err_eager > 10 * err_got, \
        f"the reference ({err_eager:.3g}) should lose digits the kernel ({err_got:.3g}) keeps"


# ---------------------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 7)])
@pytest.mark.parametrize("y_dtype, F_dtype", YF_DTYPES)
@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_loss_error_gradient_matches_reference(shape, y_dtype, F_dtype, source, layout, backend):
    """d/dF of (loss * upstream).sum() equals the reference's autograd, in F's dtype, within 2x eager's error."""
    y, F, rng, v = case(shape, y_dtype, F_dtype, source, layout, DEVICES[backend], seed=40)
    args = (v["sigma"], v["c_skip"], v["c_out"], v["weight"])
    upstream = make(shape, torch.float32, 49, device=y.device)
    F_fused = F.detach().requires_grad_()  # a leaf with F's strides
    (got,) = torch.autograd.grad((ops.loss_error(y, F_fused, *args, **rng, backend=backend) * upstream).sum(), F_fused)
    F_ref = F.detach().cpu().requires_grad_()
    loss_ref = ops.loss_error(y.cpu(), F_ref, *map(on_cpu, args), **{k: t.cpu() for k, t in rng.items()},
                              backend="reference")
    (want,) = torch.autograd.grad((loss_ref * upstream.cpu()).sum(), F_ref)
    r, S, ps = exact_error_terms(y, F, rng, v)
    factor = 2 * ps["weight"] * ps["c_out"] * upstream.cpu().double()
    assert got.dtype == F_dtype and got.shape == shape
    assert_close(got, want, dtype=F_dtype, atol=scaled_atol(F_dtype, (factor * S).abs()), name="dloss/dF")
    assert_error_bounded(got, want, factor * r, name="dloss/dF")


@pytest.mark.parametrize("F_dtype", [torch.float32, torch.bfloat16])
def test_backward_is_one_product_of_the_saved_factor(F_dtype, backend):
    """The forward pass saves one tensor, dloss/dF = 2 weight c_out (D - y) in float32 (the op's second output);
    backward multiplies it by the upstream gradient and nothing else, so it repeats exactly (retain_graph)."""
    device, shape = DEVICES[backend], (3, 4, 9)
    y, F, rng, v = case(shape, torch.float32, F_dtype, "seeds", "per-sample", device, seed=50)
    args = (v["sigma"], v["c_skip"], v["c_out"], v["weight"])
    F = F.detach().requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        loss = ops.loss_error(y, F, *args, **rng, backend=backend)
    assert len(saved) == 1, f"saved {len(saved)} tensors, expected only dloss/dF"
    factor = saved[0]
    assert factor.dtype == torch.float32 and factor.shape == shape
    kernel_values = ops.dispatch._kernel_values([ops.dispatch._per_sample_value(n, x, y) for n, x in zip(("s", "k", "o", "w"), args)], y)
    raw_loss, raw_factor = ops.dispatch._impl(backend).loss_error(y.contiguous(), F.detach().contiguous(), rng["seeds"],
                                                         ops.dispatch._offset_tensor(LOSS_NOISE_OFFSET, device), None,
                                                         *kernel_values)
    assert_equal(loss.detach(), raw_loss, name="loss vs the raw op")
    assert_equal(factor, raw_factor, name="the saved factor vs the op's dloss/dF")
    r, _, ps = exact_error_terms(y, F, rng, v)
    F_ref = F.detach().cpu().float().requires_grad_()  # eager's dloss/dF in float32, whatever F's dtype
    (eager,) = torch.autograd.grad(ops.loss_error(y.cpu(), F_ref, *map(on_cpu, args), seeds=SEEDS[:3],
                                                  backend="reference").sum(), F_ref)
    assert_error_bounded(factor, eager, 2 * ps["weight"] * ps["c_out"] * r, name="saved 2 w c_out (D - y)")
    upstream = make(shape, torch.float32, 51, device=device)
    (first,) = torch.autograd.grad(loss, F, upstream, retain_graph=True)
    (second,) = torch.autograd.grad(loss, F, upstream)
    assert_equal(second, first, name="second backward")
    assert_equal(first, (upstream * factor).to(F_dtype), name="grad vs upstream * saved factor")


@pytest.mark.parametrize("arg", ["y", "sigma", "c_skip", "c_out", "weight", "noise"])
def test_loss_error_refuses_other_gradients(arg, backend):
    """An input other than F that requires grad is refused with grad mode on (ValueError naming it), and taken
    under torch.no_grad() with the same result as detached inputs."""
    device, shape = DEVICES[backend], (2, 3, 5)
    inputs = dict(y=make(shape, torch.float32, 60, device=device), sigma=torch.tensor([0.5, 2.0], device=device),
                  c_skip=torch.tensor(0.3, device=device), c_out=torch.tensor([0.7, -0.4], device=device),
                  weight=torch.tensor([1.5, 0.5], device=device), noise=make(shape, torch.float32, 61, device=device))
    F = make(shape, torch.float32, 62, device=device).requires_grad_()

    def call(values):
        rng = dict(noise=values["noise"]) if arg == "noise" else dict(seeds=[3, 4])
        return ops.loss_error(values["y"], F, values["sigma"], values["c_skip"], values["c_out"], values["weight"],
                              **rng, backend=backend)

    with_grad = dict(inputs, **{arg: inputs[arg].clone().requires_grad_()})
    with pytest.raises(ValueError, match=rf"^{arg}: requires a gradient, but backend={re.escape(repr(backend))}"):
        call(with_grad)
    with torch.no_grad():
        got = call(with_grad)
    assert_equal(got, call(inputs).detach(), name=f"loss under no_grad with {arg} requiring grad")


@pytest.mark.parametrize("arg", ["y", "sigma", "c_in", "noise"])
def test_loss_input_refuses_gradients(arg, backend):
    """loss_input is not differentiable on the fused backends: an input requiring grad is refused by name with
    grad mode on, and taken under torch.no_grad()."""
    device, shape = DEVICES[backend], (2, 3, 5)
    inputs = dict(y=make(shape, torch.float32, 63, device=device), sigma=torch.tensor([0.5, 2.0], device=device),
                  c_in=torch.tensor(0.8, device=device), noise=make(shape, torch.float32, 64, device=device))

    def call(values):
        rng = dict(noise=values["noise"]) if arg == "noise" else dict(seeds=[3, 4])
        return ops.loss_input(values["y"], values["sigma"], values["c_in"], **rng, backend=backend)

    with_grad = dict(inputs, **{arg: inputs[arg].clone().requires_grad_()})
    with pytest.raises(ValueError, match=rf"^{arg}: requires a gradient, but backend={re.escape(repr(backend))}"):
        call(with_grad)
    with torch.no_grad():
        got = call(with_grad)
    assert_equal(got, call(inputs), name=f"loss_input under no_grad with {arg} requiring grad")


def test_reference_differentiates_every_input():
    """The reference path (what the refusal points to) differentiates in sigma and y too: d/dsigma of the summed
    loss is sum(2 w r c_skip n) and d/dy is 2 w r (c_skip - 1)."""
    y, F, rng, v = case((3, 4, 5), torch.float64, torch.float64, "noise", "shared", "cpu", seed=65)
    y, sigma = y.clone().requires_grad_(), torch.tensor([0.4, 1.3, 2.2], dtype=torch.float64, requires_grad=True)
    v["sigma"] = sigma
    loss = ops.loss_error(y, F, sigma, v["c_skip"], v["c_out"], v["weight"], **rng, backend="reference")
    grad_y, grad_sigma = torch.autograd.grad(loss.sum(), (y, sigma))
    r, _, ps = exact_error_terms(y, F, rng, v)
    n = rng["noise"]
    assert_close(grad_sigma, (2 * ps["weight"] * r * ps["c_skip"] * n).sum(dim=(1, 2)), name="d/dsigma")
    assert_close(grad_y, 2 * ps["weight"] * r * (ps["c_skip"] - 1), name="d/dy")


# ---------------------------------------------------------------------------------------------------------
# opcheck and torch.compile
# ---------------------------------------------------------------------------------------------------------


def loss_op_cases(backend_name):
    """Each loss op of `backend_name`'s torch.library namespace with argument tuples as fastdiff.ops passes them."""
    device, shape = DEVICES[backend_name], (3, 5, 7)
    y, y16 = make(shape, torch.float32, 70, device=device), make(shape, torch.float16, 71, device=device)
    F = make(shape, torch.bfloat16, 72, device=device).requires_grad_()
    F16 = make(shape, torch.float16, 73, device=device).requires_grad_()
    noise16 = make(shape, torch.float16, 74, device=device)
    seeds, offset = torch.tensor([1, 2, 3], device=device), torch.tensor(LOSS_NOISE_OFFSET, device=device)
    a, b = torch.tensor([0.5, 1.0, 2.0], device=device), torch.tensor([0.9, 0.3, -0.7], device=device)
    one = torch.full((3,), 0.6, device=device)
    y1 = make((1, 7), torch.bfloat16, 75, device=device)
    impl = ops.dispatch._impl(backend_name)
    return {
        "loss_input seeds": lambda: (impl.loss_input, (y, seeds, offset, None, a, one)),
        "loss_input noise fp16": lambda: (impl.loss_input, (y16, seeds, offset, noise16, one, b)),
        "loss_input batch 1": lambda: (impl.loss_input, (y1, seeds[:1], offset, None, a[:1], b[:1])),
        "loss_error seeds bf16 F": lambda: (impl.loss_error, (y, F, seeds, offset, None, a, one, b, a)),
        "loss_error noise fp16": lambda: (impl.loss_error, (y16, F16, seeds, offset, noise16, one, a, b, one)),
    }


LOSS_OP_CASES = ["loss_input seeds", "loss_input noise fp16", "loss_input batch 1", "loss_error seeds bf16 F",
                 "loss_error noise fp16"]


@pytest.mark.parametrize("name", LOSS_OP_CASES)
@pytest.mark.parametrize("backend_name", ["triton", "cpu"])
def test_opcheck_loss_ops(name, backend_name, opaque_triton_ops):
    """torch.library.opcheck: schema, fake implementation, autograd registration (F requiring grad in the
    loss_error cases) and AOT dispatch all agree."""
    op, args = loss_op_cases(backend_name)[name]()
    result = torch.library.opcheck(op, args)
    assert set(result.values()) == {"SUCCESS"}, result


def fused_training_step(y, weight, seeds, sigma, backend):
    """One VP-style loss around a toy network tanh(x) * weight: loss_input -> network -> loss_error."""
    x = ops.loss_input(y, sigma, 1 / (sigma**2 + 1).sqrt(), seeds=seeds, backend=backend)
    F = torch.tanh(x) * weight
    return ops.loss_error(y, F, sigma, 1.0, -sigma, 1 / sigma**2, seeds=seeds, backend=backend)


def compile_and_compare(backend_name, compiler, compare):
    """Compile fused_training_step with fullgraph=True; compare its loss and d/dweight with eager's."""
    device = DEVICES.get(backend_name, "cpu")
    y = make((3, 2, 9), torch.float32, 80, device=device)
    seeds, sigma = torch.tensor([5, 6, 7], device=device), torch.tensor([0.3, 1.0, 4.0], device=device)
    upstream = make((3, 2, 9), torch.float32, 81, device=device)
    results = []
    torch._dynamo.reset()
    backends.prepare(backend_name)  # ops called directly: load the backend before tracing (losses do it when built)
    for step in (torch.compile(fused_training_step, fullgraph=True, backend=compiler), fused_training_step):
        weight = make((9,), torch.float32, 82, device=device).requires_grad_()
        loss = step(y, weight, seeds, sigma, backend_name)
        (grad,) = torch.autograd.grad((loss * upstream).sum(), weight)
        results.append((loss.detach(), grad))
    (loss_c, grad_c), (loss_e, grad_e) = results
    compare(loss_c, loss_e, name=f"compiled {backend_name} loss")
    compare(grad_c, grad_e, name=f"compiled {backend_name} d/dweight")


@pytest.mark.parametrize("backend_name", ["triton", "cpu", "reference"])
def test_torch_compile_fullgraph_aot_eager(backend_name, opaque_triton_ops):
    """Both passes and the backward compile without a graph break (aot_eager) and give eager's result bit for bit."""
    compile_and_compare(backend_name, "aot_eager", assert_equal)


@pytest.mark.parametrize("loss_name", ["edm", "ddpm"])
def test_whole_loss_call_compiles_without_graph_breaks(loss_name):
    """EDMLoss / DDPMLoss called on a preconditioned MLP (the fused C++ path: seeds, sigma draw, both passes,
    the network) compile with fullgraph=True, and give eager's loss and gradients bit for bit (aot_eager)."""
    net = tiny_mlp(seed=3, num_classes=0)
    model = fastdiff.EDMPrecond(net) if loss_name == "edm" else net
    loss_fn = fastdiff.EDMLoss(backend="cpu") if loss_name == "edm" else fastdiff.DDPMLoss(backend="cpu")
    images, seeds = make((5, 2), torch.float32, 90, device="cpu"), torch.tensor([3, 1, 4, 1, 5])

    def reduced(images, seeds):
        return loss_fn(model, images, seeds=seeds).sum()

    torch._dynamo.reset()
    results = []
    for fn in (torch.compile(reduced, fullgraph=True, backend="aot_eager"), reduced):
        loss = fn(images, seeds)
        results.append((loss.detach(), torch.autograd.grad(loss, list(net.parameters()))))
    (loss_c, grads_c), (loss_e, grads_e) = results
    assert_equal(loss_c, loss_e, name="compiled loss")
    for g_c, g_e in zip(grads_c, grads_e):
        assert_equal(g_c, g_e, name="compiled gradient")


def test_torch_compile_fullgraph_inductor(opaque_triton_ops):
    """Inductor (one small case: it is slow to compile) gives eager's result within float32 rounding."""
    compile_and_compare("triton", "inductor", assert_close)


# ---------------------------------------------------------------------------------------------------------
# The loss classes end to end: fused backend vs backend="reference" for the same seeds
# ---------------------------------------------------------------------------------------------------------

PRECONDS = {"edm": (fastdiff.EDMLoss, fastdiff.EDMPrecond), "vp": (fastdiff.VPLoss, fastdiff.VPPrecond),
            "ve": (fastdiff.VELoss, fastdiff.VEPrecond)}
LOSS_SEEDS = [11, 2**62 + 5, 0, 42, 7, 1234567, 3]
FUSED_RTOL = 1e-4  # see assert_close_at_scale


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """The model with its zero-initialised parameters (output layers, biases) drawn at random, so that F != 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return model


def tiny_mlp(seed=0, num_classes=3):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return randomized(MLP(dim=2, hidden=32, depth=2, embedding_dim=16, num_classes=num_classes), seed)


def tiny_unet(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return randomized(UNet(img_resolution=8, in_channels=3, model_channels=8, channel_mult=(1, 2), num_blocks=1,
                               attn_resolutions=(4,), num_classes=3), seed)


def assert_close_at_scale(actual, expected, rtol, name):
    """|actual - expected| <= rtol (|expected| + max |expected|): an error relative to the tensor's scale.

    Fused and reference losses draw n in different code (their float32 normals agree to the last ulps, not bit
    for bit) and the network amplifies that difference of its input; FUSED_RTOL = 1e-4 is far above it and far
    below what a wrong coefficient, noise or gradient would give."""
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max().item(), name=name)


def loss_and_grads(loss_fn, net, images, labels, **kwargs):
    """The unreduced loss and every parameter's gradient of EDM's reduction loss.sum() / B."""
    net.zero_grad(set_to_none=True)
    loss = loss_fn(net, images, labels, **kwargs)
    (loss.sum() / images.shape[0]).backward()
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


def assert_same_training_signal(got, want, rtol, what):
    (loss_g, grads_g), (loss_w, grads_w) = got, want
    assert_close_at_scale(loss_g, loss_w, rtol, f"{what} loss")
    assert grads_g.keys() == grads_w.keys() and grads_w, f"{what}: parameters with gradients differ"
    for name in grads_w:
        assert_close_at_scale(grads_g[name], grads_w[name], rtol, f"{what} d/d{name}")


@pytest.mark.parametrize("precond", list(PRECONDS))
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("source", SOURCES)
def test_losses_fused_equal_reference_mlp(precond, with_labels, source, backend):
    """EDM/VP/VE losses with their preconditioner around an MLP on [7, 2] images: the fused backend's loss values
    and parameter gradients equal backend="reference"'s for the same seeds (class labels passed through; the noise
    drawn from the seeds or given)."""
    loss_cls, precond_cls = PRECONDS[precond]
    net = precond_cls(tiny_mlp(1), backend="reference").to(DEVICES[backend])
    images = make((7, 2), torch.float32, 90, device=DEVICES[backend])
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1], device=images.device) if with_labels else None
    noise = make((7, 2), torch.float32, 89, device=images.device) if source == "noise" else None
    got = loss_and_grads(loss_cls(backend=backend), net, images, labels, seeds=LOSS_SEEDS, noise=noise)
    want = loss_and_grads(loss_cls(backend="reference"), net.cpu(), images.cpu(), on_cpu(labels), seeds=LOSS_SEEDS,
                          noise=on_cpu(noise))
    assert got[0].dtype == torch.float32 and got[0].shape == images.shape
    assert_same_training_signal(got, want, FUSED_RTOL, f"{precond} fused")


@pytest.mark.parametrize("precond", list(PRECONDS))
def test_losses_fused_equal_reference_unet(precond, backend):
    """The same with a tiny UNet on [3, 3, 8, 8] images, with class labels."""
    loss_cls, precond_cls = PRECONDS[precond]
    net = precond_cls(tiny_unet(2), backend="reference").to(DEVICES[backend])
    images = make((3, 3, 8, 8), torch.float32, 91, device=DEVICES[backend])
    labels = torch.tensor([2, 0, 1], device=images.device)
    got = loss_and_grads(loss_cls(backend=backend), net, images, labels, seeds=LOSS_SEEDS[:3])
    want = loss_and_grads(loss_cls(backend="reference"), net.cpu(), images.cpu(), labels.cpu(), seeds=LOSS_SEEDS[:3])
    assert_same_training_signal(got, want, FUSED_RTOL, f"{precond} UNet fused")


class LabelRecorder(nn.Module):
    """Wraps a raw network; records the input, the labels and the output dtype of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x, c_noise, *labels):
        out = self.model(x, c_noise, *labels)
        self.calls.append((x.detach().clone(), labels, out.dtype))
        return out


def test_class_labels_reach_the_fused_network(backend):
    """The fused path calls the raw network with (c_in (y + sigma n), c_noise, class_labels), the very labels
    object, and the same input the reference path gives it; labels change the loss."""
    device = DEVICES[backend]
    model = LabelRecorder(tiny_mlp(3)).to(device)
    net = fastdiff.EDMPrecond(model, backend="reference")
    images = make((7, 2), torch.float32, 92, device=device)
    labels = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 1]), 3).float().to(device)
    with_labels = fastdiff.EDMLoss(backend=backend)(net, images, labels, seeds=LOSS_SEEDS)
    assert len(model.calls) == 1 and model.calls[0][1][0] is labels
    without = fastdiff.EDMLoss(backend=backend)(net, images, seeds=LOSS_SEEDS)
    assert model.calls[1][1] == ()
    assert not torch.allclose(with_labels, without, rtol=1e-3)
    fastdiff.EDMLoss(backend="reference")(net, images, labels, seeds=LOSS_SEEDS)
    # the same c_in (y + sigma n) up to the last float32 ulps of n (|c_in sigma n| < 6 here)
    assert_close(model.calls[0][0], model.calls[2][0], atol=1e-5, name="network input fused vs reference")


class Bf16Model(nn.Module):
    """A raw network that, unlike fastdiff's nets, returns what autocast computes (bfloat16 under autocast)."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(4)
        self.fc1, self.fc2 = nn.Linear(3, 32), nn.Linear(32, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))

    def forward(self, x, c_noise):
        return self.fc2(torch.nn.functional.silu(self.fc1(torch.cat([x, c_noise.reshape(-1, 1).to(x.dtype)], dim=1))))


@pytest.mark.parametrize("precond", list(PRECONDS))
@pytest.mark.parametrize("model", ["mlp", "bf16 output"])
def test_bf16_autocast_on_the_fused_path(precond, model, backend):
    """Under torch.autocast("cpu", bfloat16) the fused loss runs (F may come back in bfloat16), stays float32, and
    its loss and gradients are those of float32 training within bfloat16 tolerance; the reference path under
    autocast agrees with it as well."""
    device = DEVICES[backend]
    loss_cls, precond_cls = PRECONDS[precond]
    raw = LabelRecorder(tiny_mlp(5, num_classes=0) if model == "mlp" else Bf16Model()).to(device)
    net = precond_cls(raw, backend="reference")
    images = make((7, 2), torch.float32, 93, device=device)
    fp32 = loss_and_grads(loss_cls(backend=backend), net, images, None, seeds=LOSS_SEEDS)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        fused = loss_and_grads(loss_cls(backend=backend), net, images, None, seeds=LOSS_SEEDS)
        assert raw.calls[-1][2] == (torch.bfloat16 if model == "bf16 output" else torch.float32)
        ref = loss_and_grads(loss_cls(backend="reference"), net, images, None, seeds=LOSS_SEEDS)
    assert fused[0].dtype == torch.float32 and all(g.dtype == torch.float32 for g in fused[1].values())
    bf16_rtol = tolerance(torch.bfloat16)[0]
    # Against float32 training: the loss at bf16 tolerance of its scale, the gradient (all parameters as one vector)
    # in norm. Elementwise, a network run in bf16 drifts by a few bf16 ulps, more than one tolerance.
    assert_close_at_scale(fused[0], fp32[0], bf16_rtol, f"{precond} autocast vs float32 loss")
    assert fused[1].keys() == fp32[1].keys()
    grad_ac, grad_32 = (torch.cat([grads[name].flatten() for name in fp32[1]]) for grads in (fused[1], fp32[1]))
    relative = ((grad_ac - grad_32).norm() / grad_32.norm()).item()
    assert relative <= bf16_rtol, f"{precond}: autocast gradient off by {relative:.3g} of its norm"
    # Against the reference path under the same autocast: the same bf16 computations, so elementwise at scale.
    assert_same_training_signal(fused, ref, bf16_rtol, f"{precond} autocast fused vs reference")
    assert not torch.equal(fused[0], fp32[0])  # autocast did change the computation


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_ddpm_loss_fused_equals_reference(schedule, with_labels, backend):
    """DDPM's L_simple, run fused as a VP-preconditioned EDM loss, equals (n - eps(x_t, t))^2 of the reference path
    for the same seeds: values and gradients."""
    device = DEVICES[backend]
    eps_model = tiny_mlp(6).to(device)
    images = make((7, 2), torch.float32, 94, device=device)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1], device=device) if with_labels else None
    seeds = LOSS_SEEDS
    got = loss_and_grads(fastdiff.DDPMLoss(beta_schedule=schedule, backend=backend), eps_model, images, labels,
                         seeds=seeds)
    want = loss_and_grads(fastdiff.DDPMLoss(beta_schedule=schedule, backend="reference"), eps_model.cpu(),
                          images.cpu(), on_cpu(labels), seeds=seeds)
    assert got[0].dtype == torch.float32 and got[0].shape == images.shape
    assert_same_training_signal(got, want, FUSED_RTOL, f"DDPM {schedule} fused")
    t = fastdiff.DDPMLoss(beta_schedule=schedule).draw_t(torch.tensor(seeds))
    assert len(set(t.tolist())) > 3  # the seeds spread over the schedule


@pytest.mark.parametrize("loss_name", ["edm", "ddpm"])
def test_seeds_repeat_differ_and_default_to_torch_generator(loss_name, backend):
    """Same seeds: the same loss bit for bit; other seeds: another loss; seeds=None draws them from torch's generator
    (torch.manual_seed repeats the loss, which equals the loss for seeds = torch.randint(0, 2^63 - 1, [B]))."""
    device = DEVICES[backend]
    if loss_name == "edm":
        net = fastdiff.EDMPrecond(tiny_mlp(7), backend="reference").to(device)
        loss_fn = fastdiff.EDMLoss(backend=backend)
    else:
        net, loss_fn = tiny_mlp(7).to(device), fastdiff.DDPMLoss(backend=backend)
    images = make((5, 2), torch.float32, 95, device=device)
    first = loss_fn(net, images, seeds=LOSS_SEEDS[:5])
    assert_equal(loss_fn(net, images, seeds=LOSS_SEEDS[:5]), first, name="repeat with the same seeds")
    other = loss_fn(net, images, seeds=LOSS_SEEDS[2:7])
    assert not torch.isclose(other, first).all(dim=1).any()  # every sample's loss changed
    with torch.random.fork_rng():
        torch.manual_seed(123)
        drawn = loss_fn(net, images)
        torch.manual_seed(123)
        again = loss_fn(net, images)
        torch.manual_seed(123)
        seeds = torch.randint(0, MAX_SEED, (5,), dtype=torch.int64, device=device)
        explicit = loss_fn(net, images, seeds=seeds)
        torch.manual_seed(124)
        reseeded = loss_fn(net, images)
    assert_equal(again, drawn, name="seeds=None after the same torch.manual_seed")
    assert_equal(explicit, drawn, name="seeds=None vs the seeds torch's generator gives")
    assert not torch.equal(reseeded, drawn)


# ---------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precond", list(PRECONDS))
def test_named_backend_needs_a_precond(precond, backend):
    """A fused backend named explicitly with a net that is not a Precond raises TypeError naming `net`; "auto" and
    "reference" take any denoiser."""
    loss_cls, precond_cls = PRECONDS[precond]
    images = make((3, 2), torch.float32, 96, device=DEVICES[backend])
    denoiser = precond_cls(tiny_mlp(8, num_classes=0), backend="reference").to(images.device)
    plain = lambda x, sigma: denoiser(x, sigma)  # noqa: E731  (the same denoiser, but not a Precond)
    with pytest.raises(TypeError, match=rf"^net: backend={re.escape(repr(backend))} fuses the loss around a fastdiff "
                                        r"preconditioner.*got a function"):
        loss_cls(backend=backend)(plain, images, seeds=[1, 2, 3])
    want = loss_cls(backend="reference")(denoiser, images, seeds=[1, 2, 3])
    assert_equal(loss_cls(backend="reference")(plain, images, seeds=[1, 2, 3]), want, name="reference, plain net")
    # "auto" draws sigma with the fastest backend's randn, equal to the reference's up to the last ulps
    assert_close(loss_cls(backend="auto")(plain, images, seeds=[1, 2, 3]), want, rtol=1e-4, name="auto, plain net")


@pytest.mark.parametrize("backend_name", ["reference", "triton", "cpu"])
def test_loss_op_argument_errors_name_the_argument(backend_name):
    """The loss ops refuse missing seeds and noise, wrong noise, bad seeds and bad values by the argument's name."""
    device = DEVICES.get(backend_name, "cpu")
    y = torch.zeros(2, 3, device=device)
    common = dict(backend=backend_name)
    with pytest.raises(ValueError, match=r"^seeds: expected one seed per sample .* or noise=, got neither"):
        ops.loss_input(y, 1.0, 1.0, **common)
    with pytest.raises(ValueError, match=r"^seeds: expected one seed per sample .* or noise=, got neither"):
        ops.loss_error(y, y, 1.0, 1.0, 1.0, 1.0, **common)
    with pytest.raises(ValueError, match=r"^noise: expected the shape \(2, 3\), got \(2, 4\)"):
        ops.loss_input(y, 1.0, 1.0, noise=torch.zeros(2, 4, device=device), **common)
    with pytest.raises(ValueError, match=r"^noise: expected the shape \(2, 3\), got \(3,\)"):
        ops.loss_error(y, y, 1.0, 1.0, 1.0, 1.0, noise=torch.zeros(3, device=device), **common)
    with pytest.raises(TypeError, match=r"^noise: expected a floating-point tensor"):
        ops.loss_error(y, y, 1.0, 1.0, 1.0, 1.0, noise=torch.zeros(2, 3, dtype=torch.int64, device=device), **common)
    with pytest.raises(ValueError, match=r"^seeds: expected 2 seeds"):
        ops.loss_input(y, 1.0, 1.0, seeds=[1], **common)
    with pytest.raises(ValueError, match=r"^seeds: every seed must be in \[0, 2\^63\), got -1"):
        ops.loss_error(y, y, 1.0, 1.0, 1.0, 1.0, seeds=[1, -1], **common)
    with pytest.raises(TypeError, match=r"^seeds: expected ints, got 1.5"):
        ops.loss_input(y, 1.0, 1.0, seeds=[1.5, 2], **common)
    with pytest.raises(TypeError, match=r"^seeds: expected a tensor of integers"):
        ops.loss_error(y, y, 1.0, 1.0, 1.0, 1.0, seeds=torch.tensor([1.0, 2.0]), **common)
    with pytest.raises(ValueError, match=r"^seeds: expected one seed per sample \(a 1-D sequence\)"):
        ops.loss_input(y, 1.0, 1.0, seeds=torch.tensor([[1, 2]]), **common)
    with pytest.raises(ValueError, match=r"^sigma: expected one value or one per sample"):
        ops.loss_input(y, torch.ones(3, device=device), 1.0, seeds=[1, 2], **common)
    with pytest.raises(TypeError, match=r"^c_out: expected a floating-point value"):
        ops.loss_error(y, y, 1.0, 1.0, torch.tensor([1, 2], device=device), 1.0, seeds=[1, 2], **common)
    with pytest.raises(ValueError, match=r"^F: expected the shape \(2, 3\), got \(2, 1\)"):
        ops.loss_error(y, y[:, :1], 1.0, 1.0, 1.0, 1.0, seeds=[1, 2], **common)
    with pytest.raises(ValueError, match=r"^offset: expected an int in \[0, 2\^64\)"):
        ops.loss_input(y, 1.0, 1.0, seeds=[1, 2], offset=-1, **common)


def test_float64_needs_the_reference_path(backend):
    """float64 y or F cannot run in the float32 kernels: a named backend raises with that reason; the reference
    computes in float64."""
    y64 = torch.zeros(2, 3, dtype=torch.float64, device=DEVICES[backend])
    y32 = y64.float()
    with pytest.raises(backends.BackendUnavailableError, match="got torch.float64"):
        ops.loss_input(y64, 1.0, 1.0, seeds=[1, 2], backend=backend)
    with pytest.raises(backends.BackendUnavailableError, match="got torch.float64"):
        ops.loss_error(y32, y64, 1.0, 1.0, 1.0, 1.0, seeds=[1, 2], backend=backend)
    loss64 = ops.loss_error(y32.cpu(), y64.cpu(), 1.0, 1.0, 1.0, 1.0, seeds=[1, 2], backend="reference")
    assert loss64.dtype == torch.float64
    net = fastdiff.EDMPrecond(tiny_mlp(9, num_classes=0).double(), backend="reference")
    with pytest.raises(backends.BackendUnavailableError, match="got torch.float64"):
        fastdiff.EDMLoss(backend=backend)(net, torch.zeros(3, 2, dtype=torch.float64), seeds=[1, 2, 3])


@pytest.mark.parametrize("loss_name", ["edm", "vp", "ve", "ddpm"])
def test_loss_class_argument_errors_name_the_argument(loss_name, backend):
    """The loss classes on a fused backend refuse noise of the wrong shape and bad seeds by name."""
    images = make((3, 2), torch.float32, 97, device=DEVICES[backend])
    if loss_name == "ddpm":
        net, loss_fn = tiny_mlp(10, num_classes=0).to(images.device), fastdiff.DDPMLoss(backend=backend)
    else:
        loss_cls, precond_cls = PRECONDS[loss_name]
        net = precond_cls(tiny_mlp(10, num_classes=0), backend="reference").to(images.device)
        loss_fn = loss_cls(backend=backend)
    with pytest.raises(ValueError, match=r"^noise: expected a tensor of the images' shape \(3, 2\), got \(3, 1\)"):
        loss_fn(net, images, seeds=[1, 2, 3], noise=images[:, :1])
    with pytest.raises(ValueError, match=r"^seeds: expected 3 seeds"):
        loss_fn(net, images, seeds=[1, 2])
    with pytest.raises(ValueError, match=r"^seeds: every seed must be in \[0, 2\^63\)"):
        loss_fn(net, images, seeds=[1, 2, 2**63])
    with pytest.raises(TypeError, match=r"^seeds: expected ints"):
        loss_fn(net, images, seeds=["a", 2, 3])
    noise = make((3, 2), torch.float32, 98, device=images.device)  # given noise replaces the seeds' noise
    assert not torch.equal(loss_fn(net, images, seeds=[1, 2, 3], noise=noise), loss_fn(net, images, seeds=[1, 2, 3]))
