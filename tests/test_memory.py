"""Requests that cannot fit in memory are refused before anything is allocated, with the bytes needed and available.

The machine's free memory is set to 24 GiB here (the test machine's size), so the verdicts are the same on any
machine; the requests are far beyond it (hundreds of GiB), so each refusal is immediate. One test reads the real
figure. A dispatch mode fails any test in which a tensor larger than 64 MiB is made before the refusal: before these
checks existed, each request below started allocating its tables (then ran for minutes and tens of GB).
"""
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastdiff
import fastdiff._memory as memory
import fastdiff.sampling.graph as graphed
from fastdiff import sde as S
from fastdiff.cli import main, report_bytes_per_point
from fastdiff.sampling.loop import loop_table_bytes, require_loop_memory
from fastdiff.sampling.plan import PLAN_BYTES_PER_STEP

GiB = 2**30
MACHINE = 24 * GiB
LARGEST_TENSOR = 64 * 2**20


@pytest.fixture
def machine(monkeypatch):
    """CPU memory available: 24 GiB, as MemAvailable would say."""
    monkeypatch.setattr(memory, "_mem_available", lambda: (MACHINE, "MemAvailable in /proc/meminfo"))


class NoLargeTensors(TorchDispatchMode):
    """Fails at the first op that makes a tensor larger than LARGEST_TENSOR."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() * t.element_size() > LARGEST_TENSOR:
                raise AssertionError(f"{func} made a {tuple(t.shape)} {t.dtype} tensor before any refusal")
        return out


def refused(make, match):
    """make() raises NotEnoughMemoryError (a ValueError and a MemoryError) matching `match`, having allocated
    nothing large."""
    with NoLargeTensors(), pytest.raises(memory.NotEnoughMemoryError, match=match) as info:
        make()
    assert isinstance(info.value, ValueError) and isinstance(info.value, MemoryError)
    return str(info.value)


def mixture_latents(batch):
    return torch.zeros(batch, 2)


AVAILABLE = r"but 24.0 GiB is available \(MemAvailable in /proc/meminfo\)"


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_sample_refuses_steps_whose_tables_cannot_fit(machine, monkeypatch, cuda_graph):
    """num_steps=10**7 for 8192 samples: the [num_steps, 8192] noise-level tables alone need 611 GiB. Refused at once,
    naming num_steps, the bytes needed and available, eagerly and through the graph cache."""
    monkeypatch.setattr(graphed, "_graph_kind_for", lambda latents: "emulated")
    calls = []

    def net(x, sigma):
        calls.append(1)
        return x

    needed = 10**7 * PLAN_BYTES_PER_STEP + loop_table_bytes(10**7, 8192, torch.float32)
    assert needed / GiB > 600
    message = refused(lambda: fastdiff.sample(net, mixture_latents(8192), num_steps=10**7, cuda_graph=cuda_graph),
                      rf"^num_steps: 10000000 needs at least {memory.format_bytes(needed)} on cpu for the sampler's "
                      rf"per-step plan and tables .* 8192 samples .* float32\), {AVAILABLE}; use fewer steps, or a "
                      r"smaller batch$")
    assert "611.5 GiB" in message and calls == []
    graphed.clear_cache()


def test_every_way_to_a_plan_is_checked(machine):
    """plan_steps, GraphedSampler, a sigmas schedule, sample_general and plan_general refuse the same way."""
    from fastdiff.sampling.general import plan_general

    net = fastdiff.GaussianMixture.ring()
    refused(lambda: fastdiff.plan_steps(num_steps=10**9), rf"^num_steps: 1000000000 needs at least 89.4 GiB on cpu "
            rf"for the sampler's per-step plan, {AVAILABLE}")
    refused(lambda: fastdiff.GraphedSampler(net, mixture_latents(8192), graph="emulated", num_steps=10**7),
            "^num_steps: 10000000 needs at least 611.5 GiB")
    refused(lambda: fastdiff.sample(net, mixture_latents(8192), sigmas=range(10**7, -1, -1)),
            "^sigmas: a schedule of 10000000 steps needs at least 611.5 GiB")
    refused(lambda: fastdiff.sample_general(net, mixture_latents(4096), num_steps=10**7), "^num_steps: 10000000 needs")
    refused(lambda: plan_general(net, 10**8), "^num_steps: 100000000 needs at least 44.7 GiB on cpu")


def test_sde_and_ddpm_tables_are_checked(machine):
    """An SDE's levels, pc_sample's steps and a DDPM's time steps: the same rule, naming their argument."""
    refused(lambda: S.VESDE(N=10**10), rf"^N: 10000000000 needs at least 74.5 GiB on cpu for the discretisation's "
            rf"tables, {AVAILABLE}; use fewer levels$")
    refused(lambda: S.VPSDE().with_steps(10**10, name="num_steps"), "^num_steps: 10000000000 needs")
    refused(lambda: S.pc_sample(S.VESDE(), lambda x, t: -x, torch.zeros(2, 2), num_steps=10**9),
            "^num_steps: 1000000000 needs at least .* for pc_sample's time grid")
    small = S.VESDE(N=10**6)  # its levels fit (8 MB); a noise offset for each of 10**4 corrector draws per level not
    refused(lambda: S.pc_sample(small, lambda x, t: -x, torch.zeros(2, 2), n_steps=10**4),
            r"^sde: 1000000 steps needs at least 74.6 GiB on cpu for pc_sample's time grid and per-draw noise offsets")
    refused(lambda: fastdiff.DDPM(10**9), "^num_timesteps: 1000000000 needs at least 59.6 GiB")


def test_cli_refuses_a_batch_that_cannot_fit(machine, capsys):
    """fastdiff sample --num-samples 100000000: the quality report alone needs 387 GiB; refused before the seeds are
    made (exit status 2), with the numbers; likewise --num-steps."""
    with NoLargeTensors():
        assert main(["sample", "--model", "mixture", "--num-samples", "100000000", "--out", ""]) == 2
    error = capsys.readouterr().err
    needed = 10**8 * report_bytes_per_point(2)
    assert needed / GiB > 380
    assert error.startswith(f"fastdiff sample: error: --num-samples: 100000000 needs at least "
                            f"{memory.format_bytes(needed)} on cpu for the sample quality report"), error
    assert "24.0 GiB is available (MemAvailable in /proc/meminfo); sample fewer points" in error
    with NoLargeTensors():
        assert main(["sample", "--model", "mixture", "--num-steps", "10000000", "--out", ""]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fastdiff sample: error: --num-steps: 10000000 needs at least 611.5 GiB"), error


def test_the_boundary(monkeypatch):
    """A request of exactly the available bytes passes; one byte more is refused; unknown memory refuses nothing."""
    needed = 1000 * PLAN_BYTES_PER_STEP + loop_table_bytes(1000, 64, torch.float64)
    monkeypatch.setattr(memory, "_mem_available", lambda: (needed, "test"))
    require_loop_memory(1000, None, 64, "cpu", torch.float64)
    monkeypatch.setattr(memory, "_mem_available", lambda: (needed - 1, "test"))
    with pytest.raises(memory.NotEnoughMemoryError, match=f"needs at least .* but {memory.format_bytes(needed - 1)}"):
        require_loop_memory(1000, None, 64, "cpu", torch.float64)
    monkeypatch.setattr(memory, "_mem_available", lambda: None)
    require_loop_memory(10**15, None, 10**6, "cpu", torch.float64)  # unknown: not refused
    assert memory.available_bytes("meta") is None


def test_the_figures_are_lower_bounds_of_what_is_allocated():
    """What the checks count is at most what the plan and loop really hold: a refusal is never wrong."""
    import tracemalloc

    from fastdiff.sampling.loop import SamplingLoop

    steps, batch = 20000, 3
    for solver in ("heun", "euler", "euler_ancestral", "dpmpp_2m", "ddim"):
        tracemalloc.start()
        plan = fastdiff.plan_steps(num_steps=steps, solver=solver)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert held >= steps * PLAN_BYTES_PER_STEP, (solver, held / steps)
        loop = SamplingLoop(lambda x, s: x, plan, torch.zeros(batch, 2), torch.float32)
        tables = [loop.t, loop.t_hat, loop.noise_std, loop.sigma_hat_batch, loop.sigma_next_batch, loop.offsets,
                  loop.finite_check.minima, loop.finite_check.maxima, loop.t_down, loop.multistep]
        assert sum(t.numel() * t.element_size() for t in tables if t is not None) >= \
            loop_table_bytes(steps, batch, torch.float32)


def test_the_real_figure():
    """On Linux the CPU figure is MemAvailable of /proc/meminfo; elsewhere it is unknown (and nothing is refused)."""
    found = memory.available_bytes("cpu")
    if not sys.platform.startswith("linux"):
        assert found is None
        return
    available, source = found
    assert source == "MemAvailable in /proc/meminfo" and available > 0
    with open("/proc/meminfo") as meminfo:
        total = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
    assert available <= total
    refused(lambda: fastdiff.sample(lambda x, s: x, mixture_latents(8192), num_steps=10**12), "^num_steps: ")


def test_format_bytes():
    assert [memory.format_bytes(n) for n in (0, 1023, 1024, 1536, 3 * GiB, 5 * 2**50)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "3.0 GiB", "5.0 PiB"]


def test_small_requests_are_not_checked(monkeypatch):
    """A request of less than UNCHECKED_BYTES passes without reading the free memory (a sampling call makes a few,
    and reading /proc/meminfo costs more than one of its steps); one of that size is checked."""
    def unreadable():
        raise AssertionError("the free memory was read for a small request")

    monkeypatch.setattr(memory, "_mem_available", unreadable)
    require_loop_memory(18, None, 4, "cpu", torch.float32)
    fastdiff.plan_steps(num_steps=18)
    memory.require_memory("x", "small", {torch.device("cpu"): memory.UNCHECKED_BYTES - 1}, "a test", "none")
    with pytest.raises(AssertionError, match="was read"):
        memory.require_memory("x", "1 MiB", {torch.device("cpu"): memory.UNCHECKED_BYTES}, "a test", "none")
