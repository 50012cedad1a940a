"""One rule for NaN and inf in every sampling loop, `nonfinite="warn" | "raise" | "ignore"`.

A loop records its state's smallest and largest value at the start and after every step, on the device (no host
sync: NaN and inf show in one of them, since NaN propagates through min and max). Once the loop has ended, one
host sync reads them back and names the first stage whose state held NaN or inf. If that is the start, the inputs
(the latents) already held them, and the report says so instead of blaming the network.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from ._validate import check_choice

NONFINITE = ("warn", "raise", "ignore")


def check_nonfinite(nonfinite) -> str:
    """What to do when NaN or inf appear: "warn" (a RuntimeWarning), "raise" (FloatingPointError) or "ignore"."""
    return check_choice("nonfinite", nonfinite, NONFINITE)


class NonfiniteCheck:
    """The extremes of a loop's state at its start (record(-1, x)) and after each of its `stages` steps (record(i, x)),
    kept on the device in `minima` and `maxima` ([stages + 1] in the state's dtype), and the report made from them."""

    def __init__(self, nonfinite: str, stages: int, dtype: torch.dtype, device):
        self.mode, self.stages = check_nonfinite(nonfinite), stages
        self.extremes = torch.zeros(2, stages + 1, dtype=dtype, device=device)
        self.minima, self.maxima = self.extremes[0], self.extremes[1]  # views: [stages + 1] each
        self._stage_outs = None

    def record(self, i: int, x: torch.Tensor) -> None:
        """Keep x's extremes as those after step i (i = -1: the start); device work only."""
        if self.mode != "ignore" and x.numel() > 0:  # (aminmax refuses empty tensors)
            torch.aminmax(x.detach(), out=(self.minima[i + 1], self.maxima[i + 1]))

    def stage_outs(self, up_front: bool = True):
        """For a loop that records without calling record(): a sequence of the out= of torch.aminmax for each stage,
        i + 1 for step i, or None when nothing is to be recorded (nonfinite="ignore"). With up_front, its views are made
        on the first call and kept (about 600 bytes of host memory each); otherwise each is made when indexed."""
        if self.mode == "ignore":
            return None
        if self._stage_outs is None:
            self._stage_outs = list(zip(self.minima.unbind(0), self.maxima.unbind(0))) if up_front else _StageOuts(self)
        return self._stage_outs

    def report(self, where: Callable[[int], str], hint: str, inputs: str = "latents", stacklevel: int = 1) -> None:
        """After the loop: warn or raise (per the mode) when the state held NaN or inf; one host sync.

        where(i) places step i ("at step 3 of 18 (sigma 2.1 -> 1.3)"), hint says what to check then ("check the net's
        output at that noise level"); `inputs` names what the start was made from. stacklevel is warnings.warn's,
        counted from the caller of this method."""
        if self.mode == "ignore":
            return
        first = self.first_nonfinite()
        if first is None:
            return
        message = self.message(first, where, hint, inputs)
        if self.mode == "raise":
            raise FloatingPointError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)

    def first_nonfinite(self) -> int | None:
        """The first stage recorded with NaN or inf (0: the start, i + 1: step i), or None; one host sync."""
        bad = (~self.extremes.isfinite().all(0)).nonzero()
        return int(bad[0]) if bad.numel() else None

    @staticmethod
    def message(first: int, where: Callable[[int], str], hint: str, inputs: str = "latents") -> str:
        """What report() says when stage `first` (as first_nonfinite counts) is the first with NaN or inf."""
        if first == 0:
            return (f"non-finite values (NaN or inf) were already in the {inputs} given to the sampler, before its "
                    f"first step, so the network is not the cause; check how they were made")
        return f"non-finite values (NaN or inf) in the sampler state first appeared {where(first - 1)}; {hint}"


def steps_where(num_steps: int, levels: Callable[[int], str]) -> Callable[[int], str]:
    """where() for a loop of num_steps steps: "at step i of N (levels(i))"."""
    return lambda i: f"at step {i} of {num_steps} ({levels(i)})"


class _StageOuts:
    """stage_outs() made as indexed, for a loop of many stages."""

    def __init__(self, check: NonfiniteCheck):
        self.minima, self.maxima = check.minima, check.maxima

    def __getitem__(self, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.minima[stage], self.maxima[stage]
