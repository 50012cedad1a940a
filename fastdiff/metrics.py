"""Distances between sample sets, for judging samplers against exact samples."""
from __future__ import annotations

import torch

NUM_PROJECTIONS = 128


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = NUM_PROJECTIONS, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two equal-size point sets [n, dim] (mean over random directions).

    In one dimension this is the exact W1 between the empirical distributions. The directions come from a
    fixed seed, so the value is repeatable.
    """
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64).cpu()
    y = y.detach().reshape(y.shape[0], -1).to(torch.float64).cpu()
    if x.shape != y.shape:
        raise ValueError(f"y: expected the shape of x {tuple(x.shape)}, got {tuple(y.shape)}")
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    px, _ = (x @ directions).sort(dim=0)
    py, _ = (y @ directions).sort(dim=0)
    return float((px - py).abs().mean())
