"""What a training run shows of its progress: samples of the EMA network as an image grid or a scatter plot, and
for low-dimensional data the sliced Wasserstein distance of the samples to the data, next to the distance
between two disjoint halves of the data (the floor that sampling noise alone reaches)."""
from __future__ import annotations

import math

import torch

from .metrics import sliced_wasserstein
from .png import scatter_image, write_png
from .rng import randn
from .sampling.front import sample

EVAL_POINTS = 2048  # samples for the distance on low-dimensional data


@torch.no_grad()
def evaluate_samples(trainer, write: bool) -> dict:
    """Sample trainer.ema on fixed seeds (the same every time, so grids are comparable); write the picture when
    `write`; return the metrics to log. Uses no torch generator, so training's random state is untouched."""
    dataset, config = trainer.dataset, trainer.config
    num = config.num_grid if dataset.is_image else max(config.num_grid, min(EVAL_POINTS, len(dataset) // 2))
    seeds = list(range(num))
    latents = randn(seeds, (num, *dataset.shape), device=trainer.device)
    labels = None
    if config.conditional:
        labels = torch.arange(num, device=trainer.device) % dataset.num_classes
    x = sample(trainer.ema, latents, labels, seeds=seeds, backend=config.backend).cpu()
    record = {}
    if not dataset.is_image:
        reference, floor = _data_halves(dataset, num, config.seed)
        record = {"sw": sliced_wasserstein(x, reference), "sw_floor": sliced_wasserstein(floor, reference)}
    if write:
        path = trainer.run_dir / f"samples-{trainer.step:08d}.png"
        write_png(path, image_grid(x) if dataset.is_image else _scatter(x, dataset))
        record["grid"] = path.name
    return record


def _data_halves(dataset, num: int, seed: int):
    """Two disjoint random subsets of `num` points of the data (fixed by the run's seed)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + 7919))
    data = dataset.data.cpu()
    return data[order[:num]], data[order[num:2 * num]]


def _scatter(x: torch.Tensor, dataset) -> torch.Tensor:
    """The first two coordinates of the points (1-D points on the horizontal axis)."""
    data = dataset.data.cpu()
    if x.shape[1] == 1:
        x, data = (torch.cat([t, torch.zeros_like(t)], dim=1) for t in (x, data))
    extent = 1.1 * float(data[:, :2].abs().max())
    return scatter_image(x[:, :2], extent)


def image_grid(images: torch.Tensor, min_size: int = 256, columns: int | None = None) -> torch.Tensor:
    """Images [N, C, H, W] in [-1, 1] tiled row by row, `columns` to a row (default: a near-square grid), with
    1-pixel gaps, as uint8 RGB [H', W', 3]; small images are enlarged (nearest) so the grid is at least `min_size`
    pixels wide."""
    n, channels, height, width = images.shape
    if channels not in (1, 3):
        raise ValueError(f"images: expected 1 or 3 channels, got {channels}")
    columns = math.ceil(math.sqrt(n)) if columns is None else min(columns, n)
    rows = math.ceil(n / columns)
    pixels = ((images.to(torch.float32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if channels == 1:
        pixels = pixels.expand(n, 3, height, width)
    grid = torch.full((rows * (height + 1) + 1, columns * (width + 1) + 1, 3), 255, dtype=torch.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        top, left = 1 + r * (height + 1), 1 + c * (width + 1)
        grid[top:top + height, left:left + width] = pixels[i].permute(1, 2, 0)
    scale = max(1, math.ceil(min_size / grid.shape[1]))
    return grid.repeat_interleave(scale, dim=0).repeat_interleave(scale, dim=1)
