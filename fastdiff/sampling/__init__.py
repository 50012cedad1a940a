"""fastdiff.sampling: every sampler of fastdiff, on one plan and one loop.

    plan.py      SampleOptions (sample()'s settings, checked once), StepPlan and plan_steps: the schedule and every
                 per-step scalar of a run, on the host (the leaf, with programs.py)
    programs.py  the other solvers (dpm_2, dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde, lms, ...) as per-step instructions
                 (net evaluations and combine updates) with host coefficients
    program_loop.py ProgramLoop: runs a program on device tables, every state update one fused combine op
    noise.py     BrownianNoise: a Brownian-tree noise_sampler for the SDE solvers (torchsde)
    loop.py      SamplingLoop: runs any plan on device tensors, calling the backend's ops directly (ops/bound.py);
                 build_loop checks the tensors and resolves the backend once per call
    capture.py   check_capture and EmulatedGraph: what a CUDA graph of the loop would do, checked without a GPU
    graph.py     GraphedSampler: the loop, net included, captured once in a CUDA graph and replayed
    guidance.py  denoiser wrappers: classifier-free and classifier guidance, inpainting by replacement
    general.py   sample_general: EDM's generalized sampler (VP/VE/iDDPM discretizations, scalings, 2nd-order)
    adaptive.py  solver="dpm_adaptive": DPM-Solver-12/23 with adaptive step size, its own loop (one host sync per
                 attempted step); sample_dpm_adaptive returns (x, info) with the NFE and the accepted/rejected steps
    front.py     sample(): the front door; the only module that imports the features (guidance, graphs)
    inpainting.py inpaint(): replacement (on sample) or sequential Monte Carlo (its own particle loop)

The modules import downwards only (front and inpainting at the top, plan at the bottom); tests/test_layout.py
checks that the package has no import cycle.
"""
from __future__ import annotations

from .capture import CaptureError, CaptureReport, check_capture
from .front import sample
from .general import sample_general
from .graph import GraphedSampler
from .guidance import ClassifierFreeGuidance, ClassifierGuidance, Inpainting, grad_log_p_from_logits
from .inpainting import inpaint
from .noise import BrownianNoise
from .plan import SOLVERS, SampleOptions, StepPlan, plan_steps

__all__ = ["BrownianNoise", "CaptureError", "CaptureReport", "ClassifierFreeGuidance", "ClassifierGuidance", "GraphedSampler",
           "Inpainting", "SOLVERS", "SampleOptions", "StepPlan", "check_capture", "grad_log_p_from_logits", "inpaint",
           "plan_steps", "sample", "sample_general"]
