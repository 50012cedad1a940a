"""Ahead-of-time compilation report for every Triton kernel: 128-bit global accesses, local memory, spills, registers.

No GPU is needed. Each kernel variant is compiled with `triton.compile` for a `GPUTarget` (sm_80 and sm_90) with the
launcher's constexprs, BLOCK and options (fastdiff/ops/kernels/_utils.py) and the specialization a real launch with 16-byte-aligned
inputs gets; its PTX is scanned for global loads and stores by access width and for `.local` memory, and run through
the ptxas Triton itself uses, with `-v`, for registers and spills.

    python -m fastdiff.ops.kernels._aot            # the report as JSON (a list of one dict per variant and arch)
    python -m fastdiff.ops.kernels._aot --table    # the same as a readable table

TRITON_INTERPRET must be unset or 0: under the interpreter `@triton.jit` returns functions that cannot be compiled.
A variant that fails to compile is reported with its `error` (the root cause, one line) and `error_detail`, and the
command then exits with status 1 after printing the whole report. Triton's disk cache makes reruns fast, but its key
leaves out some settings (TRITON_ALLOW_NON_CONSTEXPR_GLOBALS): point TRITON_CACHE_DIR at an empty directory for a
clean run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field

import triton
from triton.backends.compiler import GPUTarget

from . import combine, euler_step, heun_step, loss, multistep_step, randn, skip_mix
from ..._codes import PRECOND_CODES
from ._utils import BLOCK, LAUNCH_OPTIONS, NOISE_LAUNCH_OPTIONS

ARCHS = (80, 90)
SIZES = ("numel", "numel_per_sample")  # the integer sizes a real launch specializes when divisible by 16
SCALAR_TYPES = {"sigma_data": "fp32"}  # non-pointer, non-size arguments (sizes are i32 below 2^31 elements)
TYPE_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "i64": 64, "i32": 32}


@dataclass(frozen=True)
class Variant:
    """One specialization of a kernel: its constexprs (BLOCK added) and the pointer dtypes that differ from the kernel's.

    `reads`/`writes` override the kernel's streamed tensors when this variant touches others (None: the kernel's);
    `unaligned` lists sizes a real launch of this variant cannot have divisible by 16.
    """
    name: str
    constexprs: dict
    dtypes: dict = field(default_factory=dict)
    reads: tuple | None = None
    writes: tuple | None = None
    unaligned: tuple = ()


@dataclass(frozen=True)
class Kernel:
    """A kernel and its variants. Pointer arguments are *fp32 unless `dtypes` (or the variant) says otherwise;
    `reads`/`writes` are the data tensors streamed once per element, the ones that should get 128-bit accesses."""
    fn: object
    reads: tuple
    writes: tuple
    variants: tuple
    dtypes: dict = field(default_factory=dict)
    options: dict = field(default_factory=lambda: LAUNCH_OPTIONS)  # the launch options its launcher uses


BF16_X = {"x_ptr": "bf16", "out_ptr": "bf16"}  # churn keeps x's dtype (fastdiff/ops/_triton.py: out = empty_like(x))
NO_STD = {"std_ptr": "i64"}  # randn passes the offset tensor as the unused std pointer
SKIP = {name: code for name, code in PRECOND_CODES.items() if name != "iddpm"}  # iDDPM mixes like VP
SCALAR_T = dict(T_HAT_PER_SAMPLE=False, T_NEXT_PER_SAMPLE=False)  # t_hat, t_next of one value
PER_SAMPLE_T = dict(T_HAT_PER_SAMPLE=True, T_NEXT_PER_SAMPLE=True)  # a batch mixing noise levels
SCALAR_T_MULTISTEP = dict(T_PER_SAMPLE=False, T_NEXT_PER_SAMPLE=False)  # multistep_step names its levels t, t_next

LOSS_INDEX = {"seeds_ptr": "i64", "offset_ptr": "i64"}
ALL_H = dict(HAS_H0=True, HAS_H1=True, HAS_H2=True, HAS_H3=True)  # combine with its four history tensors
H_BF16 = {"h0_ptr": "bf16", "h1_ptr": "bf16", "h2_ptr": "bf16", "h3_ptr": "bf16"}  # a bf16 network's denoised values
X_AND_H = ("x_ptr", "h0_ptr", "h1_ptr", "h2_ptr", "h3_ptr")
# The one table: a new kernel is one entry. Per kernel: the main fp32 path, bf16 data inputs, one per-sample variant.
KERNELS = (
    Kernel(randn._noise_kernel, reads=("x_ptr",), writes=("out_ptr",), dtypes={"seeds_ptr": "i64", "offset_ptr": "i64"},
           options=NOISE_LAUNCH_OPTIONS, variants=(
               Variant("churn grouped", dict(HAS_X=True, STD_PER_SAMPLE=False, GROUPED=True)),
               Variant("churn grouped bf16", dict(HAS_X=True, STD_PER_SAMPLE=False, GROUPED=True), BF16_X),
               Variant("churn grouped std[B]", dict(HAS_X=True, STD_PER_SAMPLE=True, GROUPED=True)),
               # GROUPED=False is launched exactly when numel_per_sample % 4 != 0, so that size is never 16-divisible.
               Variant("churn per-element", dict(HAS_X=True, STD_PER_SAMPLE=False, GROUPED=False),
                       unaligned=("numel_per_sample",)),
               Variant("churn per-element bf16", dict(HAS_X=True, STD_PER_SAMPLE=False, GROUPED=False), BF16_X,
                       unaligned=("numel_per_sample",)),
               Variant("churn per-element std[B]", dict(HAS_X=True, STD_PER_SAMPLE=True, GROUPED=False),
                       unaligned=("numel_per_sample",)),
               Variant("randn grouped", dict(HAS_X=False, STD_PER_SAMPLE=False, GROUPED=True), NO_STD, reads=()),
               Variant("randn per-element", dict(HAS_X=False, STD_PER_SAMPLE=False, GROUPED=False), NO_STD, reads=(),
                       unaligned=("numel_per_sample",)),
           )),
    Kernel(randn._words_kernel, reads=(), writes=("out_ptr",), options=NOISE_LAUNCH_OPTIONS,
           dtypes={"out_ptr": "i64", "seeds_ptr": "i64", "offset_ptr": "i64"},
           variants=(Variant("words", {}, unaligned=("numel_per_sample",)),)),  # any sample size (a test helper)
    Kernel(euler_step._euler_step_kernel, reads=("x_hat_ptr", "denoised_ptr"), writes=("out_ptr",),
           variants=(
               Variant("fp32", SCALAR_T),
               Variant("denoised bf16", SCALAR_T, {"denoised_ptr": "bf16"}),  # fp32 state, bf16 network output
               Variant("bf16", SCALAR_T, {"x_hat_ptr": "bf16", "denoised_ptr": "bf16", "out_ptr": "bf16"}),
               Variant("fp32 t[B]", PER_SAMPLE_T),
           )),
    Kernel(heun_step._heun_step_kernel, reads=("x_hat_ptr", "denoised_ptr", "denoised_next_ptr"), writes=("out_ptr",),
           variants=(
               Variant("fp32", SCALAR_T),
               Variant("denoised bf16", SCALAR_T, {"denoised_ptr": "bf16", "denoised_next_ptr": "bf16"}),
               Variant("bf16", SCALAR_T,
                       {"x_hat_ptr": "bf16", "denoised_ptr": "bf16", "denoised_next_ptr": "bf16", "out_ptr": "bf16"}),
               Variant("fp32 t[B]", PER_SAMPLE_T),
           )),
    Kernel(multistep_step._multistep_step_kernel, reads=("x_ptr", "denoised_ptr", "denoised_prev_ptr"),
           writes=("out_ptr",), variants=(
               Variant("fp32", dict(C_PER_SAMPLE=False, **SCALAR_T_MULTISTEP)),
               Variant("denoised bf16", dict(C_PER_SAMPLE=False, **SCALAR_T_MULTISTEP),
                       {"denoised_ptr": "bf16", "denoised_prev_ptr": "bf16"}),
               Variant("bf16", dict(C_PER_SAMPLE=False, **SCALAR_T_MULTISTEP),
                       {"x_ptr": "bf16", "denoised_ptr": "bf16", "denoised_prev_ptr": "bf16", "out_ptr": "bf16"}),
               Variant("fp32 c[B] t[B]", dict(C_PER_SAMPLE=True, T_PER_SAMPLE=True, T_NEXT_PER_SAMPLE=True)),
           )),
    # combine: every history tensor present, with no noise, drawn noise (grouped or per element) or a given tensor;
    # and the one-term update a x + n z with drawn noise. Absent tensors are passed as x and never read.
    Kernel(combine._combine_kernel, reads=X_AND_H, writes=("out_ptr",), options=NOISE_LAUNCH_OPTIONS, dtypes=LOSS_INDEX,
           variants=(
               Variant("4 h", dict(ALL_H, NOISE=combine.NO_NOISE, GROUPED=True)),
               Variant("4 h bf16", dict(ALL_H, NOISE=combine.NO_NOISE, GROUPED=True), H_BF16),
               Variant("bf16", dict(ALL_H, NOISE=combine.NO_NOISE, GROUPED=True),
                       dict(H_BF16, x_ptr="bf16", out_ptr="bf16")),
               Variant("4 h drawn", dict(ALL_H, NOISE=combine.DRAWN_NOISE, GROUPED=True)),
               Variant("4 h drawn per-element", dict(ALL_H, NOISE=combine.DRAWN_NOISE, GROUPED=False),
                       unaligned=("numel_per_sample",)),
               Variant("4 h given noise", dict(ALL_H, NOISE=combine.GIVEN_NOISE, GROUPED=True),
                       reads=X_AND_H + ("noise_ptr",)),
               Variant("x drawn", dict(HAS_H0=False, HAS_H1=False, HAS_H2=False, HAS_H3=False,
                                       NOISE=combine.DRAWN_NOISE, GROUPED=True), reads=("x_ptr",)),
           )),
    Kernel(skip_mix._skip_mix_kernel, reads=("x_ptr", "F_ptr"), writes=("out_ptr",),  # out is always fp32
           variants=tuple(
               Variant(f"{kind} {dtype}", dict(KIND=code, PER_SAMPLE=False), {"x_ptr": dtype, "F_ptr": dtype})
               for kind, code in SKIP.items() for dtype in ("fp32", "bf16")
           ) + (Variant("edm fp32 sigma[B]", dict(KIND=SKIP["edm"], PER_SAMPLE=True)),)),
    # The loss passes: noise drawn in-kernel (grouped, or per element for sample sizes % 4 != 0) or read from a tensor.
    Kernel(loss._loss_input_kernel, reads=("y_ptr",), writes=("out_ptr",), options=NOISE_LAUNCH_OPTIONS,
           dtypes=LOSS_INDEX, variants=(
               Variant("drawn", dict(HAS_NOISE=False, PER_SAMPLE=True, GROUPED=True)),
               Variant("drawn bf16", dict(HAS_NOISE=False, PER_SAMPLE=True, GROUPED=True),
                       {"y_ptr": "bf16", "noise_ptr": "bf16", "out_ptr": "bf16"}),
               Variant("drawn per-element", dict(HAS_NOISE=False, PER_SAMPLE=True, GROUPED=False),
                       unaligned=("numel_per_sample",)),
               Variant("given noise", dict(HAS_NOISE=True, PER_SAMPLE=True, GROUPED=True), reads=("y_ptr", "noise_ptr")),
           )),
    Kernel(loss._loss_error_kernel, reads=("y_ptr", "F_ptr"), writes=("loss_ptr", "grad_ptr"),
           options=NOISE_LAUNCH_OPTIONS, dtypes=LOSS_INDEX, variants=(
               Variant("drawn", dict(HAS_NOISE=False, PER_SAMPLE=True, GROUPED=True)),
               Variant("drawn F bf16", dict(HAS_NOISE=False, PER_SAMPLE=True, GROUPED=True), {"F_ptr": "bf16"}),  # autocast
               Variant("drawn per-element", dict(HAS_NOISE=False, PER_SAMPLE=True, GROUPED=False),
                       unaligned=("numel_per_sample",)),
               Variant("given noise", dict(HAS_NOISE=True, PER_SAMPLE=True, GROUPED=True),
                       reads=("y_ptr", "F_ptr", "noise_ptr")),
           )),
)


def ptx_access_widths(ptx: str, masked_only: bool = False) -> tuple[Counter, Counter]:
    """Global loads and stores of the PTX counted by access width in bits (e.g. ld.global.v4.b32 -> 128).

    masked_only: only predicated accesses (`@%p ld.global...`), which is how Triton emits a masked tl.load/tl.store;
    in these kernels those are exactly the streamed tensors (the per-sample scalars and seeds are read unmasked).
    """
    loads, stores = Counter(), Counter()
    for predicate, op, suffixes in re.findall(r"^\s*(@!?%\w+\s+)?(ld|st)\.global((?:\.[\w:]+)+)", ptx, flags=re.M):
        if masked_only and not predicate:
            continue
        parts = suffixes.split(".")
        lanes = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d", p)), 1)
        bits = next(int(p[1:]) for p in reversed(parts) if re.fullmatch(r"[bfsu]\d+", p))
        (loads if op == "ld" else stores)[lanes * bits] += 1
    return loads, stores


def by_width(counts: Counter) -> dict:
    """{"bits": count} in JSON-friendly form, narrowest first."""
    return {str(bits): n for bits, n in sorted(counts.items())}


def ptx_local_bytes(ptx: str) -> int:
    """Bytes of `.local` state the PTX declares (a local depot is per-thread memory in DRAM behind L1)."""
    return sum(int(n) for n in re.findall(r"\.local\s+(?:\.align\s+\d+\s+)?\.\w+\s+\w+\[(\d+)\]", ptx))


def parse_ptxas(log: str) -> dict:
    """Registers, stack frame and spill bytes from `ptxas -v`; raises if the log lacks them (so nothing reads as 0)."""
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    regs = re.search(r"Used (\d+) registers, used (\d+) barriers", log)
    if not (frame and regs):
        raise ValueError(f"ptxas -v output without register/spill lines:\n{log}")
    return dict(registers=int(regs[1]), barriers=int(regs[2]), stack_frame=int(frame[1]),
                spill_stores=int(frame[2]), spill_loads=int(frame[3]))


def run_ptxas(ptx: str, arch: int) -> dict:
    """`ptxas -v` on the PTX with the binary and flags Triton uses to build the cubin (ptxas-blackwell from sm_90)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    ptxas = get_ptxas(arch).path
    # Triton 3.9's make_cubin flags; --regAllocOptLevel=2 (its workaround for a ptxas 13 bug) changes allocation.
    flags = ["-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={sm_arch_from_capability(arch)}"]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        done = subprocess.run([ptxas, *flags, src, "-o", os.path.join(tmp, "kernel.cubin")],
                              capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{os.path.basename(ptxas)} failed ({done.returncode}):\n{done.stderr}")
    return dict(parse_ptxas(done.stdout + done.stderr), ptxas=" ".join([os.path.basename(ptxas), *flags]))


def signature(kernel: Kernel, variant: Variant) -> tuple[dict, dict, list]:
    """Triton signature, constexprs and the 16-byte-divisible argument names of one variant."""
    constexprs = dict(variant.constexprs, BLOCK=BLOCK)
    dtypes = {**kernel.dtypes, **variant.dtypes}
    streamed = set(variant_streams(kernel, variant, "reads")) | set(variant_streams(kernel, variant, "writes"))
    sig, aligned = {}, []
    for p in kernel.fn.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            sig[p.name] = "*" + dtypes.get(p.name, "fp32")
            # Only the streamed tensors are taken 16-byte aligned: per-step scalars are often slices of a schedule tensor.
            if p.name in streamed:
                aligned.append(p.name)
        elif p.name in SIZES:
            sig[p.name] = "i32"
            if p.name not in variant.unaligned:
                aligned.append(p.name)
        else:
            sig[p.name] = SCALAR_TYPES[p.name]
    missing = set(constexprs) ^ {n for n, t in sig.items() if t == "constexpr"}
    if missing:
        raise ValueError(f"{kernel.fn.__name__} [{variant.name}]: constexprs do not match the kernel: {sorted(missing)}")
    return sig, constexprs, aligned


def variant_streams(kernel: Kernel, variant: Variant, which: str) -> tuple:
    """The streamed tensors ("reads" or "writes") of a variant: its own if it names them, else the kernel's."""
    own = getattr(variant, which)
    return getattr(kernel, which) if own is None else own


def compile_variant(kernel: Kernel, variant: Variant, arch: int) -> dict:
    """Compile one variant for sm_<arch> and measure its PTX and ptxas statistics."""
    row = dict(kernel=kernel.fn.__name__, variant=variant.name, arch=arch, constexprs=variant.constexprs,
               options=kernel.options, error=None)
    try:  # a kernel that does not compile is a finding of the report, not a crash of it
        sig, constexprs, aligned = signature(kernel, variant)
        per_thread = BLOCK // (kernel.options["num_warps"] * 32)  # elements of each streamed tensor one thread moves
        reads = {n: sig[n][1:] for n in variant_streams(kernel, variant, "reads")}
        writes = {n: sig[n][1:] for n in variant_streams(kernel, variant, "writes")}
        row.update(signature={n: t for n, t in sig.items() if t != "constexpr"}, aligned=aligned,
                   reads=reads, writes=writes, elements_per_thread=per_thread,
                   # 128-bit accesses per thread if every streamed tensor moves 16 bytes at a time; also an upper bound
                   full_width_loads=sum(per_thread * TYPE_BITS[t] // 128 for t in reads.values()),
                   full_width_stores=sum(per_thread * TYPE_BITS[t] // 128 for t in writes.values()))
        src = triton.compiler.ASTSource(fn=kernel.fn, signature=sig, constexprs=constexprs,
                                        attrs={(list(sig).index(n),): [["tt.divisibility", 16]] for n in aligned})
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=kernel.options)
        ptx = compiled.asm["ptx"]
        stats = run_ptxas(ptx, arch)
    except Exception as e:
        row.update(describe_error(e))
        return row
    loads, stores = ptx_access_widths(ptx)
    masked_loads, masked_stores = ptx_access_widths(ptx, masked_only=True)
    row.update(ld_global_128=loads[128], st_global_128=stores[128],
               ld_global_bits=by_width(loads), st_global_bits=by_width(stores),
               ld_masked_bits=by_width(masked_loads), st_masked_bits=by_width(masked_stores),
               local_bytes=ptx_local_bytes(ptx), uses_local=".local" in ptx,
               # libdevice sinf/cosf carry a Payne-Hanek reduction for huge arguments: this table and a local array
               trig_reduction_table="__cudart_i2opi_f" in ptx,
               shared_bytes=compiled.metadata.shared, **stats)
    return row


def describe_error(e: Exception) -> dict:
    """`error`: one line naming the root cause; `error_detail`: the whole chain of causes."""
    chain = [e]  # Triton's CompilationError points at the source; its causes lead to the problem
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    root = chain[-1]
    # A CompilationError's message is "at L:C:", the source, then the cause: keep the first and last lines
    lines = [line.strip() for line in str(root).splitlines() if line.strip()] or [""]
    return dict(error=" ".join([f"{type(root).__name__}: {lines[0]}", *lines[1:][-1:]]),
                error_detail="\n".join(f"{type(c).__name__}: {c}" for c in chain))


def compile_report(archs=ARCHS) -> list[dict]:
    """One dict per kernel variant and architecture (see compile_variant)."""
    interpreted = [k.fn for k in KERNELS if not isinstance(k.fn, triton.runtime.jit.JITFunction)]
    if interpreted:
        raise RuntimeError("kernels were decorated under TRITON_INTERPRET=1 and cannot be compiled ahead of time; "
                           "run with TRITON_INTERPRET unset or 0")
    return [compile_variant(kernel, variant, arch) for kernel in KERNELS for variant in kernel.variants for arch in archs]


def format_table(rows: list[dict]) -> str:
    """The report as text: 128-bit loads/stores against the full-width count, registers, spills, local, shared."""
    head = ("kernel", "variant", "sm", "ld128/full", "st128/full", "other ld/st bits", "regs", "spill st/ld",
            "local B", "smem B")
    lines = [head]
    for r in rows:
        if r["error"]:
            lines.append((r["kernel"], r["variant"], str(r["arch"]), "ERROR: " + r["error"][:200]))
            continue
        other = " ".join(f"ld{b}x{n}" for b, n in r["ld_global_bits"].items() if b != "128")
        other += " " + " ".join(f"st{b}x{n}" for b, n in r["st_global_bits"].items() if b != "128")
        lines.append((r["kernel"], r["variant"], str(r["arch"]),
                      f"{r['ld_global_128']}/{r['full_width_loads']}", f"{r['st_global_128']}/{r['full_width_stores']}",
                      other.strip(), str(r["registers"]), f"{r['spill_stores']}/{r['spill_loads']}",
                      str(r["local_bytes"]), str(r["shared_bytes"])))
    # an error row's message runs on past the columns rather than widening them
    widths = [max(len(line[i]) for line in lines if len(line) == len(head) or i < len(line) - 1)
              for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastdiff.ops.kernels._aot", description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="print a readable table instead of JSON")
    parser.add_argument("--arch", type=int, action="append", help="compute capability (repeatable; default 80 and 90)")
    args = parser.parse_args(argv)
    rows = compile_report(tuple(args.arch) if args.arch else ARCHS)
    print(format_table(rows) if args.table else json.dumps(rows, indent=1))
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
