"""Training data for fastdiff's training loop: built-in data sets and loaders, with no downloads.

Every data set is a `Dataset` holding all of its items in memory as one float32 tensor: low-dimensional
points [N, d] or images [N, C, H, W] scaled to [-1, 1], with optional int64 class labels [N].

Built-in (`load(name)` or the functions of the same meaning; all take `n=` and `seed=` except digits):
  "mixture"       gaussian_mixture: samples of a GaussianMixture (default the ring of `fastdiff sample`),
                  labelled by component; the mixture is kept as `.mixture`, so its density is exact.
  "moons"         two_moons: two interleaved half circles, centred on the origin, labelled by moon.
  "swiss_roll"    swiss_roll: a 2-D spiral, centred and scaled to unit variance per axis (on average).
  "checkerboard"  checkerboard: uniform on the 8 filled squares of a 4x4 board over [-2, 2]^2.
  "digits"        digits: scikit-learn's bundled 8x8 digits [1797, 1, 8, 8], labels 0..9 (needs scikit-learn).
The generated ones draw n = DEFAULT_N = 8192 points by default (the batch size of `fastdiff sample`) from a
local torch.Generator seeded by `seed`: the same seed gives the same points, and the global RNG is untouched.

From files: `image_folder(path)` reads every image under a folder (needs Pillow), `tensor_file(path)` a
.npy/.npz/.pt file; `load(path)` picks between them.
"""
from __future__ import annotations

import copy
import importlib
import math
import os
from pathlib import Path

import numpy as np
import torch

from ._validate import check_int, check_real
from .mixture import GaussianMixture

DEFAULT_N = 8192
BUILTIN = ("mixture", "moons", "swiss_roll", "checkerboard", "digits")
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
TENSOR_EXTENSIONS = (".npy", ".npz", ".pt", ".pth")
_PIP_HINT = {"PIL": "pip install pillow", "sklearn": "pip install scikit-learn"}


# --------------------------------------------------------------------------------------------------- Dataset


class Dataset:
    """An in-memory data set: float32 `data` [N, ...], optional int64 `labels` [N] in [0, num_classes)."""

    def __init__(self, data, labels=None, num_classes: int | None = None, name: str = "dataset",
                 class_names=None, mixture: GaussianMixture | None = None):
        if not isinstance(name, str):
            raise TypeError(f"name: expected a str, got {name!r} of type {type(name).__name__}")
        self.name = name
        self.data = _check_data(data)
        self.labels, self.num_classes, self.class_names = _check_labels(labels, num_classes, class_names, len(self.data))
        if mixture is not None and not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture: expected a fastdiff.GaussianMixture or None, got {type(mixture).__name__}")
        self.mixture = mixture

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of one item: (d,) for points, (C, H, W) for images."""
        return tuple(self.data.shape[1:])

    @property
    def is_image(self) -> bool:
        """True for images [C, H, W] per item."""
        return self.data.ndim == 4

    @property
    def device(self) -> torch.device:
        """Where `data` (and `labels`) live."""
        return self.data.device

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(data[indices], labels[indices] or None) for a 1-D integer tensor of indices in [0, len).

        Indices on the CPU are range-checked; on another device they are not (that would wait for the device).
        """
        if not isinstance(indices, torch.Tensor) or indices.dtype == torch.bool or indices.is_floating_point() \
                or indices.is_complex() or indices.ndim != 1:
            got = f"{indices.dtype} tensor of shape {tuple(indices.shape)}" if isinstance(indices, torch.Tensor) \
                else type(indices).__name__
            raise TypeError(f"indices: expected a 1-D integer tensor (e.g. torch.randint), got {got}")
        if indices.device.type == "cpu" and indices.numel():
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= len(self):
                raise IndexError(f"indices: expected values in [0, {len(self)}), got min {low} and max {high}")
        indices = indices.to(device=self.device, dtype=torch.long)
        labels = None if self.labels is None else self.labels.index_select(0, indices)
        return self.data.index_select(0, indices), labels

    def to(self, device) -> "Dataset":
        """The same data set with data and labels on `device` (self if already there)."""
        device = torch.device(device)
        if self.data.device == device:
            return self
        moved = copy.copy(self)
        moved.data = self.data.to(device)
        moved.labels = None if self.labels is None else self.labels.to(device)
        return moved

    def __repr__(self) -> str:
        kind = "images" if self.is_image else "points"
        classes = "unlabelled" if self.labels is None else f"{self.num_classes} classes"
        shape = "x".join(map(str, self.shape))
        return f"Dataset({self.name!r}: {len(self)} {kind} of shape {shape}, {classes})"


def _from_numpy(array: np.ndarray) -> torch.Tensor:
    """A numeric numpy array as a contiguous CPU tensor in native byte order (copied if read-only)."""
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _check_data(data) -> torch.Tensor:
    """data as a float32 tensor [N, d] or [N, C, H, W] with N >= 1 and only finite values."""
    if isinstance(data, np.ndarray) and data.dtype.kind in "fiub":
        data = _from_numpy(data)
    if isinstance(data, np.ndarray):
        raise TypeError(f"data: expected floating-point values, got a numpy array of dtype {data.dtype}")
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data: expected a torch.Tensor or numpy array, got {type(data).__name__}")
    if not data.is_floating_point():
        raise TypeError(f"data: expected floating-point values (images scaled to [-1, 1]), got {data.dtype}; "
                        "uint8 images can be loaded with fastdiff.data.tensor_file")
    if data.ndim not in (2, 4) or data.shape[0] < 1:
        raise ValueError(f"data: expected points [N, d] or images [N, C, H, W] with N >= 1, got shape {tuple(data.shape)}")
    data = data.detach().to(torch.float32).contiguous()
    bad = ~torch.isfinite(data)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"data: expected finite values, found {int(bad.sum())} NaN or inf (the first at index "
                         f"{first}: {float(data[first])}) after conversion to float32")
    return data


def _check_labels(labels, num_classes, class_names, n: int):
    """(labels int64 [n] or None, num_classes, class_names tuple or None), checked against each other."""
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if num_classes is None:
            num_classes = len(class_names)
    if labels is None:
        if num_classes is not None:
            what = "class_names" if class_names is not None else "num_classes"
            raise ValueError(f"{what}: given without labels; pass labels or leave {what} None")
        return None, None, None
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        labels = _from_numpy(labels)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool:
        got = labels.dtype if isinstance(labels, (torch.Tensor, np.ndarray)) else type(labels).__name__
        raise TypeError(f"labels: expected an integer tensor or numpy array [N], got {got}")
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},), one label per item of data, got {tuple(labels.shape)}")
    labels = labels.detach().to(torch.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    num_classes = check_int("num_classes", num_classes, minimum=1)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels: expected values in [0, num_classes) = [0, {num_classes}), got min {low} and max {high}")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names: expected {num_classes} names (num_classes), got {len(class_names)}")
    return labels, num_classes, class_names


# ----------------------------------------------------------------------------------- low-dimensional built-ins


def _generator(n, seed) -> tuple[int, torch.Generator]:
    """(n checked >= 1, a CPU torch.Generator seeded with seed >= 0)."""
    n = check_int("n", n, minimum=1)
    return n, torch.Generator(device="cpu").manual_seed(check_int("seed", seed, minimum=0))


def gaussian_mixture(n: int = DEFAULT_N, mixture: GaussianMixture | None = None, seed: int = 0) -> Dataset:
    """n samples [n, dim] of `mixture` (default GaussianMixture.ring()), labelled by component; `.mixture` kept."""
    n, generator = _generator(n, seed)
    mixture = GaussianMixture.ring() if mixture is None else mixture
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture: expected a fastdiff.GaussianMixture or None, got {type(mixture).__name__}")
    component = torch.multinomial(mixture.weights, n, replacement=True, generator=generator)
    noise = torch.randn(n, mixture.dim, generator=generator, dtype=torch.float64)
    points = mixture.means[component] + mixture.stds[component, None] * noise
    return Dataset(points, component, num_classes=len(mixture.weights), name="mixture", mixture=mixture)


def two_moons(n: int = DEFAULT_N, noise: float = 0.05, seed: int = 0) -> Dataset:
    """n points [n, 2] on two interleaved unit half circles, centred on the origin, plus N(0, noise^2) noise.

    Label 0: the upper moon (centre (-0.5, -0.25)), 1: the lower one (centre (0.5, 0.25)), drawn with equal
    probability; without noise the points span [-1.5, 1.5] x [-0.75, 0.75].
    """
    n, generator = _generator(n, seed)
    noise = check_real("noise", noise, minimum=0.0)
    moon = torch.randint(0, 2, (n,), generator=generator)
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    upper = torch.stack([angle.cos(), angle.sin()], dim=1)  # centre (0, 0), y >= 0
    lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], dim=1)  # centre (1, 0.5), y <= 0.5
    points = torch.where(moon[:, None] == 0, upper, lower) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    points = points + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return Dataset(points, moon, num_classes=2, name="moons")


# For t ~ U[1.5 pi, 4.5 pi], t (cos t, sin t) has mean (2, 2 / (3 pi)) and E|.|^2 = E[t^2] = 9.75 pi^2: centring by the
# mean and dividing by the scale gives mean 0 and total variance 2 (1 per axis on average).
SWISS_ROLL_MEAN = (2.0, 2.0 / (3 * math.pi))
SWISS_ROLL_SCALE = math.sqrt((9.75 * math.pi**2 - SWISS_ROLL_MEAN[0] ** 2 - SWISS_ROLL_MEAN[1] ** 2) / 2)


def swiss_roll(n: int = DEFAULT_N, noise: float = 0.05, seed: int = 0) -> Dataset:
    """n points [n, 2] of (t (cos t, sin t) - SWISS_ROLL_MEAN) / SWISS_ROLL_SCALE, t ~ U[1.5 pi, 4.5 pi], + N(0, noise^2)."""
    n, generator = _generator(n, seed)
    noise = check_real("noise", noise, minimum=0.0)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    spiral = torch.stack([t * t.cos(), t * t.sin()], dim=1) - torch.tensor(SWISS_ROLL_MEAN, dtype=torch.float64)
    points = spiral / SWISS_ROLL_SCALE + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return Dataset(points, name="swiss_roll")


def checkerboard(n: int = DEFAULT_N, seed: int = 0) -> Dataset:
    """n points [n, 2] uniform on the unit squares [i-2, i-1] x [j-2, j-1] of [-2, 2]^2 with i + j even."""
    n, generator = _generator(n, seed)
    square = torch.randint(0, 8, (n,), generator=generator)
    row = square // 2  # j: rows 0..3, two filled squares per row
    col = 2 * (square % 2) + row % 2  # i: i + j even
    corner = torch.stack([col, row], dim=1).to(torch.float64) - 2
    points = corner + torch.rand(n, 2, generator=generator, dtype=torch.float64)
    return Dataset(points, name="checkerboard")


# ------------------------------------------------------------------------------------ optional dependencies


def _require(module: str, what: str):
    """Import `module` (its top-level package first), or raise ImportError saying what to pip install."""
    try:
        importlib.import_module(module.split(".")[0])
        return importlib.import_module(module)
    except ImportError as error:
        top = module.split(".")[0]
        raise ImportError(f"{what} needs {'Pillow' if top == 'PIL' else 'scikit-learn'}, which could not be imported "
                          f"({error}): {_PIP_HINT[top]} (or pip install fastdiff[data])") from error


def digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits as images [1797, 1, 8, 8] in [-1, 1] (0..16 -> -1..1), labels 0..9."""
    datasets = _require("sklearn.datasets", "fastdiff.data.digits")
    bunch = datasets.load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float64))[:, None] / 8 - 1
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    return Dataset(images, labels, num_classes=10, name="digits", class_names=[str(k) for k in range(10)])


# ------------------------------------------------------------------------------------------------ image folder


def image_folder(path, resolution: int | None = None, labels: bool | None = None) -> Dataset:
    """Every image file under a folder as [N, C, H, W] in [-1, 1]; labels from sub-folders (see below).

    Files are those with an extension in IMAGE_EXTENSIONS (any case), found recursively and read in sorted
    order of their relative paths; hidden files and folders (name starting with '.') are skipped.
    Labels: with labels=None (default), images in sub-folders are labelled by their top sub-folder under
    `path` (class_names: the sorted folder names) when every image is in one, unlabelled when none is, and a
    mix is an error; labels=False never labels, labels=True requires sub-folders.
    Size: all images must have one size, unless `resolution` is given: then each is center-cropped to a
    square (side min(H, W)) and resized to resolution x resolution with torch's antialiased bicubic filter.
    Channels: 1 if every image is grayscale (Pillow modes 1, L, LA, I, I;16), else 3 (RGB; gray images
    repeated, palette and other modes converted by Pillow, alpha dropped). 16-bit gray is scaled from 0..65535.
    """
    Image = _require("PIL.Image", "fastdiff.data.image_folder")
    ImageOps = _require("PIL.ImageOps", "fastdiff.data.image_folder")
    root = _existing_folder(path)
    if resolution is not None:
        resolution = check_int("resolution", resolution, minimum=1)
    files = _image_files(root)
    label_list, class_names = _folder_labels(root, files, labels)
    data = _stack(_read_images(Image, ImageOps, files, resolution))
    label_tensor = None if label_list is None else torch.tensor(label_list, dtype=torch.int64)
    return Dataset(data, label_tensor, name=root.name or str(root), class_names=class_names)


def _existing_folder(path) -> Path:
    """path as a Path to an existing folder, or FileNotFoundError / NotADirectoryError naming it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or path, got {type(path).__name__}")
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"path: the folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"path: {str(root)!r} is a file, not a folder of images")
    return root


def _image_files(root: Path) -> list[Path]:
    """The image files under root in sorted order of their relative paths, hidden ones skipped; at least one."""
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not files:
        raise ValueError(f"path: no image files found under {str(root)!r}; accepted extensions (any case): "
                         f"{', '.join(IMAGE_EXTENSIONS)}")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _folder_labels(root: Path, files: list[Path], labels: bool | None):
    """(label per file or None, sorted class names or None) from the top sub-folder of each file."""
    if labels not in (None, True, False):
        raise TypeError(f"labels: expected None (automatic), True or False, got {labels!r}")
    folders = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files]
    in_root = [f for f, folder in zip(files, folders) if folder is None]
    if labels is False or (labels is None and len(in_root) == len(files)):
        return None, None
    if in_root:
        nested = next(f for f, folder in zip(files, folders) if folder is not None) if len(in_root) < len(files) else None
        where = f"and others in sub-folders (e.g. {nested.relative_to(root)})" if nested else "and none in sub-folders"
        raise ValueError(f"labels: class labels come from sub-folders, but {in_root[0].relative_to(root)} lies directly "
                         f"in {str(root)!r} {where}; move every image into a class sub-folder, or pass labels=False")
    class_names = sorted(set(folders))
    index = {name: k for k, name in enumerate(class_names)}
    return [index[folder] for folder in folders], class_names


_GRAY_MODES = ("1", "L", "LA", "La")
_GRAY16_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def _read_images(Image, ImageOps, files: list[Path], resolution: int | None) -> list[tuple[torch.Tensor, bool]]:
    """(image [C, H, W], grayscale?) per file, squared to `resolution` if given, else checked to share one size."""
    images = []
    for file in files:
        image, gray = _read_image(Image, ImageOps, file)
        if resolution is not None:
            image = _square(image, resolution)
        elif images and image.shape[1:] != images[0][0].shape[1:]:
            (height, width), (h, w) = images[0][0].shape[1:], image.shape[1:]
            raise ValueError(f"image_folder: the images differ in size: {str(files[0])!r} is {width}x{height} but "
                             f"{str(file)!r} is {w}x{h} (width x height); pass resolution=R to center-crop every "
                             "image to a square and resize it to R x R")
        images.append((image, gray))
    return images


def _read_image(Image, ImageOps, path: Path) -> tuple[torch.Tensor, bool]:
    """(one image file as [C, H, W], uint8 or (16-bit) float32 in [0, 1], whether it is grayscale).

    A file Pillow cannot read or convert raises ValueError naming it and giving Pillow's message.
    """
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # camera photos stand upright
            if image.mode in _GRAY_MODES:
                array, gray = np.asarray(image.convert("L"))[:, :, None], True
            elif image.mode in _GRAY16_MODES:
                array, gray = np.clip(np.asarray(image, dtype=np.float32)[:, :, None] / 65535, 0, 1), True
            else:
                array, gray = np.asarray(image.convert("RGB")), False
    except Exception as error:  # noqa: BLE001 - Pillow raises many kinds (UnidentifiedImageError, OSError, ...)
        raise ValueError(f"image_folder: cannot read the image file {str(path)!r}: "
                         f"{type(error).__name__}: {error}") from error
    return _from_numpy(array.transpose(2, 0, 1)), gray


def _stack(images: list[tuple[torch.Tensor, bool]]) -> torch.Tensor:
    """Images of one size as float32 [N, C, H, W] in [-1, 1]: C = 1 if all are gray, else 3 (gray repeated)."""
    first = images[0][0]
    channels = 1 if all(gray for _, gray in images) else 3
    out = torch.empty(len(images), channels, *first.shape[1:])
    for k, (image, _) in enumerate(images):  # one image at a time: no float copy of the whole set but `out`
        out[k] = image.float() / 127.5 - 1 if image.dtype == torch.uint8 else image * 2 - 1
    return out


def _square(image: torch.Tensor, resolution: int) -> torch.Tensor:
    """image [C, H, W] center-cropped to a square and resized to [C, resolution, resolution] (float in [0, 1])."""
    height, width = image.shape[1:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[:, top:top + side, left:left + side]
    if side == resolution:
        return image.clone()  # not a view that keeps the whole image alive
    unit = image.float() / 255 if image.dtype == torch.uint8 else image
    resized = torch.nn.functional.interpolate(unit[None], size=(resolution, resolution), mode="bicubic",
                                              antialias=True, align_corners=False)
    return resized[0].clamp(0, 1)


# ------------------------------------------------------------------------------------------------- tensor file


def tensor_file(path, key: str | None = None) -> Dataset:
    """A data set from a .npy/.npz (numpy, no pickles) or .pt/.pth (torch.load, weights_only) file.

    Contents: an array/tensor [N, ...], or a dict (an .npz is one) with the data under `key`, else under
    'data', else 'images', and optional integer 'labels' [N]. Float data is kept as is (points [N, d] or
    images [N, C, H, W], expected in [-1, 1]); uint8 data are images scaled from 0..255 to [-1, 1]:
    [N, H, W] gets one channel, and [N, A, B, C] is taken as NHWC when C is 1, 3 or 4 and A is not, else as
    NCHW (so an ambiguous [N, 3, H, 3] is NCHW); 4 channels are RGBA and the alpha is dropped.
    """
    path = _existing_file(path)
    content = _load_file(path)
    data, labels = _pick(content, key, path)
    data = _as_tensor(data, "data", path)
    labels = None if labels is None else _as_tensor(labels, "labels", path)
    if data.dtype == torch.uint8:
        data = _uint8_images(data, f"tensor_file: {str(path)!r}")
    elif not data.is_floating_point():
        raise TypeError(f"tensor_file: {str(path)!r}: data: expected float values, or uint8 images, got {data.dtype}; "
                        "convert integer data to float (or to uint8 for 0..255 images)")
    try:
        return Dataset(data, labels, name=path.stem)
    except (TypeError, ValueError) as error:
        raise type(error)(f"tensor_file: {str(path)!r}: {error}") from error


def _existing_file(path) -> Path:
    """path as a Path to an existing file with an extension in TENSOR_EXTENSIONS."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or path, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() not in TENSOR_EXTENSIONS:
        raise ValueError(f"path: {str(path)!r} has the extension {path.suffix or '(none)'!r}; accepted: "
                         f"{', '.join(TENSOR_EXTENSIONS)} (or a folder of images)")
    if not path.is_file():
        raise FileNotFoundError(f"path: the file {str(path)!r} does not exist" if not path.exists()
                                else f"path: {str(path)!r} is not a file")
    return path


def _load_file(path: Path):
    """The file's contents: an array, a tensor or a dict; ValueError naming the file and the loader's error."""
    try:
        if path.suffix.lower() in (".npy", ".npz"):
            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    return {name: loaded[name] for name in loaded.files}
            return loaded
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - numpy and torch raise many kinds for a bad file
        raise ValueError(f"tensor_file: cannot read {str(path)!r}: {type(error).__name__}: {error}") from error


def _describe(value) -> str:
    """A short description of a loaded value, for error messages."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"a {type(value).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    return f"a {type(value).__name__}"


def _pick(content, key, path: Path):
    """(data, labels or None) out of the file's contents, or ValueError saying what was found and what is accepted."""
    accepted = "an array or tensor [N, ...], or a dict with 'data' or 'images' (or key=...) and optional 'labels'"
    if isinstance(content, (np.ndarray, torch.Tensor)):
        if key is not None:
            raise ValueError(f"key: given as {key!r}, but {str(path)!r} holds a single {_describe(content)[2:]}, not a dict")
        return content, None
    if not isinstance(content, dict):
        raise ValueError(f"tensor_file: {str(path)!r} holds {_describe(content)}; accepted: {accepted}")
    names = [key] if key is not None else ["data", "images"]
    found = [name for name in names if name in content]
    if not found:
        wanted = f"the key {key!r}" if key is not None else "a key 'data' or 'images'"
        raise ValueError(f"tensor_file: {str(path)!r} holds {_describe(content)}, without {wanted}; accepted: {accepted}")
    return content[found[0]], content.get("labels")


def _as_tensor(value, what: str, path: Path) -> torch.Tensor:
    """An array or tensor of numbers as a CPU tensor, or ValueError saying what was found."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return _from_numpy(value)
    if isinstance(value, torch.Tensor) and not value.is_complex():
        return value.detach().cpu()
    raise ValueError(f"tensor_file: {str(path)!r}: {what}: expected a numeric array or tensor, found {_describe(value)}")


def _uint8_images(data: torch.Tensor, where: str) -> torch.Tensor:
    """uint8 images [N, H, W], NHWC or NCHW (see tensor_file) as float32 [N, C, H, W] in [-1, 1], alpha dropped.
    `where` starts the error message (the function and the file or argument). Also used by fastdiff.train for
    uint8 tensors and arrays, so both read uint8 data the same way."""
    if data.ndim == 3:
        data = data[:, None]
    elif data.ndim != 4:
        raise ValueError(f"{where}: uint8 data are images: expected [N, H, W], [N, H, W, C] or [N, C, H, W], got "
                         f"shape {tuple(data.shape)}; for points or other numbers, convert to float first")
    elif data.shape[3] in (1, 3, 4) and data.shape[1] not in (1, 3, 4):
        data = data.permute(0, 3, 1, 2)
    if data.shape[1] == 4:
        data = data[:, :3]
    return data.to(torch.float32, memory_format=torch.contiguous_format).div_(127.5).sub_(1)


# -------------------------------------------------------------------------------------------------------- load


_GENERATORS = {"mixture": gaussian_mixture, "moons": two_moons, "swiss_roll": swiss_roll,
               "checkerboard": checkerboard, "digits": digits}


def load(spec, **kwargs) -> Dataset:
    """A built-in data set by name (BUILTIN; kwargs go to its function) or a folder / tensor file by path.

    A name in BUILTIN wins over a folder of that name: write "./moons" for the folder.
    """
    if isinstance(spec, str) and spec in _GENERATORS:
        return _GENERATORS[spec](**kwargs)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"spec: expected a built-in name ({', '.join(BUILTIN)}) or a path, got {type(spec).__name__}")
    path = Path(spec)
    if path.is_dir():
        return image_folder(path, **kwargs)
    if path.suffix.lower() in TENSOR_EXTENSIONS or path.exists():
        return tensor_file(path, **kwargs)
    raise ValueError(f"spec: {str(spec)!r} is neither a built-in data set ({', '.join(BUILTIN)}) nor an existing "
                     f"folder of images or a {'/'.join(TENSOR_EXTENSIONS)} file")
