"""Tests of the EDM/VP/VE/iDDPM preconditioners against plain float64 formulas (docs/formulas.md#preconditioning)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastdiff
from fastdiff.testing import assert_close, tolerance

# ---------------------------------------------------------------------------------------------------------
# Independent plain reference (Python math / numpy, float64), written from docs/formulas.md#preconditioning.
# ---------------------------------------------------------------------------------------------------------


def ref_vp_sigma(t: float, beta_d: float, beta_min: float) -> float:
    """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), evaluated without cancellation."""
    return math.sqrt(math.expm1(0.5 * beta_d * t * t + beta_min * t))


def ref_vp_sigma_inv(s: float, beta_d: float, beta_min: float) -> float:
    """sigma_inv(s) = (sqrt(beta_min^2 + 2 beta_d ln(1 + s^2)) - beta_min) / beta_d."""
    return (math.sqrt(beta_min * beta_min + 2.0 * beta_d * math.log1p(s * s)) - beta_min) / beta_d


def ref_iddpm_u(M: int, C_1: float, C_2: float) -> list[float]:
    """The M+1 iDDPM levels: u_M = 0, u_{j-1} = sqrt((u_j^2 + 1) / max(abar(j-1)/abar(j), C_1) - 1)."""

    def abar(j):
        return math.sin(math.pi / 2.0 * j / (M * (C_2 + 1.0))) ** 2

    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1.0) / max(abar(j - 1) / abar(j), C_1) - 1.0)
    return u


def ref_nearest(s: float, u: list[float]) -> int:
    """argmin_j |s - u_j|."""
    return min(range(len(u)), key=lambda j: abs(s - u[j]))


def ref_coefficients(kind: str, kwargs: dict, s: float) -> tuple[float, float, float, float]:
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1 for one float sigma."""
    if kind == "edm":
        sd = kwargs.get("sigma_data", 0.5)
        r = math.sqrt(s * s + sd * sd)
        return sd * sd / (s * s + sd * sd), s * sd / r, 1.0 / r, math.log(s) / 4.0
    if kind == "vp":
        M = kwargs.get("M", 1000)
        t = ref_vp_sigma_inv(s, kwargs.get("beta_d", 19.9), kwargs.get("beta_min", 0.1))
        return 1.0, -s, 1.0 / math.sqrt(s * s + 1.0), (M - 1) * t
    if kind == "ve":
        return 1.0, s, 1.0, math.log(s / 2.0)
    if kind == "iddpm":
        M = kwargs.get("M", 1000)
        u = ref_iddpm_u(M, kwargs.get("C_1", 0.001), kwargs.get("C_2", 0.008))
        return 1.0, -s, 1.0 / math.sqrt(s * s + 1.0), float(M - 1 - ref_nearest(s, u))
    raise AssertionError(kind)


def label_weight(labels):
    """A per-sample positive weight 0.1 * sum_k labels[:, k] (k + 1) from class labels [B, L] (numpy or torch)."""
    if isinstance(labels, np.ndarray):
        return 0.1 * (labels * (1.0 + np.arange(labels.shape[1]))).sum(1)
    return 0.1 * (labels * (1.0 + torch.arange(labels.shape[1], dtype=labels.dtype))).sum(1)


def ref_F(inp: np.ndarray, c_noise: np.ndarray, sign: float, labels: np.ndarray | None = None) -> np.ndarray:
    """The fake network's output, in numpy float64 (same function as FakeNet)."""
    shape = (-1,) + (1,) * (inp.ndim - 1)
    F = sign * inp * (0.3 + 0.05 * np.tanh(c_noise.reshape(shape) / 8.0) + 0.1 * np.cos(inp))
    if labels is not None:
        F = F * (1.0 + label_weight(labels)).reshape(shape)
    return F


def ref_denoise(kind, kwargs, x: np.ndarray, sigmas: list[float], sign: float, labels=None):
    """(model input, c_noise, D) by the plain formulas; x float64 numpy [B, ...], one float sigma per sample."""
    coefs = np.array([ref_coefficients(kind, kwargs, s) for s in sigmas])  # [B, 4]
    shape = (-1,) + (1,) * (x.ndim - 1)
    c_skip, c_out, c_in, c_noise = (coefs[:, k] for k in range(4))
    inp = c_in.reshape(shape) * x
    F = ref_F(inp, c_noise, sign, labels)
    return inp, c_noise, c_skip.reshape(shape) * x + c_out.reshape(shape) * F


class FakeNet:
    """Records every call's arguments; returns sign * x * (0.3 + 0.05 tanh(c_noise/8) + 0.1 cos x) [* label factor].

    The factor is positive, so c_out * F has the sign of c_skip * x (sign = sign of c_out): no cancellation in
    the mix, and float32 results can be held to fastdiff.testing's relative tolerance.
    """

    def __init__(self, sign: float = 1.0, out_dtype: torch.dtype | None = None):
        self.sign = sign
        self.out_dtype = out_dtype
        self.calls = []
        self.outputs = []

    def __call__(self, x, c_noise, *rest):
        self.calls.append((x.detach().clone(), c_noise.detach().clone(), rest))
        shape = (-1,) + (1,) * (x.ndim - 1)
        F = self.sign * x * (0.3 + 0.05 * torch.tanh(c_noise.reshape(shape) / 8) + 0.1 * torch.cos(x))
        if rest:
            F = F * (1 + label_weight(rest[0].to(x.dtype))).reshape(shape)
        if self.out_dtype is not None:
            F = F.to(self.out_dtype)
        self.outputs.append(F.detach().clone())
        return F


# (id, class, kind, constructor kwargs, sign of c_out)
CASES = [
    ("edm-default", fastdiff.EDMPrecond, "edm", {}, 1.0),
    ("edm-custom", fastdiff.EDMPrecond, "edm", {"sigma_data": 1.3, "sigma_min": 0.01, "sigma_max": 50.0}, 1.0),
    ("vp-default", fastdiff.VPPrecond, "vp", {}, -1.0),
    ("vp-custom", fastdiff.VPPrecond, "vp", {"beta_d": 12.0, "beta_min": 0.5, "M": 200, "epsilon_t": 1e-3}, -1.0),
    ("ve-default", fastdiff.VEPrecond, "ve", {}, 1.0),
    ("ve-custom", fastdiff.VEPrecond, "ve", {"sigma_min": 0.1, "sigma_max": 50.0}, 1.0),
    ("iddpm-default", fastdiff.iDDPMPrecond, "iddpm", {}, -1.0),
    ("iddpm-custom", fastdiff.iDDPMPrecond, "iddpm", {"C_1": 0.002, "C_2": 0.02, "M": 64}, -1.0),
]
CASE_IDS = [c[0] for c in CASES]

SIGMAS = [0.07, 1.3, 17.0]  # mixed per-sample noise levels for a batch of 3


def make_x(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def as_floats(t: torch.Tensor) -> list[float]:
    """The sigma values the package sees (already rounded to the tensor's dtype), as Python floats."""
    return [float(v) for v in t.reshape(-1).tolist()]


def check_call(net: FakeNet, out: torch.Tensor, kind, kwargs, sign, x: torch.Tensor, sigmas: list[float], dtype,
               labels=None):
    """One model call with (c_in x, c_noise[B]) as in the plain formulas, and out = c_skip x + c_out F."""
    B = x.shape[0]
    assert len(net.calls) == 1
    inp_seen, c_noise_seen, rest = net.calls[0]
    if labels is None:
        assert rest == ()
    else:
        assert len(rest) == 1 and rest[0] is labels
    x_np = x.detach().to(torch.float64).numpy()
    lab_np = None if labels is None else labels.to(torch.float64).numpy()
    inp, c_noise, D = ref_denoise(kind, kwargs, x_np, sigmas, sign, lab_np)
    assert c_noise_seen.shape == (B,)
    assert inp_seen.shape == x.shape
    assert inp_seen.dtype == dtype and c_noise_seen.dtype == dtype and out.dtype == dtype
    assert out.shape == x.shape
    assert_close(c_noise_seen, torch.from_numpy(c_noise), dtype=dtype, name="c_noise")
    assert_close(inp_seen, torch.from_numpy(inp), dtype=dtype, name="model input c_in * x")
    assert_close(out, torch.from_numpy(D), dtype=dtype, name="D(x; sigma)")


# ---------------------------------------------------------------------------------------------------------
# forward(x, sigma) against the plain formulas
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_per_sample_sigma(case, dtype):
    """sigma of shape [B] with mixed values, odd image shape 3x5x7x9."""
    _, cls, kind, kwargs, sign = case
    net = FakeNet(sign)
    p = cls(net, **kwargs)
    x = make_x((3, 5, 7, 9), dtype)
    sigma = torch.tensor(SIGMAS, dtype=dtype)
    out = p(x, sigma)
    check_call(net, out, kind, kwargs, sign, x, as_floats(sigma), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_edm_style_sigma_and_noncontiguous_x(case, dtype):
    """sigma of shape [B, 1, 1, 1] and a non-contiguous (transposed and sliced) x."""
    _, cls, kind, kwargs, sign = case
    net = FakeNet(sign)
    p = cls(net, **kwargs)
    base = make_x((3, 9, 7, 10), dtype, seed=1)
    x = base.transpose(1, 3)[:, ::2]  # shape [3, 5, 7, 9], non-contiguous
    assert not x.is_contiguous() and x.shape == (3, 5, 7, 9)
    sigma = torch.tensor(SIGMAS[::-1], dtype=dtype).reshape(3, 1, 1, 1)
    out = p(x, sigma)
    check_call(net, out, kind, kwargs, sign, x, as_floats(sigma), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_scalar_sigma(case, dtype):
    """A 0-d sigma tensor and an exactly representable Python float apply to every sample (c_noise still [B])."""
    _, cls, kind, kwargs, sign = case
    x = make_x((4, 3, 5), dtype, seed=2)
    for sigma in (torch.tensor(0.37, dtype=dtype), 2.5):
        net = FakeNet(sign)
        out = cls(net, **kwargs)(x, sigma)
        s = float(torch.as_tensor(sigma, dtype=dtype))
        check_call(net, out, kind, kwargs, sign, x, [s] * 4, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_batch_one(case, dtype):
    """Batch of one, with sigma of shape [1], [1, 1, 1, 1] and a scalar."""
    _, cls, kind, kwargs, sign = case
    x = make_x((1, 5, 7, 9), dtype, seed=3)
    for sigma in (torch.tensor([3.1], dtype=dtype), torch.tensor(0.21, dtype=dtype).reshape(1, 1, 1, 1),
                  torch.tensor(45.0, dtype=dtype)):
        net = FakeNet(sign)
        out = cls(net, **kwargs)(x, sigma)
        check_call(net, out, kind, kwargs, sign, x, as_floats(sigma), dtype)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_class_labels_third_positional_only_when_given(case):
    """Labels reach the model as its third positional argument (same object); no third argument without them."""
    _, cls, kind, kwargs, sign = case
    x = make_x((3, 2, 5), torch.float64, seed=4)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    labels = torch.nn.functional.one_hot(torch.tensor([2, 0, 4]), 5).to(torch.float64)
    net = FakeNet(sign)
    out = cls(net, **kwargs)(x, sigma, labels)
    check_call(net, out, kind, kwargs, sign, x, SIGMAS, torch.float64, labels=labels)
    net = FakeNet(sign)
    out_none = cls(net, **kwargs)(x, sigma)
    check_call(net, out_none, kind, kwargs, sign, x, SIGMAS, torch.float64)
    net = FakeNet(sign)
    cls(net, **kwargs)(x, sigma, class_labels=None)
    assert net.calls[0][2] == ()


# ---------------------------------------------------------------------------------------------------------
# dtypes of F and x
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_low_precision_model_output_mixed_in_float32(case, out_dtype):
    """F in fp16/bf16: the result is float32 and equals the float32 mix of the upcast F."""
    _, cls, kind, kwargs, sign = case
    net = FakeNet(sign, out_dtype=out_dtype)
    x = make_x((3, 5, 7, 9), torch.float32, seed=5)
    sigma = torch.tensor(SIGMAS, dtype=torch.float32)
    out = cls(net, **kwargs)(x, sigma)
    assert out.dtype == torch.float32
    F = net.outputs[0].to(torch.float64).numpy()  # the low-precision F, upcast exactly
    coefs = np.array([ref_coefficients(kind, kwargs, s) for s in as_floats(sigma)])
    shape = (-1, 1, 1, 1)
    expected = coefs[:, 0].reshape(shape) * x.to(torch.float64).numpy() + coefs[:, 1].reshape(shape) * F
    assert_close(out, torch.from_numpy(expected), dtype=torch.float32, name="float32 mix of upcast F")
    # A mix rounded to the low precision would be visibly further off than float32's tolerance.
    low = torch.from_numpy(expected).to(out_dtype).to(torch.float64)
    assert not torch.allclose(low, torch.from_numpy(expected), rtol=tolerance(torch.float32)[0], atol=0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_x_gives_float64_result(case):
    """float64 x with a float32 F: the mix (and result) is float64."""
    _, cls, kind, kwargs, sign = case
    net = FakeNet(sign, out_dtype=torch.float32)
    x = make_x((3, 4), torch.float64, seed=6)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    out = cls(net, **kwargs)(x, sigma)
    assert out.dtype == torch.float64
    F = net.outputs[0].to(torch.float64).numpy()
    coefs = np.array([ref_coefficients(kind, kwargs, s) for s in SIGMAS])
    expected = coefs[:, 0:1] * x.numpy() + coefs[:, 1:2] * F
    assert_close(out, torch.from_numpy(expected), dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_x_computes_in_float32(dtype):
    """fp16/bf16 x: the model gets a float32 input and the result is float32."""
    net = FakeNet()
    x = make_x((2, 3), dtype, seed=7)
    out = fastdiff.EDMPrecond(net)(x, torch.tensor([0.5, 2.0], dtype=dtype))
    assert net.calls[0][0].dtype == torch.float32 and out.dtype == torch.float32
    _, _, D = ref_denoise("edm", {}, x.to(torch.float64).numpy(), [0.5, 2.0], 1.0)
    assert_close(out, torch.from_numpy(D), dtype=torch.float32)


def test_python_float_sigma_keeps_float64_precision():
    """A Python float sigma with float64 x is used at full float64 precision (not rounded to float32 first)."""
    x = make_x((2, 3), torch.float64, seed=8)
    for _, cls, kind, kwargs, sign in CASES:
        net = FakeNet(sign)
        out = cls(net, **kwargs)(x, 0.7)
        check_call(net, out, kind, kwargs, sign, x, [0.7, 0.7], torch.float64)


def test_float64_sigma_with_float32_x_stays_float32():
    """float32 x with a float64 sigma (e.g. from karras_sigmas): the model input and the mix stay float32."""
    x = make_x((3, 4), torch.float32, seed=9)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    for _, cls, kind, kwargs, sign in CASES:
        net = FakeNet(sign)
        out = cls(net, **kwargs)(x, sigma)
        assert net.calls[0][0].dtype == torch.float32, f"{cls.__name__}: a float32 network was fed float64 input"
        assert out.dtype == torch.float32
        check_call(net, out, kind, kwargs, sign, x, as_floats(sigma.to(torch.float32)), torch.float32)


# ---------------------------------------------------------------------------------------------------------
# sigma ranges, iDDPM levels, round_sigma, VP sigma / sigma_inv
# ---------------------------------------------------------------------------------------------------------


def test_edm_sigma_range_defaults_and_custom():
    """EDM: [0, inf) by default; constructor values otherwise."""
    p = fastdiff.EDMPrecond(FakeNet())
    assert p.sigma_min == 0.0 and p.sigma_max == math.inf
    p = fastdiff.EDMPrecond(FakeNet(), sigma_min=0.002, sigma_max=80.0)
    assert (p.sigma_min, p.sigma_max) == (0.002, 80.0)


@pytest.mark.parametrize("kwargs", [{}, {"beta_d": 12.0, "beta_min": 0.5, "M": 200, "epsilon_t": 1e-3}])
def test_vp_sigma_range(kwargs):
    """VP: [sigma(eps_t), sigma(1)], ~[0.0010005, 152.17] by default."""
    p = fastdiff.VPPrecond(FakeNet(), **kwargs)
    bd, bm = kwargs.get("beta_d", 19.9), kwargs.get("beta_min", 0.1)
    lo, hi = ref_vp_sigma(kwargs.get("epsilon_t", 1e-5), bd, bm), ref_vp_sigma(1.0, bd, bm)
    assert isinstance(p.sigma_min, float) and isinstance(p.sigma_max, float)
    assert p.sigma_min == pytest.approx(lo, rel=1e-9)
    assert p.sigma_max == pytest.approx(hi, rel=1e-12)
    if not kwargs:
        assert p.sigma_min == pytest.approx(0.0010005, abs=5e-8)
        assert p.sigma_max == pytest.approx(152.17, abs=5e-3)


@pytest.mark.parametrize("kwargs", [{}, {"sigma_min": 0.1, "sigma_max": 50.0}])
def test_ve_sigma_range(kwargs):
    """VE: [0.02, 100] by default; constructor values otherwise."""
    p = fastdiff.VEPrecond(FakeNet(), **kwargs)
    assert (p.sigma_min, p.sigma_max) == (kwargs.get("sigma_min", 0.02), kwargs.get("sigma_max", 100.0))


@pytest.mark.parametrize("kwargs", [{}, {"C_1": 0.002, "C_2": 0.02, "M": 64}])
def test_iddpm_levels_and_range(kwargs):
    """All M+1 levels u_j match a float64 recursion; range [u_{M-1}, u_0] ~ [0.00643, 20291] by default."""
    M = kwargs.get("M", 1000)
    p = fastdiff.iDDPMPrecond(FakeNet(), **kwargs)
    u = ref_iddpm_u(M, kwargs.get("C_1", 0.001), kwargs.get("C_2", 0.008))
    assert p.u.shape == (M + 1,)
    assert_close(p.u.to(torch.float64), torch.tensor(u, dtype=torch.float64), dtype=torch.float64, name="u_j")
    assert u[M] == 0.0 and all(a > b for a, b in zip(u, u[1:]))  # the reference itself is sane
    assert p.sigma_min == pytest.approx(u[M - 1], rel=1e-12)
    assert p.sigma_max == pytest.approx(u[0], rel=1e-12)
    if not kwargs:
        assert p.sigma_min == pytest.approx(0.00643, abs=5e-6)
        assert p.sigma_max == pytest.approx(20291, abs=0.5)


def test_iddpm_levels_survive_half():
    """module.half() does not round the levels (they stay float64)."""
    p = fastdiff.iDDPMPrecond(torch.nn.Identity()).half()
    assert p.u.dtype == torch.float64
    assert p.sigma_max == pytest.approx(ref_iddpm_u(1000, 0.001, 0.008)[0], rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_iddpm_round_sigma_snaps_to_nearest_level(dtype):
    """Values between levels go to the nearer one; exact levels, 0 and huge values too; shape kept."""
    p = fastdiff.iDDPMPrecond(FakeNet())
    u = ref_iddpm_u(1000, 0.001, 0.008)
    targets, inputs = [], []
    for j in (1, 5, 100, 500, 900, 998, 999):
        lo, hi = u[j], u[j - 1]  # u_j < u_{j-1}
        for frac, want in ((0.0, j), (0.3, j), (0.7, j - 1), (1.0, j - 1)):
            inputs.append(lo + frac * (hi - lo))
            targets.append(u[want])
    inputs += [0.0, 1e-9, u[0] * 3, u[0]]
    targets += [0.0, 0.0, u[0], u[0]]
    sigma = torch.tensor(inputs, dtype=dtype)
    expected = torch.tensor([u[ref_nearest(s, u)] for s in as_floats(sigma)], dtype=torch.float64)
    assert_close(expected, torch.tensor(targets, dtype=torch.float64), rtol=0, atol=0, name="reference nearest")
    for shape in [(len(inputs),), (4, len(inputs) // 4), (len(inputs), 1, 1, 1)]:
        out = p.round_sigma(sigma.reshape(shape))
        assert out.shape == shape and out.dtype == dtype
        assert_close(out, expected.reshape(shape), dtype=dtype, name="round_sigma")
    # Snapped values are levels: every output is (to its dtype) one of the u_j, not the input.
    levels = set(p.u.to(dtype).tolist())
    assert all(v in levels for v in p.round_sigma(sigma).tolist())
    # A scalar keeps its 0-d shape.
    out = p.round_sigma(torch.tensor(0.3 * u[500] + 0.7 * u[501], dtype=dtype))
    assert out.shape == () and float(out) == pytest.approx(u[501], rel=tolerance(dtype)[0])


def test_iddpm_round_sigma_python_numbers():
    """Python floats and ints are snapped at float64 precision (0-d float64 result)."""
    p = fastdiff.iDDPMPrecond(FakeNet())
    u = ref_iddpm_u(1000, 0.001, 0.008)
    for value, j in ((u[400] + 0.2 * (u[399] - u[400]), 400), (u[3] + 0.9 * (u[2] - u[3]), 2), (2, ref_nearest(2.0, u))):
        out = p.round_sigma(value)
        assert out.dtype == torch.float64 and out.shape == ()
        assert float(out) == pytest.approx(u[j], rel=1e-12)


def test_iddpm_c_noise_between_levels():
    """c_noise = M-1-j for the nearest level j, also for sigmas between levels (c_in/c_out use the raw sigma)."""
    u = ref_iddpm_u(1000, 0.001, 0.008)
    sig = [u[10] + 0.4 * (u[9] - u[10]), u[10] + 0.6 * (u[9] - u[10]), u[700] + 0.45 * (u[699] - u[700])]
    net = FakeNet(-1.0)
    x = make_x((3, 2), torch.float64)
    out = fastdiff.iDDPMPrecond(net)(x, torch.tensor(sig, dtype=torch.float64))
    assert net.calls[0][1].tolist() == [989.0, 990.0, 299.0]
    check_call(net, out, "iddpm", {}, -1.0, x, sig, torch.float64)


@pytest.mark.parametrize("cls", [fastdiff.EDMPrecond, fastdiff.VPPrecond, fastdiff.VEPrecond])
def test_round_sigma_identity_for_continuous(cls):
    """round_sigma is the identity (values and shape) except for iDDPM."""
    p = cls(FakeNet())
    s = torch.tensor([[0.0123, 1.7], [33.3, 0.5]], dtype=torch.float64)
    out = p.round_sigma(s)
    assert out.shape == s.shape and torch.equal(out, s)


@pytest.mark.parametrize("kwargs", [{}, {"beta_d": 12.0, "beta_min": 0.5}])
def test_vp_sigma_and_inverse(kwargs):
    """VPPrecond.sigma(t) matches the formula and sigma_inv(sigma(t)) == t on [eps_t, 1]."""
    p = fastdiff.VPPrecond(FakeNet(), **kwargs)
    bd, bm = kwargs.get("beta_d", 19.9), kwargs.get("beta_min", 0.1)
    ts = [1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    t = torch.tensor(ts, dtype=torch.float64)
    s = p.sigma(t)
    # exp(.) - 1 in float64 loses ~1e-10 relative at t = 1e-5; the tolerance allows that, no more.
    assert_close(s, torch.tensor([ref_vp_sigma(v, bd, bm) for v in ts], dtype=torch.float64), rtol=1e-9, atol=0)
    assert_close(p.sigma_inv(s), t, rtol=1e-9, atol=0, name="sigma_inv(sigma(t))")
    assert_close(p.sigma_inv(torch.tensor([ref_vp_sigma(v, bd, bm) for v in ts], dtype=torch.float64)), t,
                 rtol=1e-9, atol=0, name="sigma_inv of the reference sigma")


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bad_x(case):
    """Non-float or non-tensor x: TypeError naming x."""
    _, cls, _, kwargs, sign = case
    p = cls(FakeNet(sign), **kwargs)
    with pytest.raises(TypeError, match=r"\bx\b"):
        p(torch.ones(2, 3, dtype=torch.int64), torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"\bx\b"):
        p([[1.0, 2.0]], 1.0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bad_sigma_shape(case):
    """sigma neither scalar nor one per sample: ValueError naming sigma, before the model runs."""
    _, cls, _, kwargs, sign = case
    net = FakeNet(sign)
    p = cls(net, **kwargs)
    x = torch.ones(3, 4)
    for sigma in (torch.ones(2), torch.ones(4), torch.ones(1, 3), torch.ones(3, 2), torch.ones(3, 1, 2), torch.ones(0)):
        with pytest.raises(ValueError, match=r"\bsigma\b"):
            p(x, sigma)
    assert net.calls == []


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bad_model_output(case):
    """A model returning the wrong shape (ValueError) or a non-float tensor / non-tensor (TypeError) names model."""
    _, cls, _, kwargs, _ = case
    x = torch.ones(3, 4)
    sigma = torch.tensor(SIGMAS)
    with pytest.raises(ValueError, match=r"\bmodel\b"):
        cls(lambda a, c: a[:, :3], **kwargs)(x, sigma)
    with pytest.raises(ValueError, match=r"\bmodel\b"):
        cls(lambda a, c: a.reshape(4, 3), **kwargs)(x, sigma)
    with pytest.raises(TypeError, match=r"\bmodel\b"):
        cls(lambda a, c: torch.ones(3, 4, dtype=torch.int32), **kwargs)(x, sigma)
    with pytest.raises(TypeError, match=r"\bmodel\b"):
        cls(lambda a, c: a.numpy(), **kwargs)(x, sigma)


@pytest.mark.parametrize("cls, kwargs, exc, name", [
    (fastdiff.EDMPrecond, {"sigma_data": -0.5}, ValueError, "sigma_data"),
    (fastdiff.EDMPrecond, {"sigma_data": 0.0}, ValueError, "sigma_data"),
    (fastdiff.EDMPrecond, {"sigma_data": float("nan")}, ValueError, "sigma_data"),
    (fastdiff.EDMPrecond, {"sigma_min": 2.0, "sigma_max": 1.0}, ValueError, "sigma_min"),
    (fastdiff.EDMPrecond, {"sigma_min": 1.0, "sigma_max": 1.0}, ValueError, "sigma_min"),
    (fastdiff.EDMPrecond, {"sigma_min": -1.0}, ValueError, "sigma_min"),
    (fastdiff.EDMPrecond, {"sigma_data": "0.5"}, TypeError, "sigma_data"),
    (fastdiff.VEPrecond, {"sigma_min": 100.0, "sigma_max": 0.02}, ValueError, "sigma_min"),
    (fastdiff.VEPrecond, {"sigma_min": 5.0, "sigma_max": 5.0}, ValueError, "sigma_min"),
    (fastdiff.VEPrecond, {"sigma_min": -0.02}, ValueError, "sigma_min"),
    (fastdiff.VEPrecond, {"sigma_max": 0.0}, ValueError, "sigma_max"),
    (fastdiff.VPPrecond, {"M": 1}, ValueError, "M"),
    (fastdiff.VPPrecond, {"M": 0}, ValueError, "M"),
    (fastdiff.VPPrecond, {"M": 10.0}, TypeError, "M"),
    (fastdiff.VPPrecond, {"beta_d": -1.0}, ValueError, "beta_d"),
    (fastdiff.VPPrecond, {"beta_min": -0.1}, ValueError, "beta_min"),
    (fastdiff.VPPrecond, {"epsilon_t": 0.0}, ValueError, "epsilon_t"),
    (fastdiff.VPPrecond, {"epsilon_t": 1.0}, ValueError, "epsilon_t"),
    (fastdiff.iDDPMPrecond, {"M": 1}, ValueError, "M"),
    (fastdiff.iDDPMPrecond, {"M": True}, TypeError, "M"),
    (fastdiff.iDDPMPrecond, {"C_1": -0.001}, ValueError, "C_1"),
    (fastdiff.iDDPMPrecond, {"C_2": 0.0}, ValueError, "C_2"),
])
def test_bad_constructor_args(cls, kwargs, exc, name):
    """Invalid constructor arguments raise an error whose message names the argument."""
    with pytest.raises(exc, match=rf"(?<![A-Za-z_]){name}(?![A-Za-z_])"):
        cls(FakeNet(), **kwargs)


@pytest.mark.parametrize("cls", [fastdiff.EDMPrecond, fastdiff.VPPrecond, fastdiff.VEPrecond, fastdiff.iDDPMPrecond])
def test_non_callable_model(cls):
    """A non-callable model: TypeError naming model."""
    with pytest.raises(TypeError, match=r"\bmodel\b"):
        cls(42)
