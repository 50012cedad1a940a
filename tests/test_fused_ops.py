"""Every compiled backend's ops against their reference twins: odd shapes, batch 1, non-contiguous inputs,
every dtype, scalar and per-sample per-step values.

Backends: "triton" (without a GPU its kernels run on CPU tensors under TRITON_INTERPRET=1, set by conftest.py;
with one, on CUDA) and "cpu" (the C++ kernels of fastdiff._C, run with 1 and with 2 threads).
"""
import math
import re
import os

import pytest
import torch
import triton  # noqa: F401  (the Triton backend is under test: a missing triton is a failure, not a skip)

import fastdiff
from fastdiff.ops import _cpu  # noqa: F401  (the C++ backend is under test: a failed build is a failure, not a skip)
from fastdiff.ops import _triton  # noqa: F401  (imported now, under conftest's TRITON_INTERPRET, whatever tests run first)
from fastdiff.ops import backends, reference
from fastdiff import ops
from fastdiff._codes import PRECOND_CODES, PRECOND_EDM
from fastdiff.ops.kernels.randn import philox_words as triton_philox_words
from fastdiff.rng import SAMPLER_OFFSET, philox_words
from fastdiff.testing import BACKEND_DEVICES, TRITON_DEVICE, assert_close, assert_equal, assert_error_bounded, tolerance

DEVICES = BACKEND_DEVICES
DEVICE = TRITON_DEVICE  # the device of the backend-independent tests below
# The `backend` fixture (tests/conftest.py) runs each test on every compiled backend: triton, the C++ CPU kernels
# on 1 thread (test_cpu_threads_split_work_without_changing_bits covers 2) and, where it is built, C++ CUDA.
SHAPES = [(3, 5, 37, 41), (1, 7), (2, 3), (4, 8), (1, 1), (5, 1, 3)]  # odd sizes, batch 1, sizes % 4 == 0 and not
STATE_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SEEDS = [0, 2**63 - 1, 12345, 7, 99]


def make(shape, dtype, seed, noncontiguous=False, device=None):
    """A random tensor on `device` (default DEVICE); non-contiguous ones are a strided view of a larger buffer."""
    generator = torch.Generator().manual_seed(seed)
    if noncontiguous:  # every other element of a buffer twice as long in the last dimension
        t = torch.randn(*shape[:-1], 2 * shape[-1], generator=generator)[..., ::2]
        assert not t.is_contiguous() or t.numel() == shape[0]  # a single element per sample cannot be strided
    else:
        t = torch.randn(*shape, generator=generator)
    return t.to(device=device or DEVICE, dtype=dtype)


def per_sample_or_scalar(batch, per_sample, low, high, seed, device=None):
    generator = torch.Generator().manual_seed(seed)
    if per_sample:
        return (low + (high - low) * torch.rand(batch, generator=generator)).to(device or DEVICE)
    return torch.tensor(low + (high - low) * torch.rand((), generator=generator).item(), device=device or DEVICE)


@pytest.mark.parametrize("numel", [1, 3, 4, 7, 8, 37 * 41, 1024, 1029])
@pytest.mark.parametrize("offset", [0, 5, SAMPLER_OFFSET + 17, 2**64 - 1])
def test_stream_words_are_bit_exact(numel, offset, backend):
    """The kernels' Philox words equal the reference's, bit for bit, for any sample size and offset."""
    device = DEVICES[backend]
    seeds = torch.tensor([0, -1, 2**62 + 3], device=device)
    offset_t = ops.dispatch._offset_tensor(offset, device)
    if backend == "cuda":
        pytest.skip("the CUDA backend has no raw-words op; its normals are checked against the reference below")
    words = triton_philox_words if backend == "triton" else torch.ops.fastdiff.stream_words
    assert_equal(words(seeds, numel, offset_t).cpu(), philox_words(seeds.cpu(), numel, offset))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", STATE_DTYPES)
def test_randn_matches_reference(shape, dtype, backend):
    """Normals equal the reference's up to the last ulps of log/cos/sin (then rounded to dtype)."""
    seeds = SEEDS[: shape[0]]
    got = ops.randn(seeds, shape, offset=3, dtype=dtype, device=DEVICES[backend], backend=backend)
    want = ops.randn(seeds, shape, offset=3, dtype=torch.float32, backend="reference")
    assert got.dtype == dtype and got.shape == shape
    assert_close(got, want, dtype=dtype, rtol=max(tolerance(dtype)[0], 1e-6), atol=2e-6, name="randn")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", STATE_DTYPES)
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("noncontiguous", [False, True])
def test_churn_matches_reference(shape, dtype, per_sample, noncontiguous, backend):
    """x + noise_std * eps with in-kernel noise equals the reference (per-sample or shared noise_std)."""
    device = DEVICES[backend]
    x = make(shape, dtype, 1, noncontiguous, device)
    noise_std = per_sample_or_scalar(shape[0], per_sample, 0.1, 3.0, 2, device)
    seeds = torch.tensor(SEEDS[: shape[0]], device=device)
    offset = torch.tensor(SAMPLER_OFFSET + 4, device=device)
    got = ops.churn(x, seeds, offset, noise_std, backend=backend)
    want = ops.churn(x.cpu(), seeds.cpu(), offset.cpu(), noise_std.cpu(), backend="reference")
    assert got.dtype == dtype and got.shape == shape and got.is_contiguous()
    # Both compute in float32 from the same words; only log/cos/sin ulps and the final rounding may differ.
    assert_close(got, want, dtype=dtype, rtol=max(tolerance(dtype)[0], 1e-6), atol=1e-5, name="churn")


PER_SAMPLE = [False, True, "t_hat only", "t_next only"]


def step_inputs(shape, state_dtype, denoised_dtype, per_sample, noncontiguous, device):
    """Step inputs; per_sample says which of t_hat, t_next hold one value per sample (True: both)."""
    x_hat = make(shape, state_dtype, 3, noncontiguous, device) * 2.0
    denoised = make(shape, denoised_dtype, 4, noncontiguous, device)
    denoised_next = make(shape, denoised_dtype, 5, noncontiguous, device)
    t_hat = per_sample_or_scalar(shape[0], per_sample in (True, "t_hat only"), 0.5, 10.0, 6, device)
    t_next = per_sample_or_scalar(shape[0], per_sample in (True, "t_next only"), 0.2, 0.4, 7, device)
    return x_hat, denoised, denoised_next, t_hat, t_next


def float64_twin(*tensors):
    return [t.detach().cpu().double() for t in tensors]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("denoised_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("per_sample", PER_SAMPLE)
@pytest.mark.parametrize("noncontiguous", [False, True])
def test_euler_step_matches_reference(shape, state_dtype, denoised_dtype, per_sample, noncontiguous, backend):
    """euler_step: within the state dtype's tolerance of the reference, and within 2x eager's float64 error."""
    x_hat, denoised, _, t_hat, t_next = step_inputs(shape, state_dtype, denoised_dtype, per_sample, noncontiguous,
                                                    DEVICES[backend])
    got = ops.euler_step(x_hat, denoised, t_hat, t_next, backend=backend)
    want = ops.euler_step(x_hat.cpu(), denoised.cpu(), t_hat.cpu(), t_next.cpu(), backend="reference")
    exact = reference.euler_step(*float64_twin(x_hat, denoised, t_hat, t_next))
    assert got.dtype == state_dtype and got.shape == shape
    assert_close(got, want, dtype=state_dtype, name="euler_step")
    assert_error_bounded(got, want, exact, name="euler_step")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("denoised_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("per_sample", PER_SAMPLE)
@pytest.mark.parametrize("noncontiguous", [False, True])
def test_heun_step_matches_reference(shape, state_dtype, denoised_dtype, per_sample, noncontiguous, backend):
    """heun_step: within the state dtype's tolerance of the reference, and within 2x eager's float64 error."""
    x_hat, denoised, denoised_next, t_hat, t_next = step_inputs(shape, state_dtype, denoised_dtype, per_sample,
                                                                noncontiguous, DEVICES[backend])
    got = ops.heun_step(x_hat, denoised, denoised_next, t_hat, t_next, backend=backend)
    want = ops.heun_step(x_hat.cpu(), denoised.cpu(), denoised_next.cpu(), t_hat.cpu(), t_next.cpu(), backend="reference")
    exact = reference.heun_step(*float64_twin(x_hat, denoised, denoised_next, t_hat, t_next))
    assert got.dtype == state_dtype and got.shape == shape
    assert_close(got, want, dtype=state_dtype, name="heun_step")
    assert_error_bounded(got, want, exact, name="heun_step")


MULTISTEP_PER_SAMPLE = [False, True, "c only", "t_next only"]


def multistep_inputs(shape, state_dtype, denoised_dtype, per_sample, noncontiguous, device):
    """multistep_step's inputs; per_sample says which of c, t, t_next hold one value per sample (True: all three)."""
    x = make(shape, state_dtype, 13, noncontiguous, device) * 2.0
    denoised = make(shape, denoised_dtype, 14, noncontiguous, device)
    denoised_prev = make(shape, denoised_dtype, 15, noncontiguous, device)
    c = per_sample_or_scalar(shape[0], per_sample in (True, "c only"), 0.2, 1.5, 16, device)
    t = per_sample_or_scalar(shape[0], per_sample is True, 0.5, 10.0, 17, device)
    t_next = per_sample_or_scalar(shape[0], per_sample in (True, "t_next only"), 0.2, 0.4, 18, device)
    return x, denoised, denoised_prev, c, t, t_next


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("denoised_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("per_sample", MULTISTEP_PER_SAMPLE)
@pytest.mark.parametrize("noncontiguous", [False, True])
def test_multistep_step_matches_reference(shape, state_dtype, denoised_dtype, per_sample, noncontiguous, backend):
    """multistep_step: within the state dtype's tolerance of the reference, and within 2x eager's float64 error."""
    args = multistep_inputs(shape, state_dtype, denoised_dtype, per_sample, noncontiguous, DEVICES[backend])
    got = ops.multistep_step(*args, backend=backend)
    want = ops.multistep_step(*(a.cpu() for a in args), backend="reference")
    exact = reference.multistep_step(*float64_twin(*args))
    assert got.dtype == state_dtype and got.shape == shape and got.is_contiguous()
    assert_close(got, want, dtype=state_dtype, name="multistep_step")
    assert_error_bounded(got, want, exact, name="multistep_step")


@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("denoised_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("per_sample", MULTISTEP_PER_SAMPLE)
def test_cpu_multistep_step_is_the_reference_bit_for_bit(state_dtype, denoised_dtype, per_sample):
    """The C++ CPU kernel (no fused multiply-adds) computes the reference's float32 operations in its order, so its
    result equals the reference's bit for bit, rounded to fp16/bf16 as torch rounds, strided inputs included."""
    for shape, noncontiguous in (((3, 5, 37, 41), False), ((4, 8), True), ((5, 1, 3), False)):
        args = multistep_inputs(shape, state_dtype, denoised_dtype, per_sample, noncontiguous, "cpu")
        assert_equal(ops.multistep_step(*args, backend="cpu"), ops.multistep_step(*args, backend="reference"),
                     name=f"multistep_step {shape}")


def test_multistep_step_is_the_extrapolation_then_the_euler_step():
    """In float64 the op is D' = D + c (D - D_prev) followed by the Euler step from t to t_next with D', the two
    passes the sampling loop ran before (docs/formulas.md#multistep-step); with c = 0 it is the Euler step."""
    x, denoised, denoised_prev, c, t, t_next = multistep_inputs((3, 4, 5), torch.float64, torch.float64, True, False, "cpu")
    c, t, t_next = c.double(), t.double(), t_next.double()
    extrapolated = denoised + c.reshape(-1, 1, 1) * (denoised - denoised_prev)
    got = ops.multistep_step(x, denoised, denoised_prev, c, t, t_next)
    assert got.dtype == torch.float64
    assert_close(got, reference.euler_step(x, extrapolated, t, t_next), rtol=1e-13, atol=1e-13, name="multistep_step")
    zero = torch.zeros_like(c)
    assert_close(ops.multistep_step(x, denoised, denoised_prev, zero, t, t_next),
                 reference.euler_step(x, denoised, t, t_next), rtol=1e-13, atol=1e-13, name="c = 0")
    last = ops.multistep_step(x, denoised, denoised_prev, c, t, torch.zeros_like(t))  # into t_next = 0: D' itself
    assert_equal(last, extrapolated, name="t_next = 0")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("precond", ["edm", "vp", "ve", "iddpm"])
@pytest.mark.parametrize("dtype", STATE_DTYPES)
@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("noncontiguous", [False, True])
def test_skip_mix_matches_reference(shape, precond, dtype, per_sample, noncontiguous, backend):
    """skip_mix: float32 result within float32 tolerance of the reference for every preconditioner."""
    device = DEVICES[backend]
    x = make(shape, dtype, 7, noncontiguous, device)
    F = make(shape, dtype, 8, noncontiguous, device)
    sigma = per_sample_or_scalar(shape[0], per_sample, 0.002, 80.0, 9, device)
    got = ops.skip_mix(x, F, sigma, precond=precond, sigma_data=0.6, backend=backend)
    want = ops.skip_mix(x.cpu(), F.cpu(), sigma.cpu(), precond=precond, sigma_data=0.6, backend="reference")
    exact = reference.skip_mix(*float64_twin(x, F, sigma), precond, 0.6)
    assert got.dtype == torch.float32 and got.shape == shape
    assert_close(got, want, dtype=torch.float32, name="skip_mix")
    assert_error_bounded(got, want, exact, name="skip_mix")


@pytest.mark.parametrize("per_sample", [False, True])
def test_skip_mix_gradients_match_reference(per_sample, backend):
    """Gradients of skip_mix in x, F and sigma equal the reference's autograd."""
    shape = (3, 5, 7)
    grads = {}
    for name in (backend, "reference"):
        device = DEVICES[backend]
        x, F = make(shape, torch.float32, 10, device=device), make(shape, torch.float32, 11, device=device)
        sigma = per_sample_or_scalar(3, per_sample, 0.1, 5.0, 12, device)
        x.requires_grad_(), F.requires_grad_(), sigma.requires_grad_()
        weight = make(shape, torch.float32, 13, device=device)
        (ops.skip_mix(x, F, sigma, precond="edm", backend=name) * weight).sum().backward()
        grads[name] = (x.grad, F.grad, sigma.grad)
    for name, got, want in zip(("x", "F", "sigma"), grads[backend], grads["reference"]):
        assert_close(got, want, rtol=1e-5, atol=1e-5, name=f"d/d{name}")


def op_cases(backend):
    """Each op of `backend`'s torch.library namespace with a typical argument tuple."""
    device = DEVICES[backend]
    x = make((3, 5, 8), torch.float32, 20, device=device)
    d1, d2 = make((3, 5, 8), torch.bfloat16, 21, device=device), make((3, 5, 8), torch.float32, 22, device=device)
    seeds = torch.tensor([1, 2, 3], device=device)
    offset = torch.tensor(9, device=device)
    t_hat, t_next = torch.tensor([2.0, 3.0, 4.0], device=device), torch.tensor(1.0, device=device)
    impl = ops.dispatch._impl(backend)
    return {
        "randn": (impl.randn, (seeds, offset, [3, 5, 7], torch.float32)),
        "churn": (impl.churn, (x, seeds, offset, t_hat)),
        "euler_step": (impl.euler_step, (x, d1, t_hat, t_next)),
        "heun_step": (impl.heun_step, (x, d1, d2, t_hat, t_next)),
        "multistep_step": (impl.multistep_step, (x, d1, d1.flip(0), torch.tensor(0.5, device=device), t_hat, t_next)),
        "combine": (impl.combine, (x, d1, None, d2, None, torch.tensor([0.9, 0.2, 0.0, -0.3, 0.0, 0.4], device=device),
                                   seeds, offset, None)),
        "skip_mix": (impl.skip_mix, (x, d2, t_hat, PRECOND_EDM, 0.5)),
    }


@pytest.mark.parametrize("name", ["randn", "churn", "euler_step", "heun_step", "multistep_step", "combine", "skip_mix"])
@pytest.mark.parametrize("backend_name", ["triton", "cpu"])
def test_opcheck(name, backend_name, opaque_triton_ops):
    """torch.library.opcheck: schema, fake implementation, autograd registration and AOT dispatch all agree."""
    op, args = op_cases(backend_name)[name]
    result = torch.library.opcheck(op, args)
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("backend_name", ["triton", "cpu"])
def test_opcheck_skip_mix_with_gradients(backend_name, opaque_triton_ops):
    """opcheck with inputs that require grad exercises skip_mix's registered backward."""
    device = DEVICES[backend_name]
    x = make((2, 3, 4), torch.float32, 30, device=device).requires_grad_()
    F = make((2, 3, 4), torch.float32, 31, device=device).requires_grad_()
    sigma = torch.tensor([0.5, 2.0], device=device, requires_grad=True)
    result = torch.library.opcheck(ops.dispatch._impl(backend_name).skip_mix, (x, F, sigma, PRECOND_EDM, 0.5))
    assert set(result.values()) == {"SUCCESS"}, result


def heun_churn_step(x, seeds, offset, noise_std, t_hat, t_next, backend):
    """One Heun step with churn around a fixed smooth 'network' (tanh), as the sampler runs it."""
    x_hat = ops.churn(x, seeds, offset, noise_std, backend=backend)
    denoised = torch.tanh(x_hat) * 0.5
    x_next = ops.euler_step(x_hat, denoised, t_hat, t_next, backend=backend)
    denoised_next = torch.tanh(x_next) * 0.5
    return ops.heun_step(x_hat, denoised, denoised_next, t_hat, t_next, backend=backend)


@pytest.mark.parametrize("backend_name", ["triton", "cpu", "reference"])
def test_torch_compile_fullgraph_of_a_sampling_step(backend_name, opaque_triton_ops):
    """A whole Heun step with churn compiles with fullgraph=True (no graph break) and gives the eager result."""
    device = DEVICES.get(backend_name, "cpu")
    args = (make((2, 3, 8), torch.float32, 40, device=device), torch.tensor([5, 6], device=device),
            torch.tensor(SAMPLER_OFFSET, device=device), torch.tensor(0.7, device=device), torch.tensor(3.0, device=device),
            torch.tensor(2.0, device=device))
    torch._dynamo.reset()
    compiled = torch.compile(heun_churn_step, fullgraph=True, backend="aot_eager")
    assert_close(compiled(*args, backend_name), heun_churn_step(*args, backend_name), name=f"compiled {backend_name} step")


def mixture_net():
    gm = fastdiff.GaussianMixture(torch.linspace(-1, 1, 12).reshape(3, 4), [0.3, 0.5, 0.2])
    return lambda x, sigma: gm(x, sigma).to(x.dtype)


@pytest.mark.parametrize("solver", ["heun", "euler"])
@pytest.mark.parametrize("churn", [dict(), dict(S_churn=30.0, S_min=0.05, S_max=50.0, S_noise=1.003)])
def test_whole_sampler_equals_reference(solver, churn, backend):
    """sample(backend=...) equals sample(backend="reference") within float32 accumulation over 16 steps."""
    seeds = [3, 1, 4, 1, 5]
    latents = fastdiff.randn(seeds, (5, 4), backend="reference").to(DEVICES[backend])
    settings = dict(num_steps=16, solver=solver, seeds=seeds, **churn)
    got = fastdiff.sample(mixture_net(), latents, backend=backend, **settings)
    want = fastdiff.sample(mixture_net(), latents.cpu(), backend="reference", **settings)
    assert_close(got, want, rtol=2e-4, atol=2e-4, name="samples")


def test_preconditioned_sampling_with_fused_skip_mix(backend):
    """An EDMPrecond net whose skip mix runs fused samples like the reference within float32 accumulation."""
    model = lambda x, c_noise: torch.tanh(x) * (1 + 0.1 * c_noise.reshape(-1, 1))  # noqa: E731
    latents = fastdiff.randn([0, 1, 2], (3, 6), backend="reference").to(DEVICES[backend])
    got = fastdiff.sample(fastdiff.EDMPrecond(model, backend=backend), latents, num_steps=10, seeds=[0, 1, 2], backend=backend)
    want = fastdiff.sample(fastdiff.EDMPrecond(model, backend="reference"), latents.cpu(), num_steps=10, seeds=[0, 1, 2],
                           backend="reference")
    assert_close(got, want, rtol=2e-4, atol=2e-4, name="samples")


def test_triton_refuses_float64_state_with_its_reason():
    """A float64 state cannot run in the fused kernels: asked for by name, Triton raises with that reason."""
    with pytest.raises(backends.BackendUnavailableError, match="take float32/float16/bfloat16 state, got torch.float64"):
        fastdiff.sample(mixture_net(), torch.randn(2, 4, dtype=torch.float64, device=DEVICE), num_steps=3, backend="triton")
    with pytest.raises(backends.BackendUnavailableError, match="backend='triton' cannot run"):
        ops.euler_step(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3), 1.0, 0.5, backend="triton")


def test_auto_and_environment_override(monkeypatch):
    """auto skips the interpreter on CPU tensors; FASTDIFF_BACKEND replaces auto and is checked like a named backend."""
    x = torch.zeros(2, 3, device=DEVICE)
    expected_auto = "triton" if DEVICE == "cuda" else ("cpu" if not backends.reasons("cpu", x, (x,)) else "reference")
    assert backends.resolve("auto", x, (x,)) == expected_auto
    monkeypatch.setenv("FASTDIFF_BACKEND", "triton")
    assert backends.resolve("auto", x, (x,)) == "triton"
    assert backends.resolve("reference", x, (x,)) == "reference"  # a named backend wins over the variable
    monkeypatch.setenv("FASTDIFF_BACKEND", "cuda")
    with pytest.raises(backends.BackendUnavailableError, match=re.escape("backend='cuda' cannot run: ")) as raised:
        backends.resolve("auto", x, (x,))
    assert str(raised.value) == "backend='cuda' cannot run: " + "; ".join(backends.reasons("cuda", x, (x,)))
    monkeypatch.setenv("FASTDIFF_BACKEND", "gpu")
    with pytest.raises(ValueError, match="FASTDIFF_BACKEND: expected one of"):
        backends.resolve("auto", x, (x,))


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the CPU-without-interpreter reason, which a GPU run cannot reach")
def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    """Without TRITON_INTERPRET, CPU tensors are refused by name with the reason."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    x = torch.zeros(2, 3)
    with pytest.raises(backends.BackendUnavailableError, match="the tensors are on the CPU; Triton kernels run on CUDA"):
        ops.euler_step(x, x, 1.0, 0.5, backend="triton")


def test_op_argument_errors_name_the_argument():
    """Each op rejects bad arguments with the argument's name, the value and what is accepted."""
    x = torch.zeros(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match=r"denoised: expected the shape \(2, 3\), got \(2, 4\)"):
        ops.euler_step(x, torch.zeros(2, 4, device=DEVICE), 1.0, 0.5)
    with pytest.raises(ValueError, match=r"t_hat: expected one value or one per sample \(shape \[2\]\), got shape \(3,\)"):
        ops.euler_step(x, x, torch.ones(3, device=DEVICE), 0.5)
    with pytest.raises(TypeError, match="t_next: expected a floating-point value"):
        ops.heun_step(x, x, x, 1.0, torch.tensor(1))
    with pytest.raises(TypeError, match="x_hat: expected a floating-point tensor"):
        ops.euler_step(torch.zeros(2, 3, dtype=torch.int32), x, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"denoised_prev: expected the shape \(2, 3\), got \(3, 2\)"):
        ops.multistep_step(x, x, torch.zeros(3, 2, device=DEVICE), 0.5, 1.0, 0.5)
    with pytest.raises(ValueError, match=r"c: expected one value or one per sample \(shape \[2\]\), got shape \(2, 2\)"):
        ops.multistep_step(x, x, x, torch.ones(2, 2, device=DEVICE), 1.0, 0.5)
    with pytest.raises(TypeError, match="t: expected a real number or a tensor, got str"):
        ops.multistep_step(x, x, x, 0.5, "1.0", 0.5)
    with pytest.raises(ValueError, match="precond: expected one of 'edm', 'vp', 've', 'iddpm', got 'vpsde'"):
        ops.skip_mix(x, x, 1.0, precond="vpsde")
    with pytest.raises(ValueError, match="sigma_data: expected a finite number > 0"):
        ops.skip_mix(x, x, 1.0, sigma_data=-1.0)
    with pytest.raises(ValueError, match=r"offset: expected an int in \[0, 2\^64\)"):
        ops.churn(x, [1, 2], -1, 1.0)
    with pytest.raises(ValueError, match="seeds: expected 2 seeds"):
        ops.churn(x, [1], 0, 1.0)
    with pytest.raises(ValueError, match=r"shape: expected an int or a sequence of non-negative ints \(batch, ...\), got \(1, -2\)"):
        ops.randn([1], (1, -2))


def test_empty_batch_elements(backend):
    """Tensors with zero elements per sample pass through every op without launching a kernel."""
    x = torch.zeros(2, 0, device=DEVICES[backend])
    assert ops.euler_step(x, x, 1.0, 0.5, backend=backend).shape == (2, 0)
    assert ops.multistep_step(x, x, x, 0.5, 1.0, 0.5, backend=backend).shape == (2, 0)
    assert ops.combine(x, (x, x), [0.5] * 6, seeds=[1, 2], offset=0, backend=backend).shape == (2, 0)
    assert ops.churn(x, [1, 2], 0, 1.0, backend=backend).shape == (2, 0)
    assert ops.randn([1, 2], (2, 0), device=DEVICES[backend], backend=backend).shape == (2, 0)


@pytest.mark.parametrize("shape", [(3, 5, 67, 131), (4, 16, 64, 128)])  # odd per-sample sizes, and a multiple of 4
# with more than the C++ kernels' 2 x 16384 groups of four, so churn too is split across the 2 threads
@pytest.mark.parametrize("dtype", STATE_DTYPES)
def test_cpu_threads_split_work_without_changing_bits(shape, dtype):
    """Tensors large enough to be split across 2 threads give the 1-thread result bit for bit, and the reference's
    within tolerance."""
    x = make(shape, dtype, 50, device="cpu")
    d1, d2 = make(shape, dtype, 51, device="cpu"), make(shape, dtype, 52, device="cpu")
    seeds = torch.arange(shape[0])
    t_hat, t_next = torch.linspace(2.0, 3.0, shape[0]), torch.tensor(1.0)

    def run():
        return [ops.churn(x, seeds, SAMPLER_OFFSET, t_hat, backend="cpu"),
                ops.euler_step(x, d1, t_hat, t_next, backend="cpu"),
                ops.heun_step(x, d1, d2, t_hat, t_next, backend="cpu"),
                ops.multistep_step(x, d1, d2, t_next, t_hat, t_next, backend="cpu"),
                ops.skip_mix(x, d1, t_hat, precond="edm", backend="cpu")]

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(2)
        two = run()
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert_equal(b, a, name="2 threads vs 1")
    want = ops.churn(x, seeds, SAMPLER_OFFSET, t_hat, backend="reference")
    assert_close(two[0], want, dtype=dtype, rtol=max(tolerance(dtype)[0], 1e-6), atol=1e-5, name="churn")
    assert_close(two[2], ops.heun_step(x, d1, d2, t_hat, t_next, backend="reference"), dtype=dtype, name="heun_step")


def out_cases(device):
    """(op name, call(out=...) on (3, 5, 8) inputs, the out dtype) for every op that takes out=."""
    x = make((3, 5, 8), torch.float32, 60, device=device)
    d1, d2 = make((3, 5, 8), torch.bfloat16, 61, device=device), make((3, 5, 8), torch.bfloat16, 62, device=device)
    t_hat, t_next = torch.tensor([2.0, 3.0, 4.0], device=device), torch.tensor(1.0, device=device)
    seeds = torch.tensor([1, 2, 3], device=device)
    return x, [
        ("churn", lambda out, be, src=x: ops.churn(src, seeds, SAMPLER_OFFSET, t_hat, out=out, backend=be), torch.float32),
        ("euler_step", lambda out, be, src=x: ops.euler_step(src, d1, t_hat, t_next, out=out, backend=be), torch.float32),
        ("heun_step", lambda out, be, src=x: ops.heun_step(src, d1, d2, t_hat, t_next, out=out, backend=be), torch.float32),
        ("multistep_step", lambda out, be, src=x: ops.multistep_step(src, d1, d2, t_next, t_hat, t_next, out=out,
                                                                     backend=be), torch.float32),
        ("skip_mix", lambda out, be, src=x: ops.skip_mix(src, d1, t_hat, precond="edm", out=out, backend=be), torch.float32),
        ("combine", lambda out, be, src=x: ops.combine(src, (d1, None, d2), [0.9, 0.2, 0.0, -0.3, 0.0, 0.4], seeds=seeds,
                                                       offset=SAMPLER_OFFSET, out=out, backend=be), torch.float32),
    ]


@pytest.mark.parametrize("backend_name", ["triton", "cpu", "reference"])
def test_out_writes_the_functional_result(backend_name):
    """out= returns `out` holding the functional result bit for bit, also when out is the input itself (in place)."""
    x, cases = out_cases(DEVICES.get(backend_name, "cpu"))
    for name, call, dtype in cases:
        want = call(None, backend_name)
        out = torch.full_like(x, float("nan"), dtype=dtype)
        assert call(out, backend_name) is out
        assert_equal(out, want, name=f"{name} out=")
        inplace = x.clone()
        call(inplace, backend_name, inplace)
        assert_equal(inplace, want, name=f"{name} in place")


@pytest.mark.parametrize("shape", [(2, 3, 128, 130), (3, 7, 11)])  # whole Philox blocks per sample (> 2 x 16384
# groups of four, so 2 threads split it), and not
@pytest.mark.parametrize("dtype", STATE_DTYPES)
def test_cpu_churn_in_place_equals_out_of_place(shape, dtype):
    """The C++ churn written over x (the loop's reuse_buffers path, which has its own loop body: csrc/cpu/kernels.cpp
    noise_groups_body) gives the out-of-place result bit for bit, on 2 threads and on 1."""
    x = make(shape, dtype, 80, device="cpu")
    seeds, noise_std = torch.arange(shape[0]), torch.linspace(0.5, 2.0, shape[0])
    before = torch.get_num_threads()
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            want = ops.churn(x, seeds, SAMPLER_OFFSET, noise_std, backend="cpu")
            inplace = x.clone()
            assert ops.churn(inplace, seeds, SAMPLER_OFFSET, noise_std, out=inplace, backend="cpu") is inplace
            assert_equal(inplace, want, name=f"churn in place, {threads} thread(s)")
    finally:
        torch.set_num_threads(before)


def test_bad_out_names_the_argument():
    """A wrong-shape, wrong-dtype, strided or partly overlapping out= is refused with what was expected."""
    buf = torch.arange(1.0, 12.0).reshape(1, 11)
    with pytest.raises(ValueError, match="out: overlaps the input x_hat other than element for element"):
        ops.euler_step(buf[:, :-1], torch.zeros(1, 10), 2.0, 1.0, out=buf[:, 1:], backend="cpu")
    with pytest.raises(RuntimeError, match="refer to a single memory location"):  # the binding checks too
        torch.ops.fastdiff.euler_step_out(buf[:, :-1], torch.zeros(1, 10), torch.tensor(2.0), torch.tensor(1.0),
                                          buf[:, 1:])
    for overlapping in ("x", "denoised", "denoised_prev"):  # out over any input, shifted by one element
        args = {"x": torch.zeros(1, 10), "denoised": torch.zeros(1, 10), "denoised_prev": torch.zeros(1, 10)}
        args[overlapping] = buf[:, :-1]
        with pytest.raises(ValueError, match=f"out: overlaps the input {overlapping} other than element for element"):
            ops.multistep_step(*args.values(), 0.5, 2.0, 1.0, out=buf[:, 1:], backend="cpu")
        with pytest.raises(RuntimeError, match="refer to a single memory location"):
            torch.ops.fastdiff.multistep_step_out(*args.values(), torch.tensor(0.5), torch.tensor(2.0),
                                                  torch.tensor(1.0), buf[:, 1:])
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"out: expected a contiguous torch.float32 tensor of shape \(2, 3\)"):
        ops.euler_step(x, x, 1.0, 0.5, out=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="got a torch.float16 tensor"):
        ops.euler_step(x, x, 1.0, 0.5, out=torch.zeros(2, 3, dtype=torch.float16))
    with pytest.raises(ValueError, match="got a non-contiguous torch.float32 tensor"):
        ops.churn(x, [1, 2], 0, 1.0, out=torch.zeros(3, 2).t())
    with pytest.raises(TypeError, match="out: expected a tensor"):
        ops.heun_step(x, x, x, 1.0, 0.5, out=[0.0])


@pytest.mark.parametrize("name", ["churn_out", "euler_step_out", "heun_step_out", "multistep_step_out", "combine_out",
                                  "skip_mix_out"])
@pytest.mark.parametrize("backend_name", ["triton", "cpu"])
def test_opcheck_out_ops(name, backend_name, opaque_triton_ops):
    """The mutating out= ops pass opcheck (schema with Tensor(a!) out, fake, AOT dispatch)."""
    cases = op_cases(backend_name)
    op, args = cases[name.removesuffix("_out")]
    out_dtype = torch.float32
    shape = args[0].shape
    out = torch.empty(shape, dtype=out_dtype, device=args[0].device)
    result = torch.library.opcheck(getattr(ops.dispatch._impl(backend_name), name), (*args, out))
    assert set(result.values()) == {"SUCCESS"}, result


def test_cpu_half_conversions_are_exact():
    """The C++ kernels read every fp16 and bf16 bit pattern exactly and round results to nearest even as torch does:
    an Euler step with denoised = x_hat returns x_hat itself (NaN where x_hat is inf or NaN), and on random
    inputs the fp16/bf16 results equal the reference's float32 result rounded by torch, bit for bit."""
    for dtype in (torch.float16, torch.bfloat16):
        every = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(dtype).reshape(1, -1)
        same = ops.euler_step(every, every, 2.0, 1.0, backend="cpu")
        assert_equal(same, ops.euler_step(every, every, 2.0, 1.0, backend="reference"), name=f"{dtype} read back")
        x_hat = make((4, 999), dtype, 70, device="cpu") * 300
        denoised = make((4, 999), torch.float32, 71, device="cpu") * 1e-3
        for t_next in (1.0, 1e-6):  # ordinary values, and results in the 16-bit subnormal range
            got = ops.euler_step(x_hat, denoised, 2.0, t_next, backend="cpu")
            assert_equal(got, ops.euler_step(x_hat, denoised, 2.0, t_next, backend="reference"), name=f"{dtype} rounding")


def test_cpu_refuses_a_precond_code_it_does_not_know():
    """The C++ op checks `kind` against the codes of fastdiff/_codes.py (the ones it was compiled with)."""
    x, sigma = torch.ones(2, 3), torch.ones(2)
    unknown = max(PRECOND_CODES.values()) + 1
    with pytest.raises(RuntimeError, match=rf"kind: expected {PRECOND_CODES['edm']} \(EDM\), {PRECOND_CODES['vp']} "
                                           rf"\(VP/iDDPM\) or {PRECOND_CODES['ve']} \(VE\), got {unknown}"):
        ops.dispatch._impl("cpu").skip_mix(x, x, sigma, unknown, 0.5)
