"""Issue 17, part 5: training that loses nothing and never mixes runs (one test, or group, per defect), and the
digits recipe."""
import argparse
import dataclasses
import json
import os
import subprocess
import sys
import typing
import warnings

import numpy as np
import pytest
import torch

from fastdiff import cli, training
from fastdiff.png import REFERENCE_INK, SAMPLE_INK
from fastdiff.training import RECIPES, TrainConfig, list_checkpoints, train

TINY = dict(batch_size=32, net_kwargs={"hidden": 32, "depth": 2, "embedding_dim": 16}, lr_rampup_kimg=0.5,
            ema_halflife_kimg=0.2, log_every=5, sample_every=1000, checkpoint_every=1000, progress=False)
TINY_UNET = {"model_channels": 8, "channel_mult": [1, 2], "channels_per_head": 8}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fastdiff_cli(*argv, cwd=None):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "fastdiff", *argv], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=env)


def log_records(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


# 1. Small point sets: the final evaluation works, and a failing evaluation never loses the trained network.
@pytest.mark.parametrize("n", [2, 3, 127])
def test_1_small_point_sets_evaluate(n):
    data = torch.randn(n, 2, generator=torch.Generator().manual_seed(n))
    result = train(data, **{**TINY, "steps": 3, "batch_size": 8})
    last = result.history[-1]
    assert last["step"] == 3 and "eval_error" not in last
    assert last["sw"] > 0 and last["sw_floor"] > 0


@pytest.mark.parametrize("run_dir", [False, True], ids=["no-run-dir", "run-dir"])
def test_1_failed_evaluation_keeps_the_network(tmp_path, monkeypatch, run_dir):
    def broken(trainer, write):
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr("fastdiff.grids.evaluate_samples", broken)
    options = {**TINY, "steps": 4, "sample_every": 2}
    if run_dir:
        options["run_dir"] = str(tmp_path / "r")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train("moons", **options)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 2 and all(f"evaluation at step {step} " in m and "failed: RuntimeError: sampler exploded"
                                      in m for step, m in zip((2, 4), messages)), messages
    assert result.step == 4 and isinstance(result.ema, training.Precond)
    assert [r.get("eval_error") for r in result.history if "eval_error" in r] == ["RuntimeError: sampler exploded"] * 2
    if run_dir:
        assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["checkpoint-00000004.pt"]
        assert log_records(tmp_path / "r")[-1]["eval_error"] == "RuntimeError: sampler exploded"


# 2. Integer points are converted to float.
def test_2_integer_points_train():
    data = torch.randint(0, 5, (64, 2), generator=torch.Generator().manual_seed(0))
    result = train(data, **{**TINY, "steps": 2})
    assert result.dataset.data.dtype == torch.float32
    assert torch.equal(result.dataset.data, data.float())
    assert result.history[-1]["sw"] > 0


# 3. A run folder belongs to one run.
def test_3_a_new_run_into_an_existing_run_is_refused_unless_overwrite(tmp_path):
    run_dir = tmp_path / "r"
    train("moons", run_dir=str(run_dir), **{**TINY, "steps": 4, "checkpoint_every": 2, "keep_checkpoints": 5})
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(FileExistsError, match=r"run_dir: .*r' already holds a run \(checkpoint-00000002.pt, .*"
                                              r"resume='latest' \(--resume latest\).*overwrite=True \(--overwrite"):
        train("moons", run_dir=str(run_dir), **{**TINY, "steps": 2})
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing touched
    # The command line refuses too, with the flags named, and exits 2.
    done = fastdiff_cli("train", "--data", "moons", "--steps", "1", "--run-dir", str(run_dir), "--no-progress")
    assert done.returncode == 2 and "--resume latest" in done.stderr and "--overwrite" in done.stderr
    # overwrite deletes exactly the old run's files fastdiff wrote; other files stay.
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / ".checkpoint-00000009.pt.tmp-1").write_bytes(b"partial")
    train("moons", run_dir=str(run_dir), overwrite=True, **{**TINY, "steps": 3, "log_every": 3})
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint-00000003.pt", "config.json", "log.jsonl",
                                                         "notes.txt", "samples-00000003.png"]
    assert [r["step"] for r in log_records(run_dir)] == [3]
    with pytest.raises(ValueError, match="overwrite: True deletes the run .* resume='latest' continues it"):
        train("moons", run_dir=str(run_dir), overwrite=True, resume="latest", **{**TINY, "steps": 3})
    # A resume keeps working; an empty existing folder is fine.
    assert train("moons", run_dir=str(run_dir), resume="latest", **{**TINY, "steps": 5}).step == 5
    (tmp_path / "empty").mkdir()
    assert train("moons", run_dir=str(tmp_path / "empty"), **{**TINY, "steps": 1}).step == 1


# 4. Every TrainConfig field parses from the command line with its type (Optional fields included).
CLI_VALUES = {"data": ("moons", "moons"), "net": ("mlp", "mlp"), "precond": ("vp", "vp"), "steps": ("7", 7),
              "batch_size": ("16", 16), "lr": ("0.01", 0.01), "lr_rampup_kimg": ("2.5", 2.5),
              "betas": (["0.8", "0.99"], [0.8, 0.99]), "eps": ("1e-6", 1e-6), "ema_halflife_kimg": ("3", 3.0),
              "ema_rampup_ratio": ("0.1", 0.1), "grad_clip": ("1.5", 1.5), "precision": ("bf16", "bf16"),
              "conditional": (None, True), "label_dropout": ("0.2", 0.2), "dropout": ("0.1", 0.1),
              "net_kwargs": ('{"hidden": 8}', {"hidden": 8}), "seed": ("3", 3), "backend": ("reference", "reference"),
              "device": ("cpu", "cpu"), "run_dir": ("somewhere", "somewhere"), "checkpoint_every": ("4", 4),
              "keep_checkpoints": ("3", 3), "sample_every": ("5", 5), "num_grid": ("9", 9), "log_every": ("2", 2),
              "progress": (None, False), "resume": ("latest", "latest"), "overwrite": (None, True)}


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(TrainConfig)])
def test_4_every_field_parses_from_the_command_line(field):
    text, expected = CLI_VALUES[field]
    flag = "--no-progress" if field == "progress" else "--" + field.replace("_", "-")
    argv = ["train", flag] + ([] if text is None else [text] if isinstance(text, str) else text)
    args = cli.build_parser().parse_args(argv)
    parsed = vars(args)
    assert parsed[field] == expected and type(parsed[field]) is type(expected)
    assert set(parsed) == {"command", field}  # options not given are absent: train() fills them in
    hint = typing.get_type_hints(TrainConfig)[field]
    allowed = tuple(t for t in typing.get_args(hint) or (hint,) if t is not type(None))
    value = tuple(expected) if field == "betas" else expected
    assert isinstance(value, allowed), (field, value, allowed)


@pytest.mark.parametrize("field", ["ema_rampup_ratio", "grad_clip", "label_dropout"])
def test_4_optional_numbers_take_none_and_refuse_words(field, capsys):
    flag = "--" + field.replace("_", "-")
    assert vars(cli.build_parser().parse_args(["train", flag, "none"]))[field] is None
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", flag, "lots"])
    assert "expected a number or 'none', got 'lots'" in capsys.readouterr().err


def test_4_label_dropout_from_the_command_line_trains(tmp_path, capsys):
    code = cli.main(["train", "--data", "mixture", "--conditional", "--label-dropout", "0.2", "--steps", "1",
                     "--batch-size", "16", "--net-kwargs", '{"hidden": 16, "depth": 1}', "--num-grid", "8",
                     "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["label_dropout"] == 0.2 and config["conditional"] is True


# 5. Every option of `fastdiff train` has help text.
def test_5_every_train_option_has_help():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train_parser = subparsers.choices["train"]
    missing = [a.option_strings for a in train_parser._actions if not (a.help and a.help.strip())]
    assert missing == []
    help_text = train_parser.format_help()
    for f in dataclasses.fields(TrainConfig):
        flag = "--no-progress" if f.name == "progress" else "--" + f.name.replace("_", "-")
        assert flag in help_text


# 6. uint8 images are scaled to [-1, 1] as fastdiff.data.tensor_file does; uint8 points are refused helpfully.
def test_6_uint8_images_are_scaled_like_the_data_module(tmp_path):
    from fastdiff.data import tensor_file

    images = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "images.npy", images.numpy())
    result = train(images, **{**TINY, "steps": 1, "batch_size": 4, "num_grid": 4, "net_kwargs": TINY_UNET})
    assert torch.equal(result.dataset.data, tensor_file(tmp_path / "images.npy").data)
    assert float(result.dataset.data.min()) == -1.0 and float(result.dataset.data.max()) <= 1.0
    with pytest.raises(ValueError, match=r"train: data: uint8 data are images: .*got shape \(64, 2\); for points .* "
                                         r"convert to float"):
        train(torch.randint(0, 5, (64, 2), dtype=torch.uint8), **{**TINY, "steps": 1})


# 7. numpy arrays are accepted, by the same rules as tensors.
def test_7_numpy_arrays_train():
    points = np.random.default_rng(0).normal(size=(200, 2))
    result = train(points, **{**TINY, "steps": 2})
    assert result.step == 2 and torch.equal(result.dataset.data, torch.from_numpy(points).float())
    integers = np.arange(128).reshape(64, 2) % 7
    assert torch.equal(train(integers, **{**TINY, "steps": 1}).dataset.data, torch.from_numpy(integers).float())
    with pytest.raises(TypeError, match="data: expected a numpy array of numbers, got dtype <U1"):
        train(np.array([["a", "b"]]), **{**TINY, "steps": 1})


# 8. Constant data: an error that names the data and says why.
@pytest.mark.parametrize("data", [torch.ones(50, 2), torch.ones(1, 2)], ids=["constant", "one-point"])
def test_8_constant_data_is_refused_with_a_reason(data):
    with pytest.raises(ValueError, match=r"data: all \d+ point\(s\) of 'tensor' are the same point \[1.0, 1.0\]: "
                                         r"constant data have no spread to learn"):
        train(data, **{**TINY, "steps": 1})


# 9. Resume.
def make_run(tmp_path, name="r", steps=4, **options):
    run_dir = tmp_path / name
    train("moons", run_dir=str(run_dir), **{**TINY, "steps": steps, "checkpoint_every": 2, "keep_checkpoints": 5,
                                            **options})
    return run_dir


def test_9ab_garbage_and_empty_checkpoints_say_what_is_wrong(tmp_path):
    garbage, empty = tmp_path / "garbage.pt", tmp_path / "empty.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    empty.write_bytes(b"")
    for path, reason in ((garbage, r"\(23 bytes\): it is not a file torch.save wrote"),
                         (empty, r"is empty \(0 bytes\): a write that never finished")):
        with pytest.raises(ValueError, match=f"resume: .*{path.name} {reason}") as caught:
            train("moons", run_dir=str(tmp_path / "new"), resume=str(path), **{**TINY, "steps": 2})
        assert "weights_only" not in str(caught.value) and "EOFError" not in str(caught.value)
        done = fastdiff_cli("train", "--data", "moons", "--steps", "2", "--run-dir", str(tmp_path / "new"),
                            "--resume", str(path), "--no-progress")
        assert done.returncode == 2 and path.name in done.stderr and "weights_only" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not (tmp_path / "new").exists()


def test_9c_a_corrupt_newest_checkpoint_falls_back_to_the_older_one(tmp_path, capsys):
    run_dir = make_run(tmp_path)
    newest = run_dir / "checkpoint-00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short, as by a disk that filled up
    result = train("moons", run_dir=str(run_dir), resume="latest", **{**TINY, "steps": 6, "checkpoint_every": 2,
                                                                      "keep_checkpoints": 5})
    assert result.step == 6
    err = capsys.readouterr().err
    assert "checkpoint-00000004.pt" in err and "cut short" in err and "using the older checkpoint-00000002.pt" in err
    # The same from the command line (the file was rewritten by the resumed run: damage it again).
    newest = run_dir / "checkpoint-00000006.pt"
    newest.write_bytes(b"")
    done = fastdiff_cli("train", "--data", "moons", "--steps", "8", "--batch-size", "32", "--net-kwargs",
                        json.dumps(TINY["net_kwargs"]), "--lr-rampup-kimg", "0.5", "--ema-halflife-kimg", "0.2",
                        "--log-every", "5", "--sample-every", "1000", "--checkpoint-every", "2",
                        "--keep-checkpoints", "5", "--run-dir", str(run_dir), "--resume", "latest", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "checkpoint-00000006.pt is empty" in done.stderr and "using the older checkpoint-00000004.pt" in done.stderr
    assert "trained to step 8" in done.stdout


def test_9d_temporary_files_of_dead_writers_are_cleaned(tmp_path):
    run_dir = make_run(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = run_dir / f".checkpoint-00000006.pt.tmp-{dead_pid}"
    stale.write_bytes(b"half a checkpoint")
    live = run_dir / f".checkpoint-00000006.pt.tmp-{os.getppid()}"  # a writer that still runs: kept
    live.write_bytes(b"being written")
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-00000002.pt", "checkpoint-00000004.pt"]
    train("moons", run_dir=str(run_dir), resume="latest", **{**TINY, "steps": 6, "checkpoint_every": 2,
                                                              "keep_checkpoints": 5})
    assert not stale.exists() and live.exists()
    assert [p.name for p in list_checkpoints(run_dir)][-1] == "checkpoint-00000006.pt"


def test_9e_steps_below_the_checkpoint_are_refused_before_anything_is_written(tmp_path):
    run_dir = make_run(tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(ValueError, match=r"steps: 2 is below the step 4 of the checkpoint .*checkpoint-00000004.pt.*"
                                         r"give steps >= 4"):
        train("moons", run_dir=str(run_dir), resume="latest", **{**TINY, "steps": 2})
    done = fastdiff_cli("train", "--data", "moons", "--steps", "3", "--batch-size", "32", "--net-kwargs",
                        json.dumps(TINY["net_kwargs"]), "--lr-rampup-kimg", "0.5", "--ema-halflife-kimg", "0.2",
                        "--run-dir", str(run_dir), "--resume", "latest", "--no-progress")
    assert done.returncode == 2 and "steps: 3 is below the step 4" in done.stderr and "nan" not in done.stdout
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # config.json not rewritten


def test_9f_the_log_after_a_resume_is_the_uninterrupted_log(tmp_path):
    """A checkpoint at a step that is a multiple of log_every (12) and one that is not (7), each resumed: every
    record after the resume equals the uninterrupted run's record at that step (the loss window included)."""
    keys = ("step", "kimg", "loss", "lr", "ema_beta")
    options = {**TINY, "log_every": 4, "keep_checkpoints": 5}
    straight = train("moons", run_dir=str(tmp_path / "straight"), **{**options, "steps": 20})
    expected = {r["step"]: {k: r[k] for k in keys} for r in straight.history}
    for stop in (7, 12):
        run_dir = tmp_path / f"split-{stop}"
        train("moons", run_dir=str(run_dir), **{**options, "steps": stop})
        resumed = train("moons", run_dir=str(run_dir), resume="latest", **{**options, "steps": 20})
        got = {r["step"]: {k: r[k] for k in keys} for r in resumed.history}
        assert sorted(got) == [s for s in (4, 8, 12, 16, 20) if s > stop]
        assert got == {s: expected[s] for s in got}, stop
        logged = [r["step"] for r in log_records(run_dir)]
        assert logged == sorted({4, 8, 12, 16, 20, stop})  # the first run's end-of-run record, then the rest
        assert {r["step"]: {k: r[k] for k in keys} for r in log_records(run_dir) if r["step"] in got} == got


# 10. The pictures: visible dots over the data; one row per class for conditional image runs.
def test_10_scatter_draws_dots_over_the_data(tmp_path):
    from fastdiff.grids import _scatter
    from fastdiff.data import load

    dataset = load("moons", n=2000)
    samples = torch.tensor([[0.0, 0.0], [3.0, 3.0]])  # one sample where there is no data, one outside
    image = _scatter(samples[:1], dataset).int()
    dark = (image < torch.tensor(SAMPLE_INK).int() + 60).all(-1)  # within 60 levels of the ink in every channel
    assert int(dark.sum()) == 9  # a 3x3 dot, not a pixel
    light = (image - torch.tensor(REFERENCE_INK).int()).abs().sum(-1) < 80
    assert int(light.sum()) > 1000  # the data drawn underneath in the light colour
    white = (image == 255).all(-1)
    assert int(white.sum()) > image.shape[0] * image.shape[1] // 2  # and still mostly background


def test_10_conditional_image_grids_have_one_row_per_class(tmp_path):
    from fastdiff import grids

    captured = {}
    real = grids.image_grid

    def spy(images, *args, **kwargs):
        captured["images"], captured["columns"] = images, kwargs.get("columns")
        return real(images, *args, **kwargs)

    grids.image_grid = spy
    try:
        train("digits", run_dir=str(tmp_path / "d"), **{**TINY, "steps": 1, "batch_size": 8, "num_grid": 25,
                                                        "net_kwargs": TINY_UNET})
    finally:
        grids.image_grid = real
    assert captured["columns"] == 2 and captured["images"].shape[0] == 20  # 25 // 10 per class, 10 rows
    png = (tmp_path / "d" / "samples-00000001.png").read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width // (2 * 9 + 1)) * (10 * 9 + 1) == height


# 11. The digits recipe.
def test_11_digits_recipe_fills_the_options_not_given(tmp_path):
    result = train("digits", steps=1, batch_size=8, num_grid=10, net_kwargs=TINY_UNET, progress=False,
                   run_dir=str(tmp_path / "d"))
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert result.config.conditional is True and result.config.lr == 1e-3 and result.config.batch_size == 8
    assert config["conditional"] is True and config["lr"] == 1e-3 and config["steps"] == 1
    # An explicit value equal to TrainConfig's default wins over the recipe as well.
    assert TrainConfig.lr == 2e-3
    result = train("digits", steps=1, lr=2e-3, conditional=False, batch_size=4, num_grid=4, net_kwargs=TINY_UNET,
                   progress=False)
    assert result.config.lr == 2e-3 and result.config.conditional is False
    assert RECIPES["digits"] == dict(conditional=True, steps=4000, batch_size=256, lr=1e-3)


def test_11_digits_recipe_keeps_its_batch_size_unless_given():
    """train('digits', steps=2) takes conditional, batch_size 256 and lr 1e-3 from the recipe (a small network)."""
    result = train("digits", steps=2, num_grid=10, net_kwargs=TINY_UNET, progress=False)
    assert (result.config.conditional, result.config.batch_size, result.config.lr) == (True, 256, 1e-3)
    assert result.nimg == 2 * 256


def test_11_digits_recipe_from_the_command_line(tmp_path):
    common = ["train", "--data", "digits", "--steps", "1", "--num-grid", "10", "--net-kwargs", json.dumps(TINY_UNET),
              "--no-progress"]
    done = fastdiff_cli(*common, "--run-dir", str(tmp_path / "a"))
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (config["conditional"], config["batch_size"], config["lr"], config["steps"]) == (True, 256, 1e-3, 1)
    assert f"fastdiff sample --model {tmp_path / 'a'}" in done.stdout
    done = fastdiff_cli(*common, "--run-dir", str(tmp_path / "b"), "--batch-size", "64", "--lr", "0.002",
                        "--no-conditional")
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (config["conditional"], config["batch_size"], config["lr"]) == (False, 64, 2e-3)


def test_no_warning_from_a_normal_run():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train("moons", **{**TINY, "steps": 2, "sample_every": 2}).history[-1]["sw"] > 0
