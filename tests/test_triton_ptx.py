"""Every Triton kernel compiled ahead of time for sm_80 and sm_90: 128-bit global accesses, no local memory, no spills.

No GPU is needed: `python -m fastdiff.ops.kernels._aot` compiles each variant with `triton.compile` for a GPUTarget and
reports its PTX and `ptxas -v` statistics. It runs once, in a subprocess, because conftest.py sets TRITON_INTERPRET=1
for this process and interpreted kernels cannot be compiled. Each test checks one property over every variant and
arch and lists all that break it.
"""
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import triton  # noqa: F401  (the Triton backend is under test: a missing triton is a failure, not a skip)

from fastdiff.ops.kernels._aot import TYPE_BITS, parse_ptxas, ptx_access_widths, ptx_local_bytes

KERNEL_DIR = Path(__file__).resolve().parents[1] / "fastdiff" / "ops" / "kernels"
ARCHS = (80, 90)

PTX_V4 = """
	ld.global.b32 { %r1 }, [ %rd1 + 0 ];
	@%p1 ld.global.v4.b32 { %r3, %r4, %r5, %r6 }, [ %rd3 + 0 ];
	@!%p2 ld.global.L1::evict_last.v4.f32 { %f1, %f2, %f3, %f4 }, [ %rd4 + 0 ];
	ld.global.nc.b32 	%r357, [%rd51];
	@%p3 st.global.v4.b32 [ %rd6 + 0 ], { %r15, %r16, %r17, %r18 };
	@%p4 st.global.v2.b64 [ %rd7 + 0 ], { %rd8, %rd9 };
"""
PTX_SCALAR = """
	.local .align 4 .b8 	__local_depot0[28];
	@%p1 ld.global.b32 { %r3 }, [ %rd3 + 0 ];
	@%p1 ld.global.v2.b32 { %r4, %r5 }, [ %rd3 + 4 ];
	// ld.global.v4.b32 in a comment is not an instruction
	st.local.b32 	[%r706], %r356;
	@%p2 st.global.b32 [ %rd6 + 0 ], { %r15 };
"""
PTXAS_LOG = """ptxas info    : Compiling entry function '_euler_step_kernel' for 'sm_80'
ptxas info    : Function properties for _euler_step_kernel
    40 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 40 bytes cumulative stack size, 416 bytes cmem[0]
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The _aot report: one dict per kernel variant and arch, compiled once for the whole module (~20 s, cold)."""
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path_factory.mktemp("triton_cache")))
    # A real launch compiles without the interpreter and without Triton's escape hatch for non-constexpr globals;
    # a fresh cache because Triton 3.9 leaves that escape hatch out of its cache key: a stale entry could hide an error.
    env.pop("TRITON_INTERPRET", None)
    env.pop("TRITON_ALLOW_NON_CONSTEXPR_GLOBALS", None)
    done = subprocess.run([sys.executable, "-m", "fastdiff.ops.kernels._aot"], env=env, capture_output=True, text=True,
                          timeout=600)
    try:
        rows = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"python -m fastdiff.ops.kernels._aot exited {done.returncode} without a JSON report:\n"
                    f"{done.stderr[-4000:]}")
    return rows


def label(row) -> str:
    return f"{row['kernel']} [{row['variant']}] sm_{row['arch']}"


def compiled(report):
    """The rows that compiled (test_every_variant_compiles reports the others)."""
    return [r for r in report if not r["error"]]


def expected_accesses(row, which: str) -> Counter:
    """Masked accesses per thread, by width in bits, the streamed tensors of `which` ("reads"/"writes") compile to.

    Every streamed tensor should move 16 bytes at a time: with 8 elements per thread, 2 x 128-bit per fp32 tensor and
    1 x 128-bit per bf16 one (so at least one 128-bit access per tensor, and no narrower masked access beside them).
    """
    expected = Counter()
    for dtype in row[which].values():
        bits = TYPE_BITS[dtype]
        # The grouped noise path interleaves its four Philox lanes back into a flat block, so it is no exception.
        expected[128] += row["elements_per_thread"] * bits // 128
    return expected


def test_parser_counts_access_widths():
    loads, stores = ptx_access_widths(PTX_V4)
    assert (loads, stores) == ({128: 2, 32: 2}, {128: 2})
    assert ptx_access_widths(PTX_V4, masked_only=True) == ({128: 2}, {128: 2})
    loads, stores = ptx_access_widths(PTX_SCALAR)
    assert (loads, stores) == ({64: 1, 32: 1}, {32: 1})  # neither the comment nor st.local counts


def test_parser_reads_local_memory_and_ptxas_log():
    assert (ptx_local_bytes(PTX_V4), ptx_local_bytes(PTX_SCALAR)) == (0, 28)
    stats = parse_ptxas(PTXAS_LOG)
    assert (stats["registers"], stats["spill_stores"], stats["spill_loads"], stats["barriers"]) == (32, 4, 8, 1)
    with pytest.raises(ValueError):
        parse_ptxas("ptxas fatal   : Unresolved extern function")  # a log without the lines never reads as 0 spills


def test_report_covers_every_kernel_and_arch(report):
    kernels = {name for path in KERNEL_DIR.glob("*.py")
               for name in re.findall(r"@triton\.jit\s*\ndef (\w+_kernel)\(", path.read_text())}
    assert kernels, f"no @triton.jit kernels found in {KERNEL_DIR}"
    covered = {r["kernel"] for r in report}
    assert kernels <= covered, f"kernels without an entry in fastdiff/ops/kernels/_aot.py KERNELS: {sorted(kernels - covered)}"
    for kernel in covered:
        archs = Counter(r["arch"] for r in report if r["kernel"] == kernel)
        assert set(archs) == set(ARCHS) and len(set(archs.values())) == 1, f"{kernel}: variants per arch {dict(archs)}"


def test_every_variant_compiles(report):
    failed = [f"{label(r)}: {r['error']}" for r in report if r["error"]]
    assert not failed, "variants that do not compile:\n" + "\n".join(failed)


def full_width_failures(report, which: str, field: str) -> list:
    """Rows whose masked (streamed) accesses differ from expected_accesses, each as a message."""
    bad = []
    for r in compiled(report):
        want = {str(bits): n for bits, n in sorted(expected_accesses(r, which).items())}
        if r[field] != want:
            bad.append(f"{label(r)}: {which} {r[which]} should compile to masked accesses {want} (bits: count per "
                       f"thread), the PTX has {r[field]} (all global: {r[field.replace('masked', 'global')]})")
    return bad


def test_streamed_loads_are_128_bit(report):
    bad = full_width_failures(report, "reads", "ld_masked_bits")
    assert not bad, "streamed tensors not read at full width:\n" + "\n".join(bad)


def test_streamed_stores_are_128_bit(report):
    bad = full_width_failures(report, "writes", "st_masked_bits")
    assert not bad, "streamed tensors not written at full width:\n" + "\n".join(bad)


DRAWS_NORMALS = {"_noise_kernel", "_loss_input_kernel", "_loss_error_kernel", "_combine_kernel"}  # box_muller's sin/cos


def test_no_local_memory(report):
    bad = []
    for r in compiled(report):
        if r["kernel"] in DRAWS_NORMALS:
            # tl.sin/tl.cos lower to libdevice sinf/cosf, whose Payne-Hanek reduction for |x| > ~1e5 keeps a 7-word
            # array in local memory (and reads the __cudart_i2opi_f table). theta = 2 pi u lies in [0, 2 pi), so
            # that path never runs; allowed here is exactly that array and nothing more.
            if r["uses_local"] and not (r["trig_reduction_table"] and r["local_bytes"] <= 28):
                bad.append(f"{label(r)}: {r['local_bytes']} bytes of .local beyond libdevice sin/cos's 28-byte scratch")
        elif r["uses_local"]:
            bad.append(f"{label(r)}: the PTX uses .local memory ({r['local_bytes']} bytes declared)")
    assert not bad, "local memory:\n" + "\n".join(bad)


def test_no_spills(report):
    bad = [f"{label(r)}: {r['spill_stores']} bytes spill stores, {r['spill_loads']} bytes spill loads "
           f"({r['registers']} registers; {r['ptxas']})"
           for r in compiled(report) if r["spill_stores"] or r["spill_loads"]]
    assert not bad, "register spills:\n" + "\n".join(bad)
