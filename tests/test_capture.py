"""fastdiff.check_capture and fastdiff.sampling.capture.EmulatedGraph (issue 6).

check_capture runs the sampler's own loop twice on the CPU and must pass every solver and backend, and catch each
kind of violation when one is planted: in the net (host syncs, host data, tensors of another device, per-call Python
scalars, shapes and branches) and in the sampler (per-step values built from the host plan, allocations that bypass
the fixed buffers). EmulatedGraph must replay recorded ops without the Python code, as a CUDA graph does.

Planted violations are located by a marker comment at the end of their line, so the tests can check that each
report points at the very line that does the harm.
"""
import io
import math
from pathlib import Path

import pytest
import torch

import fastdiff
import fastdiff.sampling.loop
from fastdiff.sampling.capture import KINDS, CaptureError, EmulatedGraph, Violation
from fastdiff.testing import assert_equal

LATENTS = fastdiff.randn(list(range(5)), (5, 2, 3))  # float32: a state dtype the fused backends take
SEEDS = [1, 2, 3, 4, 5]
LABELS = torch.arange(5)
CHURN = dict(S_churn=20.0, S_min=0.1, S_max=30.0)  # with 6 steps: noise at steps 1, 2, 3 only (t = 80 is above S_max)
FUSED = ("cpu", "triton")
NAMESPACES = {"cpu": "fastdiff", "cuda": "fastdiff", "triton": "fastdiff_triton"}  # each backend's op library

_THIS = Path(__file__)
_SOURCE = _THIS.read_text().splitlines()
_FASTDIFF = Path(fastdiff.__file__).parent


def mixture_net(dim=6):
    """An exact denoiser for a 6-D mixture, taking (x, sigma[, labels]) with any batch shape [B, 2, 3]."""
    gm = fastdiff.GaussianMixture(torch.linspace(-1, 1, 3 * dim).reshape(3, dim), [0.3, 0.5, 0.2], [0.5, 0.3, 0.2])
    return lambda x, sigma, labels=None: gm(x, sigma)


def labelled_net():
    """A net whose output depends on its (integer) class labels."""
    base = mixture_net()
    return lambda x, sigma, labels: base(x, sigma) + 1e-3 * labels.to(x.dtype).reshape(-1, 1, 1)


BASE = mixture_net()


def simple_net(x, sigma):
    """Exactly three kernels per call: pow, add, div (the reshape is a view)."""
    return x / (1 + sigma.reshape(-1, 1, 1) ** 2)


def line_of(marker: str, source=None) -> int:
    """The line number of the one line ending with the comment `# <marker>` (in this file unless source is given)."""
    lines = _SOURCE if source is None else source
    found = [n for n, line in enumerate(lines, 1) if line.rstrip().endswith(f"# <{marker}>")]
    assert len(found) == 1, f"marker {marker!r} found on lines {found}"
    return found[0]


def here(marker: str, function: str) -> str:
    """What a Violation's `where` says for the marked line of this file, inside `function`."""
    return f"tests/{_THIS.name}:{line_of(marker)} ({function})"


def fastdiff_line(module: str, text: str, function: str) -> str:
    """What a Violation's `where` says for the one line of fastdiff/<module> containing `text` (fastdiff's own files
    are named by their path in the package, as capture._where does)."""
    lines = (_FASTDIFF / module).read_text().splitlines()
    found = [n for n, line in enumerate(lines, 1) if text in line]
    assert len(found) == 1, f"{text!r} found on lines {found} of {module}"
    return f"fastdiff/{module}:{found[0]} ({function})"


def check(net, latents=LATENTS, class_labels=None, **kwargs):
    kwargs.setdefault("backend", "cpu")
    kwargs.setdefault("num_steps", 3)
    if kwargs.get("randn_like") is None:
        kwargs.setdefault("seeds", SEEDS)
    return fastdiff.check_capture(net, latents, class_labels, **kwargs)


def kinds(report):
    return {v.kind for v in report.violations}


# --------------------------------------------------------------------------------------------- clean loops pass

@pytest.mark.parametrize("nonfinite", ["warn", "ignore"])
@pytest.mark.parametrize("labelled", [False, True], ids=["unlabelled", "labelled"])
@pytest.mark.parametrize("churn", [CHURN, dict(S_churn=0.0)], ids=["churn", "no-churn"])
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_every_solver_and_fused_backend_is_capture_safe(solver, backend, churn, labelled, nonfinite):
    """The sampler's loop on fixed buffers passes, with and without churn, labels and the non-finite check."""
    net, labels = (labelled_net(), LABELS) if labelled else (mixture_net(), None)
    report = check(net, LATENTS, labels, seeds=SEEDS, num_steps=6, solver=solver, backend=backend,
                   nonfinite=nonfinite, **churn)
    assert report.ok, str(report)
    assert report.violations == []
    assert len(report.kernels_per_step) == 6


def test_fastdiff_nets_under_a_preconditioner_are_capture_safe():
    """A real net (fastdiff.nets.MLP, in training mode with label dropout) under EDMPrecond, labels given."""
    torch.manual_seed(0)
    model = fastdiff.nets.MLP(dim=6, hidden=16, depth=2, embedding_dim=8, num_classes=4, label_dropout=0.3)
    torch.nn.init.normal_(model.fc_out.weight)  # not the zero init, so the net's output matters
    net = fastdiff.EDMPrecond(model, backend="cpu")
    flat = LATENTS.reshape(5, 6)
    report = fastdiff.check_capture(net, flat, torch.tensor([0, 3, 1, 2, 0]), seeds=SEEDS, num_steps=4,
                                    backend="cpu", **CHURN)
    assert report.ok, str(report)


@pytest.mark.parametrize("backend", FUSED)
def test_float64_state_has_no_fused_backend(backend):
    """A float64 state cannot run the fused kernels: asked for by name they refuse (for float64 latents and for
    dtype=torch.float64 alike), and "auto" takes the reference path, whose per-step allocations are reported."""
    for latents, dtype in ((LATENTS.double(), None), (LATENTS, torch.float64)):
        with pytest.raises(fastdiff.BackendUnavailableError, match=f"backend='{backend}' cannot run: the fused kernels "
                                                                   "compute in float32 .* got torch.float64"):
            check(mixture_net(), latents, backend=backend, dtype=dtype)
    report = check(mixture_net(), LATENTS.double(), backend="auto", **CHURN)
    assert not report.ok and kinds(report) == {"allocation"}
    assert all(not v.in_net for v in report.violations)


def test_report_after_a_clean_check():
    """A clean report says so, counts its steps, and raise_if_unsafe does nothing."""
    report = check(mixture_net(), num_steps=6, **CHURN)
    assert report.ok
    assert str(report) == "capture-safe (6 steps checked over two calls)"
    assert report.raise_if_unsafe() is None


# -------------------------------------------------------------------------------- what each call of the loop sees

def test_the_two_calls_differ_in_every_input():
    """The second call gets negated latents, other seeds, rolled labels and the schedule scaled by 3/4; the net is
    evaluated at the same places in both."""
    seen = []

    def recording_net(x, sigma, labels):
        seen.append((x.clone(), sigma.clone(), labels.clone()))  # clones: the loop's buffers are overwritten later
        return BASE(x, sigma)

    plan = fastdiff.plan_steps(num_steps=3, solver="euler")
    report = check(recording_net, LATENTS, LABELS, num_steps=3, solver="euler")
    assert report.ok
    assert len(seen) == 3 * 3  # an untraced warm-up run, then the two traced calls
    first, second = seen[3:6], seen[6:]
    assert_equal(first[0][0], LATENTS * plan.t[0])  # no churn at step 0: the net sees the scaled latents
    assert_equal(second[0][0], -LATENTS * (plan.t[0] * 0.75))
    for i in range(3):
        assert_equal(first[i][1], torch.full((5,), plan.t_hat[i], dtype=torch.float32))
        assert_equal(second[i][1], torch.full((5,), plan.t_hat[i] * 0.75, dtype=torch.float32))
        assert_equal(first[i][2], LABELS)
        assert_equal(second[i][2], LABELS.roll(1, 0))


# ------------------------------------------------------------------------------------- kernels per step, counted

@pytest.mark.parametrize("backend", FUSED)
def test_kernels_per_step_heun_with_churn(backend):
    """Heun with churn on fixed buffers: a step with noise and a correction runs churn_out, euler_step_out,
    heun_step_out and aminmax (the non-finite check), 4 sampler kernels; a step without noise 3; the last step
    (Euler: no correction) 2. The net's 3 kernels count once per evaluation. nonfinite="ignore" drops aminmax."""
    plan = fastdiff.plan_steps(num_steps=6, solver="heun", **CHURN)
    assert [std > 0 for std in plan.noise_std] == [False, True, True, True, False, False]
    assert plan.correct == (True,) * 5 + (False,)
    report = check(simple_net, num_steps=6, solver="heun", backend=backend, **CHURN)
    assert report.ok
    assert report.kernels_per_step == [(3, 6), (4, 6), (4, 6), (4, 6), (3, 6), (2, 3)]
    report = check(simple_net, num_steps=6, solver="heun", backend=backend, nonfinite="ignore", **CHURN)
    assert report.ok
    assert report.kernels_per_step == [(2, 6), (3, 6), (3, 6), (3, 6), (2, 6), (1, 3)]


@pytest.mark.parametrize("nonfinite", ["warn", "ignore"])
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_kernels_per_step_follow_the_plan(solver, nonfinite):
    """Sampler kernels: churn where noise is added, the Euler step, Heun's step where it corrects, aminmax unless
    ignored; net kernels: 3 per evaluation, two evaluations where Heun corrects."""
    settings = dict(num_steps=7, S_churn=30.0, S_min=0.05, S_max=10.0, solver=solver)
    plan = fastdiff.plan_steps(**settings)
    report = check(simple_net, nonfinite=nonfinite, **settings)
    check_kernel = nonfinite != "ignore"
    want = [((std > 0) + 1 + correct + check_kernel, 3 * (1 + correct)) for std, correct in zip(plan.noise_std, plan.correct)]
    assert report.kernels_per_step == want


def test_sampler_kernels_are_the_fused_out_ops():
    """The 4 sampler kernels of a churn + Heun step are exactly churn_out, euler_step_out, heun_step_out, aminmax
    (counted here independently of check_capture, by running the loop under a dispatch mode)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    views = {"aten::select", "aten::view", "aten::detach", "aten::alias", "aten::slice"}
    per_step, state = [], {"in_net": False}

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not state["in_net"] and func._schema.name not in views and per_step:
                per_step[-1].append(func._schema.name)
            return func(*args, **(kwargs or {}))

    def net(x, sigma):
        state["in_net"] = True
        try:
            return simple_net(x, sigma)
        finally:
            state["in_net"] = False

    options = fastdiff.sampling.SampleOptions(num_steps=6, backend="cpu", reuse_buffers=True, **CHURN)
    loop, seeds = fastdiff.sampling.loop.build_loop(net, LATENTS, seeds=SEEDS, options=options)
    loop.on_step = lambda i: per_step.append([])
    with torch.no_grad(), Recorder():
        loop.run(LATENTS, seeds)
    noisy = ["fastdiff::churn_out", "fastdiff::euler_step_out", "fastdiff::heun_step_out", "aten::aminmax"]
    assert per_step[1] == per_step[2] == per_step[3] == noisy
    assert per_step[0] == per_step[4] == noisy[1:]
    assert per_step[5] == ["fastdiff::euler_step_out", "aten::aminmax"]
    report = check(simple_net, num_steps=6, **CHURN)
    assert per_step[6] == []  # on_step(N) marks the loop's end; a float32 result needs no conversion after it
    assert [k for k, _ in report.kernels_per_step] == [len(names) for names in per_step[:6]]


# --------------------------------------------------------------------------------- allocations in the sampler

def test_reference_backend_only_allocates():
    """The reference path makes new tensors every step: only allocations are reported, all in the sampler (the
    reference ops and the generator), each first seen at step 1; no sync, no host data, no Python scalar."""
    for solver in ("euler", "heun"):
        report = check(mixture_net(), num_steps=6, solver=solver, backend="reference", **CHURN)
        assert not report.ok
        assert kinds(report) == {"allocation"}
        assert all(not v.in_net and v.step == 1 for v in report.violations)
        places = {v.where.split(":")[0] for v in report.violations}
        assert {"fastdiff/ops/reference/churn.py", "fastdiff/ops/reference/euler_step.py", "fastdiff/rng.py"} <= places
        assert ("fastdiff/ops/reference/heun_step.py" in places) == (solver == "heun")
    report = check(mixture_net(), num_steps=4, backend="reference", S_churn=0.0)
    assert kinds(report) == {"allocation"}
    assert {v.where.split(":")[0] for v in report.violations} == {"fastdiff/ops/reference/euler_step.py", "fastdiff/ops/reference/heun_step.py"}


@pytest.mark.parametrize("backend", FUSED)
def test_functional_fused_ops_allocate_each_step(backend):
    """Without reuse_buffers the fused backend runs its functional ops: they, and only they, are the allocations,
    once per step from step 1 on (in each of the two calls)."""
    plan = fastdiff.plan_steps(num_steps=6, **CHURN)
    report = check(mixture_net(), num_steps=6, backend=backend, reuse_buffers=False, **CHURN)
    assert kinds(report) == {"allocation"}
    assert all(not v.in_net and v.step == 1 for v in report.violations)
    counts = {v.op: v.count for v in report.violations}
    prefix = f"{NAMESPACES[backend]}::"
    assert counts == {
        prefix + "churn": 2 * sum(std > 0 for std in plan.noise_std[1:]),
        prefix + "euler_step": 2 * (plan.num_steps - 1),
        prefix + "heun_step": 2 * sum(plan.correct[1:]),
    }
    assert counts == {prefix + "churn": 6, prefix + "euler_step": 10, prefix + "heun_step": 8}
    assert not any(op.endswith("_out") for op in counts)


def test_callback_disables_buffer_reuse_and_a_reading_callback_syncs():
    """A callback must see tensors that never change, so the loop allocates; one that reads a value syncs."""

    def read_x(d):
        return float(d["x"].sum())  # <callback>

    report = check(mixture_net(), num_steps=3, callback=read_x)
    assert kinds(report) == {"sync", "allocation"}
    syncs = [v for v in report.violations if v.kind == "sync"]
    assert syncs == [Violation("sync", "Tensor.__float__", here("callback", "read_x"), 0, False, "", 2 * 3)]


def test_randn_like_allocates_every_step():
    """A randn_like (torch.randn_like) is fine for a CUDA graph's generator, but its noise, and x + std * noise, are
    new tensors every step: allocations in the sampler, and nothing else (the std is a view of a device table)."""
    plan = fastdiff.plan_steps(num_steps=4)
    where = fastdiff_line("sampling/loop.py", "x_hat = x_cur + noise_std * check_noise(", "run")
    for churn in (CHURN, dict(S_churn=0.0)):  # randn_like is called on every step, with or without churn
        report = check(mixture_net(), num_steps=4, randn_like=torch.randn_like, **churn)
        want = [Violation("allocation", op, where, 1, False, "", 2 * (plan.num_steps - 1))
                for op in ("aten::randn_like", "aten::mul", "aten::add")]
        assert report.violations == want


# ------------------------------------------------------------------------------------ planted in the net: syncs

def sync_item(x, sigma):
    sigma.max().item()  # <item>
    return BASE(x, sigma)


def sync_float(x, sigma):
    float(sigma[0])  # <float>
    return BASE(x, sigma)


def sync_bool(x, sigma):
    bool((x > 0).any())  # <bool>
    return BASE(x, sigma)


def sync_if(x, sigma):
    if x.sum() > 0:  # <if>
        pass
    return BASE(x, sigma)


def sync_tolist(x, sigma):
    sigma.tolist()  # <tolist>
    return BASE(x, sigma)


def sync_numpy(x, sigma):
    sigma.numpy()  # <numpy>
    return BASE(x, sigma)


def sync_format(x, sigma):
    f"{sigma[0]:.3f}"  # <format>
    return BASE(x, sigma)


def sync_nonzero(x, sigma):
    torch.nonzero(x)  # <nonzero>
    return BASE(x, sigma)


def sync_mask(x, sigma):
    x[x > 0]  # <mask>
    return BASE(x, sigma)


DATA_DEPENDENT = "its output's shape depends on tensor values"


@pytest.mark.parametrize("net,op,marker,detail", [
    (sync_item, "Tensor.item", "item", ""),
    (sync_float, "Tensor.__float__", "float", ""),
    (sync_bool, "Tensor.__bool__", "bool", ""),
    (sync_if, "Tensor.__bool__", "if", ""),
    (sync_tolist, "Tensor.tolist", "tolist", ""),
    (sync_numpy, "Tensor.numpy", "numpy", ""),
    (sync_format, "Tensor.__format__", "format", ""),
    (sync_nonzero, "aten::nonzero", "nonzero", DATA_DEPENDENT),
    (sync_mask, "aten::index", "mask", DATA_DEPENDENT),
], ids=lambda v: v if isinstance(v, str) else None)
def test_sync_in_the_net_is_caught(net, op, marker, detail):
    """Each way of reading a device value on the host is one sync violation, in the net, first at step 0, at the
    planted line, once per net evaluation of both calls (heun, 3 steps: 5 evaluations per call), and nothing else."""
    report = check(net, num_steps=3, solver="heun", **CHURN)
    assert report.violations == [Violation("sync", op, here(marker, net.__name__), 0, True, detail, 2 * 5)]


def test_printing_a_tensor_is_caught():
    """print(tensor) formats its values on the host."""
    sink = io.StringIO()

    def printing_net(x, sigma):
        print(sigma, file=sink)  # <print>
        return BASE(x, sigma)

    report = check(printing_net, num_steps=2, solver="euler")
    assert Violation("sync", "Tensor.__repr__", here("print", "printing_net"), 0, True, "", 2 * 2) in report.violations
    assert all(v.kind != "sync" or v.op == "Tensor.__repr__" for v in report.violations)  # the nested item()s are not
    assert sink.getvalue().count("tensor(") == 6  # the warm-up run prints too


# --------------------------------------------------------------------- planted in the net: host data and devices

def host_data_net(x, sigma):
    return BASE(x, sigma) * torch.tensor([1.0])  # <host data>


def other_device_net(x, sigma):
    torch.ones(2, device="meta") * 2  # <meta>
    return BASE(x, sigma)


def test_host_data_in_the_net_is_caught():
    """torch.tensor(host data) on every call is a host-to-device copy per call."""
    report = check(host_data_net, num_steps=3)
    assert report.violations == [Violation("host data", "aten::lift_fresh", here("host data", "host_data_net"), 0,
                                           True, "", 2 * 5)]


def test_tensors_of_another_device_are_caught():
    """Ops on a tensor of another device than the loop's (here "meta"; a CPU tensor in a CUDA loop alike)."""
    report = check(other_device_net, num_steps=3)
    where, detail = here("meta", "other_device_net"), "a tensor on meta, the loop runs on cpu"
    assert report.violations == [Violation("host tensor", op, where, 0, True, detail, 2 * 5)
                                 for op in ("aten::ones", "aten::mul")]


# ------------------------------------------------- planted in the net: scalars, branches, shapes between calls

class CountingNet:
    """Scales its input by a Python number that changes on every call."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma):
        self.calls += 1
        return BASE(x * (1 + 1e-3 * self.calls), sigma)  # <scalar>


class LazyNet:
    """Makes a buffer on its first call only."""

    def __init__(self):
        self.offset = None

    def __call__(self, x, sigma):
        if self.offset is None:
            self.offset = torch.zeros(x.shape[1:])  # <lazy>
        return BASE(x, sigma) + self.offset


class FlipNet:
    """Runs an extra op on every other call."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma):
        self.calls += 1
        if self.calls % 2 == 0:  # the traced calls are the 4th to 6th and 7th to 9th evaluations (Euler, 3 steps)
            x = x.clone()  # <flip>
        return BASE(x, sigma)


class VaryingShapeNet:
    """Makes a temporary whose size depends on a per-call Python number (the output keeps its shape)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma):
        self.calls += 1
        return BASE(x, sigma) + torch.zeros(1 + self.calls % 2).sum()  # <shape>


def test_per_call_python_scalar_is_caught():
    """A Python number that differs between calls reaches aten::mul: a graph would replay the first call's."""
    report = check(CountingNet(), num_steps=3, solver="heun")
    where = here("scalar", "__call__")
    assert {(v.kind, v.op, v.where) for v in report.violations} == {("scalar", "aten::mul", where)}
    assert sum(v.count for v in report.violations) == 5  # each of the 5 evaluations got another number
    first = report.violations[0]
    assert first.detail == "1.006 in one call, 1.011 in the other"  # calls 6 and 11: 5 evaluations warm up first


def test_first_call_only_setup_is_warmed_up():
    """Lazy initialisation runs ops in the first call only; the untraced warm-up run does it, as a graph's warm-up
    would before capture, so it is not held against the net."""
    net = LazyNet()
    assert check(net, num_steps=3).ok
    assert net.offset is not None


def test_branch_on_a_per_call_flag_is_control_flow():
    """A branch on a flag flipped per evaluation is caught when the two sampling calls see different flags (an odd
    number of evaluations per call), and rightly passes when each call runs the same sequence (an even number:
    a graph replays exactly what eager would run)."""
    report = check(FlipNet(), num_steps=3, solver="euler")
    assert [(v.kind, v.op, v.where) for v in report.violations] == [
        ("control flow", "aten::clone", here("flip", "__call__"))]
    assert check(FlipNet(), num_steps=4, solver="euler").ok


def test_shapes_that_differ_between_calls_are_caught():
    """A temporary sized by a per-call number: the size reaching aten::zeros is a scalar, and the op that takes
    the temporary (sum) gets tensors whose shape differs between calls."""
    report = check(VaryingShapeNet(), num_steps=3, solver="euler")
    where = here("shape", "__call__")
    assert {(v.kind, v.op, v.where) for v in report.violations} == {
        ("scalar", "aten::zeros", where), ("dynamic shape", "aten::sum", where)}
    shape_changes = [v for v in report.violations if v.kind == "dynamic shape"]
    assert {v.detail for v in shape_changes} <= {"[2] in one call, [1] in the other", "[1] in one call, [2] in the other"}
    assert shape_changes[0].detail == "[1] in one call, [2] in the other"  # evaluations 4 and 7: 1, then 2
    assert sum(v.count for v in shape_changes) == 3  # every evaluation's temporary differs between the calls


def test_call_comparison_violations_name_their_step_and_the_net():
    """Violations found by comparing the two calls carry the step and side of the first call's op: a per-call scalar
    in the net at step 0 is "in the net, step 0", not "in the sampler, before the first step"; so are branches."""
    report = check(CountingNet(), num_steps=3, solver="heun")
    first = report.violations[0]
    assert (first.step, first.in_net) == (0, True)
    assert "(in the net, step 0" in str(first)
    flip = check(FlipNet(), num_steps=3, solver="euler").violations[0]
    assert (flip.kind, flip.step, flip.in_net) == ("control flow", 0, True)


# ------------------------------------------------------------------------------------- planted in the sampler

def test_step_value_made_from_the_host_plan_is_caught(monkeypatch):
    """t_hat made each step with torch.full from the plan's Python float: the fill value differs between the calls
    (the second's schedule is scaled), and the new tensor is an allocation from step 1 on."""
    real = fastdiff.sampling.loop.SamplingLoop.step_values

    def full_t_hat(self, i):
        offset, noise_std, t_hat, t_next, sigma_hat, sigma_next = real(self, i)
        t_hat = torch.full((), self.plan.t_hat[i], dtype=self.state_dtype, device=self.device)  # <full>
        return offset, noise_std, t_hat, t_next, sigma_hat, sigma_next

    monkeypatch.setattr(fastdiff.sampling.loop.SamplingLoop, "step_values", full_t_hat)
    report = check(mixture_net(), num_steps=4, solver="euler")
    where = here("full", "full_t_hat")
    assert kinds(report) == {"scalar", "allocation"}
    assert [v for v in report.violations if v.kind == "allocation"] == [
        Violation("allocation", "aten::full", where, 1, False, "", 2 * 3)]
    scalars = [v for v in report.violations if v.kind == "scalar"]
    assert {(v.op, v.where) for v in scalars} == {("aten::full", where)}
    assert sum(v.count for v in scalars) == 4  # every step's t_hat differs between the calls
    assert any(v.detail == "80.0 in one call, 60.0 in the other" for v in scalars)
    assert (scalars[0].step, scalars[0].in_net) == (0, False)  # step 0's t_hat, made in the sampler


def test_plan_float_reaching_an_op_is_caught(monkeypatch):
    """The plan's noise std as a Python float: in x + std * randn_like(x) it is a scalar that differs between calls
    (on the steps that add noise); given to a fused op, which the loop calls directly (fastdiff.ops.bound), it is
    refused outright, naming the argument: the registered ops take tensors only, so no plan float can be baked into
    a kernel launch."""
    real = fastdiff.sampling.loop.SamplingLoop.step_values

    def float_noise_std(self, i):
        offset, noise_std, *rest = real(self, i)
        return (offset, self.plan.noise_std[i], *rest)

    monkeypatch.setattr(fastdiff.sampling.loop.SamplingLoop, "step_values", float_noise_std)
    plan = fastdiff.plan_steps(num_steps=4, **CHURN)
    noisy = [i for i, std in enumerate(plan.noise_std) if std > 0]
    assert noisy and noisy[0] >= 1

    report = check(mixture_net(), num_steps=4, randn_like=torch.randn_like, **CHURN)
    where = fastdiff_line("sampling/loop.py", "x_hat = x_cur + noise_std * check_noise(", "run")
    scalars = [v for v in report.violations if v.kind == "scalar"]
    assert {(v.op, v.where) for v in scalars} == {("aten::mul", where)}
    assert sum(v.count for v in scalars) == len(noisy)
    assert (scalars[0].step, scalars[0].in_net) == (noisy[0], False)
    assert kinds(report) == {"scalar", "allocation"}  # randn_like's own allocations

    for backend in FUSED:
        with pytest.raises(RuntimeError, match="Expected a value of type 'Tensor' for argument 'noise_std'"):
            check(mixture_net(), num_steps=4, backend=backend, **CHURN)


@pytest.mark.parametrize("backend", FUSED)
def test_op_ignoring_its_out_buffer_is_caught(monkeypatch, backend):
    """An Euler step that drops its out buffer and allocates: an allocation in the sampler from step 1, and nothing
    else (planted in the op table the loop binds, fastdiff.ops.bound)."""
    from types import SimpleNamespace

    real_bound = fastdiff.sampling.loop.bound

    def allocating_bound(name):
        table = real_bound(name)

        def euler_step_out(x_hat, denoised, t_hat, t_next, out):
            table.euler_step(x_hat, denoised, t_hat, t_next)  # <drop out>

        return SimpleNamespace(**{**vars(table), "euler_step_out": euler_step_out})

    monkeypatch.setattr(fastdiff.sampling.loop, "bound", allocating_bound)
    report = check(mixture_net(), num_steps=4, solver="euler", backend=backend, **CHURN)
    where = here("drop out", "euler_step_out")
    assert report.violations == [Violation("allocation", f"{NAMESPACES[backend]}::euler_step", where, 1, False, "", 2 * 3)]


def test_half_precision_latents_are_capture_safe():
    """fp16 latents with a float32 state: the result's conversion happens once, after the last step."""
    report = check(mixture_net(), LATENTS.half(), num_steps=3)
    assert report.ok, str(report)


# ---------------------------------------------------------------------------------- the report and its error

def two_problems_net(x, sigma):
    sigma.max().item()  # <two: item>
    return BASE(x, sigma) * torch.tensor([1.0])  # <two: host data>


def test_report_text_and_error_name_every_problem():
    """str(report) has one line per violation naming the kind, op, file:line, who and the step; raise_if_unsafe
    raises fastdiff.CaptureError with that text."""
    report = check(two_problems_net, num_steps=3)
    item_where = here("two: item", "two_problems_net")
    data_where = here("two: host data", "two_problems_net")
    assert report.violations == [Violation("sync", "Tensor.item", item_where, 0, True, "", 10),
                                 Violation("host data", "aten::lift_fresh", data_where, 0, True, "", 10)]
    lines = [
        "not capture-safe, 2 problems:",
        f"sync: Tensor.item at {item_where} (in the net, step 0, 10 times) reads a device value on the host",
        f"host data: aten::lift_fresh at {data_where} (in the net, step 0, 10 times) makes a tensor from host data "
        "(a host-to-device copy per call)",
    ]
    assert str(report) == "\n  ".join(lines)
    with pytest.raises(fastdiff.CaptureError) as raised:
        report.raise_if_unsafe()
    assert str(raised.value) == str(report)
    assert isinstance(raised.value, RuntimeError)


def test_report_with_one_problem_and_violation_text():
    report = check(host_data_net, num_steps=1)
    assert str(report).startswith("not capture-safe, 1 problem:\n  host data: aten::lift_fresh at ")
    assert str(report).endswith("(in the net, step 0, 2 times) makes a tensor from host data (a host-to-device copy "
                                "per call)")
    once = Violation("allocation", "aten::add", "x.py:3 (f)", -1, False)
    assert str(once) == f"allocation: aten::add at x.py:3 (f) (in the sampler, before the first step) {KINDS['allocation']}"
    detailed = Violation("sync", "aten::nonzero", "x.py:4 (g)", 2, True, "why", 3)
    assert str(detailed) == f"sync: aten::nonzero at x.py:4 (g) (in the net, step 2, 3 times) {KINDS['sync']}: why"
    assert set(KINDS) == {"sync", "host tensor", "host data", "scalar", "dynamic shape", "control flow", "allocation"}


# ---------------------------------------------------------------------------------------- no trace left behind

def test_check_capture_leaves_no_trace(monkeypatch):
    """After check_capture the loop has its net, no step hook and its own schedule back; torch's generator is
    untouched (seeds given); no mode stays active, grad mode is as it was; sampling gives the same bits."""
    settings = dict(num_steps=5, seeds=SEEDS, backend="cpu", **CHURN)
    before = fastdiff.sample(mixture_net(), LATENTS, reuse_buffers=True, **settings)
    built = []
    real_build = fastdiff.sampling.loop.build_loop

    def recording_build_loop(*args, **kwargs):
        loop, seeds = real_build(*args, **kwargs)
        built.append(loop)
        return loop, seeds

    monkeypatch.setattr(fastdiff.sampling.loop, "build_loop", recording_build_loop)
    net = mixture_net()
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    report = fastdiff.check_capture(net, LATENTS, **settings)
    assert report.ok
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.is_grad_enabled()
    assert torch._C._len_torch_function_stack() == 0 and torch._C._len_torch_dispatch_stack() == 0
    (loop,) = built
    plan = fastdiff.plan_steps(num_steps=5, **CHURN)
    assert loop.net is net and loop.on_step is None and loop.plan == plan
    assert_equal(loop.t, torch.tensor(plan.t, dtype=torch.float64).float())
    assert_equal(loop.t_hat, torch.tensor(plan.t_hat, dtype=torch.float64).float())
    assert_equal(loop.sigma_hat_batch, loop.t_hat[:, None].expand(-1, 5))
    monkeypatch.undo()
    assert_equal(fastdiff.sample(mixture_net(), LATENTS, reuse_buffers=True, **settings), before)
    assert_equal(loop.run(LATENTS, torch.tensor(SEEDS)), before)  # the checked loop itself still samples right


def test_a_failing_net_leaves_no_trace_either(monkeypatch):
    """An exception from the net propagates, and the loop and torch's modes are restored all the same."""
    built = []
    real_build = fastdiff.sampling.loop.build_loop
    monkeypatch.setattr(fastdiff.sampling.loop, "build_loop",
                        lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
    calls = []

    def failing_net(x, sigma):
        calls.append(1)
        if len(calls) == 4:  # in the second call's first step (euler, 3 steps)
            raise KeyError("boom")
        return BASE(x, sigma)

    with pytest.raises(KeyError, match="boom"):
        check(failing_net, num_steps=3, solver="euler", **CHURN)
    loop = built[0][0]
    assert loop.net is failing_net and loop.on_step is None
    assert loop.plan == fastdiff.plan_steps(num_steps=3, solver="euler", **CHURN)
    assert_equal(loop.t, torch.tensor(loop.plan.t, dtype=torch.float64).float())
    assert torch._C._len_torch_function_stack() == 0 and torch._C._len_torch_dispatch_stack() == 0
    assert torch.is_grad_enabled()


# ----------------------------------------------------------------------------------------------- EmulatedGraph

def test_emulated_graph_replays_on_new_inputs():
    """Ops are recorded with their tensors; replay recomputes the output from the inputs' current values, the
    intermediates included, without running the Python code again."""
    x, y = torch.arange(8.0), torch.zeros(8)
    calls = []

    def fn():
        calls.append(1)
        y.copy_(x * 2 + 1)

    graph = EmulatedGraph()
    graph.capture(fn)
    assert graph.captured and calls == [1]
    assert_equal(y, torch.arange(8.0) * 2 + 1)
    assert graph.num_ops == 3  # mul, add, copy_
    assert graph.fresh_bytes == 2 * 8 * 4  # the two intermediates
    assert graph.memory_bytes == 4 * 8 * 4  # x, y and the intermediates
    x.copy_(torch.linspace(-1, 1, 8))
    graph.replay()
    assert_equal(y, torch.linspace(-1, 1, 8) * 2 + 1)
    x.fill_(5.0)
    graph.replay()
    graph.replay()
    assert_equal(y, torch.full((8,), 11.0))
    assert calls == [1]  # the Python code ran once, at capture


def test_emulated_graph_freezes_host_decisions():
    """Python numbers and branches are replayed as they were at capture, as in a CUDA graph."""
    x, y = torch.ones(4), torch.zeros(4)
    settings = {"scale": 3.0, "negate": False}

    def fn():
        z = x * settings["scale"]
        y.copy_(-z if settings["negate"] else z)

    graph = EmulatedGraph()
    graph.capture(fn)
    settings.update(scale=100.0, negate=True)
    x.fill_(2.0)
    graph.replay()
    assert_equal(y, torch.full((4,), 6.0))


def test_emulated_graph_in_place_ops_views_and_multiple_outputs():
    """In-place ops replay on the same tensor (so they accumulate), writes through views land in the same place,
    and every output of a multi-output op is refreshed."""
    x, acc, y = torch.arange(4.0), torch.zeros(4), torch.zeros(6)

    def fn():
        acc.add_(x)
        y[:4].copy_(x.flip(0))
        low, high = torch.aminmax(x * 10)
        y[4].copy_(low)
        y[5].copy_(high)

    graph = EmulatedGraph()
    graph.capture(fn)
    assert_equal(acc, torch.arange(4.0))
    assert_equal(y, torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0, 30.0]))
    x.copy_(torch.tensor([4.0, -1.0, 7.0, 2.0]))
    graph.replay()
    assert_equal(acc, torch.tensor([4.0, 0.0, 9.0, 5.0]))
    assert_equal(y, torch.tensor([2.0, 7.0, -1.0, 4.0, -10.0, 70.0]))
    graph.replay()
    assert_equal(acc, torch.tensor([8.0, -1.0, 16.0, 7.0]))


def test_emulated_graph_replays_a_sampling_loop():
    """The sampler's loop on fixed buffers, captured once, replays to what fastdiff.sample gives for new latents
    and seeds copied into the same input tensors."""
    latents, seeds, out = LATENTS.clone(), torch.tensor(SEEDS), torch.empty_like(LATENTS)
    settings = dict(num_steps=4, backend="cpu", **CHURN)
    options = fastdiff.sampling.SampleOptions(reuse_buffers=True, **settings)
    loop, _ = fastdiff.sampling.loop.build_loop(mixture_net(), latents, seeds=seeds, options=options)
    graph = EmulatedGraph()
    graph.capture(lambda: loop.run(latents, seeds, out=out))
    new_latents, new_seeds = fastdiff.randn([9, 8, 7, 6, 5], (5, 2, 3)), [11, 12, 13, 14, 15]
    latents.copy_(new_latents)
    seeds.copy_(torch.tensor(new_seeds))
    graph.replay()
    want = fastdiff.sample(mixture_net(), new_latents, seeds=new_seeds, reuse_buffers=True, **settings)
    assert_equal(out, want)


@pytest.mark.parametrize("fn,match", [
    (lambda x: x.sum().item(), r"Tensor.item at .*test_capture.py:\d+ .*reads a device value on the host"),
    (lambda x: bool(x.any()), "Tensor.__bool__ at .*reads a device value on the host"),
    (lambda x: float(x[0]), "Tensor.__float__ at "),
    (lambda x: torch.nonzero(x), "aten::nonzero at .*its output's shape depends on tensor values"),
    (lambda x: x[x > 0], "aten::index at .*its output's shape depends on tensor values"),
], ids=["item", "bool", "float", "nonzero", "mask"])
def test_emulated_graph_refuses_to_read_device_values(fn, match):
    """Reading a device value on the host during capture raises CaptureError, as a real capture fails."""
    x = torch.arange(4.0)
    with pytest.raises(CaptureError, match=match):
        EmulatedGraph().capture(lambda: fn(x))


def test_emulated_graph_misuse():
    """replay before capture, and a second capture, are errors."""
    graph = EmulatedGraph()
    with pytest.raises(RuntimeError, match="replay: nothing captured yet"):
        graph.replay()
    x = torch.zeros(2)
    graph.capture(lambda: x.add_(1))
    with pytest.raises(RuntimeError, match="capture: this graph was already captured"):
        graph.capture(lambda: x.add_(1))
    graph.replay()
    assert_equal(x, torch.full((2,), 2.0))


def test_emulated_graph_refreshes_every_tensor_of_a_list_result():
    x, w, y = torch.arange(4.0), torch.arange(4.0) + 10, torch.zeros(8)

    def fn():
        a, b = torch._foreach_mul([x, w], 2.0)
        y[:4].copy_(a)
        y[4:].copy_(b)

    graph = EmulatedGraph()
    graph.capture(fn)
    x.fill_(1.0)
    w.fill_(2.0)
    graph.replay()
    assert graph.fresh_bytes == 2 * 4 * 4
    assert_equal(y, torch.tensor([2.0] * 4 + [4.0] * 4))


def test_emulated_graph_counts_empty_buffers_as_fresh():
    x, y = torch.arange(8.0), torch.zeros(8)

    def fn():
        buffer = torch.empty(8)
        torch.mul(x, 3, out=buffer)
        y.copy_(buffer)

    graph = EmulatedGraph()
    graph.capture(fn)
    assert graph.fresh_bytes == 8 * 4


def test_emulated_graph_counts_fresh_bytes_of_intermediates():
    """fresh_bytes counts each intermediate made at capture once, whatever its dtype; in-place ops add nothing."""
    x, y = torch.arange(6.0), torch.zeros(6, dtype=torch.float64)

    def fn():
        a = x * 2  # 24 bytes
        a.add_(1)  # in place: nothing new
        b = a.to(torch.float64)  # 48 bytes
        y.copy_(b.sin())  # 48 bytes

    graph = EmulatedGraph()
    graph.capture(fn)
    assert graph.fresh_bytes == 24 + 48 + 48
    assert graph.num_ops == 5
    x.fill_(math.pi / 4)
    graph.replay()
    assert_equal(y, (torch.full((6,), math.pi / 4) * 2 + 1).to(torch.float64).sin())


# ------------------------------------------------------------------------- review fixes: no false alarms, no holes

def test_ordinary_code_is_not_flagged():
    """A scalar written by setitem, bool values written through integer indices and a constant NaN are safe."""

    def net(x, sigma):
        d = BASE(x, sigma).clone()
        d[:, 0] = 0.5  # a scalar fill: no host-to-device copy on a GPU
        keep = torch.zeros(x.shape[0], dtype=torch.bool)
        keep[torch.arange(x.shape[0])] = True  # index_put_ with integer indices and bool values
        return torch.where(keep[:, None, None], d, d.clamp(max=float("nan")))

    report = check(net, num_steps=2)
    assert report.ok, str(report)


def test_setitem_scalars_that_change_between_calls_are_caught():
    class Filling:
        calls = 0

        def __call__(self, x, sigma):
            self.calls += 1
            d = BASE(x, sigma).clone()
            d[:, 0] = 0.001 * self.calls  # <fill>
            return d

    report = check(Filling(), num_steps=2, solver="euler")
    assert {v.kind for v in report.violations} == {"scalar"}


def test_hidden_syncs_are_caught():
    """bincount sizes its output from the values; repeat_interleave with tensor repeats too, unless given its size."""

    def counting(x, sigma):
        torch.bincount(torch.zeros(3, dtype=torch.int64))  # <bincount>
        return BASE(x, sigma)

    def repeating(x, sigma):
        torch.repeat_interleave(torch.arange(3), torch.ones(3, dtype=torch.int64))  # <repeat>
        torch.repeat_interleave(torch.arange(3), torch.ones(3, dtype=torch.int64), output_size=3)
        return BASE(x, sigma)

    assert {(v.kind, v.op) for v in check(counting, num_steps=2).violations} == {("sync", "aten::bincount")}
    assert {(v.kind, v.op, v.where) for v in check(repeating, num_steps=2).violations} == {
        ("sync", "aten::repeat_interleave", here("repeat", "repeating"))}


def test_emulated_graph_refuses_a_replaced_tensor_and_host_data():
    """A CUDA graph holds addresses: a tensor given new memory after capture cannot be replayed; making a tensor
    from host data in the captured code fails as a real capture does."""
    w, y = torch.ones(4), torch.zeros(4)
    graph = EmulatedGraph()
    graph.capture(lambda: y.copy_(w * 2))
    w.data = torch.full((4,), 5.0)
    with pytest.raises(RuntimeError, match="replay: a \\(4,\\) torch.float32 tensor the graph reads or writes has new memory"):
        graph.replay()
    with pytest.raises(CaptureError, match="aten::lift_fresh at .* makes a tensor from host data"):
        EmulatedGraph().capture(lambda: y.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0])))


def test_emulated_replay_ignores_an_enclosing_autocast():
    x, w, y = torch.randn(4, 4), torch.randn(4, 4), torch.zeros(4, 4)
    graph = EmulatedGraph()
    graph.capture(lambda: y.copy_(x @ w))
    expected = y.clone()
    y.zero_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        graph.replay()
    assert_equal(y, expected)
