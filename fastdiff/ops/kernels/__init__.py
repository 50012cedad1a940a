"""fastdiff's Triton kernels, one file per fused op (installed as `fastdiff.ops.kernels`).

Each file follows one order: private `@triton.jit` kernels with the formula in the docstring, then the
host launchers that allocate, pick the grid and launch. Registration with torch lives in
`fastdiff/ops/dispatch.py`; the reference twin of every op lives in `fastdiff/ops/reference/<op>.py`.
Importing this package requires triton; `fastdiff` itself never imports it unless the Triton backend is used.
"""
