"""GraphedSampler and sample(cuda_graph=...): the whole loop replayed as a graph equals eager sampling, bit for bit.

Without a GPU the graph is fastdiff.sampling.capture.EmulatedGraph: the ops recorded at capture, replayed on the same
tensors without the Python code, which is what a CUDA graph does. Tests marked `cuda` run real CUDA graphs
and are skipped on machines without one.
"""
import dataclasses
import importlib.util
import logging
import os
import sys
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastdiff
import fastdiff.sampling.graph as graphed
from fastdiff.testing import assert_equal

CPU_BACKENDS = (["cpu"] if not fastdiff.ops.backends.install_reasons("cpu") else []) + \
    (["triton"] if os.environ.get("TRITON_INTERPRET") == "1" and importlib.util.find_spec("triton") else [])
CHURN = dict(S_churn=20.0, S_min=0.1, S_max=30.0)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (real CUDA graphs)")
if not CPU_BACKENDS:
    pytest.skip("no fused backend runs CPU tensors here (fastdiff._C not built, no Triton interpreter)",
                allow_module_level=True)


def mixture():
    return fastdiff.GaussianMixture(torch.linspace(-1, 1, 12).reshape(3, 4), [0.3, 0.5, 0.2], [0.5, 0.3, 0.2])


class LabelledNet(nn.Module):
    """An exact mixture denoiser nudged by the class label, so labels change the samples."""

    def __init__(self):
        super().__init__()
        self.gm = mixture()
        self.scale = nn.Parameter(torch.tensor(0.05))

    def forward(self, x, sigma, labels=None):
        out = self.gm(x, sigma)
        return out if labels is None else out + self.scale * labels.to(out.dtype)[:, None]


def latents(batch=5, seed=0, dtype=torch.float32):
    return torch.randn(batch, 4, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("solver", ["heun", "euler"])
@pytest.mark.parametrize("churn", [True, False])
@pytest.mark.parametrize("labelled", [True, False])
def test_replays_equal_eager_sampling(backend, solver, churn, labelled):
    """Every call of a captured sampler, each with new latents, seeds and labels, equals fastdiff.sample bit for bit."""
    net = LabelledNet()
    kw = dict(num_steps=5, solver=solver, backend=backend, **(CHURN if churn else {}))
    labels = torch.tensor([0, 1, 2, 1, 0]) if labelled else None
    sampler = fastdiff.GraphedSampler(net, latents(), labels, graph="emulated", **kw)
    for call in range(3):
        x0, seeds = latents(seed=call + 1), [call * 10 + b for b in range(5)]
        call_labels = None if labels is None else labels.roll(call)
        got = sampler(x0, seeds=seeds, class_labels=call_labels)
        assert_equal(got, fastdiff.sample(net, x0, call_labels, seeds=seeds, **kw))


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m"])
def test_start_scale_is_a_setting_of_the_graph(solver, emulated_graphs):
    """start_scale (sample()'s setting) is captured like the others: the replay equals sample(start_scale=...) bit
    for bit, through sample(cuda_graph=...) too, and check_capture takes it; it is a value of the loop's table, so
    set_plan may change it, but not add or drop it."""
    net = mixture()
    kw = dict(num_steps=4, solver=solver, backend=CPU_BACKENDS[0], start_scale=91.5)
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", **kw)
    x0 = latents(seed=3)
    assert_equal(sampler(x0), fastdiff.sample(net, x0, **kw))
    assert_equal(fastdiff.sample(net, x0, cuda_graph=True, **kw), fastdiff.sample(net, x0, **kw))
    assert fastdiff.check_capture(net, latents(), **kw).ok
    sampler.set_plan(dataclasses.replace(sampler.plan, start_scale=40.0))
    assert_equal(sampler(x0), fastdiff.sample(net, x0, **dict(kw, start_scale=40.0)))
    with pytest.raises(ValueError, match="plan: expected a schedule with the same structure"):
        sampler.set_plan(dataclasses.replace(sampler.plan, start_scale=None))


class KeywordNet(nn.Module):
    """The mixture, shifted by a per-sample tensor and scaled by a number, both keyword arguments."""

    def __init__(self):
        super().__init__()
        self.gm = mixture()

    def forward(self, x, sigma, *labels, shift, scale=1.0, nested=None):
        out = self.gm(x, sigma) * scale + 0.1 * shift
        return out if nested is None else out + 0.01 * nested["bias"]


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m"])
def test_extra_args_are_graph_inputs(solver):
    """A sampler captured with extra_args takes new tensors per call (copied into its static buffers, as the labels)
    and equals sample(extra_args=...) bit for bit; the values that are not tensors are part of the capture."""
    net = KeywordNet()
    kw = dict(num_steps=4, solver=solver, backend=CPU_BACKENDS[0], **CHURN) if solver == "heun" else \
        dict(num_steps=4, solver=solver, backend=CPU_BACKENDS[0])

    def args(call):
        return dict(shift=latents(seed=20 + call), scale=0.8, nested={"bias": latents(seed=30 + call)})

    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", extra_args=args(0), **kw)
    for call in range(3):
        x0, seeds = latents(seed=call), [call, 1, 2, 3, 4]
        assert_equal(sampler(x0, seeds=seeds, extra_args=args(call)),
                     fastdiff.sample(net, x0, seeds=seeds, extra_args=args(call), **kw))
    report = fastdiff.check_capture(net, latents(), extra_args=args(0), **kw)
    assert report.ok, str(report)
    with pytest.raises(ValueError, match=r"extra_args\['scale'\]: a value that is not a tensor is part of the "
                                         r"captured graph \(0.8\); got 0.5"):
        sampler(latents(), extra_args=dict(args(0), scale=0.5))
    with pytest.raises(ValueError, match=r"extra_args\['shift'\]: expected a torch.float32 tensor of shape \(5, 4\)"):
        sampler(latents(), extra_args=dict(args(0), shift=latents(batch=2)))
    with pytest.raises(ValueError, match="extra_args: expected the keys and nesting this sampler was captured with"):
        sampler(latents())
    plain = fastdiff.GraphedSampler(mixture(), latents(), graph="emulated", num_steps=3, backend=CPU_BACKENDS[0])
    with pytest.raises(ValueError, match="extra_args: this sampler was captured without extra_args"):
        plain(latents(), extra_args=args(0))


def test_sample_graphs_extra_args_and_guidance_by_them(emulated_graphs):
    """sample(cuda_graph=True, extra_args=...) captures once per structure of extra_args and replays new tensors;
    guidance=w with uncond_args is graphed too (the paired [cond; uncond] tensors are its inputs)."""
    net = KeywordNet()
    kw = dict(num_steps=4, backend=CPU_BACKENDS[0])
    for call in range(2):
        x0, args = latents(seed=call), dict(shift=latents(seed=10 + call))
        assert_equal(fastdiff.sample(net, x0, cuda_graph=True, extra_args=args, **kw),
                     fastdiff.sample(net, x0, extra_args=args, **kw))
        guided = dict(guidance=2.5, extra_args=args, uncond_args=dict(shift=torch.zeros(5, 4)))
        assert_equal(fastdiff.sample(net, x0, cuda_graph=True, **guided, **kw), fastdiff.sample(net, x0, **guided, **kw))
    assert len(graphed._cache) == 2
    with pytest.raises(fastdiff.CaptureError, match="extra_args: a value that is not a tensor .* must be hashable"):
        fastdiff.sample(net, latents(), cuda_graph=True, extra_args=dict(shift=latents(), scale={1.0}), **kw)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_omitted_latents_come_from_the_seeds(backend):
    """latents=None draws them in the graph as fastdiff.randn(seeds, shape) does on the same backend (offset 0)."""
    net, kw = mixture(), dict(num_steps=4, backend=backend, **CHURN)
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", **kw)
    seeds = [3, 1, 4, 1, 5]
    expected = fastdiff.sample(net, fastdiff.randn(seeds, (5, 4), backend=backend), seeds=seeds, **kw)
    assert_equal(sampler(seeds=seeds), expected)
    x0 = latents(seed=9)  # and given latents still win afterwards (the choice is a device flag, not a re-capture)
    assert_equal(sampler(x0, seeds=seeds), fastdiff.sample(net, x0, seeds=seeds, **kw))


def test_omitted_seeds_are_fresh_per_call_and_follow_torch_manual_seed():
    """Without seeds, each call draws new ones from torch's generator exactly as sample() does."""
    net, kw = mixture(), dict(num_steps=4, backend=CPU_BACKENDS[0], **CHURN)
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", **kw)
    x0 = latents(seed=2)
    torch.manual_seed(7)
    first, second = sampler(x0), sampler(x0)
    assert not torch.equal(first, second)  # the noise never repeats across replays
    torch.manual_seed(7)
    assert_equal(first, fastdiff.sample(net, x0, **kw))
    assert_equal(second, fastdiff.sample(net, x0, **kw))
    torch.manual_seed(7)
    got = sampler()  # latents too come from the fresh seeds
    torch.manual_seed(7)
    seeds = fastdiff.rng.draw_seeds(5)  # the one way fastdiff draws seeds
    assert_equal(got, fastdiff.sample(net, fastdiff.randn(seeds, (5, 4), backend=kw["backend"]), seeds=seeds, **kw))


def test_a_deterministic_plan_leaves_torchs_generator_alone():
    """Like sample(), a run without churn draws no seeds when latents are given."""
    sampler = fastdiff.GraphedSampler(mixture(), latents(), graph="emulated", num_steps=3, backend=CPU_BACKENDS[0])
    state = torch.get_rng_state()
    sampler(latents(seed=4))
    assert torch.equal(torch.get_rng_state(), state)


def test_new_noise_levels_replay_without_recapture():
    """set_plan loads another schedule of the same structure into the device tables; the replay follows it."""
    net = mixture()
    kw = dict(num_steps=5, backend=CPU_BACKENDS[0], **CHURN)
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", **kw)
    graph = sampler._graph
    other = dict(kw, sigma_max=40.0, rho=5.0)
    sampler.set_plan(fastdiff.plan_steps(net, **{k: v for k, v in other.items() if k != "backend"}))
    x0, seeds = latents(seed=3), [5, 6, 7, 8, 9]
    assert_equal(sampler(x0, seeds=seeds), fastdiff.sample(net, x0, seeds=seeds, **other))
    assert sampler._graph is graph
    with pytest.raises(ValueError, match="plan: expected a schedule with the same structure"):
        sampler.set_plan(fastdiff.plan_steps(net, num_steps=6))


def test_replays_run_no_python_and_see_parameters_changed_in_place():
    """A graph replays kernels, not the net's Python code; parameters updated in place are read at replay."""
    net = LabelledNet()
    calls = []
    original = net.forward
    net.forward = lambda *args: calls.append(1) or original(*args)
    labels = torch.tensor([2, 0, 1, 1, 2])
    kw = dict(num_steps=3, backend=CPU_BACKENDS[0])
    sampler = fastdiff.GraphedSampler(net, latents(), labels, graph="emulated", warmup=1, **kw)
    captured = len(calls)
    assert captured == 5 * 5  # warm-up, the check's two runs, warmup=1 and the capture: 5 net calls each (Heun, 3 steps)
    x0 = latents(seed=5)
    sampler(x0, class_labels=labels)
    assert len(calls) == captured
    with torch.no_grad():
        net.scale.mul_(-3.0)
    got = sampler(x0, class_labels=labels)
    assert len(calls) == captured
    del net.forward
    assert_equal(got, fastdiff.sample(net, x0, labels, **kw))


def test_nets_built_on_torch_library_ops_and_sdpa():
    """A U-Net (SDPA attention) inside EDMPrecond (fastdiff's skip_mix op) plus a torch.library custom op."""

    @torch.library.custom_op("fastdiff_test::soft_clip", mutates_args=())
    def soft_clip(x: torch.Tensor) -> torch.Tensor:
        return 3.0 * torch.tanh(x / 3.0)

    @soft_clip.register_fake
    def _(x):
        return torch.empty_like(x)

    torch.manual_seed(0)
    unet = fastdiff.nets.UNet(img_resolution=8, in_channels=2, model_channels=8, channel_mult=(1, 2), num_blocks=1,
                              attn_resolutions=(4,), channels_per_head=8)
    for p in unet.parameters():  # leave the zero initialisation, so that the net's output depends on its input
        nn.init.normal_(p, std=0.05)
    precond = fastdiff.EDMPrecond(unet, backend=CPU_BACKENDS[0]).eval()
    net = lambda x, sigma: soft_clip(precond(x, sigma))  # noqa: E731
    assert any(name.endswith("scaled_dot_product_attention") for name in dir(F))
    kw = dict(num_steps=3, backend=CPU_BACKENDS[0], **CHURN)
    x0 = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    sampler = fastdiff.GraphedSampler(net, x0, graph="emulated", **kw)
    assert sampler.report.ok, sampler.report
    seeds = [11, 12, 13]
    assert_equal(sampler(x0, seeds=seeds), fastdiff.sample(net, x0, seeds=seeds, **kw))
    assert sampler.memory["buffers"] > 0 and sampler.memory["pool"] > 0


def test_memory_is_reported():
    """buffers: the static inputs/output and the loop's two state buffers and tables; pool: the intermediates."""
    sampler = fastdiff.GraphedSampler(mixture(), latents(batch=64), graph="emulated", num_steps=4,
                                      backend=CPU_BACKENDS[0])
    state_bytes = 64 * 4 * 4
    assert sampler.memory["buffers"] >= 5 * state_bytes  # latents, start, output, state, Euler point
    assert sampler.memory["pool"] >= state_bytes  # at least the net's outputs


def test_nonfinite_values_are_reported_after_the_replay():
    def exploding(x, sigma):
        return x * float("inf")

    sampler = fastdiff.GraphedSampler(exploding, latents(), graph="emulated", num_steps=3, backend=CPU_BACKENDS[0])
    with pytest.warns(RuntimeWarning, match="non-finite values .* first appeared at step 0") as record:
        sampler(latents())
    assert record[0].filename == __file__


class SyncingNet:
    def __call__(self, x, sigma):
        if float(sigma[0]) > 1.0:  # a host sync, and a branch the graph would freeze
            return x * 0.5
        return x * 0.25


@pytest.mark.parametrize("check", [True, False])
def test_uncapturable_nets_are_refused_with_the_reason(check):
    """The checker names the sync; without it, the emulated capture itself fails on it, as a CUDA capture does."""
    with pytest.raises(fastdiff.CaptureError, match=r"Tensor.__float__ at .*test_graphed.py:\d+"):
        fastdiff.GraphedSampler(SyncingNet(), latents(), graph="emulated", check=check, num_steps=3,
                                backend=CPU_BACKENDS[0])


def test_per_call_python_values_are_refused():
    class Counting:
        calls = 0

        def __call__(self, x, sigma):
            self.calls += 1
            return x * (1.0 / (1 + self.calls))  # would be frozen at its capture-time value

    with pytest.raises(fastdiff.CaptureError, match="scalar: aten::mul"):
        fastdiff.GraphedSampler(Counting(), latents(), graph="emulated", num_steps=2, backend=CPU_BACKENDS[0])


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(randn_like=torch.randn_like), TypeError, "randn_like: not accepted by GraphedSampler"),
    (dict(callback=print), TypeError, "callback: not accepted"),
    (dict(seeds=[1] * 5), TypeError, "seeds: not accepted .* pass them to the sampler's __call__"),
    (dict(reuse_buffers=False), TypeError, "reuse_buffers: not accepted"),
    (dict(graph="cuda"), ValueError, "graph: 'cuda' needs CUDA latents, got latents_like on cpu"),
    (dict(graph="auto"), ValueError, "graph: 'auto' needs CUDA latents"),
    (dict(graph="gpu"), ValueError, "graph: expected one of 'auto', 'cuda', 'emulated', got 'gpu'"),
    (dict(graph="emulated", backend="reference"), fastdiff.CaptureError, "backend: 'reference' makes new tensors"),
    (dict(graph="emulated", warmup=0), ValueError, "warmup: expected an int >= 1"),
    (dict(graph="emulated", num_steps=0), ValueError, "num_steps: must be >= 1"),
])
def test_constructor_errors(kwargs, error, match):
    if CPU_BACKENDS:
        kwargs.setdefault("backend", CPU_BACKENDS[0])
    with pytest.raises(error, match=match):
        fastdiff.GraphedSampler(mixture(), latents(), **kwargs)


def test_call_errors():
    sampler = fastdiff.GraphedSampler(LabelledNet(), latents(), torch.zeros(5, dtype=torch.int64), graph="emulated",
                                      num_steps=2, backend=CPU_BACKENDS[0])
    labels = torch.ones(5, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"latents: expected a torch.float32 tensor of shape \(5, 4\) on cpu .* got a "
                                         r"torch.float32 tensor of shape \(4, 4\)"):
        sampler(latents(batch=4), class_labels=labels)
    with pytest.raises(ValueError, match="latents: .* got a torch.float64 tensor"):
        sampler(latents(dtype=torch.float64), class_labels=labels)
    with pytest.raises(ValueError, match="class_labels: this sampler was captured with labels"):
        sampler(latents())
    with pytest.raises(ValueError, match="seeds: expected 5 seeds"):
        sampler(latents(), seeds=[1, 2], class_labels=labels)
    unlabelled = fastdiff.GraphedSampler(mixture(), latents(), graph="emulated", num_steps=2, backend=CPU_BACKENDS[0])
    with pytest.raises(ValueError, match="class_labels: this sampler was captured without labels"):
        unlabelled(latents(), class_labels=labels)


# sample(cuda_graph=...)

def test_sample_cuda_graph_on_cpu():
    """True refuses CPU latents; "auto" samples eagerly; anything else is an error."""
    net, x0, kw = mixture(), latents(), dict(num_steps=3, seeds=[1, 2, 3, 4, 5], **CHURN)
    with pytest.raises(fastdiff.CaptureError, match="cuda_graph=True: CUDA graphs need CUDA latents, got latents on cpu"):
        fastdiff.sample(net, x0, cuda_graph=True, **kw)
    assert_equal(fastdiff.sample(net, x0, cuda_graph="auto", **kw), fastdiff.sample(net, x0, **kw))
    with pytest.raises(ValueError, match="cuda_graph: expected True, False or 'auto', got 'yes'"):
        fastdiff.sample(net, x0, cuda_graph="yes", **kw)


def test_sample_reuses_cached_graphs(emulated_graphs):
    """One capture per (net, shape, dtype, schedule structure, ...); new noise levels reuse it; results equal eager."""
    net = mixture()
    kw = dict(num_steps=4, backend=CPU_BACKENDS[0], **CHURN)
    for call, sigma_max in enumerate([80.0, 80.0, 60.0]):
        x0, seeds = latents(seed=call), [call, 1, 2, 3, 4]
        got = fastdiff.sample(net, x0, seeds=seeds, sigma_max=sigma_max, cuda_graph=True, **kw)
        assert_equal(got, fastdiff.sample(net, x0, seeds=seeds, sigma_max=sigma_max, **kw))
        assert len(graphed._cache) == 1
    fastdiff.sample(net, latents(batch=3), cuda_graph=True, **kw)  # another shape: another graph
    fastdiff.sample(net, latents(), cuda_graph=True, **dict(kw, num_steps=5))  # another structure: another graph
    assert len(graphed._cache) == 3


def test_checked_and_planned_once(emulated_graphs, monkeypatch):
    """GraphedSampler checks the call's tensors and makes its plan once; so does each sample(cuda_graph=True) call,
    the one that captures included (it hands its checked plan to the sampler it builds). Unknown settings are named."""
    import fastdiff.sampling.loop as loop_module

    counts = {"check_call": 0, "make_plan": 0}
    for name in counts:
        real = getattr(loop_module, name)

        def counted(*args, name=name, real=real):
            counts[name] += 1
            return real(*args)

        monkeypatch.setattr(loop_module, name, counted)
    kw = dict(num_steps=3, backend=CPU_BACKENDS[0], **CHURN)
    fastdiff.GraphedSampler(mixture(), latents(), graph="emulated", **kw)
    assert counts == {"check_call": 1, "make_plan": 1}
    for call in (1, 2):  # a capture, then a cached replay
        fastdiff.sample(mixture(), latents(), seeds=[1, 2, 3, 4, 5], cuda_graph=True, **kw)
        assert counts == {"check_call": 1 + call, "make_plan": 1 + call}
    with pytest.raises(TypeError, match="num_stepz: not a sampler setting"):
        fastdiff.GraphedSampler(mixture(), latents(), graph="emulated", num_stepz=3)


def test_auto_falls_back_with_one_logged_reason(emulated_graphs, caplog):
    net, x0, kw = SyncingNet(), latents(), dict(num_steps=3, seeds=[1, 2, 3, 4, 5], backend=CPU_BACKENDS[0])
    with caplog.at_level(logging.INFO, logger="fastdiff"):
        for _ in range(3):
            assert_equal(fastdiff.sample(net, x0, cuda_graph="auto", **kw), fastdiff.sample(net, x0, **kw))
    reasons = [r.getMessage() for r in caplog.records if "without a CUDA graph" in r.getMessage()]
    assert len(reasons) == 1 and "Tensor.__float__" in reasons[0], reasons
    with pytest.raises(fastdiff.CaptureError, match="(?s)cuda_graph=True: not capture-safe.*Tensor.__float__"):
        fastdiff.sample(net, x0, cuda_graph=True, **kw)
    with pytest.raises(fastdiff.CaptureError, match="cuda_graph=True: randn_like: a Python noise function"):
        fastdiff.sample(mixture(), x0, randn_like=torch.randn_like, num_steps=2, cuda_graph=True)
    assert_equal(fastdiff.sample(mixture(), x0, callback=lambda d: None, cuda_graph="auto", **kw),
                 fastdiff.sample(mixture(), x0, **kw))


# Calls from several threads.

THREADS, CALLS = 4, 10


@pytest.fixture
def frequent_thread_switches():
    """Switch threads every microsecond (Python's default is 5 ms), so that concurrent calls interleave inside one
    another, the way they do when replays are longer or there are more threads."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def run_in_threads(call):
    """call(thread, index) from THREADS threads, CALLS times each, all started together; the results by (thread,
    index), and the first exception raised in a thread, re-raised here."""
    results, errors = {}, []
    barrier = threading.Barrier(THREADS)

    def worker(thread):
        try:
            barrier.wait()
            for index in range(CALLS):
                results[thread, index] = call(thread, index)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def thread_inputs(thread, index):
    """Latents and seeds of one call: different for every call, so that a call that sees another's gives another result."""
    call = thread * CALLS + index
    return latents(seed=100 + call), [1000 * call + b for b in range(5)]


def assert_every_call_equals_eager(results, expected):
    wrong = [key for key in expected if not torch.equal(results[key], expected[key])]
    assert not wrong, f"{len(wrong)} of {len(expected)} calls differ from eager sampling, first {wrong[0]}"
    for key in expected:
        assert_equal(results[key], expected[key], name=f"thread {key[0]} call {key[1]}")


def test_a_sampler_called_from_several_threads_equals_eager_sampling(frequent_thread_switches):
    """4 threads x 10 calls of one GraphedSampler: every call equals fastdiff.sample of its own inputs bit for bit
    (the calls take turns on the graph's buffers; without the lock, they read one another's inputs)."""
    net, kw = mixture(), dict(num_steps=6, backend=CPU_BACKENDS[0], **CHURN)
    sampler = fastdiff.GraphedSampler(net, latents(), graph="emulated", **kw)
    expected = {}
    for thread in range(THREADS):
        for index in range(CALLS):
            x0, seeds = thread_inputs(thread, index)
            expected[thread, index] = fastdiff.sample(net, x0, seeds=seeds, **kw)

    def call(thread, index):
        x0, seeds = thread_inputs(thread, index)
        return sampler(x0, seeds=seeds)

    assert_every_call_equals_eager(run_in_threads(call), expected)


def test_sample_cuda_graph_from_several_threads_equals_eager_sampling(emulated_graphs, frequent_thread_switches):
    """4 threads x 10 calls of sample(cuda_graph=True), each thread with its own noise levels (sigma_max), so that
    the threads share one cached graph but load other tables into it: every call equals eager sampling bit for bit,
    and there is one capture."""
    net, kw = mixture(), dict(num_steps=6, backend=CPU_BACKENDS[0], **CHURN)
    sigma_max = [80.0, 60.0, 40.0, 35.0]
    expected = {}
    for thread in range(THREADS):
        for index in range(CALLS):
            x0, seeds = thread_inputs(thread, index)
            expected[thread, index] = fastdiff.sample(net, x0, seeds=seeds, sigma_max=sigma_max[thread], **kw)

    def call(thread, index):
        x0, seeds = thread_inputs(thread, index)
        return fastdiff.sample(net, x0, seeds=seeds, sigma_max=sigma_max[thread], cuda_graph=True, **kw)

    assert_every_call_equals_eager(run_in_threads(call), expected)
    assert len(graphed._cache) == 1


# Real CUDA graphs (skipped without a GPU).

CUDA_BACKENDS = ["cuda", "triton"] if torch.cuda.is_available() else []


@cuda
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_cuda_graph_replays_equal_eager_sampling(backend, solver):
    if backend == "cuda" and fastdiff.ops.backends.install_reasons("cuda"):
        pytest.skip("the CUDA extension is not built: " + "; ".join(fastdiff.ops.backends.install_reasons("cuda")))
    net = LabelledNet().cuda()
    kw = dict(num_steps=6, solver=solver, backend=backend, **CHURN)
    labels = torch.tensor([0, 1, 2, 1, 0], device="cuda")
    sampler = fastdiff.GraphedSampler(net, latents().cuda(), labels, graph="cuda", **kw)
    assert sampler.graph_kind == "cuda"
    for call in range(3):
        x0, seeds = latents(seed=call).cuda(), [call, 7, 8, 9, 10]
        assert_equal(sampler(x0, seeds=seeds, class_labels=labels),
                     fastdiff.sample(net, x0, labels, seeds=seeds, **kw))


@cuda
def test_cuda_graph_is_one_launch_without_syncs():
    """A call is input copies plus one graph launch, and (with nonfinite="ignore") no synchronisation."""
    from torch.profiler import ProfilerActivity, profile

    net = fastdiff.EDMPrecond(fastdiff.nets.UNet(img_resolution=16, in_channels=3, model_channels=16,
                                                 channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,))).cuda().eval()
    x0 = torch.randn(2, 3, 16, 16, device="cuda")
    sampler = fastdiff.GraphedSampler(net, x0, graph="cuda", num_steps=8, nonfinite="ignore", **CHURN)
    seeds = torch.tensor([1, 2], device="cuda")  # a host list would be a blocking host-to-device copy
    sampler(x0, seeds=seeds)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        sampler(x0, seeds=seeds)
    names = [e.name for e in prof.events()]
    assert sum(name == "cudaGraphLaunch" for name in names) == 1
    assert not [n for n in names if n in ("cudaLaunchKernel", "cuLaunchKernel")][2:]  # at most the flag fill (+copy)
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises (the profiler's own exit syncs)
    try:
        sampler(x0, seeds=seeds)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_sample_cuda_graph_auto_on_cuda():
    graphed.clear_cache()
    net, x0 = LabelledNet().cuda(), latents().cuda()
    kw = dict(num_steps=4, seeds=[1, 2, 3, 4, 5], **CHURN)
    assert_equal(fastdiff.sample(net, x0, cuda_graph="auto", **kw), fastdiff.sample(net, x0, **kw))
    assert len(graphed._cache) == 1 and isinstance(next(iter(graphed._cache.values()))[2], fastdiff.GraphedSampler)
    graphed.clear_cache()


def test_cache_recaptures_when_the_net_changes(emulated_graphs):
    """A replaced parameter or another training mode changes what a graph would read: the cache captures again
    instead of replaying stale addresses or branches; an unchanged net reuses its graph."""
    net = LabelledNet()
    kw = dict(num_steps=3, seeds=[1, 2, 3, 4, 5], backend=CPU_BACKENDS[0])
    labels = torch.tensor([0, 1, 2, 1, 0])
    fastdiff.sample(net, latents(), labels, cuda_graph=True, **kw)
    first = next(iter(graphed._cache.values()))[2]
    fastdiff.sample(net, latents(), labels, cuda_graph=True, **kw)
    assert next(iter(graphed._cache.values()))[2] is first
    net.scale = nn.Parameter(torch.tensor(-2.0))  # a new tensor: a CUDA graph would still read the old address
    got = fastdiff.sample(net, latents(), labels, cuda_graph=True, **kw)
    assert next(iter(graphed._cache.values()))[2] is not first
    assert_equal(got, fastdiff.sample(net, latents(), labels, **kw))
    net.train()
    fastdiff.sample(net, latents(), labels, cuda_graph=True, **kw)
    assert len(graphed._cache) == 1  # the same key, recaptured


def test_sample_cuda_graph_warnings_name_the_caller(emulated_graphs):
    def exploding(x, sigma):
        return x * float("inf")

    with pytest.warns(RuntimeWarning, match="non-finite") as record:
        fastdiff.sample(exploding, latents(), num_steps=2, backend=CPU_BACKENDS[0], cuda_graph=True)
    assert record[0].filename == __file__


def test_enclosing_autocast_is_refused():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(fastdiff.CaptureError, match=r"autocast: a torch.autocast\('cpu'\) region encloses"):
            fastdiff.GraphedSampler(mixture(), latents(), graph="emulated", num_steps=2, backend=CPU_BACKENDS[0])
        with pytest.raises(fastdiff.CaptureError, match="autocast"):
            fastdiff.check_capture(mixture(), latents(), num_steps=2)


def test_empty_latents_sample():
    """A batch of empty samples (zero elements each) samples to an empty result; the non-finite check skips it."""
    out = fastdiff.sample(lambda x, sigma: x, torch.zeros(2, 0), num_steps=2)
    assert out.shape == (2, 0)
