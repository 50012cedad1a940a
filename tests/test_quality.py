"""fastdiff.quality: the shipped digits classifier (its file, its held-out accuracy), FD-digits (against scipy's
sqrtm and on known cases), its floor, class accuracy, evaluate() on either image format, and `fastdiff eval` on
files and on a model. Nothing here depends on how good the shipped digits model is."""
import json
import re

import numpy as np
import pytest
import torch

from fastdiff import cli, quality
from fastdiff.imagefiles import png_path, save_npz, to_uint8, write_png

sklearn = pytest.importorskip("sklearn")
scipy_linalg = pytest.importorskip("scipy.linalg")


@pytest.fixture(scope="module")
def real():
    from fastdiff.data import digits

    data = digits()
    return data.data.float(), data.labels


@pytest.fixture(scope="module")
def classifier():
    return quality.load_classifier()


def random_stats(d, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, 2 * d, generator=g, dtype=torch.float64)
    return torch.randn(d, generator=g, dtype=torch.float64), a @ a.T / (2 * d)


# ---------------------------------------------------------------------------------------------------- the file

def test_classifier_file_loads_with_weights_only_and_holds_the_statistics():
    path = quality.CLASSIFIER_FILE
    assert path.stat().st_size < 1_000_000
    state = torch.load(path, weights_only=True)
    assert state["format"] == quality.CLASSIFIER_FORMAT
    features = state["config"]["features"]
    assert state["reference"]["mean"].shape == (features,) and state["reference"]["mean"].dtype == torch.float64
    assert state["reference"]["cov"].shape == (features, features)
    assert torch.allclose(state["reference"]["cov"], state["reference"]["cov"].T)
    assert state["reference"]["n"] == 1797
    for kind in ("iid", "balanced"):
        table = state["floors"][kind]
        assert table["n"].tolist() == list(quality.FLOOR_SIZES)
        assert bool((table["mean"] > 0).all()) and bool((table["mean"][1:] < table["mean"][:-1]).all())
    assert bool((state["floors"]["balanced"]["mean"] < state["floors"]["iid"]["mean"]).all())


def test_heldout_accuracy_is_recorded_and_recomputes(real, classifier):
    images, labels = real
    assert classifier.heldout_accuracy >= 0.95
    held = classifier.info["heldout_indices"].long()
    assert held.tolist() == quality.holdout_split(len(images))[1].tolist()  # the split the recipe says
    predicted = quality.predict(images[held], classifier)
    assert float((predicted == labels[held]).double().mean()) == classifier.heldout_accuracy


def test_reference_statistics_are_those_of_the_real_digits(real, classifier):
    mean, cov = quality.statistics_of(quality.features(real[0], classifier))
    assert torch.allclose(mean, classifier.reference["mean"], rtol=1e-5, atol=1e-5)
    assert torch.allclose(cov, classifier.reference["cov"], rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------------ the measures

@pytest.mark.parametrize("d", [1, 5, 64])
def test_frechet_distance_matches_scipy_sqrtm(d):
    mu1, s1 = random_stats(d, 1)
    mu2, s2 = random_stats(d, 2)
    covmean = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float(((mu1 - mu2) ** 2).sum()) + float(np.trace(s1.numpy() + s2.numpy() - 2 * covmean))
    assert quality.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8, abs=1e-9)


def test_frechet_distance_known_cases():
    mu, s = random_stats(16, 3)
    assert quality.frechet_distance(mu, s, mu, s) == pytest.approx(0, abs=1e-9)
    shift = torch.linspace(-1, 2, 16, dtype=torch.float64)
    assert quality.frechet_distance(mu, s, mu + shift, s) == pytest.approx(float((shift ** 2).sum()), rel=1e-9)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2
    assert quality.frechet_distance([0.0], [[4.0]], [1.0], [[9.0]]) == pytest.approx(1 + 1, rel=1e-12)
    # a singular covariance (fewer samples than dimensions) is fine
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    value = quality.frechet_distance(*quality.statistics_of(x), mu, s)
    assert np.isfinite(value) and value > 0


def test_frechet_distance_refuses_mismatched_shapes():
    mu, s = random_stats(4, 0)
    with pytest.raises(ValueError, match=r"sigma2: expected a 4x4 covariance.*got shape \(3, 3\)"):
        quality.frechet_distance(mu, s, mu, s[:3, :3])
    with pytest.raises(ValueError, match=r"mu2: expected a mean of dimension 4.*\(5,\)"):
        quality.frechet_distance(mu, s, torch.zeros(5), s)


def test_real_digits_score_about_the_floor_and_noise_far_above(real, classifier):
    images, labels = real
    g = torch.Generator().manual_seed(123)  # not the table's seed
    n = 500
    values = [quality.fd_digits(images[torch.randint(len(images), (n,), generator=g)], classifier) for _ in range(5)]
    floor = quality.fd_floor(n, classifier)
    assert 0.5 * floor < float(np.mean(values)) < 1.5 * floor, (values, floor)
    assert quality.fd_digits(images, classifier) == pytest.approx(0, abs=1e-6)  # the reference itself
    noise = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
    assert quality.fd_digits(noise, classifier) > 20 * floor


def test_floor_table_interpolates_in_one_over_n(classifier):
    table = classifier.floors["iid"]
    for n, mean in zip(table["n"].tolist(), table["mean"].tolist()):
        assert quality.fd_floor(n, classifier) == mean
    a, b = quality.fd_floor(200, classifier), quality.fd_floor(500, classifier)
    assert b < quality.fd_floor(300, classifier) < a
    assert quality.fd_floor(5, classifier) == pytest.approx(2 * quality.fd_floor(10, classifier))
    assert quality.fd_floor(100, classifier, balanced=True) < quality.fd_floor(100, classifier)
    with pytest.raises(ValueError, match=r"n: expected an int >= 2.*got 1"):
        quality.fd_floor(1, classifier)


def test_class_accuracy_on_real_digits(real, classifier):
    images, labels = real
    assert quality.class_accuracy(images, labels, classifier) >= 0.95
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    assert 0.05 < quality.class_accuracy(images, shuffled, classifier) < 0.15


def test_evaluate_gives_the_same_on_uint8_and_float(real, classifier):
    images, labels = real
    pixels = to_uint8(images[:300])
    floats = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1
    a = quality.evaluate(pixels, labels[:300], classifier)
    b = quality.evaluate(floats, labels[:300].numpy(), classifier)
    c = quality.evaluate(pixels.numpy(), labels[:300], classifier)
    assert a == b == c
    assert a["n"] == 300 and a["fd_digits"] >= 0 and 0 <= a["accuracy"] <= 1
    assert sorted(a["per_class"]) == [str(k) for k in range(10)] and sum(a["per_class_count"].values()) == 300
    assert a["floor_draws"] == ("balanced" if quality.is_balanced(labels[:300]) else "iid")
    assert quality.evaluate(pixels, None, classifier)["floor_draws"] == "iid"
    assert "accuracy" not in quality.evaluate(pixels, None, classifier)


def test_balanced_labels_get_the_balanced_floor(real, classifier):
    images, labels = real
    by_class = [torch.nonzero(labels == k).flatten()[:20] for k in range(10)]
    pick = torch.cat(by_class)
    result = quality.evaluate(images[pick], labels[pick], classifier)
    assert result["floor_draws"] == "balanced"
    assert result["fd_floor"] == quality.fd_floor(200, classifier, balanced=True)


@pytest.mark.parametrize("images, error, message", [
    (torch.zeros(4, 3, 8, 8), ValueError, r"images: the digits classifier is for 8x8 grayscale digits.*\(4, 3, 8, 8\)"),
    (torch.zeros(4, 1, 28, 28), ValueError, r"8x8 grayscale digits.*float \[N, 1, 8, 8\].*\(4, 1, 28, 28\)"),
    (torch.zeros(4, 8, 8, 3, dtype=torch.uint8), ValueError, r"8x8 grayscale.*uint8 \[N, 8, 8, 1\].*\(4, 8, 8, 3\)"),
    (torch.zeros(4, 1, 8, 8, dtype=torch.uint8), ValueError, r"uint8 \[N, 8, 8, 1\].*torch.uint8 of shape \(4, 1, 8, 8\)"),
    (torch.zeros(4, 1, 8, 8, dtype=torch.int32), TypeError, r"images: expected .* got dtype torch.int32"),
    ([[0.0]], TypeError, r"images: expected a tensor or numpy array.*got list"),
    (torch.full((4, 1, 8, 8), float("nan")), ValueError, r"images: 256 of its 256 values are NaN or infinite"),
])
def test_bad_images_are_refused_clearly(classifier, images, error, message):
    with pytest.raises(error, match=message):
        quality.evaluate(images, None, classifier)


def test_bad_labels_and_sizes_are_refused_clearly(real, classifier):
    images = real[0][:10]
    with pytest.raises(ValueError, match=r"labels: expected one class label per image, shape \(10,\), got shape \(9,\)"):
        quality.class_accuracy(images, torch.zeros(9, dtype=torch.int64), classifier)
    with pytest.raises(ValueError, match=r"labels: expected class labels 0..9 \(the digits\), got 10"):
        quality.class_accuracy(images, torch.full((10,), 10), classifier)
    with pytest.raises(TypeError, match=r"labels: expected integer class labels 0..9, got dtype torch.float32"):
        quality.class_accuracy(images, torch.zeros(10), classifier)
    with pytest.raises(ValueError, match=r"images: FD-digits needs at least 2 images .*got 1"):
        quality.fd_digits(images[:1], classifier)
    with pytest.raises(TypeError, match=r"classifier: expected None .* got int"):
        quality.fd_digits(images, 3)


def test_a_file_that_is_not_a_classifier_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "something else"}, path)
    with pytest.raises(ValueError, match=r"classifier: .*other.pt is not a fastdiff digits-classifier file"):
        quality.load_classifier(path)
    with pytest.raises(FileNotFoundError, match=r"classifier: .*missing.pt' does not exist"):
        quality.load_classifier(tmp_path / "missing.pt")


def test_training_is_seeded_and_learns(real):
    images, labels = real
    kwargs = dict(epochs=10, channels=8, features=16)
    a, result_a = quality.train_classifier(images[:400], labels[:400], **kwargs)
    b, result_b = quality.train_classifier(images[:400], labels[:400], **kwargs)
    assert result_a["heldout_indices"].tolist() == quality.holdout_split(400)[1].tolist()
    assert len(result_a["heldout_indices"]) == 80
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert result_a["heldout_accuracy"] > 0.3  # far above chance (0.1) after ten short epochs


def test_shift_batch_moves_whole_pixels():
    x = torch.full((64, 1, 8, 8), -1.0)
    x[:, 0, 3, 4] = 1.0
    moved = quality.shift_batch(x, torch.Generator().manual_seed(0))
    where = torch.nonzero(moved[:, 0] == 1.0)
    assert len(where) == 64 and set(where[:, 1].tolist()) == {2, 3, 4} and set(where[:, 2].tolist()) == {3, 4, 5}
    assert bool(((moved == 1) | (moved == -1)).all())


# ------------------------------------------------------------------------------------------------ fastdiff eval

def run_eval(argv, capsys):
    code = cli.main(["eval", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def parse_output(out):
    fd = float(re.search(r"FD-digits ([0-9.]+) \(floor", out).group(1))
    floor = float(re.search(r"at the same n: ([0-9.]+) \+-", out).group(1))
    n = int(re.search(r"^  n (\d+)$", out, re.M).group(1))
    accuracy = re.search(r"class accuracy ([0-9.]+)", out)
    return n, fd, floor, None if accuracy is None else float(accuracy.group(1))


def test_eval_images_npz(real, tmp_path, capsys, classifier):
    images, labels = real
    pixels = to_uint8(images[:200])
    save_npz(tmp_path / "x.npz", pixels, np.arange(200), labels[:200].numpy())
    code, out, err = run_eval(["--images", str(tmp_path / "x.npz"), "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    n, fd, floor, accuracy = parse_output(out)
    expected = quality.evaluate(pixels, labels[:200], classifier)
    assert n == 200 and fd == pytest.approx(expected["fd_digits"], abs=1e-4) and accuracy >= 0.95
    assert floor == pytest.approx(expected["fd_floor"], abs=1e-4)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["fd_digits"] == expected["fd_digits"] and saved["accuracy"] == expected["accuracy"]


def test_eval_images_png_folder(real, tmp_path, capsys, classifier):
    images, labels = real
    seeds = np.arange(40)
    chosen = torch.cat([torch.nonzero(labels == k).flatten()[:4] for k in range(10)])  # 4 of each digit, in order
    by_seed = chosen.reshape(10, 4).T.reshape(-1)  # seed s shows a digit of class s % 10
    pixels = to_uint8(images[by_seed])
    for seed, image in zip(seeds, pixels):
        png_path(tmp_path, int(seed)).parent.mkdir(parents=True, exist_ok=True)
        write_png(png_path(tmp_path, int(seed)), image)
    (tmp_path / "generate.json").write_text(json.dumps({"label_dim": 10, "class": None}))
    code, out, err = run_eval(["--images", str(tmp_path)], capsys)
    assert code == 0, err
    n, fd, floor, accuracy = parse_output(out)
    assert n == 40 and accuracy == quality.class_accuracy(pixels, seeds % 10, classifier) >= 0.95
    assert "balanced real digits" in out
    (tmp_path / "generate.json").write_text(json.dumps({"label_dim": 0, "class": None}))
    code, out, err = run_eval(["--images", str(tmp_path)], capsys)
    assert code == 0 and parse_output(out)[3] is None and "(no class labels)" in out


def test_eval_errors_exit_2_with_a_message(tmp_path, capsys):
    code, out, err = run_eval(["--images", str(tmp_path / "nothing.npz")], capsys)
    assert code == 2 and "fastdiff eval: error: images:" in err
    save_npz(tmp_path / "rgb.npz", np.zeros((3, 8, 8, 3), dtype=np.uint8), np.arange(3))
    code, out, err = run_eval(["--images", str(tmp_path / "rgb.npz")], capsys)
    assert code == 2 and "8x8 grayscale digits" in err and "(3, 8, 8, 3)" in err
    save_npz(tmp_path / "one.npz", np.zeros((1, 8, 8, 1), dtype=np.uint8), np.arange(1))
    code, out, err = run_eval(["--images", str(tmp_path / "one.npz")], capsys)
    assert code == 2 and "at least 2 images" in err
    code, out, err = run_eval(["--model", "digits", "--num-samples", "0"], capsys)
    assert code == 2 and "--num-samples: expected >= 2 (FD-digits fits a covariance), got 0" in err
    with pytest.raises(SystemExit):
        cli.main(["eval"])  # --images or --model is required (argparse's usage error)


def test_eval_model_samples_and_scores(tmp_path, capsys):
    code, out, err = run_eval(["--model", "digits", "--num-samples", "20", "--steps", "3", "--batch", "8",
                               "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    n, fd, floor, accuracy = parse_output(out)
    assert n == 20 and fd >= 0 and floor > 0 and 0 <= accuracy <= 1
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["solver"] == "heun" and saved["steps"] == 3 and saved["n"] == 20
    assert saved["floor_draws"] == "balanced" and sum(saved["per_class_count"].values()) == 20


def test_sample_model_is_batch_independent():
    import fastdiff

    net = fastdiff.pretrained("digits")
    a, labels, seeds = quality.sample_model(net, 6, seed=3, num_steps=8, batch=6)
    b, _, _ = quality.sample_model(net, 6, seed=3, num_steps=8, batch=4)
    assert labels.tolist() == [3, 4, 5, 6, 7, 8] and seeds.tolist() == list(range(3, 9))
    # The same seeds and classes whatever the batch; the network's float32 rounding may differ with the batch size
    # (docs/generate.md#determinism), by about 1e-6 of the images' scale here; another seed moves them by 0.1 or more.
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    c, other_labels, _ = quality.sample_model(net, 6, seed=13, num_steps=8, batch=6)
    assert torch.equal(other_labels, labels) and (a - c).abs().max() > 0.1 * a.abs().max()  # other seeds, same classes
    with pytest.raises(ValueError, match=r"num_samples: expected an int >= 1, got 0"):
        quality.sample_model(net, 0)
