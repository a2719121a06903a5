"""The noise band and the background model of ``app.analysis.noise``: the high-pass of the
noise copy and its white-noise scale, the spline knots and the mains terms of the
background basis, and what the fit uses and keeps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from app.analysis.epoch import EpochAnalyzer
from app.analysis.noise import Background, NoiseBand
from app.settings import Settings

# ----------------------------------------------------------------------------- NoiseBand


def _band_power_ratio(fs: float, peak_sos: np.ndarray, hp_sos: np.ndarray) -> float:
    """sqrt of (white-noise power through the peak band) / (through peak band and high-pass),
    both filtered forward-backward (|H|^4 in power), over the amplifier band 0-5 kHz,
    integrated on a dense grid."""
    f = np.linspace(0.0, min(5000.0, 0.5 * fs), 2**16 + 1)
    _, hz = sps.sosfreqz(peak_sos, worN=f, fs=fs)
    _, hh = sps.sosfreqz(hp_sos, worN=f, fs=fs)
    pz = np.abs(hz) ** 4
    ph = pz * np.abs(hh) ** 4
    return float(np.sqrt(np.trapezoid(pz, f) / np.trapezoid(ph, f)))


@pytest.mark.parametrize("fs", [2000.0, 10000.0, 44100.0])
def test_noise_scale_is_the_white_noise_power_ratio_of_the_two_bands(fs):
    """The scale back to the peak band is the ratio of white-noise RMS after the peak filter
    and after the peak filter plus the noise high-pass (both zero phase), over 0-5 kHz."""
    peak = EpochAnalyzer(Settings())._filter(fs, "peak").sos
    band = NoiseBand(fs, peak)
    ref = _band_power_ratio(fs, peak, sps.butter(2, 150.0, btype="highpass", fs=fs, output="sos"))
    assert band.scale == pytest.approx(ref, rel=1e-6)


def test_noise_scale_counts_only_the_amplifier_band_at_high_rates():
    """At 40 kHz a peak band reaching 5 kHz still has some gain above 5 kHz, where the
    amplifier does not pass noise: the white-noise ratio is taken over 0-5 kHz only."""
    fs = 40000.0
    wide = Settings({"analysis.bandpass_high_hz": 5000.0, "analysis.peak_lowpass_hz": 5000.0})
    peak = EpochAnalyzer(wide)._filter(fs, "peak").sos
    band = NoiseBand(fs, peak)
    ref = _band_power_ratio(fs, peak, sps.butter(2, 150.0, btype="highpass", fs=fs, output="sos"))
    assert band.scale == pytest.approx(ref, rel=1e-5)


def test_noise_scale_does_not_depend_on_the_peak_filter_gain():
    """Only the shape of the peak band matters: a peak filter with a thousandth of the gain
    gives the same scale."""
    fs = 10000.0
    peak = EpochAnalyzer(Settings())._filter(fs, "peak").sos
    quiet = peak.copy()
    quiet[0, :3] *= 1e-3
    assert NoiseBand(fs, quiet).scale == pytest.approx(NoiseBand(fs, peak).scale, rel=1e-9)
    assert NoiseBand(fs, peak).scale > 1.05


def test_a_peak_filter_that_passes_nothing_gives_scale_one():
    """No power in the peak band at all: there is nothing to scale, the scale is 1."""
    nothing = np.array([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    assert NoiseBand(10000.0, nothing).scale == 1.0


def test_noise_high_pass_is_second_order_at_150_hz():
    """The noise copy's high-pass: -3 dB at 150 Hz, -40 dB a decade below (2nd order)."""
    fs = 10000.0
    band = NoiseBand(fs, EpochAnalyzer(Settings())._filter(fs, "peak").sos)
    _, h = sps.sosfreqz(band.sos, worN=[15.0, 150.0, 4000.0], fs=fs)
    assert np.abs(h) == pytest.approx([0.01, 2**-0.5, 1.0], rel=2e-3)


def test_noise_high_pass_moves_to_a_fifth_of_a_low_sample_rate():
    """At 500 Hz, 150 Hz is too close to Nyquist: the corner moves to 100 Hz (fs / 5)."""
    fs = 500.0
    band = NoiseBand(fs, EpochAnalyzer(Settings())._filter(fs, "peak").sos)
    _, h = sps.sosfreqz(band.sos, worN=[100.0], fs=fs)
    assert abs(h[0]) == pytest.approx(2**-0.5, rel=1e-6)


# ----------------------------------------------------------------------------- Background basis


@pytest.mark.parametrize(
    ("fs", "n", "n_spline"),
    [
        (2.0, 3, 203),  # a 2 Hz record of 1 s: still 5 ms knots
        (8000.0, 161, 7),  # 20 ms: 4 intervals
        (8000.0, 162, 8),  # 20.125 ms: 5 intervals
        (16000.0, 49, 4),  # 3 ms: one interval
        (8000.0, 41, 4),  # exactly 5 ms: one interval
    ],
)
def test_spline_knot_count_follows_the_epoch_duration_in_ms(fs, n, n_spline):
    """Knots every 5 ms of epoch duration, whatever the sample rate: the number of spline
    terms is the number of 5 ms intervals (rounded up) plus 3."""
    assert Background(fs, 0, n).n_spline == n_spline


@pytest.mark.parametrize(("fs", "pre", "n", "intervals"), [(8000.0, 40, 161, 4), (16000.0, 100, 481, 6)])
def test_background_splines_sum_to_one_with_knots_every_5_ms(fs, pre, n, intervals):
    """The spline terms are cubic B-splines with knots every 5 ms from the first sample to the
    last: they add up to 1 on every sample, and on a knot they are 1/6, 2/3, 1/6."""
    bg = Background(fs, pre, n)
    assert bg.n_spline == intervals + 3
    spl = bg.basis[:, : bg.n_spline]
    assert spl.min() >= 0.0
    np.testing.assert_allclose(spl.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    step = (n - 1) // intervals  # samples between knots
    for i, k in enumerate(range(0, n, step)):
        row = spl[k]
        np.testing.assert_allclose(row[i : i + 3], [1 / 6, 2 / 3, 1 / 6], rtol=0, atol=1e-12)
        assert np.count_nonzero(row) == 3
    # between knots: the middle of the first interval
    u = 0.5
    expected = [(1 - u) ** 3 / 6, (3 * u**3 - 6 * u**2 + 4) / 6, (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6, u**3 / 6]
    np.testing.assert_allclose(spl[step // 2, :4], expected, rtol=0, atol=1e-12)


def test_a_very_short_epoch_still_has_its_ends_on_the_knots():
    """An epoch shorter than 1 ms (5 samples at 10 kHz) is one spline interval from its first
    sample to its last."""
    bg = Background(10000.0, 2, 5)
    assert bg.n_spline == 4
    np.testing.assert_allclose(bg.basis[0, :4], [1 / 6, 2 / 3, 1 / 6, 0.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(bg.basis[-1, :4], [0.0, 1 / 6, 2 / 3, 1 / 6], rtol=0, atol=1e-12)


def test_mains_terms_are_sines_and_cosines_in_stimulus_time():
    """After the spline terms come cos and sin of 50, 100, 150, 60, 120 and 180 Hz, with time
    counted from the stimulus (sample ``pre``)."""
    fs, pre, n = 10000.0, 137, 1000
    bg = Background(fs, pre, n)
    assert bg.n_pairs == 6
    t = (np.arange(n) - pre) / fs
    cols = []
    for f in (50.0, 100.0, 150.0, 60.0, 120.0, 180.0):
        cols += [np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)]
    np.testing.assert_allclose(bg.basis[:, bg.n_spline :], np.stack(cols, axis=1), rtol=0, atol=1e-9)


@pytest.mark.parametrize(("fs", "pairs"), [(375.0, 4), (400.0, 5), (1000.0, 6), (250.0, 2)])
def test_mains_components_below_0_4_fs_only(fs, pairs):
    """A mains component is modelled only below 0.4 fs: at 375 Hz 150 Hz (= 0.4 fs) is left
    out (50, 60, 100, 120 Hz stay), at 400 Hz only 180 Hz is, at 250 Hz only 50 and 60 Hz stay."""
    assert Background(fs, 10, 50).n_pairs == pairs


# ----------------------------------------------------------------------------- Background fit


def test_fit_at_5_khz_uses_every_sample():
    """At 5 kHz the background is fitted on every sample (no decimation): a slow wave kept
    only on the odd samples is still found."""
    fs, pre, n = 5000.0, 50, 250
    bg = Background(fs, pre, n)
    assert bg.decimation == 1
    t = (np.arange(n) - pre) / fs
    z = 100.0 * np.sin(2 * np.pi * 20.0 * t)[None, :]
    keep = np.zeros((1, n), dtype=bool)
    keep[:, 1::2] = True
    c, _drop, _chi = bg.fit(z, keep, np.array([1.0]), 1000.0)
    np.testing.assert_allclose((c @ bg.basis.T)[0], z[0], rtol=0, atol=5.0)


def test_fit_models_the_mains_pairs_known_to_be_present():
    """Mains pairs known present on the channel are modelled even when this epoch alone shows
    no hum (pure noise): none is dropped; without that knowledge all are."""
    fs, pre, n = 10000.0, 100, 600
    bg = Background(fs, pre, n)
    rng = np.random.default_rng(5)
    z = rng.normal(0.0, 5.0, (1, n))
    keep = np.ones((1, n), dtype=bool)
    noise = np.array([5.0])
    _c, drop, chi = bg.fit(z, keep, noise, 1000.0, present=np.ones((1, bg.n_pairs), dtype=bool))
    assert (chi < 12.0).all()
    assert not drop.any()
    _c, drop, _chi = bg.fit(z, keep, noise, 1000.0, present=np.zeros((1, bg.n_pairs), dtype=bool))
    assert drop[0, bg.n_spline :].all()
