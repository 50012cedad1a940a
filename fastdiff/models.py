"""Trained denoisers as files: save one, load one (a shipped model by name, a model file, a training checkpoint or a
run folder), and `fastdiff.pretrained("digits")`, the class-conditional EDM model of handwritten digits that ships
inside the package.

A model file holds the preconditioner's class and parameters, the fastdiff network's constructor arguments and the
weights, so loading needs no code of the user's and only `torch.load(weights_only=True)`. Training checkpoints
written by `fastdiff.train` carry the same description (their "model" entry) and load the same way, EMA weights.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


from .modelspec import MODEL_FORMAT, build, model_spec
from .precond import Precond

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PRETRAINED = {"digits": "digits.pt"}  # name -> file in fastdiff/weights
def save_model(path, net: Precond, **info) -> Path:
    """Write `net` (its weights as they are, e.g. a training run's EMA) as a model file that `load_model` reads.

    `info`: plain data kept with it (e.g. the data set's class names, the command that trained it, its quality),
    added to the `info` that `net` already carries (a model from load_model: its training config and step)."""
    from .training import save_atomic

    spec = model_spec(net)
    if spec is None:
        raise ValueError(f"net: save_model writes fastdiff's own networks (UNet, MLP) in an EDM, VP or VE "
                         f"preconditioner, got {type(net).__name__} around {type(getattr(net, 'model', None)).__name__}; "
                         f"save your network's state_dict instead")
    info = {**(getattr(net, "info", None) or {}), **info}  # a loaded model keeps what it knew (its training config)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    path = Path(path)
    save_atomic({"format": MODEL_FORMAT, "version": 1, "spec": spec, "state_dict": state, "info": info}, path)
    return path


def load_model(source="digits", device="cpu", backend: str = "auto") -> Precond:
    """A trained denoiser in eval mode, without gradients, on `device`.

    source: a shipped model's name ("digits"), a model file (save_model), a training checkpoint (its EMA weights),
        or a training run folder (its newest checkpoint that can be read; unreadable newer ones are reported).
    The result's `info` holds what was saved with it (for checkpoints: the run's config and step).
    """
    from .training import CHECKPOINT_FORMAT, load_checkpoint, newest_readable_checkpoint

    if isinstance(source, str) and source in PRETRAINED:
        if Path(source).exists():
            raise ValueError(f"model: {source!r} is both the shipped model's name and a file or folder here; say which: "
                             f"'./{source}' for the file or folder, or run from another directory for the shipped one")
        path = WEIGHTS_DIR / PRETRAINED[source]
        if not path.is_file():
            raise FileNotFoundError(f"model: the shipped model {source!r} should be at {path}, which is missing; "
                                    f"reinstall fastdiff")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"model: {str(source)!r} is neither a shipped model ({', '.join(PRETRAINED)}) nor "
                                    f"an existing file or run folder")
    else:
        raise TypeError(f"model: expected a shipped model's name ({', '.join(PRETRAINED)}), a model file, a checkpoint "
                        f"or a run folder, got {type(source).__name__}")
    if path.is_dir():
        path, state, _ = newest_readable_checkpoint(path, what="model")
    else:
        state = load_checkpoint(path, what="model")
    if state.get("format") == MODEL_FORMAT:
        spec, weights, info = state["spec"], state["state_dict"], dict(state.get("info") or {})
    elif state.get("format") == CHECKPOINT_FORMAT:
        spec, weights = state.get("model"), state["ema"]
        info = {"config": state.get("config"), "step": state.get("step"), "nimg": state.get("nimg")}
        if spec is None:
            raise ValueError(f"model: the checkpoint {path} does not describe its network (it was trained with a network "
                             f"passed to train(), or by an older fastdiff); build that network, wrap it in its "
                             f"preconditioner and load_state_dict(torch.load(path, weights_only=True)['ema'])")
    else:
        raise ValueError(f"model: {path} is not a fastdiff model file or training checkpoint")
    net = build(spec, backend=backend)
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    net.info = info
    net.source = str(path)
    return net.to(device).eval().requires_grad_(False)


def pretrained(name: str = "digits", device="cpu", backend: str = "auto") -> Precond:
    """A model that ships with fastdiff, in eval mode: "digits", a class-conditional EDM U-Net of scikit-learn's 8x8
    handwritten digits (label_dim 10, img_channels 1, img_resolution 8, pixels in [-1, 1]). Its `info` says how it
    was trained and how good it is."""
    if name not in PRETRAINED:
        raise ValueError(f"name: expected one of {sorted(PRETRAINED)}, got {name!r}")
    return load_model(name, device=device, backend=backend)


def warn_guidance(net, guidance) -> None:
    """Guidance mixes in the unconditional denoiser, which a network trained without label dropout never learned:
    say so (the samples are still made, as asked)."""
    if guidance is None or guidance == 1.0 or not net.label_dim:
        return
    dropout = ((getattr(net.model, "config", None) or {}).get("label_dropout"))
    if dropout == 0:
        print(f"fastdiff: warning: --guidance {guidance:g} uses the model's unconditional output, but it was trained "
              f"with label dropout 0, so that output was never learned; expect poor samples", file=sys.stderr)
