"""fastdiff.sample: the front door of the sampler. It gathers the call's settings into one checked SampleOptions
(fastdiff.sampling.plan), picks the features the call asks for (classifier-free guidance, a CUDA graph) and hands
the rest to the loop (fastdiff.sampling.loop), which checks the tensors, builds the plan and runs it. Only this
module imports the features, so the engine never imports back up.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from .._validate import check_real
from .graph import sample_graphed
from .guidance import ClassifierFreeGuidance
from .loop import build_loop
from .plan import SampleOptions

def sample(net, latents, class_labels=None, randn_like=None, num_steps=18, sigma_min=0.002, sigma_max=80.0,
           rho=7.0, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0, *, solver="heun", sigmas=None,
           seeds=None, dtype=None, backend="auto", callback=None, nonfinite="warn", reuse_buffers=False,
           cuda_graph=False, eta=None, guidance=None, start_scale=None):
    """Sample with EDM's stochastic sampler (Algorithm 2); drop-in for NVlabs/edm's `edm_sampler`.

    net(x, sigma[, class_labels]) returns the denoised D(x; sigma) with sigma of shape [B]. latents are
    unit-variance noise [B, ...]; the result has their shape and dtype. The state is float32 (float64 for
    float64 latents or dtype=torch.float64, which reproduces edm_sampler). Noise comes from randn_like(x)
    when given (called once per step by every solver, as edm_sampler does), else from fastdiff's generator keyed by
    `seeds` (one int per sample, or a torch.Generator to draw one per sample from, or a list of generators, one seed
    drawn from each; drawn from torch's default generator when omitted and the plan adds noise): step i
    draws at offset SAMPLER_OFFSET + i, and only if it adds noise.

    solver: "heun" (EDM's, NFE 2N - 1) or "euler" (NFE N), both with EDM's churn (S_churn, S_min, S_max, S_noise);
    "ddim": deterministic DDIM, x_next = D + (t_next / t) (x - D), which is exactly "euler" without churn;
    "euler_ancestral": an Euler step to sigma_down, then noise of std S_noise * sigma_up (k-diffusion's; `eta`,
    default 1, sets sigma_up; eta = 0 is "ddim", and eta is DDIM's eta); "dpmpp_2m": DPM-Solver++(2M), second order
    from one network evaluation per step (first order on the first step and on a step to 0). All take one network evaluation
    per step but "heun". Only "euler" and "heun" take churn, and only "euler_ancestral" takes eta: elsewhere they
    are errors, not ignored. `backend` picks who
    runs the elementwise step math (fastdiff.ops). `nonfinite` says what to do if NaN or inf appear:
    "warn" (default), "raise" (FloatingPointError) or "ignore". `reuse_buffers=True` lets a fused backend write
    every step into fixed buffers (no per-step allocation), which overwrites the tensors the net was given:
    only for nets that keep no reference to their inputs.

    `cuda_graph=True` runs the whole loop, net included, as one CUDA graph (fastdiff.GraphedSampler, captured on
    first use and cached by shape, dtype, schedule structure, solver and net); it raises fastdiff.CaptureError when
    that cannot be done. "auto" does so on CUDA when it can and otherwise samples eagerly, logging the reason once.
    A captured net's Python code runs only while capturing: see GraphedSampler for what that means.

    The state starts at latents * sigmas[0] (EDM's x = sigma_max z), or at latents * start_scale when given (> 0):
    a diffusers scheduler's init_noise_sigma for its Euler and Heun schedulers, sqrt(1 + sigmas[0]^2) for its VP ones
    (DPM-Solver, DDIM), whose x_T = latents is that in EDM's variables. `sigmas` may be a diffusers scheduler's
    sigmas as they are after set_timesteps; with solver="heun" that includes HeunDiscreteScheduler's, which list every
    inner level twice (s0, s1, s1, ..., s_(N-1), s_(N-1), 0): that is the N-step schedule s0, ..., s_(N-1), 0.

    Sampling records no autograd graph (it runs under torch.no_grad(), whatever the caller's mode): a net whose
    weights require grad samples as with frozen weights, and the result has requires_grad False.

    `guidance=w`: classifier-free guidance, D_w = D(x; sigma, null) + w (D(x; sigma, y) - D(x; sigma, null)) from
    one batched network call of 2B per evaluation (fastdiff.ClassifierFreeGuidance; w = 1 is plain conditional
    sampling, w is diffusers' guidance_scale); needs class_labels.
    """
    with torch.no_grad():  # sampling never records autograd (docs/sampling.md#no-autograd)
        options = SampleOptions(num_steps=num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, S_churn=S_churn,
                                S_min=S_min, S_max=S_max, S_noise=S_noise, solver=solver, sigmas=sigmas, eta=eta,
                                dtype=dtype, backend=backend, nonfinite=nonfinite, reuse_buffers=reuse_buffers,
                                start_scale=start_scale)
        if guidance is not None:
            net = _guided(net, guidance, class_labels)
        if cuda_graph is not False:
            result = sample_graphed(cuda_graph, net, latents, class_labels, randn_like, seeds, callback, options)
            if result is not None:
                return result
        loop, seeds = build_loop(net, latents, class_labels, randn_like, seeds, callback, options, share_tables=True)
        result = loop.run(latents, seeds, class_labels)
        loop.report_nonfinite(stacklevel=2)  # warnings name the caller of sample()
        loop.release()  # the loop is done: its tables' next loop may reuse its non-finite record
        return result


_GUIDED: OrderedDict = OrderedDict()  # (id(net), w) -> (net, its ClassifierFreeGuidance): one wrapper per pair, so
# sample(cuda_graph=...), whose graphs are cached by the net's identity, reuses its capture across calls
_GUIDED_LOCK = threading.Lock()


def _guided(net, guidance, class_labels):
    """net wrapped in classifier-free guidance with weight `guidance` (the same wrapper for the same net and w)."""
    if class_labels is None:
        raise ValueError(f"guidance: classifier-free guidance (guidance={guidance!r}) needs class_labels, got None")
    key = (id(net), check_real("guidance", guidance))
    with _GUIDED_LOCK:  # sample() may be called from several threads
        entry = _GUIDED.get(key)
        if entry is None or entry[0] is not net:
            entry = _GUIDED[key] = (net, ClassifierFreeGuidance(net, guidance))
            while len(_GUIDED) > 8:
                _GUIDED.popitem(last=False)
        _GUIDED.move_to_end(key)
    return entry[1]
