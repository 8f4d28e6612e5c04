"""Noise sources: per-sample generators and the Brownian-tree noise sampler."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kdpm2
from kdpm2.noise import draw


def test_numpy_generator_list_draws_per_sample():
    """A list of NumPy generators gives sample i the noise generator i would give alone."""
    like = np.zeros((3, 2, 2), np.float32)
    batch = draw(like, [np.random.default_rng(s) for s in (1, 2, 3)])
    singles = [draw(like[:1], np.random.default_rng(s)) for s in (1, 2, 3)]
    np.testing.assert_array_equal(batch, np.concatenate(singles))
    assert batch.dtype == np.float32


def test_numpy_float16_noise_is_drawn_in_float32_then_cast():
    """float16 samples get float32 draws cast to float16 (the documented dtype policy)."""
    out = draw(np.zeros((2, 3), np.float16), np.random.default_rng(0))
    expected = np.random.default_rng(0).standard_normal((2, 3), dtype=np.float32)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, expected.astype(np.float16))


def test_brownian_noise_is_independent_of_query_order_and_batch_split():
    """Same seed, same noise whatever order the steps are queried in and whatever the batch."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchsde")
    x = torch.zeros(2, 3)
    sigmas = [10.0, 5.0, 2.0, 0.5]
    forward = kdpm2.BrownianTreeNoiseSampler(x, 0.5, 10.0, seed=[7, 8])
    backward = kdpm2.BrownianTreeNoiseSampler(x, 0.5, 10.0, seed=[7, 8])
    pairs = list(itertools.pairwise(sigmas))
    a = [forward(s, sn) for s, sn in pairs]
    b = [backward(s, sn) for s, sn in reversed(pairs)][::-1]
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)
    single = kdpm2.BrownianTreeNoiseSampler(x[:1], 0.5, 10.0, seed=[8])
    torch.testing.assert_close(single(10.0, 5.0), a[0][1:], rtol=1e-5, atol=1e-6)
    # increments are standard normal after normalisation: not all zero, not all equal
    assert float(a[0].std()) > 0.1
    assert not torch.allclose(a[0][0], a[0][1])


def test_brownian_sampler_batch_equals_single_runs_in_the_sampler():
    """sample_dpm_2_ancestral with per-sample Brownian seeds: a batch equals its single runs."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchsde")
    sigmas = kdpm2.get_sigmas_karras(6, 0.1, 10.0, device="cpu")
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0)) * 10

    def den(x, s):
        return torch.tanh(x / (1 + s[:, None] ** 2) ** 0.5)

    ns = kdpm2.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=[3, 4])
    batch = kdpm2.sample_dpm_2_ancestral(den, x, sigmas, noise_sampler=ns, disable=True)
    singles = [
        kdpm2.sample_dpm_2_ancestral(
            den,
            x[i : i + 1],
            sigmas,
            noise_sampler=kdpm2.BrownianTreeNoiseSampler(x[i : i + 1], 0.1, 10.0, seed=[s]),
            disable=True,
        )
        for i, s in enumerate((3, 4))
    ]
    torch.testing.assert_close(batch, torch.cat(singles), rtol=1e-5, atol=1e-5)


def test_brownian_seed_list_length_must_match_batch():
    """A seed list whose length is not the batch size is rejected with a clear message."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchsde")
    with pytest.raises(ValueError, match="list of 3 seeds but x has 2 samples"):
        kdpm2.BrownianTreeNoiseSampler(torch.zeros(2, 3), 0.1, 1.0, seed=[1, 2, 3])


def test_torch_noise_is_drawn_in_randn_order_for_any_memory_format():
    """Noise for a channels-last sample equals ``torch.randn`` of its shape (what diffusers
    draws), not the same numbers laid out in the sample's memory order."""
    torch = pytest.importorskip("torch")
    like = torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last)
    got = draw(like, torch.Generator().manual_seed(7))
    want = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(got, want)
    assert got.dtype == like.dtype


def test_sample_seed_rule_is_pinned():
    """If this fails, the documented per-sample seeding rule changed (SeedSequence of the two
    64-bit words (seed, index)), and every saved run of `kdpm2 sample` draws other digits."""
    from kdpm2.noise import sample_seed

    words = [sample_seed(0, 0), sample_seed(0, 1), sample_seed(2**64 - 1, 12345)]
    assert words == [15793235383387715774, 8649202198168436674, 17552226025590852820]
    words = np.array([7, 0, 3, 0], np.uint32)
    assert int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) == sample_seed(7, 3)
    # fixed-width words: SeedSequence([2**32 + 5, 7]) == SeedSequence([5, 7 * 2**32 + 1])
    assert sample_seed(2**32 + 5, 7) != sample_seed(5, 7 * 2**32 + 1)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((-1, 0), ValueError, "seed=-1 is outside [0, 2**64)"),
        ((0, 2**64), ValueError, "index=18446744073709551616 is outside [0, 2**64)"),
        ((0.5, 0), TypeError, "seed=0.5 is a float; expected an int."),
        ((0, True), TypeError, "index=True is a bool; expected an int."),
    ],
)
def test_sample_seed_rejects_what_is_not_a_64_bit_word(args, error, message):
    """If this fails, a bad seed is silently wrapped or truncated into another sample's seed."""
    from kdpm2.noise import sample_seed

    with pytest.raises(error) as info:
        sample_seed(*args)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sample_generators_give_a_sample_the_same_noise_in_any_batch(backend):
    """If this fails, sample k's noise depends on which other samples share its batch."""
    from kdpm2.noise import sample_generators

    if backend == "torch":
        torch = pytest.importorskip("torch")
        like: object = torch.zeros(1, 5)
        big: object = torch.zeros(6, 5)
    else:
        like, big = np.zeros((1, 5), np.float32), np.zeros((6, 5), np.float32)
    batch = draw(big, sample_generators(11, range(10, 16), backend))
    single = draw(like, sample_generators(11, [13], backend))
    np.testing.assert_array_equal(np.asarray(single[0]), np.asarray(batch[3]))
    other = draw(like, sample_generators(12, [13], backend))
    assert not np.array_equal(np.asarray(single), np.asarray(other))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", [(3,), (2, 5), (3, 4, 8, 8)], ids=str)
def test_torch_noise_is_randn_for_one_generator_a_list_and_the_global_rng(dtype, shape):
    """Host noise is drawn into one buffer in place: the numbers of ``torch.randn`` whole (one
    generator, or the global RNG) and per sample (a list), below and above the 16 values where
    torch's normal kernel changes path."""
    torch = pytest.importorskip("torch")
    dt = getattr(torch, dtype)
    like = torch.zeros(shape, dtype=dt)
    one = draw(like, torch.Generator().manual_seed(5))
    assert torch.equal(
        one, torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=dt)
    )
    gens = [torch.Generator().manual_seed(10 + i) for i in range(shape[0])]
    each = draw(like, gens)
    want = [
        torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(10 + i), dtype=dt)
        for i in range(shape[0])
    ]
    assert torch.equal(each, torch.cat(want))
    torch.manual_seed(3)
    drawn = draw(like)
    torch.manual_seed(3)
    assert torch.equal(drawn, torch.randn(shape, dtype=dt))


def test_cpu_generator_noise_reaches_a_cuda_sample_without_a_sync():
    """A CPU generator (what ``torch.manual_seed`` returns) with CUDA latents: drawn on the host
    into pinned memory and copied asynchronously, with the numbers of ``randn`` on the CPU."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    like = torch.zeros(2, 4, 8, 8, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        one = draw(like, torch.Generator().manual_seed(1))
        each = draw(like, [torch.Generator().manual_seed(2), torch.Generator().manual_seed(3)])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(
        one.cpu(), torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    )
    assert torch.equal(
        each[1:].cpu(), torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    )
