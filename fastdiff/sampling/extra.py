"""extra_args: keyword arguments passed to every net call (k-diffusion's name), so conditioning needs no closure.

    net(x, sigma[, class_labels], **extra_args)

The values may be tensors, nested in dicts, lists or tuples (diffusers' added_cond_kwargs), or other Python values.
This module checks them, pairs a conditional and an unconditional set for classifier-free guidance (one batched
call of 2B), and keeps them as a CUDA graph's inputs (static buffers, refilled per call, as the class labels are).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils import _pytree as pytree


def check_extra_args(extra_args, name: str = "extra_args") -> dict:
    """extra_args as a dict of keyword arguments (None: {}); a clear TypeError for anything else."""
    if extra_args is None:
        return {}
    if not isinstance(extra_args, Mapping):
        raise TypeError(f"{name}: expected a dict of keyword arguments for net(x, sigma, **{name}), got "
                        f"{type(extra_args).__name__}")
    bad = next((key for key in extra_args if not isinstance(key, str) or not key.isidentifier()), None)
    if bad is not None:
        raise TypeError(f"{name}: expected keyword-argument names (str identifiers) as its keys, got {bad!r}")
    return _sorted(extra_args)


def _sorted(value):
    """Every mapping in value as a dict with sorted keys (so two sets of arguments compare by content, not order)."""
    if isinstance(value, Mapping):
        return {key: _sorted(value[key]) for key in sorted(value, key=str)}
    return value


def pair_args(cond: dict, uncond: dict, batch: int) -> dict:
    """The keyword arguments of one batched call on [x; x] (2B) for classifier-free guidance: every tensor of cond
    whose first dimension is the batch B is concatenated with its unconditional counterpart, [cond; uncond]; every
    other value (a tensor without that batch dimension, a number, a string) must be the same in both and is passed
    once. The two must have the same structure (keys, nesting)."""
    cond_leaves, cond_spec = pytree.tree_flatten(cond)
    uncond_leaves, uncond_spec = pytree.tree_flatten(uncond)
    if cond_spec != uncond_spec:
        raise ValueError(f"uncond_args: expected the same keys and nesting as extra_args (the unconditional "
                         f"counterpart of each), got keys {_keys(uncond)} for extra_args' {_keys(cond)}")
    paths = [_path(p) for p, _ in pytree.tree_flatten_with_path(cond)[0]]
    paired = []
    for path, c, u in zip(paths, cond_leaves, uncond_leaves):
        if isinstance(c, torch.Tensor) and c.ndim >= 1 and c.shape[0] == batch:
            if not isinstance(u, torch.Tensor) or u.shape != c.shape or u.dtype != c.dtype or u.device != c.device:
                got = (f"a {u.dtype} tensor of shape {tuple(u.shape)} on {u.device}" if isinstance(u, torch.Tensor)
                       else repr(u))
                raise ValueError(f"uncond_args{path}: expected a {c.dtype} tensor of shape {tuple(c.shape)} on "
                                 f"{c.device} like extra_args{path} (its batch of {batch} is concatenated with it), "
                                 f"got {got}")
            paired.append(torch.cat([c, u]))
        elif not _same(c, u):
            raise ValueError(f"uncond_args{path}: extra_args{path} has no batch dimension of {batch}, so it is passed "
                             f"once for both halves and must be the same in uncond_args; got {_short(c)} and "
                             f"{_short(u)}")
        else:
            paired.append(c)
    return pytree.tree_unflatten(paired, cond_spec)


class StaticArgs:
    """extra_args as a CUDA graph's inputs: each tensor is a static buffer (a copy of the template's), which load()
    refills per call; the other values are part of the capture and must not change."""

    def __init__(self, template: dict):
        leaves, self.spec = pytree.tree_flatten(template)
        self.paths = [_path(p) for p, _ in pytree.tree_flatten_with_path(template)[0]]
        self.buffers = [leaf.detach().clone(memory_format=torch.contiguous_format) if isinstance(leaf, torch.Tensor)
                        else None for leaf in leaves]
        self.fixed = [None if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]
        self.args = pytree.tree_unflatten([b if b is not None else f for b, f in zip(self.buffers, self.fixed)],
                                          self.spec)

    def check(self, extra_args) -> list:
        """The leaves of a call's extra_args, checked against the template (before anything is copied)."""
        extra_args = check_extra_args(extra_args)
        leaves, spec = pytree.tree_flatten(extra_args)
        if spec != self.spec:
            raise ValueError(f"extra_args: expected the keys and nesting this sampler was captured with, "
                             f"{_keys(pytree.tree_unflatten(self.fixed, self.spec))}, got {_keys(extra_args)}")
        for path, leaf, buffer, fixed in zip(self.paths, leaves, self.buffers, self.fixed):
            if buffer is None:
                if not _same(leaf, fixed):
                    raise ValueError(f"extra_args{path}: a value that is not a tensor is part of the captured graph "
                                     f"({_short(fixed)}); got {_short(leaf)}: make a new sampler for another")
            elif not isinstance(leaf, torch.Tensor) or leaf.shape != buffer.shape or leaf.dtype != buffer.dtype or \
                    leaf.device != buffer.device:
                got = (f"a {leaf.dtype} tensor of shape {tuple(leaf.shape)} on {leaf.device}"
                       if isinstance(leaf, torch.Tensor) else repr(leaf))
                raise ValueError(f"extra_args{path}: expected a {buffer.dtype} tensor of shape {tuple(buffer.shape)} "
                                 f"on {buffer.device} (what this sampler was captured with), got {got}")
        return leaves

    def load(self, leaves: list) -> None:
        """Copy a checked call's tensors into the buffers."""
        for leaf, buffer in zip(leaves, self.buffers):
            if buffer is not None:
                buffer.copy_(leaf)

    def tensors(self) -> list[torch.Tensor]:
        return [b for b in self.buffers if b is not None]


def signature(extra_args: dict):
    """What a cached graph depends on in extra_args: the nesting, each tensor's shape, dtype and device, and every
    other value (which must be hashable; None when one is not, so the call is not graphed)."""
    leaves, spec = pytree.tree_flatten(extra_args)
    described = tuple((tuple(leaf.shape), leaf.dtype, leaf.device) if isinstance(leaf, torch.Tensor)
                      else ("value", type(leaf), leaf) for leaf in leaves)
    try:
        hash(described)
    except TypeError:
        return None
    return str(spec), described


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and (a is b or (
            a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b))))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - a value without a plain equality
        return a is b


def _short(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _keys(args) -> list:
    return sorted(args) if isinstance(args, Mapping) else []


def _path(keys) -> str:
    """A pytree key path as it would be written in Python: ['added_cond_kwargs']['text_embeds']."""
    return "".join(f"[{getattr(k, 'key', getattr(k, 'idx', k))!r}]" for k in keys)
