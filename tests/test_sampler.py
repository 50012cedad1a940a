"""fastdiff.sample against a plain EDM Algorithm 2 written here, plus its contract and its errors."""
import math
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastdiff
from fastdiff.testing import SyncCounter
from fastdiff.rng import SAMPLER_OFFSET
from fastdiff.testing import assert_close, assert_equal


def plain_edm_sampler(net, latents, class_labels=None, randn_like=torch.randn_like, num_steps=18, sigma_min=0.002,
                      sigma_max=80.0, rho=7.0, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0, euler=False):
    """EDM Algorithm 2 in float64, one line per formula of docs/formulas.md#edm-sampler (independent of fastdiff)."""
    sigma_min = max(sigma_min, getattr(net, "sigma_min", 0.0))
    sigma_max = min(sigma_max, getattr(net, "sigma_max", float("inf")))
    round_sigma = getattr(net, "round_sigma", lambda s: s)
    i = torch.arange(num_steps, dtype=torch.float64)
    t_steps = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t_steps = torch.cat([round_sigma(t_steps), torch.zeros(1, dtype=torch.float64)])
    x_next = latents.to(torch.float64) * t_steps[0]
    for i in range(num_steps):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        x_cur = x_next
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= float(t_cur) <= S_max else 0.0
        t_hat = round_sigma(t_cur + gamma * t_cur)
        x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * S_noise * randn_like(x_cur)
        denoised = net(x_hat, t_hat, class_labels).to(torch.float64)
        d_cur = (x_hat - denoised) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < num_steps - 1 and not euler:
            denoised = net(x_next, t_next, class_labels).to(torch.float64)
            d_prime = (x_next - denoised) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def seeded_randn_like(seed, draw_dtype=None):
    """A randn_like drawing from its own torch.Generator, so two samplers can be given the same noise."""
    generator = torch.Generator().manual_seed(seed)
    return lambda x: torch.randn(x.shape, generator=generator, dtype=draw_dtype or x.dtype).to(x.dtype)


class Recorder:
    """Wraps a denoiser and records every call's sigma (and labels)."""

    def __init__(self, net):
        self.net, self.sigmas, self.labels = net, [], []
        for name in ("sigma_min", "sigma_max", "round_sigma"):
            if hasattr(net, name):
                setattr(self, name, getattr(net, name))

    def __call__(self, x, sigma, *labels):
        self.sigmas.append(sigma)
        self.labels.append(labels)
        return self.net(x, sigma, *labels)


def mixture_net(dim=6):
    """An exact denoiser for a 6-D mixture, taking (x, sigma[, labels]) with any batch shape [B, 2, 3]."""
    gm = fastdiff.GaussianMixture(torch.linspace(-1, 1, 3 * dim).reshape(3, dim), [0.3, 0.5, 0.2], [0.5, 0.3, 0.2])
    return lambda x, sigma, labels=None: gm(x, sigma)


class FakeUNet(torch.nn.Module):
    """A small smooth network F(c_in x, c_noise[, labels]) for preconditioner-wrapped sampling."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(6, 6, dtype=torch.float64) / 3)

    def forward(self, x, c_noise, class_labels=None):
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        out = torch.tanh(flat @ self.weight) + 0.01 * c_noise.to(torch.float64).reshape(-1, 1)
        if class_labels is not None:
            out = out + class_labels.to(torch.float64).reshape(-1, 1)
        return out.reshape(x.shape).to(x.dtype)


LATENTS = fastdiff.randn(list(range(5)), (5, 2, 3), dtype=torch.float64)


@pytest.mark.parametrize("churn", [
    dict(),
    dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003),
    dict(S_churn=10.0),
])
@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_float64_reproduces_edm_bit_for_bit(churn, solver):
    """dtype=float64 with a randn_like gives exactly EDM Algorithm 2's result."""
    net = mixture_net()
    got = fastdiff.sample(net, LATENTS, randn_like=seeded_randn_like(1), num_steps=12, solver=solver, dtype=torch.float64, **churn)
    want = plain_edm_sampler(net, LATENTS, randn_like=seeded_randn_like(1), num_steps=12, euler=solver == "euler", **churn)
    assert_equal(got, want)


@pytest.mark.parametrize("precond", [fastdiff.iDDPMPrecond, fastdiff.VPPrecond, fastdiff.EDMPrecond, fastdiff.VEPrecond])
def test_preconditioned_nets_reproduce_edm(precond):
    """With a preconditioned net (round_sigma, sigma range, class labels) float64 sampling matches EDM."""
    net = precond(FakeUNet())
    labels = torch.arange(5, dtype=torch.float64) / 10
    settings = dict(num_steps=9, S_churn=30.0, S_min=0.01, S_max=10.0, class_labels=labels)
    got = fastdiff.sample(net, LATENTS, randn_like=seeded_randn_like(2), dtype=torch.float64, **settings)
    want = plain_edm_sampler(net, LATENTS, randn_like=seeded_randn_like(2), **settings)
    # A preconditioner evaluates [B]-shaped sigmas where EDM passes a 0-d one: same values, same bits.
    assert_equal(got, want)


def test_float32_state_is_close_to_float64():
    """The default float32 state stays within float32 accumulation error of the float64 sampler."""
    net = mixture_net()
    latents32 = LATENTS.float()
    got = fastdiff.sample(net, latents32, randn_like=seeded_randn_like(3), S_churn=20.0)
    want = plain_edm_sampler(net, latents32.double(), randn_like=seeded_randn_like(3, torch.float32), S_churn=20.0)
    assert got.dtype == torch.float32
    assert_close(got, want.float(), rtol=1e-4, atol=1e-4)


def test_network_evaluations_and_randn_like_calls():
    """Heun does 2N-1 evaluations and Euler N; randn_like is called once per step even without churn."""
    for solver, nfe in (("heun", 35), ("euler", 18)):
        net, draws = Recorder(mixture_net()), []
        fastdiff.sample(net, LATENTS, randn_like=lambda x: draws.append(1) or torch.randn_like(x), solver=solver)
        assert len(net.sigmas) == nfe and len(draws) == 18
        assert fastdiff.plan_steps(num_steps=18, solver=solver).nfe == nfe


def test_own_generator_draws_only_on_churn_steps(churn_offsets):
    """With seeds, noise is drawn only where gamma_i > 0, at offset 2^32 + i of each sample's stream."""
    offsets = churn_offsets
    settings = dict(num_steps=10, S_churn=20.0, S_min=0.5, S_max=20.0)
    plan = fastdiff.plan_steps(**settings)
    fastdiff.sample(mixture_net(), LATENTS, seeds=[1, 2, 3, 4, 5], **settings)
    churn_steps = [i for i, g in enumerate(plan.gamma) if g > 0]
    assert 0 < len(churn_steps) < 10
    assert offsets == [SAMPLER_OFFSET + i for i in churn_steps]


def test_seeded_noise_is_the_documented_stream():
    """sample(seeds=...) equals the plain sampler fed fastdiff.randn(seeds, shape, offset=2^32 + i) at step i."""
    seeds = [10, 20, 30, 40, 50]
    steps = iter(range(100))
    stream = lambda x: fastdiff.randn(seeds, x.shape, offset=SAMPLER_OFFSET + next(steps), dtype=x.dtype)
    settings = dict(num_steps=8, S_churn=15.0)  # churn on every step, so every step draws
    got = fastdiff.sample(mixture_net(), LATENTS, seeds=seeds, dtype=torch.float64, **settings)
    want = plain_edm_sampler(mixture_net(), LATENTS, randn_like=stream, **settings)
    assert_equal(got, want)


def test_sample_depends_only_on_its_seed():
    """With churn, a sample's result is the same alone or in any batch."""
    settings = dict(num_steps=10, S_churn=30.0)
    batch = fastdiff.sample(mixture_net(), fastdiff.randn([3, 7, 11], (3, 2, 3)), seeds=[3, 7, 11], **settings)
    alone = fastdiff.sample(mixture_net(), fastdiff.randn([7], (1, 2, 3)), seeds=[7], **settings)
    assert_equal(batch[1:2], alone)
    other = fastdiff.sample(mixture_net(), fastdiff.randn([3, 7, 11], (3, 2, 3)), seeds=[3, 8, 11], **settings)
    assert not torch.allclose(batch[1], other[1])  # a different seed's churn noise does change the sample


def test_without_seeds_torch_manual_seed_repeats_the_run():
    """Omitted seeds are drawn from torch's default generator, so torch.manual_seed makes runs repeatable."""
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(fastdiff.sample(mixture_net(), LATENTS.float(), num_steps=6, S_churn=10.0))
    assert_equal(runs[0], runs[1])


def test_net_range_clamps_and_round_sigma_snaps():
    """The schedule is clamped to [net.sigma_min, net.sigma_max] and every sigma the model sees is a u_j."""
    model_sigmas = []

    def model(x, c_noise):
        model_sigmas.append(c_noise)
        return torch.zeros_like(x)

    net = fastdiff.iDDPMPrecond(model)
    wide = dict(sigma_min=1e-4, sigma_max=1e5)  # wider than the net's [0.00643, 20291]: clamped to it
    fastdiff.sample(net, LATENTS, num_steps=12, S_churn=20.0, seeds=[0, 1, 2, 3, 4], **wide)
    levels = set(range(1000))
    seen = torch.cat(model_sigmas)
    assert all(float(c).is_integer() and int(c) in levels for c in seen)  # c_noise = M-1-j for a level u_j
    plan = fastdiff.plan_steps(net, num_steps=12, S_churn=20.0, **wide)
    assert float(plan.t[0]) == net.sigma_max and float(plan.t[-2]) == net.sigma_min
    assert all(float(net.round_sigma(t)) == float(t) for t in plan.t_hat)


def test_net_sees_batch_sigmas_and_labels_only_when_given():
    """net gets sigma of shape [B] in the state dtype, and class_labels as a third argument only when given."""
    net = Recorder(mixture_net())
    fastdiff.sample(net, LATENTS.float(), num_steps=3)
    assert all(s.shape == (5,) and s.dtype == torch.float32 for s in net.sigmas)
    assert all(labels == () for labels in net.labels)
    labels = torch.arange(5)
    fastdiff.sample(net, LATENTS.float(), labels, num_steps=3)
    assert net.labels[-1][0] is labels


def test_sigmas_override_the_schedule():
    """sigmas= is used as given (no clamping), with the last step Euler by index."""
    net = Recorder(mixture_net())
    sigmas = [10.0, 3.0, 1.0, 0.1]
    fastdiff.sample(net, LATENTS, sigmas=sigmas, dtype=torch.float64)
    seen = [float(s[0]) for s in net.sigmas]
    assert seen == [10.0, 3.0, 3.0, 1.0, 1.0]  # steps 0, 1 corrected; the step into 0.1 is Euler


def test_heun_takes_diffusers_heun_sigmas_as_they_are():
    """HeunDiscreteScheduler's sigmas (s0, s1, s1, ..., s_(N-1), s_(N-1), 0, float32) are the N-step schedule
    s0, ..., s_(N-1), 0 for solver="heun": the same plan and, bit for bit, the same samples."""
    levels = torch.tensor([14.6, 5.0, 1.5, 0.4, 0.0], dtype=torch.float32)
    repeated = torch.cat([levels[:1], levels[1:-1].repeat_interleave(2), levels[-1:]])  # as diffusers makes them
    assert repeated.tolist()[:4] == [levels[0].item(), 5.0, 5.0, levels[2].item()]
    assert fastdiff.plan_steps(sigmas=repeated, solver="heun") == fastdiff.plan_steps(sigmas=levels, solver="heun")
    assert fastdiff.plan_steps(sigmas=repeated).nfe == 2 * 4 - 1
    for kw in (dict(), dict(S_churn=5.0, seeds=list(range(5)))):
        assert_equal(fastdiff.sample(mixture_net(), LATENTS, sigmas=repeated, **kw),
                     fastdiff.sample(mixture_net(), LATENTS, sigmas=levels, **kw))


def test_start_scale_sets_the_start():
    """start_scale=s starts the state at latents * s instead of latents * sigmas[0]: sigmas[0] itself changes nothing,
    and 2 sigmas[0] is, bit for bit, sampling from 2 latents (a power of two scales exactly); a 0-d tensor (a
    diffusers scheduler's init_noise_sigma) is taken as its value, and the net sees the same levels."""
    t0 = fastdiff.plan_steps(num_steps=6).t[0]
    for solver in ("heun", "dpmpp_2m", "euler_ancestral"):
        kw = dict(num_steps=6, solver=solver, seeds=list(range(5)))
        plain = fastdiff.sample(mixture_net(), LATENTS, **kw)
        assert_equal(fastdiff.sample(mixture_net(), LATENTS, start_scale=t0, **kw), plain)
        assert_equal(fastdiff.sample(mixture_net(), LATENTS, start_scale=torch.tensor(2 * t0, dtype=torch.float64),
                                     **kw), fastdiff.sample(mixture_net(), LATENTS * 2, **kw))
    recorded = Recorder(mixture_net())
    fastdiff.sample(recorded, LATENTS, sigmas=[10.0, 3.0, 0.0], start_scale=7.0, dtype=torch.float64)
    assert [float(s[0]) for s in recorded.sigmas] == [10.0, 3.0, 3.0]


def test_seeds_from_torch_generators():
    """seeds=torch.Generator draws one seed per sample from it (as draw_seeds does from torch's default generator),
    on every call; a list of generators draws one seed from each, so a sample's noise depends only on its own."""
    kw = dict(num_steps=5, S_churn=10.0)
    drawn = fastdiff.rng.draw_seeds(5, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    first = fastdiff.sample(mixture_net(), LATENTS, seeds=generator, **kw)
    assert_equal(first, fastdiff.sample(mixture_net(), LATENTS, seeds=drawn, **kw))
    assert not torch.equal(fastdiff.sample(mixture_net(), LATENTS, seeds=generator, **kw), first)  # it advanced
    before = torch.get_rng_state()
    per_sample = fastdiff.sample(mixture_net(), LATENTS, seeds=[torch.Generator().manual_seed(s) for s in range(5)],
                                 **kw)
    assert torch.equal(torch.get_rng_state(), before)  # torch's default generator untouched
    one_each = [int(fastdiff.rng.draw_seeds(1, generator=torch.Generator().manual_seed(s))) for s in range(5)]
    assert_equal(per_sample, fastdiff.sample(mixture_net(), LATENTS, seeds=one_each, **kw))
    alone = fastdiff.sample(mixture_net(), LATENTS[2:3], seeds=[torch.Generator().manual_seed(2)], **kw)
    assert_equal(per_sample[2:3], alone)
    sampler = fastdiff.GraphedSampler(mixture_net(), LATENTS.float(), graph="emulated", **kw)
    assert_equal(sampler(LATENTS.float(), seeds=torch.Generator().manual_seed(3)),
                 fastdiff.sample(mixture_net(), LATENTS.float(), seeds=drawn, **kw))
    assert_equal(fastdiff.randn(torch.Generator().manual_seed(3), (5, 4)), fastdiff.randn(drawn, (5, 4)))


@pytest.mark.parametrize("seeds, error, match", [
    ([torch.Generator(), 3, 4, 5, 6], TypeError, "seeds: expected ints or torch.Generators .*not a mix; got 3 of type int"),
    ([torch.Generator()] * 2, ValueError, r"seeds: expected 5 torch.Generators \(one per sample in the batch\), got 2"),
])
def test_bad_generator_seeds(seeds, error, match):
    with pytest.raises(error, match=match):
        fastdiff.sample(mixture_net(), LATENTS, num_steps=3, S_churn=5.0, seeds=seeds)


class KeywordNet:
    """A denoiser conditioned by keyword arguments only: a per-sample shift and a scale, nested as diffusers'
    added_cond_kwargs are; it records the keyword arguments of each call."""

    def __init__(self):
        self.net, self.calls = mixture_net(), []

    def __call__(self, x, sigma, *labels, shift, extra=None, scale=1.0):
        self.calls.append(dict(shift=shift, extra=extra, scale=scale))
        D = self.net(x, sigma, *labels) * scale + 0.1 * shift.to(x.dtype)
        return D if extra is None else D + 0.01 * extra["bias"].to(x.dtype)


def test_extra_args_go_to_every_net_call():
    """extra_args are passed to every net call as keyword arguments, the same objects each time, with labels too:
    the result equals a closure over them bit for bit, for every solver."""
    shift, bias = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(5, 2, 3, dtype=torch.float64)
    args = dict(shift=shift, extra={"bias": bias}, scale=0.9)
    labels = torch.arange(5)
    for solver in ("heun", "euler", "ddim", "euler_ancestral", "dpmpp_2m"):
        net = KeywordNet()
        kw = dict(num_steps=4, solver=solver, seeds=list(range(5)))
        got = fastdiff.sample(net, LATENTS, labels, extra_args=args, **kw)
        closure = lambda x, sigma, y, net=KeywordNet(): net(x, sigma, y, **args)  # noqa: E731
        assert_equal(got, fastdiff.sample(closure, LATENTS, labels, **kw))
        assert net.calls and all(c["shift"] is shift and c["extra"]["bias"] is bias and c["scale"] == 0.9
                                 for c in net.calls)


def test_guidance_by_uncond_args():
    """guidance=w with uncond_args: one net call of 2B per evaluation, the batched tensors as [cond; uncond] and the
    others once; the result is lerp(D_uncond, D_cond, w) of the two calls, step by step."""
    cond, uncond = torch.randn(5, 2, 3, dtype=torch.float64), torch.zeros(5, 2, 3, dtype=torch.float64)
    net = KeywordNet()
    got = fastdiff.sample(net, LATENTS, num_steps=4, guidance=3.0, extra_args=dict(shift=cond, scale=0.9),
                          uncond_args=dict(shift=uncond, scale=0.9))
    assert len(net.calls) == 7 and all(torch.equal(c["shift"], torch.cat([cond, uncond])) and c["scale"] == 0.9
                                       for c in net.calls)
    plain = KeywordNet()

    def two_calls(x, sigma):
        D_u = plain(x, sigma, shift=uncond, scale=0.9)
        return torch.lerp(D_u, plain(x, sigma, shift=cond, scale=0.9), 3.0)

    assert_close(got, fastdiff.sample(two_calls, LATENTS, num_steps=4), rtol=1e-12, atol=1e-12)


B_ = torch.zeros(5, 2, 3)  # a batched keyword argument


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(extra_args=[("shift", B_)]), TypeError, "extra_args: expected a dict of keyword arguments for net.*got list"),
    (dict(extra_args={1: B_}), TypeError, "extra_args: expected keyword-argument names .* got 1"),
    (dict(extra_args=dict(shift=B_), uncond_args=dict(shift=B_)), ValueError,
     "uncond_args: the unconditional arguments are for classifier-free guidance; pass guidance=w"),
    (dict(guidance=2.0, extra_args=dict(shift=B_), uncond_args="none"), TypeError, "uncond_args: expected a dict"),
    (dict(guidance=2.0, extra_args=dict(shift=B_)), ValueError, "guidance: .*needs class_labels .* or uncond_args"),
    (dict(guidance=2.0, extra_args=dict(shift=B_), uncond_args=dict(shift=B_, scale=2.0)), ValueError,
     r"uncond_args: expected the same keys and nesting as extra_args .*got keys \['scale', 'shift'\] for "
     r"extra_args' \['shift'\]"),
    (dict(guidance=2.0, extra_args=dict(shift=B_), uncond_args=dict(shift=B_[:, :1])), ValueError,
     r"uncond_args\['shift'\]: expected a torch.float32 tensor of shape \(5, 2, 3\) .*got a torch.float32 tensor "
     r"of shape \(5, 1, 3\)"),
    (dict(guidance=2.0, extra_args=dict(shift=B_, scale=1.0), uncond_args=dict(shift=B_, scale=2.0)), ValueError,
     r"uncond_args\['scale'\]: extra_args\['scale'\] has no batch dimension of 5, so it is passed once .*got 1.0 "
     r"and 2.0"),
])
def test_bad_extra_args(kwargs, error, match):
    with pytest.raises(error, match=match):
        fastdiff.sample(KeywordNet(), LATENTS, num_steps=3, **kwargs)


def test_result_has_the_latents_shape_and_dtype():
    """Half-precision latents give a half-precision result; the state stays float32."""
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = fastdiff.sample(mixture_net(), LATENTS.to(dtype), num_steps=4)
        assert x.dtype == dtype and x.shape == LATENTS.shape
    x16 = fastdiff.sample(mixture_net(), LATENTS.half(), num_steps=4)
    assert_close(x16, fastdiff.sample(mixture_net(), LATENTS.half().float(), num_steps=4).half(), dtype=torch.float16)


def test_callback_sees_every_step():
    """callback gets k-diffusion's keys once per step, with host floats for the noise levels."""
    seen = []
    fastdiff.sample(mixture_net(), LATENTS, num_steps=5, callback=seen.append)
    assert [d["i"] for d in seen] == list(range(5))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    assert seen[0]["sigma"] == pytest.approx(80.0) and isinstance(seen[0]["sigma_hat"], float)


def nan_below(threshold):
    """A net that returns NaN once sigma drops below `threshold`."""
    net = mixture_net()
    return lambda x, sigma: net(x, sigma) + torch.where(sigma.reshape(-1, 1, 1) < threshold, float("nan"), 0.0)


def test_nonfinite_values_are_reported_with_their_step():
    """NaN from the net is reported with the first step it appeared at; "raise" raises, "ignore" is silent."""
    plan = fastdiff.plan_steps(num_steps=10)
    # The net is first evaluated below sigma 1 at t_hat[i] or, by the Heun correction, at t[i+1].
    first_bad = next(i for i in range(10) if float(plan.t_hat[i]) < 1.0 or (plan.correct[i] and float(plan.t[i + 1]) < 1.0))
    with pytest.warns(RuntimeWarning, match=f"first appeared at step {first_bad} of 10"):
        fastdiff.sample(nan_below(1.0), LATENTS, num_steps=10)
    with pytest.raises(FloatingPointError, match=f"step {first_bad} of 10"):
        fastdiff.sample(nan_below(1.0), LATENTS, num_steps=10, nonfinite="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = fastdiff.sample(nan_below(1.0), LATENTS, num_steps=10, nonfinite="ignore")
        fastdiff.sample(mixture_net(), LATENTS, num_steps=10)  # finite runs never warn
    assert bool(x.isnan().all())


@pytest.mark.parametrize("solver", ["heun", "euler"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_sampling_loop_never_syncs(solver, backend):
    """run_plan reads no device value on the host (none with nonfinite="ignore", one report after the loop
    otherwise) and copies host data to the device only while building its tables, never per step."""
    from fastdiff.sampling.loop import run_plan

    net = mixture_net()
    seeds = torch.tensor([1, 2, 3, 4, 5])
    copies = []
    for num_steps in (6, 12):
        plan = fastdiff.plan_steps(net, num_steps=num_steps, S_churn=20.0, S_min=0.1, S_max=30.0, solver=solver)  # host work
        with SyncCounter() as counter:
            run_plan(net, LATENTS.float(), plan, None, None, seeds, torch.float32, None, "ignore", backend)
        assert counter.syncs == []
        copies.append(len(counter.host_to_device))
    assert copies[0] == copies[1] == 1  # the t, t_hat and noise_std tables, in one host-to-device copy
    with SyncCounter() as counter:
        run_plan(net, LATENTS.float(), plan, None, None, seeds, torch.float32, None, "warn", backend)
    assert counter.syncs == ["aten::nonzero"]
    with SyncCounter() as counter:  # the counter does see a sync when there is one
        run_plan(net, LATENTS.float(), plan, None, None, seeds, torch.float32, lambda d: float(d["x"].sum()), "ignore")
    assert len(counter.syncs) == 12


def wrong_shape_net(x, sigma):
    return x[:, :1]


def int_net(x, sigma):
    return x.long()


@pytest.mark.parametrize("args,kwargs,error,match", [
    ((mixture_net(), [[1.0]]), {}, TypeError, "latents: expected a floating-point tensor"),
    ((mixture_net(), torch.zeros(2, 3, dtype=torch.int64)), {}, TypeError, "latents: .*got dtype torch.int64"),
    ((mixture_net(), torch.zeros(())), {}, ValueError, "latents: expected shape"),
    ((mixture_net(), LATENTS), dict(num_steps=0), ValueError, "num_steps: must be >= 1, got 0"),
    ((mixture_net(), LATENTS), dict(num_steps=2.5), TypeError, "num_steps: expected an int"),
    ((mixture_net(), LATENTS), dict(sigma_min=1.0, sigma_max=0.5), ValueError, "sigma_min: must be below sigma_max"),
    ((mixture_net(), LATENTS), dict(sigma_min=-0.1), ValueError, "sigma_min: must be > 0"),
    ((mixture_net(), LATENTS), dict(S_churn=-1.0), ValueError, "S_churn: must be >= 0.0, got -1.0"),
    ((mixture_net(), LATENTS), dict(S_noise=-1.0), ValueError, "S_noise: must be >= 0.0"),
    ((mixture_net(), LATENTS), dict(S_min=-1.0), ValueError, "S_min: must be >= 0.0"),
    ((mixture_net(), LATENTS), dict(S_churn=math.nan), ValueError, "S_churn: expected a finite number, got nan"),
    ((mixture_net(), LATENTS), dict(seeds=[1, 2]), ValueError, "seeds: expected 5 seeds"),
    ((mixture_net(), LATENTS), dict(seeds=[1] * 5, randn_like=torch.randn_like), ValueError, "seeds: pass either randn_like or seeds"),
    ((mixture_net(), LATENTS), dict(solver="rk4"), ValueError, "solver: expected one of 'euler', 'heun', 'euler_ancestral', 'dpmpp_2m', 'ddim', 'dpm_2', .*'dpm_adaptive', got 'rk4'"),
    ((mixture_net(), LATENTS), dict(dtype=torch.float16), ValueError, "dtype: expected torch.float32 or torch.float64"),
    ((mixture_net(), LATENTS), dict(backend="gpu"), ValueError, "backend: expected one of 'auto', 'reference'"),
    ((mixture_net(), LATENTS), dict(backend="triton"), fastdiff.BackendUnavailableError, "backend='triton' cannot run: "),
    ((mixture_net(), LATENTS), dict(sigmas=[1.0, 2.0, 0.0]), ValueError, "sigmas: expected a strictly decreasing schedule"),
    ((mixture_net(), LATENTS), dict(sigmas=[1.0, 0.0, 0.0]), ValueError, "sigmas: expected finite noise levels > 0"),
    ((mixture_net(), LATENTS), dict(sigmas=[1.0]), ValueError, "sigmas: expected a 1-D schedule of at least 2"),
    ((mixture_net(), LATENTS), dict(nonfinite="crash"), ValueError, "nonfinite: expected one of"),
    ((mixture_net(), LATENTS), dict(callback=3), TypeError, "callback: expected a callable"),
    ((mixture_net(), LATENTS, torch.zeros(4)), {}, ValueError, r"class_labels: expected a tensor with one row per sample \(5\)"),
    ((wrong_shape_net, LATENTS), {}, ValueError, r"net: expected net\(x, sigma\) to return the shape \(5, 2, 3\), got \(5, 1, 3\)"),
    ((int_net, LATENTS), {}, TypeError, "net: expected net.* to return a floating-point tensor, got torch.int64"),
])
def test_bad_input_names_the_argument(args, kwargs, error, match):
    """Each bad input raises an error naming the argument, the value and what is accepted."""
    with pytest.raises(error, match=match):
        fastdiff.sample(*args, **kwargs)


def test_settings_travel_as_one_checked_object(monkeypatch):
    """sample() checks its settings once, into one frozen SampleOptions (numbers normalised), and the plan and the
    loop read that object; each setting it refuses is named, as sample() names it."""
    import dataclasses

    import numpy as np

    import fastdiff.sampling.loop as loop_module
    from fastdiff.sampling import SampleOptions

    seen, real = [], loop_module.make_plan
    monkeypatch.setattr(loop_module, "make_plan", lambda net, options: seen.append(options) or real(net, options))
    fastdiff.sample(mixture_net(), LATENTS, num_steps=np.int64(5), S_churn=np.float32(2.0), solver="euler",
                    seeds=[1, 2, 3, 4, 5], nonfinite="ignore", backend="reference")
    (options,) = seen
    assert isinstance(options, SampleOptions)
    assert (options.num_steps, options.S_churn, options.solver, options.nonfinite, options.backend) == \
        (5, 2.0, "euler", "ignore", "reference")
    assert type(options.num_steps) is int and type(options.S_churn) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.num_steps = 6
    assert SampleOptions(solver="euler_ancestral").eta == 1.0  # its default, filled in
    for kwargs, error, match in [(dict(S_churn=-1.0), ValueError, "S_churn: must be >= 0.0, got -1.0"),
                                 (dict(reuse_buffers=1), TypeError, "reuse_buffers: expected True or False, got 1"),
                                 (dict(backend="gpu"), ValueError, "backend: expected one of 'auto'"),
                                 (dict(eta=0.5), ValueError, "eta: only the ancestral and SDE solvers \\('euler_ancestral'")]:
        with pytest.raises(error, match=match):
            SampleOptions(**kwargs)
        with pytest.raises(error, match=match):
            fastdiff.sample(mixture_net(), LATENTS, **kwargs)
    with pytest.raises(TypeError, match="seedz: not a sampler setting .*the settings are num_steps, .*, seeds"):
        SampleOptions.split({"num_steps": 3, "seedz": [1]}, others=("seeds",))
    assert SampleOptions.split({"num_steps": 3, "seeds": [1]}, others=("seeds",))[1] == {"seeds": [1]}


def test_net_range_that_empties_the_schedule():
    """A net whose range excludes the requested schedule gets an error naming the clamped range."""
    net = fastdiff.VEPrecond(lambda x, c: x, sigma_min=0.02, sigma_max=100.0)
    with pytest.raises(ValueError, match=r"net's range \[0.02, 100.0\]"):
        fastdiff.sample(net, LATENTS, sigma_min=200.0, sigma_max=300.0)


def test_odd_shaped_and_strided_latents():
    """3x5x37x41 latents, and a strided view of them, sample like their contiguous copy (bit for bit)."""
    gm = fastdiff.GaussianMixture(torch.zeros(2, 5 * 37 * 41), [0.5, 0.9])
    net = lambda x, sigma: gm(x, sigma).to(x.dtype)  # noqa: E731
    latents = fastdiff.randn([1, 2, 3], (3, 5, 37, 82))[..., ::2]
    assert not latents.is_contiguous()
    settings = dict(num_steps=6, S_churn=10.0, seeds=[4, 5, 6])
    got = fastdiff.sample(net, latents, **settings)
    assert got.shape == (3, 5, 37, 41)
    assert_equal(got, fastdiff.sample(net, latents.contiguous(), **settings))


def test_user_sigmas_keep_float64_precision():
    """A list of sigmas is taken in float64: the net sees 0.1, not float32's 0.10000000149."""
    net = Recorder(mixture_net())
    fastdiff.sample(net, LATENTS, sigmas=[10.0, 0.1, 0.01, 0.0], dtype=torch.float64)
    assert float(net.sigmas[1][0]) == 0.1
    assert fastdiff.plan_steps(sigmas=[10.0, 0.1, 0.0]).t == (10.0, 0.1, 0.0)


def test_user_sigmas_are_rounded_by_the_net():
    """sigmas= go through net.round_sigma like the Karras schedule, so with or without churn the net sees u_j levels."""
    net = fastdiff.iDDPMPrecond(lambda x, c: torch.zeros_like(x))
    plan = fastdiff.plan_steps(net, sigmas=[10.0, 1.0, 0.1, 0.0])
    assert all(float(net.round_sigma(t)) == t for t in plan.t[:-1])
    assert plan.noise_std == (0.0, 0.0, 0.0)  # no churn: t_hat is t, nothing to add
    with pytest.raises(ValueError, match=r"net.round_sigma\(sigmas\): expected finite noise levels > 0"):
        fastdiff.plan_steps(net, sigmas=[1.0, 0.002, 0.0])  # 0.002 rounds to the level u_M = 0


def test_deterministic_run_leaves_torch_generator_alone():
    """Without churn no seeds are drawn, so torch's default generator is not advanced."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    fastdiff.sample(mixture_net(), LATENTS, num_steps=4)
    assert torch.equal(torch.get_rng_state(), before)
    fastdiff.sample(mixture_net(), LATENTS, num_steps=4, S_churn=5.0)
    assert not torch.equal(torch.get_rng_state(), before)


def test_sigma_max_inf_is_clamped_to_the_net():
    """As in EDM, sigma_max=inf means the net's own sigma_max; without a bounded net it is an error."""
    net = fastdiff.VEPrecond(lambda x, c: x)
    assert fastdiff.plan_steps(net, sigma_max=math.inf).t[0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="sigma_max: expected a finite number, or a net with a finite sigma_max"):
        fastdiff.plan_steps(mixture_net(), sigma_max=math.inf)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(sigmas=[1.0, 0.0], num_steps=5), ValueError, "sigmas: replaces the Karras schedule, so num_steps=5 would be ignored"),
    (dict(sigmas=[1.0, 0.0], rho=3.0, sigma_min=0.1), ValueError, "so sigma_min=0.1, rho=3.0 would be ignored"),
    (dict(sigmas=["a", "b"]), TypeError, "sigmas: expected a 1-D sequence of noise levels"),
    (dict(S_min=5.0, S_max=1.0), ValueError, "S_min: must not exceed S_max"),
    (dict(randn_like=lambda x: torch.ones(())), ValueError, r"randn_like: expected randn_like\(x\) to return the shape"),
    (dict(seeds=torch.tensor([1, 2, 3, 4, 5], dtype=torch.uint64)), TypeError, "seeds: expected a tensor of integers"),
    (dict(sigmas=[10.0, 5.0, 5.0, 2.0, 2.0, 0.0], solver="euler"), ValueError,
     r"sigmas: expected a strictly decreasing schedule, got \[10.0, 5.0, 5.0, 2.0, 2.0, 0.0\]; a level is repeated\. "
     r"diffusers' HeunDiscreteScheduler.sigmas .* accepted as they are with solver='heun'"),
    (dict(sigmas=[10.0, 5.0, 5.0, 5.0, 2.0, 0.0], solver="heun"), ValueError, "a level is repeated"),  # not in pairs
    (dict(sigmas=[10.0, 10.0, 5.0, 5.0, 0.0], solver="heun"), ValueError, "a level is repeated"),  # first one twice
    (dict(sigmas=[10.0, 5.0, 5.0, 6.0, 6.0, 0.0], solver="heun"), ValueError, "strictly decreasing schedule"),
    (dict(start_scale=0.0), ValueError, "start_scale: must be > 0, got 0.0"),
    (dict(start_scale=-2.0), ValueError, "start_scale: must be > 0, got -2.0"),
    (dict(start_scale=math.inf), ValueError, "start_scale: expected a finite number, got inf"),
    (dict(start_scale="80"), TypeError, "start_scale: expected a real number, got '80'"),
    (dict(start_scale=torch.ones(2)), TypeError, "start_scale: expected a real number"),
])
def test_more_bad_input(kwargs, error, match):
    """Schedule conflicts, churn windows, noise and seed tensors are checked with the argument named."""
    with pytest.raises(error, match=match):
        fastdiff.sample(mixture_net(), LATENTS, **kwargs)


def test_net_must_be_callable_and_numpy_numbers_are_fine():
    """net=None names net; numpy integers and floats are accepted where ints and reals are."""
    import numpy as np

    with pytest.raises(TypeError, match="net: expected a callable denoiser"):
        fastdiff.sample(None, LATENTS)
    x = fastdiff.sample(mixture_net(), LATENTS, num_steps=np.int64(4), S_churn=np.float32(2.0), seeds=np.arange(5))
    assert x.shape == LATENTS.shape


class OpNames(TorchDispatchMode):
    """Records the names of the fastdiff ops that run."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name.startswith(("fastdiff::", "fastdiff_triton::")):
            self.names.append(func._schema.name.split("::")[1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_fused_loop_runs_on_fixed_buffers(backend):
    """With reuse_buffers, a fused backend writes each step into the state and Euler buffers (only *_out ops run) and
    gives the same bits as the functional loop, which a callback selects (its tensors must not change afterwards)."""
    settings = dict(num_steps=8, S_churn=20.0, S_min=0.1, S_max=30.0, seeds=[1, 2, 3, 4, 5], backend=backend)
    with OpNames() as recorder:
        got = fastdiff.sample(mixture_net(), LATENTS.float(), reuse_buffers=True, **settings)
    assert recorder.names and all(name.endswith("_out") for name in recorder.names), recorder.names
    seen = []
    functional = fastdiff.sample(mixture_net(), LATENTS.float(), callback=seen.append, **settings)
    assert_equal(got, functional)
    assert len({d["x"].data_ptr() for d in seen}) == len(seen)  # the callback's tensors are distinct, never reused


def test_identity_net_on_fixed_buffers():
    """A net that returns its input (so denoised is the state buffer itself) still samples correctly in place."""
    identity = lambda x, sigma: x  # noqa: E731  D(x) = x: every step leaves x unchanged
    latents = fastdiff.randn([1, 2, 3], (3, 4, 8), backend="reference")
    got = fastdiff.sample(identity, latents, num_steps=5, backend="cpu", reuse_buffers=True)
    assert_close(got, latents * 80.0, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
def test_tensors_a_net_keeps_are_never_overwritten_by_default(backend):
    """A net that keeps its inputs finds them unchanged after sampling: buffers are reused only when asked for."""
    kept, copies = [], []

    def net(x, sigma):
        kept.append(x)
        copies.append(x.clone())
        return x / (1 + sigma.reshape(-1, 1) ** 2)

    result = fastdiff.sample(net, torch.randn(2, 6), num_steps=4, S_churn=5.0, seeds=[1, 2], backend=backend)
    assert len({t.data_ptr() for t in kept}) == len(kept) == 7
    for t, copy in zip(kept, copies):
        assert_equal(t, copy)
    assert all(result.data_ptr() != t.data_ptr() for t in kept)


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
def test_channels_last_and_strided_latents_and_seeds(backend):
    """Latents in any layout and seeds as a strided tensor sample like their contiguous copies, on every backend."""
    latents = fastdiff.randn([1, 2], (2, 3, 4, 5), backend="reference")
    net = lambda x, s: x / (1 + s.reshape(-1, 1, 1, 1) ** 2)  # noqa: E731
    settings = dict(num_steps=4, S_churn=10.0, backend=backend)
    want = fastdiff.sample(net, latents, seeds=torch.tensor([7, 9]), **settings)
    for layout in (latents.to(memory_format=torch.channels_last), latents.transpose(2, 3).contiguous().transpose(2, 3)):
        assert not layout.is_contiguous()
        assert_equal(fastdiff.sample(net, layout, seeds=torch.tensor([7, 9]), **settings), want)
    assert_equal(fastdiff.sample(net, latents, seeds=torch.tensor([7, 0, 9])[::2], **settings), want)


def test_eager_calls_share_their_plan_tables(monkeypatch):
    """Eager sample() calls with the same plan, batch and state dtype read the same device tables (made once on the
    CPU, and never written: set_plan gives a loop tables of its own); GraphedSampler and run_plan own theirs."""
    import fastdiff.sampling.front as front
    from fastdiff.sampling.loop import SamplingLoop, StepTables

    built, real = [], front.build_loop
    monkeypatch.setattr(front, "build_loop", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    x, kw = LATENTS.float(), dict(num_steps=5, seeds=[1, 2, 3, 4, 5], S_churn=10.0)
    first, second = fastdiff.sample(mixture_net(), x, **kw), fastdiff.sample(mixture_net(), x, **kw)
    fastdiff.sample(mixture_net(), x, **dict(kw, num_steps=6))
    a, b, c = (loop for loop, _ in built)
    assert a.t is b.t and a.sigma_hat_batch is b.sigma_hat_batch and a.step_values(2) is b.step_values(2)
    assert c.t is not a.t and a.state is not b.state  # another plan: other tables; the state is each loop's own
    assert_equal(first, second)
    t = a.t.clone()
    a.set_plan(fastdiff.plan_steps(num_steps=5, S_churn=10.0, sigma_max=60.0))
    assert a.t is not b.t and torch.equal(b.t, t) and float(a.t[0]) == 60.0
    own = SamplingLoop(mixture_net(), a.plan, x, torch.float32)
    assert isinstance(own._tables, StepTables) and not own._tables.shared


def test_plan_values_are_the_float64_tensor_formulas():
    """The plan is computed on Python floats, bit for bit what EDM's float64 tensor formulas give: t_hat = t + gamma t,
    noise_std = sqrt(t_hat^2 - t^2) S_noise (torch's sqrt, which may differ from math.sqrt in the last bit)."""
    for num_steps, S_churn, S_max, S_noise in [(5, 1.0, 50.0, 1.0), (18, 40.0, 50.0, 1.003), (64, 80.0, math.inf, 1.007),
                                               (18, 0.0, math.inf, 1.0)]:
        plan = fastdiff.plan_steps(num_steps=num_steps, S_churn=S_churn, S_min=0.05, S_max=S_max, S_noise=S_noise)
        t_cur = torch.tensor(plan.t[:-1], dtype=torch.float64)
        t_hat = t_cur + torch.tensor(plan.gamma, dtype=torch.float64) * t_cur
        assert plan.t_hat == tuple(t_hat.tolist())
        assert plan.noise_std == tuple(((t_hat**2 - t_cur**2).sqrt() * S_noise).tolist())


def test_a_reused_nonfinite_record_reports_each_call_afresh():
    """sample() hands its loop's non-finite record back to the shared tables for the next call of the same plan: every
    call writes all of it, so a clean call after a failing one is clean, and a failure is placed at its own step."""
    import warnings

    def nan_from(step):
        calls = []

        def net(x, sigma):
            calls.append(1)
            out = mixture_net()(x, sigma)
            return out * float("nan") if len(calls) > step else out

        return net

    kw = dict(num_steps=6, solver="euler", seeds=[1, 2, 3, 4, 5])
    with pytest.warns(RuntimeWarning, match="first appeared at step 4 of 6"):
        fastdiff.sample(nan_from(4), LATENTS.float(), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastdiff.sample(mixture_net(), LATENTS.float(), **kw)
    with pytest.warns(RuntimeWarning, match="first appeared at step 2 of 6"):
        fastdiff.sample(nan_from(2), LATENTS.float(), **kw)


@pytest.mark.parametrize("solver", ["heun", "euler_ancestral", "dpmpp_2m"])
def test_long_plans_make_their_step_views_as_they_go(solver, monkeypatch):
    """A plan longer than VIEWS_UP_FRONT steps makes each step's views when it takes the step (they cost host memory):
    the same bits as views made up front, and still capture-safe."""
    import fastdiff.sampling.loop as loop_module

    kw = dict(num_steps=6, solver=solver, seeds=[1, 2, 3, 4, 5], backend="cpu", reuse_buffers=True,
              **(dict(S_churn=20.0, S_min=0.1, S_max=30.0) if solver == "heun" else {}))
    up_front = fastdiff.sample(mixture_net(), LATENTS.float(), **kw)
    monkeypatch.setattr(loop_module, "VIEWS_UP_FRONT", 2)
    loop_module._shared.clear()
    assert_equal(fastdiff.sample(mixture_net(), LATENTS.float(), **kw), up_front)
    (tables,) = loop_module._shared.values()
    assert isinstance(tables.step_values, loop_module._StepViews)
    assert fastdiff.check_capture(mixture_net(), LATENTS.float(), **kw).ok
    loop_module._shared.clear()
