"""The edges of the image main job a new user hit (sample, eval, generate, train, load_model): each refused or
explained before work is lost, never a silent wrong number."""

import numpy as np
import pytest
import torch

import fastdiff
from fastdiff import cli
from fastdiff.cli import main
from fastdiff.imagefiles import png_path, write_png
from fastdiff.nets import UNet


def small_conditional(label_dropout):
    torch.manual_seed(0)
    return fastdiff.EDMPrecond(UNet(img_resolution=8, in_channels=1, num_classes=10, label_dropout=label_dropout,
                                    model_channels=8, channel_mult=(1,), num_blocks=1, attn_resolutions=()))


def test_a_folder_named_like_a_shipped_model_is_ambiguous(tmp_path, monkeypatch, capsys):
    """A run folder ./digits must not be replaced by the shipped model without a word."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    with pytest.raises(ValueError, match="'digits' is both the shipped model's name and a file or folder here"):
        fastdiff.load_model("digits")
    (tmp_path / "mixture").mkdir()
    assert main(["sample", "--model", "mixture", "--out", ""]) == 2
    assert "'mixture' is both the built-in demo and a file or folder here" in capsys.readouterr().err


def test_train_reports_a_sample_command_that_names_its_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "moons", "--steps", "2", "--batch-size", "16", "--run-dir", "digits",
                 "--no-progress", "--sample-every", "2"]) == 0
    assert "sample it: fastdiff sample --model ./digits" in capsys.readouterr().out


def test_one_class_gets_accuracy_not_a_meaningless_fd(capsys):
    assert main(["sample", "--num-samples", "20", "--steps", "4", "--class", "3", "--out", ""]) == 0
    text = capsys.readouterr().out
    assert "FD-digits not reported: every image is of class 3" in text and "class accuracy" not in text.split(
        "FD-digits not reported")[0]
    result = fastdiff.quality.evaluate(torch.zeros(4, 1, 8, 8), torch.full((4,), 3))
    assert result["fd_digits"] is None and "class 3" in result["fd_skipped"] and result["accuracy"] in (0.0, 1.0)


def test_a_single_sample_still_reports(capsys, tmp_path):
    """One sample: the picture and the report, and a note instead of an FD (exit 0, not an error after the work)."""
    out = tmp_path / "one.png"
    assert main(["sample", "--num-samples", "1", "--steps", "3", "--out", str(out)]) == 0
    assert "no FD-digits for a single sample" in capsys.readouterr().out and out.is_file()


def test_out_folder_is_checked_before_sampling(capsys, monkeypatch):
    monkeypatch.setattr("fastdiff.sample_cli.sample_seeds", lambda *a, **k: pytest.fail("sampled before checking --out"))
    assert main(["sample", "--out", "no/such/folder/x.png"]) == 2
    assert "--out: the folder 'no/such/folder' of 'no/such/folder/x.png' does not exist" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a CUDA device")
def test_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert main(["sample", "--device", "cuda", "--out", ""]) == 2
    assert "device: 'cuda' asked for, but torch" in capsys.readouterr().err


def test_interrupt_says_what_is_kept(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_train", interrupted)
    assert main(["train", "--data", "moons"]) == 130
    assert "fastdiff train: interrupted; the checkpoints written are kept: rerun with --resume latest" in \
        capsys.readouterr().err


def test_eval_names_a_file_that_is_not_npz(tmp_path, capsys):
    png = tmp_path / "one.png"
    write_png(png, np.zeros((8, 8, 1), dtype=np.uint8))
    assert main(["eval", "--images", str(png)]) == 2
    assert "expected a .npz file or a folder in fastdiff generate's layout" in capsys.readouterr().err


def test_eval_warns_about_seeds_without_images(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["generate", "--seeds", "0-9", "--steps", "3", "--outdir", str(out), "--no-progress"]) == 0
    png_path(out, 7).unlink()
    capsys.readouterr()
    assert main(["eval", "--images", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 of the 10 seeds that fastdiff generate was asked for have no image" in captured.err and "(7)" in captured.err
    assert "9 images from" in captured.out


def test_guidance_on_a_model_without_label_dropout_is_warned(tmp_path, capsys):
    path = fastdiff.save_model(tmp_path / "ld0.pt", small_conditional(0.0))
    assert main(["sample", "--model", str(path), "--num-samples", "4", "--steps", "2", "--guidance", "2", "--out", ""]) == 0
    assert "trained with label dropout 0" in capsys.readouterr().err
    path = fastdiff.save_model(tmp_path / "ld1.pt", small_conditional(0.1))
    assert main(["sample", "--model", str(path), "--num-samples", "4", "--steps", "2", "--guidance", "2", "--out", ""]) == 0
    assert "label dropout" not in capsys.readouterr().err


@pytest.mark.parametrize("content, reason", [(b"", "is empty (0 bytes)"), (b"hello, not torch", "not a file torch.save wrote")])
def test_a_bad_classifier_file_says_what_is_wrong(tmp_path, capsys, content, reason):
    bad = tmp_path / "c.pt"
    bad.write_bytes(content)
    assert main(["eval", "--model", "digits", "--num-samples", "2", "--classifier", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "classifier: " in err and reason in err and "weights_only" not in err


def test_pixel_ranges_that_look_wrong_are_warned():
    with pytest.warns(UserWarning, match=r"float images span \[0, 255\].*pass them as uint8, or as x / 127.5 - 1"):
        fastdiff.train(torch.arange(16 * 64, dtype=torch.float32).reshape(16, 1, 8, 8) % 256, steps=1, batch_size=8,
                       progress=False)
    with pytest.warns(UserWarning, match=r"0..1 pixels: pass them as 2 x - 1"):
        fastdiff.train(torch.rand(16, 1, 8, 8), steps=1, batch_size=8, progress=False)


def test_save_model_keeps_what_the_loaded_model_knew(tmp_path):
    fastdiff.train("moons", steps=2, batch_size=16, run_dir=str(tmp_path / "run"), progress=False, sample_every=2)
    net = fastdiff.load_model(tmp_path / "run")
    saved = fastdiff.load_model(fastdiff.save_model(tmp_path / "m.pt", net, note="x"))
    assert saved.info["config"]["data"] == "moons" and saved.info["step"] == 2 and saved.info["note"] == "x"


def test_the_picture_message_says_the_layout_drawn(capsys, tmp_path):
    assert main(["sample", "--num-samples", "25", "--steps", "2", "--out", str(tmp_path / "a.png")]) == 0
    assert "(a row per class, up to 3 samples each)" in capsys.readouterr().out
    assert main(["sample", "--num-samples", "30", "--steps", "2", "--columns", "3", "--out", str(tmp_path / "b.png")]) == 0
    assert "(a row per class, 3 samples each)" in capsys.readouterr().out
