"""fastdiff.train (this module: fastdiff.training): EDM-style training of a denoiser (Karras et al. 2022, training/training_loop.py semantics).

One step: the global batch's images (a deterministic function of seed and step) -> the loss (fastdiff.loss, fused
around the network) summed and divided by the batch size -> backward -> gradients nan_to_num'ed and optionally
clipped -> Adam with the learning rate ramped up over `lr_rampup_kimg` -> EMA with a half-life in images.

Everything random is a function of (seed, step, sample position) or lives in the checkpoint: the batch order
(one permutation per epoch), each sample's loss noise and noise level (fastdiff's per-sample seeds) and torch's
generator (dropout, label dropout). So training N steps, stopping, and resuming for N more gives bit for bit the
weights of 2N uninterrupted steps on the CPU, and the samples a rank sees do not depend on how many ranks there are.

Multi-process: under torchrun (or with torch.distributed initialised) the network is wrapped in DDP, each rank
takes its slice of the global batch, and rank 0 alone writes logs, grids and checkpoints.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ._version import __version__
from .ops.backends import check_name
from .loss import EDMLoss, VELoss, VPLoss
from .modelspec import MODEL_FORMAT, model_spec
from .precond import EDMPrecond, Precond, VEPrecond, VPPrecond
from ._validate import check_choice, check_int, check_positive, check_real

PRECONDS = {"edm": (EDMPrecond, EDMLoss), "vp": (VPPrecond, VPLoss), "ve": (VEPrecond, VELoss)}
PRECISIONS = ("fp32", "bf16")
NETS = ("auto", "mlp", "unet")
CHECKPOINT_FORMAT = "fastdiff-train-checkpoint"
SEED_STRIDE = 0x9E3779B97F4A7C15  # spreads runs of different seeds apart in the per-sample seed space
SEED_SPACE = 2**62  # run bases below 2^62, so base + sample position stays below 2^63 (an int64 seed)
DATA_ON_DEVICE_BYTES = 2**31  # data sets up to 2 GiB move to the training device once
# What a resumed run may change: how long it runs and how it reports, not what it computes.
RESUMABLE_CHANGES = {"steps", "run_dir", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every",
                     "progress", "resume", "num_grid", "overwrite"}
# Built-in data sets with a recipe: the options of the model that ships with fastdiff. A run on that data takes the
# recipe's value for every option not given explicitly (train()'s keywords, the command line's flags).
RECIPES = {"digits": dict(conditional=True, steps=4000, batch_size=256, lr=1e-3)}
# The files a run writes in its run_dir (and only these are deleted by overwrite=True).
RUN_FILE = re.compile(r"(config\.json|log\.jsonl|checkpoint-\d+\.pt|samples-\d+\.png)")
TEMPORARY_FILE = re.compile(r"\.(checkpoint-\d+\.pt|log\.jsonl)\.tmp-(\d+)")  # save_atomic's, _truncate_log's


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint; see `train` for the meaning)."""

    data: str = "mixture"
    net: str = "auto"
    precond: str = "edm"
    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    lr_rampup_kimg: float = 10.0
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    ema_halflife_kimg: float = 500.0
    ema_rampup_ratio: float | None = 0.05
    grad_clip: float | None = None
    precision: str = "fp32"
    conditional: bool = False
    label_dropout: float | None = None
    dropout: float = 0.0
    net_kwargs: dict = field(default_factory=dict)
    seed: int = 0
    backend: str = "auto"
    device: str = "auto"
    run_dir: str | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    sample_every: int = 1000
    num_grid: int = 64
    log_every: int = 100
    progress: bool = True
    resume: str | None = None
    overwrite: bool = False

    def check(self) -> "TrainConfig":
        """Validate every field; errors name the field, the value and what is accepted."""
        check_choice("precond", self.precond, tuple(PRECONDS))
        check_choice("net", self.net, NETS)
        check_choice("precision", self.precision, PRECISIONS)
        check_name(self.backend)
        for name in ("steps", "batch_size", "checkpoint_every", "sample_every", "log_every", "keep_checkpoints", "num_grid"):
            check_int(name, getattr(self, name), minimum=1 if name not in ("steps",) else 0)
        check_int("seed", self.seed, minimum=0)
        check_positive("lr", self.lr)
        check_real("lr_rampup_kimg", self.lr_rampup_kimg, minimum=0.0)
        check_real("ema_halflife_kimg", self.ema_halflife_kimg, minimum=0.0)
        if self.ema_rampup_ratio is not None:
            check_positive("ema_rampup_ratio", self.ema_rampup_ratio)
        if self.grad_clip is not None:
            check_positive("grad_clip", self.grad_clip)
        check_positive("eps", self.eps)
        if len(tuple(self.betas)) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)
        for name in ("label_dropout", "dropout"):
            if getattr(self, name) is None:
                continue
            value = check_real(name, getattr(self, name), minimum=0.0)
            if value >= 1:
                raise ValueError(f"{name}: expected a probability in [0, 1), got {value}")
        _check_device(self.device)
        if not isinstance(self.net_kwargs, dict):
            raise TypeError(f"net_kwargs: expected a dict of network arguments, got {type(self.net_kwargs).__name__}")
        for name in ("conditional", "progress", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if self.overwrite and self.resume:
            raise ValueError(f"overwrite: True deletes the run in run_dir, resume={self.resume!r} continues it; "
                             f"give one of them")
        return self

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}


@dataclass
class TrainResult:
    """What `train` returns: the trained denoiser, its EMA (sample with this one), and the run's record."""

    net: Precond
    ema: Precond
    step: int
    nimg: int
    history: list
    run_dir: Path | None
    dataset: object
    config: TrainConfig


def train(data="mixture", net=None, **options) -> TrainResult:
    """Train a denoiser on `data` with EDM's recipe; returns a TrainResult (net, ema, step, history, ...).

    data: a built-in name ("mixture", "moons", "swiss_roll", "checkerboard", "digits"), a path (folder of images,
        .npy or .pt file) or a fastdiff.data.Dataset / tensor [N, ...].
    net: None or a kind ("auto" = MLP for points, U-Net for images; "mlp"; "unet") to build, a raw network
        F(x, c_noise[, class_labels]) to wrap in the preconditioner, or a fastdiff Precond.
    options: the fields of TrainConfig, e.g. steps=2000, batch_size=256 (global), lr=2e-3, lr_rampup_kimg=10,
        ema_halflife_kimg=500, ema_rampup_ratio=0.05 (None: off), grad_clip=None (max gradient norm),
        precision="fp32" | "bf16" (autocast of the network), precond="edm" | "vp" | "ve" (with its loss),
        conditional=False (class labels, with label_dropout=0.1 on built networks, for guidance), seed=0 (also
        seeds torch's generator: the initial network, dropout), backend="auto" (the loss and the skip mix),
        device="auto", run_dir=None (no files), checkpoint_every=1000, keep_checkpoints=2, sample_every=1000,
        log_every=100, progress=True, resume=None | "latest" | a checkpoint path, overwrite=False.

    A built-in data set with a recipe (RECIPES: "digits") takes the recipe's value for every option not given here.
    A run folder belongs to one run: a new run (no `resume`) into a run_dir that already holds a run's files is
    refused, unless overwrite=True, which deletes those files (only the ones fastdiff writes) first.
    An evaluation (samples, picture, distance) that fails is reported with a warning and in the log record
    ("eval_error"), and training goes on: the trained network is returned (and checkpointed) either way.
    """
    unknown = set(options) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TypeError(f"train: unknown option(s) {sorted(unknown)}; accepted: {[f.name for f in dataclasses.fields(TrainConfig)]}")
    if isinstance(net, str):  # a network kind ("auto", "mlp", "unet"): the config's net
        options["net"], net = net, None
    if isinstance(data, str) and data in RECIPES:
        options = {**RECIPES[data], **options}  # what the caller gave wins, even when it equals TrainConfig's default
    dataset = _load_data(data)
    _warn_pixel_range(dataset)
    config = TrainConfig(data=data if isinstance(data, (str, os.PathLike)) else f"<{type(data).__name__}>",
                         **options).check()
    config.data = str(config.data)
    return Trainer(config, dataset, net).run()


class Trainer:
    """The training loop's state and steps (a class so tests and the CLI can drive and inspect it)."""

    def __init__(self, config: TrainConfig, dataset, net=None):
        self.config = config
        self.dataset = dataset
        self.device, self.rank, self.world_size, self._owns_process_group = _distributed_setup(config.device)
        try:
            self._build(config, dataset, net)
        except BaseException:
            self.close(synchronize=False)  # a group made here must not outlive a failed construction
            raise

    def _build(self, config: TrainConfig, dataset, net) -> None:
        self.run_dir = Path(config.run_dir) if config.run_dir else None
        if self.run_dir is not None and not config.resume and not config.overwrite:
            # Every rank looks, before DDP's constructor (collective) lets rank 0 go on to write into the folder.
            _refuse_existing_run(self.run_dir)
        if config.batch_size % self.world_size:
            raise ValueError(f"batch_size: the global batch {config.batch_size} must split evenly over "
                             f"{self.world_size} processes")
        if config.conditional and not dataset.num_classes:
            raise ValueError(f"conditional: the dataset {dataset.name!r} has no labels")
        self.batch_local = config.batch_size // self.world_size
        self.seed_base = config.seed * SEED_STRIDE % SEED_SPACE  # per-sample loss seeds: base + global position
        torch.manual_seed(self.seed_base)  # the same initial network on every rank
        self.net = _build_net(config, dataset, net).to(self.device).train().requires_grad_(True)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        torch.manual_seed(self.seed_base + 1 + self.rank)  # dropout and label dropout differ per rank
        self.loss_fn = _loss_for(self.net, config.backend)
        self.model = self.net.model
        if self.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.net.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.train_net = self.net.with_model(self.model)  # calls F through DDP, so gradients are averaged
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr, betas=config.betas, eps=config.eps)
        self.step = 0
        self.history = []
        self._epoch_order = (None, None)  # (epoch, permutation) of the dataset, cached
        nbytes = dataset.data.numel() * dataset.data.element_size()
        self.data = dataset.to(self.device) if nbytes <= DATA_ON_DEVICE_BYTES else dataset  # batches without copies
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._loss_count = 0
        if config.resume:
            self._resume(config.resume)

    # ----- the step -------------------------------------------------------------------------------------
    def batch(self, step: int):
        """This rank's slice of the global batch of `step`: (images, labels or None, loss seeds), on the device.

        Global sample position p = step * batch_size + i reads item perm_e[p mod N] of epoch e = p // N; its loss
        seed is seed_base + p. The epochs a batch spans are known on the host, so nothing here waits for the device.
        """
        n = len(self.dataset)
        start = step * self.config.batch_size + self.rank * self.batch_local
        stop = start + self.batch_local
        parts = [self._permutation(epoch)[max(start, epoch * n) - epoch * n:min(stop, (epoch + 1) * n) - epoch * n]
                 for epoch in range(start // n, (stop - 1) // n + 1)]  # one or two epochs (many for tiny data sets)
        index = parts[0] if len(parts) == 1 else torch.cat(parts)
        images, labels = self.data.batch(index)
        seeds = torch.arange(self.seed_base + start, self.seed_base + stop, dtype=torch.int64, device=self.device)
        labels = labels.to(self.device, non_blocking=True) if (labels is not None and self.config.conditional) else None
        return images.to(self.device, non_blocking=True), labels, seeds

    def _permutation(self, epoch: int) -> torch.Tensor:
        """The data order of `epoch` (made on the CPU from the run's seed, kept where the data lives)."""
        if self._epoch_order[0] != epoch:
            generator = torch.Generator().manual_seed((self.seed_base + epoch) % SEED_SPACE)
            order = torch.randperm(len(self.dataset), generator=generator).to(self.data.data.device)
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

    def lr_at(self, nimg: int) -> float:
        """EDM's ramp-up: lr * min(nimg / (lr_rampup_kimg * 1000), 1) (docs/formulas.md#training-loop)."""
        rampup = self.config.lr_rampup_kimg * 1000
        return self.config.lr * (min(nimg / rampup, 1.0) if rampup > 0 else 1.0)

    def ema_beta(self, nimg: int) -> float:
        """EDM's EMA decay per step: 0.5 ** (batch / half-life in images), the half-life ramped up as nimg * ratio."""
        halflife = self.config.ema_halflife_kimg * 1000
        if self.config.ema_rampup_ratio is not None:
            halflife = min(halflife, nimg * self.config.ema_rampup_ratio)
        return 0.5 ** (self.config.batch_size / max(halflife, 1e-8))

    def train_step(self) -> None:
        """One optimizer step on the global batch of self.step; no host sync (the data set on the device)."""
        config = self.config
        images, labels, seeds = self.batch(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = self.loss_fn(self.train_net, images, labels, seeds=seeds)
        # EDM's reduction: sum over elements / global batch per rank; DDP's mean over ranks makes it global.
        loss.sum().mul(self.world_size / config.batch_size).backward()
        self._loss_sum += loss.detach().sum(dtype=torch.float64)
        self._loss_count += loss.numel()
        params = [p for p in self.net.parameters() if p.grad is not None]
        for p in params:
            torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, config.grad_clip, foreach=True)
        nimg = self.step * config.batch_size  # images seen before this step, as EDM's cur_nimg
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(nimg)
        self.optimizer.step()
        self.update_ema(nimg)
        self.step += 1

    @torch.no_grad()
    def update_ema(self, nimg: int) -> None:
        beta = self.ema_beta(nimg)
        ema_params, net_params = list(self.ema.parameters()), list(self.net.parameters())
        torch._foreach_lerp_(ema_params, net_params, 1.0 - beta)  # ema = net + beta (ema - net)
        for b_ema, b_net in zip(self.ema.buffers(), self.net.buffers()):
            b_ema.copy_(b_net)

    # ----- the run --------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        config = self.config
        writer = self.rank == 0 and self.run_dir is not None
        if writer:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if config.overwrite:
                for path in run_files(self.run_dir):
                    path.unlink(missing_ok=True)
            remove_stale_temporaries(self.run_dir)
            (self.run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        try:
            self._run_steps(writer)
        except BaseException:
            self.close(synchronize=False)  # no barrier: the other ranks may never reach one
            raise
        self.close()
        return TrainResult(self.net.eval(), self.ema, self.step, self.step * config.batch_size, self.history,
                           self.run_dir, self.dataset, config)

    def _run_steps(self, writer: bool) -> None:
        config = self.config
        progress = _Progress(config.steps, self.step, config.batch_size, enabled=config.progress and self.rank == 0)
        last_log = (time.perf_counter(), self.step)
        while self.step < config.steps:
            self.train_step()
            at_end = self.step == config.steps
            evaluate = self.step % config.sample_every == 0 or at_end
            # The records an uninterrupted run of any length makes here come before the checkpoint, the end-of-run
            # record after it: the running loss a checkpoint holds is then the one an uninterrupted run carries on
            # with, so a resumed run logs what an uninterrupted one logs. (Both reductions are collective.)
            record = None
            if self.step % config.log_every == 0 or self.step % config.sample_every == 0:
                record = self._log_record(last_log)
            if self.run_dir is not None and (self.step % config.checkpoint_every == 0 or at_end):
                self.save_checkpoint()  # before the evaluation (which may fail); on every rank (collective)
            if record is None and at_end:
                record = self._log_record(last_log)
            if record is not None:
                last_log = (time.perf_counter(), self.step)
                progress.update(self.step, record["loss"])
                if evaluate and self.rank == 0:
                    record.update(self._evaluate_or_warn(write=writer))
                self.history.append(record)
                if writer:
                    with open(self.run_dir / "log.jsonl", "a") as log:
                        log.write(json.dumps(record) + "\n")
        progress.close()

    def close(self, synchronize: bool = True) -> None:
        """Leave the process group this trainer made (under torchrun); a no-op otherwise, and when called again.

        The group's gloo worker threads must be gone before the interpreter exits: a worker still dropping the
        tensors of a finished collective takes the GIL, and doing so during interpreter finalization kills the
        process with SIGABRT ("terminate called without an active exception"). destroy_process_group() joins
        them only when it drops the last reference to the group, so the DDP wrapper, which holds the group,
        goes first. `synchronize`: wait at a barrier first, so no rank leaves while another still evaluates or
        communicates (the normal end of a run; skipped on error paths, where a peer may never get there).
        The trainer trains no further steps after this."""
        if not self._owns_process_group:
            return
        self._owns_process_group = False
        import torch.distributed as dist

        if hasattr(self, "model"):
            self.model = self.net.model
            self.train_net = self.net
        try:
            if synchronize:
                dist.barrier()
        finally:
            dist.destroy_process_group()

    def _log_record(self, last_log) -> dict:
        """The mean loss since the last record (one host sync per record), speed and schedule values."""
        loss_sum = self._loss_sum.clone()
        if self.world_size > 1:
            torch.distributed.all_reduce(loss_sum)
        count = self._loss_count * self.world_size
        self._loss_sum.zero_()
        self._loss_count = 0
        elapsed = time.perf_counter() - last_log[0]
        nimg = self.step * self.config.batch_size
        return {"step": self.step, "kimg": nimg / 1000, "loss": float(loss_sum) / max(count, 1),
                "lr": self.lr_at(nimg), "ema_beta": self.ema_beta(nimg),
                "img_per_s": (self.step - last_log[1]) * self.config.batch_size / max(elapsed, 1e-9),
                "time": time.time()}

    def _evaluate_or_warn(self, write: bool) -> dict:
        """_evaluate, or when it fails, a warning naming the error and {"eval_error": ...}: an evaluation reports on
        the run, and its failure must not cost the training done (the network, returned or checkpointed)."""
        try:
            return self._evaluate(write)
        except Exception as error:  # noqa: BLE001 - whatever the sampler, the metric or the file system raised
            text = f"{type(error).__name__}: {error}"
            saved = self.run_dir is not None and (self.step % self.config.checkpoint_every == 0
                                                  or self.step == self.config.steps)
            kept = f"checkpoint-{self.step:08d}.pt is written; " if saved else ""
            warnings.warn(f"fastdiff.train: the evaluation at step {self.step} (samples, picture, distance to the data) "
                          f"failed: {text}; {kept}training goes on and the trained network is kept", stacklevel=2)
            return {"eval_error": text}

    def _evaluate(self, write: bool) -> dict:
        """Sample the EMA net on fixed seeds; write a grid (or scatter) PNG; for points, the distance to the data."""
        from .grids import evaluate_samples  # imported here: only runs that evaluate need the sampler

        return evaluate_samples(self, write)

    # ----- checkpoints ----------------------------------------------------------------------------------
    def state(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        rngs = [rng]
        if self.world_size > 1:
            rngs = [None] * self.world_size
            torch.distributed.all_gather_object(rngs, rng)
        return {"format": CHECKPOINT_FORMAT, "version": 1, "fastdiff": __version__, "step": self.step,
                "nimg": self.step * self.config.batch_size, "config": self.config.to_dict(),
                "net": self.net.state_dict(), "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": rngs, "world_size": self.world_size,
                "running_loss": {"sum": self._loss_sum.clone(), "count": self._loss_count},  # since the last record
                "model": model_spec(self.net)}  # what rebuilds the network (fastdiff.load_model); None for a custom net

    def save_checkpoint(self) -> Path:
        """Write checkpoint-<step>.pt atomically (temporary file, fsync, rename) and keep the newest few.

        Call it on every rank (the state gathers each rank's generator); rank 0 writes."""
        path = self.run_dir / f"checkpoint-{self.step:08d}.pt"
        state = self.state()
        if self.rank != 0:
            return path
        save_atomic(state, path)
        for old in list_checkpoints(self.run_dir)[:-self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def _resume(self, resume: str) -> None:
        if resume == "latest" and self.run_dir is not None:
            path, state, _ = newest_readable_checkpoint(self.run_dir, map_location=self.device)  # says what it skips
        else:
            path = resolve_checkpoint(resume, self.run_dir)
            state = load_checkpoint(path, map_location=self.device)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"resume: {path} is a model file, not a training checkpoint (it has no optimizer "
                                 f"state to resume from)")
        changed = {k: (v, getattr(self.config, k)) for k, v in state["config"].items()
                   if k not in RESUMABLE_CHANGES and _normalise(v) != _normalise(getattr(self.config, k, None))}
        if changed:
            detail = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in sorted(changed.items()))
            raise ValueError(f"resume: {path} was written by a run with other settings ({detail}); resume with the "
                             f"same settings (only {sorted(RESUMABLE_CHANGES)} may change)")
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if int(state["step"]) > self.config.steps:
            raise ValueError(f"steps: {self.config.steps} is below the step {int(state['step'])} of the checkpoint "
                             f"{path}; steps is the total a resumed run trains up to: give steps >= "
                             f"{int(state['step'])}")
        self.step = int(state["step"])
        running = state.get("running_loss")
        if running is not None and state["world_size"] == self.world_size:
            self._loss_sum.copy_(running["sum"])
            self._loss_count = int(running["count"])
        rngs = state["rng"]
        if len(rngs) == self.world_size:
            torch.set_rng_state(rngs[self.rank]["torch"].cpu())
            if torch.cuda.is_available() and rngs[self.rank]["cuda"]:
                torch.cuda.set_rng_state_all([s.cpu() for s in rngs[self.rank]["cuda"]])
        else:
            warnings.warn(f"resume: {path} was written by {len(rngs)} process(es), this run has {self.world_size}; the "
                          f"data order and the loss noise continue exactly, but torch's generator (dropout, label "
                          f"dropout) is reseeded, so the run will not match an uninterrupted one bit for bit",
                          stacklevel=3)
        if self.rank == 0 and self.run_dir is not None:
            _truncate_log(self.run_dir / "log.jsonl", self.step)  # records after the checkpoint are redone


# ----- checkpoint files ----------------------------------------------------------------------------------
def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file in path's folder, fsync it, rename over path, fsync the folder:
    a crash leaves either the old file or the new one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def list_checkpoints(run_dir) -> list[Path]:
    """The run's checkpoints checkpoint-<step>.pt, oldest first (temporary files of interrupted writes are not
    checkpoints)."""
    return sorted(p for p in Path(run_dir).glob("checkpoint-*.pt") if re.fullmatch(r"checkpoint-\d+\.pt", p.name))


def run_files(run_dir) -> list[Path]:
    """The files fastdiff's training wrote in run_dir: config.json, log.jsonl, checkpoint-<step>.pt,
    samples-<step>.png and the temporary files of interrupted writes (.checkpoint-<step>.pt.tmp-<pid>)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if p.is_file() and (RUN_FILE.fullmatch(p.name)
                                                                   or TEMPORARY_FILE.fullmatch(p.name)))


def _refuse_existing_run(run_dir: Path) -> None:
    """A run folder belongs to one run: FileExistsError when run_dir holds another run's files."""
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"run_dir: {str(run_dir)!r} exists and is not a folder")
    found = [p.name for p in run_files(run_dir) if RUN_FILE.fullmatch(p.name)]
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise FileExistsError(f"run_dir: {str(run_dir)!r} already holds a run ({shown}); a run folder belongs to one "
                              f"run: continue it with resume='latest' (--resume latest), replace it with "
                              f"overwrite=True (--overwrite; deletes only the files fastdiff wrote there), or give "
                              f"another run_dir")


def remove_stale_temporaries(run_dir) -> list[Path]:
    """Delete the temporary files (.checkpoint-<step>.pt.tmp-<pid>, .log.jsonl.tmp-<pid>) that writers which no
    longer run (killed mid-write) left in run_dir; those of live processes on this machine are kept."""
    removed = []
    for path in run_files(run_dir):
        match = TEMPORARY_FILE.fullmatch(path.name)
        if match and not _process_alive(int(match.group(2))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or an unusable number): leave its file alone
    return True


def resolve_checkpoint(resume, run_dir) -> Path:
    """A checkpoint path given as `resume` ("latest" in a run_dir is newest_readable_checkpoint's)."""
    if resume == "latest":
        raise ValueError("resume: 'latest' needs run_dir, the folder to look for checkpoints in")
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"resume: no checkpoint file {path}")
    return path


class UnreadableCheckpoint(ValueError):
    """A checkpoint or model file that cannot be read; the message names the file and the reason."""


def read_state(path, map_location="cpu", what: str = "resume") -> dict:
    """torch.load(weights_only=True) of a fastdiff file, with errors that name the file and say what is wrong with it
    (empty, cut short, not a torch file, holding more than tensors and plain data)."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else None
    if size == 0:
        raise UnreadableCheckpoint(f"{what}: {path} is empty (0 bytes): a write that never finished")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged file
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "WeightsUnpickler error:" in str(error):  # torch's advice to load with weights_only=False is not for us
            text = str(error).split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        with open(path, "rb") as f:
            head = f.read(8)
        if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a legacy pickle
            reason = (f"it is not a file torch.save wrote (that is a zip archive; this file starts with {head!r}): "
                      f"the wrong file, or one overwritten with something else")
        elif "Unsupported global" in str(error):
            reason = "it holds Python objects beyond tensors and plain data, which fastdiff never writes"
        elif isinstance(error, EOFError) or "central directory" in str(error) or "unexpected end" in str(error).lower():
            reason = "it is cut short or damaged (torch: failed finding central directory)" \
                if "central directory" in str(error) else f"it is cut short or damaged ({type(error).__name__}: {text})"
        else:
            reason = f"it is not a readable torch file ({type(error).__name__}: {text})"
        raise UnreadableCheckpoint(f"{what}: cannot read {path} ({size} bytes): {reason}") from None
    if not isinstance(state, dict):
        raise UnreadableCheckpoint(f"{what}: {path} holds a {type(state).__name__}, not a fastdiff checkpoint or model")
    return state


def load_checkpoint(path, map_location="cpu", what: str = "resume") -> dict:
    """A training checkpoint or a model file (only tensors and plain data are unpickled: weights_only=True)."""
    state = read_state(path, map_location, what)
    if state.get("format") not in (CHECKPOINT_FORMAT, MODEL_FORMAT):
        raise UnreadableCheckpoint(f"{what}: {path} is not a fastdiff training checkpoint")
    return state


def newest_readable_checkpoint(run_dir, map_location="cpu", what: str = "resume"):
    """(path, state, skipped) of the newest checkpoint in run_dir that can be read; `skipped` lists the newer ones
    that cannot, as (path, reason), and each is reported on stderr. Errors name every file tried."""
    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"{what}: no checkpoint-*.pt in {run_dir}")
    skipped = []
    for path in reversed(found):
        try:
            state = load_checkpoint(path, map_location, what)
        except UnreadableCheckpoint as error:
            skipped.append((path, str(error)))
            continue
        for bad, reason in skipped:
            print(f"fastdiff: {reason}; using the older {path.name} instead", file=sys.stderr)
        return path, state, skipped
    raise UnreadableCheckpoint(f"{what}: none of the {len(found)} checkpoints in {run_dir} can be read: "
                               + "; ".join(reason for _, reason in skipped))


def _truncate_log(path: Path, step: int) -> None:
    """Keep the records up to `step` (a line cut short by a crash is dropped); rewritten atomically."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def _normalise(value):
    return list(value) if isinstance(value, tuple) else value


# ----- building the run ----------------------------------------------------------------------------------
def _load_data(data):
    """The Dataset for train's `data`. Tensors and numpy arrays follow fastdiff.data.tensor_file's rules: float data
    as they are (points [N, d], images [N, C, H, W] in [-1, 1]), uint8 data are images scaled from 0..255 to
    [-1, 1] ([N, H, W], NHWC or NCHW), other integers become float32 points or images as they are."""
    import numpy as np

    from . import data as data_module

    if isinstance(data, data_module.Dataset):
        return data
    name = "tensor"
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise TypeError(f"data: expected a numpy array of numbers, got dtype {data.dtype}")
        data, name = data_module._from_numpy(data), "array"
    if isinstance(data, torch.Tensor):
        data = data.detach()
        if data.dtype == torch.bool or data.is_complex():
            raise TypeError(f"data: expected real numbers (float, int, or uint8 images), got a {data.dtype} {name}")
        if data.dtype == torch.uint8:
            data = data_module._uint8_images(data, "train: data")
        return data_module.Dataset(data.to(torch.float32), name=name)
    if isinstance(data, (str, os.PathLike)):
        return data_module.load(str(data))
    raise TypeError(f"data: expected a built-in name, a path, a fastdiff.data.Dataset, a tensor or a numpy array, "
                    f"got {type(data).__name__}")


def _build_net(config: TrainConfig, dataset, net) -> Precond:
    """The preconditioned network: given, wrapped, or built from config.net for the data's shape."""
    precond_cls = PRECONDS[config.precond][0]
    if net is not None:
        ignored = [f"{name}={getattr(config, name)!r}" for name, unset in (("net_kwargs", {}), ("dropout", 0.0),
                   ("label_dropout", None)) if getattr(config, name) != unset]
        if ignored:
            raise ValueError(f"net: {', '.join(ignored)} configure the networks train() builds, not a network passed "
                             f"in; set them on your network instead")
    if isinstance(net, Precond):
        if not isinstance(net, precond_cls):
            raise ValueError(f"net: a {type(net).__name__} cannot train with precond={config.precond!r} "
                             f"(expects {precond_cls.__name__}); pass precond= to match")
        if net.backend != config.backend:
            raise ValueError(f"net: its backend={net.backend!r} differs from train's backend={config.backend!r}; "
                             f"build the preconditioner with the same backend")
        return net
    if net is None:
        net = build_model(config, dataset)
    elif not isinstance(net, nn.Module):
        raise TypeError(f"net: expected None, a network kind, an nn.Module F(x, c_noise[, class_labels]) or a fastdiff "
                        f"Precond, got {type(net).__name__}")
    if precond_cls is EDMPrecond:
        return precond_cls(net, sigma_data=_sigma_data(dataset), backend=config.backend)
    return precond_cls(net, backend=config.backend)


def _loss_for(net: Precond, backend: str):
    """The loss that goes with the preconditioner, with its parameters (EDM's sigma_data; VP's beta_d, beta_min,
    epsilon_t; VE's sigma range), so the noise levels drawn are the ones the network is built for."""
    if isinstance(net, EDMPrecond):
        return EDMLoss(sigma_data=net.sigma_data, backend=backend)
    if isinstance(net, VPPrecond):
        return VPLoss(beta_d=net.beta_d, beta_min=net.beta_min, epsilon_t=net.epsilon_t, backend=backend)
    return VELoss(sigma_min=net.sigma_min, sigma_max=net.sigma_max, backend=backend)


def build_model(config: TrainConfig, dataset) -> nn.Module:
    """config.net for the dataset: an MLP for points [N, d], a compact U-Net for images [N, C, H, W]."""
    from .nets import MLP, UNet

    kind = config.net if config.net != "auto" else ("unet" if dataset.is_image else "mlp")
    num_classes = (dataset.num_classes or 0) if config.conditional else 0
    if config.label_dropout is not None and not num_classes:
        raise ValueError(f"label_dropout: applies to conditional runs (conditional=True), got {config.label_dropout}")
    label_dropout = (0.1 if config.label_dropout is None else config.label_dropout) if num_classes else 0.0
    if kind == "mlp":
        if dataset.is_image:
            raise ValueError(f"net: 'mlp' takes points [N, d], the dataset {dataset.name!r} holds images {tuple(dataset.shape)}")
        if config.dropout:
            raise ValueError(f"dropout: the MLP has no dropout layers, got dropout={config.dropout}; use 0")
        return MLP(dim=dataset.shape[0], num_classes=num_classes, label_dropout=label_dropout, **config.net_kwargs)
    if not dataset.is_image:
        raise ValueError(f"net: 'unet' takes images [N, C, H, W], the dataset {dataset.name!r} holds {tuple(dataset.shape)}")
    channels, height, width = dataset.shape
    kwargs = dict(model_channels=32, channel_mult=(1, 2, 2), num_blocks=1, attn_resolutions=((height + 1) // 2,),
                  dropout=config.dropout)
    kwargs.update(config.net_kwargs)
    return UNet(img_resolution=height, in_channels=channels, num_classes=num_classes, label_dropout=label_dropout, **kwargs)


def _warn_pixel_range(dataset) -> None:
    """Images are trained as pixels in [-1, 1] (EDM's sigma_data 0.5). Float images that look like 0..255 or 0..1
    pixels get a warning that says how to rescale them (other ranges, e.g. latents, are the user's to choose)."""
    if not dataset.is_image:
        return
    low, high = float(dataset.data.min()), float(dataset.data.max())
    if low >= 0 and high > 2:
        hint = "0..255 pixels: pass them as uint8, or as x / 127.5 - 1"
    elif low >= 0 and high <= 1 and high > 0:
        hint = "0..1 pixels: pass them as 2 x - 1"
    else:
        return
    warnings.warn(f"data: float images span [{low:g}, {high:g}], but fastdiff trains images as pixels in [-1, 1] "
                  f"(sigma_data 0.5); if these are {hint}", stacklevel=3)


def _sigma_data(dataset) -> float:
    """EDM's sigma_data = 0.5 (images in [-1, 1]); for points, the data's own standard deviation."""
    if dataset.is_image:
        return 0.5
    data = dataset.data.to(torch.float64)
    std = float(data.std()) if len(data) > 1 else 0.0
    if not std > 0:
        raise ValueError(f"data: all {len(data)} point(s) of {dataset.name!r} are the same point "
                         f"{[round(float(v), 6) for v in data[0, :4]]}: constant data have no spread to learn, and "
                         f"EDM's sigma_data (the data's standard deviation) would be 0; give at least two distinct points")
    return std


def _distributed_setup(device: str) -> tuple[torch.device, int, int, bool]:
    """(device, rank, world size, whether this call initialised the process group).

    Under torchrun (WORLD_SIZE > 1) without a process group, one is made here: NCCL when this rank trains on a GPU,
    gloo otherwise. A CUDA device without an index is cuda:LOCAL_RANK, and it becomes the current device (NCCL's
    collectives use the current device)."""
    import torch.distributed as dist

    distributed = dist.is_available() and (dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) > 1)
    local_rank = int(os.environ.get("LOCAL_RANK", "0")) if distributed else 0
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    owns = False
    if distributed and not dist.is_initialized():
        # Imported before the group exists, not by DDP's constructor after: torch._dynamo imports
        # torch.distributed.nn.functional, whose functions take group=group.WORLD as default arguments, evaluated
        # at import. Imported while our group exists, they would hold it for the life of the interpreter, so
        # destroy_process_group() could not free it and join its worker threads (see Trainer.close).
        import torch._dynamo as _dynamo  # noqa: F401  (binds no local `torch`)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
        # Every rank finishes connecting before any goes on: a rank that then fails at once (a batch that does not
        # split) and closes the group must not cut the others off mid-connection ("Gloo connectFullMesh failed"
        # where they should see its error's consequence), which happened under load without this barrier.
        dist.barrier()
    if distributed:
        return device, dist.get_rank(), dist.get_world_size(), owns
    return device, 0, 1, False


def _check_device(device) -> None:
    """'auto' or a device torch knows and this machine has."""
    if device == "auto":
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} asked for, but torch {torch.__version__} sees no CUDA device")
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f"device: {device!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


class _Progress:
    """A one-line progress bar on stderr: step, loss, images/s and ETA (a new line per update when not a terminal)."""

    def __init__(self, total: int, start: int, batch_size: int, enabled: bool):
        self.total, self.start, self.batch_size, self.enabled = total, start, batch_size, enabled
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, loss: float) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.start) / max(elapsed, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else math.inf
        width = 24
        filled = int(width * step / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{self.total}  loss {loss:.4f}  "
                f"{rate * self.batch_size:,.0f} img/s  ETA {_duration(eta)}")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
