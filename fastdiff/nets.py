"""Networks F(x, c_noise[, class_labels]) for fastdiff's built-in jobs and benchmarks.

Both are the raw network a preconditioner wraps (`fastdiff.EDMPrecond(net)` calls `net(c_in * x, c_noise)` or
`net(c_in * x, c_noise, class_labels)`), and return a tensor of x's shape and dtype:

- `UNet`: a compact DDPM++-style U-Net for images [B, C, H, W] (Song et al. 2021; Karras et al. 2022).
- `MLP`: a residual MLP for low-dimensional data [B, dim] (2-D mixtures and the like).

c_noise is a float tensor of shape [B] (EDM: ln(sigma)/4). The net computes in its parameters' dtype (a float64
sampler state is brought to the net's float32 and the result back), under autocast in the autocast dtype, with the
conditioning embedding and every GroupNorm kept in float32.

Class labels: int indices [B] or float one-hot (or soft) rows [B, num_classes]. An all-zero row is the
unconditional input, and so is class_labels=None: classifier-free guidance passes zeros (or None) for its
unconditional branch, and `label_dropout` trains exactly that input.

Capture safety (the sampler, net included, may be captured in a CUDA graph): forward reads no device value on the
host, makes no tensor from Python data and has no data-dependent shape. Constant tables (embedding frequencies) are
buffers made in __init__; the checks in forward look at host metadata only (shapes, dtypes, devices). An index label
out of range is therefore not checked by the net: F.embedding raises IndexError on the CPU and a device-side
assert on CUDA.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_bool, check_choice, check_int, check_positive, check_real

__all__ = ["MLP", "UNet"]

EMBEDDINGS = ("positional", "fourier")
RESAMPLES = ("conv", "pool")
SKIP_SCALE = 1 / math.sqrt(2)  # DDPM++ scales each residual sum by 1/sqrt(2) so its variance does not grow with depth


# --------------------------------------------------------------------------------------------------------------
# Argument checks (host side, at construction or on tensor metadata)

def _check_probability(name: str, value, *, allow_one: bool) -> float:
    """A real number in [0, 1] (or [0, 1))."""
    value = check_real(name, value, minimum=0.0)
    if value > 1 or (value == 1 and not allow_one):
        raise ValueError(f"{name}: must be in [0, 1{']' if allow_one else ')'}, got {value}")
    return value


def _check_label_dropout(label_dropout, num_classes: int) -> float:
    """A probability in [0, 1], and only for a class-conditional net."""
    label_dropout = _check_probability("label_dropout", label_dropout, allow_one=True)
    if label_dropout > 0 and num_classes == 0:
        raise ValueError(f"label_dropout: needs a class-conditional net (num_classes > 0), got label_dropout={label_dropout} "
                         "with num_classes=0")
    return label_dropout


def _check_int_tuple(name: str, value, minimum: int, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name}: expected a tuple of ints, got {value!r} of type {type(value).__name__}")
    if len(value) == 0 and not allow_empty:
        raise ValueError(f"{name}: expected at least one entry, got {value!r}")
    return tuple(check_int(f"{name}[{i}]", v, minimum) for i, v in enumerate(value))


def _check_input(x, ndim: int, channels: int, what: str) -> None:
    """x is a floating tensor with `ndim` dims and `channels` entries in dim 1 (`what` describes the layout)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x: expected a floating-point tensor of shape {what}, got {got}")
    if x.ndim != ndim or x.shape[1] != channels:
        raise ValueError(f"x: expected shape {what} with {channels} in dim 1, got {tuple(x.shape)}")


def _check_noise(c_noise, x: torch.Tensor) -> torch.Tensor:
    """c_noise as a [B] tensor: one value per sample, or one value for all (broadcast, a view)."""
    batch = x.shape[0]
    if not isinstance(c_noise, torch.Tensor) or not c_noise.is_floating_point():
        got = f"dtype {c_noise.dtype}" if isinstance(c_noise, torch.Tensor) else type(c_noise).__name__
        raise TypeError(f"c_noise: expected a floating-point tensor of shape [{batch}], got {got}")
    if c_noise.device != x.device:
        raise ValueError(f"c_noise: expected a tensor on x's device {x.device}, got one on {c_noise.device}")
    if c_noise.shape == (batch,):
        return c_noise
    if c_noise.numel() == 1 and c_noise.ndim <= 1:
        return c_noise.reshape(1).expand(batch)
    raise ValueError(f"c_noise: expected shape [{batch}] (one value per sample), got {tuple(c_noise.shape)}")


def _check_labels(class_labels, num_classes: int, x: torch.Tensor):
    """None, int indices [B], or float rows [B, num_classes] on x's device; labels for an unconditional net raise."""
    if class_labels is None:
        return None
    batch = x.shape[0]
    accepted = f"int64 indices of shape [{batch}] or float one-hot rows of shape [{batch}, {num_classes}]"
    if num_classes == 0:
        raise ValueError("class_labels: this network is unconditional (num_classes=0) and cannot take labels; "
                         "build it with num_classes > 0 or pass class_labels=None")
    if not isinstance(class_labels, torch.Tensor) or class_labels.dtype == torch.bool or class_labels.is_complex():
        got = f"dtype {class_labels.dtype}" if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
        raise TypeError(f"class_labels: expected {accepted}, got {got}")
    if class_labels.device != x.device:
        raise ValueError(f"class_labels: expected a tensor on x's device {x.device}, got one on {class_labels.device}")
    expected = (batch, num_classes) if class_labels.is_floating_point() else (batch,)
    if class_labels.shape != expected:
        raise ValueError(f"class_labels: expected {accepted}, got {class_labels.dtype} of shape {tuple(class_labels.shape)}")
    return class_labels


def _plain(value):
    """Tuples as lists (JSON's and torch.load(weights_only=True)'s plain data); anything else unchanged."""
    return list(value) if isinstance(value, tuple) else value


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias (used on the last layer of every residual branch and of the output)."""
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def _num_groups(channels: int, max_groups: int = 32, min_channels_per_group: int = 4) -> int:
    """The most groups (at most 32) that divide `channels` with at least 4 channels each; 1 for tiny layers."""
    for groups in range(min(max_groups, channels // min_channels_per_group), 1, -1):
        if channels % groups == 0:
            return groups
    return 1


# --------------------------------------------------------------------------------------------------------------
# Conditioning: noise level and class label -> one embedding vector per sample

class NoiseEmbedding(nn.Module):
    """c_noise [B] -> [B, channels] = [cos(c_noise * f), sin(c_noise * f)] for a fixed frequency table f.

    "positional": f_k = max_positions^(-k / (channels/2)), the transformer's sinusoidal table (DDPM++).
    "fourier": f_k = 2 pi * N(0, fourier_scale^2), random Fourier features (NCSN++), drawn from torch's RNG once.
    The table is a buffer, so it follows the module's device and is saved with its state.
    """

    def __init__(self, channels: int, kind: str = "positional", max_positions: float = 10000.0, fourier_scale: float = 16.0):
        super().__init__()
        if channels % 2:
            raise ValueError(f"channels: the noise embedding needs an even number of channels, got {channels}")
        half = channels // 2
        if kind == "positional":
            freqs = max_positions ** (-torch.arange(half, dtype=torch.float64) / half)
        else:
            freqs = 2 * math.pi * fourier_scale * torch.randn(half, dtype=torch.float64)
        self.kind = kind
        self.register_buffer("freqs", freqs.to(torch.float32))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise.to(torch.float32)[:, None] * self.freqs.to(torch.float32)[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class LabelEmbedding(nn.Module):
    """Class labels -> [B, channels]: one learned row per class, mixed by the (one-hot or soft) label row.

    An all-zero label row embeds to zeros, the unconditional input. In training mode each sample's embedding is
    zeroed with probability `label_dropout` (classifier-free guidance training); never in eval mode.
    """

    def __init__(self, num_classes: int, channels: int, label_dropout: float = 0.0):
        super().__init__()
        self.label_dropout = label_dropout
        self.weight = nn.Parameter(torch.randn(num_classes, channels))  # unit scale, like the sin/cos features

    def forward(self, class_labels: torch.Tensor) -> torch.Tensor:
        if class_labels.is_floating_point():
            emb = class_labels.to(self.weight.dtype) @ self.weight
        else:
            emb = F.embedding(class_labels, self.weight)  # a gather: the same rows as one-hot @ weight, exactly
        if self.training and self.label_dropout > 0:
            keep = torch.rand(emb.shape[0], 1, device=emb.device) >= self.label_dropout  # p = 1 drops every sample
            emb = emb * keep.to(emb.dtype)
        return emb


class ConditionEmbedding(nn.Module):
    """(c_noise, class_labels) -> [B, out_channels] = SiLU(fc1(SiLU(fc0(noise features + label embedding)))).

    Computed in float32 (the parameters' dtype) with autocast off: it is tiny, and it sets every block's modulation.
    """

    def __init__(self, noise_channels: int, out_channels: int, embedding: str, num_classes: int, label_dropout: float,
                 max_positions: float, fourier_scale: float):
        super().__init__()
        self.noise = NoiseEmbedding(noise_channels, embedding, max_positions, fourier_scale)
        self.label = LabelEmbedding(num_classes, noise_channels, label_dropout) if num_classes else None
        self.fc0 = nn.Linear(noise_channels, out_channels)
        self.fc1 = nn.Linear(out_channels, out_channels)

    def forward(self, c_noise: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        with torch.autocast(device_type=c_noise.device.type, enabled=False):
            emb = self.noise(c_noise)
            if class_labels is not None:  # None and all-zero rows give the same embedding, bit for bit
                emb = emb + self.label(class_labels)
            emb = F.silu(self.fc0(emb.to(self.fc0.weight.dtype)))
            return F.silu(self.fc1(emb))


# --------------------------------------------------------------------------------------------------------------
# U-Net layers

class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype, returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(_num_groups(channels), channels, eps=1e-6)


class SelfAttention(nn.Module):
    """x + proj(softmax(q k^T / sqrt(d)) v) over the H*W positions, heads of d channels; the sum scaled by 1/sqrt(2).

    proj is zero-initialised, so a fresh block only rescales x.
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each [B, heads, H*W, d]
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return (x + self.proj(h)) * SKIP_SCALE


class ResBlock(nn.Module):
    """DDPM++ residual block, then optional self-attention.

    h = conv0(SiLU(GN(x)));  h = SiLU(GN(h) * (1 + scale) + shift) with (scale, shift) = affine(emb);
    h = conv1(dropout(h)) (zero-initialised);  out = (skip(x) + h) / sqrt(2), skip a 1x1 conv when channels change.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, dropout: float, num_heads: int = 0):
        super().__init__()
        self.norm0 = _norm(in_channels)
        self.conv0 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.affine = nn.Linear(emb_channels, 2 * out_channels)
        self.norm1 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.attention = SelfAttention(out_channels, num_heads) if num_heads else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm1(h) * (scale + 1) + shift)
        h = self.conv1(self.dropout(h))
        x = (self.skip(x) + h) * SKIP_SCALE
        return x if self.attention is None else self.attention(x)


class Downsample(nn.Module):
    """Halve H and W, rounding up: a stride-2 3x3 conv ("conv") or 2x2 average pooling ("pool")."""

    def __init__(self, channels: int, resample: str):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if resample == "conv" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if self.conv is not None else F.avg_pool2d(x, 2, ceil_mode=True)


class Upsample(nn.Module):
    """Repeat each pixel 2x2 and crop to `size` (the skip connection's H, W), then a 3x3 conv ("conv") or nothing ("pool").

    Repeat-and-crop puts output pixel 2i over input pixel i, where the stride-2 downsampling took it from, also for
    odd sizes.
    """

    def __init__(self, channels: int, resample: str):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if resample == "conv" else None

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")[..., : size[0], : size[1]]
        return self.conv(x) if self.conv is not None else x


# --------------------------------------------------------------------------------------------------------------
# The networks

class UNet(nn.Module):
    """A compact DDPM++-style U-Net: F(x [B, C, H, W], c_noise [B], class_labels=None) -> [B, out_channels, H, W].

    Encoder: 3x3 conv, then per level (downsampling before every level but the first) `num_blocks` residual blocks
    of model_channels * channel_mult[level] channels. Middle: two residual blocks, the first with attention.
    Decoder: per level from the deepest, `num_blocks + 1` residual blocks, each taking the concatenation of the
    running features and one encoder output (skip connection), then upsampling. Output: GN, SiLU, 3x3 conv.
    Every residual block is modulated by the embedding of (c_noise, class_labels) through adaptive GroupNorm;
    levels whose resolution is in `attn_resolutions` get self-attention after each residual block.

    Zero initialisation: the last conv of every residual branch, every attention projection and the output conv
    start at zero, so a fresh network outputs exactly 0 (under EDM preconditioning, D(x) = c_skip x) and every
    block starts as a rescaled identity.

    img_resolution is the nominal resolution: level l runs at img_resolution halved l times (rounding up), which
    decides where attention goes. The net is fully convolutional and takes any H, W (odd sizes included).
    Attention heads: `num_heads` per attention layer if given, else channels // channels_per_head (at least 1).
    embedding: "positional" (sinusoidal, DDPM++) or "fourier" (random Fourier features, NCSN++) of c_noise.
    resample: "conv" (stride-2 conv down; nearest up then conv) or "pool" (2x2 average down; nearest up).
    """

    def __init__(self, img_resolution: int = 32, in_channels: int = 3, out_channels: int | None = None,
                 model_channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2), num_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), dropout: float = 0.0, num_classes: int = 0,
                 label_dropout: float = 0.0, embedding: str = "positional", num_heads: int | None = None,
                 channels_per_head: int = 64, resample: str = "conv", max_positions: float = 10000.0,
                 fourier_scale: float = 16.0):
        super().__init__()
        # The constructor's arguments, as plain data: fastdiff.models saves them with the weights to rebuild the net.
        self.config = dict(img_resolution=img_resolution, in_channels=in_channels, out_channels=out_channels,
                           model_channels=model_channels, channel_mult=_plain(channel_mult), num_blocks=num_blocks,
                           attn_resolutions=_plain(attn_resolutions), dropout=dropout, num_classes=num_classes,
                           label_dropout=label_dropout, embedding=embedding, num_heads=num_heads,
                           channels_per_head=channels_per_head, resample=resample, max_positions=max_positions,
                           fourier_scale=fourier_scale)
        self.img_resolution = check_int("img_resolution", img_resolution, minimum=1)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = self.in_channels if out_channels is None else check_int("out_channels", out_channels, minimum=1)
        model_channels = check_int("model_channels", model_channels, minimum=1)
        channel_mult = _check_int_tuple("channel_mult", channel_mult, minimum=1, allow_empty=False)
        num_blocks = check_int("num_blocks", num_blocks, minimum=1)
        attn_resolutions = _check_int_tuple("attn_resolutions", attn_resolutions, minimum=1, allow_empty=True)
        dropout = _check_probability("dropout", dropout, allow_one=False)
        self.num_classes = check_int("num_classes", num_classes, minimum=0)
        label_dropout = _check_label_dropout(label_dropout, self.num_classes)
        embedding = check_choice("embedding", embedding, EMBEDDINGS)
        if num_heads is not None:
            num_heads = check_int("num_heads", num_heads, minimum=1)
        channels_per_head = check_int("channels_per_head", channels_per_head, minimum=1)
        resample = check_choice("resample", resample, RESAMPLES)
        max_positions = check_positive("max_positions", max_positions)
        fourier_scale = check_positive("fourier_scale", fourier_scale)

        resolutions = [self.img_resolution]
        for _ in channel_mult[1:]:
            resolutions.append((resolutions[-1] + 1) // 2)
        for r in attn_resolutions:
            if r not in resolutions:
                raise ValueError(f"attn_resolutions: {r} is not the resolution of any level; with img_resolution="
                                 f"{self.img_resolution} and {len(channel_mult)} levels they are {tuple(resolutions)}")
        self.level_resolutions = tuple(resolutions)
        self.attn_resolutions = attn_resolutions

        def heads(channels: int) -> int:
            if num_heads is not None:
                if channels % num_heads:
                    raise ValueError(f"num_heads: must divide the {channels} channels of an attention layer, got {num_heads}")
                return num_heads
            if channels > channels_per_head and channels % channels_per_head:
                raise ValueError(f"channels_per_head: must divide the {channels} channels of an attention layer, "
                                 f"got {channels_per_head}")
            return max(1, channels // channels_per_head)

        emb_channels = 4 * model_channels
        noise_channels = 2 * ((model_channels + 1) // 2)
        self.embed = ConditionEmbedding(noise_channels, emb_channels, embedding, self.num_classes, label_dropout,
                                        max_positions, fourier_scale)
        self.conv_in = nn.Conv2d(self.in_channels, model_channels, 3, padding=1)

        # Encoder: every layer's output is a skip connection, consumed in reverse order by the decoder.
        self.encoder = nn.ModuleList()
        skip_channels = [model_channels]
        channels = model_channels
        for level, mult in enumerate(channel_mult):
            attn = resolutions[level] in attn_resolutions
            if level > 0:
                self.encoder.append(Downsample(channels, resample))
                skip_channels.append(channels)
            for _ in range(num_blocks):
                out = model_channels * mult
                self.encoder.append(ResBlock(channels, out, emb_channels, dropout, heads(out) if attn else 0))
                channels = out
                skip_channels.append(channels)

        self.middle = nn.ModuleList([ResBlock(channels, channels, emb_channels, dropout, heads(channels)),
                                     ResBlock(channels, channels, emb_channels, dropout)])

        self.decoder = nn.ModuleList()
        for level in reversed(range(len(channel_mult))):
            attn = resolutions[level] in attn_resolutions
            for _ in range(num_blocks + 1):
                out = model_channels * channel_mult[level]
                self.decoder.append(ResBlock(channels + skip_channels.pop(), out, emb_channels, dropout,
                                             heads(out) if attn else 0))
                channels = out
            if level > 0:
                self.decoder.append(Upsample(channels, resample))

        self.norm_out = _norm(channels)
        self.conv_out = _zero(nn.Conv2d(channels, self.out_channels, 3, padding=1))

    @classmethod
    def small(cls, img_resolution: int = 32, in_channels: int = 3, num_classes: int = 0, **overrides) -> "UNet":
        """The benchmark's small U-Net: about 9.6M parameters at 32x32 RGB (64 channels, x(1, 2, 2, 2), 2 blocks, attention at 16).

        Attention goes at the second level (img_resolution / 2) whatever the resolution; `overrides` go to UNet().
        """
        config = dict(model_channels=64, channel_mult=(1, 2, 2, 2), num_blocks=2,
                      attn_resolutions=((img_resolution + 1) // 2,), channels_per_head=64)
        config.update(overrides)
        return cls(img_resolution=img_resolution, in_channels=in_channels, num_classes=num_classes, **config)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """F(x, c_noise[, class_labels]) with x [B, in_channels, H, W], c_noise [B]; returns [B, out_channels, H, W] in x's dtype."""
        _check_input(x, 4, self.in_channels, f"[B, {self.in_channels}, H, W]")
        emb = self.embed(_check_noise(c_noise, x), _check_labels(class_labels, self.num_classes, x))
        h = self.conv_in(x.to(self.conv_in.weight.dtype))
        skips = [h]
        for layer in self.encoder:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer in self.decoder:
            if isinstance(layer, Upsample):
                h = layer(h, skips[-1].shape[-2:])
            else:
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h))).to(x.dtype)


class MLPBlock(nn.Module):
    """One MLP layer with the embedding added before its activation.

    residual: h + fc2(SiLU(fc1(SiLU(h)) + proj(emb))), fc2 zero-initialised (the block starts as the identity).
    plain: fc1(SiLU(h)) + proj(emb).
    """

    def __init__(self, hidden: int, residual: bool):
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.fc2 = _zero(nn.Linear(hidden, hidden)) if residual else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        u = self.fc1(F.silu(h)) + self.proj(emb)
        return u if self.fc2 is None else h + self.fc2(F.silu(u))


class MLP(nn.Module):
    """F(x [B, dim], c_noise [B], class_labels=None) -> [B, dim]: an MLP for low-dimensional data.

    x -> Linear(dim, hidden) -> `depth` MLPBlocks (residual or plain), each given the (c_noise, class_labels)
    embedding -> SiLU -> Linear(hidden, dim), zero-initialised so a fresh network outputs exactly 0.
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, embedding_dim: int = 64, num_classes: int = 0,
                 label_dropout: float = 0.0, embedding: str = "positional", residual: bool = True,
                 max_positions: float = 10000.0, fourier_scale: float = 16.0):
        super().__init__()
        self.config = dict(dim=dim, hidden=hidden, depth=depth, embedding_dim=embedding_dim, num_classes=num_classes,
                           label_dropout=label_dropout, embedding=embedding, residual=residual,
                           max_positions=max_positions, fourier_scale=fourier_scale)  # see UNet.config
        self.dim = check_int("dim", dim, minimum=1)
        hidden = check_int("hidden", hidden, minimum=1)
        depth = check_int("depth", depth, minimum=1)
        embedding_dim = check_int("embedding_dim", embedding_dim, minimum=2)
        if embedding_dim % 2:
            raise ValueError(f"embedding_dim: must be even (cos and sin halves), got {embedding_dim}")
        self.num_classes = check_int("num_classes", num_classes, minimum=0)
        label_dropout = _check_label_dropout(label_dropout, self.num_classes)
        embedding = check_choice("embedding", embedding, EMBEDDINGS)
        check_bool("residual", residual)
        max_positions = check_positive("max_positions", max_positions)
        fourier_scale = check_positive("fourier_scale", fourier_scale)

        self.embed = ConditionEmbedding(embedding_dim, hidden, embedding, self.num_classes, label_dropout,
                                        max_positions, fourier_scale)
        self.fc_in = nn.Linear(self.dim, hidden)
        self.blocks = nn.ModuleList(MLPBlock(hidden, residual) for _ in range(depth))
        self.fc_out = _zero(nn.Linear(hidden, self.dim))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """F(x, c_noise[, class_labels]) with x [B, dim], c_noise [B]; returns [B, dim] in x's dtype."""
        _check_input(x, 2, self.dim, f"[B, {self.dim}]")
        emb = self.embed(_check_noise(c_noise, x), _check_labels(class_labels, self.num_classes, x))
        h = self.fc_in(x.to(self.fc_in.weight.dtype))
        for block in self.blocks:
            h = block(h, emb)
        return self.fc_out(F.silu(h)).to(x.dtype)
