"""The loop of the solver programs (fastdiff.sampling.programs): k-diffusion's multistage, multistep and SDE solvers
run on device tables, every update of the state one fused `combine` op called directly (fastdiff.ops.bound).

Like SamplingLoop (loop.py), a ProgramLoop is made once per plan and batch shape: the coefficients of every
Combine and the noise levels of every Eval live in device tables made once, so run() reads only views of them,
never branches on a tensor value and never syncs; its noise comes from fastdiff's counter-based generator (step i's
at SAMPLER_OFFSET + i, a substep's at SUBSTEP_OFFSET + i), or from randn_like(x), or from a k-diffusion style
noise_sampler(sigma, sigma_next). With seeds, the same loop is what fastdiff.GraphedSampler captures, in_place (every
Combine into a fixed buffer), which sample(reuse_buffers=True) runs eagerly too.
"""
from __future__ import annotations

import torch

from .._nonfinite import NonfiniteCheck, steps_where
from .._validate import check_output
from ..ops.bound import bound
from ..rng import SAMPLER_OFFSET, SUBSTEP_OFFSET
from .loop import check_noise
from .programs import NOISE_END, NOISE_MID, Combine, Eval, Move, Program


class ProgramLoop:
    """A Program's loop for one batch shape and state dtype; run() as often as wanted.

    It offers what fastdiff.GraphedSampler and fastdiff.check_capture use of a SamplingLoop: `plan` (the Program),
    set_plan (another program of the same structure, its values copied into the tables in place), `on_step`,
    `finite_check`, report_nonfinite and buffers(). With in_place (a fused backend, no callback) every Combine
    writes into a fixed buffer chosen once here (_assign_buffers), so run() allocates nothing but the net's results.
    """

    def __init__(self, net, program: Program, latents_like: torch.Tensor, state_dtype: torch.dtype, *,
                 randn_like=None, noise_sampler=None, callback=None, nonfinite="warn", backend="reference",
                 in_place=False):
        self.net, self.plan, self.state_dtype = net, program, state_dtype
        self.randn_like, self.noise_sampler, self.callback, self.backend = randn_like, noise_sampler, callback, backend
        self.nonfinite = nonfinite
        bound_ops = bound(backend)
        self.combine, self.combine_out = bound_ops.combine, bound_ops.combine_out
        self.shape, self.device = tuple(latents_like.shape), latents_like.device
        self.in_place = in_place and backend != "reference" and callback is None  # as SamplingLoop decides it
        batch, N = self.shape[0], program.num_steps

        # The tables: the start scale and every Combine's six coefficients in one tensor, every Eval's sigma once per
        # sample; set_plan rewrites both in place, so the views below (and a graph captured on them) stay valid.
        start, coeffs, sigmas = _values(program)
        flat = torch.tensor([start, *coeffs], dtype=torch.float64).to(device=self.device, dtype=state_dtype)
        self._coeffs = flat
        self.start = flat[0]
        self._coeff_rows = flat[1:].view(len(coeffs) // 6, 6).unbind(0) if coeffs else ()
        sigma_table = torch.tensor(sigmas, dtype=torch.float64).to(device=self.device, dtype=state_dtype)
        self._sigmas = sigma_table[:, None].expand(len(sigmas), batch).contiguous()
        self._sigma_rows = self._sigmas.unbind(0) if sigmas else ()
        offsets = torch.arange(N, dtype=torch.int64, device=self.device)
        self._offsets = torch.stack((offsets + SAMPLER_OFFSET, offsets + SUBSTEP_OFFSET))  # a step's noise streams
        self._end_offsets, self._mid_offsets = self._offsets[0].unbind(0), self._offsets[1].unbind(0)

        if self.in_place:
            self._start_buffer, outs, count = _memo(program, "_buffer_assignment", _assign_buffers)
            self._buffers = [torch.empty(self.shape, dtype=state_dtype, device=self.device) for _ in range(count)]
        else:
            self._start_buffer, outs, self._buffers = None, None, []
        self._steps = self._compile(program, outs)
        self.on_step = None  # on_step(i), when set, is called on the host as step i begins, and with i = N after the
        #                     last step (fastdiff.check_capture)
        self.finite_check = NonfiniteCheck(nonfinite, N, state_dtype, self.device)
        self._records = self.finite_check.stage_outs() if latents_like.numel() > 0 else None
        self._outs = outs

    @property
    def program(self) -> Program:
        return self.plan

    def _compile(self, program: Program, outs) -> list:
        """Each step's instructions with their table views: ("eval", dst, src, sigma [B], sigma as a float),
        ("combine", dst, src, history, coeffs [6], noise, noise levels, out buffer index or None), ("move", dst, src)."""
        steps, c, s = [], 0, 0
        for i, step in enumerate(program.steps):
            compiled = []
            for j, op in enumerate(step):
                if isinstance(op, Eval):
                    compiled.append(("eval", op.dst, op.src, self._sigma_rows[s], op.sigma))
                    s += 1
                elif isinstance(op, Combine):
                    out = None if outs is None else outs[i][j]
                    compiled.append(("combine", op.dst, op.src, op.history, self._coeff_rows[c], op.noise,
                                     op.noise_levels, out))
                    c += 1
                elif isinstance(op, Move):
                    compiled.append(("move", op.dst, op.src))
                else:
                    raise TypeError(f"program: unknown instruction {op!r}")
            steps.append(tuple(compiled))
        return steps

    def set_plan(self, program: Program) -> None:
        """Load another program of the same structure (its coefficients, noise levels and start scale) into the
        tables, in place (host-to-device copies, outside any run); a graph captured on them replays it."""
        if not isinstance(program, Program):
            raise TypeError(f"plan: expected a solver program (fastdiff.sampling.programs.Program) for this "
                            f"{self.plan.solver!r} loop, got {type(program).__name__}")
        if program.structure() != self.plan.structure():
            raise ValueError(f"plan: expected a program with the same structure as the one this loop was built for "
                             f"(solver {self.plan.solver!r}, {self.plan.num_steps} steps: the same instructions on the "
                             f"same registers, the same noise draws and rotation), got {_difference(self.plan, program)}")
        start, coeffs, sigmas = _values(program)
        self._coeffs.copy_(torch.tensor([start, *coeffs], dtype=torch.float64))
        if sigmas:
            self._sigmas.copy_(torch.tensor(sigmas, dtype=torch.float64)[:, None].expand_as(self._sigmas))
        self.plan = program
        self._steps = self._compile(program, self._outs)  # the host values (callback, noise_sampler) of the new one

    def buffers(self) -> list[torch.Tensor]:
        """The loop's device tensors (fixed buffers and tables), for a memory report."""
        return [*self._buffers, self._coeffs, self._sigmas, self._offsets, self.finite_check.minima,
                self.finite_check.maxima]

    @torch.no_grad()  # sampling never needs autograd (docs/sampling.md#no-autograd)
    def run(self, latents: torch.Tensor, seeds=None, class_labels=None, *, out=None, extra_args=None) -> torch.Tensor:
        """Sample from latents (seeds: int64 [B] on the device, when the program adds noise from fastdiff's
        generator); the result goes into `out` when given, else it is returned in latents' dtype."""
        net, combine, combine_out, callback, records = self.net, self.combine, self.combine_out, self.callback, \
            self._records
        randn_like, noise_sampler, program, on_step = self.randn_like, self.noise_sampler, self.plan, self.on_step
        shape, device, state_dtype, buffers = latents.shape, self.device, self.state_dtype, self._buffers
        in_place = self.in_place
        kwargs = extra_args or {}

        def denoise(x, sigma):
            denoised = net(x, sigma, **kwargs) if class_labels is None else net(x, sigma, class_labels, **kwargs)
            if type(denoised) is not torch.Tensor or denoised.shape != shape or denoised.device != device or \
                    not denoised.is_floating_point():
                check_output("net", denoised, x, "net(x, sigma)")
            denoised = denoised.contiguous()
            if in_place and _shares_memory(denoised, x):  # the net's input (a fixed buffer) is written over later
                denoised = denoised.clone()
            return denoised

        def level(value):
            return torch.tensor(value, dtype=state_dtype, device=device)

        first = buffers[self._start_buffer] if in_place else torch.empty(shape, dtype=state_dtype, device=device)
        regs = {"x": torch.mul(latents, self.start, out=first)}
        if records is not None:
            torch.aminmax(regs["x"], out=records[0])
        draw_unused = randn_like is not None and program.draw_each_step  # see Program.draw_each_step
        for i, step in enumerate(self._steps):
            if on_step is not None:
                on_step(i)
            if draw_unused and not any(op[0] == "combine" and op[5] is not None for op in step):
                check_noise(randn_like(regs["x"]), regs["x"])  # drawn, not used
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
                    _, dst, src, history, coeffs, noise, levels, out_index = op
                    h = [regs[name] for name in history] + [None] * (4 - len(history))
                    x = regs[src]
                    step_seeds = offset = drawn = None
                    if noise is not None:
                        if randn_like is not None:
                            drawn = check_noise(randn_like(x), x).contiguous()
                        elif noise_sampler is not None:
                            drawn = check_output("noise_sampler", noise_sampler(level(levels[0]), level(levels[1])),
                                                 x, "noise_sampler(sigma, sigma_next)").contiguous()
                        else:
                            step_seeds = seeds
                            offset = self._end_offsets[i] if noise == NOISE_END else self._mid_offsets[i]
                    if out_index is None:
                        regs[dst] = combine(x, h[0], h[1], h[2], h[3], coeffs, step_seeds, offset, drawn)
                    else:
                        target = buffers[out_index]
                        combine_out(x, h[0], h[1], h[2], h[3], coeffs, step_seeds, offset, drawn, target)
                        regs[dst] = target
                else:
                    regs[op[1]] = regs[op[2]]
            for chain in program.rotate:
                for newer, older in zip(reversed(chain[:-1]), reversed(chain[1:])):
                    if newer in regs:
                        regs[older] = regs[newer]
            if records is not None:
                torch.aminmax(regs["x"], out=records[i + 1])
        if on_step is not None:
            on_step(program.num_steps)  # the loop has ended: what follows happens once per call
        result = regs["x"]
        if out is not None:
            return out.copy_(result)
        return result.to(latents.dtype)

    def report_nonfinite(self, stacklevel: int = 1) -> None:
        """After run(): warn or raise (per `nonfinite`) if the state held NaN or inf; one host sync."""
        t = self.plan.t
        where = steps_where(self.plan.num_steps, lambda i: f"sigma {t[i]:.6g} -> {t[i + 1]:.6g}")
        self.finite_check.report(where, "check the net's output at that noise level", stacklevel=stacklevel + 1)


def _values(program: Program) -> tuple[float, list[float], list[float]]:
    """A program's table values: the start scale, every Combine's six coefficients (flat) and every Eval's sigma."""
    coeffs, sigmas = [], []
    for step in program.steps:
        for op in step:
            if isinstance(op, Combine):
                coeffs.extend(op.coeffs)
            elif isinstance(op, Eval):
                sigmas.append(op.sigma)
    start = program.t[0] if program.start_scale is None else program.start_scale
    return start, coeffs, sigmas


def _memo(program: Program, name: str, compute):
    """compute(program), kept on the (immutable, and cached: programs.solver_program) program itself, so that a loop
    built again for the same program does not redo its host work."""
    value = program.__dict__.get(name)
    if value is None:
        value = compute(program)
        object.__setattr__(program, name, value)  # a frozen dataclass: not a field, only a memo
    return value


def _assign_buffers(program: Program) -> tuple[int, list[list], int]:
    """The fixed buffer every Combine of an in-place run writes into: (the start state's buffer, per step and
    instruction the buffer index or None, the number of buffers).

    Runs the program's register moves on the host, each register holding a buffer index (None: a net result, which
    is the net's own tensor). A Combine writes into its destination's buffer when no other register holds that buffer
    (the op allows its output to be one of its inputs exactly: it reads every element before writing it), else into
    one that no register holds, so no value still to be read (an older result in a rotation chain, an aliased
    register after a Move) is ever written over. The assignment depends only on the program's structure."""
    holder: dict[str, int | None] = {}
    count = 0

    def free() -> int:
        nonlocal count
        held = {b for b in holder.values() if b is not None}
        for b in range(count):
            if b not in held:
                return b
        count += 1
        return count - 1

    holder["x"] = start = free()
    outs = []
    for step in program.steps:
        step_outs = []
        for op in step:
            out = None
            if isinstance(op, Eval):
                holder[op.dst] = None
            elif isinstance(op, Combine):
                own = holder.get(op.dst)
                alone = own is not None and sum(b == own for b in holder.values()) == 1
                out = own if alone else free()
                holder[op.dst] = out
            elif isinstance(op, Move):
                holder[op.dst] = holder[op.src]
            step_outs.append(out)
        for chain in program.rotate:
            for newer, older in zip(reversed(chain[:-1]), reversed(chain[1:])):
                if newer in holder:
                    holder[older] = holder[newer]
        outs.append(step_outs)
    return start, outs, count


def _difference(have: Program, got) -> str:
    """What differs between two programs' structures, in words."""
    if got.solver != have.solver:
        return f"solver {got.solver!r}"
    if got.num_steps != have.num_steps:
        return f"{got.num_steps} steps"
    if (got.start_scale is None) != (have.start_scale is None):
        return "a start_scale" if got.start_scale is not None else "no start_scale"
    mine, theirs = have.structure()[0], got.structure()[0]
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a != b:
            return f"step {i} as {b} instead of {a}"
    return f"the rotation {got.rotate} instead of {have.rotate}"


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def prepare_program(net, latents, class_labels, randn_like, seeds, callback, options, noise_sampler=None):
    """prepare_loop (loop.py) for a solver program: check sample()'s arguments and the memory, make the Program and
    resolve the backend; a LoopSetup whose plan is the Program."""
    from ..ops import backends
    from .loop import LoopSetup, check_call, require_loop_memory
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
    if noise_sampler is not None and not program.adds_noise():
        raise ValueError(f"noise_sampler: solver={options.solver!r} adds no noise with these settings (eta="
                         f"{options.eta}, S_noise={options.S_noise}), so the noise_sampler would be unused; leave it "
                         f"out, or pass eta > 0")
    backend = backends.resolve(options.backend, torch.empty(0, dtype=state_dtype, device=latents.device), (latents,))
    return LoopSetup(program, state_dtype, backend)


def build_program_loop(net, latents, options, setup, *, randn_like=None, noise_sampler=None, callback=None,
                       in_place=False) -> ProgramLoop:
    """The ProgramLoop of a prepared call (prepare_program)."""
    return ProgramLoop(net, setup.plan, latents, setup.state_dtype, randn_like=randn_like,
                       noise_sampler=noise_sampler, callback=callback, nonfinite=options.nonfinite,
                       backend=setup.backend, in_place=in_place)


def sample_program(net, latents, class_labels, randn_like, seeds, callback, options, noise_sampler=None,
                   extra_args=None, stacklevel: int = 2):
    """fastdiff.sample for a solver of fastdiff.sampling.programs: check, plan, build the loop, run and report."""
    from ..rng import draw_seeds, seeds_tensor
    from .noise import brownian_for

    setup = prepare_program(net, latents, class_labels, randn_like, seeds, callback, options, noise_sampler)
    program, state_dtype = setup.plan, setup.state_dtype
    brownian = isinstance(noise_sampler, str)
    batch, device = latents.shape[0], latents.device
    if brownian:
        seeds = seeds_tensor(seeds, batch, device) if seeds is not None else draw_seeds(batch, device)
        noise_sampler, seeds = brownian_for(seeds, latents, program.t, state_dtype), None
    elif randn_like is None and noise_sampler is None and program.adds_noise():
        seeds = seeds_tensor(seeds, batch, device) if seeds is not None else draw_seeds(batch, device)
    elif seeds is not None:
        seeds_tensor(seeds, batch, device)  # checked, though this program draws no noise from them
        seeds = None
    loop = build_program_loop(net, latents, options, setup, randn_like=randn_like, noise_sampler=noise_sampler,
                              callback=callback, in_place=options.reuse_buffers)
    result = loop.run(latents, seeds, class_labels, extra_args=extra_args)
    loop.report_nonfinite(stacklevel=stacklevel + 1)
    return result


NOISE_SAMPLER_SOLVERS = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde",
                         "dpmpp_3m_sde")

__all__ = ["ProgramLoop", "build_program_loop", "prepare_program", "sample_program", "NOISE_END", "NOISE_MID"]
