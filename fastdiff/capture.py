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

`check_capture` runs the sampler's own loop (fastdiff.sampler.SamplingLoop, the code that `sample` and
`GraphedSampler` run) twice: the second time with other latents, seeds, labels and noise levels. Both runs
happen under a dispatch mode that sees every op and a function mode that sees every tensor-to-Python
conversion. It reports each violation with its op, its line of code and its step.

`EmulatedGraph` gives a graph's semantics on any device: it records the ops a function runs and replays them
on the same tensors, without the Python code. That is how the graphed sampler is tested here, without a GPU.

Neither can see work that bypasses torch's dispatcher (numpy on memory obtained earlier, C extensions that
read data pointers). On a machine with one device, neither can see copies between devices.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["CaptureError", "CaptureReport", "EmulatedGraph", "Violation", "check_capture"]

# Ops that hand a device value to the host.
SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::is_nonzero", "aten::item", "aten::equal"})
# Ops whose output shape depends on tensor values: the host waits for the device to size the output.
DATA_DEPENDENT_OPS = frozenset({"aten::nonzero", "aten::nonzero_numpy", "aten::argwhere", "aten::masked_select",
                                "aten::_unique", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
                                "aten::unique_dim_consecutive"})
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
    step (-1: before the loop), whether inside the net, how often it happened, and details."""

    kind: str
    op: str
    where: str
    step: int
    in_net: bool
    detail: str = ""
    count: int = 1

    def __str__(self) -> str:
        step = "before the first step" if self.step < 0 else f"step {self.step}"
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
    on whatever device latents are on. Runs the sampler's loop twice, the second time with other latents, seeds,
    labels (rolled over the batch) and noise levels (the same schedule scaled by 3/4), and reports every
    violation of the four rules in this module's docstring. reuse_buffers defaults to True (what GraphedSampler
    runs): without it, or on the reference backend, each step allocates its results."""
    from .sampler import build_loop

    sample_kwargs.setdefault("reuse_buffers", True)
    loop, seeds = build_loop(net, latents, class_labels, **sample_kwargs)
    other_seeds = None if seeds is None else seeds ^ 0x5DEECE66D
    other_labels = None if class_labels is None else class_labels.roll(1, 0)
    calls = [(latents, seeds, class_labels), (-latents, other_seeds, other_labels)]
    plan = loop.plan

    def prepare(call):
        loop.set_plan(plan if call == 0 else scaled_plan(plan, 0.75))

    try:
        return trace_loop(loop, lambda call: loop.run(*calls[call]), prepare)
    finally:
        loop.set_plan(plan)


def scaled_plan(plan, factor: float):
    """The plan with every noise level (and noise std) times factor: the same structure, other values."""
    return dataclasses.replace(plan, t=tuple(v * factor for v in plan.t), t_hat=tuple(v * factor for v in plan.t_hat),
                               noise_std=tuple(v * factor for v in plan.noise_std))


def trace_loop(loop, run, prepare) -> CaptureReport:
    """Run run(call) for call 0 and 1 under the tracing modes, prepare(call) before each on the host (untraced);
    loop is the SamplingLoop they run, whose net and step hook are instrumented meanwhile."""
    state = _TraceState(loop.device)
    net = loop.net

    def traced_net(*args):
        state.in_net += 1
        try:
            return net(*args)
        finally:
            state.in_net -= 1

    loop.net, loop.on_step = traced_net, state.begin_step
    try:
        for call in (0, 1):
            prepare(call)
            state.begin_call(call)
            with torch.no_grad(), _ConversionMode(state), _OpMode(state):
                run(call)
    finally:
        loop.net, loop.on_step = net, None
    return state.report()


@dataclass(frozen=True)
class _Entry:
    """One op call as the call-to-call comparison sees it."""

    op: str
    where: str
    scalars: tuple  # the non-tensor arguments, in order
    metas: tuple  # (shape, dtype) of each tensor argument


class _TraceState:
    """What the two tracing modes share: the position in the loop, the traces of both calls and the violations."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.call, self.step, self.in_net, self.converting = 0, -1, 0, 0
        self.traces: list[list[_Entry]] = [[], []]
        self.kernels: list[list[int]] = []
        self.found: dict[tuple, Violation] = {}

    def begin_call(self, call: int) -> None:
        self.call, self.step = call, -1

    def begin_step(self, i: int) -> None:
        self.step = i
        if self.call == 0:
            self.kernels.append([0, 0])

    def add(self, kind: str, op: str, where: str, detail: str = "") -> None:
        key = (kind, op, where, detail)
        if key in self.found:
            self.found[key].count += 1
        else:
            self.found[key] = Violation(kind, op, where, self.step, self.in_net > 0, detail)

    def conversion(self, name: str) -> None:
        self.add("sync", f"Tensor.{name}", _where())

    def op(self, func, args, kwargs, out) -> None:
        name, where = func._schema.name, _where()
        leaves = tree_flatten((args, kwargs))[0]
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        outputs = [x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)]
        if not self.converting:  # a conversion seen by the function mode is reported once, there
            if name in SYNC_OPS or (_returns_value(func) and tensors and name not in METADATA_OPS):
                self.add("sync", name, where)
            elif name in DATA_DEPENDENT_OPS or _has_mask_index(name, tensors):
                self.add("sync", name, where, "its output's shape depends on tensor values")
        if name in HOST_DATA_OPS:
            self.add("host data", name, where)
        for t in tensors + outputs:
            if t.device != self.device:
                self.add("host tensor", name, where, f"a tensor on {t.device}, the loop runs on {self.device}")
                break
        allocates = _allocates(func)
        if allocates and self.step >= 1 and not self.in_net:
            self.add("allocation", name, where)
        if self.call == 0 and self.step >= 0 and (allocates or _mutates(func)) and name not in NO_KERNEL_OPS:
            self.kernels[-1][1 if self.in_net else 0] += 1
        scalars = tuple(_describe(x) for x in leaves if not isinstance(x, torch.Tensor))
        metas = tuple((tuple(t.shape), t.dtype) for t in tensors)
        self.traces[self.call].append(_Entry(f"{name}.{func._overloadname}", where, scalars, metas))

    def report(self) -> CaptureReport:
        self._compare_calls()
        return CaptureReport(list(self.found.values()), [tuple(k) for k in self.kernels])

    def _compare_calls(self) -> None:
        """The two calls must run the same ops with the same Python arguments and tensor shapes."""
        first, second = self.traces
        self.step, self.in_net = -1, 0
        for a, b in zip(first, second):
            if (a.op, a.where) != (b.op, b.where):
                self.add("control flow", a.op, a.where, f"the other call ran {b.op} at {b.where} instead")
                return  # after a divergence, positions no longer correspond
            if a.metas != b.metas:
                self.add("dynamic shape", a.op, a.where, f"{_shapes(a.metas)} in one call, {_shapes(b.metas)} in the other")
            elif a.scalars != b.scalars:
                changed = [(x, y) for x, y in zip(a.scalars, b.scalars) if x != y]
                self.add("scalar", a.op, a.where, f"{changed[0][0]} in one call, {changed[0][1]} in the other")
        if len(first) != len(second):
            self.add("control flow", "(end of call)", "-", f"one call ran {len(first)} ops, the other {len(second)}")


class _OpMode(TorchDispatchMode):
    """Sees every op below autograd."""

    def __init__(self, state: _TraceState):
        super().__init__()
        self.state = state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.state.op(func, args, kwargs or {}, out)
        return out


class _ConversionMode(TorchFunctionMode):
    """Sees Tensor methods that turn values into Python objects; some (tolist, numpy on CPU) dispatch no op at all."""

    def __init__(self, state: _TraceState):
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name not in CONVERSIONS:
            return func(*args, **(kwargs or {}))
        self.state.conversion(name)
        self.state.converting += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            self.state.converting -= 1


class EmulatedGraph:
    """A CUDA graph's semantics on any device, for checking graphed code where there is no GPU.

    capture(fn) runs fn once and records every op that runs a kernel, with the very tensors and Python arguments it
    got. replay() runs those ops again: in-place and out= ops on the same tensors, and the others with their results
    copied to where the capture's results are. It does not run fn's Python code again, so, as with a CUDA graph,
    anything the host decided at capture is replayed as it was. Reading a device value on the host during capture
    raises CaptureError, as a real capture fails. The recorded tensors stay alive with the graph, like a graph's
    memory pool. It runs no faster than eager: it is for tests.
    """

    def __init__(self):
        self._entries: list[tuple] = []
        self._kept: list[torch.Tensor] = []  # every tensor the ops touched
        self._fresh: list[torch.Tensor] = []  # the tensors capture made: the graph's "pool"
        self.captured = False

    def capture(self, fn) -> None:
        if self.captured:
            raise RuntimeError("capture: this graph was already captured; make a new EmulatedGraph")
        with torch.no_grad(), _RecordingConversionMode(), _RecordingMode(self):
            fn()
        self.captured = True

    def replay(self) -> None:
        if not self.captured:
            raise RuntimeError("replay: nothing captured yet; call capture(fn) first")
        with torch.no_grad():
            for func, args, kwargs, fresh in self._entries:
                result = func(*args, **kwargs)
                for kept, new in fresh:
                    kept.copy_(_flat_returns(result)[new])

    @property
    def num_ops(self) -> int:
        """Kernels a replay runs."""
        return len(self._entries)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the distinct storages the recorded ops read or write (inputs and parameters included)."""
        return _storage_bytes(self._kept)

    @property
    def fresh_bytes(self) -> int:
        """Bytes of the distinct storages made during capture, which a CUDA graph's private pool would hold."""
        return _storage_bytes(self._fresh)

    def _record(self, func, args, kwargs, out) -> None:
        name = func._schema.name
        where = _where()
        tensors = [x for x in tree_flatten((args, kwargs))[0] if isinstance(x, torch.Tensor)]
        if name in SYNC_OPS or (_returns_value(func) and tensors and name not in METADATA_OPS):
            raise CaptureError(f"{name} at {where} reads a device value on the host, which capture forbids")
        if name in DATA_DEPENDENT_OPS or _has_mask_index(name, tensors):
            raise CaptureError(f"{name} at {where}: its output's shape depends on tensor values, which capture forbids")
        if name in NO_KERNEL_OPS or not (_allocates(func) or _mutates(func)):
            return  # views and empty tensors: no kernel to replay
        returns = _flat_returns(out)
        fresh = [(returns[k], k) for k in _fresh_positions(func, returns)]
        self._entries.append((func, args, kwargs, fresh))
        self._kept.extend(tensors + [t for t, _ in fresh])
        self._fresh.extend(t for t, _ in fresh)


class _RecordingMode(TorchDispatchMode):
    def __init__(self, graph: EmulatedGraph):
        super().__init__()
        self.graph = graph

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.graph._record(func, args, kwargs or {}, out)
        return out


class _RecordingConversionMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in CONVERSIONS:
            raise CaptureError(f"Tensor.{name} at {_where()} reads a device value on the host, which capture forbids")
        return func(*args, **(kwargs or {}))


def _returns_value(func) -> bool:
    """Whether the op returns a Python value (a number or bool; a dtype is an int in schemas) rather than tensors."""
    return any(str(r.type) in ("Scalar", "bool", "int", "float", "complex", "SymInt", "SymFloat", "SymBool")
               for r in func._schema.returns)


def _allocates(func) -> bool:
    """Whether the op returns a tensor with new memory (no alias annotation)."""
    return any(r.alias_info is None and "Tensor" in str(r.type) for r in func._schema.returns)


def _mutates(func) -> bool:
    """Whether the op writes into one of its arguments (in-place, out=, or a custom op's mutable argument)."""
    return any(a.alias_info is not None and a.alias_info.is_write for a in func._schema.arguments)


def _fresh_positions(func, returns: list) -> list[int]:
    """Indices into the flattened returns of the tensors with new memory."""
    positions, k = [], 0
    for r in func._schema.returns:
        n = len(returns) - k if str(r.type).endswith("[]") else 1  # a Tensor[] return is flattened in place
        if r.alias_info is None and "Tensor" in str(r.type):
            positions.extend(i for i in range(k, k + n) if isinstance(returns[i], torch.Tensor))
        k += n
    return positions


def _storage_bytes(tensors) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _flat_returns(out) -> list:
    return tree_flatten(out)[0]


def _has_mask_index(name: str, tensors: list) -> bool:
    """Indexing with a boolean mask: the result's size is the number of True values."""
    return name in ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_") and any(
        t.dtype in (torch.bool, torch.uint8) for t in tensors[1:])


def _describe(x):
    """A non-tensor argument, comparable between calls."""
    if isinstance(x, (bool, int, float, complex, str, type(None))):
        return x
    return repr(x)


def _shapes(metas) -> str:
    return ", ".join(str(list(shape)) for shape, _ in metas)


_SKIP = (os.path.dirname(torch.__file__) + os.sep, os.path.abspath(__file__))


def _where() -> str:
    """file:line of the innermost caller outside torch and this module."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_SKIP):
        frame = frame.f_back
    if frame is None:
        return "?"
    path = frame.f_code.co_filename
    short = os.sep.join(path.split(os.sep)[-2:])
    return f"{short}:{frame.f_lineno} ({frame.f_code.co_name})"
