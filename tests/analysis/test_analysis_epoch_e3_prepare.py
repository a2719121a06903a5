"""Preparing epochs before filtering (``EpochAnalyzer._prepare``), as the module documents it.

The epoch is cut at the end of the analysis window (50 ms after the onset), the mean of the
pre-stimulus part (before the blank) is removed, and from 0.1 ms before the onset to
``analysis.artifact_blank_ms`` (1.5 ms, at least one sample) after it the samples are replaced
by a straight line between the means of 0.2 ms (at least one sample) on either side. Other
onsets the caller names are blanked the same way in their own row, and reported as a mask.
The caller's samples are never changed. Geometry below is worked out by hand in samples.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from app.analysis.epoch import EpochAnalyzer
from app.settings import Settings


def _analyzer() -> EpochAnalyzer:
    return EpochAnalyzer(Settings())


def _noisy(k: int, n: int, seed: int = 1) -> np.ndarray:
    """Rows of noise, each with its own offset and slope, so per-row and global means differ."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 40.0, size=(k, n))
    x += np.linspace(-300.0, 500.0, k)[:, None]
    x += np.outer(np.arange(1, k + 1), np.linspace(0.0, 60.0, n))
    return x


def _line(y: np.ndarray, a: int, b: int, m: int) -> None:
    """Reference: replace y[a:b] (1-D, in place) by the straight line between the means of m samples each side."""
    n = len(y)
    sides = []
    if a > 0:
        sides.append(y[max(0, a - m) : a].mean())
    if b < n:
        sides.append(y[b : b + m].mean())
    left, right = (sides[0], sides[-1]) if a > 0 else (sides[0], sides[0])
    y[a:b] = np.linspace(left, right, b - a + 2)[1:-1]


def _reference(x: np.ndarray, bs: int, be: int, end: int, m: int, blanks=()) -> np.ndarray:
    """Cut at ``end``, remove the mean before ``bs``, line over [bs, be), then over each (row, a, b)."""
    y = np.array(x[:, :end], dtype=float)
    if bs > 0:
        for r in range(len(y)):
            y[r] -= y[r, :bs].mean()
    for r in range(len(y)):
        if be > bs:
            _line(y[r], bs, be, m)
    for r, a, b in blanks:
        _line(y[r], a, b, m)
    return y


# (rate, onset index, samples) -> (blank start, blank end, epoch end, endpoint average length)
_GEOMETRY = [
    (20000.0, 200, 1400, 198, 230, 1200, 4),  # 0.1 ms = 2 samples lead, 1.5 ms = 30, 0.2 ms = 4
    (20000.0, 200, 600, 198, 230, 600, 4),  # shorter than the window: the epoch keeps all samples
    (7505.0, 75, 500, 74, 86, 450, 2),  # 0.2 ms = 1.501 samples: two-sample endpoint means
    (5000.0, 50, 400, 50, 58, 300, 1),  # 0.1 ms = 0.5 sample: no lead; 0.2 ms = 1 sample
    (1000.0, 10, 100, 10, 12, 60, 1),  # 0.2 ms rounds to 0: still one sample each side
]


@pytest.mark.parametrize(("fs", "pre", "n", "bs", "be", "end", "m"), _GEOMETRY)
def test_epoch_is_cut_baselined_and_blanked_with_a_straight_line(
    fs: float, pre: int, n: int, bs: int, be: int, end: int, m: int
) -> None:
    x = _noisy(3, n)
    before = x.copy()
    xe, got_bs, got_be, got_end, extra = _analyzer()._prepare(x, fs, pre)
    assert (got_bs, got_be, got_end) == (bs, be, end)
    assert extra is None
    assert xe.shape == (3, end) and xe.dtype == np.float64
    np.testing.assert_allclose(xe, _reference(x, bs, be, end, m), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(x, before)  # the caller's samples are untouched


def test_pre_stimulus_mean_is_removed_per_row_and_outside_samples_kept() -> None:
    """Each row loses its own pre-blank mean: samples after the blank are x - mean(x[:bs]) exactly."""
    x = _noisy(2, 1400, seed=5)
    xe, bs, be, end, _ = _analyzer()._prepare(x, 20000.0, 200)
    for r in range(2):
        base = x[r, :198].mean()
        np.testing.assert_allclose(xe[r, :198], x[r, :198] - base, rtol=0, atol=1e-9)
        np.testing.assert_allclose(xe[r, 230:1200], x[r, 230:1200] - base, rtol=0, atol=1e-9)
        assert abs(xe[r, :198].mean()) < 1e-9


def test_blank_line_joins_four_sample_means_at_20khz() -> None:
    """At 20 kHz the line runs from the mean of samples 194..197 to that of 230..233 (baselined)."""
    x = np.zeros((1, 1400))
    x[0, :198] = 10.0  # baseline 10 -> 0 after removal
    x[0, 194:198] = [10.0, 14.0, 18.0, 22.0]  # mean 16, so the baseline is (193*10 + 64) / 198
    x[0, 198:230] = 5000.0  # the artifact
    x[0, 230:234] = [40.0, 44.0, 48.0, 52.0]  # mean 46
    x[0, 234:] = 30.0
    base = (194 * 10.0 + 64.0) / 198
    xe, *_ = _analyzer()._prepare(x, 20000.0, 200)
    left, right = 16.0 - base, 46.0 - base
    steps = np.arange(1, 33) / 33.0
    np.testing.assert_allclose(xe[0, 198:230], left + (right - left) * steps, rtol=0, atol=1e-9)
    assert xe[0, 197] == pytest.approx(22.0 - base) and xe[0, 230] == pytest.approx(40.0 - base)


def test_onset_at_first_sample_blanks_from_zero_without_baseline() -> None:
    """With no pre-stimulus part nothing is subtracted; the blank (samples 0..29 at 20 kHz) is
    filled flat with the mean of the 4 samples after it."""
    x = _noisy(2, 1200, seed=2)
    xe, bs, be, end, extra = _analyzer()._prepare(x, 20000.0, 0)
    assert (bs, be, end, extra) == (0, 30, 1000, None)
    assert np.isfinite(xe).all()
    np.testing.assert_allclose(xe[:, 30:], x[:, 30:1000], rtol=0, atol=0)
    np.testing.assert_allclose(xe[:, :30], np.repeat(x[:, 30:34].mean(axis=1, keepdims=True), 30, axis=1), atol=1e-9)


def test_one_sample_before_the_blank_is_the_baseline() -> None:
    """Onset at sample 1 (20 kHz): the blank starts at 1, so sample 0 alone is the baseline."""
    x = _noisy(2, 1200, seed=4)
    xe, bs, be, end, _ = _analyzer()._prepare(x, 20000.0, 1)
    assert (bs, be, end) == (1, 31, 1001)
    np.testing.assert_allclose(xe[:, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(xe[:, 31:], x[:, 31:1001] - x[:, :1], rtol=0, atol=1e-9)


def test_zero_blank_still_replaces_one_sample() -> None:
    a = EpochAnalyzer(Settings({"analysis.artifact_blank_ms": 0.0}))
    x = _noisy(1, 1400, seed=6)
    xe, bs, be, end, _ = a._prepare(x, 20000.0, 200)
    assert (bs, be) == (198, 201)
    np.testing.assert_allclose(xe, _reference(x, 198, 201, 1200, 4), rtol=1e-12, atol=1e-9)


# (rate, onset index, samples, other onset) -> other blank [a, b) and endpoint average length
_OTHERS = [
    (20000.0, 200, 1400, 600, 598, 630, 4),
    (20000.0, 200, 1400, 0, 0, 30, 4),  # at the very start: nothing before it to lead into
    (20000.0, 200, 1400, 1190, 1188, 1200, 4),  # runs past the epoch end: clipped there
    (25005.0, 250, 1600, 1000, 997, 1038, 5),  # 0.1 ms = 2.5005 -> 3 samples, 1.5 ms = 37.5 -> 38
    (3001.0, 30, 200, 100, 100, 105, 1),  # 0.1 ms = 0.3 -> none, 1.5 ms = 4.5015 -> 5
    (500.0, 5, 40, 10, 10, 11, 1),  # 1.5 ms = 0.75 sample -> 1
]


@pytest.mark.parametrize(("fs", "pre", "n", "onset", "a", "b", "m"), _OTHERS)
def test_other_onsets_are_blanked_in_their_own_row_and_masked(
    fs: float, pre: int, n: int, onset: int, a: int, b: int, m: int
) -> None:
    x = _noisy(3, n, seed=9)
    an = _analyzer()
    bs, be, end = an._geometry(fs, pre, n)
    xe, *_, extra = an._prepare(x, fs, pre, [[], [onset], []])
    want_mask = np.zeros((3, end), dtype=bool)
    want_mask[1, a:b] = True
    assert extra is not None and extra.dtype == np.bool_
    np.testing.assert_array_equal(extra, want_mask)
    want = _reference(x, bs, be, end, m, blanks=[(1, a, b)])
    np.testing.assert_allclose(xe, want, rtol=1e-12, atol=1e-9)


def test_single_row_other_onset_is_blanked() -> None:
    x = _noisy(1, 1400, seed=11)
    xe, bs, be, end, extra = _analyzer()._prepare(x, 20000.0, 200, [[700]])
    np.testing.assert_array_equal(np.flatnonzero(extra[0]), np.arange(698, 730))
    np.testing.assert_allclose(xe, _reference(x, 198, 230, 1200, 4, blanks=[(0, 698, 730)]), rtol=1e-12, atol=1e-9)


def test_several_onsets_in_several_rows() -> None:
    x = _noisy(2, 1400, seed=12)
    xe, bs, be, end, extra = _analyzer()._prepare(x, 20000.0, 200, [[500, 900], [1100]])
    want_mask = np.zeros((2, 1200), dtype=bool)
    want_mask[0, 498:530] = want_mask[0, 898:930] = want_mask[1, 1098:1130] = True
    np.testing.assert_array_equal(extra, want_mask)
    blanks = [(0, 498, 530), (0, 898, 930), (1, 1098, 1130)]
    np.testing.assert_allclose(xe, _reference(x, 198, 230, 1200, 4, blanks=blanks), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("onset", [1202, 1250])
def test_onsets_at_or_beyond_the_epoch_end_change_nothing(onset: int) -> None:
    x = _noisy(1, 1400, seed=13)
    xe, bs, be, end, extra = _analyzer()._prepare(x, 20000.0, 200, [[onset]])
    assert extra is not None and not extra.any() and extra.shape == (1, 1200)
    np.testing.assert_allclose(xe, _reference(x, 198, 230, 1200, 4), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("others", [None, [[], []], [(), ()]])
def test_no_other_onsets_means_no_mask(others) -> None:
    x = _noisy(2, 1400, seed=14)
    xe, bs, be, end, extra = _analyzer()._prepare(x, 20000.0, 200, others)
    assert extra is None
    np.testing.assert_allclose(xe, _reference(x, 198, 230, 1200, 4), rtol=1e-12, atol=1e-9)


def test_display_waveform_is_the_band_pass_of_the_prepared_epoch() -> None:
    """``filtered`` = zero-phase 10 Hz - 3 kHz band-pass (odd padding of 10 ms) of the prepared
    epoch, less its mean from 0.5 ms to the blank start."""
    fs = 20000.0
    x = _noisy(1, 1400, seed=15)[0]
    x[200:230] += 3000.0
    sos = sps.butter(2, [10.0, 3000.0], btype="bandpass", fs=fs, output="sos")
    prepared = _reference(x[None, :], 198, 230, 1200, 4)[0]
    y = sps.sosfiltfilt(sos, prepared, padtype="odd", padlen=200)
    y -= y[10:198].mean()
    got = _analyzer().filtered(x, fs, 200)
    np.testing.assert_allclose(got, y, rtol=1e-9, atol=1e-7)
    other = _analyzer().filtered(x, fs, 200, other_onsets=[700])
    prepared = _reference(x[None, :], 198, 230, 1200, 4, blanks=[(0, 698, 730)])[0]
    y = sps.sosfiltfilt(sos, prepared, padtype="odd", padlen=200)
    np.testing.assert_allclose(other, y - y[10:198].mean(), rtol=1e-9, atol=1e-7)
