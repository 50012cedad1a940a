"""fastdiff.GraphedSampler: the whole sampling loop, every network call included, captured once in a CUDA graph.

A replay costs one graph launch per sampling call, plus the copies of that call's inputs into the graph's
static buffers. This replaces the per-step kernel launches that bound small-batch sampling.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import contextlib
import itertools

import torch

from .. import ops
from .capture import CaptureError, EmulatedGraph, check_no_autocast, trace_loop
from ..rng import draw_seeds, seeds_tensor
from .loop import LoopSetup, build_loop, prepare_loop
from .extra import StaticArgs, check_extra_args, signature
from .plan import SampleOptions, structure
from .program_loop import build_program_loop, prepare_program
from .programs import PROGRAM_SOLVERS, Program

__all__ = ["GraphedSampler", "clear_cache"]

log = logging.getLogger("fastdiff")

GRAPHS = ("auto", "cuda", "emulated")
NOT_ACCEPTED = {
    "randn_like": "a Python noise function runs on the host every step and cannot be replayed; the graph draws its "
                  "noise from fastdiff's generator, keyed by the seeds passed per call",
    "callback": "host code cannot run inside a graph",
    "seeds": "seeds change per call: pass them to the sampler's __call__",
    "noise_sampler": "a Python noise function runs on the host every step and cannot be replayed; the graph draws its "
                     "noise from fastdiff's generator, keyed by the seeds passed per call",
    "reuse_buffers": "a graphed loop always runs on fixed buffers",
    "cuda_graph": "this is the graphed sampler",
}


class GraphedSampler:
    """fastdiff.sample for one shape, dtype, schedule and solver, captured once in a CUDA graph and then replayed.

        sampler = fastdiff.GraphedSampler(net, latents_like, class_labels_like=None, **sampler_kwargs)
        images = sampler(latents=None, seeds=None, class_labels=None)

    sampler_kwargs are sample()'s (num_steps, sigma_min, ..., solver, sigmas, dtype, backend, nonfinite), except
    randn_like, noise_sampler, callback, seeds and reuse_buffers. The whole loop is captured: every step's noise
    injection, net calls and updates, on fixed buffers (two for the EDM-family solvers; one per written register
    for the solver programs of fastdiff.sampling.programs, whose loop is a ProgramLoop; dpm_adaptive cannot be
    captured). Each call copies its inputs into static device buffers and replays:
      - latents: [B, ...] of latents_like's shape, dtype and device. When omitted, they are drawn inside the graph
        from the seeds, as fastdiff.randn(seeds, shape, dtype=..., backend=...) draws them on the loop's backend.
      - seeds: one int per sample, keying the churn noise (and omitted latents). When omitted, fresh seeds are drawn
        from torch's default generator, as sample() draws them, so calls never repeat noise and torch.manual_seed
        makes them repeatable.
      - class_labels: required on every call when class_labels_like was given (same shape and dtype), else refused.
    For the same inputs, the result equals sample(net, latents, seeds=seeds, reuse_buffers=True, ...) bit for bit.
    It is returned as a new tensor.

    Before capturing, the loop is checked (fastdiff.check_capture's rules, `check=True`) and warmed up `warmup`
    times on a side stream. A net that cannot be captured raises CaptureError, which names each reason.
    Capture freezes the net's Python code: what it decides on the host (Python attributes, branches on
    settings) is replayed as it was at capture. Parameters changed in place (optimizer steps,
    load_state_dict) are seen; replacing a parameter tensor or changing a Python setting needs a new
    sampler. The net's inputs are the loop's fixed buffers, which later steps overwrite, so the net must not
    keep references to them.

    graph: "cuda" (a torch.cuda.CUDAGraph with a private memory pool; latents on CUDA), "emulated" (the recorded ops
    replayed on any device: fastdiff.sampling.capture.EmulatedGraph, no speedup, for checking without a GPU), or "auto":
    "cuda" for CUDA latents. `memory` reports the bytes the sampler holds: static and loop buffers, and the
    graph's pool.

    Calls from several threads are safe: a call holds the sampler's lock from the copy of its inputs into the
    static buffers until its result is copied out (and set_plan holds it too), so concurrent calls run one after
    another on this graph, each with its own inputs. Use one sampler per thread for parallel replays.
    """

    def __init__(self, net, latents_like: torch.Tensor, class_labels_like: torch.Tensor | None = None, *,
                 graph: str = "auto", check: bool = True, warmup: int = 2, **sampler_kwargs):
        for name in sampler_kwargs:
            if name in NOT_ACCEPTED:
                raise TypeError(f"{name}: not accepted by GraphedSampler: {NOT_ACCEPTED[name]}")
        extra_args = check_extra_args(sampler_kwargs.pop("extra_args", None))
        options, _ = SampleOptions.split(sampler_kwargs)
        self._build(net, latents_like, class_labels_like, graph, check, warmup, options, None, extra_args)

    @classmethod
    def _from_setup(cls, net, latents_like, class_labels_like, graph: str, options: SampleOptions,
                    setup: LoopSetup, extra_args: dict) -> "GraphedSampler":
        """A sampler for arguments already checked and planned (sample(cuda_graph=...)): nothing is done twice."""
        sampler = cls.__new__(cls)
        sampler._build(net, latents_like, class_labels_like, graph, True, 2, options, setup, extra_args)
        return sampler

    def _build(self, net, latents_like, class_labels_like, graph, check, warmup, options: SampleOptions,
               setup: LoopSetup | None, extra_args: dict) -> None:
        if not isinstance(latents_like, torch.Tensor):
            raise TypeError(f"latents_like: expected a tensor of the latents' shape, dtype and device, got "
                            f"{type(latents_like).__name__}")
        self.graph_kind = _graph_kind(graph, latents_like)
        self._lock = threading.Lock()  # one caller at a time uses the static buffers, the tables and the graph
        self._done = torch.cuda.Event() if self.graph_kind == "cuda" else None  # the last call's work, on the device
        if isinstance(check, bool) is False:
            raise TypeError(f"check: expected True or False, got {check!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup: expected an int >= 1 (eager runs before capture), got {warmup!r}")
        device, batch = latents_like.device, latents_like.shape[0] if latents_like.ndim else 0
        self.shape, self.dtype, self.device = tuple(latents_like.shape), latents_like.dtype, device
        check_no_autocast(device)

        # Static inputs and output: every call copies into these, the graph reads and writes only them.
        self.seeds = torch.zeros(batch, dtype=torch.int64, device=device)
        self.loop = _graphed_loop(net, latents_like, class_labels_like, self.seeds, options, setup)
        if not self.loop.in_place:
            raise CaptureError(f"backend: {self.loop.backend!r} makes new tensors every step; a graphed loop runs on "
                               "fixed buffers, which needs a fused backend (cuda, triton or cpu): pass one, or 'auto' "
                               "where one is available (fastdiff info lists them)")
        self.latents = torch.zeros(self.shape, dtype=self.dtype, device=device)
        self.labels = None if class_labels_like is None else class_labels_like.detach().clone(
            memory_format=torch.contiguous_format)
        self.extra = StaticArgs(extra_args) if extra_args else None  # its tensors: static buffers, as the labels
        self.use_latents = torch.ones((), dtype=torch.bool, device=device)  # False: draw latents from the seeds
        self.start = torch.empty_like(self.latents)
        self.output = torch.empty_like(self.latents)
        self._latents_offset = torch.zeros((), dtype=torch.int64, device=device)  # fastdiff.randn's stream for latents
        self._noisy = _adds_noise(self.loop.plan)  # fixed by the plan's structure

        with torch.no_grad(), self._on_device():
            self.report = self._check(latents_like, class_labels_like) if check else None
            if self.report is not None:
                self.report.raise_if_unsafe()
            self._capture(warmup)

    @property
    def plan(self):
        """The StepPlan (or a solver's Program) replayed: its values may change (set_plan), its structure may not."""
        return self.loop.plan

    def set_plan(self, plan) -> None:
        """Replay another schedule of the same structure (number of steps, which add noise, which correct): the
        noise levels live in device tables, so this copies them there and needs no new capture. It waits for a
        replay running in another thread to finish."""
        with self._lock, self._on_device():
            self._after_previous_call()
            self._set_plan(plan)
            self._record_done()

    def _set_plan(self, plan) -> None:
        self.loop.set_plan(plan)  # which steps add noise is part of the structure: self._noisy stays as it is

    def __call__(self, latents: torch.Tensor | None = None, seeds=None, class_labels: torch.Tensor | None = None,
                 extra_args: dict | None = None):
        return self._run(latents, seeds, class_labels, stacklevel=3, extra_args=extra_args)

    def _run(self, latents, seeds, class_labels, stacklevel: int, plan=None, extra_args=None):
        """__call__, with warnings attributed `stacklevel` frames up from here; with `plan`, that plan is loaded
        first (set_plan) when it differs, under the same hold of the lock as the replay."""
        batch = self.shape[0]
        # Check every argument before changing any state (the buffers, torch's generator).
        if latents is not None:
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != self.shape or \
                    latents.dtype != self.dtype or latents.device != self.device:
                got = (f"{latents.dtype} tensor of shape {tuple(latents.shape)} on {latents.device}"
                       if isinstance(latents, torch.Tensor) else type(latents).__name__)
                raise ValueError(f"latents: expected a {self.dtype} tensor of shape {self.shape} on {self.device} "
                                 f"(what this sampler was captured for), got a {got}")
        if self.labels is not None:
            if not isinstance(class_labels, torch.Tensor) or class_labels.shape != self.labels.shape or \
                    class_labels.dtype != self.labels.dtype or class_labels.device != self.device:
                got = (f"a {class_labels.dtype} tensor of shape {tuple(class_labels.shape)} on {class_labels.device}"
                       if isinstance(class_labels, torch.Tensor) else repr(class_labels))
                raise ValueError(f"class_labels: this sampler was captured with labels; expected a {self.labels.dtype} "
                                 f"tensor of shape {tuple(self.labels.shape)} on {self.device}, got {got}")
        elif class_labels is not None:
            raise ValueError("class_labels: this sampler was captured without labels; make one with class_labels_like "
                             "to sample with labels")
        if self.extra is not None:
            extra_leaves = self.extra.check(extra_args)
        elif check_extra_args(extra_args):
            raise ValueError("extra_args: this sampler was captured without extra_args; make one with extra_args= "
                             "(their tensors become the graph's inputs) to pass them")
        if seeds is not None:
            seeds = seeds_tensor(seeds, batch, self.device)
        elif latents is None or self._noisy:  # sample() draws seeds exactly when it needs them, and so do we
            seeds = draw_seeds(batch, self.device)
        # From the first copy into the static buffers to the copy of the result out of them, this call owns the
        # buffers, the tables and the graph: another thread's copies would change this call's inputs mid-replay.
        with self._lock, self._on_device(), torch.no_grad():  # no autograd (docs/sampling.md#no-autograd)
            self._after_previous_call()
            if plan is not None and self.plan != plan:
                self._set_plan(plan)
            if latents is not None:
                self.latents.copy_(latents)
            self.use_latents.fill_(latents is not None)
            if seeds is not None:
                self.seeds.copy_(seeds)
            if self.labels is not None:
                self.labels.copy_(class_labels)
            if self.extra is not None:
                self.extra.load(extra_leaves)
            self._graph.replay()
            output = self.output.clone()
            self._record_done()
            self.loop.report_nonfinite(stacklevel=stacklevel)
            return output

    def _after_previous_call(self) -> None:
        """On CUDA, order this call's copies after the previous call's replay and copy-out on the device too: the
        lock orders the launches, but callers in other threads may launch them on other streams."""
        if self._done is not None:
            torch.cuda.current_stream(self.device).wait_event(self._done)

    def _record_done(self) -> None:
        if self._done is not None:
            self._done.record(torch.cuda.current_stream(self.device))

    def _on_device(self):
        """CUDA work on the sampler's device (a graph captures the current device's stream)."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    @property
    def memory(self) -> dict[str, int]:
        """Bytes held: "buffers" (static inputs and output, the loop's state and tables) and "pool" (what the
        graph's private memory pool kept at capture: the net's activations and other intermediates)."""
        return {"buffers": self._buffer_bytes, "pool": self._pool_bytes}

    def _body(self) -> None:
        """What the graph runs: the starting latents (given, or drawn from the seeds), then the sampling loop."""
        drawn = ops.randn(self.seeds, self.shape, offset=self._latents_offset, dtype=self.dtype,
                          backend=self.loop.backend)
        torch.where(self.use_latents, self.latents, drawn, out=self.start)
        self.loop.run(self.start, self.seeds, self.labels, out=self.output,
                      extra_args=None if self.extra is None else self.extra.args)

    def _check(self, latents_like, labels_like):
        """fastdiff.check_capture's rules on the graph's body, over two calls with different inputs and schedule."""

        def prepare(call):
            self.latents.copy_(latents_like if call == 0 else -latents_like)
            self.seeds.copy_(torch.arange(1, self.shape[0] + 1, device=self.device) * (1 + call))
            if self.labels is not None:
                self.labels.copy_(labels_like if call == 0 else labels_like.roll(1, 0))

        return trace_loop(self.loop, lambda call: self._body(), prepare)

    def _capture(self, warmup: int) -> None:
        buffers = [self.latents, self.seeds, self.use_latents, self.start, self.output, self.labels,
                   *self.loop.buffers(), *([] if self.extra is None else self.extra.tensors())]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in buffers if t is not None}
        self._buffer_bytes = sum(storages.values())  # each storage once: several tables are views of one
        if self.graph_kind == "emulated":
            for _ in range(warmup):
                self._body()
            self._graph = EmulatedGraph()
            self._graph.capture(self._body)
            self._pool_bytes = self._graph.fresh_bytes
            return
        device = self.device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: Triton compiles, cuBLAS and cuDNN pick kernels, caches fill
            for _ in range(warmup):
                self._body()
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # torch.cuda.graph empties it too: do it before measuring
        reserved = torch.cuda.memory_reserved(device)
        self._graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self._graph, stream=torch.cuda.Stream(device=device)):
                self._body()
        except RuntimeError as error:
            raise CaptureError(f"capturing the sampling loop failed: {error}") from error
        torch.cuda.synchronize(device)
        self._pool_bytes = torch.cuda.memory_reserved(device) - reserved


def _graphed_loop(net, latents_like, class_labels_like, seeds, options: SampleOptions, setup: LoopSetup | None):
    """The loop a GraphedSampler captures, on fixed buffers: a SamplingLoop, or a ProgramLoop for the solvers of
    fastdiff.sampling.programs (each checked and planned as sample() does, unless `setup` says it was)."""
    options = options.replace(reuse_buffers=True)
    if options.solver not in PROGRAM_SOLVERS:
        loop, _ = build_loop(net, latents_like, class_labels_like, None, seeds, None, options, setup=setup)
        return loop
    if setup is None:
        setup = prepare_program(net, latents_like, class_labels_like, None, seeds, None, options)
    return build_program_loop(net, latents_like, options, setup, in_place=True)


def _adds_noise(plan) -> bool:
    return plan.adds_noise() if isinstance(plan, Program) else any(std > 0 for std in plan.noise_std)


def _structure(plan) -> tuple:
    return ("program", plan.structure()) if isinstance(plan, Program) else ("plan", structure(plan))


def _graph_kind(graph, latents_like: torch.Tensor) -> str:
    if graph not in GRAPHS:
        raise ValueError(f"graph: expected one of {', '.join(map(repr, GRAPHS))}, got {graph!r}")
    if graph == "emulated":
        return graph
    if latents_like.device.type != "cuda":
        raise ValueError(f"graph: {graph!r} needs CUDA latents, got latents_like on {latents_like.device}; "
                         "graph='emulated' replays the recorded ops on any device (for checking, no speedup)")
    return "cuda"


# sample(cuda_graph=...): a small cache of graphed samplers.
CACHE_SIZE = 8
_cache: OrderedDict = OrderedDict()
_logged: set[str] = set()
_cache_lock = threading.RLock()  # guards _cache and _logged (re-entrant: a failed capture declines while holding it)


def clear_cache() -> None:
    """Drop every GraphedSampler that sample(cuda_graph=...) keeps (and the nets they hold), and forget which
    fallback reasons were logged."""
    with _cache_lock:
        _cache.clear()
        _logged.clear()


def fingerprint(net) -> tuple:
    """What a captured net's graph depends on beyond its identity: the address, dtype and shape of every parameter and
    buffer (a graph reads addresses) and every submodule's training flag (a Python branch). Cheap next to sampling."""
    if not isinstance(net, torch.nn.Module):
        return ()
    tensors = tuple((t.data_ptr(), t.dtype, tuple(t.shape)) for t in itertools.chain(net.parameters(), net.buffers()))
    return tensors + tuple(m.training for m in net.modules())


def _graph_kind_for(latents: torch.Tensor):
    """The graph sample(cuda_graph=...) uses for these latents, or None (tests substitute "emulated")."""
    return "cuda" if latents.device.type == "cuda" else None


def sample_graphed(mode, net, latents, class_labels, randn_like, seeds, callback, options: SampleOptions,
                   extra_args: dict | None = None, noise_sampler=None):
    """sample() through a cached GraphedSampler; None when mode is "auto" and the loop cannot be graphed."""
    if mode is not True and mode != "auto":
        raise ValueError(f"cuda_graph: expected True, False or 'auto', got {mode!r}")
    kind = _graph_kind_for(latents) if isinstance(latents, torch.Tensor) else None
    if kind is None:
        where = latents.device if isinstance(latents, torch.Tensor) else type(latents).__name__
        return _decline(mode, f"CUDA graphs need CUDA latents, got latents on {where}", loud=False)
    reason = None
    if randn_like is not None:
        reason = "randn_like: " + NOT_ACCEPTED["randn_like"]
    elif noise_sampler is not None:
        reason = "noise_sampler: " + NOT_ACCEPTED["noise_sampler"]
    elif callback is not None:
        reason = "callback: " + NOT_ACCEPTED["callback"]
    elif kind == "cuda" and torch.cuda.is_current_stream_capturing():
        reason = "the current stream is already capturing a graph (captures cannot nest)"
    extra_args = extra_args or {}
    extra_key = signature(extra_args)
    if reason is None and extra_key is None:
        reason = ("extra_args: a value that is not a tensor is part of a captured graph, so it must be hashable to "
                  "find the graph again; pass tensors, or hashable values")
    if reason is not None:
        return _decline(mode, reason)
    prepare = prepare_program if options.solver in PROGRAM_SOLVERS else prepare_loop
    setup = prepare(net, latents, class_labels, randn_like, seeds, callback, options)  # checked and planned once
    plan, state_dtype, resolved, nonfinite = setup.plan, setup.state_dtype, setup.backend, options.nonfinite
    labels = None if class_labels is None else (tuple(class_labels.shape), class_labels.dtype)
    key = (id(net), tuple(latents.shape), latents.dtype, latents.device, labels, _structure(plan), state_dtype, resolved,
           nonfinite, extra_key)
    print_ = fingerprint(net)
    with _cache_lock:  # one thread looks up, captures and evicts at a time; replays run outside, each under its graph's lock
        entry = _cache.get(key)
        if entry is None or entry[1] != print_:  # new, or the net's parameters, buffers or modes changed: capture again
            try:
                sampler = GraphedSampler._from_setup(net, latents, class_labels, kind, options, setup, extra_args)
            except CaptureError as error:
                if error.__cause__ is not None:  # the capture itself failed (e.g. out of memory): maybe not next time
                    return _decline(mode, str(error))
                sampler = str(error)
            entry = _cache[key] = (net, print_, sampler)  # holding the net keeps its id from being reused while cached
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
        _cache.move_to_end(key)
    sampler = entry[2]
    if isinstance(sampler, str):
        return _decline(mode, sampler)
    # The plan is loaded and replayed under one hold of the sampler's lock: another thread's noise levels must not
    # replace this call's between the two.
    return sampler._run(latents, seeds, class_labels, stacklevel=4, plan=plan,  # warnings name the caller of sample()
                        extra_args=extra_args)


def _decline(mode, reason: str, loud: bool = True):
    """cuda_graph=True raises the reason; "auto" logs it once (a warning for CUDA latents: the user asked for speed
    there; an info line otherwise) and samples eagerly."""
    if mode is True:
        raise CaptureError(f"cuda_graph=True: {reason}")
    with _cache_lock:
        first = reason not in _logged
        _logged.add(reason)
    if first:
        (log.warning if loud else log.info)("fastdiff: sampling without a CUDA graph: %s", reason)
    return None
