"""`import fastdiff` works without Triton, a GPU or a compiled extension, and says what is missing."""
import subprocess
import sys

import torch

from fastdiff import backends


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_without_triton_and_the_reason_is_shown():
    """With triton unimportable, fastdiff imports, samples on the reference path and names the missing package."""
    out = run_python(
        "import sys; sys.modules['triton'] = None\n"
        "import torch, fastdiff\n"
        "from fastdiff import backends\n"
        "print(backends.resolve('auto'))\n"
        "print(backends.info()['triton'])\n"
        "x = fastdiff.sample(fastdiff.GaussianMixture.ring(), torch.randn(4, 2), num_steps=2)\n"
        "print(tuple(x.shape))\n"
    )
    lines = out.splitlines()
    expected = "cuda" if torch.cuda.is_available() and not backends.install_reasons("cuda") else (
        "cpu" if not backends.install_reasons("cpu") else "reference")
    assert lines[0] == expected  # never triton, and never cuda without a GPU
    assert "triton package is not installed" in lines[1]
    assert lines[2] == "(4, 2)"


def test_import_does_not_load_optional_modules():
    """Importing fastdiff loads neither triton nor an extension module."""
    out = run_python("import sys, fastdiff; print(sorted(m for m in sys.modules if m.startswith(('triton', 'fastdiff._C'))))")
    assert out.strip() == "[]"
