"""Tests of the EDM/VP/VE training losses against plain float64 formulas (docs/formulas.md#training-losses)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fastdiff
import fastdiff.testing
from fastdiff.testing import assert_close

# ---------------------------------------------------------------------------------------------------------
# Independent plain reference (Python math / numpy, float64), written from docs/formulas.md#preconditioning and docs/formulas.md#training-losses.
# ---------------------------------------------------------------------------------------------------------


def ref_weight(kind: str, s: float, sigma_data: float = 0.5) -> float:
    """lambda(sigma): EDM (s^2 + sd^2) / (s sd)^2; VP and VE 1 / s^2."""
    if kind == "edm":
        return (s * s + sigma_data * sigma_data) / (s * sigma_data) ** 2
    return 1.0 / (s * s)


def ref_vp_sigma(t: float, beta_d: float = 19.9, beta_min: float = 0.1) -> float:
    return math.sqrt(math.expm1(0.5 * beta_d * t * t + beta_min * t))


def ref_vp_sigma_inv(s: float, beta_d: float = 19.9, beta_min: float = 0.1) -> float:
    return (math.sqrt(beta_min * beta_min + 2.0 * beta_d * math.log1p(s * s)) - beta_min) / beta_d


def ref_edm_coefficients(s: float, sd: float):
    """(c_skip, c_out, c_in, c_noise) of EDM preconditioning."""
    r = math.sqrt(s * s + sd * sd)
    return sd * sd / (s * s + sd * sd), s * sd / r, 1.0 / r, math.log(s) / 4.0


def per_sample(v, ndim: int) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape((-1,) + (1,) * (ndim - 1))


def simple_D(x: np.ndarray, sigmas) -> np.ndarray:
    """The simple net's denoiser in numpy: x / (1 + sigma^2) + 0.1 sin(x)."""
    s = per_sample(sigmas, x.ndim)
    return x / (1.0 + s * s) + 0.1 * np.sin(x)


def fake_F(inp: np.ndarray, c_noise) -> np.ndarray:
    """The fake raw network F in numpy: 0.3 inp + 0.2 tanh(inp) * c_noise - 0.1."""
    return 0.3 * inp + 0.2 * np.tanh(inp) * per_sample(c_noise, inp.ndim) - 0.1


def edm_D(x: np.ndarray, sigmas, sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D, F, c_out) of EDMPrecond(fake F) by the plain formulas."""
    c = np.array([ref_edm_coefficients(s, sd) for s in sigmas])
    c_skip, c_out, c_in, c_noise = (per_sample(c[:, k], x.ndim) for k in range(4))
    F = fake_F(c_in * x, c[:, 3])
    return c_skip * x + c_out * F, F, c_out


class SimpleNet:
    """A denoiser given as a function of (x, sigma[, labels]); records its arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, *rest):
        self.calls.append((x.detach().clone(), sigma.detach().clone(), rest))
        s = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
        return x / (1 + s * s) + 0.1 * torch.sin(x)


class FakeModel:
    """A raw network F(x, c_noise[, labels]) = 0.3 x + 0.2 tanh(x) c_noise - 0.1; records its arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, c_noise, *rest):
        self.calls.append((x.detach().clone(), c_noise.detach().clone(), rest))
        return 0.3 * x + 0.2 * torch.tanh(x) * c_noise.reshape((-1,) + (1,) * (x.ndim - 1)) - 0.1


# (id, loss factory, kind, EDM sigma_data for the weight)
LOSSES = [
    ("edm-default", lambda: fastdiff.EDMLoss(), "edm", 0.5),
    ("edm-custom", lambda: fastdiff.EDMLoss(P_mean=0.4, P_std=0.5, sigma_data=1.3), "edm", 1.3),
    ("vp-default", lambda: fastdiff.VPLoss(), "vp", None),
    ("vp-custom", lambda: fastdiff.VPLoss(beta_d=12.0, beta_min=0.5, epsilon_t=1e-3), "vp", None),
    ("ve-default", lambda: fastdiff.VELoss(), "ve", None),
    ("ve-custom", lambda: fastdiff.VELoss(sigma_min=0.1, sigma_max=50.0), "ve", None),
]
LOSS_IDS = [c[0] for c in LOSSES]
SIGMAS = [0.07, 1.3, 17.0]
SHAPE = (3, 5, 7, 9)


def data(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    n = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    return y.to(dtype), n.to(dtype)


def floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.reshape(-1).tolist()]


# ---------------------------------------------------------------------------------------------------------
# Values with explicit sigma and noise
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_loss_simple_net(case, dtype):
    """loss = lambda(sigma) (D(y + sigma n; sigma) - y)^2, unreduced, with D a plain function."""
    _, make, kind, sd = case
    y, n = data(dtype)
    sigma = torch.tensor(SIGMAS, dtype=dtype)
    net = SimpleNet()
    loss = make()(net, y, sigma=sigma, noise=n)
    assert loss.shape == SHAPE and loss.dtype == dtype
    s = floats(sigma)
    y64, n64 = y.to(torch.float64).numpy(), n.to(torch.float64).numpy()
    x_in = y64 + per_sample(s, 4) * n64
    expected = per_sample([ref_weight(kind, v, sd) for v in s], 4) * (simple_D(x_in, s) - y64) ** 2
    assert len(net.calls) == 1
    x_seen, sigma_seen, rest = net.calls[0]
    assert rest == ()
    assert sigma_seen.shape == (3,)
    assert_close(sigma_seen, torch.tensor(s, dtype=torch.float64), dtype=dtype, name="sigma passed to net")
    assert_close(x_seen, torch.from_numpy(x_in), dtype=dtype, name="noisy input y + sigma n")
    assert_close(loss, torch.from_numpy(expected), dtype=dtype, name="loss")


class Recorder:
    """Wraps a net and records its outputs."""

    def __init__(self, net):
        self.net, self.outputs = net, []

    def __call__(self, *args):
        out = self.net(*args)
        self.outputs.append(out.detach().clone())
        return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_loss_edm_precond_net(case, dtype):
    """The same identity with net = EDMPrecond(fake F), D from the plain EDM formulas.

    float32: D - y cancels at small sigma, so the loss is checked against the float32 D the net returned, and
    that D against the plain formula with an atol scaled to the size of the mixed terms.
    """
    _, make, kind, sd = case
    sd_net = sd or 0.5
    y, n = data(dtype, seed=1)
    sigma = torch.tensor(SIGMAS, dtype=dtype)
    model = FakeModel()
    net = Recorder(fastdiff.EDMPrecond(model, sigma_data=sd_net))
    loss = make()(net, y, sigma=sigma, noise=n)
    assert loss.shape == SHAPE and loss.dtype == dtype
    s = floats(sigma)
    y64, n64 = y.to(torch.float64).numpy(), n.to(torch.float64).numpy()
    x_in = y64 + per_sample(s, 4) * n64
    D, F, c_out = edm_D(x_in, s, sd_net)
    w = per_sample([ref_weight(kind, v, sd) for v in s], 4)
    assert len(model.calls) == 1 and model.calls[0][2] == ()
    if dtype == torch.float64:
        assert_close(loss, torch.from_numpy(w * (D - y64) ** 2), dtype=dtype, name="loss")
    else:
        D_seen = net.outputs[0].to(torch.float64).numpy()
        assert_close(loss, torch.from_numpy(w * (D_seen - y64) ** 2), dtype=dtype, name="loss of the returned D")
        c_skip = per_sample([ref_edm_coefficients(v, sd_net)[0] for v in s], 4)
        scale = np.abs(c_skip * x_in) + np.abs(c_out * F)
        rtol, atol = fastdiff.testing.tolerance(dtype)
        assert_close(net.outputs[0], torch.from_numpy(D), rtol=rtol, atol=torch.from_numpy(rtol * scale).max().item() + atol,
                     name="D")


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_class_labels_forwarded(case):
    """class_labels reach the net (third positional) and, through EDMPrecond, the raw model."""
    _, make, _, _ = case
    y, n = data(torch.float64, seed=2)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    labels = torch.nn.functional.one_hot(torch.tensor([1, 0, 3]), 4).to(torch.float32)
    net = SimpleNet()
    with_labels = make()(net, y, labels, sigma=sigma, noise=n)
    assert len(net.calls) == 1 and len(net.calls[0][2]) == 1 and net.calls[0][2][0] is labels
    net2 = SimpleNet()
    without = make()(net2, y, sigma=sigma, noise=n)
    assert net2.calls[0][2] == ()
    assert torch.equal(with_labels, without)  # SimpleNet ignores labels
    model = FakeModel()
    make()(fastdiff.EDMPrecond(model), y, class_labels=labels, sigma=sigma, noise=n)
    assert len(model.calls[0][2]) == 1 and model.calls[0][2][0] is labels


@pytest.mark.parametrize("images_dtype, result_dtype", [
    (torch.float16, torch.float32), (torch.bfloat16, torch.float32), (torch.float32, torch.float32),
    (torch.float64, torch.float64)])
def test_result_dtype(images_dtype, result_dtype):
    """The loss is float32 for fp16/bf16/fp32 images and float64 for float64 images."""
    y, n = data(images_dtype, seed=3)
    sigma = torch.tensor([0.5, 1.0, 2.0], dtype=images_dtype)
    loss = fastdiff.EDMLoss()(SimpleNet(), y, sigma=sigma, noise=n)
    assert loss.dtype == result_dtype
    s = floats(sigma)
    y64, n64 = y.to(torch.float64).numpy(), n.to(torch.float64).numpy()
    expected = per_sample([ref_weight("edm", v) for v in s], 4) * (simple_D(y64 + per_sample(s, 4) * n64, s) - y64) ** 2
    assert_close(loss, torch.from_numpy(expected), dtype=result_dtype)


def test_python_sigma_list_keeps_float64_precision():
    """sigma given as Python floats with float64 images is used at float64 precision (not rounded to float32)."""
    y, n = data(torch.float64, seed=4)
    net = SimpleNet()
    fastdiff.VELoss()(net, y, sigma=[0.7, 1.1, 3.3], noise=n)
    assert_close(net.calls[0][1], torch.tensor([0.7, 1.1, 3.3], dtype=torch.float64), name="sigma passed to net")


# ---------------------------------------------------------------------------------------------------------
# lambda * c_out^2 = 1 (docs/formulas.md#training-losses)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sd", [0.5, 1.3, 0.05])
def test_weight_times_c_out_squared_is_one(sd):
    """EDMLoss.weight(sigma) * EDMPrecond's c_out(sigma)^2 == 1 over 1e-3..1e3, as in the plain formulas."""
    sig = torch.logspace(-3, 3, 61, dtype=torch.float64)
    weight = fastdiff.EDMLoss(sigma_data=sd).weight(sig)
    c_out = fastdiff.EDMPrecond(FakeModel(), sigma_data=sd).coefficients(sig)[1]
    assert_close(weight * c_out**2, torch.ones_like(sig), dtype=torch.float64, name="lambda * c_out^2")
    ref = [ref_weight("edm", s, sd) * ref_edm_coefficients(s, sd)[1] ** 2 for s in floats(sig)]
    assert max(abs(v - 1) for v in ref) < 1e-13
    assert_close(weight, torch.tensor([ref_weight("edm", s, sd) for s in floats(sig)], dtype=torch.float64),
                 dtype=torch.float64, name="lambda")


def test_edm_loss_is_unit_weight_regression_of_F():
    """With EDMPrecond, the EDM loss equals (F - (y - c_skip (y + sigma n)) / c_out)^2 with unit weight."""
    sd = 0.5
    y, n = data(torch.float64, seed=5)
    sigma = torch.tensor([0.002, 0.5, 80.0], dtype=torch.float64)
    loss = fastdiff.EDMLoss(sigma_data=sd)(fastdiff.EDMPrecond(FakeModel(), sigma_data=sd), y, sigma=sigma, noise=n)
    s = floats(sigma)
    x_in = y.numpy() + per_sample(s, 4) * n.numpy()
    _, F, c_out = edm_D(x_in, s, sd)
    c_skip = per_sample([ref_edm_coefficients(v, sd)[0] for v in s], 4)
    target = (y.numpy() - c_skip * x_in) / c_out
    assert_close(loss, torch.from_numpy((F - target) ** 2), rtol=1e-10, atol=1e-12, name="loss vs F regression")


# ---------------------------------------------------------------------------------------------------------
# Drawn sigma and noise
# ---------------------------------------------------------------------------------------------------------

N_DRAWS = 100_000


def draw(loss, seed=0, dtype=torch.float32):
    """Run loss on [N, 1] zero images with a recording net; return (sigma, noise, loss) as float64 numpy."""
    torch.manual_seed(seed)
    net = SimpleNet()
    out = loss(net, torch.zeros(N_DRAWS, 1, dtype=dtype))
    x, sigma, _ = net.calls[0]
    assert sigma.shape == (N_DRAWS,)
    s = sigma.to(torch.float64).numpy()
    return s, x.to(torch.float64).numpy()[:, 0] / s, out


def ks_uniform(u: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance of samples in [0, 1] from U(0, 1)."""
    u = np.sort(u)
    k = np.arange(1, len(u) + 1)
    return float(max((k / len(u) - u).max(), (u - (k - 1) / len(u)).max()))


KS_LIMIT = 1.95 / math.sqrt(N_DRAWS)  # p ~ 0.001


def check_standard_normal(z: np.ndarray, name: str):
    n = len(z)
    assert abs(z.mean()) < 4 / math.sqrt(n), f"{name}: mean {z.mean()}"
    assert abs(z.std() - 1) < 4 / math.sqrt(2 * n), f"{name}: std {z.std()}"
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    assert ks_uniform(cdf) < KS_LIMIT, f"{name}: not normal (KS {ks_uniform(cdf)})"


@pytest.mark.parametrize("P_mean, P_std", [(-1.2, 1.2), (0.4, 0.5)])
def test_edm_drawn_sigma_is_lognormal(P_mean, P_std):
    """ln sigma ~ N(P_mean, P_std^2) per sample; noise ~ N(0, 1) independent of sigma; seeded runs repeat."""
    loss = fastdiff.EDMLoss() if (P_mean, P_std) == (-1.2, 1.2) else fastdiff.EDMLoss(P_mean=P_mean, P_std=P_std)
    s, noise, out = draw(loss)
    assert (s > 0).all()
    z = (np.log(s) - P_mean) / P_std
    check_standard_normal(z, "(ln sigma - P_mean) / P_std")
    check_standard_normal(noise, "noise")
    assert abs(np.corrcoef(z, noise)[0, 1]) < 4 / math.sqrt(N_DRAWS)
    # Zero images, D = x / (1 + s^2) + 0.1 sin x: the loss is lambda * D^2 (checked on the drawn values).
    x = s * noise
    expected = np.array([ref_weight("edm", v) for v in s[:1000]]) * (x[:1000] / (1 + s[:1000] ** 2) + 0.1 * np.sin(x[:1000])) ** 2
    assert_close(out[:1000, 0], torch.from_numpy(expected), dtype=torch.float32, name="loss on drawn sigma")
    s2, noise2, _ = draw(loss)
    assert np.array_equal(s, s2) and np.array_equal(noise, noise2)
    s3, _, _ = draw(loss, seed=1)
    assert not np.array_equal(s, s3)


@pytest.mark.parametrize("kwargs", [{}, {"sigma_min": 0.1, "sigma_max": 50.0}])
def test_ve_drawn_sigma_is_log_uniform(kwargs):
    """sigma in [sigma_min, sigma_max] with ln sigma uniform; noise ~ N(0, 1)."""
    lo, hi = kwargs.get("sigma_min", 0.02), kwargs.get("sigma_max", 100.0)
    s, noise, _ = draw(fastdiff.VELoss(**kwargs))
    assert s.min() >= lo * (1 - 1e-6) and s.max() <= hi * (1 + 1e-6), (s.min(), s.max())
    u = np.log(s / lo) / math.log(hi / lo)
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / N_DRAWS)
    assert ks_uniform(np.clip(u, 0, 1)) < KS_LIMIT
    # Both ends are reached (the whole range is used, not a sub-range).
    assert u.min() < 1e-3 and u.max() > 1 - 1e-3
    check_standard_normal(noise, "noise")


@pytest.mark.parametrize("kwargs", [{}, {"beta_d": 12.0, "beta_min": 0.5, "epsilon_t": 1e-3}])
def test_vp_drawn_sigma_range_and_distribution(kwargs):
    """sigma in [sigma(eps_t), sigma(1)], with t = sigma_inv(sigma) uniform on [eps_t, 1]."""
    bd, bm, eps = kwargs.get("beta_d", 19.9), kwargs.get("beta_min", 0.1), kwargs.get("epsilon_t", 1e-5)
    lo, hi = ref_vp_sigma(eps, bd, bm), ref_vp_sigma(1.0, bd, bm)
    s, noise, _ = draw(fastdiff.VPLoss(**kwargs))
    assert s.min() >= lo * (1 - 1e-5) and s.max() <= hi * (1 + 1e-5), (s.min(), s.max())
    t = np.array([ref_vp_sigma_inv(v, bd, bm) for v in s])
    u = (1 - t) / (1 - eps)
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / N_DRAWS)
    assert ks_uniform(np.clip(u, 0, 1)) < KS_LIMIT
    assert t.max() > 1 - 1e-3 and t.min() < eps + 1e-3
    check_standard_normal(noise, "noise")


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_bad_sigma(case):
    """sigma not of shape [B] or not finite > 0: ValueError naming sigma; integer sigma: TypeError."""
    _, make, _, _ = case
    loss = make()
    y, n = data(torch.float32)
    net = SimpleNet()
    for sigma in (torch.ones(2), torch.ones(4), torch.ones(3, 1), torch.ones(3, 1, 1, 1), torch.tensor(1.0)):
        with pytest.raises(ValueError, match=r"\bsigma\b"):
            loss(net, y, sigma=sigma, noise=n)
    for bad in (0.0, -0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"\bsigma\b"):
            loss(net, y, sigma=torch.tensor([1.0, bad, 2.0]), noise=n)
    with pytest.raises(TypeError, match=r"\bsigma\b"):
        loss(net, y, sigma=torch.tensor([1, 2, 3]), noise=n)
    assert net.calls == []


@pytest.mark.parametrize("case", LOSSES, ids=LOSS_IDS)
def test_bad_noise_images_and_net(case):
    """Wrong-shape noise (ValueError, noise), non-float images (TypeError, images), bad net output (ValueError, net)."""
    _, make, _, _ = case
    loss = make()
    y, n = data(torch.float32)
    sigma = torch.tensor(SIGMAS)
    for noise in (n[:2], n.reshape(3, 35, 9), n[..., :8], n.tolist()):
        with pytest.raises(ValueError, match=r"\bnoise\b"):
            loss(SimpleNet(), y, sigma=sigma, noise=noise)
    for images in (torch.ones(SHAPE, dtype=torch.int64), torch.ones(SHAPE, dtype=torch.bool), y.tolist(), torch.tensor(1.0)):
        with pytest.raises(TypeError, match=r"\bimages\b"):
            loss(SimpleNet(), images, sigma=sigma, noise=n)
    for bad_net in (lambda x, s: x[:, :4], lambda x, s: x.reshape(3, -1), lambda x, s: x.sum()):
        with pytest.raises(ValueError, match=r"\bnet\b"):
            loss(bad_net, y, sigma=sigma, noise=n)
    for bad_net in (lambda x, s: x.numpy(), lambda x, s: x.long()):  # not a floating tensor
        with pytest.raises(TypeError, match=r"^net: expected the denoiser to return a floating-point tensor"):
            loss(bad_net, y, sigma=sigma, noise=n)


@pytest.mark.parametrize("make, exc, name", [
    (lambda: fastdiff.EDMLoss(sigma_data=0.0), ValueError, "sigma_data"),
    (lambda: fastdiff.EDMLoss(sigma_data=-1.0), ValueError, "sigma_data"),
    (lambda: fastdiff.EDMLoss(P_std=-0.1), ValueError, "P_std"),
    (lambda: fastdiff.EDMLoss(P_mean=float("nan")), ValueError, "P_mean"),
    (lambda: fastdiff.EDMLoss(P_mean="x"), TypeError, "P_mean"),
    (lambda: fastdiff.VPLoss(beta_d=0.0), ValueError, "beta_d"),
    (lambda: fastdiff.VPLoss(epsilon_t=1.5), ValueError, "epsilon_t"),
    (lambda: fastdiff.VELoss(sigma_min=100.0, sigma_max=0.02), ValueError, "sigma_min"),
    (lambda: fastdiff.VELoss(sigma_min=0.0), ValueError, "sigma_min"),
])
def test_bad_constructor_args(make, exc, name):
    """Invalid loss parameters raise an error naming the argument."""
    with pytest.raises(exc, match=rf"(?<![A-Za-z_]){name}(?![A-Za-z_])"):
        make()
