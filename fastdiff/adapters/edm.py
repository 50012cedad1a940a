"""NVlabs/edm network pickles: fastdiff.load_edm(path) returns the `ema` network of a `network-snapshot-*.pkl`.

Those pickles hold {'ema': the EMA network (an EDMPrecond, VPPrecond, VEPrecond or iDDPMPrecond module),
'loss_fn', 'augment_pipe', 'dataset_kwargs'} and, through NVlabs' `torch_utils.persistence`, the source code of
their classes; unpickling them imports `torch_utils` and `dnnlib` from NVlabs/edm. fastdiff does not ship those
modules (their license is not fastdiff's) and never copies their code: put a clone of NVlabs/edm on sys.path.
The network is then already a fastdiff denoiser: net(x, sigma, class_labels) is D(x; sigma), and it has
sigma_min, sigma_max and round_sigma, which fastdiff.sample reads.

Security: a pickle names the code that unpickling runs (NVlabs' persistence pickles run the class source they hold).
Load only files you trust; load_edm is exactly as safe as pickle.load.
"""
from __future__ import annotations

import os
import pickle

from torch import nn

EDM_REPOSITORY = "https://github.com/NVlabs/edm"
EDM_MODULES = ("torch_utils", "dnnlib")  # what an NVlabs/edm pickle imports while it is unpickled


def load_edm(path, *, device=None) -> nn.Module:
    """The `ema` network of an NVlabs/edm pickle (network-snapshot-*.pkl), in eval mode with requires_grad False,
    on `device` when given:

        import sys; sys.path.insert(0, "/path/to/edm")         # a clone of https://github.com/NVlabs/edm
        net = fastdiff.load_edm("network-snapshot-200000.pkl")
        x = fastdiff.sample(net, fastdiff.randn(seeds, (len(seeds), 3, 32, 32)), seeds=seeds)

    Unpickling runs code named by the file (pickle.load): load only pickles you trust. Raises FileNotFoundError
    for a missing file, ImportError saying what to put on sys.path when NVlabs' modules (or another module the
    pickle names) cannot be imported, and ValueError for a file that is not a pickle or holds no 'ema' network.
    Only local paths are read (NVlabs' loader also fetches URLs; download the file first).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or os.PathLike) of an NVlabs/edm network pickle, got "
                        f"{path!r} of type {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no such file {path!r} (expected an NVlabs/edm network-snapshot-*.pkl; "
                                f"download URLs first)")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0] or str(error)
        whose = "NVlabs/edm's" if missing in EDM_MODULES else "a"
        raise ImportError(
            f"path: unpickling {path!r} needs {whose} module {missing!r}, which cannot be imported. An NVlabs/edm "
            f"pickle imports its torch_utils and dnnlib: clone {EDM_REPOSITORY} and add that directory to sys.path "
            f"(sys.path.insert(0, '/path/to/edm')) or to PYTHONPATH, then call load_edm again") from error
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
        raise ValueError(f"path: {path!r} is not a readable pickle ({type(error).__name__}: {error}); expected an "
                         f"NVlabs/edm network-snapshot-*.pkl (an AttributeError: a class the pickle names is not in "
                         f"the module on sys.path, e.g. another version of NVlabs/edm)") from error
    if not isinstance(data, dict) or "ema" not in data:
        held = f"a dict with keys {sorted(map(str, data))}" if isinstance(data, dict) else f"a {type(data).__name__}"
        raise ValueError(f"path: {path!r} holds {held}, not an NVlabs/edm snapshot (a dict with the key 'ema', the "
                         f"EMA network; also 'loss_fn', 'augment_pipe', 'dataset_kwargs')")
    net = data["ema"]
    if not isinstance(net, nn.Module):
        raise ValueError(f"path: the 'ema' entry of {path!r} is a {type(net).__name__}, not a torch.nn.Module")
    net.eval().requires_grad_(False)
    if device is not None:
        net.to(device)
    return net
