"""fastdiff's generator (fastdiff/rng.py) against the Random123 vectors and a plain-Python Philox."""
import functools
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import fastdiff
from fastdiff import rng
from fastdiff.rng import SAMPLER_OFFSET, _mulhilo32, box_muller, philox4x32, philox_words, seeds_tensor
from fastdiff.testing import assert_close, assert_equal

# This file specifies the generator itself: the reference path, called by name (tests/test_cpu_ops.py and
# tests/test_triton_ops.py hold the compiled backends to it).
reference_randn = functools.partial(fastdiff.randn, backend="reference")

# Random123 tests/kat_vectors, "philox4x32 10" lines: counter words, key words, output words.
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0), (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def plain_philox(counter, key, rounds=10):
    """Philox4x32 on Python ints, written from Salmon et al. (2011)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) % 2**32, (k1 + 0xBB67AE85) % 2**32
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 % 2**32, (p0 >> 32) ^ c3 ^ k1, p0 % 2**32
    return c0, c1, c2, c3


def plain_normals(seed, numel, offset):
    """A sample's normals from the stream definition, with float32 arithmetic done by numpy."""
    out = []
    for block in range((numel + 3) // 4):
        w = plain_philox((block % 2**32, block >> 32, offset % 2**32, offset >> 32), (seed % 2**32, seed >> 32))
        for a, b in ((w[0], w[1]), (w[2], w[3])):
            u1 = np.float32((a >> 8) + 1) * np.float32(2.0**-24)
            u2 = np.float32(b >> 8) * np.float32(2.0**-24)
            r = np.sqrt(np.float32(-2.0) * np.log(u1))
            theta = np.float32(2 * math.pi) * u2
            out += [r * np.cos(theta), r * np.sin(theta)]
    return torch.tensor(np.array(out[:numel], dtype=np.float32))


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    """Philox4x32-10 reproduces the Random123 known-answer vectors."""
    words = philox4x32([torch.tensor(c) for c in counter], [torch.tensor(k) for k in key])
    assert tuple(int(w) for w in words) == expected
    assert plain_philox(counter, key) == expected


def test_philox_matches_plain_python_on_random_inputs():
    """Vectorized Philox equals the plain-int version on 2000 random counters and keys, including extremes."""
    rng = random.Random(0)
    edge = [0, 1, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]
    draw = lambda: rng.choice(edge) if rng.random() < 0.2 else rng.getrandbits(32)
    cases = [((draw(), draw(), draw(), draw()), (draw(), draw())) for _ in range(2000)]
    counters = [torch.tensor([c[i] for c, _ in cases]) for i in range(4)]
    keys = [torch.tensor([k[i] for _, k in cases]) for i in range(2)]
    words = torch.stack(philox4x32(counters, keys), dim=1).tolist()
    assert words == [list(plain_philox(c, k)) for c, k in cases]


def test_mulhilo_is_exact_at_the_extremes():
    """The 16-bit-limb multiply returns the exact 64-bit product's halves, with no int64 overflow."""
    values = torch.tensor([0, 1, 2**16 - 1, 2**16, 2**31, 2**32 - 1, 0x9E3779B9])
    for a in (0xD2511F53, 0xCD9E8D57, 2**32 - 1):
        hi, lo = _mulhilo32(a, values)
        assert [(h << 32) | l for h, l in zip(hi.tolist(), lo.tolist())] == [a * v for v in values.tolist()]


@pytest.mark.parametrize("shape,offset", [((3, 5, 7, 9), 0), ((1, 6), 17), ((2, 1), SAMPLER_OFFSET + 3), ((2, 3), 2**64 - 1)])
def test_randn_follows_the_stream_definition(shape, offset):
    """Each sample's values are the plain definition's (block e//4, lane e%4, float32 Box-Muller) for its seed."""
    seeds = [0, 2**63 - 1, 12345][: shape[0]]
    z = reference_randn(seeds, shape, offset=offset)
    assert z.shape == shape and z.dtype == torch.float32
    numel = math.prod(shape[1:])
    for b, seed in enumerate(seeds):
        # Only cos/sin/log may differ between numpy's and torch's float32 libm: allow a few ulp.
        assert_close(z[b].reshape(-1), plain_normals(seed, numel, offset), rtol=1e-6, atol=2e-6, name=f"sample {b}")


def test_words_layout_and_prefix_property():
    """philox_words gives lane e%4 of block e//4, and a shorter sample is a prefix of a longer one."""
    words = philox_words([7, 8], 10, offset=5)
    for b, seed in enumerate([7, 8]):
        for e in range(10):
            assert int(words[b, e]) == plain_philox((e // 4, 0, 5, 0), (seed, 0))[e % 4]
    assert_equal(reference_randn([3], (1, 5)), reference_randn([3], (1, 8))[:, :5])


def test_sample_depends_only_on_its_seed():
    """A sample's noise is the same alone, in any batch position, and for any batch size; seeds and offsets differ."""
    batch = reference_randn([11, 22, 33], (3, 4, 5))
    assert_equal(batch[1], reference_randn([22], (1, 4, 5))[0])
    assert_equal(batch[2], reference_randn(torch.tensor([33, 11]), (2, 4, 5))[0])
    assert not torch.equal(batch[0], batch[1])
    assert not torch.equal(reference_randn([11], (1, 20), offset=1), reference_randn([11], (1, 20), offset=2))


def test_dtype_is_a_cast_of_the_float32_values():
    """Other dtypes are the float32 values cast once."""
    z32 = reference_randn([5, 6], (2, 33))
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        assert_equal(reference_randn([5, 6], (2, 33), dtype=dtype), z32.to(dtype))


def test_normal_statistics_and_bound():
    """One million values have mean 0, variance 1, no skew, kurtosis 3, and |z| <= sqrt(48 ln 2)."""
    z = reference_randn(list(range(16)), (16, 65536)).double().reshape(-1)
    n = z.numel()
    assert abs(float(z.mean())) < 5 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((z**3).mean())) < 5 * math.sqrt(15 / n)
    assert abs(float((z**4).mean()) - 3) < 5 * math.sqrt(96 / n)
    assert float(z.abs().max()) <= math.sqrt(48 * math.log(2)) + 1e-6
    # Tail mass beyond 3 sigma: 0.0026998 for a true normal.
    assert abs(float((z.abs() > 3).double().mean()) - 0.0026998) < 5 * math.sqrt(0.0027 / n)


def test_box_muller_extremes():
    """The smallest uniform gives the largest radius and a zero word gives u1 = 2^-24, never log(0)."""
    a, b = box_muller(torch.tensor([0, 2**32 - 1]), torch.tensor([0, 0]))
    assert float(a[0]) == pytest.approx(math.sqrt(48 * math.log(2)), rel=1e-6)
    assert float(a[1]) == 0.0 and float(b[0]) == 0.0


@pytest.mark.parametrize("seeds,batch,error,match", [
    ([1, 2], 3, ValueError, "expected 3 seeds"),
    ([-1], 1, ValueError, r"\[0, 2\^63\)"),
    ([2**63], 1, ValueError, r"\[0, 2\^63\)"),
    ([1.5], 1, TypeError, "expected ints"),
    ([True], 1, TypeError, "expected ints"),
    (7, 1, TypeError, "one int per sample"),
    (torch.tensor([1.0]), 1, TypeError, "dtype torch.float32"),
    (torch.tensor([[1]]), 1, ValueError, "1-D"),
    (torch.tensor([3], dtype=torch.uint64), 1, TypeError, "dtype torch.uint64"),
])
def test_bad_seeds_name_the_argument(seeds, batch, error, match):
    """Invalid seeds raise an error that names `seeds`, what was given and what is accepted."""
    with pytest.raises(error, match=match) as info:
        seeds_tensor(seeds, batch)
    assert str(info.value).startswith("seeds:")


def test_seed_tensors_are_64_bit_keys():
    """An int64 seed tensor is used as its bit pattern: -1 is the key 2^64 - 1 (and is never read back to the host)."""
    words = philox_words(torch.tensor([-1, 2**62 + 5]), 6, offset=2)
    for b, key in enumerate([2**64 - 1, 2**62 + 5]):
        for e in range(6):
            assert int(words[b, e]) == plain_philox((e // 4, 0, 2, 0), (key % 2**32, key >> 32))[e % 4]
    assert_equal(reference_randn(torch.tensor([7], dtype=torch.int32), (1, 9)), reference_randn([7], (1, 9)))


def test_bad_randn_arguments():
    """randn rejects a shape whose batch differs from the seeds, bad offsets and non-float dtypes."""
    with pytest.raises(ValueError, match="seeds: expected 2 seeds"):
        reference_randn([1, 2, 3], (2, 4))
    with pytest.raises(ValueError, match="offset"):
        reference_randn([1], (1, 4), offset=-1)
    with pytest.raises(ValueError, match="offset"):
        reference_randn([1], (1, 4), offset=2**64)
    with pytest.raises(TypeError, match="dtype"):
        reference_randn([1], (1, 4), dtype=torch.int32)
    with pytest.raises(ValueError, match="shape"):
        reference_randn([1], ())


SHAPE_ACCEPTED = r"shape: expected an int or a sequence of non-negative ints \(batch, \.\.\.\)"


def shape_entry_points():
    """Every public function that takes a shape, as draw(seeds, shape)."""
    from fastdiff import sde

    return {
        "fastdiff.randn": lambda seeds, shape: fastdiff.randn(seeds, shape),
        "fastdiff.rng.randn": lambda seeds, shape: fastdiff.rng.randn(seeds, shape),
        "VESDE.prior_sampling": lambda seeds, shape: sde.VESDE().prior_sampling(shape, seeds),
    }


@pytest.mark.parametrize("entry", ["fastdiff.randn", "fastdiff.rng.randn", "VESDE.prior_sampling"])
@pytest.mark.parametrize("shape, error, detail", [
    ((2, 2.7), TypeError, r"got \(2, 2.7\): dimension 1 is 2.7, a float"),
    ((2, 3.0), TypeError, r"got \(2, 3.0\): dimension 1 is 3.0, a float"),
    ("23", TypeError, r"got '23' of type str"),
    ((2, True), TypeError, r"got \(2, True\): dimension 1 is True, a bool"),
    (True, TypeError, r"got True of type bool"),
    ((2, "3"), TypeError, r"got \(2, '3'\): dimension 1 is '3', a str"),
    (torch.tensor([2, 3]), TypeError, r"got tensor\(\[2, 3\]\) of type Tensor"),
    ((2, -1), ValueError, r"got \(2, -1\): dimension 1 is -1, below 0"),
    ((), ValueError, r"with at least 1 dimension, got \(\)"),
])
def test_bad_shapes_are_refused_with_the_shape_named(entry, shape, error, detail):
    """A shape is an int or a sequence of non-negative ints: floats (even whole ones), strings, bools and tensors are
    refused, naming `shape`, the value and what is accepted, before anything is drawn."""
    with pytest.raises(error, match=SHAPE_ACCEPTED + ".*" + detail):
        shape_entry_points()[entry]([1, 2], shape)


@pytest.mark.parametrize("entry", ["fastdiff.randn", "fastdiff.rng.randn", "VESDE.prior_sampling"])
def test_good_shapes_are_accepted(entry):
    """An int n is the shape (n,), as for torch.randn; lists, torch.Size and numpy ints are shapes too."""
    draw = shape_entry_points()[entry]
    expected = draw([1, 2, 3], (3, 4))
    assert_equal(draw([1, 2, 3], [3, np.int64(4)]), expected)
    assert_equal(draw([1, 2, 3], torch.Size([3, 4])), expected)
    one = draw([1, 2, 3], 3)
    assert one.shape == (3,)
    assert_equal(one, draw([1, 2, 3], (3,)))


# --------------------------------------------------------------------------------------------------------
# The stream offsets: one registry (fastdiff.rng.STREAMS), no overlaps, no offsets defined elsewhere.
# --------------------------------------------------------------------------------------------------------

def test_named_streams_do_not_overlap():
    """Each stream's offsets (start .. start + size - 1, a stepped stream's size given its most steps) lie inside
    [0, 2^64) and within one high word, and no two streams share an offset."""
    streams = sorted(rng.STREAMS, key=lambda s: s.start)
    assert len({s.name for s in streams}) == len(streams)
    for stream in streams:
        last = stream.start + stream.size - 1
        assert stream.size >= 1 and 0 <= stream.start <= last <= rng.MAX_OFFSET, stream
        assert stream.start >> 32 == last >> 32, f"{stream.name} crosses into the next high word"
    for before, after in zip(streams, streams[1:]):
        assert before.start + before.size <= after.start, f"{before.name} reaches into {after.name}"


def test_every_offset_constant_is_a_named_stream():
    """A new offset in fastdiff.rng must be entered in STREAMS (so the overlap test sees it)."""
    constants = {name: value for name, value in vars(rng).items() if name.endswith("_OFFSET") and name != "MAX_OFFSET"}
    assert constants, "no offsets found"
    starts = {s.start for s in rng.STREAMS}
    assert {name for name, value in constants.items() if value not in starts} == set()


def test_stream_offsets_keep_their_documented_values():
    """The layout of docs/formulas.md#stream-offsets: every seeded result depends on these numbers."""
    assert (rng.LATENTS_OFFSET, rng.SAMPLER_OFFSET, rng.LOSS_NOISE_OFFSET, rng.LOSS_SIGMA_OFFSET, rng.PROBE_OFFSET,
            rng.INPAINT_OFFSET) == (0, 1 << 32, 2 << 32, (2 << 32) + 1, 3 << 32, 8 << 32)
    assert (rng.SMC_OBSERVATION_OFFSET, rng.SMC_PROPOSAL_OFFSET, rng.SMC_RESAMPLE_OFFSET,
            rng.SMC_LATENTS_OFFSET) == (9 << 32, 10 << 32, 11 << 32, 12 << 32)


def test_no_module_defines_its_own_offset():
    """Offsets live in fastdiff/rng.py only: other modules import them (an `..._OFFSET = ` elsewhere is a second home)."""
    package = Path(fastdiff.__file__).resolve().parent
    defined = re.compile(r"^\s*[A-Z][A-Z0-9_]*_OFFSET\s*=", re.M)
    found = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
             if path.name != "rng.py" and defined.search(path.read_text(encoding="utf-8"))]
    assert found == []
