"""Generated images on disk, as `fastdiff generate` writes them and `fastdiff eval` reads them.

Two layouts:
- a folder of PNG files, EDM's generate.py layout: `<outdir>/<seed rounded down to 1000, 6 digits>/<seed, 6 digits>.png`,
  8-bit grayscale for one channel, RGB for three; with `generate.json` in `<outdir>` recording the model, the
  settings and each image's class rule.
- one .npz file with `images` (uint8 [N, H, W, C]), `seeds` (int64 [N]) and, for class-conditional images,
  `labels` (int64 [N]).

PNG files are written and read here without Pillow (8-bit grayscale, RGB or RGBA, not interlaced).
"""
from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .png import encode_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SETTINGS_FILE = "generate.json"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images [N, C, H, W] with pixels in [-1, 1] -> uint8 [N, H, W, C] (clamped, -1 -> 0, 1 -> 255, rounded)."""
    if images.ndim != 4:
        raise ValueError(f"images: expected [N, C, H, W], got shape {tuple(images.shape)}")
    pixels = ((images.detach().to(torch.float32).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu()


def from_uint8(pixels) -> torch.Tensor:
    """uint8 [N, H, W, C] (numpy or torch) -> float32 [N, C, H, W] in [-1, 1], the inverse of to_uint8 on its grid."""
    pixels = torch.as_tensor(np.asarray(pixels))
    if pixels.dtype != torch.uint8 or pixels.ndim != 4:
        raise ValueError(f"images: expected uint8 [N, H, W, C], got {pixels.dtype} of shape {tuple(pixels.shape)}")
    return pixels.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1


def png_path(outdir, seed: int) -> Path:
    """Where the image of `seed` goes: <outdir>/<seed - seed % 1000:06d>/<seed:06d>.png."""
    return Path(outdir) / f"{seed - seed % 1000:06d}" / f"{seed:06d}.png"


def write_png(path, pixels) -> None:
    """One image, uint8 [H, W, C] with C 1 (grayscale) or 3 (RGB), as an 8-bit PNG."""
    _write_atomic(Path(path), encode_png(torch.as_tensor(np.asarray(pixels))))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in path's folder and rename it over path: a killed process leaves the old file or
    the new one, never part of one (the temporary file starts with '.', so no reader takes it for an image)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_png(path) -> np.ndarray:
    """An 8-bit grayscale, gray+alpha, RGB or RGBA PNG (not interlaced) -> uint8 [H, W, C] (alpha dropped)."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    pos, header, idat, ended = len(PNG_SIGNATURE), None, [], False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise ValueError(f"{path}: cut short inside its {kind.decode(errors='replace')} chunk")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            ended = True
            break
        pos += 12 + length
    if header is None or not idat:
        raise ValueError(f"{path}: no image header or data")
    if not ended:  # a file cut short between chunks decodes, but is not the whole file that was written
        raise ValueError(f"{path}: cut short (no IEND chunk at its end)")
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 4: 2, 2: 3, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"{path}: only 8-bit grayscale/RGB(A) PNGs without interlacing are read here "
                         f"(bit depth {depth}, color type {color}, interlace {interlace}); convert it with Pillow")
    try:
        raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    except zlib.error as error:
        raise ValueError(f"{path}: damaged image data ({error})") from None
    stride = width * channels
    if raw.size != height * (stride + 1):
        raise ValueError(f"{path}: image data of {raw.size} bytes, expected {height * (stride + 1)}")
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    for y in range(height):  # undo the per-row filters (PNG spec, section 9)
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        prior = out[y - 1] if y else np.zeros(stride, dtype=np.int32)
        if kind == 0:
            out[y] = line
        elif kind == 2:
            out[y] = (line + prior) & 255
        elif kind in (1, 3, 4):
            row = np.zeros(stride, dtype=np.int32)
            for i in range(stride):
                left = row[i - channels] if i >= channels else 0
                if kind == 1:
                    predictor = left
                elif kind == 3:
                    predictor = (left + prior[i]) // 2
                else:
                    up_left = prior[i - channels] if i >= channels else 0
                    p = left + prior[i] - up_left
                    pa, pb, pc = abs(p - left), abs(p - prior[i]), abs(p - up_left)
                    predictor = left if pa <= pb and pa <= pc else (prior[i] if pb <= pc else up_left)
                row[i] = (line[i] + predictor) & 255
            out[y] = row
        else:
            raise ValueError(f"{path}: unknown row filter {kind}")
    image = out.astype(np.uint8).reshape(height, width, channels)
    return image[:, :, :1] if channels == 2 else image[:, :, :3] if channels == 4 else image


def save_npz(path, pixels, seeds, labels=None, settings: str | None = None) -> None:
    """uint8 images [N, H, W, C], their seeds and (class-conditional) labels as one .npz, written atomically;
    `settings`: a JSON text kept as the 0-d string array `settings` (fastdiff generate's, as in generate.json)."""
    path = Path(path)
    arrays = {"images": np.asarray(pixels, dtype=np.uint8), "seeds": np.asarray(seeds, dtype=np.int64)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    if settings is not None:
        arrays["settings"] = np.asarray(settings)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_generated(source):
    """(uint8 images [N, H, W, C], labels int64 [N] or None, seeds int64 [N]) from a .npz file or a PNG folder
    written by `fastdiff generate` (the folder's labels come from its generate.json; None if it has none)."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() != ".npz":
            raise ValueError(f"images: expected a .npz file or a folder in fastdiff generate's layout "
                             f"(<seed//1000*1000>/<seed>.png with generate.json), got the file {str(source)!r}")
        try:
            content = np.load(source)
        except (ValueError, OSError) as error:
            raise ValueError(f"images: cannot read {source} as .npz ({error})") from None
        if "images" not in content:
            raise ValueError(f"images: {source} has no 'images' array (has {sorted(content.files)})")
        images = content["images"]
        seeds = content["seeds"] if "seeds" in content else np.arange(len(images), dtype=np.int64)
        labels = content["labels"] if "labels" in content else None
        return images, labels, seeds
    if not source.is_dir():
        raise FileNotFoundError(f"images: {source} is neither a .npz file nor a folder of PNG files")
    files = _layout_files(source)
    if not files:
        raise ValueError(f"images: no <seed>.png files in {source} (expected fastdiff generate's layout "
                         f"{png_path(source, 0).relative_to(source)})")
    seeds = np.array([int(f.stem) for f in files], dtype=np.int64)
    images = np.stack([read_png(f) for f in files])
    settings = read_settings(source)
    labels = None
    if settings is not None and settings.get("label_dim"):
        labels = class_of_seeds(seeds, settings.get("class"), int(settings["label_dim"]))
    return images, labels, seeds


def _layout_files(outdir: Path) -> list[Path]:
    """The <seed>.png files of png_path's layout in outdir, by seed (6 digits or more: seeds from 10^6 have 7)."""
    digits = re.compile(r"[0-9]{6,}")
    files = [f for d in outdir.iterdir() if d.is_dir() and digits.fullmatch(d.name)
             for f in d.glob("*.png") if digits.fullmatch(f.stem)]
    return sorted(files, key=lambda f: int(f.stem))


def class_of_seeds(seeds, fixed_class, label_dim: int) -> np.ndarray:
    """Each seed's class: `fixed_class` for all when given, else seed % label_dim (balanced, and the same for a seed
    whatever the batch or the number of processes)."""
    seeds = np.asarray(seeds, dtype=np.int64)
    if fixed_class is not None:
        return np.full(seeds.shape, int(fixed_class), dtype=np.int64)
    return seeds % label_dim


def read_settings(outdir) -> dict | None:
    path = Path(outdir) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"images: {path} is not valid JSON ({error})") from None
