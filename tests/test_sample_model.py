"""`fastdiff sample` of a model: the shipped digits model by default (a row per class, FD-digits and class accuracy),
--class, --guidance, --model PATH (model files, checkpoints, run folders), and its errors."""
import pytest
import torch

import fastdiff
from fastdiff.cli import main
from fastdiff.imagefiles import read_png
from fastdiff.nets import MLP, UNet


def report(capsys) -> str:
    return capsys.readouterr().out


def quality_numbers(text: str) -> tuple[float, float | None]:
    line = next(l for l in text.splitlines() if "FD-digits" in l)
    fd = float(line.split("FD-digits")[1].split()[0])
    accuracy = float(line.split("class accuracy")[1].split("%")[0]) / 100 if "class accuracy" in line else None
    return fd, accuracy


def test_shipped_model_is_what_the_issue_describes():
    """fastdiff.pretrained("digits"): eval mode, no gradients, label_dim 10, one channel, 8x8, pixels in [-1, 1]."""
    net = fastdiff.pretrained("digits")
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert (net.label_dim, net.img_channels, net.img_resolution) == (10, 1, 8)
    assert isinstance(net, fastdiff.EDMPrecond) and net.sigma_data == 0.5
    assert "class_names" in net.info and net.info["class_names"] == [str(k) for k in range(10)]
    size = (fastdiff.models.WEIGHTS_DIR / "digits.pt").stat().st_size
    assert size <= 10 * 2**20


def test_default_sample_is_a_grid_of_digits_a_row_per_class(tmp_path, capsys):
    out = tmp_path / "digits.png"
    assert main(["sample", "--num-samples", "30", "--steps", "6", "--out", str(out)]) == 0
    text = report(capsys)
    assert "sampled 30 images (1, 8, 8)" in text and "6 steps, NFE 11" in text and "classes (seed % 10)" in text
    fd, accuracy = quality_numbers(text)
    assert fd >= 0 and 0 <= accuracy <= 1
    image = read_png(out)
    # 10 rows (one per class) of 10 columns of 9-pixel cells plus a border, enlarged by an integer factor.
    assert image.shape[0] == image.shape[1] and image.shape[0] % 91 == 0
    scale = image.shape[0] // 91
    cell = lambda r, c: image[(1 + 9 * r) * scale:(9 + 9 * r) * scale, (1 + 9 * c) * scale:(9 + 9 * c) * scale]
    # 30 seeds give 3 samples of each class: columns 0-2 hold digits, the rest are white fillers.
    assert all((cell(r, c) == 255).all() for r in range(10) for c in range(3, 10))
    assert all((cell(r, c) < 255).any() for r in range(10) for c in range(3))


def test_the_shipped_model_draws_the_digit_asked_for(capsys):
    """The trained model, judged by the shipped classifier: most samples are the class they were asked for, and the
    FD-digits is within a few times the real-data floor (random weights fail both)."""
    assert main(["sample", "--num-samples", "200", "--steps", "12", "--out", ""]) == 0
    fd, accuracy = quality_numbers(report(capsys))
    assert accuracy >= 0.9, accuracy


def test_class_and_guidance(tmp_path, capsys):
    out = tmp_path / "threes.png"
    assert main(["sample", "--num-samples", "20", "--steps", "4", "--class", "3", "--guidance", "2", "--out", str(out)]) == 0
    text = report(capsys)
    assert "class 3, guidance 2" in text
    image = read_png(out)
    scale = image.shape[1] // 91  # 10 columns of 9-pixel cells and a border
    assert image.shape[:2] == (19 * scale, 91 * scale)  # 20 samples of one class: two rows


@pytest.mark.parametrize("argv,message", [
    (["--class", "10"], "--class: expected a class in 0..9, got 10"),
    (["--class", "-1"], "--class: expected a class in 0..9, got -1"),
    (["--model", "mixture", "--class", "2"], "--class: the mixture demo is unconditional"),
    (["--model", "mixture", "--guidance", "2"], "--guidance: the mixture demo is unconditional"),
    (["--model", "no/such/file.pt"], "model: 'no/such/file.pt' is neither a shipped model"),
    (["--num-samples", "0"], "--num-samples: must be >= 1, got 0"),
    (["--columns", "0"], "--columns: must be >= 1, got 0"),
])
def test_errors_name_the_option(argv, message, capsys):
    assert main(["sample", "--out", "", *argv]) == 2
    assert message in capsys.readouterr().err


def test_model_file_of_an_unconditional_unet(tmp_path, capsys):
    """--model PATH samples any fastdiff model file; an unconditional model refuses --class and --guidance."""
    torch.manual_seed(0)
    net = fastdiff.EDMPrecond(UNet(img_resolution=6, in_channels=3, model_channels=8, channel_mult=(1,), num_blocks=1,
                                   attn_resolutions=()))
    path = fastdiff.save_model(tmp_path / "tiny.pt", net)
    out = tmp_path / "tiny.png"
    assert main(["sample", "--model", str(path), "--num-samples", "9", "--steps", "3", "--columns", "3",
                 "--out", str(out)]) == 0
    text = report(capsys)
    assert "sampled 9 images (3, 6, 6)" in text and "no quality measure" in text
    assert read_png(out).shape[2] == 3
    assert main(["sample", "--model", str(path), "--guidance", "2", "--out", ""]) == 2
    assert "--guidance: the model" in capsys.readouterr().err


def test_run_folder_of_points(tmp_path, capsys):
    """A training run on 2-D data samples from its folder (the newest checkpoint's EMA), with the distance to the
    data it was trained on, and the picture is a scatter."""
    run = tmp_path / "run"
    result = fastdiff.train("moons", steps=3, batch_size=32, run_dir=str(run), progress=False, sample_every=100,
                            checkpoint_every=3)
    out = tmp_path / "points.png"
    assert main(["sample", "--model", str(run), "--num-samples", "256", "--steps", "4", "--out", str(out)]) == 0
    text = report(capsys)
    assert "sampled 256 points (2,)" in text and "sliced Wasserstein distance to" in text
    assert read_png(out).shape == (512, 512, 3)
    loaded = fastdiff.load_model(run)
    for a, b in zip(loaded.state_dict().values(), result.ema.state_dict().values()):
        assert torch.equal(a, b.cpu())


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(1)
    net = fastdiff.VPPrecond(MLP(dim=3, hidden=16, depth=2, num_classes=4), beta_d=10.0)
    path = fastdiff.save_model(tmp_path / "m.pt", net, note="hello")
    loaded = fastdiff.load_model(path)
    assert isinstance(loaded, fastdiff.VPPrecond) and loaded.beta_d == 10.0 and loaded.info == {"note": "hello"}
    x, sigma, labels = torch.randn(5, 3), torch.rand(5) + 0.1, torch.tensor([0, 1, 2, 3, 0])
    assert torch.equal(loaded(x, sigma, labels), net.eval()(x, sigma, labels))
    with pytest.raises(ValueError, match="save_model writes fastdiff's own networks"):
        fastdiff.save_model(tmp_path / "x.pt", fastdiff.EDMPrecond(torch.nn.Identity()))


def test_shipped_model_was_trained_by_the_recipe():
    """The shipped file records the run that made it: `fastdiff train --data digits`, the recipe's values for the
    recipe's options and TrainConfig's defaults for the rest, so the recipe and the shipped model cannot drift apart."""
    from fastdiff.training import RECIPES, TrainConfig

    info = fastdiff.pretrained("digits").info
    assert info["command"] == "fastdiff train --data digits" and info["steps"] == RECIPES["digits"]["steps"]
    config, defaults = info["config"], TrainConfig().to_dict()
    assert config["data"] == "digits"
    for name, value in RECIPES["digits"].items():
        assert config[name] == value, name
    for name, value in defaults.items():
        if name not in RECIPES["digits"] and name not in ("data", "run_dir", "progress", "resume"):
            assert config[name] == value, name
