"""Conditional generation through the denoiser interface: guided and inpainting denoisers for every sampler.

Each wrapper here is itself an EDM denoiser net(x, sigma[, class_labels]) -> D(x; sigma) that keeps the wrapped
net's sigma_min, sigma_max and round_sigma, so it works with fastdiff.sample and any other sampler that calls a
denoiser (docs/formulas.md#guidance; Ho & Salimans 2022; Dhariwal & Nichol 2021; Song et al. 2021):

- ClassifierFreeGuidance(net, w):  D_w = D(x; sigma, uncond) + w (D(x; sigma, y) - D(x; sigma, uncond)),
  both halves in one batched call of the net.
- ClassifierGuidance(net, grad_log_p, scale):  D' = D(x; sigma) + scale sigma^2 grad_x log p_sigma(y | x),
  from score(x | y) = score(x) + grad_x log p(y | x) and D = x + sigma^2 score.
- Inpainting(net, known, mask, seeds) and inpaint(...): sample x given x[mask] = known (the replacement method);
  inpaint(..., method="smc") instead runs a sequential Monte Carlo sampler that is exact as the number of
  particles and steps grow (SMCDiff, Trippe et al. 2022).

ClassifierFreeGuidance and Inpainting do device work only per evaluation (no host sync, no tensor made from
Python data, given sigma as a tensor), so a sampling loop around them can still be captured in a CUDA graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_bool, check_choice, check_output, check_real
from ..ops.reference.skip_mix import per_sample
from ..rng import INPAINT_OFFSET, MASK32, normal_from_seeds, randn, seeds_tensor

NOISE_MODES = ("level", "fixed")
INPAINT_METHODS = ("replacement", "smc")
SMC_NUM_PARTICLES = 64  # inpaint(method="smc")'s default K
SMC_NUM_STEPS = 128  # ... and its default number of steps: a stochastic sampler needs many
SMC_SCHEDULE_ARGUMENTS = ("num_steps", "sigma_min", "sigma_max", "rho", "sigmas")
NET_ATTRIBUTES = ("sigma_min", "sigma_max", "round_sigma")  # what a sampler reads from a denoiser


class DenoiserWrapper(nn.Module):
    """A denoiser around `net` with the net's sigma_min, sigma_max and round_sigma (when the net has them)."""

    def __init__(self, net):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net: expected a callable denoiser net(x, sigma[, class_labels]), got {type(net).__name__}")
        self.net = net
        for name in NET_ATTRIBUTES:
            if hasattr(net, name):
                setattr(self, name, getattr(net, name))

    def denoise(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        """The wrapped net's D(x; sigma[, class_labels]), checked to have x's shape."""
        D = self.net(x, sigma) if class_labels is None else self.net(x, sigma, class_labels)
        return check_output("net", D, x, "net(x, sigma)")


# ---------------------------------------------------------------------------------------------------------------
# Classifier-free guidance.
# ---------------------------------------------------------------------------------------------------------------

class ClassifierFreeGuidance(DenoiserWrapper):
    """D_w(x; sigma, y) = D(x; sigma, null) + w (D(x; sigma, y) - D(x; sigma, null)), one batched net call
    (docs/formulas.md#classifier-free-guidance).

    Convention: w = 1 is the plain conditional denoiser, w = 0 the unconditional one, w > 1 guides. This w is
    diffusers' `guidance_scale` and k-diffusion's `cond_scale`; Ho & Salimans (2022) write (1 + w') eps_cond -
    w' eps_uncond, so their w' is w - 1. (A combination whose weights sum to 1 is the same in D, eps and score
    form, since each is affine in the other at fixed x and sigma.)

    Each evaluation calls the net once on the batch [x; x] with sigma [sigma; sigma] and labels [y; null]; the
    result is torch.lerp(D_null, D_y, w), so w = 0 and w = 1 give D_null and D_y exactly. For w = 1 or w = 0
    only the half that is used is computed (a batch of B, not 2B).

    The unconditional label `null`:
    - null_label=None (default): an all-zero label row, which fastdiff.nets (UNet, MLP) embed to zeros, their
      unconditional input. Float labels [B, C] (one-hot or soft) get zero rows of their dtype; int labels [B]
      are first turned into float32 one-hot rows [B, num_classes], num_classes being the argument, else the
      net's `num_classes` or `label_dim`, else those of `net.model` (a preconditioner around a fastdiff net).
    - null_label=k (an int): a dedicated "null" class index k, for nets trained with one (labels must be int).
    """

    def __init__(self, net, guidance, null_label=None, *, num_classes=None):
        super().__init__(net)
        self.guidance = check_real("guidance", guidance)
        if null_label is not None and (isinstance(null_label, bool) or not isinstance(null_label, int) or null_label < 0):
            raise TypeError(f"null_label: expected None (an all-zero label row) or a non-negative int (a null class "
                            f"index), got {null_label!r}")
        self.null_label = null_label
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes: expected None or an int >= 1, got {num_classes!r}")
        self.num_classes = num_classes if num_classes is not None else _net_num_classes(net)

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        if class_labels is None:
            raise ValueError("class_labels: classifier-free guidance needs the labels to guide towards, got None "
                             "(sample(..., class_labels=...))")
        labels, null = self.label_pair(class_labels, x)
        if self.guidance == 1.0:
            return self.denoise(x, sigma, labels)
        if self.guidance == 0.0:
            return self.denoise(x, sigma, null)
        batch = x.shape[0]
        both = torch.cat([x, x])
        D = self.denoise(both, _repeat_sigma(sigma, batch), torch.cat([labels, null]))
        return torch.lerp(D[batch:], D[:batch], self.guidance)

    def label_pair(self, class_labels, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the conditional labels as the net gets them, the unconditional labels), both of one dtype and shape."""
        labels = _check_labels(class_labels, x)
        if self.null_label is not None:
            if labels.is_floating_point():
                raise TypeError(f"class_labels: with null_label={self.null_label} (a null class index) expected int "
                                f"indices of shape [{x.shape[0]}], got {labels.dtype} rows of shape {tuple(labels.shape)}")
            return labels, torch.full_like(labels, self.null_label)
        if not labels.is_floating_point():
            if self.num_classes is None:
                raise ValueError("num_classes: int class labels must become one-hot rows for the all-zero unconditional "
                                 "row, but the net has no num_classes or label_dim; pass num_classes=, one-hot float "
                                 "labels, or null_label= for a net with a null class")
            labels = F.one_hot(labels, self.num_classes).to(torch.float32)
        return labels, torch.zeros_like(labels)


class ArgumentGuidance(DenoiserWrapper):
    """Classifier-free guidance for conditioning passed as keyword arguments (fastdiff.sample's extra_args and
    uncond_args: a text encoder's encoder_hidden_states, say), as diffusers does for text:
    D_w = D(x; sigma, **uncond) + w (D(x; sigma, **cond) - D(x; sigma, **uncond)), w as in ClassifierFreeGuidance.

    It is called with the paired arguments (fastdiff.sampling.extra.pair_args: every batched tensor as [cond; uncond],
    made once per sampling call) and calls the net once on [x; x] with sigma [sigma; sigma] (and the class labels,
    when given, [y; y]: the labels are not what is guided here); the result is torch.lerp(D_uncond, D_cond, w).
    """

    def __init__(self, net, guidance):
        super().__init__(net)
        self.guidance = check_real("guidance", guidance)

    def forward(self, x: torch.Tensor, sigma, class_labels=None, **paired_args) -> torch.Tensor:
        batch = x.shape[0]
        both, sigmas = torch.cat([x, x]), _repeat_sigma(sigma, batch)
        if class_labels is None:
            D = self.net(both, sigmas, **paired_args)
        else:
            D = self.net(both, sigmas, torch.cat([class_labels, class_labels]), **paired_args)
        D = check_output("net", D, both, "net(x, sigma, **extra_args)")
        return torch.lerp(D[batch:], D[:batch], self.guidance)


def cfg(net, guidance, null_label=None, *, num_classes=None) -> ClassifierFreeGuidance:
    """Short for ClassifierFreeGuidance(net, guidance, null_label, num_classes=num_classes)."""
    return ClassifierFreeGuidance(net, guidance, null_label, num_classes=num_classes)


def _net_num_classes(net):
    """The number of classes a net declares (num_classes, or EDM's label_dim), itself or in its .model; else None."""
    for owner in (net, getattr(net, "model", None)):
        for name in ("num_classes", "label_dim"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _check_labels(class_labels, x: torch.Tensor) -> torch.Tensor:
    """int indices [B] or float rows [B, C] on x's device."""
    batch = x.shape[0]
    accepted = f"int indices of shape [{batch}] or float one-hot (or soft) rows of shape [{batch}, C]"
    if not isinstance(class_labels, torch.Tensor) or class_labels.dtype == torch.bool or class_labels.is_complex():
        got = f"dtype {class_labels.dtype}" if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
        raise TypeError(f"class_labels: expected {accepted}, got {got}")
    expected_ndim = 2 if class_labels.is_floating_point() else 1
    if class_labels.ndim != expected_ndim or class_labels.shape[0] != batch:
        raise ValueError(f"class_labels: expected {accepted}, got {class_labels.dtype} of shape {tuple(class_labels.shape)}")
    if class_labels.device != x.device:
        raise ValueError(f"class_labels: expected a tensor on x's device {x.device}, got one on {class_labels.device}")
    return class_labels


def _repeat_sigma(sigma, batch: int):
    """sigma for the batch [x; x]: a per-sample sigma ([B] or [B, 1, ...]) twice, one shared value as it is."""
    if isinstance(sigma, torch.Tensor) and sigma.ndim > 0 and sigma.shape[0] != 1:
        if sigma.shape[0] != batch:
            raise ValueError(f"sigma: expected one value or one per sample ({batch}), got shape {tuple(sigma.shape)}")
        return torch.cat([sigma, sigma])
    return sigma


# ---------------------------------------------------------------------------------------------------------------
# Classifier guidance.
# ---------------------------------------------------------------------------------------------------------------

class ClassifierGuidance(DenoiserWrapper):
    """D'(x; sigma, y) = D(x; sigma) + scale sigma^2 grad_log_p(x, sigma, y), grad_log_p = grad_x log p_sigma(y | x)
    (docs/formulas.md#classifier-guidance).

    With the exact grad log p_sigma(y | x) and scale = 1, D' is the exact class-conditional denoiser (Tweedie:
    D = x + sigma^2 grad log p_sigma(x), and grad log p(x | y) = grad log p(x) + grad log p(y | x)); scale > 1
    sharpens, as Dhariwal & Nichol's classifier scale. grad_log_p(x, sigma, class_labels) gets the net's x,
    sigma (shape [B] from fastdiff.sample) and labels, and returns a tensor of x's shape;
    `grad_log_p_from_logits` builds one from a noise-aware classifier. The net is called unconditionally,
    net(x, sigma), unless conditional_net=True (a class-conditional net guided further, as in ADM).
    """

    def __init__(self, net, grad_log_p, scale=1.0, *, conditional_net=False):
        super().__init__(net)
        if not callable(grad_log_p):
            raise TypeError(f"grad_log_p: expected a callable grad_log_p(x, sigma, class_labels), "
                            f"got {type(grad_log_p).__name__}")
        check_bool("conditional_net", conditional_net)
        self.grad_log_p = grad_log_p
        self.scale = check_real("scale", scale)
        self.conditional_net = conditional_net

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        D = self.denoise(x, sigma, class_labels if self.conditional_net else None)
        grad = check_output("grad_log_p", self.grad_log_p(x, sigma, class_labels), x, "grad_log_p(x, sigma, class_labels)")
        sigma = _per_sample(sigma, x, torch.promote_types(D.dtype, grad.dtype))
        return D + (self.scale * sigma**2) * grad


def grad_log_p_from_logits(classifier):
    """grad_log_p(x, sigma, class_labels) = grad_x log softmax(classifier(x, sigma))[y], by autograd.

    classifier(x, sigma) returns logits [B, C] of a noise-level-aware classifier (sigma as the sampler passes it).
    Int labels [B] pick their class; float rows [B, C] weight the log-probabilities (one-hot: the same). Samples
    must not interact in the classifier (no batch statistics), since the gradient is taken of the batch sum.
    Works under torch.no_grad and torch.inference_mode (the input is cloned into a normal, differentiable tensor).
    """
    if not callable(classifier):
        raise TypeError(f"classifier: expected a callable classifier(x, sigma) -> logits [B, C], got {type(classifier).__name__}")

    def grad_log_p(x: torch.Tensor, sigma, class_labels) -> torch.Tensor:
        if class_labels is None:
            raise ValueError("class_labels: classifier guidance needs the labels to guide towards, got None")
        labels = _check_labels(class_labels, x)
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            logits = classifier(x_in, sigma.clone() if isinstance(sigma, torch.Tensor) else sigma)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
                got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                raise ValueError(f"classifier: expected logits of shape [{x.shape[0]}, C], got {got}")
            log_probs = logits.log_softmax(dim=1)
            if labels.is_floating_point():
                picked = (labels.to(log_probs.dtype) * log_probs).sum()
            else:
                picked = log_probs.gather(1, labels[:, None]).sum()
            (grad,) = torch.autograd.grad(picked, x_in)
        return grad

    return grad_log_p


def _per_sample(sigma, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """sigma (a number, or one value per sample) as a tensor that broadcasts over x [B, ...]."""
    sigma = torch.as_tensor(sigma, dtype=dtype, device=x.device)
    if sigma.numel() not in (1, x.shape[0]):
        raise ValueError(f"sigma: expected one value or one per sample ({x.shape[0]}), got shape {tuple(sigma.shape)}")
    return per_sample(sigma, x)


# ---------------------------------------------------------------------------------------------------------------
# Inpainting / imputation.
# ---------------------------------------------------------------------------------------------------------------

class Inpainting(DenoiserWrapper):
    """The replacement method (Song et al. 2021, imputation): sample the unknown part of x given x[mask] = known
    (docs/formulas.md#replacement-inpainting).

    At every evaluation at noise level sigma the known part of the input is replaced by a noised copy of the
    observation, known + sigma n, and the known part of the result is set to `known`:
        x_in = where(mask, known + sigma n, x);   D' = where(mask, known, D(x_in; sigma)).
    With D' = known on the mask, any sampler's own state there stays a forward-noised copy of the observation
    and reaches `known` when the schedule ends at 0 (inpaint() also sets it exactly at the end).

    n comes from fastdiff's generator, keyed by each sample's seed (the same on any device and in any batch):
    - noise="level" (default): fresh at every noise level, as Song et al. redraw it at every step: sample b at
      level sigma_b draws at offset INPAINT_OFFSET + 1 + (the float32 bit pattern of sigma_b). A level seen
      twice (Heun's t_next, then the next step's t_hat) sees the same n.
    - noise="fixed": one n per sample for the whole run, at offset INPAINT_OFFSET.

    mask: 1 (True) = known, 0 = to sample; bool, or numbers that are all 0 or 1; broadcastable to known's shape.
    known: [B, ...], the shape of the samples; its values where mask = 0 are never read.

    The replacement method is an approximation: the net's posterior sees the noised observation known + sigma n
    where the exact conditional has the clean one, so at large sigma the unknown part follows nearly the
    unconditional flow and may settle in a mode the observation rules out. It is exact when the known and
    unknown parts are independent under the data; stochastic sampling (S_churn) lessens the bias, and "level"
    noise more so than "fixed" (tests/test_guidance.py measures this on Gaussian mixtures). For the exact
    conditional, use inpaint(..., method="smc") (sequential Monte Carlo; K network evaluations per step).
    """

    def __init__(self, net, known: torch.Tensor, mask, seeds, *, noise="level"):
        super().__init__(net)
        check_choice("noise", noise, NOISE_MODES)
        known = _check_known(known)
        self.register_buffer("known", known)
        self.register_buffer("mask", _check_mask(mask, known))
        self.register_buffer("seeds", seeds_tensor(seeds, known.shape[0], known.device))
        self.register_buffer("fixed_noise", randn(self.seeds, known.shape, offset=INPAINT_OFFSET, dtype=known.dtype)
                             if noise == "fixed" else None)  # the reference stream, as for "level" noise

    def forward(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        if x.shape != self.known.shape:
            raise ValueError(f"x: expected the shape of known {tuple(self.known.shape)}, got {tuple(x.shape)}")
        noised = self.known.to(x.dtype) + _per_sample(sigma, x, x.dtype) * self.observation_noise(sigma, x)
        D = self.denoise(torch.where(self.mask, noised, x), sigma, class_labels)
        return torch.where(self.mask, self.known.to(D.dtype), D)

    def observation_noise(self, sigma, x: torch.Tensor) -> torch.Tensor:
        """n of the evaluation at sigma (one value or one per sample), in x's shape and dtype."""
        if self.fixed_noise is not None:
            return self.fixed_noise.to(x.dtype)
        sigma = torch.as_tensor(sigma, device=x.device)
        levels = sigma.to(torch.float32).reshape(-1)
        if levels.numel() not in (1, x.shape[0]):
            raise ValueError(f"sigma: expected one value or one per sample ({x.shape[0]}), got shape {tuple(sigma.shape)}")
        offset_lo = (levels.view(torch.int32).to(torch.int64) + 1) & MASK32  # INPAINT_OFFSET's low half is 0
        offset_lo = offset_lo.expand(x.shape[0])[:, None]  # one offset per sample
        return normal_from_seeds(self.seeds, tuple(x.shape), offset_lo, INPAINT_OFFSET >> 32, x.dtype)


def _check_known(known) -> torch.Tensor:
    if not isinstance(known, torch.Tensor) or not known.is_floating_point() or known.ndim < 1:
        got = f"{known.dtype} of shape {tuple(known.shape)}" if isinstance(known, torch.Tensor) else type(known).__name__
        raise TypeError(f"known: expected a floating-point tensor of shape [B, ...] (the observed values), got {got}")
    return known


def _check_mask(mask, known: torch.Tensor) -> torch.Tensor:
    """A bool mask broadcastable to known's shape (1 = known) from bool or 0/1 numbers, on known's device."""
    if not isinstance(mask, torch.Tensor) or mask.is_complex():
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask: expected a bool or 0/1 tensor (1 = known), got {got}")
    if mask.device != known.device:
        raise ValueError(f"mask: expected a tensor on known's device {known.device}, got one on {mask.device}")
    try:
        shape = torch.broadcast_shapes(mask.shape, known.shape)
    except RuntimeError:
        shape = None
    if shape != known.shape:
        raise ValueError(f"mask: expected a shape that broadcasts to known's {tuple(known.shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"mask: expected only 0 (sample) and 1 (known), got values {mask.unique()[:8].tolist()}")
        mask = mask != 0
    if not bool(torch.where(mask, known, 0.0).isfinite().all()):
        raise ValueError("known: expected finite values wherever mask is 1")
    return mask
