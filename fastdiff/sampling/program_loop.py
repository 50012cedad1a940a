"""The loop of the solver programs (fastdiff.sampling.programs): k-diffusion's multistage, multistep and SDE solvers
run on device tables, every update of the state one fused `combine` op called directly (fastdiff.ops.bound).

Like SamplingLoop (loop.py), a ProgramLoop is made once per plan and batch shape: the coefficients of every
Combine and the noise levels of every Eval live in device tables made once, so run() reads only views of them,
never branches on a tensor value and never syncs; its noise comes from fastdiff's counter-based generator (step i's
at SAMPLER_OFFSET + i, a substep's at SUBSTEP_OFFSET + i), or from randn_like(x), or from a k-diffusion style
noise_sampler(sigma, sigma_next).
"""
from __future__ import annotations

import torch

from .._nonfinite import NonfiniteCheck, steps_where
from .._validate import check_output
from ..ops.bound import bound
from ..rng import SAMPLER_OFFSET, SUBSTEP_OFFSET
from .programs import NOISE_END, NOISE_MID, Combine, Eval, Move, Program


class ProgramLoop:
    """A Program's loop for one batch shape and state dtype; run() as often as wanted."""

    def __init__(self, net, program: Program, latents_like: torch.Tensor, state_dtype: torch.dtype, *,
                 randn_like=None, noise_sampler=None, callback=None, nonfinite="warn", backend="reference"):
        self.net, self.program, self.state_dtype = net, program, state_dtype
        self.randn_like, self.noise_sampler, self.callback, self.backend = randn_like, noise_sampler, callback, backend
        self.combine = bound(backend).combine
        self.shape, self.device = tuple(latents_like.shape), latents_like.device
        batch, N = self.shape[0], program.num_steps

        coeffs, sigmas = [], []
        for step in program.steps:
            for op in step:
                if isinstance(op, Combine):
                    coeffs.append(op.coeffs)
                elif isinstance(op, Eval):
                    sigmas.append(op.sigma)
        start = program.t[0] if program.start_scale is None else program.start_scale
        flat = torch.tensor([start, *(c for row in coeffs for c in row)], dtype=torch.float64)
        flat = flat.to(device=self.device, dtype=state_dtype)
        self.start = flat[0]
        coeff_rows = flat[1:].view(len(coeffs), 6).unbind(0) if coeffs else ()
        sigma_table = torch.tensor(sigmas, dtype=torch.float64).to(device=self.device, dtype=state_dtype)
        sigma_rows = sigma_table[:, None].expand(len(sigmas), batch).contiguous().unbind(0) if sigmas else ()
        offsets = torch.arange(N, dtype=torch.int64, device=self.device)
        self._end_offsets, self._mid_offsets = (offsets + SAMPLER_OFFSET).unbind(0), (offsets + SUBSTEP_OFFSET).unbind(0)

        # Each step's instructions with their table views: ("eval", dst, src, sigma [B], sigma as a float),
        # ("combine", dst, src, history, coeffs [6], noise, noise levels), ("move", dst, src).
        self._steps, c, s = [], 0, 0
        for step in program.steps:
            compiled = []
            for op in step:
                if isinstance(op, Eval):
                    compiled.append(("eval", op.dst, op.src, sigma_rows[s], op.sigma))
                    s += 1
                elif isinstance(op, Combine):
                    compiled.append(("combine", op.dst, op.src, op.history, coeff_rows[c], op.noise, op.noise_levels))
                    c += 1
                elif isinstance(op, Move):
                    compiled.append(("move", op.dst, op.src))
                else:
                    raise TypeError(f"program: unknown instruction {op!r}")
            self._steps.append(tuple(compiled))
        self.finite_check = NonfiniteCheck(nonfinite, N, state_dtype, self.device)
        self._records = self.finite_check.stage_outs() if latents_like.numel() > 0 else None

    @torch.no_grad()  # sampling never needs autograd (docs/sampling.md#no-autograd)
    def run(self, latents: torch.Tensor, seeds=None, class_labels=None, *, out=None, extra_args=None) -> torch.Tensor:
        """Sample from latents (seeds: int64 [B] on the device, when the program adds noise from fastdiff's
        generator); the result goes into `out` when given, else it is returned in latents' dtype."""
        net, combine, callback, records = self.net, self.combine, self.callback, self._records
        randn_like, noise_sampler, program = self.randn_like, self.noise_sampler, self.program
        shape, device, state_dtype = latents.shape, self.device, self.state_dtype
        kwargs = extra_args or {}

        def denoise(x, sigma):
            denoised = net(x, sigma, **kwargs) if class_labels is None else net(x, sigma, class_labels, **kwargs)
            if type(denoised) is not torch.Tensor or denoised.shape != shape or denoised.device != device or \
                    not denoised.is_floating_point():
                check_output("net", denoised, x, "net(x, sigma)")
            return denoised.contiguous()

        def level(value):
            return torch.tensor(value, dtype=state_dtype, device=device)

        regs = {"x": torch.mul(latents, self.start, out=torch.empty(shape, dtype=state_dtype, device=device))}
        if records is not None:
            torch.aminmax(regs["x"], out=records[0])
        for i, step in enumerate(self._steps):
            reported = callback is None
            for op in step:
                kind = op[0]
                if kind == "eval":
                    _, dst, src, sigma, sigma_value = op
                    regs[dst] = denoise(regs[src], sigma)
                    if not reported:
                        callback({"x": regs[src], "i": i, "sigma": program.t[i], "sigma_hat": sigma_value,
                                  "denoised": regs[dst]})
                        reported = True
                elif kind == "combine":
                    _, dst, src, history, coeffs, noise, levels = op
                    h = [regs[name] for name in history] + [None] * (4 - len(history))
                    x = regs[src]
                    step_seeds = offset = drawn = None
                    if noise is not None:
                        if randn_like is not None:
                            drawn = check_output("randn_like", randn_like(x), x, "randn_like(x)").contiguous()
                        elif noise_sampler is not None:
                            drawn = check_output("noise_sampler", noise_sampler(level(levels[0]), level(levels[1])),
                                                 x, "noise_sampler(sigma, sigma_next)").contiguous()
                        else:
                            step_seeds = seeds
                            offset = self._end_offsets[i] if noise == NOISE_END else self._mid_offsets[i]
                    regs[dst] = combine(x, h[0], h[1], h[2], h[3], coeffs, step_seeds, offset, drawn)
                else:
                    regs[op[1]] = regs[op[2]]
            for chain in program.rotate:
                for newer, older in zip(reversed(chain[:-1]), reversed(chain[1:])):
                    if newer in regs:
                        regs[older] = regs[newer]
            if records is not None:
                torch.aminmax(regs["x"], out=records[i + 1])
        result = regs["x"]
        if out is not None:
            return out.copy_(result)
        return result.to(latents.dtype)

    def report_nonfinite(self, stacklevel: int = 1) -> None:
        """After run(): warn or raise (per `nonfinite`) if the state held NaN or inf; one host sync."""
        t = self.program.t
        where = steps_where(self.program.num_steps, lambda i: f"sigma {t[i]:.6g} -> {t[i + 1]:.6g}")
        self.finite_check.report(where, "check the net's output at that noise level", stacklevel=stacklevel + 1)


def sample_program(net, latents, class_labels, randn_like, seeds, callback, options, noise_sampler=None,
                   extra_args=None, stacklevel: int = 2):
    """fastdiff.sample for a solver of fastdiff.sampling.programs: check, plan, build the loop, run and report."""
    from ..ops import backends
    from ..rng import draw_seeds, seeds_tensor
    from .loop import check_call, require_loop_memory
    from .noise import brownian_for
    from .plan import make_plan

    check_call(net, latents, class_labels, randn_like, seeds, callback)
    brownian = isinstance(noise_sampler, str)
    if brownian and noise_sampler != "brownian":
        raise ValueError(f"noise_sampler: expected a callable noise_sampler(sigma, sigma_next) or 'brownian', got "
                         f"{noise_sampler!r}")
    if noise_sampler is not None:
        if not brownian and not callable(noise_sampler):
            raise TypeError(f"noise_sampler: expected a callable noise_sampler(sigma, sigma_next) -> a tensor like x "
                            f"(k-diffusion's) or 'brownian', got {type(noise_sampler).__name__}")
        if randn_like is not None or (seeds is not None and not brownian):
            given = "randn_like" if randn_like is not None else "seeds"
            raise ValueError(f"noise_sampler: it gives every noise draw, so {given} would be unused; pass one of "
                             f"noise_sampler, randn_like or seeds (or noise_sampler='brownian' with seeds)")
        if options.solver not in NOISE_SAMPLER_SOLVERS:
            raise ValueError(f"noise_sampler: solver={options.solver!r} draws no noise from a noise_sampler (in "
                             f"k-diffusion, only {', '.join(map(repr, NOISE_SAMPLER_SOLVERS))} take one)")
    state_dtype = options.state_dtype(latents)
    require_loop_memory(options.num_steps, options.sigmas, latents.shape[0], latents.device, state_dtype)
    program = make_plan(net, options, state_dtype, program=True)
    backend = backends.resolve(options.backend, torch.empty(0, dtype=state_dtype, device=latents.device), (latents,))
    batch, device = latents.shape[0], latents.device
    if brownian:
        seeds = seeds_tensor(seeds, batch, device) if seeds is not None else draw_seeds(batch, device)
        noise_sampler, seeds = brownian_for(seeds, latents, program.t, state_dtype), None
    elif randn_like is None and noise_sampler is None and program.adds_noise():
        seeds = seeds_tensor(seeds, batch, device) if seeds is not None else draw_seeds(batch, device)
    elif seeds is not None:
        seeds_tensor(seeds, batch, device)  # checked, though this program draws no noise from them
        seeds = None
    loop = ProgramLoop(net, program, latents, state_dtype, randn_like=randn_like, noise_sampler=noise_sampler,
                       callback=callback, nonfinite=options.nonfinite, backend=backend)
    result = loop.run(latents, seeds, class_labels, extra_args=extra_args)
    loop.report_nonfinite(stacklevel=stacklevel + 1)
    return result


NOISE_SAMPLER_SOLVERS = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
                         "dpmpp_3m_sde")

__all__ = ["ProgramLoop", "sample_program", "NOISE_END", "NOISE_MID"]
