"""One rule for NaN and inf in every sampling loop (fastdiff._nonfinite): `nonfinite="warn" | "raise" | "ignore"`
on every public entry point with a loop, the same messages, and latents that already hold NaN or inf are reported
as such, never blamed on the network.
"""
import math
import re
import warnings
import sys

import pytest
import torch

import fastdiff
from fastdiff import sde as S
from fastdiff.sampling.general import plan_general, run_general

MIXTURE = fastdiff.GaussianMixture.ring()
DDPM_ = fastdiff.DDPM(20, beta_start=1e-3, beta_end=0.2)
VP = S.VPSDE(N=25)
VP_SCORE = S.score_from_denoiser(MIXTURE, VP)


def latents(bad=False):
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    if bad:
        x[2, 1] = float("nan")
    return x


def net_nan_below(level):
    """An EDM denoiser that returns NaN once sigma < level."""
    return lambda x, sigma: MIXTURE(x, sigma) + torch.where(sigma < level, math.nan, 0.0)[:, None]


def eps_inf_below(step):
    """A DDPM eps-model that returns inf once t < step."""
    return lambda x, t: 0.1 * x + torch.where(t < step, math.inf, 0.0)[:, None]


def score_nan_below(time):
    """A score function that returns NaN once t < time."""
    return lambda x, t: VP_SCORE(x, t) + torch.where(t < time, math.nan, 0.0)[:, None]


def graphed(net, x, **kw):
    sampler = fastdiff.GraphedSampler(net, x, graph="emulated", num_steps=6, backend="cpu", **kw)
    return sampler(x, seeds=[1, 2, 3, 4])


# name: (run(model_goes_bad, latents, **kw) -> samples, the model that goes bad, where it is reported, whose fault)
ENTRY_POINTS = {
    "sample": (lambda m, x, **kw: fastdiff.sample(m, x, num_steps=6, **kw), net_nan_below(1.0),
               r"at step 2 of 6 \(sigma 5.83895 -> 0.965417\)", "check the net's output at that noise level"),
    "GraphedSampler": (graphed, net_nan_below(1.0), r"at step 2 of 6 \(sigma 5.83895 -> 0.965417\)",
                       "check the net's output at that noise level"),
    "sample_general": (lambda m, x, **kw: fastdiff.sample_general(m, x, num_steps=6, **kw), net_nan_below(1.0),
                       r"at step 2 of 6 \(sigma 5.83895 -> 0.965417\)", "check the net's output at that noise level"),
    "run_general": (lambda m, x, **kw: run_general(m, x, plan_general(m, 6), None, None, None, torch.float32, **kw),
                    net_nan_below(1.0), r"at step 2 of 6 \(sigma 5.83895 -> 0.965417\)",
                    "check the net's output at that noise level"),
    "DDPM.sample": (lambda m, x, **kw: DDPM_.sample(m, x, seeds=[1, 2, 3, 4], **kw), eps_inf_below(5),
                    r"at step 15 of 20 \(time step 4 -> 3\)", "check eps_model's output at that time step"),
    "DDPM.ddim_sample": (lambda m, x, **kw: DDPM_.ddim_sample(m, x, num_steps=5, **kw), eps_inf_below(5),
                         r"at step 4 of 5 \(time step 0 -> x_0\)", "check eps_model's output at that time step"),
    "DDPM.run_plan": (lambda m, x, **kw: DDPM_.run_plan(DDPM_.ddim_plan(5), m, x, **kw), eps_inf_below(5),
                      r"at step 4 of 5 \(time step 0 -> x_0\)", "check eps_model's output at that time step"),
    "sde.pc_sample": (lambda m, x, **kw: S.pc_sample(VP, m, x, seeds=[1, 2, 3, 4], **kw), score_nan_below(0.5),
                      r"at step 13 of 25 \(t 0.458875 -> 0.41725\)", "check score_fn's output at that time"),
    "sde.ode_sample": (lambda m, x, **kw: S.ode_sample(VP, m, x, rtol=1e-3, atol=1e-3, denoise=True, **kw)[0],
                       score_nan_below(0.5), r"in the integration from t = 1 to 0.001: the drift held them at t = 0.4",
                       "check score_fn's output there"),
    "inpaint": (lambda m, x, **kw: fastdiff.inpaint(m, x, torch.zeros(4, 2), torch.tensor([True, False]),
                                                    seeds=[1, 2, 3, 4], num_steps=6, **kw),
                net_nan_below(1.0), r"at step 2 of 6 \(sigma 5.83895 -> 0.965417\)",
                "check the net's output at that noise level"),
    "inpaint smc": (lambda m, x, **kw: fastdiff.inpaint(m, x, torch.zeros(4, 2), torch.tensor([True, False]),
                                                        seeds=[1, 2, 3, 4], method="smc", num_particles=3,
                                                        num_steps=6, **kw),
                    net_nan_below(1.0), r"at step 3 of 6 \(sigma 0.965417 -> 0.0850872\)",  # no Heun step
                    "check the net's output at that noise level"),
}
GOOD = {"sample": MIXTURE, "GraphedSampler": MIXTURE, "sample_general": MIXTURE, "run_general": MIXTURE,
        "DDPM.sample": lambda x, t: 0.1 * x, "DDPM.ddim_sample": lambda x, t: 0.1 * x,
        "DDPM.run_plan": lambda x, t: 0.1 * x, "sde.pc_sample": VP_SCORE, "sde.ode_sample": VP_SCORE,
        "inpaint": MIXTURE, "inpaint smc": MIXTURE}
NAMES = list(ENTRY_POINTS)
# Where warnings point: the caller's line, but for inpaint's replacement method, whose sample() call is the caller.
CALLER = {name: __file__ for name in NAMES} | {"inpaint": sys.modules["fastdiff.sampling.inpainting"].__file__}
FROM_THE_MODEL = r"^non-finite values \(NaN or inf\) in the sampler state first appeared "
FROM_THE_LATENTS = (r"^non-finite values \(NaN or inf\) were already in the {} given to the sampler, before its "
                    r"first step, so the network is not the cause; check how they were made")
INPUTS = {name: "latents" for name in NAMES} | {"sde.pc_sample": "x_T", "sde.ode_sample": "x_T"}  # the argument's name


@pytest.mark.parametrize("name", [name for name in NAMES if name != "sde.ode_sample"])
def test_nonfinite_from_the_model_is_reported_with_its_step(name):
    """The default warns once, naming the first step whose state held NaN or inf and the model to check; the warning
    points at the caller's line; "raise" raises FloatingPointError with the same message; "ignore" is silent."""
    run, bad_model, where, hint = ENTRY_POINTS[name]
    with pytest.warns(RuntimeWarning) as record:
        out = run(bad_model, latents())
    messages = [str(r.message) for r in record if "non-finite" in str(r.message)]
    assert len(messages) == 1, messages
    assert re.match(FROM_THE_MODEL + where + "; " + re.escape(hint) + "$", messages[0]), messages[0]
    assert record[0].filename == CALLER[name]
    assert not bool(out.isfinite().all())
    with pytest.raises(FloatingPointError, match=FROM_THE_MODEL + where):
        run(bad_model, latents(), nonfinite="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(bad_model, latents(), nonfinite="ignore")
        run(GOOD[name], latents())  # finite runs never warn


def test_ode_sample_cannot_go_on_from_nonfinite_values():
    """The ODE solver's step size is shared by the batch: NaN from the score stops it. Then it raises with either
    setting but "ignore" (where torchdiffeq's own error goes through), naming the time at which the drift held NaN
    and the score function, not torchdiffeq's bare 'underflow in dt'."""
    run, bad_model, where, hint = ENTRY_POINTS["sde.ode_sample"]
    for nonfinite in ("warn", "raise"):
        with pytest.raises(FloatingPointError, match=FROM_THE_MODEL + where + r".*; " + re.escape(hint) + "$"):
            run(bad_model, latents(), nonfinite=nonfinite)
    with pytest.raises(AssertionError, match="underflow in dt"):
        run(bad_model, latents(), nonfinite="ignore")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(GOOD["sde.ode_sample"], latents())


def test_ode_sample_reports_nonfinite_values_from_the_denoising_step():
    """After a finite integration, NaN made by the denoising step (Tweedie's formula at eps) is that step's."""
    at_eps_only = {"calls": 0}

    def score(x, t):
        at_eps_only["calls"] += 1
        return VP_SCORE(x, t) * (math.nan if at_eps_only["denoising"] else 1.0)

    at_eps_only["denoising"] = False
    first = S.ode_sample(VP, score, latents(), rtol=1e-3, atol=1e-3)
    assert bool(first.samples.isfinite().all())
    original = S.tweedie_denoise

    def tweedie(*args):
        at_eps_only["denoising"] = True
        return original(*args)

    S.tweedie_denoise = tweedie
    try:
        with pytest.warns(RuntimeWarning, match=FROM_THE_MODEL + r"in the denoising step at t = 0.001; check score_fn"):
            S.ode_sample(VP, score, latents(), rtol=1e-3, atol=1e-3, denoise=True)
    finally:
        S.tweedie_denoise = original


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_latents_are_reported_as_the_latents(name):
    """Latents holding NaN: the report says so, and neither blames nor names the model."""
    run, _, _, _ = ENTRY_POINTS[name]
    if name == "sde.ode_sample":  # the adaptive step size is shared by the batch: the integration cannot start
        with pytest.raises(FloatingPointError, match=FROM_THE_LATENTS.format("x_T") + r"; the integration cannot start"):
            run(GOOD[name], latents(bad=True))
        return
    with pytest.warns(RuntimeWarning, match=FROM_THE_LATENTS.format(INPUTS[name]) + "$") as record:
        run(GOOD[name], latents(bad=True))
    assert len(record) == 1 and record[0].filename == CALLER[name]
    for culprit in ("net's output", "eps_model", "score_fn", "at step"):
        assert culprit not in str(record[0].message)
    with pytest.raises(FloatingPointError, match=FROM_THE_LATENTS.format(INPUTS[name])):
        run(GOOD[name], latents(bad=True), nonfinite="raise")


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_argument_is_checked(name):
    run, _, _, _ = ENTRY_POINTS[name]
    with pytest.raises(ValueError, match="nonfinite: expected one of 'warn', 'raise', 'ignore', got 'crash'"):
        run(GOOD[name], latents(), nonfinite="crash")
