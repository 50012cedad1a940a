"""Capture safety, checked on any device: can a sampling loop, net included, be captured in a CUDA graph?

A CUDA graph records the kernels a stream launches, with their pointers and scalar arguments, and replays
them; the Python code that launched them does not run again. So a loop is capture-safe when:

1. It never reads a device value on the host. `.item()`, `bool(t)`, `float(t)`, `.tolist()`, printing a tensor,
   `if t.any():`, and ops whose output shape depends on values (nonzero, boolean masks, unique) all wait for the
   device, and capture forbids that.
2. It computes only on tensors of its own device, and makes none from host data once it runs: `torch.tensor(...)`
   is a host-to-device copy, and a host tensor's value would be baked into the graph.
3. Whatever changes from call to call (latents, seeds, labels, the noise-level table) reaches its kernels through
   device memory. A Python number, a shape or a choice of ops that depends on such a value is frozen at
   capture and replayed stale.
4. After its first step, the sampler allocates nothing outside the net: it runs on fixed buffers, so a graph's
   memory does not grow with the number of steps. The net's own activations are not counted, since a graph's
   private pool reuses them.

`check_capture` runs the sampler's own loop (fastdiff.sampling.loop.SamplingLoop, or a solver program's
ProgramLoop: the code that `sample` and `GraphedSampler` run) twice: the second time with other latents, seeds, labels and noise levels. Both runs
happen under a dispatch mode that sees every op and a function mode that sees every tensor-to-Python
conversion. It reports each violation with its op, its line of code and its step.

`EmulatedGraph` gives a graph's semantics on any device: it records the ops a function runs and replays them
on the same tensors, without the Python code. That is how the graphed sampler is tested here, without a GPU.

Neither can see work that bypasses torch's dispatcher (numpy on memory obtained earlier, C extensions that
read data pointers). On a machine with one device, neither can see copies between devices.
"""
from __future__ import annotations

import os
import sys
import weakref
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["CaptureError", "CaptureReport", "EmulatedGraph", "Violation", "check_capture"]

# Ops that hand a device value to the host.
SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::is_nonzero", "aten::item", "aten::equal",
                      "aten::_linalg_check_errors"})  # the last raises on singular inputs: it reads their info
# Ops whose output shape depends on tensor values: the host waits for the device to size the output.
DATA_DEPENDENT_OPS = frozenset({"aten::nonzero", "aten::nonzero_numpy", "aten::argwhere", "aten::masked_select",
                                "aten::_unique", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
                                "aten::unique_dim_consecutive", "aten::bincount"})
# Ops that take tensors but return a Python value computed from their metadata only, not from their values.
METADATA_OPS = frozenset({"aten::result_type", "aten::is_same_size", "aten::is_pinned", "aten::_nnz", "aten::is_coalesced",
                          "aten::is_set_to", "aten::_has_same_storage_numel", "aten::dense_dim", "aten::sparse_dim"})
# Ops that allocate memory but run no kernel.
NO_KERNEL_OPS = frozenset({"aten::empty", "aten::empty_strided", "aten::empty_like", "aten::new_empty",
                           "aten::new_empty_strided"})
# Tensor methods that convert values to Python objects (the function mode sees them).
CONVERSIONS = frozenset({"item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "__complex__",
                         "__array__", "__repr__", "__str__", "__format__"})
HOST_DATA_OPS = frozenset({"aten::lift_fresh"})  # torch.tensor(host data): a host-to-device copy on a GPU

KINDS = {
    "sync": "reads a device value on the host",
    "host tensor": "uses a tensor of another device (a host tensor's value is baked into a graph)",
    "host data": "makes a tensor from host data (a host-to-device copy per call)",
    "scalar": "passes an op a Python value that differs between calls (a graph replays the first)",
    "dynamic shape": "gives an op tensors whose shapes differ between calls",
    "control flow": "runs different ops in different calls (a graph replays the first call's ops)",
    "allocation": "allocates memory after the first step, outside the net (not on fixed buffers)",
}


class CaptureError(RuntimeError):
    """A loop cannot be captured in a CUDA graph; the message names each reason."""


@dataclass
class Violation:
    """One way in which a loop is not capture-safe: `kind` (a key of KINDS), the op, where in the code, at which
    step (-1: before the loop; `steps`: after it), whether inside the net, how often it happened, and details."""

    kind: str
    op: str
    where: str
    step: int
    in_net: bool
    detail: str = ""
    count: int = 1

    steps: int = field(default=0, compare=False)  # of the loop: step == steps means after the loop

    def __str__(self) -> str:
        step = ("before the first step" if self.step < 0 else "after the last step" if self.step >= self.steps > 0
                else f"step {self.step}")
        who = "in the net" if self.in_net else "in the sampler"
        times = f", {self.count} times" if self.count > 1 else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.kind}: {self.op} at {self.where} ({who}, {step}{times}) {KINDS[self.kind]}{detail}"


@dataclass
class CaptureReport:
    """What check_capture found. `ok` when there is no violation. `kernels_per_step` counts the ops that run a
    kernel in each step of the first call, outside the net and inside it. These are eager launches, the number
    a graph replaces with one."""

    violations: list[Violation] = field(default_factory=list)
    kernels_per_step: list[tuple[int, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        if self.ok:
            return f"capture-safe ({len(self.kernels_per_step)} steps checked over two calls)"
        lines = [f"not capture-safe, {len(self.violations)} problem{'s' if len(self.violations) > 1 else ''}:"]
        return "\n  ".join(lines + [str(v) for v in self.violations])

    def raise_if_unsafe(self) -> None:
        if not self.ok:
            raise CaptureError(str(self))


def check_capture(net, latents, class_labels=None, **sample_kwargs) -> CaptureReport:
    """Check whether fastdiff.sample(net, latents, class_labels, **sample_kwargs) can be captured in a CUDA graph,
    on whatever device latents are on. After one untraced warm-up run (what a net sets up on its first call, as a
    graph's warm-up would, is not held against it), runs the sampler's loop twice, the second time with other
    latents, seeds, labels (rolled over the batch) and noise levels (the same schedule scaled by 3/4), and reports
    every violation of the four rules in this module's docstring. A torch.compile'd net runs eagerly under the
    checker's modes, so the verdict is about its Python source. reuse_buffers defaults to True (what GraphedSampler
    runs): without it, or on the reference backend, each step allocates its results."""
    from .loop import build_loop
    from .plan import SampleOptions
    from .programs import PROGRAM_SOLVERS

    from .extra import check_extra_args

    sample_kwargs.setdefault("reuse_buffers", True)
    options, per_call = SampleOptions.split(sample_kwargs, others=("randn_like", "seeds", "callback", "extra_args"))
    extra_args = check_extra_args(per_call.pop("extra_args", None))
    check_no_autocast(latents.device if isinstance(latents, torch.Tensor) else None)
    if options.solver in PROGRAM_SOLVERS:  # a solver program's loop (fastdiff.sampling.program_loop)
        loop, seeds = _program_loop(net, latents, class_labels, options, **per_call)
    else:
        loop, seeds = build_loop(net, latents, class_labels, options=options, **per_call)
    other_seeds = None if seeds is None else seeds ^ 0x5DEECE66D
    other_labels = None if class_labels is None else class_labels.roll(1, 0)
    calls = [(latents, seeds, class_labels), (-latents, other_seeds, other_labels)]
    return trace_loop(loop, lambda call: loop.run(*calls[call], extra_args=extra_args))


def _program_loop(net, latents, class_labels, options, randn_like=None, seeds=None, callback=None):
    """check_capture's (ProgramLoop, seeds) for a solver program, as build_loop makes a SamplingLoop's."""
    from ..rng import draw_seeds, seeds_tensor
    from .program_loop import build_program_loop, prepare_program

    setup = prepare_program(net, latents, class_labels, randn_like, seeds, callback, options)
    if randn_like is None:
        batch, device = latents.shape[0], latents.device
        if seeds is not None:
            seeds = seeds_tensor(seeds, batch, device)
        elif setup.plan.adds_noise():
            seeds = draw_seeds(batch, device)
    loop = build_program_loop(net, latents, options, setup, randn_like=randn_like, callback=callback,
                              in_place=options.reuse_buffers)
    return loop, seeds


def check_no_autocast(device) -> None:
    """An enclosing torch.autocast casts weights outside the graph and caches them: refuse it by name."""
    kinds = {"cpu", "cuda"} if device is None else {torch.device(device).type}
    for kind in kinds:
        try:
            enabled = torch.is_autocast_enabled(kind)
        except (TypeError, RuntimeError):  # a device type autocast does not know
            enabled = False
        if enabled:
            raise CaptureError(f"autocast: a torch.autocast({kind!r}) region encloses the sampler; its cast weights "
                               "are cached outside the graph. Enter autocast inside the net's forward instead")


def scaled_plan(plan, factor: float):
    """The plan with every noise level (and noise std) times factor: the same structure, other values."""
    return plan.scaled(factor)


def trace_loop(loop, run, prepare=None) -> CaptureReport:
    """The check: run(0) once untraced (a warm-up: what a net sets up on its first call is not held against it, as a
    graph's warm-up would do it before capture), then run(0) and run(1) under the tracing modes, call 1 on the loop's
    schedule scaled by 3/4. prepare(call), when given, sets a call's other inputs first, on the host and untraced.
    loop is the SamplingLoop or ProgramLoop that run drives; its net, step hook and schedule are restored afterwards."""
    state = _TraceState(loop.device, loop.plan.num_steps)
    net, on_step, plan = loop.net, loop.on_step, loop.plan

    def begin(call):
        loop.set_plan(plan if call == 0 else scaled_plan(plan, 0.75))
        if prepare is not None:
            prepare(call)

    def traced_net(*args, **kwargs):
        state.in_net += 1
        try:
            return net(*args, **kwargs)
        finally:
            state.in_net -= 1

    try:
        begin(0)
        with torch.no_grad():
            run(0)
        loop.net, loop.on_step = traced_net, state.begin_step
        for call in (0, 1):
            begin(call)
            state.begin_call(call)
            with torch.no_grad(), _ConversionMode(state), _OpMode(state.op):
                run(call)
    finally:
        loop.net, loop.on_step = net, on_step
        loop.set_plan(plan)
    return state.report()


@dataclass(frozen=True)
class _Entry:
    """One op call as the call-to-call comparison sees it."""

    op: str
    overload: str
    where: str
    scalars: tuple  # the non-tensor arguments, in order
    metas: tuple  # (shape, dtype) of each tensor argument
    step: int = field(compare=False)
    in_net: int = field(compare=False)


class _TraceState:
    """What the two tracing modes share: the position in the loop, the traces of both calls and the violations."""

    def __init__(self, device, steps: int):
        self.device, self.steps = torch.device(device), steps
        self.call, self.step, self.in_net, self.converting, self.setitem = 0, -1, 0, 0, 0
        self.traces: list[list[_Entry]] = [[], []]
        self.kernels: list[list[int]] = []
        self.found: dict[tuple, Violation] = {}

    def begin_call(self, call: int) -> None:
        self.call, self.step = call, -1

    def begin_step(self, i: int) -> None:
        """Step i begins (i == the number of steps: the loop has ended)."""
        self.step = i
        if self.call == 0 and i < self.steps:
            self.kernels.append([0, 0])

    def add(self, kind: str, op: str, where: str, detail: str = "") -> None:
        """Record a violation; repeats of a kind at one op and line count into the first one (and its detail)."""
        key = (kind, op, where)
        if key in self.found:
            self.found[key].count += 1
        else:
            self.found[key] = Violation(kind, op, where, self.step, self.in_net > 0, detail, steps=self.steps)

    def conversion(self, name: str) -> None:
        self.add("sync", f"Tensor.{name}", _where())

    def op(self, func, args, kwargs, out) -> None:
        name, where = func._schema.name, _where()
        leaves = tree_flatten((args, kwargs))[0]
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        outputs = [x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)]
        read = _host_read(func, args, kwargs, tensors)
        if read is not None and not self.converting:  # a conversion seen by the function mode is reported there
            self.add("sync", name, where, read)
        scalars = tuple(_describe(x) for x in leaves if not isinstance(x, torch.Tensor))
        if name in HOST_DATA_OPS:
            if _scalar_fill(self.setitem, outputs):
                self.converting += 1
                try:
                    scalars = (_describe(outputs[0].item()),)  # compared between calls like any Python argument
                finally:
                    self.converting -= 1
            else:
                self.add("host data", name, where)
        for t in tensors + outputs:
            if t.device != self.device:
                self.add("host tensor", name, where, f"a tensor on {t.device}, the loop runs on {self.device}")
                break
        allocates = _allocates(func)
        in_loop = 0 <= self.step < self.steps
        if allocates and in_loop and self.step >= 1 and not self.in_net:
            self.add("allocation", name, where)
        if self.call == 0 and in_loop and (allocates or _mutates(func)) and name not in NO_KERNEL_OPS:
            self.kernels[-1][1 if self.in_net else 0] += 1
        metas = tuple((tuple(t.shape), t.dtype) for t in tensors)
        self.traces[self.call].append(_Entry(name, func._overloadname, where, scalars, metas, self.step, self.in_net))

    def report(self) -> CaptureReport:
        self._compare_calls()
        return CaptureReport(list(self.found.values()), [tuple(k) for k in self.kernels])

    def _compare_calls(self) -> None:
        """The two calls must run the same ops with the same Python arguments and tensor shapes."""
        first, second = self.traces
        for a, b in zip(first, second):
            self.step, self.in_net = a.step, a.in_net
            if (a.op, a.overload, a.where) != (b.op, b.overload, b.where):
                self.add("control flow", a.op, a.where, f"the other call ran {b.op} at {b.where} instead")
                return  # after a divergence, positions no longer correspond
            if a.metas != b.metas:
                self.add("dynamic shape", a.op, a.where, f"{_shapes(a.metas)} in one call, {_shapes(b.metas)} in the other")
            elif a.scalars != b.scalars:
                changed = [(x, y) for x, y in zip(a.scalars, b.scalars) if x != y]
                self.add("scalar", a.op, a.where, f"{changed[0][0]} in one call, {changed[0][1]} in the other")
        if len(first) != len(second):
            self.step, self.in_net = -1, 0
            self.add("control flow", "(end of call)", "-", f"one call ran {len(first)} ops, the other {len(second)}")


class _OpMode(TorchDispatchMode):
    """Sees every op below autograd and hands it, with its result, to on_op(func, args, kwargs, out)."""

    def __init__(self, on_op):
        super().__init__()
        self.on_op = on_op

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.on_op(func, args, kwargs or {}, out)
        return out


class _ConversionMode(TorchFunctionMode):
    """Sees Tensor methods that turn values into Python objects (some, tolist and numpy on CPU, dispatch no op at all)
    and calls owner.conversion(name); counts owner.setitem while a __setitem__ runs and owner.converting while a
    conversion runs (the ops it dispatches are then not reported again)."""

    def __init__(self, owner):
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        counter = "setitem" if name == "__setitem__" else "converting" if name in CONVERSIONS else None
        if counter is None:
            return func(*args, **(kwargs or {}))
        if counter == "converting" and not self.owner.converting:
            self.owner.conversion(name)
        setattr(self.owner, counter, getattr(self.owner, counter) + 1)
        try:
            return func(*args, **(kwargs or {}))
        finally:
            setattr(self.owner, counter, getattr(self.owner, counter) - 1)


class EmulatedGraph:
    """A CUDA graph's semantics on any device, for checking graphed code where there is no GPU.

    capture(fn) runs fn once and records every op it runs, with its Python arguments. replay() runs those ops again
    in order, without fn's Python code, so (as with a CUDA graph) whatever the host decided at capture is replayed
    as it was. Tensors that existed before the capture (static inputs and outputs, parameters) are used as they
    are, so replays read their current values and write into them. Tensors the capture made are remade by each
    replay and freed after their last use, as a graph's private pool reuses their memory. A capture-made tensor
    that the caller still holds receives its new value at the end of each replay. Reading a device value on the
    host during capture raises CaptureError, as a real capture fails. An emulated graph runs no faster than eager:
    it is for tests.
    """

    def __init__(self):
        self._ops: list[tuple] = []  # (func, args template, kwargs template, [(output position, slot)])
        self._constants: dict[int, torch.Tensor] = {}  # tensors from before the capture, by id
        self._slot_of: dict[int, int] = {}  # id of a capture-made tensor -> its slot
        self._made: list[weakref.ref] = []  # per slot, the capture-made tensor
        self._frees: list[list[int]] = []  # per op, the slots it used last
        self._kept_slots: list[int] = []  # slots whose tensors the caller still held after capture
        self._addresses: dict[int, int] = {}  # id -> data_ptr of each tensor from before the capture, at capture
        self._live_bytes = self._peak_bytes = 0
        self.setitem = self.converting = 0  # counted by _ConversionMode
        self.num_ops = 0  # ops that run a kernel (views and empty tensors run none)
        self.captured = False

    def capture(self, fn) -> None:
        if self.captured:
            raise RuntimeError("capture: this graph was already captured; make a new EmulatedGraph")
        try:
            with torch.no_grad(), _ConversionMode(self), _OpMode(self._record):
                fn()
        except BaseException:
            self.__init__()  # a failed capture leaves nothing to replay
            raise
        last_use: dict[int, int] = {}
        for index, (_, args, kwargs, _) in enumerate(self._ops):
            for leaf in tree_flatten((args, kwargs))[0]:
                if isinstance(leaf, _Slot):
                    last_use[leaf.index] = index
        self._kept_slots = [slot for slot, ref in enumerate(self._made) if ref() is not None]
        kept = set(self._kept_slots)
        self._frees = [[] for _ in self._ops]
        for slot, index in last_use.items():
            if slot not in kept:
                self._frees[index].append(slot)
        self.captured = True

    def replay(self) -> None:
        if not self.captured:
            raise RuntimeError("replay: nothing captured yet; call capture(fn) first")
        for key, tensor in self._constants.items():  # a CUDA graph holds addresses, not tensors
            if tensor.data_ptr() != self._addresses[key]:
                raise RuntimeError(f"replay: a {tuple(tensor.shape)} {tensor.dtype} tensor the graph reads or writes has "
                                   "new memory since capture (a parameter replaced, .data assigned, .to() moved it); a "
                                   "CUDA graph would use the old address: capture again")
        values: list = [None] * len(self._made)

        def fill(leaf):
            return values[leaf.index] if isinstance(leaf, _Slot) else leaf

        # Autocast off: an enclosing autocast must not change the recorded ops (a graph replays kernels, not ops).
        with torch.no_grad(), torch.autocast("cpu", enabled=False), _no_cuda_autocast():
            for (func, args, kwargs, outputs), frees in zip(self._ops, self._frees):
                result = func(*tree_map(fill, args), **tree_map(fill, kwargs))
                flat = _flat_returns(result)
                for position, slot in outputs:
                    values[slot] = flat[position]
                for slot in frees:
                    values[slot] = None
            for slot in self._kept_slots:
                held = self._made[slot]()
                if held is not None and values[slot] is not None and values[slot] is not held:
                    held.copy_(values[slot])

    @property
    def fresh_bytes(self) -> int:
        """The most bytes of capture-made tensors alive at once during capture: what a graph's private pool holds."""
        return self._peak_bytes

    @property
    def memory_bytes(self) -> int:
        """fresh_bytes plus the distinct storages of the tensors from before the capture that the ops use."""
        return _storage_bytes(self._constants.values()) + self._peak_bytes

    def _template(self, leaf):
        """An argument as recorded: a capture-made tensor becomes its slot; anything else is kept as it is."""
        if not isinstance(leaf, torch.Tensor):
            return leaf
        slot = self._slot_of.get(id(leaf))
        if slot is not None and self._made[slot]() is leaf:
            return _Slot(slot)
        self._constants[id(leaf)] = leaf
        self._addresses[id(leaf)] = leaf.data_ptr()
        return leaf

    def _record(self, func, args, kwargs, out) -> None:
        name = func._schema.name
        where = _where()
        inputs = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        read = _host_read(func, args, kwargs, inputs)
        if read == "":
            raise CaptureError(f"{name} at {where} reads a device value on the host, which capture forbids")
        if read is not None:
            raise CaptureError(f"{name} at {where}: {read}, which capture forbids")
        if name in HOST_DATA_OPS and not _scalar_fill(self.setitem, _flat_returns(out)):
            raise CaptureError(f"{name} at {where} makes a tensor from host data (a host-to-device copy), which "
                               "capture forbids")
        args_template, kwargs_template = tree_map(self._template, args), tree_map(self._template, kwargs)
        allocates = _allocates(func) or name in NO_KERNEL_OPS
        if name not in NO_KERNEL_OPS and (_allocates(func) or _mutates(func)):
            self.num_ops += 1
        outputs = []
        for position, tensor in enumerate(_flat_returns(out)):
            if not isinstance(tensor, torch.Tensor) or any(tensor is x for x in inputs):
                continue  # an in-place or out= op returns its argument, which keeps its identity
            slot = len(self._made)
            self._made.append(weakref.ref(tensor))
            self._slot_of[id(tensor)] = slot
            outputs.append((position, slot))
            if allocates and tensor._base is None:
                nbytes = tensor.untyped_storage().nbytes()
                self._live_bytes += nbytes
                self._peak_bytes = max(self._peak_bytes, self._live_bytes)
                weakref.finalize(tensor, self._release, nbytes)
        self._ops.append((func, args_template, kwargs_template, outputs))

    def conversion(self, name: str) -> None:
        raise CaptureError(f"Tensor.{name} at {_where()} reads a device value on the host, which capture forbids")

    def _release(self, nbytes: int) -> None:
        self._live_bytes -= nbytes


@dataclass(frozen=True)
class _Slot:
    """A capture-made tensor in a recorded op's arguments: replay substitutes the tensor it made there."""

    index: int


def _returns_value(func) -> bool:
    """Whether the op returns only Python values (numbers, bools; a dtype is an int in schemas), no tensor. Ops that
    return tensors and sizes (flash attention's max_q, max_k) know the sizes on the host: no sync."""
    returns = func._schema.returns
    return bool(returns) and all(str(r.type) in ("Scalar", "bool", "int", "float", "complex", "SymInt", "SymFloat", "SymBool")
               for r in func._schema.returns)


def _allocates(func) -> bool:
    """Whether the op returns a tensor with new memory (no alias annotation)."""
    return any(r.alias_info is None and "Tensor" in str(r.type) for r in func._schema.returns)


def _mutates(func) -> bool:
    """Whether the op writes into one of its arguments (in-place, out=, or a custom op's mutable argument)."""
    return any(a.alias_info is not None and a.alias_info.is_write for a in func._schema.arguments)


def _no_cuda_autocast():
    import contextlib

    return torch.autocast("cuda", enabled=False) if torch.cuda.is_available() else contextlib.nullcontext()


def _storage_bytes(tensors) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _flat_returns(out) -> list:
    return tree_flatten(out)[0]


def _host_read(func, args, kwargs, tensors) -> str | None:
    """None when the op needs no device value on the host; otherwise "" (it reads one) or how its output's shape
    depends on tensor values."""
    name = func._schema.name
    if name in SYNC_OPS or (_returns_value(func) and tensors and name not in METADATA_OPS):
        return ""
    if _data_dependent(func, args, kwargs):
        return "its output's shape depends on tensor values"
    return None


def _scalar_fill(setitem: int, outputs) -> bool:
    """lift_fresh of 0-d tensors inside __setitem__ (t[i] = 0.5): a scalar fill, which copies nothing on a GPU."""
    return bool(setitem) and all(t.dim() == 0 for t in outputs if isinstance(t, torch.Tensor))


def _data_dependent(func, args, kwargs) -> bool:
    """Whether the op's output shape depends on tensor values: the host must wait for them to size it."""
    name = func._schema.name
    if name in DATA_DEPENDENT_OPS:
        return True
    if name == "aten::repeat_interleave" and func._overloadname in ("Tensor", "self_Tensor"):
        return kwargs.get("output_size") is None
    if name in ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_") and len(args) > 1:
        indices = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8) for t in indices)
    return False


def _describe(x):
    """A non-tensor argument, comparable between calls (NaN equal to NaN)."""
    if isinstance(x, float) and x != x:
        return "nan"
    if isinstance(x, (bool, int, float, complex, str, type(None))):
        return x
    return repr(x)


def _shapes(metas) -> str:
    return ", ".join(str(list(shape)) for shape, _ in metas)


_SKIP = (os.path.dirname(torch.__file__) + os.sep, os.path.abspath(__file__))


_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + os.sep


def _where() -> str:
    """file:line of the innermost caller outside torch and this module."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP):
        frame = frame.f_back
    if frame is None:
        return "?"
    path = frame.f_code.co_filename
    if path.startswith(_PACKAGE_PARENT):  # fastdiff's own code: its path in the package, e.g. fastdiff/sampling/loop.py
        short = os.path.relpath(path, _PACKAGE_PARENT)
    else:  # the user's: the file and its folder
        short = os.sep.join(path.split(os.sep)[-2:])
    return f"{short}:{frame.f_lineno} ({frame.f_code.co_name})"
