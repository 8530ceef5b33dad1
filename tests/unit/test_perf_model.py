"""Iteration-time model: presets, inversion, least-squares fit (core/perf_model.py)."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import pytest

from hyperflexis_sglang.core.perf_model import (FEATURES, GPUS, MODELS, PerfModel, PerfModelError, Sample,
                                                attn_pairs, fit, preset, relative_error)

FITTING = [(m, g, tp) for m in MODELS for g in GPUS for tp in (1, 4, 8) if not (m == "llama-3-70b" and tp == 1)]


@pytest.mark.parametrize("model, gpu, tp", FITTING)
def test_presets_positive_and_ordered(model, gpu, tp):
    p = preset(model, gpu, tp)
    for f in FEATURES:
        assert getattr(p, f) > 0, f
    assert p.kv_capacity_tokens > 0 and p.kv_bytes_per_token > 0 and p.num_gpus == tp
    assert p.name == f"{model}/{gpu}/tp{tp}"
    # sane per-unit magnitudes: iteration overhead in ms, a token costs us, a KV read ns
    assert 1e-3 < p.base < 0.1
    assert 1e-7 < p.per_prefill_token < 1e-3
    assert 0 < p.per_kv_token < 1e-6
    # more work never takes less time
    assert p.prefill_time(8192) > p.prefill_time(1024) > 0
    assert p.decode_time(64, 64_000) > p.decode_time(8, 8_000) > 0


@pytest.mark.parametrize("model, gpu", [(m, g) for m in MODELS for g in GPUS])
def test_more_gpus_are_faster_and_hold_more_kv(model, gpu):
    tps = [tp for tp in (1, 4, 8) if (model, gpu, tp) in FITTING]
    ps = [preset(model, gpu, tp) for tp in tps]
    for small, big in zip(ps, ps[1:]):
        assert big.prefill_time(8192) < small.prefill_time(8192)
        assert big.kv_capacity_tokens > small.kv_capacity_tokens


def test_h100_faster_than_a100_and_70b_slower_than_8b():
    assert preset("llama-3-8b", "h100").prefill_time(4096) < preset("llama-3-8b", "a100").prefill_time(4096)
    assert preset("llama-3-70b", "h100", 8).prefill_time(4096) > preset("llama-3-8b", "h100", 8).prefill_time(4096)


def test_8b_h100_magnitudes():
    p = preset("llama-3-8b", "h100", 1)
    assert 0.1 <= p.prefill_time(8192) <= 0.5
    assert 0.005 <= p.decode_time(64, 64 * 1000) <= 0.040
    assert 2e5 <= p.kv_capacity_tokens <= 6e5
    assert p.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2  # 128 KiB per token for Llama-3-8B in BF16


@pytest.mark.parametrize("gpu", sorted(GPUS))
def test_70b_does_not_fit_on_one_gpu(gpu):
    with pytest.raises(PerfModelError, match="does not fit"):
        preset("llama-3-70b", gpu, 1)


@pytest.mark.parametrize("kwargs, match", [
    ({"model": "llama-2-7b"}, "unknown model"),
    ({"gpu": "v100"}, "unknown GPU"),
    ({"tp": 3}, "tensor parallel"),
])
def test_preset_errors(kwargs, match):
    with pytest.raises(PerfModelError, match=match):
        preset(**kwargs)


# ---- iteration time ------------------------------------------------------------
P = preset()


def test_iteration_time_terms():
    assert P.iteration_time() == 0.0
    assert P.prefill_time(0) == 0.0
    assert P.decode_time(0, 0) == 0.0
    assert P.decode_time(3, 300) == pytest.approx(P.base + 3 * P.per_decode_req + 300 * P.per_kv_token)
    assert P.prefill_time(100, 50) == pytest.approx(P.base + P.chunk_time(100, 50))
    assert P.chunk_time(100, 50) == pytest.approx(100 * P.per_prefill_token + P.per_attn_pair * 100 * (50 + 50.5)
                                                  + P.per_prefill_seq)


@pytest.mark.parametrize("tokens, prefix, pairs", [(1, 0, 1), (4, 0, 10), (4, 10, 50), (0, 5, 0)])
def test_attn_pairs_is_causal_count(tokens, prefix, pairs):
    assert attn_pairs(tokens, prefix) == pairs
    assert attn_pairs(tokens, prefix) == sum(prefix + q + 1 for q in range(tokens))


# ---- inversion -------------------------------------------------------------------
LINEAR = replace(P, per_attn_pair=0.0)


MODELS_UNDER_TEST = {"8b": P, "70b": preset("llama-3-70b", "a100", 4), "linear": LINEAR}
PREFIXES = [0, 1, 512, 8000, 100_000]
SECONDS = [3e-5, 1e-4, 1e-3, 0.01, 0.05, 0.3, 2.0]
INVERSION_CASES = [(name, prefix, seconds) for name in MODELS_UNDER_TEST for prefix in PREFIXES for seconds in SECONDS]


@pytest.mark.parametrize("name, prefix, seconds", INVERSION_CASES)
def test_max_chunk_tokens_inverts_chunk_time(name, prefix, seconds):
    model = MODELS_UNDER_TEST[name]
    n = model.max_chunk_tokens(prefix, seconds)
    assert isinstance(n, int) and n >= 0
    tol = 1e-12 * seconds
    if n > 0:
        assert model.chunk_time(n, prefix) <= seconds + tol
    assert seconds < model.chunk_time(n + 1, prefix) + tol


@pytest.mark.parametrize("name", MODELS_UNDER_TEST)
def test_max_chunk_tokens_dense_grid(name):
    """The same property on a dense geometric grid (the quadratic's linear term and float rounding at the
    boundary are where an inversion goes one token over)."""
    model = MODELS_UNDER_TEST[name]
    for prefix in (0, 1, 100, 512, 2000, 8000, 30000):
        for k in range(30):
            seconds = 1e-4 * 1.37 ** k
            n = model.max_chunk_tokens(prefix, seconds)
            assert n == 0 or model.chunk_time(n, prefix) <= seconds, (prefix, seconds, n)
            assert seconds < model.chunk_time(n + 1, prefix), (prefix, seconds, n)


@pytest.mark.parametrize("seconds", [-1.0, 0.0, P.per_prefill_seq])
def test_max_chunk_tokens_zero_when_no_time(seconds):
    assert P.max_chunk_tokens(0, seconds) == 0


def test_max_chunk_tokens_shrinks_with_prefix():
    counts = [P.max_chunk_tokens(prefix, 0.05) for prefix in (0, 4096, 32768, 131072)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]


# ---- fitting ---------------------------------------------------------------------
def synthetic_samples(model: PerfModel) -> list[Sample]:
    out = []
    for tokens, seqs, dec, ctx in itertools.product([0, 256, 1024, 4096], [1, 2, 4], [0, 8, 64], [200, 2000]):
        seqs = seqs if tokens else 0
        pairs = seqs * attn_pairs(tokens // seqs, 0) if tokens else 0.0
        secs = model.iteration_time(tokens, pairs, seqs, dec, dec * ctx)
        if secs > 0:
            out.append(Sample(tokens, pairs, seqs, dec, dec * ctx, secs))
    return list(dict.fromkeys(out))


ONES = replace(P, **{f: 1.0 for f in FEATURES}, name="tmpl")


@pytest.mark.parametrize("true", [P, preset("llama-3-70b", "h100", 8), preset("llama-3-8b", "a100", 4)],
                         ids=lambda m: m.name)
def test_fit_recovers_noiseless_coefficients(true):
    fitted = fit(synthetic_samples(true), ONES)
    for f in FEATURES:
        assert getattr(fitted, f) == pytest.approx(getattr(true, f), rel=0.01), f
    assert fitted.name == "tmpl+fit"
    assert fitted.kv_capacity_tokens == ONES.kv_capacity_tokens  # sizes come from the template
    assert relative_error(fitted, synthetic_samples(true)) < 1e-3


def test_fit_keeps_coefficients_non_negative():
    # a "true" model with a negative KV coefficient: the unconstrained LSQ answer is negative
    weird = replace(P, per_kv_token=-1e-7, per_prefill_seq=0.0)
    samples = [s for s in synthetic_samples(weird) if s.seconds > 0]
    fitted = fit(samples, ONES)
    for f in FEATURES:
        assert getattr(fitted, f) >= 0, f
    assert fitted.per_kv_token == 0.0


def test_fit_unexercised_features_keep_template_values():
    decode_only = [s for s in synthetic_samples(P) if s.prefill_tokens == 0]
    assert len(decode_only) >= 3
    fitted = fit(decode_only, ONES, min_samples=3)
    for f in ("per_prefill_token", "per_attn_pair", "per_prefill_seq"):
        assert getattr(fitted, f) == 1.0, f
    for f in ("base", "per_decode_req", "per_kv_token"):
        assert getattr(fitted, f) == pytest.approx(getattr(P, f), rel=0.01), f


@pytest.mark.parametrize("n, min_samples", [(0, 8), (7, 8), (2, 3)])
def test_fit_needs_enough_samples(n, min_samples):
    samples = synthetic_samples(P)[:n]
    with pytest.raises(PerfModelError, match=f"at least {min_samples}"):
        fit(samples, ONES, min_samples=min_samples)


def _scaled(model: PerfModel, k: float) -> PerfModel:
    return replace(model, **{f: getattr(model, f) * k for f in FEATURES})


@pytest.mark.parametrize("k, expected", [(1.0, 0.0), (1.1, 0.1), (0.5, 0.5), (2.0, 1.0)])
def test_relative_error(k, expected):
    assert relative_error(_scaled(P, k), synthetic_samples(P)) == pytest.approx(expected, abs=1e-9)


def test_relative_error_is_median_and_skips_zero_durations():
    samples = [Sample(100, 5050, 1, 0, 0, P.prefill_time(100) * k) for k in (1.0, 1.0, 2.0)]
    assert relative_error(P, samples) == 0.0  # median of (0, 0, 0.5)
    assert relative_error(P, samples + [Sample(0, 0, 0, 0, 0, 0.0)]) == 0.0
    assert relative_error(P, []) == 0.0
    assert math.isfinite(relative_error(P, [Sample(0, 0, 0, 1, 10, 1e-3)]))


@pytest.mark.parametrize("k", [1.0, 0.5, 2.0])
def test_mean_ratio_is_measured_over_predicted_total(k):
    from hyperflexis_sglang.core.perf_model import prediction_errors
    _, ratio = prediction_errors(_scaled(P, k), synthetic_samples(P))
    assert ratio == pytest.approx(1.0 / k)


def test_mean_ratio_counts_the_slow_iterations_the_median_ignores():
    from hyperflexis_sglang.core.perf_model import prediction_errors
    t = P.prefill_time(100)
    samples = [Sample(100, 5050, 1, 0, 0, t * k) for k in (1.0, 1.0, 1.0, 4.0)]
    median, ratio = prediction_errors(P, samples)
    assert median == 0.0 and ratio == pytest.approx(7.0 / 4.0)
    assert prediction_errors(P, []) == (0.0, 1.0)


def test_from_dict_round_trips_and_rejects_bad_input():
    from hyperflexis_sglang.core.perf_model import PerfModel, PerfModelError, preset
    m = preset("llama-3-8b", "h100", 1)
    assert PerfModel.from_dict(m.to_dict()) == m
    with pytest.raises(PerfModelError, match="unknown"):
        PerfModel.from_dict({**m.to_dict(), "bogus": 1})
    with pytest.raises(PerfModelError, match="incomplete"):
        PerfModel.from_dict({"base": 0.01})
    with pytest.raises(PerfModelError, match="non-negative"):
        PerfModel.from_dict({**m.to_dict(), "base": -1.0})


def test_fit_is_robust_to_stalled_iterations():
    """A few iterations stalled 30x (the OS took the core, the scheduler waited on I/O) barely move the fit;
    a plain least-squares fit on absolute error would chase them."""
    clean = synthetic_samples(P)
    stalled = [replace(s, seconds=s.seconds * 30) for s in clean[::10]]
    fitted = fit(clean + stalled, ONES)
    assert relative_error(fitted, clean) < 0.02
    for f in ("base", "per_prefill_token", "per_decode_req"):
        assert getattr(fitted, f) == pytest.approx(getattr(P, f), rel=0.05), f


def test_fit_on_relative_error_keeps_small_iterations_right():
    """Short decode iterations matter as much as long prefills: 10% noise on every sample keeps the median
    relative error near the noise, for the short ones too."""
    rng = random.Random(0)
    noisy = [replace(s, seconds=s.seconds * rng.uniform(0.9, 1.1)) for s in synthetic_samples(P) for _ in range(3)]
    fitted = fit(noisy, ONES)
    short = [s for s in synthetic_samples(P) if s.prefill_tokens == 0]
    assert relative_error(fitted, short) < 0.06 and relative_error(fitted, synthetic_samples(P)) < 0.06


def test_prediction_errors_match_a_per_sample_computation():
    """The vectorised errors equal the per-sample definition, incl. a row with no work (predicted 0 s, as
    ``iteration_time``) and a zero-duration row (skipped)."""
    from hyperflexis_sglang.core.perf_model import prediction_errors
    rng = random.Random(3)
    samples = [s for s in synthetic_samples(P)] + [Sample(0, 0, 0, 0, 0, 1e-3), Sample(64, 2080, 1, 0, 0, 0.0)]
    samples = [replace(s, seconds=s.seconds * rng.uniform(0.7, 1.5)) for s in samples]
    errs, meas, pred = [], 0.0, 0.0
    for s in samples:
        if s.seconds > 0:
            t = P.iteration_time(s.prefill_tokens, s.attn_pairs, s.prefill_seqs, s.decode_reqs, s.decode_kv_tokens)
            errs.append(abs(t - s.seconds) / s.seconds)
            meas, pred = meas + s.seconds, pred + t
    median, ratio = prediction_errors(P, samples)
    assert median == pytest.approx(sorted(errs)[len(errs) // 2], rel=1e-12)
    assert ratio == pytest.approx(meas / pred, rel=1e-12)


def test_fit_arrays_is_fit_on_the_same_rows_in_any_order():
    """A live engine's ring buffer holds the samples out of order: the fit does not depend on it."""
    from hyperflexis_sglang.core.perf_model import fit_arrays, sample_arrays
    rng = random.Random(5)
    samples = [replace(s, seconds=s.seconds * rng.uniform(0.8, 1.25)) for s in synthetic_samples(P)]
    a = fit(samples, P)
    x, y = sample_arrays(samples)
    order = list(range(len(y)))
    rng.shuffle(order)
    b = fit_arrays(x[order], y[order], P)
    for f in FEATURES:
        assert getattr(b, f) == pytest.approx(getattr(a, f), rel=1e-9, abs=1e-15)
    with pytest.raises(PerfModelError, match="positive duration"):
        fit_arrays(x[:4], y[:4], P)
