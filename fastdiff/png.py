"""A small PNG writer and a scatter renderer, so the CLI can draw samples without matplotlib."""
from __future__ import annotations

import struct
import zlib

import torch


def write_png(path, rgb: torch.Tensor) -> None:
    """Write an 8-bit RGB image given as a uint8 tensor [H, W, 3]."""
    if rgb.dtype != torch.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb: expected a uint8 tensor of shape [H, W, 3], got {rgb.dtype} {tuple(rgb.shape)}")
    height, width, _ = rgb.shape
    rows = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), rgb.reshape(height, width * 3)], dim=1)  # filter 0
    raw = rows.contiguous().numpy().tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def scatter_image(points: torch.Tensor, extent: float, size: int = 512, background: torch.Tensor | None = None) -> torch.Tensor:
    """Render 2-D points in [-extent, extent]^2 as dark dots on white, over an optional [size, size] shade in [0, 1]."""
    image = torch.full((size, size, 3), 255.0)
    if background is not None:  # a light blue wash where the background is high
        shade = background.clamp(0, 1)[:, :, None]
        image = image - shade * torch.tensor([90.0, 45.0, 0.0])
    pixels = ((points.to(torch.float64).cpu() + extent) / (2 * extent) * (size - 1)).round().long()
    inside = ((pixels >= 0) & (pixels < size)).all(dim=1)
    col, row = pixels[inside, 0], size - 1 - pixels[inside, 1]
    counts = torch.zeros(size, size).index_put_((row, col), torch.ones(col.numel()), accumulate=True)
    ink = 1 - torch.exp(-counts / 2)  # saturating: dense regions go dark, single points stay visible
    image = image * (1 - ink[:, :, None]) + torch.tensor([20.0, 20.0, 60.0]) * ink[:, :, None]
    return image.round().clamp(0, 255).to(torch.uint8)
