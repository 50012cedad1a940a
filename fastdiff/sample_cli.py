"""`fastdiff sample` of a trained model (the shipped digits model by default, or a model file, checkpoint or run
folder): sample it, report the work and the quality, and draw a picture (a row per class for class-conditional
models). The 2-D mixture demo (`--model mixture`) is in cli.py."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from ._memory import require_memory
from ._version import __version__
from ._validate import check_int
from .imagefiles import class_of_seeds
from .training import _check_device
from .ops import backends
from .png import write_png
from .sampling.seeded import sample_seeds
from .sampling.plan import plan_steps

DIGITS_SHAPE = (1, 8, 8)  # what the shipped digits classifier (fastdiff.quality) judges
GRID_MIN_SIZE = 360  # pixels across the picture: 8x8 digits are enlarged 4x
BATCH = 1000  # samples per call of the sampler
DTYPES = {"float32": torch.float32, "float64": torch.float64}  # --dtype: the sampler state


def run_sample_model(args) -> int:
    from .models import load_model, warn_guidance

    num_samples = check_int("--num-samples", args.num_samples, minimum=1)
    if args.seed < 0:
        raise ValueError(f"--seed: must be >= 0, got {args.seed}")
    columns = check_int("--columns", args.columns, minimum=1)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    _check_device(args.device)
    if args.out:  # refused before the sampling, not after it
        folder = Path(args.out).parent
        if not folder.is_dir():
            raise ValueError(f"--out: the folder {str(folder)!r} of {args.out!r} does not exist; create it first")
    net = load_model(args.model, device=args.device, backend=args.backend)
    shape = net.sample_shape
    if shape is None:
        raise ValueError(f"--model: {args.model!r} does not say what shape its samples have")
    labels = _labels(net, args, num_samples)
    warn_guidance(net, args.guidance)
    dtype = DTYPES[args.dtype]
    seeds = list(range(args.seed, args.seed + num_samples))
    settings = dict(num_steps=args.num_steps, sigma_min=args.sigma_min, sigma_max=args.sigma_max, rho=args.rho,
                    S_churn=args.S_churn, S_min=args.S_min, S_max=args.S_max, S_noise=args.S_noise)
    plan = plan_steps(net, **settings, solver=args.solver)
    per_sample = 4 * math.prod(shape)
    require_memory("--num-samples", str(num_samples), {torch.device("cpu"): 3 * num_samples * per_sample},
                   "the samples (float32) and the quality report's copies", "sample fewer")
    probe = torch.zeros(1, dtype=dtype, device=args.device)
    backend = backends.resolve(args.backend, probe, (probe,))  # what runs the step math (a named one that cannot, raises)
    start = time.perf_counter()
    x = sample_seeds(net, seeds, shape, labels, batch=BATCH, device=args.device, dtype=dtype, **settings,
                     solver=args.solver, backend=args.backend, guidance=args.guidance)
    elapsed = time.perf_counter() - start

    guided = args.guidance is not None and args.guidance not in (0.0, 1.0)  # each evaluation runs a batch of 2B
    evaluations = num_samples * plan.nfe * (2 if guided else 1)
    kind = "images" if len(shape) == 3 else "points"
    print(f"fastdiff {__version__}: sampled {num_samples} {kind} {tuple(shape)} of {_describe(net, args.model)}")
    conditioning = ""
    if net.label_dim:
        conditioning = (f", class {args.class_label}" if args.class_label is not None
                        else f", classes (seed % {net.label_dim})") + f", guidance {1.0 if args.guidance is None else args.guidance:g}"
    print(f"  solver {args.solver}, {plan.num_steps} steps, NFE {plan.nfe}, S_churn {args.S_churn:g}{conditioning}, "
          f"state {args.dtype}, backend {backend}, {elapsed:.2f} s ({num_samples / elapsed:,.0f} {kind}/s, "
          f"{evaluations / elapsed:,.0f} {kind[:-1]}-evaluations/s of the network)")
    if args.out:  # written before the quality report, so a failure there loses no picture
        write_png(args.out, _picture(net, x, labels, columns))
    _report_quality(net, x, labels, shape)
    if args.out:
        layout = ""
        if len(shape) == 3 and labels is not None and len(set(labels.tolist())) > 1:
            counts = torch.bincount(labels.cpu(), minlength=net.label_dim)
            shown = min(columns, int(counts[counts > 0].min()))
            layout = f" (a row per class, {shown} samples each)" if shown == min(columns, int(counts.max())) else \
                f" (a row per class, up to {min(columns, int(counts.max()))} samples each)"
        print(f"  wrote {args.out}{layout}")
    return 0


def _labels(net, args, num_samples: int):
    """Class labels [B] for a class-conditional model (seed % label_dim, or --class); None otherwise."""
    if not net.label_dim:
        for flag, value in (("--class", args.class_label), ("--guidance", args.guidance)):
            if value is not None:
                raise ValueError(f"{flag}: the model {args.model!r} is not class-conditional, got {flag} {value}")
        return None
    if args.class_label is not None and not 0 <= args.class_label < net.label_dim:
        raise ValueError(f"--class: expected a class in 0..{net.label_dim - 1}, got {args.class_label}")
    seeds = range(args.seed, args.seed + num_samples)
    return torch.as_tensor(class_of_seeds(seeds, args.class_label, net.label_dim), device=args.device)


def _describe(net, source) -> str:
    info = getattr(net, "info", {}) or {}
    if info.get("description"):
        return info["description"]
    config = info.get("config") or {}
    data = config.get("data", "?")
    return f"the model in {getattr(net, 'source', source)} (trained on {data}, step {info.get('step', '?')})"


def _report_quality(net, x: torch.Tensor, labels, shape) -> None:
    """FD-digits and class accuracy for 8x8 grayscale images (the shipped classifier's domain); for 2-D points of a
    built-in data set, the sliced Wasserstein distance to that data."""
    if tuple(shape) == DIGITS_SHAPE:
        from .quality import evaluate

        if x.shape[0] < 2:
            print("  no FD-digits for a single sample (a covariance needs at least 2); sample more")
            return

        q = evaluate(x.cpu(), None if labels is None else labels.cpu())
        if q.get("fd_digits") is None:
            line = f"  FD-digits not reported: {q['fd_skipped']}"
        else:
            line = (f"  FD-digits {q['fd_digits']:.3f} (lower is better; {q['n']} real digits score "
                    f"{q['fd_floor']:.3f} +- {q['fd_floor_std']:.3f})")
        if q.get("accuracy") is not None:
            line += f"; class accuracy {100 * q['accuracy']:.1f}% (the shipped digits classifier)"
        print(line)
        return
    config = (getattr(net, "info", {}) or {}).get("config") or {}
    if len(shape) == 1 and config.get("data") in ("mixture", "moons", "swiss_roll", "checkerboard"):
        from . import data
        from .metrics import sliced_wasserstein

        points = data.load(config["data"]).data
        n = min(len(points), x.shape[0])
        print(f"  sliced Wasserstein distance to {n} points of {config['data']!r}: "
              f"{sliced_wasserstein(x[:n].cpu(), points[:n]):.4f}")
        return
    print("  no quality measure for this model's data (FD-digits is for 8x8 grayscale digits)")


def _picture(net, x: torch.Tensor, labels, columns: int) -> torch.Tensor:
    """A grid of images (a row per class when every class is present) or a scatter of points."""
    from .grids import image_grid

    x = x.cpu()
    if x.ndim == 2:
        from .png import scatter_image

        extent = 1.1 * float(x[:, :2].abs().max())
        return scatter_image(x[:, :2] if x.shape[1] > 1 else torch.cat([x, torch.zeros_like(x)], 1), extent)
    if labels is not None and len(set(labels.tolist())) > 1:
        labels = labels.cpu()
        rows = []
        for k in range(net.label_dim):
            members = x[labels == k][:columns]
            if len(members):
                blank = torch.full((columns - len(members), *x.shape[1:]), 1.0)  # white fills a short row
                rows.append(torch.cat([members, blank]))
        x = torch.cat(rows)
    else:
        x = x[:columns * columns]
    return image_grid(x, min_size=GRID_MIN_SIZE, columns=columns)
