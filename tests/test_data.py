"""fastdiff.data: the built-in data sets (determinism, shapes, statistics), the file loaders and their errors.

Pillow and scikit-learn are test dependencies (setup.py's "test" extra), so these tests never skip.
"""
import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fastdiff
from fastdiff import data
from fastdiff.data import Dataset

GENERATED = {"mixture": data.gaussian_mixture, "moons": data.two_moons, "swiss_roll": data.swiss_roll,
             "checkerboard": data.checkerboard}


def mean_and_se(values: torch.Tensor):
    """Sample mean over dim 0 and its standard error."""
    values = values.to(torch.float64)
    return values.mean(0), values.std(0) / math.sqrt(values.shape[0])


def within(estimate, standard_error, expected, name, k=5.0):
    """Assert |estimate - expected| <= k standard errors, elementwise."""
    estimate, expected = torch.as_tensor(estimate, dtype=torch.float64), torch.as_tensor(expected, dtype=torch.float64)
    bound = k * torch.as_tensor(standard_error, dtype=torch.float64)
    assert bool(((estimate - expected).abs() <= bound).all()), \
        f"{name}: {estimate.tolist()} vs {expected.tolist()}, bound {bound.tolist()}"


def mean_near(values: torch.Tensor, expected, name, k=5.0):
    """Assert the sample mean of values (over dim 0) is within k standard errors of expected."""
    within(*mean_and_se(values), expected, name, k)


# ----------------------------------------------------------------------------------------------------- Dataset


def test_dataset_holds_float32_and_int64_and_answers_shape_questions():
    ds = Dataset(torch.zeros(5, 3, 4, 4, dtype=torch.float64), np.arange(5, dtype=np.int32) % 2, name="toy")
    assert ds.data.dtype == torch.float32 and ds.labels.dtype == torch.int64
    assert (len(ds), ds.shape, ds.is_image, ds.num_classes) == (5, (3, 4, 4), True, 2)
    points = Dataset(np.ones((7, 2), dtype=np.float32))
    assert (points.shape, points.is_image, points.labels, points.num_classes) == ((2,), False, None, None)
    assert repr(ds) == "Dataset('toy': 5 images of shape 3x4x4, 2 classes)"
    assert "unlabelled" in repr(points)


def test_dataset_batch_returns_rows_and_labels():
    ds = Dataset(torch.arange(12.0).reshape(6, 2), torch.tensor([0, 1, 2, 0, 1, 2]), num_classes=4)
    x, y = ds.batch(torch.tensor([5, 0, 5]))
    assert x.tolist() == [[10.0, 11.0], [0.0, 1.0], [10.0, 11.0]] and y.tolist() == [2, 0, 2]
    assert ds.num_classes == 4
    x, y = Dataset(torch.ones(3, 2)).batch(torch.randint(0, 3, (8,), dtype=torch.int32))
    assert x.shape == (8, 2) and y is None
    with pytest.raises(IndexError, match=r"indices: expected values in \[0, 6\), got min 0 and max 6"):
        ds.batch(torch.tensor([0, 6]))
    with pytest.raises(TypeError, match="indices: expected a 1-D integer tensor"):
        ds.batch(torch.tensor([0.0]))
    with pytest.raises(TypeError, match="indices: expected a 1-D integer tensor"):
        ds.batch([0, 1])
    assert ds.to("cpu") is ds
    moved = ds.to("meta")
    assert moved.data.device.type == moved.labels.device.type == "meta" and ds.data.device.type == "cpu"
    assert moved.num_classes == 4 and moved.batch(torch.tensor([1]))[0].shape == (1, 2)  # CPU indices are moved


def test_dataset_takes_read_only_and_big_endian_numpy_arrays():
    array = np.arange(6, dtype=">f8").reshape(3, 2)
    array.flags.writeable = False
    labels = np.array([0, 1, 1], dtype=">i2")
    ds = Dataset(array, labels)
    assert ds.data.tolist() == [[0, 1], [2, 3], [4, 5]] and ds.labels.tolist() == [0, 1, 1]
    with pytest.raises(TypeError, match="data: expected floating-point values, got a numpy array of dtype <U1"):
        Dataset(np.array([["a"]]))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(data=torch.tensor([[0.0, float("nan")]])), ValueError, r"data: expected finite values, found 1 NaN or inf \(the first at index \(0, 1\)"),
    (dict(data=torch.tensor([[1e39]], dtype=torch.float64)), ValueError, "data: expected finite values.*after conversion to float32"),
    (dict(data=torch.zeros(2, 2, dtype=torch.uint8)), TypeError, "data: expected floating-point values.*got torch.uint8"),
    (dict(data=torch.zeros(4)), ValueError, r"data: expected points \[N, d\] or images \[N, C, H, W\] with N >= 1, got shape \(4,\)"),
    (dict(data=torch.zeros(0, 2)), ValueError, r"with N >= 1, got shape \(0, 2\)"),
    (dict(data=[[0.0]]), TypeError, "data: expected a torch.Tensor or numpy array, got list"),
    (dict(data=torch.zeros(3, 2), labels=torch.tensor([0, 1])), ValueError, r"labels: expected shape \(3,\), one label per item of data, got \(2,\)"),
    (dict(data=torch.zeros(2, 2), labels=torch.tensor([0.0, 1.0])), TypeError, "labels: expected an integer tensor"),
    (dict(data=torch.zeros(2, 2), labels=torch.tensor([0, 3]), num_classes=3), ValueError, r"labels: expected values in \[0, num_classes\) = \[0, 3\), got min 0 and max 3"),
    (dict(data=torch.zeros(2, 2), labels=torch.tensor([-1, 0])), ValueError, "labels: expected values in .*got min -1"),
    (dict(data=torch.zeros(2, 2), num_classes=3), ValueError, "num_classes: given without labels"),
    (dict(data=torch.zeros(2, 2), labels=torch.tensor([0, 1]), class_names=["a"]), ValueError, "labels: expected values in .*0, 1"),
    (dict(data=torch.zeros(2, 2), labels=torch.tensor([0, 1]), num_classes=3, class_names=["a", "b"]), ValueError, "class_names: expected 3 names"),
    (dict(data=torch.zeros(2, 2), name=3), TypeError, "name: expected a str"),
    (dict(data=torch.zeros(2, 2), mixture="ring"), TypeError, "mixture: expected a fastdiff.GaussianMixture"),
])
def test_dataset_rejects_bad_arguments_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        Dataset(**kwargs)


# ------------------------------------------------------------------------------------------ generated data sets


@pytest.mark.parametrize("name", GENERATED)
def test_generated_sets_are_deterministic_per_seed_and_leave_the_global_rng_alone(name):
    make = GENERATED[name]
    state = torch.random.get_rng_state()
    a, b, c = make(n=512, seed=7), make(n=512, seed=7), make(n=512, seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.data, b.data) and not torch.equal(a.data, c.data)
    assert (a.labels is None) == (b.labels is None) and (a.labels is None or torch.equal(a.labels, b.labels))
    assert a.data.shape == (512, 2) and a.data.dtype == torch.float32 and a.name == name
    assert len(make()) == data.DEFAULT_N == 8192


@pytest.mark.parametrize("name", GENERATED)
def test_generated_sets_check_their_arguments(name):
    with pytest.raises(ValueError, match="n: must be >= 1, got 0"):
        GENERATED[name](n=0)
    with pytest.raises(TypeError, match="seed: expected an int, got 1.5"):
        GENERATED[name](seed=1.5)


def test_mixture_matches_its_exact_moments_and_density():
    mixture = fastdiff.GaussianMixture.ring()
    ds = data.gaussian_mixture(n=20000, seed=1)
    assert ds.mixture is not None and torch.equal(ds.mixture.means, mixture.means) and ds.num_classes == 8
    x = ds.data.to(torch.float64)
    w, mu, s = ds.mixture.weights, ds.mixture.means, ds.mixture.stds
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (mu[:, :, None] * mu[:, None, :] + (s**2)[:, None, None] * torch.eye(2))).sum(0)
    mean_near(x, mean, "mean")
    mean_near(x[:, :, None] * x[:, None, :], second, "second moment")
    # the labels are the components: (x - mu_label) / s_label is standard normal in 2-D
    z2 = ((x - mu[ds.labels]) ** 2).sum(1) / s[ds.labels] ** 2
    mean_near(z2, 2.0, "chi-square(2) mean")
    mean_near(torch.nn.functional.one_hot(ds.labels, 8).double(), w, "component frequencies")
    # mean log-density under the exact density: that of exact draws
    exact = mixture.sample(20000, generator=torch.Generator().manual_seed(123))
    expected, se_exact = mean_and_se(mixture.log_prob(exact))
    got, se_got = mean_and_se(ds.mixture.log_prob(x))
    within(got, math.hypot(se_exact, se_got), expected, "mean log-density")


def test_mixture_takes_any_gaussian_mixture():
    mixture = fastdiff.GaussianMixture([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]], [0.5, 1.0], weights=[1.0, 3.0])
    ds = data.gaussian_mixture(n=4000, mixture=mixture, seed=0)
    assert ds.data.shape == (4000, 3) and ds.mixture is mixture and ds.num_classes == 2
    mean_near(ds.labels.double(), 0.75, "weight of component 1")
    with pytest.raises(TypeError, match="mixture: expected a fastdiff.GaussianMixture or None, got str"):
        data.gaussian_mixture(mixture="ring")


def test_two_moons_lie_on_their_half_circles_centred_on_the_origin():
    ds = data.two_moons(n=8192, noise=0.0, seed=2)
    x, moon = ds.data.to(torch.float64) + torch.tensor([0.5, 0.25], dtype=torch.float64), ds.labels
    assert ds.num_classes == 2 and set(moon.tolist()) == {0, 1}
    upper, lower = x[moon == 0], x[moon == 1] - torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.allclose(upper.norm(dim=1), torch.ones(len(upper), dtype=torch.float64), atol=1e-6)
    assert torch.allclose(lower.norm(dim=1), torch.ones(len(lower), dtype=torch.float64), atol=1e-6)
    assert bool((upper[:, 1] >= -1e-6).all()) and bool((lower[:, 1] <= 1e-6).all())
    mean_near(ds.data, [0.0, 0.0], "mean")
    mean_near(moon.double(), 0.5, "moon balance")
    low, high = ds.data.min(0).values, ds.data.max(0).values
    assert torch.allclose(low, torch.tensor([-1.5, -0.75]), atol=0.02) and torch.allclose(high, torch.tensor([1.5, 0.75]), atol=0.02)
    noisy = data.two_moons(n=8192, noise=0.1, seed=2)
    assert torch.equal(noisy.labels, moon)  # same draws, plus noise
    mean_near((noisy.data - ds.data).double(), [0.0, 0.0], "noise mean")
    assert abs(float((noisy.data - ds.data).std()) - 0.1) < 0.005
    with pytest.raises(ValueError, match="noise: must be >= 0.0, got -0.1"):
        data.two_moons(noise=-0.1)


def test_swiss_roll_is_a_centred_unit_variance_spiral():
    ds = data.swiss_roll(n=8192, noise=0.0, seed=3)
    x = ds.data.to(torch.float64)
    assert ds.labels is None
    mean_near(x, [0.0, 0.0], "mean")
    mean_near((x**2).sum(1), 2.0, "total variance")
    spiral = x * data.SWISS_ROLL_SCALE + torch.tensor(data.SWISS_ROLL_MEAN, dtype=torch.float64)
    t = spiral.norm(dim=1)  # the radius is the angle
    assert bool((t > 1.5 * math.pi - 1e-4).all()) and bool((t < 4.5 * math.pi + 1e-4).all())
    assert torch.allclose(spiral, torch.stack([t * t.cos(), t * t.sin()], dim=1), atol=1e-4)


def test_checkerboard_fills_eight_squares_uniformly():
    ds = data.checkerboard(n=16000, seed=4)
    x = ds.data.to(torch.float64)
    assert ds.labels is None and bool((x > -2).all()) and bool((x < 2).all())
    cell = (x + 2).floor().long()
    assert bool(((cell.sum(1) % 2) == 0).all()), "a point outside the filled squares"
    square = cell[:, 1] * 4 + cell[:, 0]
    filled = sorted({i + 4 * j for i in range(4) for j in range(4) if (i + j) % 2 == 0})
    counts = torch.nn.functional.one_hot(square, 16).double()[:, filled]
    mean_near(counts, torch.full((8,), 1 / 8), "square frequencies")
    mean_near(x - x.floor(), [0.5, 0.5], "position within a square")


# ------------------------------------------------------------------------------------------------------ digits


def test_digits_are_sklearns_images_scaled_to_minus_one_one():
    from sklearn.datasets import load_digits

    ds = data.digits()
    assert ds.data.shape == (1797, 1, 8, 8) and ds.data.dtype == torch.float32 and ds.is_image
    assert float(ds.data.min()) == -1.0 and float(ds.data.max()) == 1.0
    assert ds.labels.dtype == torch.int64 and ds.num_classes == 10 and sorted(set(ds.labels.tolist())) == list(range(10))
    assert ds.class_names == tuple("0123456789")
    reference = load_digits()
    assert torch.equal(ds.data, torch.from_numpy(reference.images).float()[:, None] / 8 - 1)
    assert ds.labels.tolist() == reference.target.tolist()


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"digits needs scikit-learn.*pip install scikit-learn \(or pip install fastdiff\[data\]\)"):
        data.digits()


# ------------------------------------------------------------------------------------------------ image folder


def save(path, array, mode=None):
    """Write a uint8 array [H, W] or [H, W, C] as an image file (format from the extension), folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    (image.convert(mode) if mode else image).save(path)
    return path


def test_image_folder_reads_rgb_in_sorted_order(tmp_path):
    save(tmp_path / "b.png", np.full((4, 5, 3), 255))
    save(tmp_path / "a.png", np.zeros((4, 5, 3)))
    rgba = np.zeros((4, 5, 4))
    rgba[..., 0], rgba[..., 3] = 255, 40
    save(tmp_path / "c.PNG", rgba)
    save(tmp_path / ".hidden" / "x.png", np.zeros((9, 9, 3)))  # skipped, as are other files
    (tmp_path / "notes.txt").write_text("not an image")
    ds = data.image_folder(tmp_path)
    assert ds.data.shape == (3, 3, 4, 5) and ds.labels is None and ds.name == tmp_path.name
    assert bool((ds.data[0] == -1).all()) and bool((ds.data[1] == 1).all())  # a.png, then b.png
    assert ds.data[2, :, 0, 0].tolist() == [1.0, -1.0, -1.0]  # c.PNG: red, alpha dropped


def test_image_folder_keeps_one_channel_only_when_all_are_gray(tmp_path):
    gray = np.arange(20).reshape(4, 5) * 12
    save(tmp_path / "a.png", gray)
    save(tmp_path / "b.png", 255 - gray)
    ds = data.image_folder(tmp_path)
    assert ds.data.shape == (2, 1, 4, 5)
    assert torch.equal(ds.data[0, 0], torch.from_numpy(gray).float() / 127.5 - 1)
    save(tmp_path / "c.jpg", np.full((4, 5, 3), 128))
    ds = data.image_folder(tmp_path)
    assert ds.data.shape == (3, 3, 4, 5)
    assert torch.equal(ds.data[0], (torch.from_numpy(gray).float() / 127.5 - 1).expand(3, -1, -1))
    assert abs(float(ds.data[2].mean()) - (128 / 127.5 - 1)) < 0.05  # JPEG is lossy


def test_image_folder_reads_16_bit_gray(tmp_path):
    Image.fromarray(np.array([[0, 65535], [32768, 65535]], dtype=np.uint16)).save(tmp_path / "deep.png")
    ds = data.image_folder(tmp_path)
    assert ds.data.shape == (1, 1, 2, 2)
    assert torch.allclose(ds.data[0, 0], torch.tensor([[-1.0, 1.0], [32768 / 65535 * 2 - 1, 1.0]]))


def test_image_folder_labels_from_sub_folders(tmp_path):
    for name in ("dog/1.png", "cat/z.png", "dog/0.png", "cat/deeper/a.png"):
        save(tmp_path / name, np.zeros((3, 3)))
    ds = data.image_folder(tmp_path)
    # sorted relative paths: cat/deeper/a.png, cat/z.png, dog/0.png, dog/1.png
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2 and ds.labels.tolist() == [0, 0, 1, 1]
    assert data.image_folder(tmp_path, labels=False).labels is None
    save(tmp_path / "loose.png", np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"loose.png lies directly in .* \(e.g. cat.deeper.a.png\).*labels=False"):
        data.image_folder(tmp_path)
    assert len(data.image_folder(tmp_path, labels=False)) == 5


def test_image_folder_labels_true_needs_sub_folders(tmp_path):
    save(tmp_path / "a.png", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="a.png lies directly in .* and none in sub-folders"):
        data.image_folder(tmp_path, labels=True)
    with pytest.raises(TypeError, match="labels: expected None"):
        data.image_folder(tmp_path, labels="yes")


def test_image_folder_mixed_sizes_need_a_resolution(tmp_path):
    save(tmp_path / "a.png", np.zeros((4, 4, 3)))
    save(tmp_path / "b.png", np.zeros((4, 6, 3)))
    with pytest.raises(ValueError, match=r"a.png' is 4x4 but .*b.png' is 6x4 \(width x height\); pass resolution="):
        data.image_folder(tmp_path)


def test_image_folder_resolution_center_crops_and_resizes(tmp_path):
    wide = np.zeros((4, 6, 3))
    wide[:, 1:5] = 255  # white centre, black first and last columns: cut by the center crop
    save(tmp_path / "wide.png", wide)
    tall = np.zeros((8, 4))
    tall[2:6] = 255
    save(tmp_path / "tall.png", tall, mode="L")
    ds = data.image_folder(tmp_path, resolution=2)
    assert ds.data.shape == (2, 3, 2, 2)
    assert torch.allclose(ds.data, torch.ones(2, 3, 2, 2))
    same = data.image_folder(tmp_path, resolution=4)
    assert torch.allclose(same.data, torch.ones(2, 3, 4, 4))
    up = data.image_folder(tmp_path, resolution=9)
    assert up.data.shape == (2, 3, 9, 9) and float(up.data.min()) >= -1 and float(up.data.max()) <= 1
    with pytest.raises(ValueError, match="resolution: must be >= 1, got 0"):
        data.image_folder(tmp_path, resolution=0)


def test_image_folder_names_a_corrupt_file(tmp_path):
    save(tmp_path / "good.png", np.zeros((2, 2)))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match=r"cannot read the image file .*bad.png'.*: UnidentifiedImageError"):
        data.image_folder(tmp_path)


def test_image_folder_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere' does not exist"):
        data.image_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("")
    with pytest.raises(ValueError, match=r"no image files found under .*empty'; accepted extensions \(any case\): .bmp,.*\.jpg.*\.png"):
        data.image_folder(tmp_path / "empty")
    with pytest.raises(NotADirectoryError, match="readme.txt' is a file, not a folder"):
        data.image_folder(tmp_path / "empty" / "readme.txt")


def test_image_folder_without_pillow_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"image_folder needs Pillow.*pip install pillow \(or pip install fastdiff\[data\]\)"):
        data.image_folder(tmp_path)


# ------------------------------------------------------------------------------------------------- tensor file


def test_tensor_file_keeps_float_data(tmp_path):
    points = np.random.default_rng(0).normal(size=(10, 3))
    np.save(tmp_path / "points.npy", points)
    ds = data.tensor_file(tmp_path / "points.npy")
    assert ds.name == "points" and ds.labels is None and ds.data.dtype == torch.float32
    assert torch.equal(ds.data, torch.from_numpy(points).float())
    images = torch.rand(4, 3, 5, 5) * 2 - 1
    torch.save(images, tmp_path / "images.pt")
    assert torch.equal(data.tensor_file(str(tmp_path / "images.pt")).data, images)


def test_tensor_file_dicts_with_labels_and_keys(tmp_path):
    x, y = torch.randn(6, 2), torch.tensor([0, 2, 1, 0, 2, 2])
    torch.save({"data": x, "labels": y}, tmp_path / "set.pt")
    ds = data.tensor_file(tmp_path / "set.pt")
    assert torch.equal(ds.data, x) and torch.equal(ds.labels, y) and ds.num_classes == 3
    np.savez(tmp_path / "set.npz", images=x.numpy(), labels=y.numpy().astype(np.uint8), other=np.zeros((6, 2)))
    ds = data.tensor_file(tmp_path / "set.npz")
    assert torch.equal(ds.data, x) and ds.labels.tolist() == y.tolist()
    assert torch.equal(data.tensor_file(tmp_path / "set.npz", key="other").data, torch.zeros(6, 2))
    with pytest.raises(ValueError, match=r"holds a dict with keys \['images', 'labels', 'other'\], without the key 'nope'"):
        data.tensor_file(tmp_path / "set.npz", key="nope")
    torch.save({"x": x}, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=r"holds a dict with keys \['x'\], without a key 'data' or 'images'; accepted: "):
        data.tensor_file(tmp_path / "odd.pt")
    torch.save({"data": x, "labels": y[:5]}, tmp_path / "short.pt")
    with pytest.raises(ValueError, match=r"short.pt': labels: expected shape \(6,\)"):
        data.tensor_file(tmp_path / "short.pt")


def test_tensor_file_uint8_images_become_nchw_in_minus_one_one(tmp_path):
    nhwc = np.zeros((2, 5, 6, 3), dtype=np.uint8)
    nhwc[1, 4, 0, 2] = 255  # image 1, row 4, column 0, blue
    np.save(tmp_path / "nhwc.npy", nhwc)
    ds = data.tensor_file(tmp_path / "nhwc.npy")
    assert ds.data.shape == (2, 3, 5, 6) and ds.is_image
    assert float(ds.data[1, 2, 4, 0]) == 1.0 and float(ds.data.sum()) == 1.0 - (ds.data.numel() - 1)
    nchw = torch.full((2, 3, 5, 6), 51, dtype=torch.uint8)
    torch.save(nchw, tmp_path / "nchw.pt")
    ds = data.tensor_file(tmp_path / "nchw.pt")
    assert ds.data.shape == (2, 3, 5, 6) and torch.allclose(ds.data, torch.full((2, 3, 5, 6), 51 / 127.5 - 1))
    np.save(tmp_path / "gray.npy", np.zeros((3, 4, 4), dtype=np.uint8))
    assert data.tensor_file(tmp_path / "gray.npy").data.shape == (3, 1, 4, 4)
    np.save(tmp_path / "rgba.npy", np.zeros((3, 4, 4, 4), dtype=np.uint8))  # ambiguous: NCHW, alpha dropped
    assert data.tensor_file(tmp_path / "rgba.npy").data.shape == (3, 3, 4, 4)
    np.save(tmp_path / "flat.npy", np.zeros((3, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"uint8 data are images: expected \[N, H, W\].*got shape \(3, 4\)"):
        data.tensor_file(tmp_path / "flat.npy")
    np.save(tmp_path / "ints.npy", np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="ints.npy': data: expected float values, or uint8 images, got torch.int64"):
        data.tensor_file(tmp_path / "ints.npy")


def test_tensor_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="the file .*missing.npy' does not exist"):
        data.tensor_file(tmp_path / "missing.npy")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"data.csv' has the extension '.csv'; accepted: .npy, .npz, .pt, .pth"):
        data.tensor_file(tmp_path / "data.csv")
    for name in ("junk.npy", "junk.pt"):
        (tmp_path / name).write_bytes(b"this is not a tensor file")
        with pytest.raises(ValueError, match=rf"cannot read .*{name}': \w+"):
            data.tensor_file(tmp_path / name)
    np.save(tmp_path / "nan.npy", np.array([[0.0, 1.0], [np.inf, np.nan]]))
    with pytest.raises(ValueError, match=r"nan.npy': data: expected finite values, found 2 NaN or inf \(the first at index \(1, 0\)"):
        data.tensor_file(tmp_path / "nan.npy")
    torch.save([torch.zeros(2, 2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list.pt' holds a list; accepted: an array or tensor \[N, ...\], or a dict"):
        data.tensor_file(tmp_path / "list.pt")
    torch.save(torch.zeros(2, 2), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="key: given as 'data', but .*plain.pt' holds a single Tensor"):
        data.tensor_file(tmp_path / "plain.pt", key="data")
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"text.npy': data: expected a numeric array or tensor, found a ndarray of dtype <U1"):
        data.tensor_file(tmp_path / "text.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read .*objects.npy': ValueError: .*allow_pickle"):
        data.tensor_file(tmp_path / "objects.npy")


# -------------------------------------------------------------------------------------------------------- load


def test_load_dispatches_names_folders_and_files(tmp_path):
    assert data.BUILTIN == ("mixture", "moons", "swiss_roll", "checkerboard", "digits")
    for name in data.BUILTIN[:-1]:
        ds = data.load(name, n=64, seed=5)
        assert ds.name == name and len(ds) == 64 and torch.equal(ds.data, GENERATED[name](n=64, seed=5).data)
    assert data.load("moons", noise=0.0, n=16).data.shape == (16, 2)
    assert data.load("digits").data.shape == (1797, 1, 8, 8)
    save(tmp_path / "imgs" / "a.png", np.zeros((3, 3)))
    assert data.load(tmp_path / "imgs", resolution=2).data.shape == (1, 1, 2, 2)
    torch.save({"data": torch.zeros(3, 2)}, tmp_path / "t.pt")
    assert data.load(str(tmp_path / "t.pt")).data.shape == (3, 2)
    with pytest.raises(FileNotFoundError, match="the file .*nothing.npy' does not exist"):
        data.load(tmp_path / "nothing.npy")
    (tmp_path / "table.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="table.csv' has the extension '.csv'; accepted: "):
        data.load(tmp_path / "table.csv")


def test_load_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"spec: 'mnist' is neither a built-in data set \(mixture, moons, swiss_roll, "
                                         r"checkerboard, digits\) nor an existing folder"):
        data.load("mnist")
    with pytest.raises(TypeError, match="spec: expected a built-in name"):
        data.load(3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'noise'"):
        data.load("checkerboard", noise=0.1)
