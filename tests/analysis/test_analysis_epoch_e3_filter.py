"""The epoch analyzer's filters, designed per sample rate and kind (``EpochAnalyzer._filter``).

The module documents them: the measurement band-pass is a 2nd-order Butterworth in SOS form from
``analysis.bandpass_low_hz`` (10 Hz) to ``analysis.bandpass_high_hz`` (3 kHz), the upper corner
capped at 45 % of the sample rate (and the lower corner then kept below half of it); the "peak"
copy adds a 4th-order Butterworth low-pass at ``analysis.peak_lowpass_hz`` (1 kHz) when that
lies below the upper corner; both are applied forwards and backwards with odd padding of 10 ms
(at least 8 samples). Each design is made once per (rate, kind) and reused.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from app.analysis.epoch import EpochAnalyzer
from app.settings import Settings

# (sample rate, expected band-pass corners (low, high) in Hz): worked out by hand from the documented rule
_CORNERS = [
    (48000.0, 10.0, 3000.0),  # 45 % of the rate is far above 3 kHz: the setting holds
    (20000.0, 10.0, 3000.0),
    (4000.0, 10.0, 1800.0),  # 45 % of 4 kHz caps the upper corner
    (2000.0, 10.0, 900.0),  # ... below the 1 kHz peak low-pass
    (20.0, 4.5, 9.0),  # the lower corner is kept at half the capped upper one
    (1.0, 0.225, 0.45),  # a 1 Hz rate is still a valid rate
]


def _band(fs: float, low: float, high: float) -> np.ndarray:
    return sps.butter(2, [low, high], btype="bandpass", fs=fs, output="sos")


def _odd_filtfilt(sos: np.ndarray, x: np.ndarray, padlen: int) -> np.ndarray:
    return sps.sosfiltfilt(sos, x, axis=-1, padtype="odd", padlen=min(padlen, x.shape[-1] - 1))


@pytest.mark.parametrize(("fs", "low", "high"), _CORNERS)
def test_display_band_is_the_documented_butterworth_at_each_rate(fs: float, low: float, high: float) -> None:
    """The display filter is exactly the 2nd-order band-pass with the capped corners (2 sections)."""
    f = EpochAnalyzer(Settings())._filter(fs, "display")
    np.testing.assert_allclose(f.sos, _band(fs, low, high), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("fs", "low", "high"), _CORNERS)
def test_peak_copy_adds_the_1khz_lowpass_only_below_the_upper_corner(fs: float, low: float, high: float) -> None:
    """The peak filter is the band-pass plus a 4th-order 1 kHz low-pass when 1 kHz < upper corner,
    else the band-pass alone (a low-pass above the band would change nothing)."""
    f = EpochAnalyzer(Settings())._filter(fs, "peak")
    expected = _band(fs, low, high)
    if high > 1000.0:
        expected = np.vstack([expected, sps.butter(4, 1000.0, fs=fs, output="sos")])
    assert f.sos.shape == expected.shape
    np.testing.assert_allclose(f.sos, expected, rtol=1e-12, atol=1e-15)


def test_peak_lowpass_equal_to_the_upper_corner_is_left_out() -> None:
    """A low-pass exactly at the upper corner is not added: only one strictly below it is."""
    fs = 1000.0 / 0.45  # 45 % of this rate is 1000 Hz: the upper corner equals the 1 kHz low-pass
    assert 0.45 * fs == 1000.0
    f = EpochAnalyzer(Settings())._filter(fs, "peak")
    np.testing.assert_allclose(f.sos, _band(fs, 10.0, 1000.0), rtol=1e-12, atol=1e-15)
    a = EpochAnalyzer(Settings({"analysis.peak_lowpass_hz": 3000.0}))
    assert a._filter(20000.0, "peak").sos.shape == (2, 6)


def test_every_kind_other_than_peak_is_the_plain_band_pass() -> None:
    a = EpochAnalyzer(Settings())
    for kind in ("display", "noise-ref", "Peak", "PEAK"):
        np.testing.assert_allclose(a._filter(20000.0, kind).sos, _band(20000.0, 10.0, 3000.0), rtol=1e-12)


@pytest.mark.parametrize(
    ("fs", "padlen"),
    [(500.0, 8), (840.0, 8), (1000.0, 10), (5000.0, 50), (20000.0, 200)],
)
def test_filters_apply_zero_phase_with_10ms_odd_padding(fs: float, padlen: int) -> None:
    """Applied to rows, each filter equals ``sosfiltfilt`` with odd padding of 10 ms, at least 8 samples."""
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 50.0, size=(2, 600)) + np.linspace(0.0, 300.0, 600)
    a = EpochAnalyzer(Settings())
    for kind in ("display", "peak"):
        f = a._filter(fs, kind)
        got = f(x)
        want = _odd_filtfilt(f.sos, x, padlen)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
        # any other padding gives a visibly different result at the edges
        other = _odd_filtfilt(f.sos, x, padlen + 1)
        assert np.max(np.abs(got - other)) > 1e-6


def test_filtering_a_row_keeps_its_length_and_is_linear() -> None:
    a = EpochAnalyzer(Settings())
    x = np.random.default_rng(3).normal(0.0, 20.0, size=(1, 400))
    f = a._filter(20000.0, "peak")
    y = f(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(f(3.0 * x), 3.0 * y, rtol=1e-9, atol=1e-9)


def test_designs_are_cached_per_rate_and_kind() -> None:
    """The same (rate, kind) gives the same filter object (an int rate is the same rate);
    other rates or kinds get their own, and asking again never loses one."""
    a = EpochAnalyzer(Settings())
    peak = a._filter(20000.0, "peak")
    display = a._filter(20000.0, "display")
    slow = a._filter(4000.0, "peak")
    assert peak is not None and display is not None and slow is not None
    assert a._filter(20000, "peak") is peak
    assert a._filter(20000.0, "display") is display
    assert a._filter(4000.0, "peak") is slow
    assert display is not peak and slow is not peak
    assert peak.sos.shape == (4, 6) and display.sos.shape == (2, 6)
    np.testing.assert_allclose(slow.sos[:2], _band(4000.0, 10.0, 1800.0), rtol=1e-12)
    assert a._filter(20000.0, "peak") is peak


def test_first_request_returns_a_usable_filter() -> None:
    f = EpochAnalyzer(Settings())._filter(20000.0, "display")
    assert f is not None
    assert f(np.ones((1, 50))).shape == (1, 50)


@pytest.mark.parametrize("fs", [0.0, -0.0, -1.0, -20000.0, np.inf, -np.inf, np.nan])
def test_invalid_sample_rate_is_refused_with_a_clear_message(fs: float) -> None:
    with pytest.raises(ValueError, match="sample rate must be a positive number of Hz"):
        EpochAnalyzer(Settings())._filter(fs, "peak")


@pytest.mark.parametrize("fs", [0.5, 1.0, 1.5])
def test_very_low_but_positive_rates_are_accepted(fs: float) -> None:
    f = EpochAnalyzer(Settings())._filter(fs, "display")
    np.testing.assert_allclose(f.sos, _band(fs, 0.225 * fs, 0.45 * fs), rtol=1e-12)
