"""What rebuilds a trained network without the user's code: the preconditioner's class and parameters and the
fastdiff network's constructor arguments (model_spec), and the network built back from them (build). Training
checkpoints (fastdiff.training) and model files (fastdiff.models) both carry it."""
from __future__ import annotations

from .nets import MLP, UNet
from .precond import EDMPrecond, Precond, VEPrecond, VPPrecond

MODEL_FORMAT = "fastdiff-model"  # the "format" of a model file (fastdiff.save_model)
NETWORKS = {"UNet": UNet, "MLP": MLP}
PRECONDS = {"EDMPrecond": (EDMPrecond, ("sigma_data", "sigma_min", "sigma_max")),
            "VPPrecond": (VPPrecond, ("beta_d", "beta_min", "M", "epsilon_t")),
            "VEPrecond": (VEPrecond, ("sigma_min", "sigma_max"))}


def model_spec(net: Precond) -> dict | None:
    """What rebuilds `net`: {"precond": {"class", params...}, "network": {"class", "kwargs"}}; None when the network
    inside is not one of fastdiff's (UNet, MLP) or the preconditioner is not EDM, VP or VE."""
    precond = type(net).__name__
    network = type(getattr(net, "model", None)).__name__
    if precond not in PRECONDS or network not in NETWORKS or not isinstance(getattr(net.model, "config", None), dict):
        return None
    params = {name: getattr(net, name) for name in PRECONDS[precond][1]}
    return {"precond": {"class": precond, **params}, "network": {"class": network, "kwargs": dict(net.model.config)}}


def build(spec: dict, backend: str = "auto") -> Precond:
    """A fresh (untrained) preconditioned network from a model_spec."""
    try:
        precond = dict(spec["precond"])
        cls, _ = PRECONDS[precond.pop("class")]
        network = spec["network"]
        model = NETWORKS[network["class"]](**network["kwargs"])
    except (KeyError, TypeError) as error:
        raise ValueError(f"model: not a model description fastdiff can rebuild ({type(error).__name__}: {error}): "
                         f"expected a precond of {sorted(PRECONDS)} and a network of {sorted(NETWORKS)}") from None
    return cls(model, **precond, backend=backend)
