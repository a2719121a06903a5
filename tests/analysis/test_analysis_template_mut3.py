"""A learned response shape (``ResponseTemplate``): zero outside its span, when it is
usable, its peak-to-peak value and peak times, and at a fine sample rate the learned
samples themselves."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.template import MIN_TEMPLATE_SNR, ResponseTemplate

LATENCY_MS = 10.0  # first major peak of the learned responses, from the stimulus


def _learned(fs: float, wave, amplitude_uV: float, noise_uV: float) -> ResponseTemplate:
    """A template taught one response ``wave(t)`` (t in ms from its first major peak),
    given on 40 ms of samples from the stimulus."""
    t = np.arange(int(round(40.0 * fs / 1000.0))) * 1000.0 / fs - LATENCY_MS
    template = ResponseTemplate(fs)
    template.learn(0, wave(t), LATENCY_MS, amplitude_uV, noise_uV)
    return template


def _biphasic(t: np.ndarray) -> np.ndarray:
    return 100.0 * (np.exp(-0.5 * (t / 0.5) ** 2) - 0.8 * np.exp(-0.5 * ((t - 1.5) / 0.65) ** 2))


def test_the_shape_its_slope_and_its_noise_are_zero_outside_the_templates_span():
    """A slow wave still large at both ends of the span: beyond them there is no template."""
    template = _learned(5000.0, lambda t: 100.0 * np.cos(2.0 * np.pi * t / 6.0), 200.0, 1.0)
    assert template.usable(10.0)
    inside = np.array([template.grid[0], template.grid[-1]])
    s, d = template.values(inside)
    assert np.all(np.abs(s) > 0.1) and np.all(np.abs(d) > 0.01)  # the edges are not zero
    ends = np.array([template.offsets[0], template.offsets[-1]]) * template.h_ms
    assert np.all(template.variance(ends) > 0)
    outside = np.array([template.grid[0] - 0.5, template.grid[-1] + 0.5])
    s, d = template.values(outside)
    assert s.tolist() == [0.0, 0.0]
    assert d.tolist() == [0.0, 0.0]
    assert template.variance(ends + [-0.5, 0.5]).tolist() == [0.0, 0.0]


def test_a_template_of_exactly_the_minimum_snr_is_usable():
    template = _learned(5000.0, _biphasic, 100.0, 100.0 / MIN_TEMPLATE_SNR)
    assert template.snr == MIN_TEMPLATE_SNR
    assert template.usable(10.0)


def test_a_template_just_below_the_minimum_snr_is_not_usable():
    template = _learned(5000.0, _biphasic, 100.0, 100.0 / (MIN_TEMPLATE_SNR - 0.01))
    assert not template.usable(10.0)


def test_a_flat_learned_response_gives_no_usable_template():
    """A constant offset has no peak-to-peak value: nothing to measure with, however clean."""
    template = _learned(5000.0, lambda t: np.full_like(t, 5.0), 5.0, 0.05)
    assert template.snr >= MIN_TEMPLATE_SNR
    assert not template.usable(10.0)
    assert template.ptp == 0.0


def test_a_first_phase_exactly_as_wide_as_allowed_is_usable_and_a_wider_one_not():
    template = _learned(5000.0, _biphasic, 100.0, 1.0)
    assert template.usable(10.0)
    phase = template.phase_ms
    assert 0.5 < phase < 2.0
    assert template.usable(phase)
    assert not template.usable(phase - 0.01)


def test_the_peak_times_are_those_of_the_learned_response():
    """The maximum of the biphasic response at its first peak (0 ms), the minimum near its
    second phase (1.5 ms later)."""
    template = _learned(5000.0, _biphasic, 100.0, 1.0)
    assert template.usable(10.0)
    assert template.max_ms == pytest.approx(0.0, abs=0.1)  # (the second phase pulls it a little earlier)
    assert template.min_ms == pytest.approx(1.5, abs=0.1)
    assert template.first_peak_ms == template.max_ms


def test_a_monophasic_templates_peak_to_peak_is_its_peak():
    """The band-limited interpolation ripples slightly outside the response's support;
    that ripple is not part of the response's peak-to-peak value."""
    template = _learned(5000.0, lambda t: 100.0 * np.exp(-0.5 * (t / 0.5) ** 2), 100.0, 1.0)
    assert template.usable(10.0)
    assert template.ptp == pytest.approx(1.0, abs=3e-6)


def test_at_100_khz_the_template_is_the_learned_samples_themselves():
    """At 0.01 ms per sample the sample grid is already the fine grid: no interpolation."""
    template = _learned(100000.0, _biphasic, 100.0, 1.0)
    assert template.usable(10.0)
    s, _d = template.values(template.offsets * template.h_ms)
    assert np.array_equal(s, template.native)
