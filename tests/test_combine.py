"""Op `combine`, a solver's update a x + w0 h0 + w1 h1 + w2 h2 + w3 h3 + n z, on every backend against its reference
(fastdiff/ops/reference/combine.py; docs/formulas.md#combine).

Backends: the `backend` fixture of tests/conftest.py ("triton", interpreted on CPU tensors without a GPU; the C++ CPU
kernels on 1 thread; C++ CUDA where built), and the reference path through fastdiff.ops.combine for out=. Odd shapes,
batch 1, an empty sample, strided inputs, every state dtype and mixed history dtypes, every subset of present history
tensors, and every kind of noise: none, drawn from the seeds' streams, or a given tensor.
"""
import itertools

import pytest
import torch
import triton  # noqa: F401  (the Triton backend is under test: a missing triton is a failure, not a skip)

from fastdiff import ops
from fastdiff.ops import _cpu  # noqa: F401  (the C++ backend is under test: a failed build is a failure, not a skip)
from fastdiff.ops import _triton  # noqa: F401  (imported now, under conftest's TRITON_INTERPRET)
from fastdiff.ops import backends, reference
from fastdiff.ops.bound import bound
from fastdiff.rng import SAMPLER_OFFSET
from fastdiff.testing import BACKEND_DEVICES, assert_close, assert_equal, tolerance, torch_threads

SHAPES = [(3, 5, 7), (1, 1), (2, 0, 3), (4, 8), (2, 3, 5, 6)]  # odd, batch 1, empty samples, sizes % 4 == 0 and not
STATE_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SUBSETS = list(itertools.product((False, True), repeat=4))  # which of h0..h3 are present
NOISE_KINDS = ["none", "seeds", "tensor"]
COEFFS = [0.93, 0.41, -0.27, 0.18, -0.05, 0.62]  # a, w0, w1, w2, w3, n: no weight is 0 or 1, so every term counts
SEEDS = [0, 2**63 - 1, 12345, 7, 99]


def make(shape, dtype, seed, noncontiguous=False, device="cpu"):
    """A random tensor; a non-contiguous one is every other element of a buffer twice as long in the last dimension."""
    generator = torch.Generator().manual_seed(seed)
    if noncontiguous:
        t = torch.randn(*shape[:-1], 2 * shape[-1], generator=generator)[..., ::2]
    else:
        t = torch.randn(*shape, generator=generator)
    return t.to(device=device, dtype=dtype)


def inputs(shape, x_dtype, h_dtypes, present, noise_kind, *, noncontiguous=False, device="cpu", offset=SAMPLER_OFFSET + 3):
    """(x, history (4 entries, None where absent), coeffs, keyword arguments of the noise) of the public op."""
    x = make(shape, x_dtype, 1, noncontiguous, device) * 2.0
    history = tuple(make(shape, h_dtypes[k], 10 + k, noncontiguous, device) if present[k] else None for k in range(4))
    coeffs = torch.tensor(COEFFS, device=device)
    noise = {"none": {}, "seeds": dict(seeds=torch.tensor(SEEDS[: shape[0]], device=device), offset=offset),
             "tensor": dict(noise=make(shape, x_dtype, 20, noncontiguous, device))}[noise_kind]
    return x, history, coeffs, noise


def cpu_twin(x, history, coeffs, noise):
    """The same inputs on the CPU, for the reference."""
    move = lambda t: t.cpu() if isinstance(t, torch.Tensor) else t  # noqa: E731
    return move(x), tuple(map(move, history)), move(coeffs), {k: move(v) for k, v in noise.items()}


def close(got, want, dtype, noise_kind, name):
    """Within the dtype's tolerance of the reference; drawn noise also differs by the last ulps of log/sin/cos."""
    if noise_kind == "seeds":
        assert_close(got, want, dtype=dtype, rtol=max(tolerance(dtype)[0], 1e-6), atol=1e-5, name=name)
    else:
        assert_close(got, want, dtype=dtype, name=name)


# ---------------------------------------------------------------------------------------------------------
# Every backend against the reference
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("present", SUBSETS, ids=lambda p: "h" + "".join(str(k) for k in range(4) if p[k]) if any(p) else "no_h")
@pytest.mark.parametrize("noise_kind", NOISE_KINDS)
def test_every_subset_of_history_and_noise_kind(present, noise_kind, backend):
    """Each of the 16 subsets of present h's with each noise kind equals the reference (float32, one odd shape)."""
    args = inputs((3, 5, 7), torch.float32, [torch.float32] * 4, present, noise_kind, device=BACKEND_DEVICES[backend])
    x, history, coeffs, noise = args
    got = ops.combine(x, history, coeffs, **noise, backend=backend)
    x_ref, history_ref, coeffs_ref, noise_ref = cpu_twin(*args)
    want = ops.combine(x_ref, history_ref, coeffs_ref, **noise_ref, backend="reference")
    assert got.dtype == torch.float32 and got.shape == x.shape and got.is_contiguous()
    close(got, want, torch.float32, noise_kind, f"combine {present} {noise_kind}")


H_DTYPES = {"same": None, "float32": [torch.float32] * 4, "bfloat16": [torch.bfloat16] * 4,
            "mixed": [torch.float16, torch.float32, torch.bfloat16, torch.float32]}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("x_dtype", STATE_DTYPES)
@pytest.mark.parametrize("h_dtypes", list(H_DTYPES))
@pytest.mark.parametrize("noise_kind", NOISE_KINDS)
@pytest.mark.parametrize("noncontiguous", [False, True])
def test_matches_reference(shape, x_dtype, h_dtypes, noise_kind, noncontiguous, backend):
    """All four h's, on odd shapes, batch 1, empty samples, strided inputs, every state dtype and history dtypes
    that are the state's, float32, bfloat16 or a mix of the three."""
    dtypes = H_DTYPES[h_dtypes] or [x_dtype] * 4
    args = inputs(shape, x_dtype, dtypes, (True,) * 4, noise_kind, noncontiguous=noncontiguous,
                  device=BACKEND_DEVICES[backend])
    x, history, coeffs, noise = args
    got = ops.combine(x, history, coeffs, **noise, backend=backend)
    x_ref, history_ref, coeffs_ref, noise_ref = cpu_twin(*args)
    want = ops.combine(x_ref, history_ref, coeffs_ref, **noise_ref, backend="reference")
    assert got.dtype == x_dtype and got.shape == shape and got.is_contiguous()
    close(got, want, x_dtype, noise_kind, f"combine {shape} {x_dtype} h {h_dtypes} {noise_kind}")


@pytest.mark.parametrize("x_dtype", STATE_DTYPES)
@pytest.mark.parametrize("h_dtypes", list(H_DTYPES) + ["float64"])
@pytest.mark.parametrize("noise_kind", ["none", "tensor"])
def test_cpu_is_the_reference_bit_for_bit(x_dtype, h_dtypes, noise_kind):
    """Without drawn noise the C++ CPU kernel (no fused multiply-adds) computes the reference's float32 operations in
    its order, so it equals the reference bit for bit, rounded to fp16/bf16 as torch rounds: every subset of h's,
    strided inputs, history in other dtypes than the state (float64 ones read as float32, as the reference does),
    noise in another dtype too, and sizes long enough for the vectorized loops and their remainders."""
    dtypes = [torch.float64] * 4 if h_dtypes == "float64" else (H_DTYPES[h_dtypes] or [x_dtype] * 4)
    for shape, noncontiguous in (((3, 5, 37, 41), False), ((4, 8), True), ((5, 1, 3), False), ((2, 2100), True)):
        for present in SUBSETS:
            x, history, coeffs, noise = inputs(shape, x_dtype, dtypes, present, noise_kind, noncontiguous=noncontiguous)
            if noise_kind == "tensor":
                noise = dict(noise=noise["noise"].to(torch.bfloat16 if x_dtype == torch.float32 else torch.float32))
            got = ops.combine(x, history, coeffs, **noise, backend="cpu")
            want = reference.combine(x, *history, coeffs, None, None, noise.get("noise"))
            assert_equal(got, want, name=f"combine {shape} {present}")


def test_cpu_bit_for_bit_with_special_values():
    """inf, NaN, signed zeros and values near the fp16/bf16 limits go through the same float32 operations: an absent
    term is skipped, not added as 0 (which would turn -0 into +0, and 0 * inf into NaN)."""
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), 65504.0, 1e-8, -3e38, 3e38, 1.0])
    for x_dtype in STATE_DTYPES:
        x = special.to(x_dtype).reshape(2, 5)
        h = special.flip(0).reshape(2, 5)
        for coeffs in ([1.0, 0.0, 0.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 0.0, 2.0, 0.0, 0.0], [0.0] * 6, [1e30, 1e10] + [1.0] * 4):
            c = torch.tensor(coeffs)
            for history in ((), (h,), (None, h, h), (h, h, h, h)):
                got = ops.combine(x, history, c, backend="cpu")
                want = reference.combine(x, *(tuple(history) + (None,) * (4 - len(history))), c, None, None, None)
                assert_equal(got, want, name=f"{x_dtype} {coeffs} {len(history)} h")
                bits = torch.int32 if x_dtype == torch.float32 else torch.int16  # == does not see the sign of zero
                assert_equal(got.view(bits)[got == 0], want.view(bits)[want == 0], name="signed zeros")


def test_float64_state_runs_the_reference_in_float64():
    """A float64 state runs on the reference path in float64 (coefficients given as numbers are kept in float64);
    a fused backend asked for by name refuses it with its reason."""
    x, history, _, noise = inputs((3, 4, 5), torch.float64, [torch.float64] * 4, (True, False, True, True), "seeds")
    coeffs = [1 / 3, 2 / 7, 0.0, -1 / 9, 5 / 11, 1 / 13]
    got = ops.combine(x, history, coeffs, **noise)
    assert got.dtype == torch.float64
    z = ops.randn(noise["seeds"], x.shape, offset=noise["offset"], dtype=torch.float64, backend="reference")
    want = coeffs[0] * x + coeffs[1] * history[0] + coeffs[3] * history[2] + coeffs[4] * history[3] + coeffs[5] * z
    assert_equal(got, want, name="float64 combine")
    with pytest.raises(backends.BackendUnavailableError, match="take float32/float16/bfloat16 state, got torch.float64"):
        ops.combine(x, history, coeffs, **noise, backend="cpu")


# ---------------------------------------------------------------------------------------------------------
# The drawn noise is fastdiff's noise
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 8), (1, 1), (2, 3, 64, 65), (3, 4, 32, 32)])
@pytest.mark.parametrize("offset", [0, SAMPLER_OFFSET + 17, 2**64 - 1])
def test_drawn_noise_is_randn_exactly(shape, offset, backend):
    """With coeffs (0, 0, 0, 0, 0, 1) the op returns its z: fastdiff.randn(seeds, x.shape, offset=offset) of the same
    backend, bit for bit (the same stream, element for element, for sample sizes % 4 == 0 and not)."""
    device = BACKEND_DEVICES[backend]
    x = make(shape, torch.float32, 3, device=device).abs()  # 0 * x is +0: +0 + z is z for every z
    seeds = torch.tensor(SEEDS[: shape[0]], device=device)
    coeffs = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 1.0], device=device)
    got = ops.combine(x, (), coeffs, seeds=seeds, offset=offset, backend=backend)
    assert_equal(got, ops.randn(seeds, shape, offset=offset, device=device, backend=backend), name="z")
    want = ops.combine(x.cpu(), (), coeffs.cpu(), seeds=seeds.cpu(), offset=offset, backend="reference")
    assert_equal(want, ops.randn(seeds.cpu(), shape, offset=offset, backend="reference"), name="reference z")
    assert_close(got, want, rtol=1e-6, atol=2e-6, name="z against the reference")


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 3, 64, 64)])
@pytest.mark.parametrize("x_dtype", STATE_DTYPES)
def test_drawn_noise_equals_the_same_noise_given(shape, x_dtype, backend):
    """combine(seeds=, offset=) equals combine(noise=randn(seeds, ...)) with the backend's own float32 normals, bit for
    bit: drawing in the kernel changes where z comes from, not the arithmetic."""
    device = BACKEND_DEVICES[backend]
    x, history, coeffs, noise = inputs(shape, x_dtype, [x_dtype] * 4, (True, True, False, True), "seeds", device=device)
    z = ops.randn(noise["seeds"], shape, offset=noise["offset"], device=device, backend=backend)
    drawn = ops.combine(x, history, coeffs, **noise, backend=backend)
    assert_equal(drawn, ops.combine(x, history, coeffs, noise=z, backend=backend), name="drawn vs given")
    z_ref = ops.randn(noise["seeds"].cpu(), shape, offset=noise["offset"], backend="reference")
    x_ref, history_ref, coeffs_ref, noise_ref = cpu_twin(x, history, coeffs, noise)
    assert_equal(ops.combine(x_ref, history_ref, coeffs_ref, **noise_ref, backend="reference"),
                 ops.combine(x_ref, history_ref, coeffs_ref, noise=z_ref, backend="reference"), name="reference")


def test_drawn_noise_is_churns_noise():
    """combine(x, (), (1, 0, 0, 0, 0, s), seeds, offset) is churn(x, seeds, offset, s): the same eps for the same
    seeds and offset (the loop's churn and a solver's noise term share the stream layout)."""
    x = make((3, 4, 6), torch.float32, 5)
    seeds = torch.tensor([4, 5, 6])
    for name in ("cpu", "reference"):
        got = ops.combine(x, [], [1.0, 0.0, 0.0, 0.0, 0.0, 0.35], seeds=seeds, offset=SAMPLER_OFFSET, backend=name)
        assert_equal(got, ops.churn(x, seeds, SAMPLER_OFFSET, 0.35, backend=name), name=f"{name} churn")


# ---------------------------------------------------------------------------------------------------------
# out=, in place, threads, the bound ops
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend_name", ["reference", "cpu", "triton"])
@pytest.mark.parametrize("noise_kind", NOISE_KINDS)
def test_out_writes_the_functional_result_also_in_place(backend_name, noise_kind):
    """out= returns `out` holding the functional result bit for bit: a fresh tensor, x itself, one of the h's, or
    the noise tensor (every output element depends only on the inputs at its index)."""
    device = BACKEND_DEVICES.get(backend_name, "cpu")
    x, history, coeffs, noise = inputs((3, 5, 8), torch.float32, [torch.float32, torch.bfloat16, torch.float32,
                                                                   torch.float32], (True, True, False, True),
                                       noise_kind, device=device)
    want = ops.combine(x, history, coeffs, **noise, backend=backend_name)
    out = torch.full_like(x, float("nan"))
    assert ops.combine(x, history, coeffs, **noise, out=out, backend=backend_name) is out
    assert_equal(out, want, name="out=")
    targets = {"x": 0, "h0": 1, "h3": 4} | ({"noise": 5} if noise_kind == "tensor" else {})
    for target, position in targets.items():
        tensors = [x.clone(), *(h.clone() if h is not None else None for h in history)]
        given = dict(noise, noise=noise["noise"].clone()) if noise_kind == "tensor" else dict(noise)
        buffer = given["noise"] if target == "noise" else tensors[position]
        result = ops.combine(tensors[0], tensors[1:], coeffs, **given, out=buffer, backend=backend_name)
        assert result is buffer
        assert_equal(buffer, want, name=f"in place over {target}")


@pytest.mark.parametrize("backend_name", ["reference", "cpu", "triton"])
def test_bound_ops_take_the_positional_form(backend_name):
    """bound(backend).combine(x, h0, h1, h2, h3, coeffs, seeds, offset, noise) and .combine_out(..., out), with None for
    the absent tensors, are the public op's computation (the form the sampling loop calls)."""
    device = BACKEND_DEVICES.get(backend_name, "cpu")
    table = bound(backend_name)
    for present, noise_kind in ((SUBSETS[0], "none"), ((True, False, True, False), "seeds"),
                                ((True, True, True, True), "tensor")):
        x, history, coeffs, noise = inputs((2, 3, 9), torch.float32, [torch.float32] * 4, present, noise_kind,
                                           device=device)
        seeds, offset = noise.get("seeds"), noise.get("offset")
        offset = ops.dispatch._offset_tensor(offset, device) if offset is not None else None
        args = (x, *history, coeffs, seeds, offset, noise.get("noise"))
        want = ops.combine(x, history, coeffs, **noise, backend=backend_name)
        assert_equal(table.combine(*args), want, name=f"bound {present} {noise_kind}")
        out = torch.empty_like(x)
        assert table.combine_out(*args, out) is None
        assert_equal(out, want, name=f"bound out= {present} {noise_kind}")


@pytest.mark.parametrize("shape", [(2, 3, 130, 128), (3, 5, 67, 131)])  # whole Philox blocks per sample and not, each
# more than 2 x 16384 elements so that 2 threads split it, and more than one 1024-element chunk per sample
@pytest.mark.parametrize("x_dtype", STATE_DTYPES)
@pytest.mark.parametrize("noise_kind", NOISE_KINDS)
def test_cpu_threads_split_work_without_changing_bits(shape, x_dtype, noise_kind):
    """Large tensors split across 2 threads give the 1-thread result bit for bit, in place too; drawn noise stays
    within the reference's tolerance, the rest equal to it."""
    x, history, coeffs, noise = inputs(shape, x_dtype, [x_dtype, torch.float32, x_dtype, x_dtype], (True,) * 4,
                                       noise_kind)
    results = {}
    for threads in (1, 2):
        with torch_threads(threads):
            results[threads] = ops.combine(x, history, coeffs, **noise, backend="cpu")
            inplace = x.clone()
            ops.combine(inplace, history, coeffs, **noise, out=inplace, backend="cpu")
            assert_equal(inplace, results[threads], name=f"in place, {threads} thread(s)")
    assert_equal(results[2], results[1], name="2 threads vs 1")
    close(results[2], ops.combine(x, history, coeffs, **noise, backend="reference"), x_dtype, noise_kind, "combine")


# ---------------------------------------------------------------------------------------------------------
# Registration and errors
# ---------------------------------------------------------------------------------------------------------

def op_args(device, noise_kind):
    x, history, coeffs, noise = inputs((3, 5, 8), torch.float32, [torch.bfloat16, torch.bfloat16, torch.float32,
                                                                   torch.float32], (True, False, True, False),
                                       noise_kind, device=device)
    offset = ops.dispatch._offset_tensor(noise["offset"], device) if "offset" in noise else None
    return (x, *history, coeffs, noise.get("seeds"), offset, noise.get("noise"))


@pytest.mark.parametrize("name", ["combine", "combine_out"])
@pytest.mark.parametrize("backend_name", ["triton", "cpu"])
@pytest.mark.parametrize("noise_kind", NOISE_KINDS)
def test_opcheck(name, backend_name, noise_kind, opaque_triton_ops):
    """torch.library.opcheck of the registered op and its out= form: schema (Tensor? arguments, Tensor(a!) out),
    fake implementation and AOT dispatch agree."""
    args = op_args(BACKEND_DEVICES[backend_name], noise_kind)
    if name == "combine_out":
        args = (*args, torch.empty_like(args[0]))
    result = torch.library.opcheck(getattr(ops.dispatch._impl(backend_name), name), args)
    assert set(result.values()) == {"SUCCESS"}, result


def test_schemas_are_the_same_on_both_libraries():
    """The C++ library and the Triton one declare combine with the same arguments, so the loop's positional call
    means the same on every backend."""
    for name in ("combine", "combine_out"):
        cpp = torch.ops.fastdiff.__getattr__(name).default._schema
        tri = torch.ops.fastdiff_triton.__getattr__(name).default._schema
        assert [(a.name, str(a.type)) for a in cpp.arguments] == [(a.name, str(a.type)) for a in tri.arguments], name
    names = [a.name for a in torch.ops.fastdiff.combine.default._schema.arguments]
    assert names == ["x", "h0", "h1", "h2", "h3", "coeffs", "seeds", "offset", "noise"]


def test_empty_batch_elements(backend):
    """Zero elements per sample pass through without a launch, whatever the noise."""
    x = torch.zeros(2, 0, device=BACKEND_DEVICES[backend])
    for noise in ({}, dict(seeds=[1, 2], offset=0), dict(noise=x)):
        assert ops.combine(x, (x, x), [1.0] * 6, **noise, backend=backend).shape == (2, 0)


def test_argument_errors_name_the_argument():
    """The public op refuses bad arguments with the argument's name, the value and what it accepts."""
    x = torch.zeros(2, 3)
    c = [1.0, 0.5, 0.25, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=r"history\[1\]: expected the shape \(2, 3\), got \(2, 4\)"):
        ops.combine(x, (x, torch.zeros(2, 4)), c)
    with pytest.raises(TypeError, match=r"history\[0\]: expected a floating-point tensor"):
        ops.combine(x, (torch.zeros(2, 3, dtype=torch.int64),), c)
    with pytest.raises(ValueError, match=r"history: expected up to 4 tensors \(h0..h3\), got 5"):
        ops.combine(x, (x,) * 5, c)
    with pytest.raises(TypeError, match="history: expected a list or tuple of up to 4 tensors"):
        ops.combine(x, x, c)
    with pytest.raises(ValueError, match=r"coeffs: expected 6 values \(a, w0, w1, w2, w3, n\), got 5"):
        ops.combine(x, (), c[:5])
    with pytest.raises(ValueError, match=r"coeffs: expected 6 values .*, got a tensor of shape \(2, 3\)"):
        ops.combine(x, (), torch.ones(2, 3))
    with pytest.raises(TypeError, match="coeffs: expected a floating-point tensor, got a tensor of dtype torch.int64"):
        ops.combine(x, (), torch.ones(6, dtype=torch.int64))
    with pytest.raises(TypeError, match="coeffs: expected real numbers, got '1' of type str"):
        ops.combine(x, (), ["1"] + c[1:])
    with pytest.raises(TypeError, match="coeffs: expected a tensor or a sequence of 6 numbers, got float"):
        ops.combine(x, (), 1.0)
    with pytest.raises(ValueError, match="seeds, noise: expected one source of noise, .* got both"):
        ops.combine(x, (), c, seeds=[1, 2], offset=0, noise=x)
    with pytest.raises(ValueError, match="offset: expected the stream offset of the noise drawn from seeds .* got None"):
        ops.combine(x, (), c, seeds=[1, 2])
    with pytest.raises(ValueError, match="offset: only read with seeds"):
        ops.combine(x, (), c, offset=3, noise=x)
    with pytest.raises(ValueError, match="seeds: expected 2 seeds"):
        ops.combine(x, (), c, seeds=[1], offset=0)
    with pytest.raises(ValueError, match=r"offset: expected an int in \[0, 2\^64\)"):
        ops.combine(x, (), c, seeds=[1, 2], offset=-1)
    with pytest.raises(ValueError, match=r"noise: expected the shape \(2, 3\), got \(3, 2\)"):
        ops.combine(x, (), c, noise=torch.zeros(3, 2))
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        ops.combine(torch.zeros(2, 3, dtype=torch.int32), (), c)
    buf = torch.arange(1.0, 12.0).reshape(1, 11)
    for k in range(4):  # out over any h, shifted by one element
        history = [torch.zeros(1, 10)] * 4
        history[k] = buf[:, :-1]
        with pytest.raises(ValueError, match=f"out: overlaps the input h{k} other than element for element"):
            ops.combine(torch.zeros(1, 10), history, c, out=buf[:, 1:], backend="cpu")
    with pytest.raises(ValueError, match=r"out: expected a contiguous torch.float32 tensor of shape \(2, 3\)"):
        ops.combine(x, (), c, out=torch.zeros(2, 3, dtype=torch.float16))


def test_the_registered_op_checks_its_arguments():
    """The C++ op (which the sampling loop calls unchecked through fastdiff.ops.bound) checks what it reads."""
    x, c = torch.zeros(2, 3), torch.ones(6)
    seeds, offset = torch.tensor([1, 2]), torch.tensor(0)
    op = torch.ops.fastdiff.combine
    with pytest.raises(RuntimeError, match=r"coeffs: expected 6 values \(a, w0, w1, w2, w3, n\), got 5"):
        op(x, None, None, None, None, torch.ones(5), None, None, None)
    with pytest.raises(RuntimeError, match="seeds, noise: expected one source of noise"):
        op(x, None, None, None, None, c, seeds, offset, x)
    with pytest.raises(RuntimeError, match="offset: expected an int64 tensor of one value with seeds, got None"):
        op(x, None, None, None, None, c, seeds, None, None)
    with pytest.raises(RuntimeError, match=r"h2: expected the shape \[2, 3\], got \[3, 2\]"):
        op(x, x, None, torch.zeros(3, 2), None, c, None, None, None)
    with pytest.raises(RuntimeError, match=r"seeds: expected an int64 tensor of one seed per sample \(2\)"):
        op(x, None, None, None, None, c, torch.tensor([1]), offset, None)
    with pytest.raises(RuntimeError, match="x: expected a float32, float16 or bfloat16 tensor"):
        op(x.double(), None, None, None, None, c, None, None, None)
    buf = torch.arange(1.0, 12.0).reshape(1, 11)
    with pytest.raises(RuntimeError, match="refer to a single memory location"):
        torch.ops.fastdiff.combine_out(torch.zeros(1, 10), None, buf[:, :-1], None, None, c, None, None, None, buf[:, 1:])
