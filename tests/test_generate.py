"""`fastdiff generate`: seeds parsing, the PNG and .npz outputs (equal to sampling the seeds directly), resume,
settings checks, --class and --guidance, batch-size independence, and torchrun with 2 processes writing the very
bytes 1 process writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastdiff
from fastdiff import generate
from fastdiff.cli import main
from fastdiff.imagefiles import load_generated, png_path, read_png, to_uint8
from fastdiff.rng import randn
from fastdiff.testing import torch_threads

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["--steps", "4"]


def tiny_net(num_classes=10, channels=1, seed=0):
    torch.manual_seed(seed)
    unet = fastdiff.nets.UNet(img_resolution=8, in_channels=channels, num_classes=num_classes, model_channels=8,
                              channel_mult=(1, 2), num_blocks=1, attn_resolutions=())
    with torch.no_grad():  # a freshly built UNet zeroes its output layer; random weights there make images differ
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return fastdiff.EDMPrecond(unet).eval().requires_grad_(False)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these nets are tiny, and on a shared 2-core machine a second thread costs 5x in waits."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, kwargs in {"cond": {}, "uncond": {"num_classes": 0}, "rgb": {"channels": 3},
                         "other": {"seed": 1}}.items():
        paths[name] = str(fastdiff.save_model(folder / f"{name}.pt", tiny_net(**kwargs)))
    return paths


def gen(*args) -> int:
    return main(["generate", "--no-progress", *STEPS, *map(str, args)])


def direct(model, seeds, classes=None, batch=None, **kwargs):
    """What sampling `seeds` with fastdiff.sample gives, as uint8 [N, H, W, C], in generate's batches: consecutive
    chunks of `batch` seeds (all in one when None). The batch matters: see test_batch_size_changes_images_by_at_most
    _one_level."""
    net = fastdiff.load_model(model)
    batch = batch or len(seeds)
    out = []
    for chunk in (seeds[i:i + batch] for i in range(0, len(seeds), batch)):
        latents = randn(chunk, (len(chunk), *net.sample_shape))
        labels = None if not net.label_dim else torch.tensor(
            [s % net.label_dim for s in chunk] if classes is None else [classes] * len(chunk))
        out.append(to_uint8(fastdiff.sample(net, latents, labels, seeds=chunk, num_steps=4, **kwargs)).numpy())
    return np.concatenate(out)


def pngs(folder) -> dict:
    """relative path -> bytes of every image file in a generate folder."""
    folder = Path(folder)
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.glob("*/*.png"))}


# ----- seeds -----------------------------------------------------------------------------------------------------
def test_parse_seeds_edm_syntax():
    assert generate.parse_seeds("0-9,20,30-39") == list(range(10)) + [20] + list(range(30, 40))
    assert generate.parse_seeds(" 7 ") == [7]
    assert generate.parse_seeds("5, 3-4 ,100") == [5, 3, 4, 100]  # the order given
    assert generate.parse_seeds("1000000-1000001") == [1000000, 1000001]
    assert generate.format_seeds([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    seeds = [3, 4, 5, 9, 1, 2]
    assert generate.parse_seeds(generate.format_seeds(seeds)) == seeds


@pytest.mark.parametrize("text, expected", [
    ("", "expected comma-separated non-negative ints and inclusive ranges"),
    ("a", "'a' in 'a' is not an int or a range a-b"),
    ("1,,2", "'' in '1,,2' is not an int or a range"),
    ("-3", "'-3' in '-3' is not an int or a range"),
    ("1.5", "'1.5' in '1.5' is not an int"),
    ("9-3", "the range '9-3' in '9-3' runs backwards"),
    ("0-9,5", "seed 5 is listed twice in '0-9,5' (in '0-9' and '5')"),
    ("3,3", "seed 3 is listed twice"),
    ("0-10000000", "lists more than 10,000,000 seeds"),
    ("0-4,10-19,7-12", "seed 10 is listed twice in '0-4,10-19,7-12' (in '10-19' and '7-12')"),
    ("9223372036854775808", "beyond the largest seed 2^63 - 1"),
])
def test_bad_seeds_are_refused_naming_the_argument_and_value(text, expected, tmp_path, capsys):
    with pytest.raises(ValueError, match="^--seeds: ") as error:
        generate.parse_seeds(text)
    assert expected in str(error.value)
    assert gen("--seeds", text, "--outdir", tmp_path / "out") == 2
    assert "fastdiff generate: error: --seeds: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_batches_are_a_function_of_the_seed_list_and_batch_only():
    seeds = generate.parse_seeds("0-9,20")
    assert generate.make_batches(seeds, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 20]]


# ----- outputs ---------------------------------------------------------------------------------------------------
def test_png_output_equals_sampling_the_seeds_directly(models, tmp_path, capsys):
    seeds = [3, 4, 5, 6, 7, 8, 9, 1015]
    assert gen("--model", models["cond"], "--seeds", "3-9,1015", "--batch", 3, "--outdir", tmp_path / "out") == 0
    report = capsys.readouterr().out
    assert "8 images of seeds 3-9,1015: wrote 8, skipped 0 already made" in report and str(tmp_path / "out") in report
    expected = direct(models["cond"], seeds, batch=3)
    for seed, image in zip(seeds, expected):
        assert np.array_equal(read_png(png_path(tmp_path / "out", seed)), image)
    assert png_path(tmp_path / "out", 1015) == tmp_path / "out" / "001000" / "001015.png"
    settings = json.loads((tmp_path / "out" / "generate.json").read_text())
    assert settings["label_dim"] == 10 and settings["class"] is None and settings["class_rule"] == "seed % 10"
    assert settings["model"]["sha256"] == generate.file_sha256(models["cond"])
    assert settings["sampler"]["num_steps"] == 4 and settings["sampler"]["S_max"] == "inf"
    assert settings["guidance"] == 1.0 and settings["runs"][0]["batch"] == 3
    assert settings["runs"][0]["fastdiff"] == fastdiff.__version__
    images, labels, got_seeds = load_generated(tmp_path / "out")  # as fastdiff eval reads it
    assert got_seeds.tolist() == sorted(seeds) and labels.tolist() == [s % 10 for s in sorted(seeds)]
    assert np.array_equal(images, expected[np.argsort(seeds)])


def test_rgb_png_output(models, tmp_path):
    assert gen("--model", models["rgb"], "--seeds", "0-2", "--outdir", tmp_path / "out") == 0
    expected = direct(models["rgb"], [0, 1, 2])
    assert expected.shape == (3, 8, 8, 3)
    for seed in range(3):
        assert np.array_equal(read_png(png_path(tmp_path / "out", seed)), expected[seed])


def test_npz_output_equals_png_output(models, tmp_path):
    assert gen("--model", models["cond"], "--seeds", "12-15,0-5", "--batch", 4, "--outdir", tmp_path / "out") == 0
    assert gen("--model", models["cond"], "--seeds", "12-15,0-5", "--batch", 4, "--npz", tmp_path / "x.npz") == 0
    content = np.load(tmp_path / "x.npz")
    seeds = [12, 13, 14, 15, 0, 1, 2, 3, 4, 5]
    assert content["seeds"].tolist() == seeds and content["labels"].tolist() == [s % 10 for s in seeds]
    assert content["images"].dtype == np.uint8 and content["images"].shape == (10, 8, 8, 1)
    for seed, image in zip(seeds, content["images"]):
        assert np.array_equal(image, read_png(png_path(tmp_path / "out", seed)))
    assert json.loads(str(content["settings"]))["sampler"]["num_steps"] == 4
    assert not (tmp_path / ".x.npz.parts").exists()  # the parts go once the file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "x.npz"]  # no temporary file left


def test_unconditional_model_has_no_labels(models, tmp_path):
    assert gen("--model", models["uncond"], "--seeds", "0-3", "--npz", tmp_path / "u.npz") == 0
    content = np.load(tmp_path / "u.npz")
    assert "labels" not in content.files
    assert np.array_equal(content["images"], direct(models["uncond"], [0, 1, 2, 3]))


def test_default_model_is_the_shipped_digits(tmp_path, capsys):
    assert main(["generate", "--no-progress", "--steps", "2", "--seeds", "0-3", "--outdir", str(tmp_path / "d")]) == 0
    settings = json.loads((tmp_path / "d" / "generate.json").read_text())
    assert settings["model"]["source"] == "digits" and settings["label_dim"] == 10
    images, labels, seeds = load_generated(tmp_path / "d")
    assert images.shape == (4, 8, 8, 1) and labels.tolist() == [0, 1, 2, 3] and seeds.tolist() == [0, 1, 2, 3]


def test_progress_on_stderr_and_no_progress(models, tmp_path, capsys):
    assert main(["generate", *STEPS, "--model", models["cond"], "--seeds", "0-5", "--batch", "4",
                 "--outdir", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("[########################] 6/6 images ") and " img/s  ETA 0:00:00" in err[-1]
    assert gen("--model", models["cond"], "--seeds", "0-5", "--outdir", tmp_path / "b") == 0  # --no-progress
    assert capsys.readouterr().err == ""


# ----- resume ----------------------------------------------------------------------------------------------------
def test_resume_skips_written_images_and_redoes_a_truncated_one(models, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert gen("--model", models["cond"], "--seeds", "0-9", "--batch", 4, "--outdir", out) == 0
    first = pngs(out)
    png_path(out, 2).unlink()  # never written
    cut = png_path(out, 6)
    cut.write_bytes(first["000000/000006.png"][:-12])  # killed before its last chunk: decodes, but not whole
    png_path(out, 7).write_bytes(first["000000/000007.png"][:40])  # killed mid-way
    (png_path(out, 0).parent / ".000003.png.tmp-99999").write_bytes(b"partial")  # a killed run's temporary file
    written = []
    real = generate.write_png
    monkeypatch.setattr(generate, "write_png", lambda path, image: (written.append(Path(path).name), real(path, image)))
    capsys.readouterr()
    assert gen("--model", models["cond"], "--seeds", "0-9", "--batch", 4, "--outdir", out) == 0
    captured = capsys.readouterr()
    assert sorted(written) == ["000002.png", "000006.png", "000007.png"]
    assert "wrote 3 (2 of them redone, unreadable before), skipped 7 already made" in captured.out
    assert "2 PNG files are unreadable" in captured.err and "6-7" in captured.err
    assert pngs(out) == first  # the redone images are the very bytes of the first run
    assert not list(out.glob("*/.*"))
    assert len(json.loads((out / "generate.json").read_text())["runs"]) == 2
    written.clear()
    assert gen("--model", models["cond"], "--seeds", "0-9", "--batch", 4, "--outdir", out) == 0
    assert written == [] and "wrote 0, skipped 10 already made" in capsys.readouterr().out


def test_npz_resumes_from_its_parts_and_keeps_them_when_assembly_fails(models, tmp_path, monkeypatch, capsys):
    target = tmp_path / "x.npz"

    def fail(job):
        raise OSError("injected: disk full while assembling")

    monkeypatch.setattr(generate, "assemble_npz", fail)
    assert gen("--model", models["cond"], "--seeds", "0-9", "--batch", 4, "--npz", target) == 2
    assert "injected" in capsys.readouterr().err and not target.exists()
    parts = sorted((tmp_path / ".x.npz.parts").glob("part-*.npz"))
    assert len(parts) == 3  # the work done is kept
    parts[1].write_bytes(parts[1].read_bytes()[:100])  # and a damaged part is made again
    monkeypatch.undo()
    calls = []
    real = generate.Job.images
    monkeypatch.setattr(generate.Job, "images", lambda self, seeds, device: (calls.append(list(seeds)),
                                                                             real(self, seeds, device))[1])
    assert gen("--model", models["cond"], "--seeds", "0-9", "--batch", 4, "--npz", target) == 0
    assert calls == [[4, 5, 6, 7]] and "wrote 4, skipped 6 already made" in capsys.readouterr().out
    content = np.load(target)
    assert content["seeds"].tolist() == list(range(10))
    assert np.array_equal(content["images"], direct(models["cond"], list(range(10)), batch=4))
    calls.clear()
    assert gen("--model", models["cond"], "--seeds", "0-9", "--batch", 4, "--npz", target) == 0  # done: nothing to do
    assert calls == [] and np.array_equal(np.load(target)["images"], content["images"])


# ----- settings checks -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, named", [
    (["--steps", "5"], "sampler.num_steps: 4 there, 5 now"),
    (["--class", "3"], 'class: null there, 3 now'),
    (["--guidance", "2"], "guidance: 1.0 there, 2.0 now"),
    (["--S-churn", "1"], "sampler.S_churn: 0.0 there, 1.0 now"),
    (["--model", "other"], "model_sha256"),
])
def test_rerun_with_other_settings_is_refused_unless_overwrite(models, tmp_path, capsys, change, named):
    out = tmp_path / "out"
    assert gen("--model", models["cond"], "--seeds", "0-3", "--outdir", out) == 0
    before = pngs(out)
    change = [models["other"] if c == "other" else c for c in change]
    capsys.readouterr()
    assert gen("--model", models["cond"], "--seeds", "0-3", "--outdir", out, *change) == 2
    err = capsys.readouterr().err
    assert f"fastdiff generate: error: --outdir: {out} holds images made with other settings" in err and named in err
    assert pngs(out) == before
    assert gen("--model", models["cond"], "--seeds", "0-1", "--outdir", out, *change, "--overwrite") == 0
    assert sorted(pngs(out)) == ["000000/000000.png", "000000/000001.png"]  # the old images went, all of them
    assert "--overwrite: deleted 4 images written before" in capsys.readouterr().err


def test_other_batch_size_is_no_other_setting(models, tmp_path, capsys):
    out = tmp_path / "out"
    assert gen("--model", models["cond"], "--seeds", "0-3", "--batch", 2, "--outdir", out) == 0
    assert gen("--model", models["cond"], "--seeds", "0-5", "--batch", 3, "--outdir", out) == 0
    captured = capsys.readouterr()
    assert "earlier runs into" in captured.err and "--batch [2]" in captured.err
    assert "wrote 2, skipped 4" in captured.out


def test_npz_of_other_settings_is_refused(models, tmp_path, capsys, monkeypatch):
    target = tmp_path / "x.npz"
    assert gen("--model", models["cond"], "--seeds", "0-3", "--npz", target) == 0
    assert gen("--model", models["cond"], "--seeds", "0-3", "--npz", target, "--steps", "3") == 2
    assert f"--npz: {target} exists and holds other settings" in capsys.readouterr().err
    np.savez(tmp_path / "plain.npz", images=np.zeros((1, 8, 8, 1), np.uint8))
    assert gen("--model", models["cond"], "--seeds", "0-3", "--npz", tmp_path / "plain.npz") == 2
    assert "holds no settings of fastdiff generate" in capsys.readouterr().err
    monkeypatch.setattr(generate, "assemble_npz", lambda job: None)  # parts of an unfinished run stay
    assert gen("--model", models["cond"], "--seeds", "0-3", "--npz", tmp_path / "y.npz") == 0
    monkeypatch.undo()
    assert gen("--model", models["cond"], "--seeds", "0-3", "--npz", tmp_path / "y.npz", "--class", "1") == 2
    assert "holds the unfinished parts of a run with other settings" in capsys.readouterr().err
    assert gen("--model", models["cond"], "--seeds", "0-3", "--npz", tmp_path / "y.npz", "--class", "1",
               "--overwrite") == 0
    assert np.load(tmp_path / "y.npz")["labels"].tolist() == [1, 1, 1, 1]


def test_folder_of_foreign_pngs_is_refused(models, tmp_path, capsys):
    (tmp_path / "out" / "000000").mkdir(parents=True)
    (tmp_path / "out" / "000000" / "000001.png").write_bytes(b"not ours")
    assert gen("--model", models["cond"], "--seeds", "0-3", "--outdir", tmp_path / "out") == 2
    assert "holds 1 PNG files in the generate layout but no generate.json" in capsys.readouterr().err


@pytest.mark.parametrize("args, expected", [
    (["--outdir", "{tmp}/x.npz"], "--outdir: '{tmp}/x.npz' names a .npz file, but --outdir is the folder of PNG"),
    (["--npz", "{tmp}/x.png"], "--npz: expected a file name ending in .npz, got '{tmp}/x.png'"),
    (["--outdir", "{tmp}/o", "--batch", "0"], "--batch: expected an int >= 1, got 0"),
    (["--outdir", "{tmp}/o", "--batch", "x"], "--batch: expected an int >= 1, got 'x'"),
    (["--outdir", "{tmp}/o", "--steps", "0"], "--steps: expected an int >= 1, got 0"),
    (["--outdir", "{tmp}/o", "--S-churn", "-1"], "--S-churn: must be >= 0.0, got -1.0"),
    (["--outdir", "{tmp}/o", "--S-min", "2", "--S-max", "1"], "--S-min: must not exceed --S-max (churn applies to --S-min <= t <= --S-max), got --S-min=2.0"),
    (["--outdir", "{tmp}/o", "--device", "cuda:7"], "--device: "),
    (["--outdir", "{tmp}/o", "--class", "10"], "--class: expected a class in 0..9 (the model's label_dim is 10), "
                                               "got 10"),
    (["--outdir", "{tmp}/o", "--class", "-1"], "--class: expected an int >= 0, got -1"),
    (["--outdir", "{tmp}/o", "--guidance", "nan"], "--guidance: expected a finite number, got 'nan'"),
    (["--outdir", "{tmp}/o", "--model", "uncond", "--class", "1"], "--class: the model "),
    (["--outdir", "{tmp}/o", "--model", "uncond", "--guidance", "2"], "--guidance: classifier-free guidance needs a "
                                                                        "class-conditional model"),
    (["--outdir", "{tmp}/o", "--model", "{tmp}/missing.pt"], "--model: '{tmp}/missing.pt' is neither"),
    (["--outdir", "{tmp}/o", "--backend", "cuda"], "backend='cuda' cannot run"),
])
def test_bad_options_are_refused_naming_them(models, tmp_path, capsys, args, expected):
    args = [a.format(tmp=tmp_path) for a in args]
    args = ["--model", models["cond"], *[models["uncond"] if a == "uncond" else a for a in args]]
    assert gen("--seeds", "0-3", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastdiff generate: error: ") and expected.format(tmp=tmp_path) in err, err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("*.npz"))


def test_class_and_guidance(models, tmp_path):
    assert gen("--model", models["cond"], "--seeds", "0-5", "--class", 7, "--guidance", 2.5, "--npz",
               tmp_path / "g.npz") == 0
    content = np.load(tmp_path / "g.npz")
    assert content["labels"].tolist() == [7] * 6
    assert np.array_equal(content["images"], direct(models["cond"], list(range(6)), classes=7, guidance=2.5))
    assert not np.array_equal(content["images"], direct(models["cond"], list(range(6)), classes=7))  # w matters
    settings = json.loads(str(content["settings"]))
    assert settings["class"] == 7 and settings["class_rule"] == "every image class 7" and settings["guidance"] == 2.5


# ----- determinism -----------------------------------------------------------------------------------------------
def test_batch_size_changes_images_by_at_most_one_level(models, tmp_path):
    """A sample's network output is not bitwise independent of its batch on torch's CPU kernels: Linear and Conv2d
    pick their GEMM blocking by the batch size, which changes float32 rounding (~1e-7 relative per layer, a few 1e-7
    after a sampling run). So images are a fixed function of the seed list and --batch (batches are consecutive
    chunks of it), and a different --batch may move a pixel by one level where it lies on a rounding boundary."""
    net = fastdiff.load_model(models["cond"])
    x, sigma, labels = randn(list(range(13)), (13, 1, 8, 8)) * 3, torch.full((13,), 3.0), torch.arange(13) % 10
    whole = net(x, sigma, labels)
    single = torch.cat([net(x[i:i + 1], sigma[i:i + 1], labels[i:i + 1]) for i in range(13)])
    assert torch.allclose(single, whole, rtol=0, atol=1e-5)  # rounding only
    images = {}
    for batch in (1, 4, 13):
        out = tmp_path / f"b{batch}"
        assert gen("--model", models["cond"], "--seeds", "0-12", "--batch", batch, "--S-churn", 5, "--guidance", 1.5,
                   "--outdir", out) == 0
        images[batch] = load_generated(out)[0].astype(np.int64)
        assert np.array_equal(images[batch], direct(models["cond"], list(range(13)), batch=batch, S_churn=5,
                                                    guidance=1.5)[np.argsort(range(13))])
    for batch in (4, 13):
        assert np.abs(images[batch] - images[1]).max() <= 1
        assert (images[batch] != images[1]).mean() < 0.01


def test_torchrun_two_processes_write_the_bytes_of_one(models, tmp_path):
    """2 gloo processes under torchrun (each its own batches, round-robin) write exactly the files 1 process writes;
    and a rerun under torchrun into a partly written folder makes only what is missing, the same bytes again."""
    args = ["--model", models["cond"], "--seeds", "0-10,20", "--batch", "3", "--S-churn", "2", "--no-progress", *STEPS]
    with torch_threads(2):  # this process with 2 threads, the ranks with 1 each
        assert main(["generate", *args, "--outdir", str(tmp_path / "one")]) == 0
    first = pngs(tmp_path / "one")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "fastdiff", "generate", *args]
    done = subprocess.run([*torchrun, "--outdir", str(tmp_path / "two")], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("fastdiff generate:") == 1 and "2 processes" in done.stdout  # rank 0 reports, once
    assert "wrote 12, skipped 0" in done.stdout
    assert pngs(tmp_path / "two") == first and len(first) == 12
    settings = json.loads((tmp_path / "two" / "generate.json").read_text())
    assert settings["runs"][0]["processes"] == 2
    png_path(tmp_path / "one", 5).unlink()
    png_path(tmp_path / "one", 9).write_bytes(b"\x89PNG\r\n\x1a\n")
    resumed = subprocess.run([*torchrun, "--outdir", str(tmp_path / "one")], capture_output=True, text=True,
                             timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "wrote 2 (1 of them redone, unreadable before), skipped 10" in resumed.stdout
    assert pngs(tmp_path / "one") == first


def test_torchrun_npz_equals_one_process(models, tmp_path):
    """The .npz under torchrun: each rank writes its batches' parts, rank 0 assembles them after a barrier."""
    args = ["--model", models["cond"], "--seeds", "20-30,0-3", "--batch", "4", "--guidance", "2", "--no-progress",
            *STEPS]
    assert main(["generate", *args, "--npz", str(tmp_path / "one.npz")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "fastdiff", "generate", *args, "--npz", str(tmp_path / "two.npz")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote 15, skipped 0" in done.stdout and "2 processes" in done.stdout
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert sorted(two.files) == ["images", "labels", "seeds", "settings"]
    for key in ("images", "labels", "seeds", "settings"):
        assert np.array_equal(one[key], two[key]), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.npz", "two.npz"]
