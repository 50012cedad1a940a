"""The shared argument checks of fastdiff/_validate.py, and that no module keeps its own copy of them."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import fastdiff
from fastdiff._validate import as_float_tensor, check_bool, check_choice, check_floating, check_like

PACKAGE = Path(fastdiff.__file__).resolve().parent
# Helpers that once had a copy per module; each now lives in fastdiff/_validate.py only.
SHARED = ("check_choice", "check_bool", "as_time", "as_sigma_tensor", "check_floating", "check_like", "check_state")


def test_check_choice_returns_the_value_or_names_every_option():
    assert check_choice("solver", "heun", ("heun", "euler")) == "heun"
    assert check_choice("corrector", None, ("langevin", "ald"), allow_none=True) is None
    with pytest.raises(ValueError, match=r"^solver: expected one of 'heun', 'euler', got 'rk4'$"):
        check_choice("solver", "rk4", ("heun", "euler"))
    with pytest.raises(ValueError, match=r"^corrector: expected one of 'langevin', 'ald' or None, got 'hmc'$"):
        check_choice("corrector", "hmc", ("langevin", "ald"), allow_none=True)
    for wrong in (None, 1, ["heun"]):  # only the names themselves are accepted
        with pytest.raises(ValueError, match=r"^solver: expected one of"):
            check_choice("solver", wrong, ("heun", "euler"))


def test_check_bool_takes_only_true_and_false():
    assert check_bool("denoise", True) is True and check_bool("denoise", False) is False
    for wrong in (1, 0, "yes", None, np.bool_(True)):
        with pytest.raises(TypeError, match=r"^denoise: expected True or False, got "):
            check_bool("denoise", wrong)


def test_as_float_tensor_keeps_floating_tensors_and_makes_the_rest_float64():
    half = torch.ones(3, dtype=torch.float16)
    assert as_float_tensor(half) is half
    assert as_float_tensor(0.5).dtype == torch.float64 and float(as_float_tensor(0.5)) == 0.5
    assert as_float_tensor(torch.arange(3)).dtype == torch.float64
    assert as_float_tensor([1, 2]).tolist() == [1.0, 2.0]


def test_tensor_checks_name_the_argument():
    x = torch.zeros(2, 3)
    check_like("F", torch.ones(2, 3), x)
    with pytest.raises(TypeError, match=r"^x: expected a floating-point tensor of shape \[B, \.\.\.\], got torch.int64"):
        check_floating("x", torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"^x: expected a floating-point tensor of shape \[B, \.\.\.\], got list"):
        check_floating("x", [1.0])
    with pytest.raises(ValueError, match=r"^F: expected the shape \(2, 3\), got \(3, 2\)$"):
        check_like("F", torch.ones(3, 2), x)


def test_no_module_keeps_a_copy_of_a_shared_check():
    """A `def _check_choice(` (or another of SHARED) outside _validate.py is a second home for the same rule."""
    pattern = re.compile(r"^\s*def _?(" + "|".join(SHARED) + r")\(", re.M)
    copies = [f"{path.relative_to(PACKAGE)}: {match.group(0).strip()}" for path in sorted(PACKAGE.rglob("*.py"))
              if path.name != "_validate.py" for match in pattern.finditer(path.read_text(encoding="utf-8"))]
    assert copies == []
