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
from .adaptive import AdaptiveSettings, run_adaptive
from .graph import sample_graphed
from .extra import check_extra_args, pair_args
from .guidance import ArgumentGuidance, ClassifierFreeGuidance
from .img2img import img2img_start
from .loop import build_loop
from .plan import ADAPTIVE_SOLVERS, SampleOptions
from .program_loop import sample_program
from .programs import PROGRAM_SOLVERS

def sample(net, latents, class_labels=None, randn_like=None, num_steps=18, sigma_min=0.002, sigma_max=80.0,
           rho=7.0, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0, *, solver="heun", sigmas=None,
           seeds=None, dtype=None, backend="auto", callback=None, nonfinite="warn", reuse_buffers=False,
           cuda_graph=False, eta=None, guidance=None, start_scale=None, extra_args=None, uncond_args=None, init=None,
           strength=None, noise_sampler=None, solver_type=None, order=None, adaptive=None):
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
    from one network evaluation per step (first order on the first step and on a step to 0). k-diffusion's other
    samplers by their names (fastdiff.sampling.programs; docs/formulas.md#solver-programs): "dpm_2" (with churn),
    "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde" (each two evaluations a step), "dpmpp_2m_sde"
    (`solver_type` "midpoint" or "heun"), "dpmpp_3m_sde" and "lms" (`order` 1-4, default 4); "unipc": UniPC as
    diffusers' UniPCMultistepScheduler runs it by default, UniP-`order` (1 to 3, default 2) with the UniC corrector
    (docs/formulas.md#unipc); "dpm_adaptive": DPM-Solver-12/23 with adaptive steps, sigma_max to sigma_min
    (k-diffusion's sample_dpm_adaptive: order 2 or 3, `adaptive=dict(rtol=..., atol=..., ...)`;
    docs/sampling.md#adaptive-step-size). Churn (S_churn, S_min,
    S_max) is for "euler", "heun" and "dpm_2"; eta (default 1) for the ancestral and SDE solvers; elsewhere they are
    errors, not ignored. `noise_sampler`: k-diffusion's noise_sampler(sigma, sigma_next) for "euler_ancestral" and
    the programs that draw noise (so a k-diffusion run is reproduced), or "brownian" (fastdiff.BrownianNoise over
    the schedule, keyed by `seeds`). `backend` picks who
    runs the elementwise step math (fastdiff.ops). `nonfinite` says what to do if NaN or inf appear:
    "warn" (default), "raise" (FloatingPointError) or "ignore". `reuse_buffers=True` lets a fused backend write
    every step into fixed buffers (no per-step allocation), which overwrites the tensors the net was given:
    only for nets that keep no reference to their inputs.

    `cuda_graph=True` runs the whole loop, net included, as one CUDA graph (fastdiff.GraphedSampler, captured on
    first use and cached by shape, dtype, schedule structure, solver and net); it raises fastdiff.CaptureError when
    that cannot be done (randn_like, noise_sampler and callback are host code: the graph's noise comes from seeds;
    dpm_adaptive syncs every step). "auto" does so on CUDA when it can and otherwise samples eagerly, logging the
    reason once.
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
    sampling, w is diffusers' guidance_scale); needs class_labels, or uncond_args.

    `extra_args`: a dict of keyword arguments passed to every net call, net(x, sigma[, class_labels], **extra_args)
    (k-diffusion's name): conditioning without a closure, e.g. a diffusers UNet's encoder_hidden_states through
    fastdiff.from_diffusers. With cuda_graph, its tensors are the graph's inputs, copied into static buffers per call
    like the labels; its other values are part of the capture. `uncond_args` (with guidance=w): the unconditional
    counterpart of extra_args, a dict of the same keys; guidance then runs one net call of 2B per evaluation with
    every batched tensor (first dimension B) concatenated as [extra_args; uncond_args], as diffusers does for text
    (fastdiff.sampling.guidance.ArgumentGuidance); values without a batch dimension must be the same in both.

    `init=x0, strength=s` (img2img, as diffusers' img2img pipelines; fastdiff.sampling.img2img): of the N steps of
    the schedule this call would sample (from num_steps or sigmas), run the last n = min(int(N s), N), starting
    from x0 + t_(N-n) z, where z is `latents` (the noise; x0's shape), or, with latents=None, fastdiff.randn(seeds,
    x0.shape) (the seeds' latents stream, offset 0). s = 0 (or n = 0) returns x0; s = 1 starts at the top level.
    The steps' own noise is drawn as in any call, step i of the part run at SAMPLER_OFFSET + i. Not with
    start_scale. The result has latents' dtype (x0's with latents=None).
    """
    with torch.no_grad():  # sampling never records autograd (docs/sampling.md#no-autograd)
        options = SampleOptions(num_steps=num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, S_churn=S_churn,
                                S_min=S_min, S_max=S_max, S_noise=S_noise, solver=solver, sigmas=sigmas, eta=eta,
                                dtype=dtype, backend=backend, nonfinite=nonfinite, reuse_buffers=reuse_buffers,
                                start_scale=start_scale, solver_type=solver_type, order=order)
        if adaptive is not None and options.solver not in ADAPTIVE_SOLVERS:
            raise ValueError(f"adaptive: only solver='dpm_adaptive' takes adaptive (its step size control: "
                             f"{', '.join(AdaptiveSettings.names())}); solver={options.solver!r} runs a fixed "
                             f"schedule; got adaptive={adaptive!r}")
        if options.solver in ADAPTIVE_SOLVERS and (init is not None or strength is not None):
            raise ValueError(f"{'init' if init is not None else 'strength'}: img2img runs the last part of a fixed "
                             f"schedule, and solver={options.solver!r} has none; start it from x0 yourself: "
                             f"latents = x0 / s + z with sigma_max=s samples from x0 + s z")
        if init is not None or strength is not None:
            if init is None or strength is None:
                given, missing = ("init", "strength") if strength is None else ("strength", "init")
                raise ValueError(f"{missing}: img2img needs both init (the data x0) and strength (the part of the "
                                 f"schedule to run, in [0, 1]); got {given} without {missing}")
            out_dtype = next((t.dtype for t in (latents, init) if isinstance(t, torch.Tensor)), None)
            latents, options, seeds = img2img_start(net, latents, init, strength, seeds, options)
            if options is None:  # no step left: x0 as it is
                return latents.to(out_dtype)
            return sample(net, latents, class_labels, randn_like, solver=solver, seeds=seeds, backend=backend,
                          callback=callback, nonfinite=nonfinite, reuse_buffers=reuse_buffers, cuda_graph=cuda_graph,
                          eta=eta, guidance=guidance, extra_args=extra_args, uncond_args=uncond_args,
                          sigmas=options.sigmas, start_scale=1.0, dtype=options.dtype, S_churn=S_churn, S_min=S_min,
                          S_max=S_max, S_noise=S_noise, noise_sampler=noise_sampler, solver_type=solver_type,
                          order=order).to(out_dtype)
        extra_args = check_extra_args(extra_args)
        if uncond_args is not None:
            uncond_args = check_extra_args(uncond_args, "uncond_args")
            if guidance is None:
                raise ValueError("uncond_args: the unconditional arguments are for classifier-free guidance; pass "
                                 "guidance=w with them (w = 1 is plain conditional sampling), or leave uncond_args out")
        if guidance is not None and uncond_args is not None:
            net, extra_args = _guided_by_args(net, guidance, extra_args, uncond_args, latents)
        elif guidance is not None:
            net = _guided(net, guidance, class_labels)
        if options.solver in ADAPTIVE_SOLVERS:
            if cuda_graph is not False and cuda_graph != "auto":
                raise ValueError(f"cuda_graph: solver={options.solver!r} cannot be captured in a CUDA graph: it reads "
                                 f"each step's error norm back to the host (a device sync) to choose the next step, "
                                 f"so its loop is no fixed sequence of kernels; sample it eagerly (cuda_graph=False, "
                                 f"or 'auto', which does so); got cuda_graph={cuda_graph!r}")
            if reuse_buffers:
                raise ValueError(f"reuse_buffers: solver={options.solver!r} always writes each update into a new "
                                 f"tensor; leave reuse_buffers False")
            settings = AdaptiveSettings.check(adaptive)
            result, _ = run_adaptive(net, latents, class_labels, randn_like, seeds, callback, options, settings,
                                     noise_sampler, extra_args)
            return result
        if options.solver in PROGRAM_SOLVERS or (noise_sampler is not None and options.solver == "euler_ancestral"):
            if cuda_graph is not False:
                result = sample_graphed(cuda_graph, net, latents, class_labels, randn_like, seeds, callback, options,
                                        extra_args, noise_sampler)
                if result is not None:
                    return result
            return sample_program(net, latents, class_labels, randn_like, seeds, callback, options, noise_sampler,
                                  extra_args)
        if noise_sampler is not None:
            raise ValueError(f"noise_sampler: solver={options.solver!r} takes its noise from seeds or randn_like; "
                             f"noise_sampler is for 'euler_ancestral' and the other solvers that draw noise after a step (the "
                             f"ancestral and SDE ones)")
        if cuda_graph is not False:
            result = sample_graphed(cuda_graph, net, latents, class_labels, randn_like, seeds, callback, options,
                                    extra_args)
            if result is not None:
                return result
        loop, seeds = build_loop(net, latents, class_labels, randn_like, seeds, callback, options, share_tables=True)
        result = loop.run(latents, seeds, class_labels, extra_args=extra_args)
        loop.report_nonfinite(stacklevel=2)  # warnings name the caller of sample()
        loop.release()  # the loop is done: its tables' next loop may reuse its non-finite record
        return result


_GUIDED: OrderedDict = OrderedDict()  # (kind, id(net), w) -> (net, its guidance wrapper): one wrapper per pair, so
# sample(cuda_graph=...), whose graphs are cached by the net's identity, reuses its capture across calls
_GUIDED_LOCK = threading.Lock()


def _guided(net, guidance, class_labels):
    """net wrapped in classifier-free guidance with weight `guidance` (the same wrapper for the same net and w)."""
    if class_labels is None:
        raise ValueError(f"guidance: classifier-free guidance (guidance={guidance!r}) needs class_labels (guided "
                         f"towards them) or uncond_args (the unconditional counterpart of extra_args), got neither")
    return _wrapper(ClassifierFreeGuidance, net, check_real("guidance", guidance))


def _guided_by_args(net, guidance, extra_args: dict, uncond_args: dict, latents):
    """(the denoiser, its extra_args) for guidance by keyword arguments: w = 1 and w = 0 are the plain net with the
    conditional or the unconditional arguments (a batch of B); otherwise ArgumentGuidance with the paired arguments."""
    w = check_real("guidance", guidance)
    if not isinstance(latents, torch.Tensor):
        return net, extra_args  # (the loop refuses such latents, naming them, before any net call)
    paired = pair_args(extra_args, uncond_args, latents.shape[0])  # (checked even when w = 0 or 1 does not use it)
    if w == 1.0 or w == 0.0:
        return net, extra_args if w == 1.0 else uncond_args
    return _wrapper(ArgumentGuidance, net, w), paired


def _wrapper(kind, net, w):
    """The one `kind` wrapper of net with weight w (so a cached CUDA graph, keyed by the net's identity, is found)."""
    key = (kind, id(net), w)
    with _GUIDED_LOCK:  # sample() may be called from several threads
        entry = _GUIDED.get(key)
        if entry is None or entry[0] is not net:
            entry = _GUIDED[key] = (net, kind(net, w))
            while len(_GUIDED) > 8:
                _GUIDED.popitem(last=False)
        _GUIDED.move_to_end(key)
    return entry[1]
