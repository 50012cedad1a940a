"""Sampling a list of seeds in batches: what `fastdiff sample` of a model and `fastdiff eval --model` run."""
from __future__ import annotations

import torch

from ..rng import randn
from .front import sample


def sample_seeds(net, seeds, shape, class_labels=None, *, batch: int, device="cpu", dtype=None, **kwargs) -> torch.Tensor:
    """fastdiff.sample for a list of seeds, `batch` at a time, as one float32 CPU tensor [len(seeds), *shape].

    Each sample's latents (fastdiff.rng.randn) and sampler noise come from its own seed, so the batching decides
    nothing but the network's float rounding. `class_labels`: [len(seeds)] or None; `kwargs` go to sample()."""
    seeds = [int(s) for s in seeds]
    out = torch.empty(len(seeds), *shape)
    for first in range(0, len(seeds), batch):  # the network's activations stay those of one batch
        part = slice(first, min(first + batch, len(seeds)))
        latents = randn(seeds[part], (part.stop - first, *shape), dtype=dtype or torch.float32, device=device)
        labels = None if class_labels is None else class_labels[part]
        out[part] = sample(net, latents, labels, seeds=seeds[part], dtype=dtype, **kwargs).float().cpu()
    return out
