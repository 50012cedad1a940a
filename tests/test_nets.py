"""fastdiff.nets: shapes, zero initialisation, class conditioning and label dropout, argument errors, gradients,
autocast, use under EDMPrecond + fastdiff.sample, and capture safety (no host sync, no host-to-device copy)."""
import pytest
import torch

import fastdiff
from fastdiff.testing import SyncCounter
from fastdiff.nets import MLP, SelfAttention, UNet

NUM_CLASSES = 4


def tiny_unet(**kwargs):
    """Two levels (16 and 8), one block each, attention at 8: a few hundred thousand parameters, fast on the CPU."""
    config = dict(img_resolution=16, model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(8,),
                  channels_per_head=16)
    config.update(kwargs)
    return UNet(**config)


def perturbed(net, seed=0, std=0.05):
    """The net with every parameter moved by N(0, std^2): undoes the zero initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(std * torch.randn(p.shape, generator=generator))
    return net


def image(batch, channels=3, height=16, width=16, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator), torch.randn(batch, generator=generator)


def points(batch, dim=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=generator), torch.randn(batch, generator=generator)


def count(net):
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("batch,height,width,kwargs", [
    (1, 16, 16, {}),
    (3, 8, 8, {}),
    (5, 13, 19, {}),  # odd sizes: down 13 -> 7, up 7 -> 14 cropped to 13
    (3, 37, 41, dict(channel_mult=(1, 2, 2), attn_resolutions=(4,))),
    (2, 15, 9, dict(resample="pool")),
    (3, 16, 16, dict(in_channels=1, out_channels=2)),
    (1, 16, 16, dict(embedding="fourier", num_heads=2)),
])
def test_unet_output_shape(batch, height, width, kwargs):
    net = perturbed(tiny_unet(**kwargs)).eval()
    x, c_noise = image(batch, net.in_channels, height, width)
    with torch.no_grad():
        out = net(x, c_noise)
    assert out.shape == (batch, net.out_channels, height, width)
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("batch,dim,residual", [(1, 2, True), (7, 2, False), (5, 3, True)])
def test_mlp_output_shape(batch, dim, residual):
    net = perturbed(MLP(dim=dim, hidden=32, depth=3, embedding_dim=16, residual=residual)).eval()
    x, c_noise = points(batch, dim)
    out = net(x, c_noise)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_samples_in_a_batch_are_independent():
    """Sample i's output does not depend on the other samples (GroupNorm and attention are per sample)."""
    net = perturbed(tiny_unet(num_classes=NUM_CLASSES)).eval()
    x, c_noise = image(5)
    labels = torch.tensor([0, 3, 1, 2, 2])
    with torch.no_grad():
        whole = net(x, c_noise, labels)
        one = net(x[2:3], c_noise[2:3], labels[2:3])
    torch.testing.assert_close(whole[2:3], one, rtol=1e-5, atol=1e-6)


def test_non_contiguous_input_and_scalar_c_noise():
    net = perturbed(tiny_unet()).eval()
    x, c_noise = image(3, height=12, width=10)
    x_t = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    assert not x_t.is_contiguous()
    with torch.no_grad():
        torch.testing.assert_close(net(x_t, c_noise), net(x, c_noise))
        one_level = torch.tensor(0.3)  # one value for every sample, as a 0-d tensor
        torch.testing.assert_close(net(x, one_level), net(x, one_level.expand(3).contiguous()))


def test_float64_input_runs_in_the_parameters_dtype_and_returns_float64():
    """A float64 sampler state reaches the float32 net unchanged in value, and the result comes back in float64."""
    net = perturbed(tiny_unet()).eval()
    x, c_noise = image(2)
    with torch.no_grad():
        out64 = net(x.double(), c_noise.double())
        out32 = net(x, c_noise)
    assert out64.dtype == torch.float64
    assert torch.equal(out64, out32.double())


# ----------------------------------------------------------------------------------------------- UNet.small and layout

def test_small_unet_size_and_layout():
    net = UNet.small(img_resolution=32, in_channels=3, num_classes=0)
    assert 5_000_000 <= count(net) <= 15_000_000
    assert count(net) == 9_593_539  # the number the benchmark reports; a change here is a change of the benchmark net
    assert net.level_resolutions == (32, 16, 8, 4)
    attention = [m for m in net.modules() if isinstance(m, SelfAttention)]
    assert len(attention) == 2 + 3 + 1  # encoder and decoder blocks at 16x16, and the first middle block
    conditional = UNet.small(num_classes=10)
    assert count(conditional) == count(net) + 10 * 64  # one 64-wide embedding row per class
    x, c_noise = image(1, 3, 32, 32)
    with torch.no_grad():
        assert net(x, c_noise).shape == x.shape


def test_small_unet_at_other_resolutions_puts_attention_at_half_resolution():
    net = UNet.small(img_resolution=64, in_channels=1)
    assert net.attn_resolutions == (32,) and net.level_resolutions == (64, 32, 16, 8)


# ------------------------------------------------------------------------------------------------- zero initialisation

@pytest.mark.parametrize("make,data", [
    (lambda: tiny_unet(num_classes=NUM_CLASSES), lambda: image(3)),
    (lambda: MLP(hidden=32, depth=2, embedding_dim=16, num_classes=NUM_CLASSES), lambda: points(3)),
    (lambda: MLP(hidden=32, depth=2, embedding_dim=16, residual=False), lambda: points(3)),
])
def test_fresh_net_outputs_exact_zeros_and_a_perturbed_one_does_not(make, data):
    """The output layer starts at zero, so a fresh F is exactly 0 (D = c_skip x under EDMPrecond)."""
    net = make()
    x, c_noise = data()
    labels = torch.tensor([0, 1, 2]) if net.num_classes else None
    with torch.no_grad():
        assert torch.equal(net(x, c_noise, labels), torch.zeros_like(x))
        out = perturbed(net)(x, c_noise, labels)
    assert out.abs().min() > 0


def test_fresh_unet_residual_branches_start_at_zero():
    """Zero-init covers the last conv of every residual branch and every attention projection, not only the output."""
    net = tiny_unet()
    zeroed = [name for name, p in net.named_parameters() if not p.any()]
    assert "conv_out.weight" in zeroed and "conv_out.bias" in zeroed
    assert any(name.endswith("conv1.weight") for name in zeroed)
    assert any(name.endswith("attention.proj.weight") for name in zeroed)
    assert not any(name.endswith("conv0.weight") for name in zeroed)


# --------------------------------------------------------------------------------------------------- class labels

@pytest.mark.parametrize("make,data", [
    (lambda **kw: tiny_unet(num_classes=NUM_CLASSES, **kw), lambda: image(5)),
    (lambda **kw: MLP(hidden=32, depth=2, embedding_dim=16, num_classes=NUM_CLASSES, **kw), lambda: points(5)),
])
def test_class_conditioning(make, data):
    """Labels change the output; index and one-hot labels agree exactly; zero rows equal the unconditional call."""
    net = perturbed(make()).eval()
    x, c_noise = data()
    index = torch.tensor([0, 1, 2, 3, 1])
    one_hot = torch.nn.functional.one_hot(index, NUM_CLASSES).float()
    with torch.no_grad():
        by_index = net(x, c_noise, index)
        by_one_hot = net(x, c_noise, one_hot)
        other = net(x, c_noise, (index + 1) % NUM_CLASSES)
        zeros = net(x, c_noise, torch.zeros(5, NUM_CLASSES))
        unconditional = net(x, c_noise)
        soft = net(x, c_noise, torch.full((5, NUM_CLASSES), 1 / NUM_CLASSES))
    assert torch.equal(by_index, by_one_hot)
    assert torch.equal(zeros, unconditional)
    for a, b in [(by_index, other), (by_index, zeros), (soft, zeros), (soft, by_index)]:
        assert (a - b).abs().amax(dim=tuple(range(1, a.ndim))).min() > 0  # every sample differs
    index32 = net(x, c_noise, index.int())
    assert torch.equal(index32, by_index)


@pytest.mark.parametrize("make,data", [
    (lambda **kw: tiny_unet(num_classes=NUM_CLASSES, **kw), lambda: image(7)),
    (lambda **kw: MLP(hidden=32, depth=2, embedding_dim=16, num_classes=NUM_CLASSES, **kw), lambda: points(7)),
])
def test_label_dropout(make, data):
    """label_dropout=1 in training equals zero labels; in eval mode nothing is dropped and torch's RNG is untouched;
    label_dropout=0.5 in training drops some samples (each row is either the conditional or the unconditional one)."""
    x, c_noise = data()
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    zeros = torch.zeros(7, NUM_CLASSES)
    with torch.no_grad():
        always = perturbed(make(label_dropout=1.0))
        conditional, unconditional = always.eval()(x, c_noise, labels), always(x, c_noise, zeros)
        state = torch.get_rng_state()
        assert torch.equal(always.eval()(x, c_noise, labels), conditional)  # eval: never dropped
        assert torch.equal(torch.get_rng_state(), state)  # eval: no random numbers drawn
        assert torch.equal(always.train()(x, c_noise, labels), unconditional)
        assert not torch.equal(conditional, unconditional)

        half = perturbed(make(label_dropout=0.5))
        conditional, unconditional = half.eval()(x, c_noise, labels), half(x, c_noise, zeros)
        half.train()
        torch.manual_seed(3)
        out = half(x, c_noise, labels)
        torch.manual_seed(3)
        assert torch.equal(half(x, c_noise, labels), out)  # the draw comes from torch's RNG
        dims = tuple(range(1, x.ndim))
        kept = (out == conditional).all(dim=dims)
        dropped = (out == unconditional).all(dim=dims)
        assert bool((kept ^ dropped).all())
        drops = [int(dropped.sum())]
        for seed in range(4, 8):  # over 5 draws of 7 samples, some are dropped and some kept
            torch.manual_seed(seed)
            drops.append(int((half(x, c_noise, labels) == unconditional).all(dim=dims).sum()))
        assert 0 < sum(drops) < 35


# ---------------------------------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("cls,kwargs,error,match", [
    (UNet, dict(img_resolution=0), ValueError, "img_resolution: must be >= 1, got 0"),
    (UNet, dict(in_channels=2.0), TypeError, "in_channels: expected an int, got 2.0"),
    (UNet, dict(out_channels=0), ValueError, "out_channels: must be >= 1, got 0"),
    (UNet, dict(model_channels=True), TypeError, "model_channels: expected an int, got True"),
    (UNet, dict(channel_mult=()), ValueError, r"channel_mult: expected at least one entry, got \(\)"),
    (UNet, dict(channel_mult=(1, 0)), ValueError, r"channel_mult\[1\]: must be >= 1, got 0"),
    (UNet, dict(channel_mult="12"), TypeError, "channel_mult: expected a tuple of ints, got '12'"),
    (UNet, dict(num_blocks=0), ValueError, "num_blocks: must be >= 1, got 0"),
    (UNet, dict(attn_resolutions=(15,)), ValueError, r"attn_resolutions: 15 is not the resolution of any level; .*\(32, 16, 8\)"),
    (UNet, dict(dropout=1.0), ValueError, r"dropout: must be in \[0, 1\), got 1.0"),
    (UNet, dict(dropout=-0.1), ValueError, "dropout: must be >= 0.0, got -0.1"),
    (UNet, dict(num_classes=-1), ValueError, "num_classes: must be >= 0, got -1"),
    (UNet, dict(num_classes=3, label_dropout=1.5), ValueError, r"label_dropout: must be in \[0, 1\], got 1.5"),
    (UNet, dict(label_dropout=0.1), ValueError, "label_dropout: needs a class-conditional net .*num_classes=0"),
    (UNet, dict(embedding="learned"), ValueError, "embedding: expected one of 'positional', 'fourier', got 'learned'"),
    (UNet, dict(resample="bilinear"), ValueError, "resample: expected one of 'conv', 'pool', got 'bilinear'"),
    (UNet, dict(num_heads=0), ValueError, "num_heads: must be >= 1, got 0"),
    (UNet, dict(num_heads=3), ValueError, "num_heads: must divide the 128 channels of an attention layer, got 3"),
    (UNet, dict(channels_per_head=48), ValueError, "channels_per_head: must divide the 128 channels .*got 48"),
    (UNet, dict(fourier_scale=0.0), ValueError, "fourier_scale: must be > 0, got 0.0"),
    (MLP, dict(dim=0), ValueError, "dim: must be >= 1, got 0"),
    (MLP, dict(hidden=1.5), TypeError, "hidden: expected an int, got 1.5"),
    (MLP, dict(depth=0), ValueError, "depth: must be >= 1, got 0"),
    (MLP, dict(embedding_dim=15), ValueError, "embedding_dim: must be even .*got 15"),
    (MLP, dict(residual=1), TypeError, "residual: expected True or False, got 1"),
    (MLP, dict(label_dropout=0.5), ValueError, "label_dropout: needs a class-conditional net"),
    (MLP, dict(embedding=None), ValueError, "embedding: expected one of 'positional', 'fourier', got None"),
])
def test_bad_constructor_arguments(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_bad_forward_arguments():
    net = tiny_unet(num_classes=NUM_CLASSES)
    unconditional = tiny_unet()
    mlp = MLP(hidden=8, depth=1, embedding_dim=8)
    x, c_noise = image(3)
    labels = torch.tensor([0, 1, 2])
    cases = [
        (lambda: net(x[:, :2], c_noise), ValueError, r"x: expected shape \[B, 3, H, W\] with 3 in dim 1, got \(3, 2, 16, 16\)"),
        (lambda: net(x.long(), c_noise), TypeError, "x: expected a floating-point tensor .*got dtype torch.int64"),
        (lambda: net([[0.0]], c_noise), TypeError, "x: expected a floating-point tensor .*got list"),
        (lambda: mlp(torch.zeros(3, 3), c_noise), ValueError, r"x: expected shape \[B, 2\] with 2 in dim 1, got \(3, 3\)"),
        (lambda: net(x, c_noise[:2]), ValueError, r"c_noise: expected shape \[3\] \(one value per sample\), got \(2,\)"),
        (lambda: net(x, c_noise[:, None, None]), ValueError, r"c_noise: expected shape \[3\]"),
        (lambda: net(x, 0.5), TypeError, r"c_noise: expected a floating-point tensor of shape \[3\], got float"),
        (lambda: net(x, torch.zeros(3, dtype=torch.int64)), TypeError, "c_noise: .*got dtype torch.int64"),
        (lambda: net(x, c_noise, labels[:2]), ValueError, r"class_labels: expected int64 indices of shape \[3\] .*shape \(2,\)"),
        (lambda: net(x, c_noise, torch.zeros(3, 5)), ValueError, r"class_labels: .*one-hot rows of shape \[3, 4\], got torch.float32 of shape \(3, 5\)"),
        (lambda: net(x, c_noise, labels > 0), TypeError, "class_labels: .*got dtype torch.bool"),
        (lambda: net(x, c_noise, [0, 1, 2]), TypeError, "class_labels: .*got list"),
        (lambda: unconditional(x, c_noise, labels), ValueError, r"class_labels: this network is unconditional \(num_classes=0\)"),
        (lambda: net(x, c_noise, torch.tensor([0, 1, NUM_CLASSES])), IndexError, "index out of range"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


# ------------------------------------------------------------------------------------------ gradients and autocast

@pytest.mark.parametrize("make,data", [
    (lambda: tiny_unet(num_classes=NUM_CLASSES, dropout=0.1), lambda: image(3)),
    (lambda: tiny_unet(embedding="fourier", resample="pool", num_classes=NUM_CLASSES), lambda: image(2, height=9, width=11)),
    (lambda: MLP(hidden=32, depth=2, embedding_dim=16, num_classes=NUM_CLASSES), lambda: points(3)),
    (lambda: MLP(hidden=32, depth=2, embedding_dim=16, residual=False, num_classes=NUM_CLASSES), lambda: points(3)),
])
def test_gradients_reach_every_parameter(make, data):
    net = perturbed(make()).train()
    x, c_noise = data()
    out = net(x, c_noise, torch.arange(x.shape[0]) % NUM_CLASSES)
    (out**2).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_fresh_unet_trains_its_output_layer_first():
    """With zero-init, the first backward reaches only the output conv; the rest follows once it is non-zero."""
    net = tiny_unet()
    x, c_noise = image(2)
    (net(x, c_noise) - x).square().sum().backward()
    nonzero = {name for name, p in net.named_parameters() if p.grad is not None and p.grad.any()}
    assert nonzero == {"conv_out.weight", "conv_out.bias"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_on_cpu(dtype):
    """Under CPU autocast the net runs, returns x's dtype, stays finite and near the float32 result."""
    net = perturbed(tiny_unet(num_classes=NUM_CLASSES)).eval()
    mlp = perturbed(MLP(hidden=32, depth=2, embedding_dim=16)).eval()
    x, c_noise = image(3)
    p, c_p = points(3)
    labels = torch.tensor([1, 2, 3])
    with torch.no_grad():
        reference = net(x, c_noise, labels)
        with torch.autocast("cpu", dtype=dtype):
            out = net(x, c_noise, labels)
            out_mlp = mlp(p, c_p)
            emb = net.embed(c_noise, labels)
    assert out.dtype == torch.float32 and out_mlp.dtype == torch.float32
    assert emb.dtype == torch.float32  # the conditioning embedding stays in float32
    assert torch.isfinite(out).all() and torch.isfinite(out_mlp).all()
    error = (out - reference).abs().max() / reference.abs().max()
    assert 0 < error < 0.05


def test_torch_compile_traces_without_graph_breaks():
    """fullgraph=True fails on any graph break; the eager backend keeps this fast (no code generation)."""
    net = perturbed(tiny_unet(num_classes=NUM_CLASSES)).eval()
    x, c_noise = image(3)
    labels = torch.tensor([0, 1, 2])
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, c_noise, labels), net(x, c_noise, labels))


def test_fourier_table_is_saved_with_the_state():
    """The random Fourier frequencies are a buffer: a second net loading the state gives the same outputs."""
    torch.manual_seed(0)
    a = perturbed(MLP(hidden=16, depth=1, embedding_dim=8, embedding="fourier"))
    torch.manual_seed(1)
    b = MLP(hidden=16, depth=1, embedding_dim=8, embedding="fourier")
    assert "embed.noise.freqs" in a.state_dict()
    assert not torch.equal(a.embed.noise.freqs, b.embed.noise.freqs)
    b.load_state_dict(a.state_dict())
    x, c_noise = points(4)
    assert torch.equal(a(x, c_noise), b(x, c_noise))


# ----------------------------------------------------------------------------------- with EDMPrecond and the sampler

def test_edm_sampling_with_the_small_unet():
    """EDMPrecond(UNet.small()) samples through fastdiff.sample; a fresh net (F = 0) gives D = c_skip x, so
    2 Heun steps have a closed form to compare against."""
    net = fastdiff.EDMPrecond(UNet.small(img_resolution=16, in_channels=3, num_classes=NUM_CLASSES)).eval()
    latents = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.nn.functional.one_hot(torch.tensor([1, 3]), NUM_CLASSES).float()
    with torch.no_grad():
        out = fastdiff.sample(net, latents, class_labels=labels, num_steps=2)
        t0, t1 = 80.0, 0.002
        x0 = latents.double() * t0
        d0 = x0 * (1 - 0.25 / (t0**2 + 0.25)) / t0  # (x - c_skip x) / t
        x1 = x0 + (t1 - t0) * d0
        d1 = x1 * (1 - 0.25 / (t1**2 + 0.25)) / t1
        x1 = x0 + (t1 - t0) * (d0 + d1) / 2  # Heun
        expected = x1 * 0.25 / (t1**2 + 0.25)  # the Euler step to t = 0 lands on D(x1) = c_skip x1
        torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-4)

        trained = fastdiff.EDMPrecond(perturbed(UNet.small(img_resolution=16, num_classes=NUM_CLASSES))).eval()
        out = fastdiff.sample(trained, latents, class_labels=labels, num_steps=2)
        out64 = fastdiff.sample(trained, latents.double(), class_labels=labels, num_steps=2)
    assert out.shape == latents.shape and torch.isfinite(out).all()
    assert out64.dtype == torch.float64 and torch.isfinite(out64).all()


def test_edm_sampling_with_the_mlp():
    net = fastdiff.EDMPrecond(perturbed(MLP(hidden=32, depth=2, embedding_dim=16))).eval()
    with torch.no_grad():
        out = fastdiff.sample(net, torch.randn(5, 2), num_steps=3)
    assert out.shape == (5, 2) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------------ capture safety

@pytest.mark.parametrize("make,data", [
    (lambda: tiny_unet(num_classes=NUM_CLASSES, label_dropout=0.3), lambda: image(3, height=11, width=13)),
    (lambda: tiny_unet(embedding="fourier", resample="pool", num_classes=NUM_CLASSES), lambda: image(3)),
    (lambda: MLP(hidden=16, depth=2, embedding_dim=8, num_classes=NUM_CLASSES, label_dropout=0.3), lambda: points(3)),
])
@pytest.mark.parametrize("labels", ["none", "index", "one_hot"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_forward_is_capture_safe(make, data, labels, mode):
    """No host sync and no host-to-device copy in forward, with or without labels, in eval and in training
    (label dropout draws on the device), and with grad enabled (training) as well as without."""
    net = perturbed(make()).train(mode == "train")
    x, c_noise = data()
    class_labels = {"none": None, "index": torch.tensor([0, 3, 1]),
                    "one_hot": torch.eye(NUM_CLASSES)[[0, 3, 1]]}[labels]
    with torch.set_grad_enabled(mode == "train"), SyncCounter() as counter:
        out = net(x, c_noise, class_labels)
    assert counter.syncs + counter.host_to_device == []
    assert out.shape == x.shape


def test_sync_counter_sees_a_sync():
    """The check above would catch one: .item() and torch.tensor(...) are recorded."""
    with SyncCounter() as counter:
        torch.zeros(2).sum().item()
        torch.tensor([1.0, 2.0])
    assert "aten::_local_scalar_dense" in counter.syncs and "aten::lift_fresh" in counter.host_to_device
