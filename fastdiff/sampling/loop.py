"""The sampling loop: one loop runs every solver's plan (fastdiff.sampling.plan) on device tensors, with the fused
ops doing the elementwise step math, called directly (fastdiff.ops.bound) once the call's inputs are checked and its
backend resolved. Eager sampling, the capture checker and CUDA graphs all run this loop.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple

import torch

from .. import ops
from .._memory import on_devices, require_memory
from .._nonfinite import NonfiniteCheck, check_nonfinite, steps_where
from .._validate import check_int, check_output
from ..ops import backends
from ..ops.bound import bound
from ..rng import SAMPLER_OFFSET, draw_seeds, seeds_tensor
from .plan import PLAN_BYTES_PER_STEP, STATE_DTYPES, SampleOptions, StepPlan, make_plan, structure  # noqa: F401


class LoopSetup(NamedTuple):
    """What a sampling call decides on the host before it builds its loop, once: the plan, the state's dtype and the
    resolved backend."""

    plan: StepPlan
    state_dtype: torch.dtype
    backend: str


def prepare_loop(net, latents, class_labels, randn_like, seeds, callback, options: SampleOptions) -> LoopSetup:
    """Check sample()'s tensors and functions (its settings are checked in `options`), the memory the plan and its
    tables need, then plan and resolve the backend: everything a loop needs but its device tables."""
    check_call(net, latents, class_labels, randn_like, seeds, callback)
    state_dtype = options.state_dtype(latents)
    require_loop_memory(options.num_steps, options.sigmas, latents.shape[0], latents.device, state_dtype)
    plan = make_plan(net, options)
    backend = backends.resolve(options.backend, torch.empty(0, dtype=state_dtype, device=latents.device), (latents,))
    return LoopSetup(plan, state_dtype, backend)


def build_loop(net, latents, class_labels=None, randn_like=None, seeds=None, callback=None,
               options: SampleOptions | None = None, *, setup: LoopSetup | None = None, share_tables: bool = False):
    """sample()'s loop for checked options: (SamplingLoop, seeds), seeds an int64 tensor [B] on latents' device
    (drawn from torch's default generator when omitted and the plan adds noise) or None. `setup`, when given, is
    prepare_loop's result for these arguments (so that a caller that needed the plan first does not plan twice).
    share_tables: the loop may read tables shared with other loops of the same plan (shared_tables)."""
    options = SampleOptions() if options is None else options
    if setup is None:
        setup = prepare_loop(net, latents, class_labels, randn_like, seeds, callback, options)
    if randn_like is None:
        batch, device = latents.shape[0], latents.device
        if seeds is not None:
            seeds = seeds_tensor(seeds, batch, device)
        elif any(std > 0 for std in setup.plan.noise_std):  # a deterministic run leaves torch's generator untouched
            seeds = draw_seeds(batch, device)
    tables = shared_tables(setup.plan, latents.shape[0], latents.device, setup.state_dtype) if share_tables else None
    loop = SamplingLoop(net, setup.plan, latents, setup.state_dtype, randn_like=randn_like, callback=callback,
                        nonfinite=options.nonfinite, backend=setup.backend, in_place=options.reuse_buffers,
                        tables=tables)
    return loop, seeds


# What a sampling run allocates per step, at least, before its first step (counted from plan_steps and
# SamplingLoop): the plan's Python floats on the host (96 bytes per step for DPM-Solver++(2M), the smallest plan;
# Heun's is 136), and on the latents' device the tables t, t_hat, noise_std, the per-step minima and maxima (five
# state-dtype values), the step's noise offset (int64) and the noise levels the net sees, sigma_hat and sigma_next
# for every sample ([num_steps, B] each).
# What a sampling run allocates per step, beyond the plan's host floats (PLAN_BYTES_PER_STEP): on the latents'
# device the tables t, t_hat, noise_std, the per-step minima and maxima (five state-dtype values), the step's noise
# offset (int64) and the noise levels the net sees, sigma_hat and sigma_next for every sample ([num_steps, B] each).
STEP_TABLES = 5


def loop_table_bytes(num_steps: int, batch: int, state_dtype: torch.dtype, step_tables: int = STEP_TABLES) -> int:
    """Bytes of a loop's per-step device tables: num_steps ((2 B + step_tables) itemsize + 8) for two [num_steps, B]
    tables of noise levels, step_tables [num_steps] tables in the state dtype and the int64 noise offsets."""
    itemsize = torch.empty((), dtype=state_dtype).element_size()
    return num_steps * ((2 * batch + step_tables) * itemsize + 8)


def require_loop_memory(num_steps, sigmas, batch: int, device, state_dtype: torch.dtype, *,
                        plan_bytes_per_step: int = PLAN_BYTES_PER_STEP, step_tables: int = STEP_TABLES,
                        name: str = "num_steps") -> None:
    """Refuse, before planning anything, a number of steps (num_steps, or the length of sigmas) whose plan and tables
    cannot fit (NotEnoughMemoryError, naming the argument, the bytes needed and the bytes available). `name` is what
    errors call num_steps."""
    if sigmas is None:
        steps = check_int(name, num_steps, minimum=1)
        given = str(steps)
    elif hasattr(sigmas, "__len__"):
        name, steps = "sigmas", max(len(sigmas) - 1, 0)
        given = f"a schedule of {steps} steps"
    else:
        return  # the plan says what is wrong with it
    needs = on_devices(steps * plan_bytes_per_step, device, loop_table_bytes(steps, batch, state_dtype, step_tables))
    require_memory(name, given, needs, f"the sampler's per-step plan and tables (the noise levels of the batch's {batch} "
                   f"samples at every step, in {str(state_dtype).replace('torch.', '')})",
                   "use fewer steps, or a smaller batch")


def run_plan(net, latents, plan: StepPlan, class_labels, randn_like, seeds, state_dtype, callback, nonfinite,
             backend="reference", reuse_buffers=False):
    """The sampling loop of `sample` for a checked plan: device work only, no host sync until the loop ends.

    seeds is an int64 tensor [B] on latents' device when randn_like is None; backend is a resolved name.
    """
    loop = SamplingLoop(net, plan, latents, state_dtype, randn_like=randn_like, callback=callback,
                        nonfinite=nonfinite, backend=backend, in_place=reuse_buffers)
    result = loop.run(latents, seeds, class_labels)
    loop.report_nonfinite(stacklevel=3)  # warnings name the caller of sample()
    return result


class SamplingLoop:
    """The loop of one plan for one batch shape: tables and buffers are made once, then run() as often as wanted.

    run() is the sampler: device work only. It never reads a device value on the host, and every per-step
    value it hands to an op is a view of a device table made here, never a Python number; the host decides
    only the plan's structure (which steps add noise, which take Heun's correction, which extrapolate the
    denoised). So the same code runs eagerly, under fastdiff.check_capture, and captured in a CUDA graph
    (fastdiff.GraphedSampler).

    A step costs what its kernels cost: the backend was resolved and the tensors checked before the loop was
    built, so run() calls the backend's ops directly (fastdiff.ops.bound: the registered op, or the reference
    function), and every per-step view of a table is made here, once, not in the loop.

    With in_place (a fused backend, no callback), every step writes into fixed buffers (the state, and the Euler
    point for Heun), and run() allocates nothing but what the net returns; otherwise each step makes new tensors.
    A multistep plan keeps the net's previous result until the next step, as Heun keeps D(x_hat) over its second
    evaluation.
    """

    def __init__(self, net, plan: StepPlan, latents_like: torch.Tensor, state_dtype: torch.dtype, *, randn_like=None,
                 callback=None, nonfinite="warn", backend="reference", in_place=False,
                 tables: "StepTables | None" = None):
        self.net, self.plan, self.randn_like, self.callback = net, plan, randn_like, callback
        self.nonfinite, self.backend, self.state_dtype = nonfinite, backend, state_dtype
        self.ops = bound(backend)
        self.shape, self.device = tuple(latents_like.shape), latents_like.device
        batch, N = self.shape[0], plan.num_steps
        # With reuse_buffers, a fused backend runs on fixed buffers: the state, into which churn, the Euler step and
        # Heun's step write in place (every op is elementwise), and the Euler point.
        # Otherwise, and on the reference path or with a callback (whose tensors must not change after it has seen
        # them), every step makes new tensors.
        self.in_place = in_place and backend != "reference" and callback is None

        # Per-step values live in device tables made once (StepTables); the loop only reads views of them.
        self._use_tables(tables if tables is not None else StepTables(plan, batch, self.device, state_dtype))
        # The state's extremes at the start and after each step, for the non-finite report (fastdiff._nonfinite).
        self.finite_check = self._tables.take_check(nonfinite) or NonfiniteCheck(nonfinite, N, state_dtype, self.device)
        self.state = torch.empty(self.shape, dtype=state_dtype, device=self.device)  # contiguous, whatever the latents' layout
        self.euler_point = torch.empty_like(self.state) if self.in_place and any(plan.correct) else None
        self.on_step = None  # on_step(i), when set, is called on the host as step i begins, and with i = N after the
        #                     last step (fastdiff.check_capture)
        self._records = (self.finite_check.stage_outs(up_front=N <= VIEWS_UP_FRONT) if self.state.numel() > 0
                         else None)  # (aminmax refuses empty tensors)

    def release(self) -> None:
        """For a loop that is done (run and reported, never to run again): hand its non-finite record back to its
        shared tables, for the next loop of the same plan (sample() does, after its one run)."""
        self._tables.give_back(self.finite_check)
        self.finite_check = self._records = None

    def _use_tables(self, tables: "StepTables") -> None:
        self._tables = tables
        self.t, self.t_hat, self.noise_std, self.t_down, self.multistep = (tables.t, tables.t_hat, tables.noise_std,
                                                                           tables.t_down, tables.multistep)
        self.sigma_hat_batch, self.sigma_next_batch, self.offsets = (tables.sigma_hat_batch, tables.sigma_next_batch,
                                                                     tables.offsets)

    def set_plan(self, plan: StepPlan) -> None:
        """Load another plan of the same structure into the tables (host-to-device copies, outside any loop); the
        tables stay where they are, so a graph captured on them replays the new plan. A loop on shared tables
        (shared_tables) gets tables of its own instead."""
        if structure(plan) != structure(self.plan):
            raise ValueError("plan: expected a schedule with the same structure as the one this loop was built for "
                             f"(steps, which steps add noise and where, which correct or extrapolate): "
                             f"{structure(self.plan)}, got {structure(plan)}")
        if self._tables.shared:
            self._use_tables(StepTables(plan, self.shape[0], self.device, self.state_dtype))
        else:
            self._tables.load(plan)
        self.plan = plan

    @torch.no_grad()  # sampling never needs autograd (docs/sampling.md#no-autograd)
    def run(self, latents: torch.Tensor, seeds=None, class_labels=None, *, out=None, extra_args=None) -> torch.Tensor:
        """Sample from latents (and seeds [B] int64 on the device, when the plan adds noise and there is no
        randn_like); the result goes into `out` when given, else it is returned in latents' dtype. extra_args, a
        checked dict, go to every net call as keyword arguments."""
        plan, op, in_place, on_step = self.plan, self.ops, self.in_place, self.on_step
        net, randn_like, callback, records = self.net, self.randn_like, self.callback, self._records
        tables = self._tables
        noise_after, multistep, t_down_views = plan.noise_after, plan.multistep is not None, tables.t_down_views
        overlaps_differently = ops.overlaps_differently
        fused = self.backend != "reference"  # (the reference's out= form is its result copied: no gain)
        shape, device = latents.shape, self.device
        kwargs = extra_args or {}

        def denoise(x, sigma):
            """call_net, with its check's passing case made cheap; the result contiguous, as every op reads it (the
            Triton and reference ops do not copy)."""
            denoised = net(x, sigma, **kwargs) if class_labels is None else net(x, sigma, class_labels, **kwargs)
            if type(denoised) is not torch.Tensor or denoised.shape != shape or denoised.device != device or \
                    not denoised.is_floating_point():
                check_output("net", denoised, x, "net(x, sigma)")
            return denoised.contiguous()

        x_next = self.state
        torch.mul(latents, tables.t0, out=x_next)
        if records is not None:
            torch.aminmax(x_next, out=records[0])  # (the state needs no detach here: it is the loop's own buffer)
        denoised_prev = None  # D_{i-1}, for a multistep plan

        # Main sampling loop.
        for i in range(plan.num_steps):
            if on_step is not None:
                on_step(i)
            offset, noise_std, t_hat, t_next, sigma_hat, sigma_next = self.step_values(i)
            x_cur = x_next

            # Increase noise temporarily (churn; an ancestral step adds its noise after the update instead).
            if noise_after:
                x_hat = x_cur
            elif randn_like is not None:
                x_hat = x_cur + noise_std * check_noise(randn_like(x_cur), x_cur).contiguous()
            elif plan.noise_std[i] > 0:
                if in_place:
                    op.churn_out(x_cur, seeds, offset, noise_std, x_cur)
                    x_hat = x_cur
                else:
                    x_hat = op.churn(x_cur, seeds, offset, noise_std)
            else:
                x_hat = x_cur

            # Euler step (to sigma_down on an ancestral step), from D extrapolated with D_{i-1} on a multistep step.
            denoised = denoise(x_hat, sigma_hat)
            extrapolate = multistep and plan.multistep[i] != 0
            write_over_x_hat = in_place and not overlaps_differently(denoised, x_hat) and not (
                multistep and _shares_memory(denoised, x_hat))  # a multistep plan reads D again
            t_down = t_next if t_down_views is None else t_down_views[i]
            if extrapolate:  # DPM-Solver++(2M): the extrapolation D + c (D - D_prev) and the Euler step in one op
                c = tables.multistep_views[i]
                if write_over_x_hat:
                    x_next = x_hat
                    op.multistep_step_out(x_hat, denoised, denoised_prev, c, t_hat, t_down, x_next)
                else:
                    x_next = op.multistep_step(x_hat, denoised, denoised_prev, c, t_hat, t_down)
            elif write_over_x_hat:
                x_next = self.euler_point if plan.correct[i] else x_hat
                op.euler_step_out(x_hat, denoised, t_hat, t_down, x_next)
            else:
                x_next = op.euler_step(x_hat, denoised, t_hat, t_down)
            if callback is not None:
                callback({"x": x_hat, "i": i, "sigma": plan.t[i], "sigma_hat": plan.t_hat[i], "denoised": denoised})

            # Apply 2nd order correction.
            if plan.correct[i]:
                denoised_next = denoise(x_next, sigma_next)
                if write_over_x_hat and not overlaps_differently(denoised_next, x_hat):
                    op.heun_step_out(x_hat, denoised, denoised_next, t_hat, t_next, x_hat)
                    x_next = x_hat
                else:
                    x_next = op.heun_step(x_hat, denoised, denoised_next, t_hat, t_next)

            # Add an ancestral step's noise, from sigma_down back up to t_next.
            if noise_after:
                if randn_like is not None:
                    x_next = x_next + noise_std * check_noise(randn_like(x_next), x_next).contiguous()
                elif plan.noise_std[i] > 0:
                    if in_place or fused:  # x_next is this step's own new tensor, seen by no one yet: add in place
                        op.churn_out(x_next, seeds, offset, noise_std, x_next)
                    else:
                        x_next = op.churn(x_next, seeds, offset, noise_std)
            denoised_prev = denoised

            if records is not None:  # (an out= op refuses inputs that require grad)
                torch.aminmax(x_next.detach() if x_next.requires_grad else x_next, out=records[i + 1])

        if on_step is not None:
            on_step(plan.num_steps)  # the loop has ended: what follows happens once per call
        if out is not None:
            return out.copy_(x_next)
        return x_next.to(latents.dtype)

    def buffers(self) -> list[torch.Tensor]:
        """The loop's device tensors (fixed buffers and tables; None where absent), for a memory report."""
        return [self.state, self.euler_point, self.t, self.t_hat, self.noise_std, self.t_down, self.multistep,
                self.sigma_hat_batch, self.sigma_next_batch, self.offsets, self.finite_check.minima,
                self.finite_check.maxima]

    def step_values(self, i: int):
        """Step i's values, as views of the device tables: (noise offset, noise std, t_hat, t_next, the sigma [B]
        the net sees at t_hat, and at t_next). t_hat and t_next are the net's sigmas themselves, one per sample."""
        return self._tables.step_values[i]

    def report_nonfinite(self, stacklevel: int = 1, step_name=None, hint: str = "check the net's output at that noise level") -> None:
        """After run(): warn or raise (per `nonfinite`) if the state held NaN or inf; one host sync.
        stacklevel is warnings.warn's, counted from the caller of this method; step_name(i) names step i (default:
        its noise levels) and hint says what to look at (a sampler on other variables, e.g. DDPM's time steps)."""
        t = self.plan.t
        where = steps_where(self.plan.num_steps, step_name or (lambda i: f"sigma {t[i]:.6g} -> {t[i + 1]:.6g}"))
        self.finite_check.report(where, hint, stacklevel=stacklevel + 1)


class StepTables:
    """A plan's per-step values on a device, for a batch size and state dtype: the tables t, t_hat, noise_std,
    t_down and multistep (views of one tensor, made by one host-to-device copy), the noise levels the net sees per
    sample (sigma_hat_batch, sigma_next_batch: [N, B]), the noise offsets, and every step's views of them, made once
    (unbind makes all of a table's views in one call). The ops take t_hat and t_next as the net does, one value per
    sample: the rows of the [N, B] tables. A loop only reads them; load() rewrites them in place (set_plan)."""

    def __init__(self, plan: StepPlan, batch: int, device, dtype: torch.dtype, shared: bool = False):
        self.plan, self.shared, N = plan, shared, plan.num_steps
        start = None if plan.start_scale is None else (plan.start_scale,)  # what the latents are scaled by, if not t[0]
        values = [plan.t, plan.t_hat, plan.noise_std, plan.t_down, plan.multistep, start]
        flat = torch.tensor([v for vs in values if vs is not None for v in vs], dtype=torch.float64)
        flat = flat.to(device=device, dtype=dtype)  # rounded once to the state dtype
        views, start = [], 0
        for vs in values:
            views.append(None if vs is None else flat[start:start + len(vs)])
            start += 0 if vs is None else len(vs)
        self.t, self.t_hat, self.noise_std, self.t_down, self.multistep, self.start_scale = views  # no t_down: a step
        #                                                                   goes to t[i+1]; no start_scale: x = t[0] z
        sigmas = torch.stack((self.t_hat, self.t[1:]))[:, :, None].expand(2, N, batch).contiguous()
        self.sigma_hat_batch, self.sigma_next_batch = sigmas[0], sigmas[1]
        self.offsets = torch.arange(SAMPLER_OFFSET, SAMPLER_OFFSET + N, dtype=torch.int64, device=device)
        self.nbytes = flat.untyped_storage().nbytes() + sigmas.untyped_storage().nbytes() + 8 * N
        if N <= VIEWS_UP_FRONT:
            sigma_hat, sigma_next = self.sigma_hat_batch.unbind(0), self.sigma_next_batch.unbind(0)
            self.step_values = list(zip(self.offsets.unbind(0), self.noise_std.unbind(0), sigma_hat, sigma_next,
                                        sigma_hat, sigma_next))
            self.t_down_views = None if self.t_down is None else self.t_down.unbind(0)
            self.multistep_views = None if self.multistep is None else self.multistep.unbind(0)
        else:  # views cost host memory (about 600 bytes each): a long plan makes each step's as it comes
            self.step_values, self.t_down_views = _StepViews(self), None if self.t_down is None else _Rows(self.t_down)
            self.multistep_views = None if self.multistep is None else _Rows(self.multistep)
        self.t0 = self.t[0] if self.start_scale is None else self.start_scale[0]  # the latents' scale at the start
        self._spare_checks: list[NonfiniteCheck] = []  # records of finished loops (shared tables only): release()

    def take_check(self, nonfinite: str) -> NonfiniteCheck | None:
        """A NonfiniteCheck a finished loop of these tables gave back (its views made), or None."""
        try:
            check = self._spare_checks.pop()
        except IndexError:
            return None
        if check.mode == nonfinite:
            return check
        self._spare_checks.append(check)
        return None

    def give_back(self, check: NonfiniteCheck) -> None:
        """Keep a finished loop's record for the next loop of shared tables (a few at most); private tables keep none."""
        if self.shared and check is not None and len(self._spare_checks) < 4:
            self._spare_checks.append(check)

    def load(self, plan: StepPlan) -> None:
        """Write another plan of the same structure into these tables (the views see it: they are views)."""
        for table, values in [(self.t, plan.t), (self.t_hat, plan.t_hat), (self.noise_std, plan.noise_std),
                              (self.t_down, plan.t_down), (self.multistep, plan.multistep),
                              (self.start_scale, None if plan.start_scale is None else (plan.start_scale,))]:
            if table is not None:
                table.copy_(torch.tensor(values, dtype=torch.float64))
        self.sigma_hat_batch.copy_(self.t_hat[:, None].expand_as(self.sigma_hat_batch))
        self.sigma_next_batch.copy_(self.t[1:, None].expand_as(self.sigma_next_batch))
        self.plan = plan


# Plans of up to this many steps have every step's views made up front, once (600 bytes of host memory each, 6 or 7
# a step); longer ones make them step by step, as indexing does.
VIEWS_UP_FRONT = 1024


class _Rows:
    """table[i] as it is asked for: a table's per-step views for a long plan."""

    def __init__(self, table: torch.Tensor):
        self.table = table

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.table[i]


class _StepViews:
    """StepTables.step_values for a long plan: step i's tuple made when asked for."""

    def __init__(self, tables: StepTables):
        self.tables = tables

    def __getitem__(self, i: int) -> tuple:
        t = self.tables
        sigma_hat, sigma_next = t.sigma_hat_batch[i], t.sigma_next_batch[i]
        return t.offsets[i], t.noise_std[i], sigma_hat, sigma_next, sigma_hat, sigma_next


# sample() makes a loop per call; on the CPU, loops of the same plan, batch size and dtype read the same tables, kept
# here (a few, each small): making them and their per-step views costs more than a small batch's steps. Not on other
# devices, where a table made on one stream could be read on another before its copy has landed.
SHARED_TABLES = 16
SHARED_TABLE_BYTES = 2**20
_shared: OrderedDict = OrderedDict()
_shared_lock = threading.Lock()


def shared_tables(plan: StepPlan, batch: int, device, dtype: torch.dtype) -> StepTables | None:
    """The StepTables of these, shared with other loops (never written: set_plan gives a loop its own), or None
    where they are not shared: off the CPU, and for tables larger than SHARED_TABLE_BYTES."""
    if torch.device(device).type != "cpu":
        return None
    key = (plan, batch, dtype)
    with _shared_lock:
        tables = _shared.get(key)
        if tables is not None:
            _shared.move_to_end(key)
            return tables
    tables = StepTables(plan, batch, device, dtype, shared=True)
    if tables.nbytes > SHARED_TABLE_BYTES:
        return None
    with _shared_lock:
        _shared[key] = tables
        while len(_shared) > SHARED_TABLES:
            _shared.popitem(last=False)
    return tables


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors use the same storage (host metadata only)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def check_call(net, latents, class_labels, randn_like, seeds, callback) -> None:
    """Validate sample()'s tensors and functions (its settings are SampleOptions')."""
    if not callable(net):
        raise TypeError(f"net: expected a callable denoiser net(x, sigma[, class_labels]), got {type(net).__name__}")
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents: expected a floating-point tensor of shape [B, ...], got {type(latents).__name__}")
    if not latents.is_floating_point():
        raise TypeError(f"latents: expected a floating-point tensor (unit-variance noise), got dtype {latents.dtype}")
    if latents.ndim < 1 or latents.shape[0] < 1:
        raise ValueError(f"latents: expected shape [B, ...] with B >= 1, got {tuple(latents.shape)}")
    if class_labels is not None:
        if not isinstance(class_labels, torch.Tensor) or class_labels.ndim < 1 or class_labels.shape[0] != latents.shape[0]:
            got = tuple(class_labels.shape) if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
            raise ValueError(f"class_labels: expected a tensor with one row per sample ({latents.shape[0]}), got {got}")
    if randn_like is not None and not callable(randn_like):
        raise TypeError(f"randn_like: expected a callable like torch.randn_like, got {type(randn_like).__name__}")
    if randn_like is not None and seeds is not None:
        raise ValueError("seeds: pass either randn_like or seeds, not both (seeds key fastdiff's own generator)")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable taking a dict, got {type(callback).__name__}")


def check_inputs(net, latents, class_labels, randn_like, seeds, dtype, callback, nonfinite) -> torch.dtype:
    """Validate a sampler's arguments other than the schedule's when they do not come as SampleOptions
    (sample_general); return the state dtype."""
    check_call(net, latents, class_labels, randn_like, seeds, callback)
    check_nonfinite(nonfinite)
    if dtype is None:
        return torch.float64 if latents.dtype == torch.float64 else torch.float32
    if dtype not in STATE_DTYPES:
        raise ValueError(f"dtype: expected torch.float32 or torch.float64 for the sampler state, got {dtype}")
    return dtype


def call_net(net, x, sigma, class_labels) -> torch.Tensor:
    """D(x; sigma) from the user's net, checked (the step ops read it in its own dtype)."""
    denoised = net(x, sigma) if class_labels is None else net(x, sigma, class_labels)
    return check_output("net", denoised, x, "net(x, sigma)")


def check_noise(eps, x: torch.Tensor) -> torch.Tensor:
    """randn_like's output must be one value per element of x: broadcasting would give every sample the same noise."""
    return check_output("randn_like", eps, x, "randn_like(x)")
