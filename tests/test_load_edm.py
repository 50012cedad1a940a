"""fastdiff.load_edm(path): the `ema` network of an NVlabs/edm network pickle.

No NVlabs code is used (its license is not fastdiff's): the test writes a stand-in `torch_utils` package into
tmp_path, as a clone of NVlabs/edm would provide one, pickles a network of a class defined there, and loads it with
the package on sys.path and without it.
"""
from __future__ import annotations

import pickle
import sys

import pytest
import torch

import fastdiff

STANDIN = '''
import torch


class EDMPrecond(torch.nn.Module):
    """A stand-in for an NVlabs/edm network: D(x; sigma) = w x / (1 + sigma^2), with EDM's range attributes."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.sigma_min, self.sigma_max = 0.002, 80.0

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)

    def forward(self, x, sigma, class_labels=None):
        return self.w * x / (1 + sigma.reshape(-1, *[1] * (x.ndim - 1)) ** 2)
'''


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A directory holding the stand-in package torch_utils (on sys.path), and sys.modules left as it was after."""
    root = tmp_path / "edm"
    (root / "torch_utils").mkdir(parents=True)
    (root / "torch_utils" / "__init__.py").write_text("")
    (root / "torch_utils" / "standin_networks.py").write_text(STANDIN)
    for name in ("torch_utils", "torch_utils.standin_networks"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(root))
    return root


def forget(clone, monkeypatch):
    """Take the stand-in package off sys.path and out of sys.modules, as in a fresh process without the clone."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(clone)])
    for name in ("torch_utils", "torch_utils.standin_networks"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def write_snapshot(path, **entries):
    from torch_utils.standin_networks import EDMPrecond

    net = EDMPrecond().train()
    data = dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={"class_name": "stand-in"}, **entries)
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return net


def test_loads_the_ema_network(clone, tmp_path, monkeypatch):
    path = tmp_path / "network-snapshot-000000.pkl"
    written = write_snapshot(path)
    assert written.training and written.w.requires_grad
    for name in ("torch_utils", "torch_utils.standin_networks"):  # unpickling imports the module again
        monkeypatch.delitem(sys.modules, name, raising=False)
    net = fastdiff.load_edm(path)
    assert type(net).__name__ == "EDMPrecond" and type(net).__module__ == "torch_utils.standin_networks"
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert fastdiff.load_edm(str(path), device="cpu").w.device.type == "cpu"  # str paths and device=
    seeds = [0, 1]
    x = fastdiff.sample(net, fastdiff.randn(seeds, (2, 3)), num_steps=4, seeds=seeds)
    assert x.shape == (2, 3) and torch.isfinite(x).all()


def test_missing_nvlabs_modules_say_what_to_put_on_sys_path(clone, tmp_path, monkeypatch):
    path = tmp_path / "network-snapshot-000000.pkl"
    write_snapshot(path)
    forget(clone, monkeypatch)
    with pytest.raises(ImportError, match=r"NVlabs/edm's module 'torch_utils'.*clone https://github.com/NVlabs/edm "
                                          r"and add that directory to sys.path.*PYTHONPATH"):
        fastdiff.load_edm(path)


def test_not_a_pickle(tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_bytes(b"these are not the weights you are looking for\n")
    with pytest.raises(ValueError, match="path: .*notes.pkl' is not a readable pickle"):
        fastdiff.load_edm(path)
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a readable pickle .*EOFError"):
        fastdiff.load_edm(empty)


@pytest.mark.parametrize("data, match", [
    ({"G_ema": 1, "D": 2}, r"holds a dict with keys \['D', 'G_ema'\], not an NVlabs/edm snapshot .*'ema'"),
    ([1, 2, 3], "holds a list, not an NVlabs/edm snapshot"),
    ({"ema": "weights"}, "the 'ema' entry of .* is a str, not a torch.nn.Module"),
])
def test_no_ema_network(tmp_path, data, match):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=match):
        fastdiff.load_edm(path)


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: no such file .*missing.pkl"):
        fastdiff.load_edm(tmp_path / "missing.pkl")
    with pytest.raises(TypeError, match="path: expected a file path .*got 3 of type int"):
        fastdiff.load_edm(3)
