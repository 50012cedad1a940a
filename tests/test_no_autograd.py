"""Sampling never records an autograd graph: a net whose weights require grad samples as one whose weights do not,
with every sampler, solver and CPU backend, and the result carries no gradient (docs/sampling.md#no-autograd)."""
import pytest
import torch

import fastdiff
from fastdiff import sde as S
from fastdiff.ddpm import DDPM
from fastdiff.testing import assert_equal

SOLVERS = ("heun", "euler", "ddim", "euler_ancestral", "dpmpp_2m")
BACKENDS = ("reference",) + (("cpu",) if not fastdiff.ops.backends.install_reasons("cpu") else ())


class TinyNet(torch.nn.Module):
    """A small learned denoiser D(x, sigma) = x / (1 + sigma^2) + sigma / (1 + sigma^2) W x; it records whether
    autograd was recording during each call (which is what makes a graph, and the memory it holds, grow)."""

    def __init__(self, requires_grad: bool):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)) * 0.1,
                                         requires_grad=requires_grad)
        self.grad_enabled = []

    def forward(self, x, sigma, *labels):
        self.grad_enabled.append(torch.is_grad_enabled())
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return x / (1 + s * s) + s / (1 + s * s) * (x @ self.weight.to(x.dtype))


def nets():
    return TinyNet(requires_grad=True), TinyNet(requires_grad=False)


def check_no_graph(result, expected, trainable):
    assert not result.requires_grad and result.grad_fn is None
    assert trainable.grad_enabled and not any(trainable.grad_enabled), "the net ran with autograd recording"
    assert_equal(result, expected)


LATENTS = fastdiff.randn([1, 2, 3, 4], (4, 6))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_sample_records_no_graph(solver, backend):
    trainable, frozen = nets()
    kw = dict(solver=solver, num_steps=6, seeds=[1, 2, 3, 4], backend=backend)
    if solver in ("heun", "euler"):
        kw.update(S_churn=10.0)
    check_no_graph(fastdiff.sample(trainable, LATENTS, **kw), fastdiff.sample(frozen, LATENTS, **kw), trainable)


def test_sample_without_grad_inside_enable_grad():
    """A caller's torch.enable_grad() (e.g. inside a training step) does not turn autograd on inside the sampler."""
    trainable, frozen = nets()
    with torch.enable_grad():
        result = fastdiff.sample(trainable, LATENTS, num_steps=4, solver="dpmpp_2m")
    check_no_graph(result, fastdiff.sample(frozen, LATENTS, num_steps=4, solver="dpmpp_2m"), trainable)


def test_graphed_sampler_records_no_graph():
    trainable, frozen = nets()
    sampler = fastdiff.GraphedSampler(trainable, LATENTS, graph="emulated", num_steps=4, backend=BACKENDS[-1])
    expected = fastdiff.sample(frozen, LATENTS, num_steps=4, backend=BACKENDS[-1])
    check_no_graph(sampler(LATENTS), expected, trainable)  # (the net's Python ran while capturing, without autograd)


def test_sample_general_records_no_graph():
    trainable, frozen = nets()
    kw = dict(num_steps=5, discretization="vp", schedule="vp", scaling="vp", S_churn=5.0, seeds=[1, 2, 3, 4])
    check_no_graph(fastdiff.sample_general(trainable, LATENTS, **kw), fastdiff.sample_general(frozen, LATENTS, **kw),
                   trainable)


def test_inpaint_records_no_graph():
    trainable, frozen = nets()
    known, mask = torch.randn(4, 6, generator=torch.Generator().manual_seed(3)), torch.arange(6) < 3
    for method in ("replacement", "smc"):
        kw = dict(seeds=[1, 2, 3, 4], method=method, num_steps=4)
        if method == "smc":
            kw.update(num_particles=2)
        trainable.grad_enabled.clear()
        check_no_graph(fastdiff.inpaint(trainable, LATENTS, known, mask, **kw),
                       fastdiff.inpaint(frozen, LATENTS, known, mask, **kw), trainable)


class TinyEps(TinyNet):
    """An eps model eps(x_t, t) from the same learned layer (t a float tensor of time steps)."""

    def forward(self, x, t, *labels):
        self.grad_enabled.append(torch.is_grad_enabled())
        return torch.tanh(x @ self.weight.to(x.dtype)) * (t.to(x.dtype)[:, None] / 100)


def test_ddpm_samplers_record_no_graph():
    trainable, frozen = TinyEps(True), TinyEps(False)
    ddpm = DDPM(50)
    seeds = [1, 2, 3, 4]
    runs = [lambda m: ddpm.sample(m, LATENTS, seeds=seeds),
            lambda m: ddpm.ddim_sample(m, LATENTS, num_steps=5, eta=0.5, seeds=seeds),
            lambda m: ddpm.run_plan(ddpm.ddim_plan(5, 0.0), m, LATENTS)]
    for run in runs:
        trainable.grad_enabled.clear()
        check_no_graph(run(trainable), run(frozen), trainable)


def test_pc_sample_records_no_graph_and_likelihood_still_differentiates():
    """pc_sample runs without autograd; likelihood, whose divergence needs it, keeps turning it on where it must."""
    sde = S.VPSDE(N=32)
    trainable, frozen = TinyEps(True), TinyEps(False)
    kw = dict(latents=LATENTS, seeds=[1, 2, 3, 4], snr=0.1)
    check_no_graph(S.pc_sample(sde, trainable, **kw), S.pc_sample(sde, frozen, **kw), trainable)
    with torch.no_grad():  # the exact divergence takes autograd.grad inside, even when the caller turned it off
        exact = S.likelihood(sde, frozen, LATENTS.double(), exact_divergence=True, rtol=1e-3, atol=1e-3).logp
    assert exact.shape == (4,) and exact.isfinite().all() and not exact.requires_grad
