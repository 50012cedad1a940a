"""The `fastdiff` command: `fastdiff sample` (the built-in main job), `fastdiff train`, `fastdiff info` and
`fastdiff build`."""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from ._version import __version__
from .ops import backends
from ._memory import require_memory
from ._validate import check_int
from .metrics import NUM_PROJECTIONS, sliced_wasserstein
from .mixture import GaussianMixture
from .png import scatter_image, write_png
from .rng import randn
from .sampling.front import sample
from .sampling.loop import require_loop_memory
from .sampling.plan import ADAPTIVE_SOLVERS, SOLVERS, plan_steps
from .cli_options import add_schedule_arguments
from .sample_cli import DTYPES, run_sample_model

DEFAULT_IMAGES = 1000  # fastdiff sample of a model: enough for a stable FD-digits, seconds on 2 cores
DEFAULT_POINTS = 8192  # fastdiff sample --model mixture


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastdiff", description="Fast diffusion sampling and training.")
    parser.add_argument("--version", action="version", version=f"fastdiff {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("sample", help="sample a model (default: the shipped digits model) and draw the samples; "
                            "--model mixture: the 2-D Gaussian mixture with its exact denoiser")
    p.add_argument("--model", default="digits",
                   help="digits (the class-conditional model that ships with fastdiff, default), mixture (the built-in "
                        "2-D mixture with its exact denoiser), or a model file, training checkpoint or run folder")
    p.add_argument("--num-samples", type=int, default=None,
                   help=f"batch size (default {DEFAULT_IMAGES} for a model, {DEFAULT_POINTS} for the mixture)")
    p.add_argument("--num-steps", "--steps", type=int, default=18, dest="num_steps",
                   help="number of sampling steps N, as sample(num_steps=) (default 18)")
    p.add_argument("--solver", choices=[s for s in SOLVERS if s not in ADAPTIVE_SOLVERS], default="heun",
                   help="the sampler (default heun, EDM's)")
    p.add_argument("--class", type=int, default=None, dest="class_label",
                   help="class of every sample (class-conditional models; default: sample b gets class (SEED + b) "
                        "%% label_dim, a row of the picture per class)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight w (class-conditional models): 1 is the plain conditional "
                        "model (default), 0 the unconditional one, w > 1 guides")
    add_schedule_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="sample b uses seed SEED + b (default 0)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="sampler state dtype")
    p.add_argument("--backend", choices=backends.ACCEPTED, default="auto", help="who runs the fused step ops")
    p.add_argument("--device", default="auto", help="where a model runs: auto (cuda when there is a GPU, default), "
                   "cpu, cuda, cuda:1, ...")
    p.add_argument("--columns", type=int, default=10,
                   help="samples per row of the picture (per class for class-conditional models; default 10)")
    p.add_argument("--out", default="fastdiff-samples.png", help="PNG of the samples ('' to skip)")

    add_train_parser(commands)
    from . import generate, quality  # their commands live with their code

    generate.add_parser(commands)
    quality.add_parser(commands)
    commands.add_parser("info", help="show versions and which backends can run here, and why not")
    p = commands.add_parser("build", help="compile the C++ kernels for the installed torch (after torch changed, or "
                            "after an install that could not build them), into a cache that fastdiff loads from")
    p.add_argument("--part", choices=("cpu", "cuda", "all"), default="all",
                   help="which kernels: cpu, cuda, or all (default; cuda only with a CUDA build of torch)")
    p.add_argument("--verbose", action="store_true", help="show the compiler commands and output")
    return parser


TRAIN_HELP = {
    "data": "built-in data set (mixture, moons, swiss_roll, checkerboard, digits) or a path (image folder, .npy, "
            ".pt); digits trains with its recipe (the shipped model's options: fastdiff.training.RECIPES) for "
            "every option not given",
    "net": "network: auto (MLP for points, U-Net for images), mlp or unet",
    "precond": "preconditioning and its loss: edm, vp or ve",
    "steps": "total optimizer steps (a resumed run continues up to this many)",
    "batch_size": "global batch size (split over torchrun's processes)",
    "lr": "Adam learning rate after the ramp-up",
    "lr_rampup_kimg": "learning-rate ramp-up, in thousands of images",
    "betas": "Adam's betas, two numbers in [0, 1)",
    "eps": "Adam's epsilon",
    "ema_halflife_kimg": "EMA half-life, in thousands of images",
    "ema_rampup_ratio": "EMA half-life ramp-up: at most this fraction of the images seen ('none': off)",
    "grad_clip": "clip the gradient norm to this value ('none': no clipping)",
    "precision": "fp32, or bf16 autocast of the network",
    "conditional": "condition on the data set's class labels (with label dropout, for guidance)",
    "label_dropout": "probability of dropping a label in training, conditional runs only ('none': 0.1 for the "
                     "networks train builds)",
    "dropout": "dropout of the U-Net's residual blocks",
    "net_kwargs": "JSON object of extra network arguments, e.g. '{\"hidden\": 512}'",
    "seed": "seed of the batch order, the loss noise and the network's initialisation",
    "backend": "who runs the fused loss",
    "device": "auto, cpu, cuda, cuda:1, ...",
    "run_dir": "folder for config.json, log.jsonl, sample grids and checkpoints ('' for none); it must not hold "
               "another run unless --resume or --overwrite is given",
    "checkpoint_every": "steps between checkpoints",
    "keep_checkpoints": "newest checkpoints kept",
    "sample_every": "steps between sample grids (and distance to the data for points)",
    "num_grid": "images in a sample grid (points: at least this many samples)",
    "log_every": "steps between log records",
    "progress": "no progress bar on stderr",
    "resume": "'latest' (newest readable checkpoint in --run-dir) or a checkpoint path",
    "overwrite": "delete the run already in --run-dir (only the files fastdiff wrote) and start a new one",
}
CLI_RUN_DIR = "fastdiff-run"  # the command line writes files by default; train() does not (run_dir=None)


def add_train_parser(commands) -> None:
    """`fastdiff train`: one option per TrainConfig field. Options not given are absent from the parsed arguments
    (default argparse.SUPPRESS), so train() fills them from a data set's recipe or from TrainConfig's defaults,
    which the help shows."""
    import dataclasses
    import types
    import typing

    from .training import TrainConfig

    p = commands.add_parser("train", help="train a denoiser (EDM recipe) on a built-in data set or your own data",
                            argument_default=argparse.SUPPRESS)
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind, optional = hints[f.name], False
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kind, optional = args[0], len(args) < len(typing.get_args(kind))
        text = TRAIN_HELP[f.name]
        if f.name == "progress":
            p.add_argument("--no-progress", dest="progress", action="store_false", help=text)
        elif kind is bool:
            p.add_argument(flag, dest=f.name, action="store_true", help=text + " (default off)")
            if f.name == "conditional":
                p.add_argument("--no-" + flag[2:], dest=f.name, action="store_false",
                               help="do not condition on labels (overrides a recipe's --conditional)")
        elif f.name == "betas":
            p.add_argument(flag, type=float, nargs=2, metavar=("BETA1", "BETA2"),
                           help=text + f" (default {' '.join(map(str, default))})")
        elif f.name == "net_kwargs":
            p.add_argument(flag, type=_json_object, metavar="JSON", help=text + " (default {})")
        elif f.name == "run_dir":
            p.add_argument(flag, help=text + f" (default {CLI_RUN_DIR})")
        elif f.name in ("net", "precond", "precision", "backend"):
            choices = {"net": ("auto", "mlp", "unet"), "precond": ("edm", "vp", "ve"), "precision": ("fp32", "bf16"),
                       "backend": backends.ACCEPTED}[f.name]
            p.add_argument(flag, choices=choices, help=text + f" (default {default})")
        elif kind in (int, float):
            converter = (_optional_float if kind is float else _optional_int) if optional else kind
            p.add_argument(flag, type=converter, help=text + f" (default {'none' if default is None else default})")
        elif kind is str:
            p.add_argument(flag, help=text + (f" (default {default})" if default is not None else ""))
        else:
            raise TypeError(f"add_train_parser: TrainConfig.{f.name} has the type {kind!r}, which has no flag")


def _optional_float(text: str):
    """A float, or None for 'none' (for TrainConfig's `float | None` fields)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _optional_int(text: str):
    """An int, or None for 'none' (for TrainConfig's `int | None` fields)."""
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return run_train(args)
        if args.command == "build":
            return run_build(args)
        if hasattr(args, "run"):  # generate, eval: set by their modules' add_parser
            return args.run(args)
        return run_sample(args) if args.command == "sample" else run_info()
    except (ValueError, TypeError, ImportError, OSError, backends.BackendUnavailableError) as error:
        print(f"fastdiff {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = {"generate": "; the images written are kept: rerun the same command to finish",
                 "train": "; the checkpoints written are kept: rerun with --resume latest to continue"}
        print(f"\nfastdiff {args.command}: interrupted{again.get(args.command, '')}", file=sys.stderr)
        return 130


def run_sample(args) -> int:
    """`fastdiff sample`: a model's images (or points) by default, the 2-D oracle demo with --model mixture."""
    if args.model == "mixture":
        if os.path.exists("mixture"):
            raise ValueError("--model: 'mixture' is both the built-in demo and a file or folder here; say which: "
                             "'./mixture' for the file or folder, or run from another directory for the demo")
        for flag, value in (("--class", args.class_label), ("--guidance", args.guidance)):
            if value is not None:
                raise ValueError(f"{flag}: the mixture demo is unconditional, got {flag} {value}; it applies to "
                                 f"class-conditional models (--model digits)")
        if args.num_samples is None:
            args.num_samples = DEFAULT_POINTS
        return run_sample_mixture(args)
    if args.num_samples is None:
        args.num_samples = DEFAULT_IMAGES
    return run_sample_model(args)


def run_sample_mixture(args) -> int:
    """Sample the built-in mixture, report the work done and the sample quality, and draw the samples."""
    mixture = GaussianMixture.ring()
    if args.num_samples < 1:
        raise ValueError(f"--num-samples: must be >= 1, got {args.num_samples}")
    if args.seed < 0:
        raise ValueError(f"--seed: must be >= 0, got {args.seed}")
    dtype = DTYPES[args.dtype]
    require_job_memory(args.num_samples, args.num_steps, mixture.dim, dtype)
    seeds = list(range(args.seed, args.seed + args.num_samples))
    settings = dict(num_steps=args.num_steps, sigma_min=args.sigma_min, sigma_max=args.sigma_max, rho=args.rho,
                    S_churn=args.S_churn, S_min=args.S_min, S_max=args.S_max, S_noise=args.S_noise)
    plan = plan_steps(mixture, **settings, solver=args.solver)
    latents = randn(seeds, (args.num_samples, mixture.dim), dtype=dtype)
    backend = backends.resolve(args.backend, latents, (latents,))  # what runs on these (CPU) tensors

    start = time.perf_counter()
    x = sample(mixture, latents, **settings, solver=args.solver, seeds=seeds, dtype=dtype, backend=args.backend)
    elapsed = time.perf_counter() - start

    reference = mixture.sample(args.num_samples, torch.Generator().manual_seed(args.seed + 1))
    floor = mixture.sample(args.num_samples, torch.Generator().manual_seed(args.seed + 2))
    print(f"fastdiff {__version__}: sampled {args.num_samples} points of the built-in 2-D mixture "
          f"({mixture.means.shape[0]} Gaussians on a ring, std {float(mixture.stds[0]):g}) with its exact denoiser")
    print(f"  solver {args.solver}, {plan.num_steps} steps, NFE {plan.nfe}, S_churn {args.S_churn:g}, "
          f"state {args.dtype}, backend {backend}, {elapsed:.3f} s ({args.num_samples * plan.nfe / elapsed / 1e6:.2f} M point-evaluations/s)")
    print(f"  mean log-density under the data: samples {float(mixture.log_prob(x).mean()):.4f}, "
          f"exact draws {float(mixture.log_prob(reference).mean()):.4f}")
    print(f"  sliced Wasserstein distance to exact draws: {sliced_wasserstein(x, reference):.4f} "
          f"(two exact draws: {sliced_wasserstein(floor, reference):.4f})")
    if args.out:
        extent = 1.6
        grid = torch.linspace(-extent, extent, 512, dtype=torch.float64)
        gy, gx = torch.meshgrid(grid.flip(0), grid, indexing="ij")
        density = mixture.log_prob(torch.stack([gx, gy], dim=-1).reshape(-1, 2)).exp().reshape(512, 512)
        write_png(args.out, scatter_image(x, extent, background=density / density.max()))
        print(f"  wrote {args.out}")
    return 0


def report_bytes_per_point(dim: int) -> int:
    """What the quality report holds per point at its peak, at least: the sliced Wasserstein distance's float64
    copies of two point sets, and while it sorts the second set's projections, the first set's sorted projections
    and the second's projections, sorted values and int64 sort indices ([n, NUM_PROJECTIONS] each); plus the two
    exact float64 draws. (Measured: 5.9 KB per point of peak resident memory for the whole job at 2^19 points.)"""
    return 4 * NUM_PROJECTIONS * 8 + 4 * dim * 8


def require_job_memory(num_samples: int, num_steps, dim: int, dtype: torch.dtype) -> None:
    """Refuse, before anything is allocated, a job that cannot fit in memory: the quality report's points
    (--num-samples), or the sampler's per-step tables for this batch (--num-steps)."""
    require_memory("--num-samples", str(num_samples), {torch.device("cpu"): num_samples * report_bytes_per_point(dim)},
                   f"the sample quality report (the sliced Wasserstein distance sorts {NUM_PROJECTIONS} float64 "
                   "projections of every point)", "sample fewer points")
    num_steps = check_int("num_steps", num_steps, minimum=1)  # named as sample() names it, like its other errors
    require_loop_memory(num_steps, None, num_samples, "cpu", dtype, name="--num-steps")


def run_train(args) -> int:
    """Train with the options given (the others come from the data's recipe or TrainConfig's defaults); print
    where the run went, how close its samples are (for points) and the command that samples it."""
    from .training import train

    options = {k: v for k, v in vars(args).items() if k not in ("command", "data")}
    options["run_dir"] = options.get("run_dir", CLI_RUN_DIR) or None
    start = time.perf_counter()
    result = train(getattr(args, "data", "mixture"), **options)
    if _rank() != 0:
        return 0
    last = result.history[-1] if result.history else {}
    if not result.history:
        print(f"fastdiff {__version__}: nothing to train: the run is already at step {result.step} of --steps "
              f"{result.config.steps}")
    else:
        done = f"trained to step {result.step}" if result.config.resume else f"trained {result.step} steps"
        print(f"fastdiff {__version__}: {done} ({result.nimg / 1000:g} kimg) on {result.dataset.name} in "
              f"{time.perf_counter() - start:.1f} s; last loss {last['loss']:.4f}")
    if "sw" in last:
        print(f"  sliced Wasserstein distance of EMA samples to the data: {last['sw']:.4f} "
              f"(two halves of the data: {last['sw_floor']:.4f})")
    if "eval_error" in last:
        print(f"  the last evaluation failed: {last['eval_error']}")
    if result.run_dir is not None:
        print(f"  wrote {result.run_dir}/ (config.json, log.jsonl, samples-*.png, checkpoint-*.pt)")
        run = result.run_dir  # relative paths as ./path: a bare "digits" would name the shipped model
        print(f"  sample it: fastdiff sample --model {run if run.is_absolute() else './' + run.as_posix()}")
    return 0


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise): only rank 0 reports."""
    import os

    return int(os.environ.get("RANK", "0"))


def run_build(args) -> int:
    """Build the C++ parts for this torch into fastdiff's cache (fastdiff/_ext.py); 1 if a part asked for failed."""
    from . import _ext

    parts = ["cpu", "cuda"] if args.part == "all" else [args.part]
    if args.part == "all" and torch.version.cuda is None:
        parts = ["cpu"]
        print(f"fastdiff build: cuda: skipped, torch {torch.__version__} is a CPU build")
    failed = 0
    for part in parts:
        if _ext.prebuilt_problem(part) is None:
            print(f"fastdiff build: {part}: the installed build matches torch {torch.__version__}; nothing to do")
            continue
        started = time.perf_counter()
        print(f"fastdiff build: {part}: compiling for torch {torch.__version__} into {_ext.cache_dir(part)} ...",
              flush=True)
        try:
            _ext.build(part, verbose=args.verbose)
        except ImportError as error:
            print(f"fastdiff build: {part}: error: {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"fastdiff build: {part}: done in {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


def run_info() -> int:
    """Print versions, how the C++ parts were built, every backend's availability with its reasons, and what auto
    picks for each device."""
    from . import _ext

    cuda = torch.cuda.is_available()
    print(f"fastdiff {__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA devices: {torch.cuda.device_count() if cuda else 0}")
    built = _ext.build_info() or {}
    if built.get("torch"):
        print(f"C++ parts installed: {', '.join(built.get('built', [])) or 'none'}, built for torch {built['torch']}"
              + (f" ({built['cxx_standard']})" if built.get("cxx_standard") else "")
              + (f"; CUDA toolkit: {built['cuda_home']}; archs: {built['cuda_archs']}" if built.get("cuda_home") else ""))
    for part, reason in built.get("not_built", {}).items():
        print(f"  not built at install: {part}: {reason}")
    for part in ("cpu", "cuda"):
        if _ext.prebuilt_problem(part) is not None and _ext.load_cached(part) is not None:
            print(f"  {part}: loaded from the `fastdiff build` cache {_ext.cache_dir(part)}")
    for name, reasons in backends.info().items():
        if reasons:
            print(f"  {name:10s} unavailable: " + "; ".join(reasons))
        elif name == "triton" and not cuda:
            where = "on CPU tensors through the interpreter (TRITON_INTERPRET=1 is set)" if backends.triton_interpreted() \
                else "nowhere here: no CUDA device, and TRITON_INTERPRET=1 (the interpreter, for testing) is not set"
            print(f"  {name:10s} installed; runs {where}")
        elif name == "cuda" and not cuda:
            print(f"  {name:10s} installed (its ops are registered); runs nowhere here: no CUDA device")
        else:
            print(f"  {name:10s} available")
    for device in ["cpu"] + (["cuda"] if cuda else []):
        x = torch.empty(1, device=device)
        print(f"  auto       -> {backends.resolve('auto', x, (x,))} for float32 {device} tensors")
    return 0
