"""The preconditioner codes: which skip mix (c_skip, c_out) of EDM Table 1 a compiled kernel applies, as the
integer `kind` the ops take. Defined here once, for every language:

- Python and Triton import these constants (fastdiff.ops.reference.skip_mix, ops.dispatch, ops.kernels);
- the C++ and CUDA compiles get them as -DFASTDIFF_PRECOND_EDM=0 etc. from fastdiff/_build.py's compile_args,
  and csrc/fastdiff_math.h refuses to compile without them.

Changing a value here changes the compiler flags, so the C++ parts are rebuilt (and a part built before the change
is not loaded: this file is part of the sources digest in fastdiff/_build.py).

Only the standard library may be used here: setup.py reads this file, through fastdiff/_build.py, before fastdiff
can be imported.
"""

PRECOND_EDM = 0  # c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2)
PRECOND_VP = 1  # c_skip = 1, c_out = -s (VP and iDDPM)
PRECOND_VE = 2  # c_skip = 1, c_out = s

# The distinct skip mixes by the name of their C++ macro (FASTDIFF_PRECOND_<NAME>).
PRECOND_KINDS = {"EDM": PRECOND_EDM, "VP": PRECOND_VP, "VE": PRECOND_VE}
# The preconditioners the ops accept, and the code each one mixes with.
PRECONDS = ("edm", "vp", "ve", "iddpm")
PRECOND_CODES = {"edm": PRECOND_EDM, "vp": PRECOND_VP, "iddpm": PRECOND_VP, "ve": PRECOND_VE}


def compile_definitions() -> list[str]:
    """The compiler flags that define the codes for csrc/ (the same for g++ and nvcc)."""
    return [f"-DFASTDIFF_PRECOND_{name}={code}" for name, code in PRECOND_KINDS.items()]
