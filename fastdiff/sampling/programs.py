"""Solver programs (a leaf, like plan.py): k-diffusion's other solvers as a list of instructions per step, every
coefficient computed on the host from the schedule, in float64 (docs/formulas.md#solver-programs).

A program runs on registers that hold tensors: "x" is the state, "D" the step's first network result, "y" a
stage point, "E" the network's result there, "D1"... the earlier steps' results (multistep solvers), "d"... the
stored derivatives (LMS) and "xp" a corrected state (UniPC). Three instructions:

    Eval(dst, src, sigma)        dst = D(src; sigma)
    Combine(dst, src, history, coeffs, noise)
                                 dst = a src + w0 h0 + ... + w3 h3 + n z    (coeffs = (a, w0, w1, w2, w3, n);
                                 one fused op, fastdiff.ops combine; z is the step's noise, drawn where `noise` says)
    Move(dst, src)               dst = src (no copy: the tensor itself)

After each step the registers named in a program's `rotate` chains shift by one (("D", "D1", "D2") makes D2 = D1
and D1 = D), so a multistep solver finds its earlier results where its next step reads them. Every update of the
state is one Combine, so each is one kernel with its noise included.

Each solver's formulas are k-diffusion 0.1.1's (Crowson, k_diffusion/sampling.py) written in EDM's variables;
tests/test_programs.py runs them against k-diffusion's own functions on identical sigmas and noise. UniPC's are
diffusers' UniPCMultistepScheduler's (k-diffusion has none), and tests/test_unipc.py runs them against its loop.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

NOISE_END, NOISE_MID = "end", "mid"  # a step's noise draws: at SAMPLER_OFFSET + i, and its substep's (dpmpp_sde)


@dataclass(frozen=True)
class Eval:
    dst: str
    src: str
    sigma: float


@dataclass(frozen=True)
class Combine:
    dst: str
    src: str
    history: tuple[str, ...]
    coeffs: tuple[float, float, float, float, float, float]
    noise: str | None = None  # None, NOISE_END or NOISE_MID
    noise_levels: tuple[float, float] | None = None  # (sigma, sigma_next): what a noise_sampler is called with


@dataclass(frozen=True)
class Move:
    dst: str
    src: str


@dataclass(frozen=True)
class Program:
    """A sampling run: the schedule t (N+1 levels), the instructions of each of its N steps, the register chains to
    rotate after each step, and where the state starts (latents times start_scale, default t[0])."""

    solver: str
    t: tuple[float, ...]
    steps: tuple[tuple, ...]
    rotate: tuple[tuple[str, ...], ...] = ()
    start_scale: float | None = None
    # A churn solver's randn_like(x) is called at every step, churn or not, as edm_sampler and k-diffusion's
    # sample_dpm_2 draw it, so that a user's noise function is consumed in their order (seeded noise is not affected).
    draw_each_step: bool = False
    # How solver_program made it (its settings, the schedule aside), so scaled() can make it again on other levels;
    # not part of what a program is (equality, hashing).
    recipe: tuple = dataclasses.field(default=(), compare=False, repr=False)

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def nfe(self) -> int:
        return sum(isinstance(op, Eval) for step in self.steps for op in step)

    def adds_noise(self) -> bool:
        return any(isinstance(op, Combine) and op.noise is not None for step in self.steps for op in step)

    def scaled(self, factor: float) -> "Program":
        """The program of the same solver and settings on the schedule (and churn levels, and start_scale) times
        factor: the same structure, other values (what fastdiff.check_capture's second call runs)."""
        if not self.recipe:
            raise ValueError(f"scaled: this {self.solver!r} program was not made by solver_program, so it cannot be "
                             f"made again on other noise levels")
        settings = dict(self.recipe)
        churn = settings.pop("churn", None)
        if churn is not None:
            churn = [(sigma_hat * factor, std * factor) for sigma_hat, std in churn]
        program = solver_program(self.solver, [v * factor for v in self.t], churn=churn, **settings)
        start = None if self.start_scale is None else self.start_scale * factor
        return dataclasses.replace(program, start_scale=start)

    def structure(self) -> tuple:
        """What a captured loop fixes: every instruction but its values (registers, history, noise, which are
        present), and the rotation."""
        def shape(op):
            if isinstance(op, Combine):
                return ("combine", op.dst, op.src, op.history, op.noise)
            return (type(op).__name__.lower(), op.dst, op.src)
        return (tuple(tuple(shape(op) for op in step) for step in self.steps), self.rotate, self.start_scale is not None)


def _combine(dst, src, history=(), weights=(), a=1.0, n=0.0, noise=None, levels=None) -> Combine:
    """A Combine with its six coefficients; noise is dropped when its std is 0."""
    weights = tuple(float(w) for w in weights)
    coeffs = (float(a), *weights, *(0.0,) * (4 - len(weights)), float(n))
    if n == 0.0:
        noise, levels = None, None
    return Combine(dst, src, tuple(history), coeffs, noise, levels)


def _euler(dst, src, denoised, sigma, sigma_to) -> Combine:
    """The Euler step of dx/dsigma = (x - D) / sigma from sigma to sigma_to: D + (sigma_to / sigma) (src - D)."""
    ratio = sigma_to / sigma
    return _combine(dst, src, (denoised,), (1.0 - ratio,), a=ratio)


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) with sigma_down^2 + sigma_up^2 = sigma_next^2, sigma_up = min(sigma_next, eta
    sigma_next sqrt(1 - sigma_next^2 / sigma^2)): k-diffusion's get_ancestral_step (eta = 0: no noise)."""
    if not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(max(sigma_next**2 - up**2, 0.0)), up


# --------------------------------------------------------------------------------------------------------------
# The solvers. Each takes the schedule t (N+1 host floats, the last usually 0) and its settings; returns a Program.
# --------------------------------------------------------------------------------------------------------------

def dpm_2(t, churn=None) -> Program:
    """DPM-Solver-2 (k-diffusion's sample_dpm_2): an Euler step to the geometric midpoint sigma_mid =
    sqrt(t_hat t_next), the network there, and the step from x with the midpoint's slope; a step to 0 is Euler.
    churn: (t_hat_i, noise_std_i) per step, EDM's churn as plan.py makes it (S_noise included), or None."""
    steps = []
    for i in range(len(t) - 1):
        sigma, sigma_next = t[i], t[i + 1]
        ops = []
        sigma_hat, noise_std = churn[i] if churn is not None else (sigma, 0.0)
        if noise_std > 0:
            ops.append(_combine("x", "x", n=noise_std, noise=NOISE_END, levels=(sigma, sigma_hat)))
        ops.append(Eval("D", "x", sigma_hat))
        if sigma_next == 0:
            ops.append(_euler("x", "x", "D", sigma_hat, sigma_next))
        else:
            sigma_mid = math.exp(0.5 * (math.log(sigma_hat) + math.log(sigma_next)))
            k = (sigma_next - sigma_hat) / sigma_mid  # x_next = x + (sigma_next - sigma_hat) (y - E) / sigma_mid
            ops += [_euler("y", "x", "D", sigma_hat, sigma_mid), Eval("E", "y", sigma_mid),
                    _combine("x", "x", ("y", "E"), (k, -k))]
        steps.append(tuple(ops))
    return Program("dpm_2", tuple(t), tuple(steps), draw_each_step=True)


def euler_ancestral(t, eta: float = 1.0, S_noise: float = 1.0) -> Program:
    """The Euler step to sigma_down, then noise of std S_noise sigma_up (k-diffusion's sample_euler_ancestral): the
    program form of solver="euler_ancestral", which sample() runs when a noise_sampler gives its noise."""
    steps = []
    for i in range(len(t) - 1):
        sigma, sigma_next = t[i], t[i + 1]
        down, up = ancestral_step(sigma, sigma_next, eta)
        ratio = down / sigma
        steps.append((Eval("D", "x", sigma), _combine("x", "x", ("D",), (1.0 - ratio,), a=ratio, n=S_noise * up,
                                                      noise=NOISE_END, levels=(sigma, sigma_next))))
    return Program("euler_ancestral", tuple(t), tuple(steps))


def dpm_2_ancestral(t, eta: float = 1.0, S_noise: float = 1.0) -> Program:
    """DPM-Solver-2 to sigma_down, then noise of std S_noise sigma_up (k-diffusion's sample_dpm_2_ancestral)."""
    steps = []
    for i in range(len(t) - 1):
        sigma, sigma_next = t[i], t[i + 1]
        down, up = ancestral_step(sigma, sigma_next, eta)
        noise = dict(n=S_noise * up, noise=NOISE_END, levels=(sigma, sigma_next))
        ops = [Eval("D", "x", sigma)]
        if down == 0:
            ratio = down / sigma
            ops.append(_combine("x", "x", ("D",), (1.0 - ratio,), a=ratio, **noise))
        else:
            sigma_mid = math.exp(0.5 * (math.log(sigma) + math.log(down)))
            k = (down - sigma) / sigma_mid
            ops += [_euler("y", "x", "D", sigma, sigma_mid), Eval("E", "y", sigma_mid),
                    _combine("x", "x", ("y", "E"), (k, -k), **noise)]
        steps.append(tuple(ops))
    return Program("dpm_2_ancestral", tuple(t), tuple(steps))


def dpmpp_2s_ancestral(t, eta: float = 1.0, S_noise: float = 1.0) -> Program:
    """DPM-Solver++(2S) to sigma_down (the network at the log-midpoint, its result extrapolated to sigma_down),
    then noise of std S_noise sigma_up (k-diffusion's sample_dpmpp_2s_ancestral)."""
    steps = []
    for i in range(len(t) - 1):
        sigma, sigma_next = t[i], t[i + 1]
        down, up = ancestral_step(sigma, sigma_next, eta)
        noise = dict(n=S_noise * up, noise=NOISE_END, levels=(sigma, sigma_next)) if sigma_next > 0 else {}
        ops = [Eval("D", "x", sigma)]
        if down == 0:
            ratio = down / sigma
            ops.append(_combine("x", "x", ("D",), (1.0 - ratio,), a=ratio, **noise))
        else:
            h = math.log(sigma / down)  # lambda_next - lambda, lambda = -log sigma
            sigma_s = sigma * math.exp(-h / 2)
            ops += [_combine("y", "x", ("D",), (-math.expm1(-h / 2),), a=sigma_s / sigma),
                    Eval("E", "y", sigma_s),
                    _combine("x", "x", ("E",), (-math.expm1(-h),), a=down / sigma, **noise)]
        steps.append(tuple(ops))
    return Program("dpmpp_2s_ancestral", tuple(t), tuple(steps))


def dpmpp_sde(t, eta: float = 1.0, S_noise: float = 1.0, noise_levels=None) -> Program:
    """DPM-Solver++ (stochastic, 2 network evaluations a step; k-diffusion's sample_dpmpp_sde with r = 1/2): an
    ancestral DPM-Solver++(1) step to the log-midpoint s with noise, the network there, and an ancestral step from
    x to t_next with the midpoint's result. noise_levels(i) -> ((sigma, sigma_s), (sigma, sigma_next)): the values
    its two noise draws are known by (k-diffusion computes them in the sigmas' dtype; see solver_program)."""
    steps = []
    for i in range(len(t) - 1):
        sigma, sigma_next = t[i], t[i + 1]
        ops = [Eval("D", "x", sigma)]
        if sigma_next == 0:
            ops.append(_euler("x", "x", "D", sigma, sigma_next))
        else:
            h = math.log(sigma / sigma_next)
            sigma_s = sigma * math.exp(-h / 2)
            mid_levels, end_levels = noise_levels(i) if noise_levels else ((sigma, sigma_s), (sigma, sigma_next))
            down, up = ancestral_step(sigma, sigma_s, eta)
            ops += [_combine("y", "x", ("D",), (1.0 - down / sigma,), a=down / sigma, n=S_noise * up,
                             noise=NOISE_MID, levels=mid_levels),
                    Eval("E", "y", sigma_s)]
            down, up = ancestral_step(sigma, sigma_next, eta)  # fac = 1 / (2 r) = 1: the update uses E alone
            ops.append(_combine("x", "x", ("E",), (1.0 - down / sigma,), a=down / sigma, n=S_noise * up,
                                noise=NOISE_END, levels=end_levels))
        steps.append(tuple(ops))
    return Program("dpmpp_sde", tuple(t), tuple(steps))


def dpmpp_2m_sde(t, eta: float = 1.0, S_noise: float = 1.0, solver_type: str = "midpoint") -> Program:
    """DPM-Solver++(2M) SDE (k-diffusion's sample_dpmpp_2m_sde): with h = log(sigma / sigma_next),
    x_next = (sigma_next / sigma) e^(-eta h) x + (1 - e^(-h - eta h)) D + k (D - D_prev) + noise of std
    S_noise sigma_next sqrt(1 - e^(-2 eta h)); k from solver_type "midpoint" or "heun". A step to 0 lands on D."""
    steps, h_last, first = [], None, True
    for i in range(len(t) - 1):
        sigma, sigma_next = t[i], t[i + 1]
        ops = [Eval("D", "x", sigma)]
        if sigma_next == 0:
            ops.append(Move("x", "D"))
        else:
            h = math.log(sigma / sigma_next)
            eta_h = eta * h
            b = -math.expm1(-h - eta_h)
            history, weights = ("D",), [b]
            if not first:
                r = h_last / h
                k = (0.5 * b if solver_type == "midpoint" else b / (-h - eta_h) + 1) / r
                history, weights = ("D", "D1"), [b + k, -k]
            n = sigma_next * math.sqrt(-math.expm1(-2 * eta_h)) * S_noise if eta else 0.0
            ops.append(_combine("x", "x", history, weights, a=sigma_next / sigma * math.exp(-eta_h), n=n,
                                noise=NOISE_END, levels=(sigma, sigma_next)))
            h_last = h
        first = False
        steps.append(tuple(ops))
    return Program("dpmpp_2m_sde", tuple(t), tuple(steps), rotate=(("D", "D1"),))


def dpmpp_3m_sde(t, eta: float = 1.0, S_noise: float = 1.0) -> Program:
    """DPM-Solver++(3M) SDE (k-diffusion's sample_dpmpp_3m_sde): first order on the first step, second on the
    next, third from then on, from D and the two earlier results; noise as dpmpp_2m_sde's. A step to 0 lands on D."""
    steps, hs = [], []  # hs: the earlier steps' h, latest last (None for a step to 0, as k-diffusion keeps it)
    h = None
    for i in range(len(t) - 1):
        sigma, sigma_next = t[i], t[i + 1]
        ops = [Eval("D", "x", sigma)]
        h_1, h_2 = (hs[-1] if hs else None), (hs[-2] if len(hs) > 1 else None)
        if sigma_next == 0:
            ops.append(Move("x", "D"))
        else:
            h = math.log(sigma / sigma_next)
            h_eta = h * (eta + 1)
            a, b = math.exp(-h_eta), -math.expm1(-h_eta)
            phi_2 = math.expm1(-h_eta) / h_eta + 1
            phi_3 = phi_2 / h_eta - 0.5
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                alpha = phi_2 * (1 + r0 / (r0 + r1)) - phi_3 / (r0 + r1)  # phi_2 d1 - phi_3 d2 = alpha d1_0 + beta d1_1
                beta = -phi_2 * r0 / (r0 + r1) + phi_3 / (r0 + r1)
                history, weights = ("D", "D1", "D2"), [b + alpha / r0, -alpha / r0 + beta / r1, -beta / r1]
            elif h_1 is not None:
                r = h_1 / h
                history, weights = ("D", "D1"), [b + phi_2 / r, -phi_2 / r]
            else:
                history, weights = ("D",), [b]
            n = sigma_next * math.sqrt(-math.expm1(-2 * h * eta)) * S_noise if eta else 0.0
            ops.append(_combine("x", "x", history, weights, a=a, n=n, noise=NOISE_END, levels=(sigma, sigma_next)))
        hs.append(h)
        steps.append(tuple(ops))
    return Program("dpmpp_3m_sde", tuple(t), tuple(steps), rotate=(("D", "D1", "D2"),))


def lms_coefficient(t, i: int, j: int, order: int) -> float:
    """The weight of the derivative at t[i - j] in the order-`order` Adams-Bashforth step from t[i] to t[i+1]: the
    integral over [t[i], t[i+1]] of the Lagrange basis polynomial of node t[i - j] on t[i], ..., t[i - order + 1]
    (exact: the polynomial, of degree < 4, is expanded about t[i] and integrated in closed form, in float64)."""
    nodes = [t[i - k] - t[i] for k in range(order)]  # in u = s - t[i], so the integral runs from 0 (no cancellation)
    coefficients = [1.0]  # of the basis polynomial in u, lowest degree first
    for k, node in enumerate(nodes):
        if k != j:
            scale = 1.0 / (nodes[j] - node)
            shifted = [0.0] + coefficients  # times u
            coefficients = [(shifted[m] - node * (coefficients[m] if m < len(coefficients) else 0.0)) * scale
                            for m in range(len(shifted))]
    h = t[i + 1] - t[i]
    return sum(c * h ** (m + 1) / (m + 1) for m, c in enumerate(coefficients))


def lms(t, order: int = 4) -> Program:
    """Linear multistep (Adams-Bashforth in sigma, k-diffusion's sample_lms): d_i = (x - D) / sigma_i is stored and
    x_next = x + sum_j c_ij d_(i-j) over the last min(i + 1, order) derivatives."""
    names = ("d", "d1", "d2", "d3")[:order]
    steps = []
    for i in range(len(t) - 1):
        sigma = t[i]
        current = min(i + 1, order)
        weights = [lms_coefficient(t, i, j, current) for j in range(current)]
        steps.append((Eval("D", "x", sigma), _combine("d", "x", ("D",), (-1.0 / sigma,), a=1.0 / sigma),
                      _combine("x", "x", names[:current], weights)))
    return Program("lms", tuple(t), tuple(steps), rotate=(names,))


def _phi_terms(hh: float, count: int) -> list[float]:
    """g_1, ..., g_count with g_k = (e^hh - sum_(j <= k) hh^j / j!) / hh^k = sum_(j > k) hh^(j - k) / j!: the
    remainders of e^hh's series that UniPC's B(h) conditions divide by. Summed as a series for |hh| < 1, where the
    recursion g_k = g_(k-1) / hh - 1 / k! (diffusers') loses digits to cancellation, and by that recursion above."""
    if abs(hh) < 1.0:
        terms = []
        for k in range(1, count + 1):
            total, term = 0.0, 1.0 / math.factorial(k)
            for j in range(k + 1, k + 40):  # |hh|^40 / 40! is far below float64's epsilon
                term *= hh / j
                total += term
            terms.append(total)
        return terms
    g, terms = math.expm1(hh) / hh - 1.0, []
    for k in range(1, count + 1):
        terms.append(g)
        g = g / hh - 1.0 / math.factorial(k + 1)
    return terms


def _unipc_update(sigma_s0: float, sigma_t: float, earlier: list[float], order: int, corrector: bool):
    """One UniP (predictor) or UniC (corrector) update of UniPC-bh2 in data prediction from sigma_s0 to sigma_t,
    in EDM's variables (lambda = -ln sigma): (a, c0, cs, c_new) such that

        x_t = a x_s0 + c0 D_s0 + sum_k cs[k] D_k (+ c_new D_t for the corrector)

    with D_s0 the result at sigma_s0, D_k the results at the earlier levels earlier[k] (k = 1 .. order - 1; the
    latest first) and D_t the result at sigma_t (the corrector's new evaluation). See docs/formulas.md#unipc."""
    h = math.log(sigma_s0 / sigma_t)  # lambda_t - lambda_s0 > 0
    ratio = sigma_t / sigma_s0  # e^-h
    B = -math.expm1(-h)  # -B(h) with B(h) = e^-h - 1 (bh2); kept positive here
    r = [math.log(sigma_s0 / s) / h for s in earlier]  # (lambda_k - lambda_s0) / h, each < 0
    size = order if corrector else order - 1  # unknown rhos
    if size == 0:
        rho = []
    elif (corrector and order == 1) or (not corrector and order == 2):
        rho = [0.5]  # diffusers' (and the paper's) fixed choice where a single rho is needed
    else:
        g = _phi_terms(-h, size)
        b = [g[k] * math.factorial(k + 1) / -B for k in range(size)]  # g_k k! / B(h)
        nodes = r + [1.0] if corrector else r
        R = np.array([[node**row for node in nodes[:size]] for row in range(size)], dtype=np.float64)
        rho = [float(v) for v in np.linalg.solve(R, np.array(b, dtype=np.float64))]
    # x_t = ratio x + (1 - ratio) D_s0 + B (sum_k rho_k (D_k - D_s0) / r_k [+ rho_last (D_t - D_s0)])
    cs = [B * rho[k] / r[k] for k in range(len(r))]
    c0 = (1.0 - ratio) - sum(cs)
    c_new = None
    if corrector:
        c_new = B * rho[-1]
        c0 -= c_new
    return ratio, c0, cs, c_new


def unipc_orders(num_steps: int, order: int) -> list[int]:
    """The predictor order of each step (diffusers' UniPCMultistepScheduler with lower_order_final): warm-up from
    1 on the first step, and at most the number of steps left, so the last step is first order."""
    return [min(order, num_steps - i, i + 1) for i in range(num_steps)]


def unipc(t, order: int = 2) -> Program:
    """UniPC (Zhao et al. 2023) as diffusers' UniPCMultistepScheduler runs it by default: data prediction, B(h) =
    e^-h - 1 ("bh2"), predictor UniP-p with p = min(order, steps done + 1, steps left), and the corrector UniC on
    every step but the first, reusing the network's result at the predicted point.

    Registers: "x" the predicted state (where the network is evaluated), "xp" the corrected state of the previous
    step (diffusers' last_sample) and then of this one, "D", "D1", "D2", "D3" this step's and earlier results.
    Step i: D = D(x; t_i); xp = UniC(xp, D1.., D) (the state at t_i corrected with D, of the previous predictor's
    order; step 0: xp = x); x = UniP(xp, D, D1..) to t_(i+1). A step to 0 is first order and lands on D: its
    corrector, whose result the step would multiply by t_(i+1) / t_i = 0, is left out."""
    N = len(t) - 1
    for i in range(N):
        if not t[i] > t[i + 1]:
            raise ValueError(f"sigmas: solver='unipc' needs strictly decreasing levels (a zero-length step has no "
                             f"log-step to divide by), got t[{i}] = {t[i]} and t[{i + 1}] = {t[i + 1]}")
    orders = unipc_orders(N, order)
    results = ("D", "D1", "D2", "D3")
    steps = []
    for i in range(N):
        sigma, sigma_next = t[i], t[i + 1]
        ops = [Eval("D", "x", sigma)]
        if sigma_next == 0:
            ops.append(Move("x", "D"))
            steps.append(tuple(ops))
            continue
        if i == 0:
            ops.append(Move("xp", "x"))
        else:
            p = orders[i - 1]  # UniC-p after a UniP-p step from t_(i-1): D1 at t_(i-1), D2.. before it
            a, c0, cs, c_new = _unipc_update(t[i - 1], sigma, [t[i - 1 - k] for k in range(1, p)], p, corrector=True)
            ops.append(_combine("xp", "xp", results[:p + 1], (c_new, c0, *cs), a=a))
        p = orders[i]
        a, c0, cs, _ = _unipc_update(sigma, sigma_next, [t[i - k] for k in range(1, p)], p, corrector=False)
        ops.append(_combine("x", "xp", results[:p], (c0, *cs), a=a))
        steps.append(tuple(ops))
    return Program("unipc", tuple(t), tuple(steps), rotate=(results,))


PROGRAM_SOLVERS = ("dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde",
                   "lms", "unipc")
ETA_SOLVERS = ("dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde")
SOLVER_TYPES = ("midpoint", "heun")
LMS_ORDERS = (1, 2, 3, 4)
UNIPC_ORDERS = (1, 2, 3)


def k_diffusion_levels(sigma: float, sigma_next: float, dtype: torch.dtype) -> tuple[tuple, tuple]:
    """The noise levels dpmpp_sde's two draws are known by in k-diffusion, which computes them in the sigmas' dtype:
    (sigma_fn(t), sigma_fn(s)) and (sigma_fn(t), sigma_fn(t_next)) with t = -log sigma, s = t + h / 2. A noise_sampler
    (a Brownian tree) given these values returns what k-diffusion's call with it returns."""
    sigma_t, sigma_n = torch.tensor(sigma, dtype=dtype), torch.tensor(sigma_next, dtype=dtype)
    t, t_next = -sigma_t.log(), -sigma_n.log()
    s = t + (t_next - t) * 0.5
    fn = lambda v: float((-v).exp())  # noqa: E731
    return (fn(t), fn(s)), (fn(t), fn(t_next))


def solver_program(solver: str, t: list[float], *, eta=None, S_noise: float = 1.0, churn=None, solver_type=None,
                   order=None, state_dtype: torch.dtype = torch.float32) -> Program:
    """The program of a solver in PROGRAM_SOLVERS on the schedule t (host floats), its settings checked before.
    Programs are immutable, so the last few are kept (a sampling call with the schedule and settings of an earlier one
    does not compute its coefficients again)."""
    churn = None if churn is None else tuple(map(tuple, churn))
    return _cached_program(solver, tuple(t), eta, S_noise, churn, solver_type, order, state_dtype)


@functools.lru_cache(maxsize=32)
def _cached_program(solver, t, eta, S_noise, churn, solver_type, order, state_dtype) -> Program:
    recipe = (("eta", eta), ("S_noise", S_noise), ("churn", churn), ("solver_type", solver_type), ("order", order),
              ("state_dtype", state_dtype))
    return dataclasses.replace(_solver_program(solver, list(t), eta=eta, S_noise=S_noise, churn=churn,
                                               solver_type=solver_type, order=order, state_dtype=state_dtype),
                               recipe=recipe)


def _solver_program(solver: str, t: list[float], *, eta, S_noise, churn, solver_type, order, state_dtype) -> Program:
    eta = 1.0 if eta is None else eta
    if solver == "dpm_2":
        return dpm_2(t, churn)
    if solver == "euler_ancestral":
        return euler_ancestral(t, eta, S_noise)
    if solver == "dpm_2_ancestral":
        return dpm_2_ancestral(t, eta, S_noise)
    if solver == "dpmpp_2s_ancestral":
        return dpmpp_2s_ancestral(t, eta, S_noise)
    if solver == "dpmpp_sde":
        return dpmpp_sde(t, eta, S_noise, noise_levels=lambda i: k_diffusion_levels(t[i], t[i + 1], state_dtype))
    if solver == "dpmpp_2m_sde":
        return dpmpp_2m_sde(t, eta, S_noise, solver_type or "midpoint")
    if solver == "dpmpp_3m_sde":
        return dpmpp_3m_sde(t, eta, S_noise)
    if solver == "lms":
        return lms(t, order or 4)
    if solver == "unipc":
        return unipc(t, order or 2)
    raise ValueError(f"solver: expected one of {', '.join(map(repr, PROGRAM_SOLVERS))}, got {solver!r}")
