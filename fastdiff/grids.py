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
    `write`; return the metrics to log. Uses no torch generator, so training's random state is untouched.

    Images: num_grid samples in a near-square grid; conditional runs draw num_grid // num_classes samples (at
    least 1) per class, one row per class. Points: max(num_grid, min(EVAL_POINTS, N // 2)) samples drawn over the
    data; the distance compares m = min(that, N // 2) of them with m data points, next to the distance between two
    disjoint sets of m data points (none for N < 2)."""
    dataset, config = trainer.dataset, trainer.config
    columns = None
    if dataset.is_image:
        num = config.num_grid
        if config.conditional:
            columns = max(1, config.num_grid // dataset.num_classes)
            num = columns * dataset.num_classes
    else:
        num = max(config.num_grid, min(EVAL_POINTS, len(dataset) // 2))
    seeds = list(range(num))
    latents = randn(seeds, (num, *dataset.shape), device=trainer.device)
    labels = None
    if config.conditional:
        labels = torch.arange(num, device=trainer.device) % dataset.num_classes
        if columns is not None:  # row r holds class r
            labels = torch.arange(dataset.num_classes, device=trainer.device).repeat_interleave(columns)
    x = sample(trainer.ema, latents, labels, seeds=seeds, backend=config.backend).cpu()
    record = {}
    m = min(num, len(dataset) // 2)
    if not dataset.is_image and m >= 1:
        reference, floor = _data_halves(dataset, m, config.seed)
        record = {"sw": sliced_wasserstein(x[:m], reference), "sw_floor": sliced_wasserstein(floor, reference)}
    if write:
        path = trainer.run_dir / f"samples-{trainer.step:08d}.png"
        write_png(path, image_grid(x, columns=columns) if dataset.is_image else _scatter(x, dataset))
        record["grid"] = path.name
    return record


def _data_halves(dataset, num: int, seed: int):
    """Two disjoint random subsets of `num` points of the data (fixed by the run's seed); num <= len(dataset) // 2."""
    if not 1 <= num <= len(dataset) // 2:
        raise ValueError(f"num: expected 1 to {len(dataset) // 2} (half of the {len(dataset)} points), got {num}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + 7919))
    data = dataset.data.cpu()
    return data[order[:num]], data[order[num:2 * num]]


SCATTER_DATA_POINTS = 8192  # data points drawn under the samples (a fixed subset of larger data sets)


def _scatter(x: torch.Tensor, dataset) -> torch.Tensor:
    """The first two coordinates of the samples (1-D points on the horizontal axis) as dark 3x3 dots over the data
    in light blue."""
    data = dataset.data.cpu()
    if x.shape[1] == 1:
        x, data = (torch.cat([t, torch.zeros_like(t)], dim=1) for t in (x, data))
    extent = 1.1 * float(data[:, :2].abs().max())
    if len(data) > SCATTER_DATA_POINTS:
        data = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:SCATTER_DATA_POINTS]]
    return scatter_image(x[:, :2], extent, radius=1, reference=data[:, :2])


def image_grid(images: torch.Tensor, min_size: int = 256, columns: int | None = None) -> torch.Tensor:
    """Images [N, C, H, W] in [-1, 1] tiled row by row with 1-pixel gaps, as uint8 RGB [H', W', 3]: `columns` per
    row (default: a near-square grid); small images are enlarged (nearest) so the grid is at least `min_size`
    pixels wide."""
    n, channels, height, width = images.shape
    if channels not in (1, 3):
        raise ValueError(f"images: expected 1 or 3 channels, got {channels}")
    if columns is None:
        columns = math.ceil(math.sqrt(n))
    elif not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns: expected a positive int or None, got {columns!r}")
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
