"""Image quality without downloads: a small digits classifier that fastdiff trains and ships
(fastdiff/weights/digits-classifier.pt), FD-digits and class accuracy; `fastdiff eval`.

- FD-digits: the Frechet distance (Heusel et al. 2017, as FID) between Gaussians fitted to the classifier's
  penultimate features of the generated images and of all 1,797 real digits of scikit-learn's set:
  |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64, with torch's symmetric eigendecompositions only.
  The real digits' mean and covariance ship in the classifier file, so evaluation needs no scikit-learn.
- The floor: FD-digits is biased upwards at small n, so every result comes with the FD-digits of n real digits
  (bootstrap draws, the mean over several) at the same n, from a table in the classifier file.
- Class accuracy: the share of class-conditional samples the classifier assigns to their requested class.

docs/quality.md describes the measures, the classifier's recipe and how to rebuild its file
(`python -m fastdiff.quality --build-classifier`).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .imagefiles import class_of_seeds, from_uint8, load_generated

CLASSIFIER_FORMAT = "fastdiff-digits-classifier"
CLASSIFIER_FILE = Path(__file__).resolve().parent / "weights" / "digits-classifier.pt"
RESOLUTION, CHANNELS, NUM_CLASSES = 8, 1, 10
ACCEPTED_IMAGES = (f"float [N, {CHANNELS}, {RESOLUTION}, {RESOLUTION}] in [-1, 1] or uint8 "
                   f"[N, {RESOLUTION}, {RESOLUTION}, {CHANNELS}]")
# The recipe of the shipped file (train_classifier's defaults); docs/quality.md#the-classifier.
TRAIN_SEED, HOLDOUT_FRACTION, EPOCHS, BATCH_SIZE, LR, WEIGHT_DECAY = 0, 0.2, 60, 64, 2e-3, 1e-4
FLOOR_SIZES = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000)
FLOOR_DRAWS, FLOOR_SEED = 20, 1
EVAL_BATCH = 4096  # images per classifier call


# ----------------------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------------------

class DigitsClassifier(nn.Module):
    """A small CNN for 8x8 grayscale digits in [-1, 1]: conv 3x3 (channels) - ReLU - conv 3x3 (2 x channels) - ReLU -
    max-pool 2 - linear (features) - ReLU - linear (10 logits). `features(x)` is the input of the last layer (the
    penultimate activations, FD-digits' feature space); forward(x) gives the logits."""

    def __init__(self, channels: int = 32, features: int = 64, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.config = dict(channels=int(channels), features=int(features), num_classes=int(num_classes))
        self.body = nn.Sequential(
            nn.Conv2d(CHANNELS, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * channels * (RESOLUTION // 2) ** 2, features), nn.ReLU())
        self.head = nn.Linear(features, num_classes)
        # Filled in by load_classifier from the file (None for a freshly built network).
        self.reference = None  # {"mean": float64 [F], "cov": float64 [F, F], "n": 1797}
        self.floors = None  # {"iid" and "balanced": {"n": int64 [K], "mean", "std": float64 [K], "draws", "seed"}}
        self.heldout_accuracy = None
        self.info: dict = {}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def shift_batch(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Each image moved by a random whole-pixel shift in [-max_shift, max_shift] along each axis, the uncovered
    border filled with the background (-1): the training augmentation."""
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=-1.0)
    size = 2 * max_shift + 1
    dy = torch.randint(size, (x.shape[0],), generator=generator)
    dx = torch.randint(size, (x.shape[0],), generator=generator)
    rows = (dy[:, None] + torch.arange(x.shape[2]))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(x.shape[3]))[:, None, None, :]
    batch = torch.arange(x.shape[0])[:, None, None, None]
    return padded[batch, torch.arange(x.shape[1])[None, :, None, None], rows, cols]


def holdout_split(n: int, fraction: float = HOLDOUT_FRACTION, seed: int = TRAIN_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) of n examples: a permutation by torch's generator seeded `seed`, its first
    round(fraction * n) held out; both sorted."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(round(fraction * n))
    return order[cut:].sort().values, order[:cut].sort().values


def train_classifier(images=None, labels=None, *, seed: int = TRAIN_SEED, holdout: float = HOLDOUT_FRACTION,
                     epochs: int = EPOCHS, batch_size: int = BATCH_SIZE, lr: float = LR,
                     weight_decay: float = WEIGHT_DECAY, shift: int = 1, channels: int = 32, features: int = 64,
                     log=None) -> tuple[DigitsClassifier, dict]:
    """Train a DigitsClassifier on scikit-learn's digits (or `images` [N, 1, 8, 8] in [-1, 1] with `labels`):
    AdamW with a cosine learning-rate decay, random 1-pixel shifts (`shift`), everything seeded by `seed`,
    a held-out split of `holdout` of the examples (holdout_split) that training never sees.

    Returns (the network in eval mode, {"heldout_accuracy", "heldout_indices", "train_accuracy", "recipe"}).
    Deterministic for a given seed and thread count (float sums may differ across thread counts)."""
    if images is None:
        from .data import digits

        data = digits()
        images, labels = data.data.float(), data.labels
    images, labels = torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64)
    train_idx, held_idx = holdout_split(len(images), holdout, seed)
    torch.manual_seed(seed)
    net = DigitsClassifier(channels, features)
    generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    for epoch in range(epochs):
        net.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            x = shift_batch(images[batch], generator, shift) if shift else images[batch]
            loss = torch.nn.functional.cross_entropy(net(x), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if log is not None and (epoch + 1) % 10 == 0:
            log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, held-out accuracy "
                f"{accuracy_of(net, images[held_idx], labels[held_idx]):.4f}")
    net.eval().requires_grad_(False)
    recipe = dict(seed=seed, holdout=holdout, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                  shift=shift, optimizer="AdamW, cosine decay")
    return net, dict(heldout_accuracy=accuracy_of(net, images[held_idx], labels[held_idx]),
                     train_accuracy=accuracy_of(net, images[train_idx], labels[train_idx]),
                     heldout_indices=held_idx, recipe=recipe)


@torch.no_grad()
def accuracy_of(net: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    was_training = net.training
    net.eval()
    predicted = torch.cat([net(images[i:i + EVAL_BATCH]).argmax(1) for i in range(0, len(images), EVAL_BATCH)])
    net.train(was_training)
    return float((predicted == labels).double().mean())


def statistics_of(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, covariance with the n - 1 divisor) of features [n, F], in float64."""
    feats = feats.to(torch.float64)
    if feats.shape[0] < 2:
        raise ValueError(f"images: FD-digits needs at least 2 images (it fits a covariance), got {feats.shape[0]}")
    return feats.mean(0), torch.cov(feats.T, correction=1).reshape(feats.shape[1], feats.shape[1])


def balanced_counts(n: int) -> list[int]:
    """How many of n images each class has when image i has class (seed + i) % 10: n // 10, plus one for n % 10
    classes (which ones depends on the first seed; the counts do not)."""
    return [n // NUM_CLASSES + (k < n % NUM_CLASSES) for k in range(NUM_CLASSES)]


def is_balanced(labels: torch.Tensor) -> bool:
    """True when every class has n // 10 or n // 10 + 1 of the labels: what seed % 10 over consecutive seeds gives."""
    counts = torch.bincount(labels, minlength=NUM_CLASSES)
    return int(counts.max() - counts.min()) <= 1


def bootstrap_floors(real_features: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, labels=None,
                     sizes=FLOOR_SIZES, draws: int = FLOOR_DRAWS, seed: int = FLOOR_SEED) -> dict:
    """The floor table: for each n in `sizes`, the mean and standard deviation over `draws` bootstrap draws of n real
    digits (drawn with replacement, torch's generator seeded `seed`) of the FD of a draw against the reference.
    With `labels` the draws are balanced: balanced_counts(n) digits of each class, drawn within the class (what
    class-conditional samples with class seed % 10 are compared with); without, the n digits are drawn from all."""
    generator = torch.Generator().manual_seed(seed)
    by_class = None if labels is None else [torch.nonzero(labels == k).flatten() for k in range(NUM_CLASSES)]
    means, stds = [], []
    for n in sizes:
        values = []
        for _ in range(draws):
            if by_class is None:
                pick = torch.randint(len(real_features), (n,), generator=generator)
            else:
                pick = torch.cat([members[torch.randint(len(members), (count,), generator=generator)]
                                  for members, count in zip(by_class, balanced_counts(n))])
            values.append(frechet_distance(*statistics_of(real_features[pick]), mean, cov))
        values = torch.tensor(values, dtype=torch.float64)
        means.append(float(values.mean()))
        stds.append(float(values.std()))
    return dict(n=torch.tensor(sizes, dtype=torch.int64), mean=torch.tensor(means, dtype=torch.float64),
                std=torch.tensor(stds, dtype=torch.float64), draws=draws, seed=seed)


def build_classifier(path=CLASSIFIER_FILE, log=print, **train_options) -> dict:
    """Train the classifier (train_classifier), compute the real digits' reference statistics and the floor table,
    and write them all to `path` (default: the shipped fastdiff/weights/digits-classifier.pt). Needs scikit-learn.
    Returns what was written."""
    from .data import digits

    data = digits()
    images, labels = data.data.float(), data.labels
    started = time.perf_counter()
    net, result = train_classifier(images, labels, log=log, **train_options)
    feats = features(images, net)
    mean, cov = statistics_of(feats)
    floors = {"iid": bootstrap_floors(feats, mean, cov), "balanced": bootstrap_floors(feats, mean, cov, labels)}
    state = {"format": CLASSIFIER_FORMAT, "version": 1, "config": net.config,
             "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
             "heldout_accuracy": result["heldout_accuracy"], "train_accuracy": result["train_accuracy"],
             "heldout_indices": result["heldout_indices"].to(torch.int16), "recipe": result["recipe"],
             "reference": {"mean": mean, "cov": cov, "n": len(images), "data": "sklearn.datasets.load_digits"},
             "floors": floors, "torch": str(torch.__version__)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    log(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - started:.0f} s: held-out "
        f"accuracy {result['heldout_accuracy']:.4f} ({len(result['heldout_indices'])} digits), training accuracy "
        f"{result['train_accuracy']:.4f}")
    for kind, table in floors.items():
        log(f"FD-digits floors, {kind} draws (n: mean +- std over {table['draws']} bootstrap draws): " + ", ".join(
            f"{n}: {m:.3g} +- {s:.2g}" for n, m, s in zip(table["n"].tolist(), table["mean"].tolist(),
                                                         table["std"].tolist())))
    load_classifier.cache_clear()
    return state


@functools.lru_cache(maxsize=4)
def load_classifier(path=None) -> DigitsClassifier:
    """The classifier in a file written by build_classifier (default: the one that ships with fastdiff), in eval
    mode without gradients, with its reference statistics, floor table and held-out accuracy attached. Read with
    torch.load(weights_only=True). Cached: do not modify the result."""
    path = CLASSIFIER_FILE if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier: {str(path)!r} does not exist"
                                + ("; reinstall fastdiff, or rebuild it with `python -m fastdiff.quality "
                                   "--build-classifier` (needs scikit-learn)" if path == CLASSIFIER_FILE else ""))
    from .training import read_state

    state = read_state(path, what="classifier")  # names an empty, cut-short or foreign file, with the reason
    if not isinstance(state, dict) or state.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"classifier: {path} is not a fastdiff digits-classifier file (written by "
                         f"fastdiff.quality.build_classifier)")
    net = DigitsClassifier(**state["config"])
    net.load_state_dict(state["state_dict"])
    net.reference = state["reference"]
    net.floors = state["floors"]
    net.heldout_accuracy = state["heldout_accuracy"]
    net.info = {k: state[k] for k in ("train_accuracy", "heldout_indices", "recipe", "torch") if k in state}
    net.source = str(path)
    return net.eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------
# The measures
# ----------------------------------------------------------------------------------------------------------

def as_images(images, name: str = "images") -> torch.Tensor:
    """images as float32 [N, 1, 8, 8] in [-1, 1] (clamped, as any saved image is): from float [N, 1, 8, 8] (torch or
    numpy) or uint8 [N, 8, 8, 1] (from_uint8); anything else is an error naming what is accepted."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor or numpy array, {ACCEPTED_IMAGES}, got {type(images).__name__}")
    shape = tuple(images.shape)
    if images.dtype == torch.uint8:
        if images.ndim == 4 and shape[1:] == (RESOLUTION, RESOLUTION, CHANNELS):
            return from_uint8(images.cpu())
    elif images.is_floating_point():
        if images.ndim == 4 and shape[1:] == (CHANNELS, RESOLUTION, RESOLUTION):
            images = images.detach().cpu().to(torch.float32)
            bad = int((~torch.isfinite(images)).sum())
            if bad:
                raise ValueError(f"{name}: {bad} of its {images.numel()} values are NaN or infinite")
            return images.clamp(-1, 1)
    else:
        raise TypeError(f"{name}: expected {ACCEPTED_IMAGES}, got dtype {images.dtype}")
    raise ValueError(f"{name}: the digits classifier is for {RESOLUTION}x{RESOLUTION} grayscale digits: expected "
                     f"{ACCEPTED_IMAGES}, got {images.dtype} of shape {shape}")


def as_labels(labels, n: int, name: str = "labels") -> torch.Tensor:
    """labels as int64 [n] in 0..9."""
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"{name}: expected integer class labels 0..{NUM_CLASSES - 1}, got dtype {labels.dtype}")
    if tuple(labels.shape) != (n,):
        raise ValueError(f"{name}: expected one class label per image, shape ({n},), got shape {tuple(labels.shape)}")
    labels = labels.to(torch.int64).cpu()
    if n and (int(labels.min()) < 0 or int(labels.max()) >= NUM_CLASSES):
        wrong = labels[(labels < 0) | (labels >= NUM_CLASSES)][0]
        raise ValueError(f"{name}: expected class labels 0..{NUM_CLASSES - 1} (the digits), got {int(wrong)}")
    return labels


def _classifier(classifier) -> DigitsClassifier:
    if classifier is None:
        return load_classifier()
    if isinstance(classifier, DigitsClassifier):
        return classifier
    if isinstance(classifier, (str, Path)):
        return load_classifier(Path(classifier))
    raise TypeError(f"classifier: expected None (the shipped one), a DigitsClassifier or a path to its file, got "
                    f"{type(classifier).__name__}")


@torch.no_grad()
def features(images, classifier=None) -> torch.Tensor:
    """The classifier's penultimate features of `images` (float [N, 1, 8, 8] in [-1, 1] or uint8 [N, 8, 8, 1]),
    float64 [N, F]."""
    net, x = _classifier(classifier), as_images(images)
    if len(x) == 0:
        return torch.zeros(0, net.config["features"], dtype=torch.float64)
    return torch.cat([net.features(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]).to(torch.float64)


def _symmetric_sqrt(a: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((a + a.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Frechet (2-Wasserstein squared) distance between the
    Gaussians N(mu1, S1) and N(mu2, S2), in float64.

    tr (S1 S2)^(1/2) = tr (A S2 A)^(1/2) with A = S1^(1/2) (S1 S2 is similar to A S2 A, which is symmetric positive
    semi-definite): two symmetric eigendecompositions, negative round-off eigenvalues clamped to 0. The result is
    clamped at 0 (it can come out a few ulps below when the Gaussians are equal)."""
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64).reshape(-1) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    for name, value in (("mu2", mu2),):
        if value.shape != (d,):
            raise ValueError(f"{name}: expected a mean of dimension {d} (as mu1), got shape {tuple(value.shape)}")
    for name, value in (("sigma1", s1), ("sigma2", s2)):
        if value.shape != (d, d):
            raise ValueError(f"{name}: expected a {d}x{d} covariance (mu1 has dimension {d}), got shape "
                             f"{tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name}: has NaN or infinite entries")
    root = _symmetric_sqrt(s1)
    middle = root @ s2 @ root
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = float(((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt)
    return max(value, 0.0)


def fd_digits(images, classifier=None) -> float:
    """FD-digits of `images` (at least 2): the Frechet distance between Gaussians fitted to their classifier features
    and to those of all 1,797 real digits (the reference statistics in the classifier file)."""
    net = _classifier(classifier)
    mean, cov = statistics_of(features(images, net))
    return frechet_distance(mean, cov, net.reference["mean"], net.reference["cov"])


def fd_floor(n: int, classifier=None, balanced: bool = False) -> float:
    """The FD-digits of n real digits: what a model that draws exactly from the real digits would score with n
    images (the mean over bootstrap draws, see bootstrap_floors), from the classifier file's table; floor_spread(n)
    is its standard deviation. balanced=True: n digits balanced over the classes (balanced_counts), the floor of
    class-conditional samples with class seed % 10, which is lower (the class proportions do not vary).
    Between the table's sizes both are interpolated linearly in 1/n (the bias of the Frechet distance falls
    roughly as 1/n); beyond its ends, the nearest entry is scaled by n0/n."""
    return _floor_table(n, "mean", classifier, balanced)


def floor_spread(n: int, classifier=None, balanced: bool = False) -> float:
    """The standard deviation over bootstrap draws of the FD-digits of n real digits (fd_floor's spread)."""
    return _floor_table(n, "std", classifier, balanced)


def _floor_table(n, column: str, classifier, balanced: bool) -> float:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n: expected an int >= 2 (FD-digits fits a covariance), got {n!r}")
    if not isinstance(balanced, bool):
        raise TypeError(f"balanced: expected True or False, got {balanced!r}")
    floors = _classifier(classifier).floors["balanced" if balanced else "iid"]
    sizes, values = floors["n"].tolist(), floors[column].tolist()
    if n <= sizes[0] or n >= sizes[-1]:
        n0, v0 = (sizes[0], values[0]) if n <= sizes[0] else (sizes[-1], values[-1])
        return v0 * n0 / n
    k = next(i for i, size in enumerate(sizes) if size >= n)
    if sizes[k] == n:
        return values[k]
    (a, fa), (b, fb) = (sizes[k - 1], values[k - 1]), (sizes[k], values[k])
    t = (1 / n - 1 / a) / (1 / b - 1 / a)
    return fa + t * (fb - fa)


@torch.no_grad()
def predict(images, classifier=None) -> torch.Tensor:
    """The classifier's class (0..9) of each image, int64 [N]."""
    net, x = _classifier(classifier), as_images(images)
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat([net(x[i:i + EVAL_BATCH]).argmax(1) for i in range(0, len(x), EVAL_BATCH)])


def class_accuracy(images, labels, classifier=None) -> float:
    """The share of `images` the classifier assigns to their `labels` (the classes they were asked for)."""
    predicted = predict(images, classifier)
    labels = as_labels(labels, len(predicted))
    if len(predicted) == 0:
        raise ValueError("images: class accuracy needs at least 1 image, got 0")
    return float((predicted == labels).double().mean())


def evaluate(images, labels=None, classifier=None) -> dict:
    """FD-digits, its floor at the same n and, with `labels`, class accuracy (overall and per class), as a dict:
    n, fd_digits, fd_floor and fd_floor_std (the real digits' FD-digits at this n, its spread over draws),
    floor_draws ("balanced" when labels are given and balanced over the classes, as seed % 10 makes them, else
    "iid"; see fd_floor), classifier_heldout_accuracy (the classifier's own); with labels also accuracy, per_class
    ({"0": share, ...} for the classes present) and per_class_count."""
    net = _classifier(classifier)
    x = as_images(images)
    if labels is not None:
        labels = as_labels(labels, len(x))
    balanced = labels is not None and is_balanced(labels)
    classes = [] if labels is None else torch.unique(labels).tolist()
    if len(classes) == 1:  # the reference is all ten digits: FD would measure the class mix, not the images
        result = dict(n=len(x), fd_digits=None, fd_floor=None, fd_floor_std=None, floor_draws=None,
                      fd_skipped=f"every image is of class {classes[0]}, and FD-digits compares with all ten digits, "
                                 f"so it would measure the class mix, not the images; class accuracy is the measure here",
                      classifier_heldout_accuracy=net.heldout_accuracy)
    else:
        mean, cov = statistics_of(features(x, net))
        result = dict(n=len(x), fd_digits=frechet_distance(mean, cov, net.reference["mean"], net.reference["cov"]),
                      fd_floor=fd_floor(len(x), net, balanced), fd_floor_std=floor_spread(len(x), net, balanced),
                      floor_draws="balanced" if balanced else "iid", classifier_heldout_accuracy=net.heldout_accuracy)
    if labels is not None:
        hits = predict(x, net) == labels
        result["accuracy"] = float(hits.double().mean())
        counts = torch.bincount(labels, minlength=NUM_CLASSES)
        correct = torch.bincount(labels, weights=hits.double(), minlength=NUM_CLASSES)
        result["per_class"] = {str(k): float(correct[k] / counts[k]) for k in range(NUM_CLASSES) if counts[k]}
        result["per_class_count"] = {str(k): int(counts[k]) for k in range(NUM_CLASSES) if counts[k]}
    return result


# ----------------------------------------------------------------------------------------------------------
# Sampling a model for evaluation
# ----------------------------------------------------------------------------------------------------------

def sample_model(net, num_samples: int, *, seed: int = 0, solver: str = "heun", num_steps: int = 18,
                 guidance=None, S_churn: float = 0.0, batch: int = 256, **sample_args):
    """(float images [N, 1, 8, 8], labels int64 [N] or None, seeds) from `net`, seeds seed .. seed + N - 1; the class
    of seed s is imagefiles.class_of_seeds (s % label_dim) for a class-conditional net. Sampled in batches of
    `batch` (each image depends only on its seed)."""
    from .sampling.seeded import sample_seeds

    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples: expected an int >= 1, got {num_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    shape = (getattr(net, "img_channels", None), getattr(net, "img_resolution", None))
    if shape != (CHANNELS, RESOLUTION):
        raise ValueError(f"model: the digits classifier is for {RESOLUTION}x{RESOLUTION} grayscale digits, got a "
                         f"model of {shape[0]} channels at resolution {shape[1]}")
    label_dim = int(getattr(net, "label_dim", 0) or 0)
    if label_dim not in (0, NUM_CLASSES):
        raise ValueError(f"model: expected an unconditional model or one of {NUM_CLASSES} classes (the digits), "
                         f"got label_dim {label_dim}")
    if guidance is not None and not label_dim:
        raise ValueError(f"guidance: needs a class-conditional model, got guidance={guidance} for an unconditional one")
    seeds = np.arange(seed, seed + num_samples, dtype=np.int64)
    labels = torch.from_numpy(class_of_seeds(seeds, None, label_dim)) if label_dim else None
    schedule = {} if solver == "dpm_adaptive" else dict(num_steps=num_steps)
    churn = dict(S_churn=S_churn) if S_churn else {}
    images = sample_seeds(net, seeds, (CHANNELS, RESOLUTION, RESOLUTION), labels, batch=batch, solver=solver,
                          guidance=guidance, **schedule, **churn, **sample_args)
    return images, labels, seeds


# ----------------------------------------------------------------------------------------------------------
# fastdiff eval
# ----------------------------------------------------------------------------------------------------------

def add_parser(commands) -> None:
    from .sampling.plan import ADAPTIVE_SOLVERS, SOLVERS

    p = commands.add_parser("eval", help="FD-digits and class accuracy of generated digits (no downloads)",
                            description="FD-digits (the Frechet distance in the features of fastdiff's digits "
                            "classifier, next to the floor of real digits at the same n) and class accuracy of "
                            "8x8 digits: files written by `fastdiff generate`, or samples of a model. docs/quality.md")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="a .npz file or a PNG folder written by `fastdiff generate`")
    source.add_argument("--model", help="a shipped model's name (digits), a model file, a checkpoint or a run folder "
                        "to sample and evaluate")
    p.add_argument("--num-samples", type=int, default=1000, help="--model: images to sample (default 1000)")
    p.add_argument("--solver", choices=[s for s in SOLVERS if s not in ADAPTIVE_SOLVERS], default="heun",
                   help="--model: solver (default heun)")
    p.add_argument("--steps", type=int, default=18, help="--model: sampling steps (default 18)")
    p.add_argument("--guidance", type=float, default=None, help="--model: classifier-free guidance weight w "
                   "(1: plain conditional; default: none)")
    p.add_argument("--S-churn", type=float, default=0.0, dest="S_churn", help="--model: EDM's churn (heun, euler)")
    p.add_argument("--seed", type=int, default=0, help="--model: image i uses seed SEED + i (default 0)")
    p.add_argument("--batch", type=int, default=256, help="--model: images per sampler call (default 256)")
    p.add_argument("--classifier", default=None, help="a classifier file (default: the shipped one)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.set_defaults(run=run)


def _warn_missing(source, seeds) -> None:
    """A PNG folder whose generate.json lists seeds that have no image (a run that did not finish, files deleted):
    say how many are missing, since the score is of the images found."""
    from .generate import parse_seeds
    from .imagefiles import read_settings

    settings = read_settings(source) if Path(source).is_dir() else None
    if not settings or not settings.get("runs"):
        return
    asked = set()
    for record in settings["runs"]:
        asked.update(parse_seeds(record["seeds"]))
    missing = sorted(asked - set(int(s) for s in seeds))
    if missing:
        shown = ", ".join(str(s) for s in missing[:5]) + (", ..." if len(missing) > 5 else "")
        print(f"fastdiff eval: warning: {len(missing)} of the {len(asked)} seeds that fastdiff generate was asked for "
              f"have no image in {source} ({shown}): a run that did not finish? Rerun it to complete the folder; "
              f"the score below is of the {len(seeds)} images found", file=sys.stderr)


def run(args) -> int:
    from ._version import __version__
    from .models import warn_guidance

    if args.num_samples < 2:
        raise ValueError(f"--num-samples: expected >= 2 (FD-digits fits a covariance), got {args.num_samples}")
    if args.batch < 1:
        raise ValueError(f"--batch: expected >= 1, got {args.batch}")
    classifier = load_classifier(None if args.classifier is None else Path(args.classifier))
    settings = {}
    if args.images is not None:
        pixels, labels, seeds = load_generated(args.images)
        images = as_images(pixels, "images")
        _warn_missing(args.images, seeds)
        where = f"{len(images)} images from {args.images}" + ("" if labels is not None else " (no class labels)")
    else:
        from .models import load_model

        if args.steps < 1:
            raise ValueError(f"--steps: expected >= 1, got {args.steps}")
        net = load_model(args.model)
        warn_guidance(net, args.guidance)
        settings = dict(solver=args.solver, steps=args.steps, guidance=args.guidance, S_churn=args.S_churn,
                        seed=args.seed)
        started = time.perf_counter()
        images, labels, _ = sample_model(net, args.num_samples, seed=args.seed, solver=args.solver,
                                         num_steps=args.steps, guidance=args.guidance, S_churn=args.S_churn,
                                         batch=args.batch)
        elapsed = time.perf_counter() - started
        settings["seconds"] = elapsed
        churn = f", S_churn {args.S_churn:g}" if args.S_churn else ""
        guided = f", guidance {args.guidance:g}" if args.guidance is not None else ""
        where = (f"{len(images)} samples of {getattr(net, 'source', args.model)} ({args.solver}, {args.steps} steps"
                 f"{churn}{guided}, seeds {args.seed}..{args.seed + len(images) - 1}; {elapsed:.1f} s)")
    if len(images) < 2:
        raise ValueError(f"images: FD-digits needs at least 2 images (it fits a covariance), got {len(images)}")
    result = evaluate(images, labels, classifier)
    print(f"fastdiff {__version__} eval: {where}")
    print(f"  n {result['n']}")
    if result["fd_digits"] is None:
        print(f"  FD-digits not reported: {result['fd_skipped']}")
    else:
        print(f"  FD-digits {result['fd_digits']:.4f} (floor, {result['floor_draws']} real digits at the same n: "
              f"{result['fd_floor']:.4f} +- {result['fd_floor_std']:.4f}; ratio "
              f"{result['fd_digits'] / result['fd_floor']:.2f})")
    if "accuracy" in result:
        per_class = ", ".join(f"{k}: {v:.2f}" for k, v in result["per_class"].items())
        print(f"  class accuracy {result['accuracy']:.4f} (per class {per_class}; the classifier's own held-out "
              f"accuracy {classifier.heldout_accuracy:.4f})")
    if args.json:
        path = Path(args.json)
        path.write_text(json.dumps(dict(source=args.images or args.model, **settings, **result), indent=1) + "\n")
        print(f"  wrote {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastdiff.quality", description="Build the shipped digits "
                                     "classifier file (needs scikit-learn); see docs/quality.md.")
    parser.add_argument("--build-classifier", action="store_true", required=True,
                        help="train the classifier and write its file with the reference statistics and floors")
    parser.add_argument("--out", type=Path, default=CLASSIFIER_FILE, help=f"where (default {CLASSIFIER_FILE})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the shipped file was "
                        "trained on one thread, which makes the float sums the same on every machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    build_classifier(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
