"""`fastdiff generate`: many images from a model to files, as EDM's generate.py makes the 50,000 images of an FID.

    fastdiff generate [--model digits|PATH] --seeds 0-49999 [--batch 256] [--class K] [--guidance W]
                      (--outdir DIR | --npz FILE) [sampler options] [--overwrite] [--no-progress]

The image of a seed is drawn from that seed alone (its latents and every step's noise come from its own stream,
fastdiff.rng), its class is fastdiff.imagefiles.class_of_seeds's, and the batches are a fixed function of the seed
list and --batch: consecutive chunks of --batch seeds, whatever the number of processes (torchrun) and whatever a
run before this one already wrote. So a seed's image does not depend on how the work was split or resumed. It may
depend on --batch in float32 rounding (torch's Linear and Conv2d pick their GEMM blocking by the batch size), which
moves a uint8 pixel by one level at most, and rarely. docs/generate.md#determinism says exactly what is and is not
guaranteed.

Output: PNG files in fastdiff.imagefiles's layout with generate.json (the settings, compared on every rerun), or
one .npz assembled at the end from per-batch part files kept in a hidden folder beside it. Every file is written
to a temporary name and renamed, so a killed run leaves whole files only; a rerun skips the seeds already written
(an unreadable PNG is redone) and refuses an output written with other settings unless --overwrite.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from ._version import __version__
from .imagefiles import SETTINGS_FILE, _layout_files, class_of_seeds, png_path, read_png, read_settings, save_npz, to_uint8, write_png
from .ops import backends
from .rng import MAX_SEED, randn
from .sampling.plan import ADAPTIVE_SOLVERS, SOLVERS, plan_steps
from .cli_options import add_schedule_arguments
from .training import _duration  # the progress bars' time format

FORMAT = "fastdiff-generate"
MAX_SEEDS = 10_000_000  # seeds per run: a list beyond this is a typo (0-1000000000) rather than a job
SOLVER_CHOICES = [s for s in SOLVERS if s not in ADAPTIVE_SOLVERS]  # dpm_adaptive steps by a batch-wide error norm
SAMPLER_FLAGS = {"num_steps": "--steps", "sigma_min": "--sigma-min", "sigma_max": "--sigma-max", "rho": "--rho",
                 "S_churn": "--S-churn", "S_min": "--S-min", "S_max": "--S-max", "S_noise": "--S-noise",
                 "solver": "--solver"}


def add_parser(commands) -> None:
    p = commands.add_parser("generate", help="generate images from a model to files (PNG or .npz), resumable and "
                            "sharded over torchrun's processes", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="digits", help="a shipped model's name (digits), a model file, a training "
                   "checkpoint or a run folder (default digits)")
    p.add_argument("--seeds", required=True, help="comma-separated ints and inclusive ranges, e.g. 0-49999 or "
                   "0-9,20,30-39; one image per seed")
    p.add_argument("--batch", default="256", help="images per network batch (default 256)")
    p.add_argument("--class", dest="fixed_class", default=None, metavar="K",
                   help="every image of class K (class-conditional models; default: seed %% label_dim)")
    p.add_argument("--guidance", default=None, metavar="W", help="classifier-free guidance weight (class-conditional "
                   "models; 1 = plain conditional sampling, the default)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--outdir", help="folder for the PNG files and generate.json")
    out.add_argument("--npz", help="one .npz file of images, seeds and labels (instead of PNG files)")
    p.add_argument("--solver", choices=SOLVER_CHOICES, default="heun", help="the sampler (default heun, EDM's)")
    p.add_argument("--steps", type=int, default=18, dest="num_steps", help="sampling steps N (default 18)")
    add_schedule_arguments(p)
    p.add_argument("--backend", choices=backends.ACCEPTED, default="auto", help="who runs the sampler's step math")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--overwrite", action="store_true", help="start over: delete the images (and parts) already in "
                   "the output, whatever settings wrote them")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(run=run)


# ----- the seed list -------------------------------------------------------------------------------------------
def parse_seeds(text: str, name: str = "--seeds") -> list[int]:
    """EDM's seed syntax: comma-separated ints and inclusive ranges a-b, e.g. '0-9,20,30-39', in the order given.
    A seed listed twice is an error naming it (and where), as is anything else that is not such a list."""
    accepted = "comma-separated non-negative ints and inclusive ranges a-b with a <= b, e.g. 0-49999 or 0-9,20,30-39"
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name}: expected {accepted}, got {text!r}")
    ranges = []  # (first, last, the item as written)
    total = 0
    for item in text.split(","):
        part = item.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ValueError(f"{name}: {part!r} in {text!r} is not an int or a range a-b; expected {accepted}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if first > last:
            raise ValueError(f"{name}: the range {part!r} in {text!r} runs backwards; expected {accepted}")
        if last > MAX_SEED:
            raise ValueError(f"{name}: seed {last} in {text!r} is beyond the largest seed 2^63 - 1 = {MAX_SEED}")
        total += last - first + 1
        if total > MAX_SEEDS:
            raise ValueError(f"{name}: {text!r} lists more than {MAX_SEEDS:,} seeds (at most that many per run; "
                             f"run the rest as another job)")
        ranges.append((first, last, part))
    by_start = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    for a, b in zip(by_start, by_start[1:]):  # sorted by start, two items overlap only if neighbours do
        if ranges[b][0] <= ranges[a][1]:
            earlier, later = sorted((a, b))
            raise ValueError(f"{name}: seed {ranges[b][0]} is listed twice in {text!r} (in {ranges[earlier][2]!r} and "
                             f"{ranges[later][2]!r}); list each seed once")
    return [seed for first, last, _ in ranges for seed in range(first, last + 1)]


def format_seeds(seeds) -> str:
    """The seed list in the syntax parse_seeds reads, ranges merged: [0, 1, 2, 5] -> '0-2,5'."""
    parts, seeds = [], list(seeds)
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        parts.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(parts)


def make_batches(seeds: list[int], batch: int) -> list[list[int]]:
    """The batches: consecutive chunks of `batch` seeds of the whole seed list (the last may be shorter). A fixed
    function of the list and `batch`: the same for any number of processes and whatever earlier runs wrote."""
    return [seeds[i:i + batch] for i in range(0, len(seeds), batch)]


# ----- checked options -------------------------------------------------------------------------------------------
def _int_option(name: str, text, minimum: int) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def _float_option(name: str, text) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"{name}: expected a finite number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {text!r}")
    return value


def _flagged(error: Exception) -> Exception:
    """A sampler setting's error (named as sample() names it, e.g. 'num_steps: ...') named by its flag instead."""
    message = str(error)
    for param, flag in SAMPLER_FLAGS.items():  # "solver" also names things in prose: only as "solver:" or "solver="
        ahead = r"(?=[:=])" if param == "solver" else r"(?!\w)"
        message = re.sub(rf"(?<![\w-]){param}{ahead}", flag, message)
    return type(error)(message)


def sampler_settings(args) -> dict:
    return {"solver": args.solver, "num_steps": args.num_steps, "sigma_min": args.sigma_min,
            "sigma_max": args.sigma_max, "rho": args.rho, "S_churn": args.S_churn, "S_min": args.S_min,
            "S_max": args.S_max, "S_noise": args.S_noise}


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_safe(value):
    """Settings as plain JSON (no Infinity): non-finite floats as the strings 'inf', '-inf', 'nan'."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def compared(settings: dict) -> dict:
    """The part of the settings that decides the images, compared on a rerun: everything but the model's path (its
    sha256 stands for it) and the run records (batch, device, backend, processes, versions)."""
    kept = {k: v for k, v in settings.items() if k not in ("runs", "model")}
    kept["model_sha256"] = settings.get("model", {}).get("sha256")
    return kept


def _differences(old: dict, new: dict) -> str:
    old, new = _flat(compared(old)), _flat(compared(new))
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return "; ".join(f"{k}: {json.dumps(old.get(k))} there, {json.dumps(new.get(k))} now" for k in keys)


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as {"sampler.solver": ..., ...}, so a difference names the one value that differs."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ----- the job ---------------------------------------------------------------------------------------------------
class Job:
    """One `fastdiff generate` run on this process: the checked options, the model, the batches, the output."""

    def __init__(self, args):
        self.args = args
        self.seeds = parse_seeds(args.seeds)
        self.batch = _int_option("--batch", args.batch, 1)
        self.guidance = None if args.guidance is None else _float_option("--guidance", args.guidance)
        self.fixed_class = None if args.fixed_class is None else _int_option("--class", args.fixed_class, 0)
        if args.npz is not None:
            self.out = Path(args.npz)
            if self.out.suffix != ".npz":
                raise ValueError(f"--npz: expected a file name ending in .npz, got {args.npz!r}")
            if self.out.is_dir():
                raise ValueError(f"--npz: {args.npz!r} is a folder; give a file name ending in .npz (or use --outdir "
                                 f"for PNG files)")
            self.parts = self.out.with_name(f".{self.out.name}.parts")
        else:
            self.out = Path(args.outdir)
            if self.out.suffix == ".npz":
                raise ValueError(f"--outdir: {args.outdir!r} names a .npz file, but --outdir is the folder of PNG "
                                 f"files; write one .npz with --npz {args.outdir}")
            if self.out.exists() and not self.out.is_dir():
                raise ValueError(f"--outdir: {args.outdir!r} exists and is not a folder")
            self.parts = None
        if args.num_steps < 1:
            raise ValueError(f"--steps: expected an int >= 1, got {args.num_steps}")
        try:
            plan_steps(None, **{k: v for k, v in sampler_settings(args).items() if k != "solver"}, solver=args.solver)
        except (ValueError, TypeError) as error:
            raise _flagged(error) from None
        if args.device != "auto":
            from .training import _check_device

            try:
                _check_device(args.device)
            except ValueError as error:
                raise ValueError(f"--{error}") from None

    def load(self, device: torch.device) -> None:
        """The model on `device`, checked against --class and --guidance, and the settings this run writes."""
        from .models import load_model, warn_guidance

        args = self.args
        backends.check_name(args.backend)
        try:
            net = load_model(args.model, device=device, backend=args.backend)
        except (ValueError, TypeError, OSError) as error:
            if not str(error).startswith("model: "):
                raise
            raise type(error)(f"--{error}") from None
        if net.sample_shape is None or len(net.sample_shape) != 3 or net.sample_shape[0] not in (1, 3):
            raise ValueError(f"--model: {args.model!r} does not make images of 1 (grayscale) or 3 (RGB) channels "
                             f"(its sample shape is {net.sample_shape}); fastdiff generate writes images")
        label_dim = int(net.label_dim or 0)
        if label_dim == 0:
            if self.fixed_class is not None:
                raise ValueError(f"--class: the model {args.model!r} is unconditional (label_dim 0) and takes no class; "
                                 f"got --class {self.fixed_class}; leave --class out")
            if self.guidance is not None:
                raise ValueError(f"--guidance: classifier-free guidance needs a class-conditional model, and "
                                 f"{args.model!r} is unconditional (label_dim 0); got --guidance {args.guidance}; "
                                 f"leave --guidance out")
        elif self.fixed_class is not None and self.fixed_class >= label_dim:
            raise ValueError(f"--class: expected a class in 0..{label_dim - 1} (the model's label_dim is {label_dim}), "
                             f"got {self.fixed_class}")
        try:
            self.plan = plan_steps(net, **{k: v for k, v in sampler_settings(args).items() if k != "solver"},
                                   solver=args.solver)
        except (ValueError, TypeError) as error:
            raise _flagged(error) from None
        probe = torch.zeros(1, device=device)
        self.backend = backends.resolve(args.backend, probe, (probe,))  # a named backend that cannot run raises here
        self.net, self.label_dim, self.shape = net, label_dim, tuple(net.sample_shape)
        if label_dim and self.guidance is None:
            self.guidance = 1.0  # plain conditional sampling, recorded as the weight it is
        if int(os.environ.get("RANK", "0")) == 0:
            warn_guidance(net, self.guidance)
        self.settings = _json_safe({
            "format": FORMAT, "version": 1,
            "model": {"source": str(args.model), "file": str(Path(net.source).resolve()),
                      "sha256": file_sha256(net.source)},
            "image": {"channels": self.shape[0], "resolution": [self.shape[1], self.shape[2]]},
            "label_dim": label_dim,
            "class": self.fixed_class,
            "class_rule": ("none (unconditional)" if not label_dim else f"every image class {self.fixed_class}"
                           if self.fixed_class is not None else f"seed % {label_dim}"),
            "guidance": self.guidance,
            "sampler": sampler_settings(args),
        })

    def labels(self, seeds) -> torch.Tensor | None:
        if not self.label_dim:
            return None
        return torch.from_numpy(class_of_seeds(seeds, self.fixed_class, self.label_dim))

    def images(self, seeds: list[int], device: torch.device) -> torch.Tensor:
        """uint8 [B, H, W, C] of these seeds (one batch), on the CPU."""
        latents = randn(seeds, (len(seeds), *self.shape), device=device)
        labels = self.labels(seeds)
        seeds_t = torch.tensor(seeds, dtype=torch.int64, device=device)
        guidance = self.guidance if self.guidance not in (None, 1.0) else None
        from .sampling.front import sample

        x = sample(self.net, latents, None if labels is None else labels.to(device), seeds=seeds_t,
                   guidance=guidance, backend=self.args.backend, **sampler_settings(self.args))
        return to_uint8(x)

    def run_record(self, device, world: int) -> dict:
        seeds = format_seeds(self.seeds)
        if len(seeds) > 1000:
            seeds = f"{len(self.seeds)} seeds from {min(self.seeds)} to {max(self.seeds)} (listed in {seeds.count(',') + 1} items)"
        return {"seeds": seeds,
                "batch": self.batch, "device": str(device), "backend": self.backend, "processes": world,
                "fastdiff": __version__, "torch": torch.__version__,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ----- the output: a PNG folder ----------------------------------------------------------------------------------
def _write_json_atomic(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(value, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_outdir(job: Job, record: dict) -> str:
    """On rank 0, before any image: refuse an outdir written with other settings (unless --overwrite, which deletes
    its images), write generate.json with this run's record. Returns what was found, for the report."""
    outdir, overwrite = job.out, job.args.overwrite
    old = read_settings(outdir) if outdir.is_dir() else None
    pngs = _layout_files(outdir) if outdir.is_dir() else []
    note = ""
    if overwrite and (pngs or old is not None):
        for f in pngs:
            f.unlink()
        note = f"--overwrite: deleted {len(pngs)} images written before"
        old = None
    elif old is None and pngs:
        raise ValueError(f"--outdir: {outdir} holds {len(pngs)} PNG files in the generate layout but no {SETTINGS_FILE}, "
                         f"so what made them is unknown; use another folder, or --overwrite to delete them")
    elif old is not None and old.get("format") != FORMAT:
        raise ValueError(f"--outdir: {outdir / SETTINGS_FILE} was not written by fastdiff generate (no format "
                         f"{FORMAT!r}); use another folder, or --overwrite")
    elif old is not None and compared(old) != compared(job.settings):
        raise ValueError(f"--outdir: {outdir} holds images made with other settings ({_differences(old, job.settings)}); "
                         f"rerun with the same settings to resume, use another folder, or --overwrite to delete them "
                         f"and start over")
    for tmp in outdir.glob("*/.*.png.tmp-*") if outdir.is_dir() else ():
        tmp.unlink(missing_ok=True)  # a killed run's unfinished files (one run at a time per outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    runs = list(old.get("runs", [])) if old is not None else []
    _write_json_atomic(outdir / SETTINGS_FILE, {**job.settings, "runs": runs + [record]})
    return note


def png_done(job: Job, seed: int) -> str:
    """'ok' if the seed's PNG is there, readable and of the model's image shape; 'missing'; else 'bad'."""
    path = png_path(job.out, seed)
    if not path.is_file():
        return "missing"
    try:
        image = read_png(path)
    except (ValueError, OSError):
        return "bad"
    return "ok" if image.shape == (job.shape[1], job.shape[2], job.shape[0]) else "bad"


def write_pngs(job: Job, seeds, images, todo) -> None:
    for seed, image in zip(seeds, images):
        if seed in todo:
            path = png_path(job.out, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png(path, image)


# ----- the output: one .npz --------------------------------------------------------------------------------------
def _part_name(seeds) -> str:
    digest = hashlib.sha1(np.asarray(seeds, dtype=np.int64).tobytes()).hexdigest()[:12]
    return f"part-{seeds[0]}-{len(seeds)}-{digest}.npz"


def prepare_npz(job: Job, record: dict) -> str:
    """On rank 0, before any image: refuse parts or a .npz written with other settings (unless --overwrite), and
    write the parts folder's settings."""
    out, parts, overwrite = job.out, job.parts, job.args.overwrite
    note = ""
    if overwrite:
        removed = []
        if parts.exists():
            shutil.rmtree(parts)
            removed.append(f"the unfinished parts {parts}")
        if out.exists():
            out.unlink()
            removed.append(str(out))
        note = f"--overwrite: deleted {' and '.join(removed)}" if removed else ""
    old_parts = read_settings(parts) if parts.is_dir() else None
    if parts.is_dir() and old_parts is None and any(parts.iterdir()):
        raise ValueError(f"--npz: {parts} (the unfinished parts of {out}) has no {SETTINGS_FILE}; delete it or use "
                         f"--overwrite")
    if old_parts is not None and compared(old_parts) != compared(job.settings):
        raise ValueError(f"--npz: {parts} holds the unfinished parts of a run with other settings "
                         f"({_differences(old_parts, job.settings)}); rerun with those settings to finish it, or "
                         f"--overwrite to delete it and start over")
    if out.exists():
        old = _npz_settings(out)
        if old is None or compared(old) != compared(job.settings):
            why = "no settings of fastdiff generate" if old is None else f"other settings ({_differences(old, job.settings)})"
            raise ValueError(f"--npz: {out} exists and holds {why}; use another file, or --overwrite to replace it")
    for tmp in [*out.parent.glob(f".{out.name}.tmp-*.npz"), *parts.glob(".*.tmp-*.npz")] if out.parent.is_dir() else ():
        tmp.unlink(missing_ok=True)  # a killed run's unfinished files (one run at a time per output)
    parts.mkdir(parents=True, exist_ok=True)
    runs = list(old_parts.get("runs", [])) if old_parts is not None else []
    _write_json_atomic(parts / SETTINGS_FILE, {**job.settings, "runs": runs + [record]})
    return note


def _npz_settings(path: Path) -> dict | None:
    try:
        with np.load(path) as content:
            return json.loads(str(content["settings"])) if "settings" in content.files else None
    except (ValueError, OSError, KeyError):
        return None


def npz_done(job: Job) -> dict[int, tuple[Path, int]]:
    """seed -> (file, index) of every image already made: in the finished .npz (same settings, checked) and in the
    readable parts. An unreadable part (from a crash mid-write of the file system) is reported and redone."""
    found = {}
    sources = sorted(job.parts.glob("part-*.npz")) + ([job.out] if job.out.is_file() else [])
    for source in sources:
        try:
            with np.load(source) as content:
                seeds = content["seeds"]
                ok = content["images"].shape == (len(seeds), job.shape[1], job.shape[2], job.shape[0])
        except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile):
            ok = False
        if not ok:
            print(f"fastdiff generate: note: {source} is unreadable or not of this model's images; its seeds are "
                  f"made again", file=sys.stderr)
            continue
        for index, seed in enumerate(seeds.tolist()):
            found.setdefault(seed, (source, index))
    return found


def write_part(job: Job, seeds, images) -> None:
    labels = job.labels(seeds)
    save_npz(job.parts / _part_name(seeds), images.numpy(), seeds, None if labels is None else labels.numpy())


def assemble_npz(job: Job) -> None:
    """The .npz of the seed list, in its order, from the parts (and a finished .npz of the same settings); then the
    parts folder goes. The parts stay if this fails."""
    found = npz_done(job)
    missing = [s for s in job.seeds if s not in found]
    if missing:
        raise RuntimeError(f"--npz: {len(missing)} seeds have no image after the run (first {missing[:5]}); rerun to "
                           f"make them")
    by_source: dict[Path, list[tuple[int, int]]] = {}
    for position, seed in enumerate(job.seeds):
        source, index = found[seed]
        by_source.setdefault(source, []).append((position, index))
    images = np.zeros((len(job.seeds), job.shape[1], job.shape[2], job.shape[0]), dtype=np.uint8)
    for source, pairs in by_source.items():
        with np.load(source) as content:
            stored = content["images"]
            positions, indices = zip(*pairs)
            images[list(positions)] = stored[list(indices)]
    labels = job.labels(job.seeds)
    save_npz(job.out, images, job.seeds, None if labels is None else labels.numpy(),
             settings=json.dumps(job.settings))
    shutil.rmtree(job.parts)


# ----- processes ---------------------------------------------------------------------------------------------------
class Group:
    """torchrun's process group as generate uses it (none in a single process): fastdiff.training's set-up (gloo on
    CPU, NCCL on cuda:LOCAL_RANK, a barrier after connecting) and its teardown (a barrier on success, none on an
    error path, then destroy_process_group so no gloo thread outlives the run)."""

    def __init__(self, device: str):
        from .training import _distributed_setup

        self.device, self.rank, self.world, self.owns = _distributed_setup(device)
        self.distributed = self.world > 1

    def broadcast(self, value):
        """rank 0's value, on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def total(self, count: int) -> int:
        if not self.distributed:
            return count
        import torch.distributed as dist

        on = self.device if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([count], dtype=torch.int64, device=on)
        dist.all_reduce(t)
        return int(t.item())

    def close(self, synchronize: bool) -> None:
        if not self.owns:
            return
        self.owns = False
        import torch.distributed as dist

        try:
            if synchronize:
                dist.barrier()
        finally:
            dist.destroy_process_group()


class Progress:
    """images done / total, images/s and ETA on stderr: one updated line on a terminal, else a line every 10 s."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.done = total, enabled and total > 0, 0
        self.t0 = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, done: int) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.perf_counter()
        if not self.tty and now - self.last < 10 and done < self.total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else math.inf
        width = 24
        filled = int(width * done / self.total)
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} images  {rate:,.1f} img/s  "
                f"ETA {_duration(eta)}")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def run(args) -> int:
    job = Job(args)  # the options, checked on every rank before any connects
    group = Group(args.device)
    try:
        code = _run(job, group)
    except BaseException:
        group.close(synchronize=False)  # no barrier: another rank may never reach one
        raise
    group.close(synchronize=True)
    return code


def _run(job: Job, group: Group) -> int:
    start = time.perf_counter()
    job.load(group.device)
    record = job.run_record(group.device, group.world)
    png = job.parts is None
    models = group.gather(job.settings["model"]["file"] + " " + job.settings["model"]["sha256"])
    if len(set(models)) > 1:  # e.g. a run folder whose newest checkpoint changed while the ranks loaded it
        raise ValueError(f"--model: the processes loaded different model files ({'; '.join(sorted(set(models)))}); "
                         f"give one model file")
    # rank 0 alone checks and prepares the output; every rank learns its verdict (an error raises on all)
    verdict = None
    if group.rank == 0:
        try:
            verdict = ("ok", (prepare_outdir if png else prepare_npz)(job, record))
        except (ValueError, OSError) as error:
            verdict = (type(error).__name__, str(error))
    kind, message = group.broadcast(verdict)
    if kind != "ok" and group.rank != 0:
        raise SystemExit(2)  # rank 0 reports the error; the others leave with its exit code, quietly
    if kind != "ok":
        raise (OSError if kind == "OSError" else ValueError)(message)
    note = message
    if group.rank == 0 and note:
        print(f"fastdiff generate: {note}", file=sys.stderr)
    old_batches = {r.get("batch") for r in _settings_runs(job)[:-1]} - {job.batch} if group.rank == 0 else ()
    if old_batches:
        print(f"fastdiff generate: note: earlier runs into {job.out} used --batch {sorted(old_batches)}, this one "
              f"{job.batch}; see docs/generate.md#determinism for what that may change", file=sys.stderr)

    batches = make_batches(job.seeds, job.batch)
    # which seeds still need an image: PNGs are checked by all ranks (batch i by rank i % world), parts by rank 0
    if png:
        local = {"missing": [], "bad": []}
        for i in range(group.rank, len(batches), group.world):
            for seed in batches[i]:
                state = png_done(job, seed)
                if state != "ok":
                    local[state].append(seed)
        found = group.gather(local)
        todo = {s for f in found for s in f["missing"] + f["bad"]}
        bad = sorted(s for f in found for s in f["bad"])
    else:
        done = set(npz_done(job)) if group.rank == 0 else None
        todo = group.broadcast(None if done is None else [s for s in job.seeds if s not in done])
        todo, bad = set(todo), []
    if group.rank == 0 and bad:
        print(f"fastdiff generate: {len(bad)} PNG files are unreadable (damaged, or cut short by a crash of the machine) and are made again: "
              f"{format_seeds(bad[:20])}{' ...' if len(bad) > 20 else ''}", file=sys.stderr)
    pending = [b for b in batches if any(s in todo for s in b)]
    progress = Progress(len(todo), job.args.progress and group.rank == 0)
    written = 0
    rounds = -(-len(pending) // group.world)
    for r in range(rounds):
        i = r * group.world + group.rank
        count = 0
        if i < len(pending):
            seeds = pending[i]
            images = job.images(seeds, group.device)  # the whole batch, so its composition never changes
            if png:
                write_pngs(job, seeds, images, todo)
            else:
                write_part(job, seeds, images)
            count = sum(s in todo for s in seeds)
        written += group.total(count)
        progress.update(written)
    progress.close()
    if not png:
        if group.distributed:
            import torch.distributed as dist

            dist.barrier()  # every part is on disk before rank 0 reads them
        if group.rank == 0:
            assemble_npz(job)
    elapsed = time.perf_counter() - start
    if group.rank == 0:
        skipped = len(job.seeds) - len(todo)
        rate = f"{written / elapsed:,.1f} img/s" if written else "nothing to make"
        what = f"{job.out}/ (PNG files and {SETTINGS_FILE})" if png else f"{job.out}"
        print(f"fastdiff generate: {len(job.seeds)} images of seeds {_short(job.seeds)}: wrote {written}"
              f"{f' ({len(bad)} of them redone, unreadable before)' if bad else ''}, skipped {skipped} already made; "
              f"{elapsed:.1f} s ({rate}, {group.world} process{'es' if group.world > 1 else ''}, {job.backend} "
              f"backend on {group.device}) -> {what}")
    return 0


def _settings_runs(job: Job) -> list:
    settings = read_settings(job.out if job.parts is None else job.parts)
    return list(settings.get("runs", [])) if settings else []


def _short(seeds) -> str:
    text = format_seeds(seeds)
    return text if len(text) <= 60 else text[:57] + "..."
