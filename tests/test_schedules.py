"""karras_sigmas (EDM Eq. 5) against a plain float64 implementation and the published values; and that
fastdiff/schedules.py is the only home of the schedules."""
import ast
import math
from pathlib import Path

import pytest
import torch

import fastdiff


def plain_karras(N, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """EDM Eq. 5 on Python floats, then t_N = 0."""
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + (i / (N - 1) if N > 1 else 0.0) * (b - a)) ** rho for i in range(N)] + [0.0]


@pytest.mark.parametrize("N,sigma_min,sigma_max,rho", [(18, 0.002, 80.0, 7.0), (2, 0.002, 80.0, 7.0), (5, 0.01, 10.0, 3.0), (256, 0.002, 80.0, 7.0)])
def test_matches_plain_formula(N, sigma_min, sigma_max, rho):
    """Every value equals EDM Eq. 5 in float64 (to rounding), descending, ending in 0."""
    t = fastdiff.karras_sigmas(N, sigma_min, sigma_max, rho)
    assert t.dtype == torch.float64 and t.shape == (N + 1,)
    for got, want in zip(t.tolist(), plain_karras(N, sigma_min, sigma_max, rho)):
        assert got == pytest.approx(want, rel=1e-13, abs=0)
    assert t[0] == pytest.approx(sigma_max, rel=1e-13) and t[-2] == pytest.approx(sigma_min, rel=1e-13) and t[-1] == 0
    assert bool((t[1:] < t[:-1]).all())


def test_published_values_for_18_steps():
    """The N=18 schedule of docs/formulas.md#karras-schedule: 80, 57.59, 40.79, ..., 0.0075, 0.002, 0."""
    t = fastdiff.karras_sigmas(18).tolist()
    assert [round(v, 2) for v in t[:3]] == [80.0, 57.59, 40.79]
    assert round(t[-3], 4) == 0.0075 and round(t[-2], 6) == 0.002 and t[-1] == 0.0


def test_single_step_goes_from_sigma_max_to_zero():
    """num_steps=1 is [sigma_max, 0] rather than a division by zero."""
    assert fastdiff.karras_sigmas(1).tolist() == [80.0, 0.0]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(num_steps=0), ValueError, "num_steps: must be >= 1, got 0"),
    (dict(num_steps=2.0), TypeError, "num_steps: expected an int"),
    (dict(num_steps=4, sigma_min=0.0), ValueError, "sigma_min: must be > 0"),
    (dict(num_steps=4, sigma_min=5.0, sigma_max=5.0), ValueError, "sigma_min: must be below sigma_max"),
    (dict(num_steps=4, rho=-1.0), ValueError, "rho: must be > 0"),
    (dict(num_steps=4, sigma_max=math.inf), ValueError, "sigma_max: expected a finite number"),
])
def test_bad_arguments(kwargs, error, match):
    """Errors name the argument, the value and what is accepted."""
    with pytest.raises(error, match=match):
        fastdiff.karras_sigmas(**kwargs)


def test_bit_exact_with_edm_torch_expression():
    """The schedule equals, bit for bit, EDM's float64 torch expression of Eq. 5 (as written in the paper)."""
    N, sigma_min, sigma_max, rho = 18, 0.002, 80.0, 7.0
    i = torch.arange(N, dtype=torch.float64)
    edm = (sigma_max ** (1 / rho) + i / (N - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    assert torch.equal(fastdiff.karras_sigmas(N)[:-1], edm)


def test_schedules_are_defined_only_in_the_schedules_module():
    """No other module of fastdiff defines a module-level function named like one of fastdiff.schedules': the
    modules that use a schedule import it, so changing it in schedules.py changes it everywhere. (Methods may
    share a name: SDE.discretize is a step of the SDE, not a noise schedule.)"""
    package = Path(fastdiff.__file__).resolve().parent
    home = package / "schedules.py"
    names = {node.name for node in ast.parse(home.read_text(encoding="utf-8")).body
             if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}
    assert {"karras_sigmas", "ddpm_betas", "vp_sigma", "iddpm_levels", "discretize", "ode_schedule"} <= names
    copies = [f"{path.relative_to(package)}: {node.name}" for path in sorted(package.rglob("*.py")) if path != home
              for node in ast.parse(path.read_text(encoding="utf-8")).body
              if isinstance(node, ast.FunctionDef) and node.name in names]
    assert copies == []
