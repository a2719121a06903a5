"""How a ``ResponseTemplate`` derives its shape from what it learned: which samples are
part of it (those learned with more than a fifth of the best-learned sample's weight, at
least 4 of them), the shape as the weighted mean of the responses whatever the weights'
size, its own noise (``1 / sum(A_i^2 / s_i^2)`` per sample, in units of its peak-to-peak
value squared), the support (where the 0.5 ms mean of ``|S|`` reaches ``SUPPORT_SHARE``
of its peak-to-peak value, plus ``SUPPORT_MARGIN_MS``, never beyond the span) and the
half-cosine taper over ``TAPER_MS`` outside it.

The responses are synthetic and noise-free, given as segments from the stimulus with
their first major peak at 10 ms. Weights that are powers of two keep the arithmetic
exact where a test needs a value exactly at a threshold."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from app.analysis.template import SUPPORT_SHARE, ResponseTemplate

LATENCY_MS = 10.0


def _t(fs: float, n: int) -> np.ndarray:
    """ms from the first major peak of the segment's samples (from the stimulus)."""
    return np.arange(n) * 1000.0 / fs - LATENCY_MS


def _pulse(t: np.ndarray, at_ms: float = 0.0, width_ms: float = 0.5) -> np.ndarray:
    return np.exp(-0.5 * ((t - at_ms) / width_ms) ** 2)


def _biphasic(t: np.ndarray) -> np.ndarray:
    return _pulse(t) - 0.8 * _pulse(t, 1.5, 0.65)


def _noise_for(w: float, amplitude_uV: float = 1.0) -> float:
    """The noise that gives a response of ``amplitude_uV`` the weight ``w``."""
    return amplitude_uV / np.sqrt(w)


# ------------------------------------------------------------------- which samples count


@pytest.mark.parametrize(("share", "covered"), [(0.2, False), (0.25, True)])
def test_samples_learned_with_at_most_a_fifth_of_the_best_weight_are_not_part_of_the_shape(share, covered):
    """A full response (a pulse at 0 ms and a second lobe at 9 ms) with weight ``share *
    W`` and the same response cut after 6 ms with weight ``(1 - share) * W`` (nothing
    fades: ``keep=1``): after 6 ms only the first taught; exactly a fifth is not enough."""
    fs = 5000.0
    t = _t(fs, 200)
    y = _pulse(t) + 0.5 * _pulse(t, 9.0, 1.5)
    w = 5120.0
    template = ResponseTemplate(fs)
    template.learn(0, y, LATENCY_MS, 1.0, _noise_for(share * w), keep=1.0)
    template.learn(0, y[:80], LATENCY_MS, 1.0, _noise_for((1.0 - share) * w), keep=1.0)  # up to 5.8 ms
    assert template.usable(10.0)
    at = np.array([8.0, 9.0, 10.0])
    if covered:
        assert template.variance(at) == pytest.approx(1.0 / (share * w), rel=1e-9)
        assert template.values(at)[0] == pytest.approx(0.5 * _pulse(at, 9.0, 1.5), abs=0.01)
    else:
        assert template.variance(at).tolist() == [0.0, 0.0, 0.0]
        assert template.values(at)[0] == pytest.approx([0.0, 0.0, 0.0], abs=0.01)
    assert template.variance(np.array([0.0])) == pytest.approx(1.0 / w, rel=1e-9)  # both taught there


def _at_the_span_start(n_samples: int) -> tuple[ResponseTemplate, np.ndarray, float]:
    """A clean 10-sample segment (and its latency) of which only the last ``n_samples``
    lie in the span (at 5 kHz, the span starts 20 samples before the first major peak);
    the second of those is 1, the others 0."""
    n = 10
    y = np.zeros(n)
    y[n - n_samples + 1] = 1.0
    r0 = -20 + n_samples - n  # the segment's first sample, counted from the first major peak
    latency_ms = -r0 * 0.2
    template = ResponseTemplate(5000.0)
    template.learn(0, y, latency_ms, 1.0, 0.01)
    assert template.snr == 100.0
    return template, y, latency_ms


def test_three_learned_samples_are_no_shape():
    template, y, latency_ms = _at_the_span_start(3)
    assert not template.usable(1000.0)
    assert template.ptp == 0.0
    assert template.similarity(0, y, latency_ms) == 0.0


def test_four_learned_samples_are_a_shape():
    template, y, latency_ms = _at_the_span_start(4)
    assert template.usable(1000.0)
    assert template.ptp > 0.5
    assert template.similarity(0, y, latency_ms) > 0.99


def test_a_learned_response_without_a_shape_leaves_the_template_empty():
    """A constant offset has no peak-to-peak value: no shape on the sample grid, no
    support, no noise, nothing to compare with and nothing to measure with."""
    fs = 5000.0
    template = ResponseTemplate(fs)
    template.learn(0, np.full(200, 5.0), LATENCY_MS, 5.0, 0.05)
    assert not template.usable(1000.0)
    assert template.similarity(0, _biphasic(_t(fs, 200)), LATENCY_MS) == 0.0
    assert template.native.tolist() == [0.0] * len(template.native)
    assert template.taper.tolist() == [0.0] * len(template.taper)
    assert template.variance(np.linspace(-4.0, 14.0, 19)).tolist() == [0.0] * 19


def test_a_response_covering_part_of_the_span_derives_without_numerical_warnings():
    """The samples of the span that no response reached (here after 6 ms) are simply
    not part of the shape: no division by their zero weight."""
    fs = 5000.0
    y = 100.0 * _biphasic(_t(fs, 80))  # up to 5.8 ms after the first major peak
    template = ResponseTemplate(fs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        template.learn(0, y, LATENCY_MS, float(np.ptp(y)), 1.0)
        assert template.similarity(0, y, LATENCY_MS) > 0.999
        assert template.usable(10.0)
    assert template.variance(np.array([8.0, 12.0])).tolist() == [0.0, 0.0]


# ----------------------------------------------------------- the weighted mean, its noise


@pytest.mark.parametrize("w", [0.25, 1.0, 4.0, 1e4])
def test_the_shape_is_the_weighted_mean_whatever_the_size_of_the_weights(w):
    """The same biphasic response taught twice, once whole and once cut just after its
    first peak: the sample after the cut is taught once, those before it twice (and
    faded once), yet the mean shape is the response itself, for responses below their
    noise as for clean ones."""
    fs = 5000.0
    t = _t(fs, 200)
    y = 100.0 * _biphasic(t)
    template = ResponseTemplate(fs)
    template.learn(0, y, LATENCY_MS, 100.0, _noise_for(w, 100.0))
    template.learn(0, y[:53], LATENCY_MS, 100.0, _noise_for(w, 100.0))  # up to 0.4 ms
    # (a hair under 1: the template is tapered at the edges of its support, the response not)
    assert template.similarity(0, y, LATENCY_MS) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("w", [0.25, 1.0, 4.0, 1024.0])
def test_the_templates_own_noise_is_one_over_the_weight_inside_the_support(w):
    """One response of weight ``w`` (its SNR squared): the template's noise variance is
    ``1 / w`` of its peak-to-peak value squared over the support, also for a response
    below its noise."""
    fs = 5000.0
    y = _biphasic(_t(fs, 200))
    template = ResponseTemplate(fs)
    template.learn(0, y, LATENCY_MS, 1.0, _noise_for(w))
    template.similarity(0, y, LATENCY_MS)  # (derives the shape on the sample grid and its noise)
    lo, hi = template.support
    inside = np.linspace(lo, hi, 9)
    assert template.variance(inside) == pytest.approx(np.full(9, 1.0 / w), rel=1e-9)


# ---------------------------------------------------------------------- support and taper


def test_the_taper_is_a_half_cosine_over_half_a_millisecond_outside_the_support():
    """At 20 kHz the taper falls over 10 samples: ``0.5 * (1 + cos(pi * d / 10))`` at
    ``d`` samples outside the support, 0 from 10 on. The template's noise variance
    there is the taper squared over the weight."""
    fs = 20000.0
    y = _pulse(_t(fs, 800))
    w = 1024.0
    template = ResponseTemplate(fs)
    template.learn(0, y, LATENCY_MS, 1.0, _noise_for(w))
    assert template.usable(10.0)
    times = template.offsets * template.h_ms
    lo = int(np.flatnonzero(times == template.support[0])[0])
    hi = int(np.flatnonzero(times == template.support[1])[0])
    assert 20 < lo < hi < len(times) - 20
    d = np.arange(13)
    taper = np.where(d < 10, 0.5 * (1.0 + np.cos(np.pi * d / 10.0)), 0.0)
    assert w * template.variance(times[lo - d]) == pytest.approx(taper**2, rel=1e-9, abs=1e-15)
    assert w * template.variance(times[hi + d]) == pytest.approx(taper**2, rel=1e-9, abs=1e-15)


def test_deflections_at_the_first_and_last_sample_of_the_span_are_inside_the_support():
    """A response with a deflection as large as its peak at exactly -4 ms and at exactly
    14 ms from it: the support runs from the span's first sample to its last, untapered."""
    fs = 5000.0
    y = np.zeros(200)
    y[[30, 50, 120]] = 1.0  # -4 ms, the first major peak (0 ms), 14 ms
    w = 1024.0
    template = ResponseTemplate(fs)
    template.learn(0, y, LATENCY_MS, 1.0, _noise_for(w))
    assert template.usable(100.0)
    assert template.support == pytest.approx((-4.0, 14.0), abs=1e-9)
    assert w * template.variance(np.array([-4.0, 14.0])) == pytest.approx([1.0, 1.0], rel=1e-12)


def test_a_sample_whose_half_millisecond_mean_is_exactly_the_support_share_is_inside_the_support():
    """At 5 kHz the 0.5 ms mean of ``|S|`` is over 2 samples: a response rising from zero
    with a first sample of ``2 * SUPPORT_SHARE`` (its peak-to-peak value is 1) reaches
    the share exactly there; the support starts the 0.75 ms margin (4 samples) before."""
    fs = 5000.0
    y = np.zeros(200)
    y[48:53] = [2.0 * SUPPORT_SHARE, 0.5, 1.0, 0.5, 0.16]  # -0.4 ms to 0.4 ms
    template = ResponseTemplate(fs)
    template.learn(0, y, LATENCY_MS, 1.0, 1.0 / 32.0)  # weight 1024: the shape is exactly y
    assert template.usable(100.0)
    assert template.support[0] == pytest.approx(-0.4 - 4 * 0.2, abs=1e-9)


def test_at_2_khz_the_support_of_a_one_sample_response_is_that_sample_and_its_margin():
    """At 0.5 ms per sample the 0.5 ms mean is the sample itself, the margin 2 samples
    (0.75 ms rounded), the taper a single step: 1 up to 1 ms either side, 0 beyond."""
    fs = 2000.0
    y = np.zeros(80)
    y[20] = 1.0  # the first major peak, 10 ms
    w = 1e4
    template = ResponseTemplate(fs)
    template.learn(0, y, LATENCY_MS, 1.0, _noise_for(w))
    template.usable(100.0)
    assert template.support == pytest.approx((-1.0, 1.0), abs=1e-12)
    at = np.array([-2.0, -1.5, -1.0, 0.0, 1.0, 1.5, 2.0])
    assert w * template.variance(at) == pytest.approx([0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0], abs=1e-12)
