"""A small PNG writer and a scatter renderer, so the CLI can draw samples without matplotlib."""
from __future__ import annotations

import struct
import zlib

import torch


def encode_png(pixels: torch.Tensor) -> bytes:
    """An 8-bit PNG file's bytes for a uint8 tensor [H, W, C], C 1 (grayscale) or 3 (RGB); rows unfiltered."""
    if pixels.dtype != torch.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(f"pixels: expected uint8 [H, W, 1 or 3], got {pixels.dtype} of shape {tuple(pixels.shape)}")
    height, width, channels = pixels.shape
    rows = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), pixels.reshape(height, width * channels)], dim=1)
    raw = rows.contiguous().numpy().tobytes()  # each row: filter type 0, then its bytes

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def write_png(path, rgb: torch.Tensor) -> None:
    """Write an 8-bit RGB image given as a uint8 tensor [H, W, 3]."""
    if rgb.dtype != torch.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb: expected a uint8 tensor of shape [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
    with open(path, "wb") as f:
        f.write(encode_png(rgb))


SAMPLE_INK = (20.0, 20.0, 60.0)  # the points drawn: near black
REFERENCE_INK = (150.0, 200.0, 240.0)  # the data under them (scatter_image's `reference`): light blue


def scatter_image(points: torch.Tensor, extent: float, size: int = 512, background: torch.Tensor | None = None,
                  radius: int = 0, reference: torch.Tensor | None = None) -> torch.Tensor:
    """Render 2-D points in [-extent, extent]^2 as dark dots on white, over an optional [size, size] shade in [0, 1]
    and optional `reference` points (e.g. the data) drawn first in light blue. `radius`: each point is a disc of
    this radius in pixels (0: one pixel; 1: 3x3; 2: 5x5 without its corners), for both sets; with a radius, a
    single point is drawn at 86% ink instead of 39%, so sparse samples stay visible."""
    image = torch.full((size, size, 3), 255.0)
    if background is not None:  # a light blue wash where the background is high
        shade = background.clamp(0, 1)[:, :, None]
        image = image - shade * torch.tensor([90.0, 45.0, 0.0])
    if reference is not None:
        ink = _ink(reference, extent, size, radius, spread=0.5)  # light: it may saturate
        image = image * (1 - ink[:, :, None]) + torch.tensor(REFERENCE_INK) * ink[:, :, None]
    ink = _ink(points, extent, size, radius, spread=2.0 if radius == 0 else 0.5)  # saturating: dense regions go dark
    image = image * (1 - ink[:, :, None]) + torch.tensor(SAMPLE_INK) * ink[:, :, None]
    return image.round().clamp(0, 255).to(torch.uint8)


def _ink(points: torch.Tensor, extent: float, size: int, radius: int, spread: float) -> torch.Tensor:
    """[size, size] coverage in [0, 1): 1 - exp(-hits / spread), where a point hits the pixels of its disc."""
    pixels = ((points.to(torch.float64).cpu() + extent) / (2 * extent) * (size - 1)).round().long()
    offsets = [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
               if dy * dy + dx * dx <= radius * radius + radius]  # a disc
    counts = torch.zeros(size, size)
    for dy, dx in offsets:
        col, row = pixels[:, 0] + dx, size - 1 - pixels[:, 1] + dy
        inside = (col >= 0) & (col < size) & (row >= 0) & (row < size) & \
            ((pixels >= 0) & (pixels < size)).all(dim=1)  # points outside the extent are dropped whole
        counts.index_put_((row[inside], col[inside]), torch.ones(int(inside.sum())), accumulate=True)
    return 1 - torch.exp(-counts / spread)
