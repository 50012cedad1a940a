"""The `fastdiff` command: the sample main job, info, and errors."""
import struct
import subprocess
import sys
import zlib

import pytest
import torch

from fastdiff import backends
from fastdiff.cli import main
from fastdiff.png import scatter_image, write_png


def read_png(path):
    """Decode an 8-bit RGB, filter-0 PNG as written by fastdiff.png into a uint8 tensor [H, W, 3]."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 2)
    raw = torch.frombuffer(bytearray(zlib.decompress(chunks[b"IDAT"])), dtype=torch.uint8).reshape(height, 1 + 3 * width)
    assert bool((raw[:, 0] == 0).all())
    return raw[:, 1:].reshape(height, width, 3)


def test_sample_reports_its_work_and_draws_the_ring(tmp_path, capsys):
    """`fastdiff sample` prints steps, NFE, time and backend, and its PNG shows dark points on the ring only."""
    out = tmp_path / "s.png"
    assert main(["sample", "--model", "mixture", "--num-samples", "2048", "--steps", "12", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    x = torch.empty(1)
    assert "12 steps, NFE 23" in text and f"backend {backends.resolve('auto', x, (x,))}" in text and " s (" in text
    assert f"wrote {out}" in text
    image = read_png(out).int()
    assert image.shape == (512, 512, 3)
    dark = image[:, :, 2] < 250  # the density wash leaves blue at 255; only sample ink lowers it
    rows, cols = dark.nonzero(as_tuple=True)
    # Pixel -> data coordinates; the ring has radius 1 and std 0.08, so dark pixels lie near radius 1.
    x = cols.double() / 511 * 3.2 - 1.6
    y = (511 - rows.double()) / 511 * 3.2 - 1.6
    radius = (x**2 + y**2).sqrt()
    assert dark.sum() > 1000
    assert float(((radius - 1).abs() < 0.4).double().mean()) > 0.99


def test_sample_quality_line_is_near_the_floor(capsys):
    """The printed distance to exact draws is within a few times the exact-vs-exact floor for a converged run."""
    assert main(["sample", "--model", "mixture", "--num-samples", "4096", "--steps", "64", "--out", ""]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if "sliced Wasserstein" in l)
    distance = float(line.split(":")[1].split()[0])
    floor = float(line.split("two exact draws:")[1].strip(" )"))
    assert distance < 3 * floor


@pytest.mark.parametrize("argv,message", [
    (["sample", "--model", "mixture", "--num-samples", "0", "--out", ""], "--num-samples: must be >= 1, got 0"),
    (["sample", "--model", "mixture", "--steps", "0", "--out", ""], "num_steps: must be >= 1, got 0"),
    (["sample", "--model", "mixture", "--sigma-min", "90", "--out", ""], "sigma_min: must be below sigma_max"),
    (["sample", "--model", "mixture", "--backend", "cuda", "--out", ""], "backend='cuda' cannot run: "),  # CPU tensors; maybe not built
])
def test_errors_exit_2_with_the_argument_named(argv, message, capsys):
    """Bad options print one error line naming the option and exit with status 2."""
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_info_and_module_entry_point():
    """`python -m fastdiff info` lists every backend and what auto picks."""
    result = subprocess.run([sys.executable, "-m", "fastdiff", "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("reference", "triton", "cpu", "cuda"):
        assert f"  {name}" in result.stdout
    x = torch.empty(1)
    assert f"auto       -> {backends.resolve('auto', x, (x,))} for float32 cpu tensors" in result.stdout
    assert "triton     installed; runs on CPU tensors through the interpreter" in result.stdout  # conftest sets it
    if not torch.cuda.is_available() and not backends.install_reasons("cuda"):  # a CUDA torch on a GPU-less machine
        assert "cuda       installed (its ops are registered); runs nowhere here: no CUDA device" in result.stdout


def test_write_png_roundtrip_and_errors(tmp_path):
    """write_png writes what read_png decodes, and rejects non-uint8 or non-RGB input."""
    image = torch.randint(0, 256, (7, 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    write_png(tmp_path / "x.png", image)
    assert torch.equal(read_png(tmp_path / "x.png"), image)
    with pytest.raises(ValueError, match="rgb: expected a uint8 tensor"):
        write_png(tmp_path / "y.png", image.float())


def test_scatter_places_points():
    """A point at the origin darkens the centre pixel; points outside the extent are dropped."""
    image = scatter_image(torch.tensor([[0.0, 0.0], [5.0, 5.0]]), extent=1.0, size=65)
    assert image[32, 32].int().sum() < 3 * 255 - 100
    assert int((image.int().sum(-1) < 3 * 255).sum()) == 1


def test_every_option_of_every_command_has_help_text():
    """`fastdiff <command> --help` explains every option it lists (sample, train, generate, eval, build)."""
    import argparse

    from fastdiff.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {'/'.join(action.option_strings)}" for name, sub in commands.choices.items()
               for action in sub._actions if action.option_strings and not action.help]
    assert set(commands.choices) >= {"sample", "train", "generate", "eval", "build", "info"}
    assert not missing, missing
