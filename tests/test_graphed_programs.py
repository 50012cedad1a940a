"""The solver programs (fastdiff.sampling.programs) graphed: GraphedSampler and sample(cuda_graph=...) replay their
ProgramLoop, and every replay equals eager sampling bit for bit.

As in tests/test_graphed.py, the graph is an EmulatedGraph on the CPU (the ops recorded at capture, replayed without
the Python code); the fused backends that run CPU tensors are the ones checked.
"""
import importlib.util
import os

import pytest
import torch

import fastdiff
import fastdiff.sampling.graph as graphed
from fastdiff.sampling.program_loop import ProgramLoop, _assign_buffers
from fastdiff.sampling.programs import PROGRAM_SOLVERS, solver_program
from fastdiff.testing import assert_equal

CPU_BACKENDS = (["cpu"] if not fastdiff.ops.backends.install_reasons("cpu") else []) + \
    (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" and importlib.util.find_spec("triton") else [])
if not CPU_BACKENDS:
    pytest.skip("no fused backend runs CPU tensors here (fastdiff._C not built, no Triton interpreter)",
                allow_module_level=True)
CHURN = dict(S_churn=20.0, S_min=0.1, S_max=30.0)
SETTINGS = {  # each program solver with settings that exercise it (noise, orders, churn)
    "dpm_2": CHURN,
    "dpm_2_ancestral": {},
    "dpmpp_2s_ancestral": dict(eta=0.7),
    "dpmpp_sde": {},
    "dpmpp_2m_sde": dict(solver_type="heun"),
    "dpmpp_3m_sde": {},
    "lms": dict(order=4),
    "unipc": dict(order=3),
}
assert set(SETTINGS) == set(PROGRAM_SOLVERS)


def mixture():
    return fastdiff.GaussianMixture(torch.linspace(-1, 1, 12).reshape(3, 4), [0.3, 0.5, 0.2], [0.5, 0.3, 0.2])


class LabelledNet(torch.nn.Module):
    """The mixture's exact denoiser nudged by the class label, so labels change the samples."""

    def __init__(self):
        super().__init__()
        self.gm = mixture()
        self.scale = torch.nn.Parameter(torch.tensor(0.05))

    def forward(self, x, sigma, labels=None):
        out = self.gm(x, sigma)
        return out if labels is None else out + self.scale * labels.to(out.dtype)[:, None]


def latents(batch=5, seed=0):
    return torch.randn(batch, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_replays_equal_eager_sampling(solver, backend):
    """Every call of a captured program, each with new latents, seeds and labels, equals fastdiff.sample with those
    seeds bit for bit; the capture check passed (the report says so)."""
    net = LabelledNet()
    kw = dict(num_steps=6, solver=solver, backend=backend, **SETTINGS[solver])
    labels = torch.tensor([0, 1, 2, 1, 0])
    sampler = fastdiff.GraphedSampler(net, latents(), labels, graph="emulated", **kw)
    assert sampler.report.ok, str(sampler.report)
    for call in range(3):
        x0, seeds, call_labels = latents(seed=call + 1), [call * 10 + b for b in range(5)], labels.roll(call)
        assert_equal(sampler(x0, seeds=seeds, class_labels=call_labels),
                     fastdiff.sample(net, x0, call_labels, seeds=seeds, **kw))


@pytest.mark.parametrize("solver", ["lms", "unipc"])
def test_deterministic_programs_equal_the_reference_backend(solver):
    """lms and unipc draw no noise: their replay equals eager sampling on the reference backend too (the combine
    op's arithmetic is the reference's; where noise is drawn, the backends' noise may differ in its last bits)."""
    net, kw = mixture(), dict(num_steps=6, solver=solver, **SETTINGS[solver])
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", backend=CPU_BACKENDS[0], **kw)
    x0 = latents(seed=4)
    assert_equal(sampler(x0), fastdiff.sample(net, x0, backend="reference", **kw))


@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_sample_cuda_graph_equals_eager(solver, emulated_graphs):
    """sample(cuda_graph=True or "auto") replays a cached graph of the program; a new schedule of the same structure
    reuses it (its values loaded by set_plan), and the results equal eager sampling."""
    net = mixture()
    kw = dict(num_steps=5, solver=solver, backend=CPU_BACKENDS[0], **SETTINGS[solver])
    for call, (mode, sigma_max) in enumerate([(True, 80.0), ("auto", 80.0), (True, 50.0)]):
        x0, seeds = latents(seed=call), [call, 1, 2, 3, 4]
        got = fastdiff.sample(net, x0, seeds=seeds, sigma_max=sigma_max, cuda_graph=mode, **kw)
        assert_equal(got, fastdiff.sample(net, x0, seeds=seeds, sigma_max=sigma_max, **kw))
        assert len(graphed._cache) == 1


def test_omitted_latents_and_start_scale(emulated_graphs):
    """Latents omitted are drawn from the seeds as fastdiff.randn draws them; start_scale is a table value."""
    net = mixture()
    kw = dict(num_steps=4, solver="dpmpp_2m_sde", backend=CPU_BACKENDS[0], start_scale=91.5)
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", **kw)
    seeds = [3, 1, 4, 1, 5]
    x0 = fastdiff.randn(seeds, (5, 4), backend=CPU_BACKENDS[0])
    assert_equal(sampler(seeds=seeds), fastdiff.sample(net, x0, seeds=seeds, **kw))


def program_of(net, **settings):
    """The Program sample() runs for these settings."""
    options = fastdiff.sampling.plan.SampleOptions(**settings)
    return fastdiff.sampling.plan.make_plan(net, options, program=True)


@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_set_plan_replays_another_schedule_of_the_same_structure(solver):
    """set_plan copies another program's coefficients and noise levels into the loop's tables: no new capture, and the
    replay equals eager sampling on that schedule. A program of another structure is refused, named."""
    net = mixture()
    kw = dict(num_steps=5, solver=solver, backend=CPU_BACKENDS[0], **SETTINGS[solver])
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", **kw)
    graph = sampler._graph
    other = dict(kw, sigma_max=40.0, rho=5.0)
    sampler.set_plan(program_of(net, **other))
    assert sampler._graph is graph
    x0, seeds = latents(seed=3), [5, 6, 7, 8, 9]
    assert_equal(sampler(x0, seeds=seeds), fastdiff.sample(net, x0, seeds=seeds, **other))
    with pytest.raises(ValueError, match=f"plan: expected a program with the same structure .*solver {solver!r}, "
                                         f"5 steps.*got 6 steps"):
        sampler.set_plan(program_of(net, **dict(kw, num_steps=6)))
    with pytest.raises(TypeError, match="plan: expected a solver program"):
        sampler.set_plan(fastdiff.plan_steps(net, num_steps=5))


def test_set_plan_names_the_differing_solver_and_step():
    net = mixture()
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", num_steps=4, solver="lms", order=2,
                                      backend=CPU_BACKENDS[0])
    t = list(sampler.plan.t)
    with pytest.raises(ValueError, match="got solver 'unipc'"):
        sampler.set_plan(solver_program("unipc", t))
    with pytest.raises(ValueError, match="got step 2 as"):
        sampler.set_plan(solver_program("lms", t, order=3))


@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_scaled_programs_keep_their_structure(solver):
    """Program.scaled (check_capture's second call) rebuilds the program on the scaled schedule: other values, the
    same structure; start_scale scales with it."""
    options = fastdiff.sampling.plan.SampleOptions(num_steps=7, solver=solver, start_scale=3.0, **SETTINGS[solver])
    program = fastdiff.sampling.plan.make_plan(mixture(), options, program=True)
    scaled = program.scaled(0.75)
    assert scaled.structure() == program.structure()
    assert scaled.t == tuple(v * 0.75 for v in program.t) and scaled.start_scale == 2.25
    assert scaled != program and scaled.solver == solver


@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_check_capture_passes_the_program_loops(solver):
    """fastdiff.check_capture runs a program solver's own loop (on fixed buffers) and finds it capture-safe; without
    fixed buffers (reuse_buffers=False) it sees each step's allocations."""
    net, x0 = LabelledNet(), latents()
    kw = dict(num_steps=5, solver=solver, backend=CPU_BACKENDS[0], **SETTINGS[solver])
    labels = torch.tensor([0, 1, 2, 1, 0])
    report = fastdiff.check_capture(net, x0, labels, seeds=[1, 2, 3, 4, 5], **kw)
    assert report.ok, str(report)
    assert len(report.kernels_per_step) == 5
    fresh = fastdiff.check_capture(net, x0, labels, seeds=[1, 2, 3, 4, 5], reuse_buffers=False, **kw)
    assert not fresh.ok and {v.kind for v in fresh.violations} == {"allocation"}


@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_in_place_buffers_never_overwrite_a_value_still_read(solver):
    """_assign_buffers: run on the host, every Combine's output buffer is held by no other register when written
    (so no older value in a rotation chain or an aliased register is lost), and the count stays small."""
    options = fastdiff.sampling.plan.SampleOptions(num_steps=8, solver=solver, **SETTINGS[solver])
    program = fastdiff.sampling.plan.make_plan(mixture(), options, program=True)
    start, outs, count = _assign_buffers(program)
    holder = {"x": start}
    for step, step_outs in zip(program.steps, outs):
        for op, out in zip(step, step_outs):
            kind = type(op).__name__
            if kind == "Eval":
                holder[op.dst] = None
            elif kind == "Combine":
                assert out is not None
                assert all(b != out for name, b in holder.items() if name != op.dst), (op, holder)
                holder[op.dst] = out
            else:
                holder[op.dst] = holder[op.src]
        for chain in program.rotate:
            for newer, older in zip(reversed(chain[:-1]), reversed(chain[1:])):
                if newer in holder:
                    holder[older] = holder[newer]
    assert count <= 5


def test_in_place_loop_keeps_a_net_result_that_is_its_input():
    """A ProgramLoop in place equals one making new tensors, even for a net that returns its own input (a fixed
    buffer, which unipc's next Combine writes over while the result is still read as D1): the loop copies it."""
    def identity_ish(x, sigma):
        return x

    program = fastdiff.sampling.plan.make_plan(identity_ish, fastdiff.sampling.plan.SampleOptions(
        num_steps=5, solver="unipc"), program=True)
    x0 = latents()
    fresh = ProgramLoop(identity_ish, program, x0, torch.float32, backend=CPU_BACKENDS[0]).run(x0)
    fixed = ProgramLoop(identity_ish, program, x0, torch.float32, backend=CPU_BACKENDS[0], in_place=True)
    assert fixed.in_place
    assert_equal(fixed.run(x0), fresh)


def test_dpm_adaptive_is_refused():
    """dpm_adaptive syncs every step to choose the next: GraphedSampler and sample(cuda_graph=True) refuse it."""
    with pytest.raises(ValueError, match="'dpm_adaptive' chooses its steps while it runs"):
        fastdiff.GraphedSampler(mixture(), latents(), graph="emulated", solver="dpm_adaptive",
                                backend=CPU_BACKENDS[0])
    with pytest.raises(ValueError, match="cuda_graph: solver='dpm_adaptive' cannot be captured"):
        fastdiff.sample(mixture(), latents(), solver="dpm_adaptive", cuda_graph=True, backend=CPU_BACKENDS[0])


@pytest.mark.parametrize("name, value", [("randn_like", torch.randn_like), ("callback", print),
                                         ("noise_sampler", lambda sigma, sigma_next: None)])
def test_host_code_is_refused_by_the_sampler(name, value):
    with pytest.raises(TypeError, match=f"{name}: not accepted by GraphedSampler"):
        fastdiff.GraphedSampler(mixture(), latents(), graph="emulated", solver="dpmpp_sde", backend=CPU_BACKENDS[0],
                                **{name: value})


def test_host_code_is_refused_by_sample_cuda_graph(emulated_graphs):
    """cuda_graph=True names what cannot be replayed; "auto" samples eagerly instead."""
    net, x0 = mixture(), latents()
    kw = dict(num_steps=3, solver="dpmpp_sde", backend=CPU_BACKENDS[0])
    noise = lambda sigma, sigma_next: torch.ones(5, 4)  # noqa: E731
    for given, match in [(dict(randn_like=torch.randn_like), "randn_like: a Python noise function"),
                         (dict(noise_sampler=noise), "noise_sampler: a Python noise function"),
                         (dict(noise_sampler="brownian"), "noise_sampler: a Python noise function"),
                         (dict(callback=lambda info: None, seeds=[1] * 5), "callback: host code")]:
        with pytest.raises(fastdiff.CaptureError, match=f"cuda_graph=True: {match}"):
            fastdiff.sample(net, x0, cuda_graph=True, **given, **kw)
    assert_equal(fastdiff.sample(net, x0, noise_sampler=noise, cuda_graph="auto", **kw),
                 fastdiff.sample(net, x0, noise_sampler=noise, **kw))
    assert not graphed._cache
    with pytest.raises(fastdiff.CaptureError, match="cuda_graph=True: noise_sampler"):
        fastdiff.sample(net, x0, solver="euler_ancestral", noise_sampler=noise, cuda_graph=True, num_steps=3)


def test_reference_backend_is_refused():
    """As for the other solvers, a graphed program needs a fused backend."""
    with pytest.raises(fastdiff.CaptureError, match="backend: 'reference' makes new tensors"):
        fastdiff.GraphedSampler(mixture(), latents(), graph="emulated", solver="lms", backend="reference")


@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_eager_reuse_buffers_equals_new_tensors(solver):
    """sample(reuse_buffers=True) runs a program on the graphed loop's fixed buffers, eagerly: the same bits as new
    tensors per step, with seeds, randn_like or a noise_sampler; with a callback it makes new tensors (the callback's
    tensors must not change after it saw them), and on the reference backend too."""
    net, x0 = LabelledNet(), latents()
    kw = dict(num_steps=5, solver=solver, backend=CPU_BACKENDS[0], **SETTINGS[solver])
    labels = torch.tensor([0, 1, 2, 1, 0])
    assert_equal(fastdiff.sample(net, x0, labels, seeds=[1, 2, 3, 4, 5], reuse_buffers=True, **kw),
                 fastdiff.sample(net, x0, labels, seeds=[1, 2, 3, 4, 5], **kw))
    noise = lambda x: torch.ones_like(x) * 0.5  # noqa: E731
    assert_equal(fastdiff.sample(net, x0, labels, randn_like=noise, reuse_buffers=True, **kw),
                 fastdiff.sample(net, x0, labels, randn_like=noise, **kw))
    seen = []
    fastdiff.sample(net, x0, labels, callback=lambda info: seen.append(info["x"].clone()), seeds=[1] * 5, **kw)
    kept = []
    fastdiff.sample(net, x0, labels, callback=lambda info: kept.append(info["x"]), seeds=[1] * 5, reuse_buffers=True,
                    **kw)
    assert all(torch.equal(a, b) for a, b in zip(seen, kept)) and len(seen) == 5
    reference = dict(kw, backend="reference", seeds=[1] * 5)
    assert_equal(fastdiff.sample(net, x0, labels, reuse_buffers=True, **reference),
                 fastdiff.sample(net, x0, labels, **reference))


class KeywordNet(torch.nn.Module):
    """The mixture's denoiser shifted by a keyword tensor (extra_args)."""

    def __init__(self):
        super().__init__()
        self.gm = mixture()

    def forward(self, x, sigma, *labels, shift):
        return self.gm(x, sigma) + 0.1 * shift


def test_extra_args_and_guidance_are_graphed_with_programs(emulated_graphs):
    """extra_args tensors are the graphed program's inputs, and guidance by uncond_args runs through the graph too;
    both equal eager sampling bit for bit."""
    net = KeywordNet()
    kw = dict(num_steps=4, solver="dpmpp_3m_sde", backend=CPU_BACKENDS[0])
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", extra_args=dict(shift=latents(seed=9)), **kw)
    for call in range(2):
        x0, seeds, args = latents(seed=call), [call, 1, 2, 3, 4], dict(shift=latents(seed=10 + call))
        assert_equal(sampler(x0, seeds=seeds, extra_args=args),
                     fastdiff.sample(net, x0, seeds=seeds, extra_args=args, **kw))
        guided = dict(guidance=2.5, extra_args=args, uncond_args=dict(shift=torch.zeros(5, 4)), seeds=seeds)
        assert_equal(fastdiff.sample(net, x0, cuda_graph=True, **guided, **kw), fastdiff.sample(net, x0, **guided, **kw))
    assert len(graphed._cache) == 1


CUDA_BACKENDS = ["cuda", "triton"] if torch.cuda.is_available() else []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (real CUDA graphs)")
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("solver", PROGRAM_SOLVERS)
def test_cuda_graph_replays_of_programs_equal_eager_sampling(backend, solver):
    if backend == "cuda" and fastdiff.ops.backends.install_reasons("cuda"):
        pytest.skip("the CUDA extension is not built: " + "; ".join(fastdiff.ops.backends.install_reasons("cuda")))
    net = LabelledNet().cuda()
    kw = dict(num_steps=6, solver=solver, backend=backend, **SETTINGS[solver])
    labels = torch.tensor([0, 1, 2, 1, 0], device="cuda")
    sampler = fastdiff.GraphedSampler(net, latents().cuda(), labels, graph="cuda", **kw)
    assert sampler.graph_kind == "cuda"
    for call in range(3):
        x0, seeds = latents(seed=call).cuda(), [call, 7, 8, 9, 10]
        assert_equal(sampler(x0, seeds=seeds, class_labels=labels),
                     fastdiff.sample(net, x0, labels, seeds=seeds, **kw))
