"""The noise estimate of a batch of epochs (``EpochAnalyzer._noise``, ``_noise_of``) and the
noise band it is measured in (``_noise_band``), checked on hand-made arrays.

The noise is the robust RMS of the response-band copy over the reference stretches, times
the band's scale back to the peak band. The reference is the pre-stimulus part (from the
filter edge guard to 1 ms before the blank) and the part after each row's response window;
when other stimuli fall in the epoch, the blanks of those stimuli (and 1 ms after an
earlier one, and everything from a later one on) are left out. A reference shorter than
8 samples gives no estimate (0). Expected values are built here by slicing the arrays by
hand at the sample indices worked out in the comments.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from app.analysis.epoch import EpochAnalyzer, _Batch
from app.analysis.noise import NoiseBand, robust_rms
from app.settings import Settings

# An epoch at 7.5 kHz: onset at sample 75 (10 ms), blank from 74, epoch end 450 (50 ms),
# filter edge guard 4 samples (0.5 ms), noise guard 8 samples (1 ms: 7.5 rounds to 8).
FS = 7500.0
PRE, BS, BE, END, G = 75, 74, 86, 450, 4
PRE_REF = slice(4, 66)  # from the edge guard to 8 samples before the blank
SE_RLN, SE_VAGUS = 187, 263  # 15 ms and 25 ms after the onset


def _batch(se, extra=None, *, g=G, bs=BS, pre=PRE, end=END, fs=FS) -> _Batch:
    k = len(se)
    return _Batch(
        fs=fs,
        pre=pre,
        bs=bs,
        be=BE,
        end=end,
        g=g,
        z=np.zeros((k, end)),
        extra=extra,
        se=np.array(se, dtype=np.int64),
        end_ms=[15.0] * k,
        background=None,
    )


def _copy(k: int, seed: int, loud_outside=()) -> np.ndarray:
    """A response-band copy of unit noise; ``loud_outside``: per row, the reference
    slices; every other sample is made 20 times louder, so it shows if it is counted."""
    rng = np.random.default_rng(seed)
    hn = rng.normal(0.0, 1.0, size=(k, END))
    for i, slices in enumerate(loud_outside):
        quiet = np.zeros(END, dtype=bool)
        for s in slices:
            quiet[s] = True
        hn[i, ~quiet] *= 20.0
    return hn


def _expected(hn_row: np.ndarray, slices, scale: float) -> float:
    ref = np.concatenate([hn_row[s] for s in slices])
    return float(robust_rms(ref[None, :])[0]) * scale


def test_noise_band_scale_is_that_of_the_peak_filter_designed_by_hand():
    """At 20 kHz the peak band is a 2nd-order 10 Hz - 3 kHz band-pass followed by a 4th-order
    1 kHz low-pass; the scale is the one ``NoiseBand`` gives for that filter."""
    fs = 20000.0
    bp = sps.butter(2, [10.0, 3000.0], btype="bandpass", fs=fs, output="sos")
    lp = sps.butter(4, 1000.0, fs=fs, output="sos")
    _hp, scale = EpochAnalyzer(Settings())._noise_band(fs)
    assert scale == NoiseBand(fs, np.vstack([bp, lp])).scale
    assert scale > 1.1  # the 150 Hz high-pass takes away a noticeable share of a 1 kHz band


def test_noise_band_scale_restores_white_noise_rms_of_the_peak_band():
    """White noise through the peak band has this scale times the RMS it has after the
    noise high-pass as well (within 3 %)."""
    fs = 20000.0
    an = EpochAnalyzer(Settings())
    hp, scale = an._noise_band(fs)
    x = np.random.default_rng(3).normal(0.0, 1.0, size=(1, 1 << 17))
    peak = an._filter(fs, "peak")(x)
    ratio = np.sqrt(np.mean(peak[:, 2000:-2000] ** 2) / np.mean(hp(peak)[:, 2000:-2000] ** 2))
    assert abs(ratio / scale - 1.0) < 0.03


def test_at_a_low_rate_the_peak_band_has_no_extra_low_pass():
    """At 800 Hz the band-pass upper corner is capped at 360 Hz, below the 1 kHz peak low-pass."""
    fs = 800.0
    bp = sps.butter(2, [10.0, 360.0], btype="bandpass", fs=fs, output="sos")
    _hp, scale = EpochAnalyzer(Settings())._noise_band(fs)
    assert scale == NoiseBand(fs, bp).scale


def test_noise_band_is_designed_once_per_rate():
    an = EpochAnalyzer(Settings())
    hp1, s1 = an._noise_band(FS)
    hp2, s2 = an._noise_band(7500)  # the same rate given as an int
    assert hp2 is hp1 and s2 == s1
    hp3, _s3 = an._noise_band(20000.0)
    assert hp3 is not hp1
    assert an._noise_band(FS)[0] is hp1


def test_noise_copy_is_the_150_hz_high_pass_applied_forwards_and_backwards():
    """``_noise`` returns the copy high-passed at 150 Hz (2nd order, zero phase, odd
    extension of 10 ms = 75 samples) and the noise measured on it."""
    an = EpochAnalyzer(Settings())
    x = np.random.default_rng(5).normal(0.0, 30.0, size=(2, END)) + np.linspace(0.0, 500.0, END)
    b = _batch([SE_RLN, SE_VAGUS])
    noise, hn = an._noise(b, x)
    sos = sps.butter(2, 150.0, btype="highpass", fs=FS, output="sos")
    want = sps.sosfiltfilt(sos, x, axis=1, padtype="odd", padlen=75)
    np.testing.assert_allclose(hn, want, rtol=1e-9, atol=1e-9)
    scale = an._noise_band(FS)[1]
    np.testing.assert_allclose(
        noise,
        [
            _expected(want[0], [PRE_REF, slice(SE_RLN, END)], scale),
            _expected(want[1], [PRE_REF, slice(SE_VAGUS, END)], scale),
        ],
        rtol=1e-12,
    )


def test_noise_copy_at_a_low_rate_pads_by_at_least_8_samples():
    """At 800 Hz 10 ms is 8 samples: the zero-phase high-pass pads by 8."""
    fs = 800.0
    an = EpochAnalyzer(Settings())
    x = np.random.default_rng(6).normal(0.0, 30.0, size=(1, 60)) + np.linspace(0.0, 300.0, 60)
    b = _batch([50], g=0, bs=8, pre=8, end=60, fs=fs)
    _noise, hn = an._noise(b, x)
    sos = sps.butter(2, 150.0, btype="highpass", fs=fs, output="sos")
    np.testing.assert_allclose(hn, sps.sosfiltfilt(sos, x, axis=1, padtype="odd", padlen=8), rtol=1e-9, atol=1e-9)


def test_noise_comes_from_before_the_blank_and_after_each_rows_window():
    """Three rows, two window ends (15 ms and 25 ms): each row's noise is the robust RMS of
    samples 4..65 and from its window end to 450, times the band scale; the louder samples
    in between are not counted."""
    an = EpochAnalyzer(Settings())
    se = [SE_RLN, SE_VAGUS, SE_RLN]
    refs = [[PRE_REF, slice(s, END)] for s in se]
    hn = _copy(3, 11, refs)
    noise = an._noise_of(_batch(se), hn)
    scale = an._noise_band(FS)[1]
    want = [_expected(hn[i], refs[i], scale) for i in range(3)]
    np.testing.assert_allclose(noise, want, rtol=1e-12)
    assert np.all((noise > 0.8 * scale) & (noise < 1.25 * scale))  # unit noise, not the loud part


def test_a_reference_of_8_samples_is_enough_and_7_is_not():
    """No pre-stimulus part (onset at 0): the reference is what follows the window, 8 samples
    in the first row (noise measured), 7 in the second (no estimate: 0)."""
    an = EpochAnalyzer(Settings())
    hn = _copy(2, 12)
    noise = an._noise_of(_batch([END - 8, END - 7], g=0, bs=0, pre=0), hn)
    scale = an._noise_band(FS)[1]
    assert noise[0] == _expected(hn[0], [slice(END - 8, END)], scale)
    assert noise[0] > 0.0
    assert noise[1] == 0.0


def test_other_stimuli_in_the_epoch_are_left_out_of_the_reference():
    """Row 0: an earlier stimulus blanked at 20..27 and a later one at 300..311. Its reference
    starts 8 samples after the earlier blank (36..65) and stops at the later one (187..299).
    Row 1 (same window end, nothing else in it) and row 2 (later window end, nothing else)
    keep the plain reference."""
    an = EpochAnalyzer(Settings())
    extra = np.zeros((3, END), dtype=bool)
    extra[0, 20:28] = True
    extra[0, 300:312] = True
    se = [SE_RLN, SE_RLN, SE_VAGUS]
    refs = [[slice(36, 66), slice(SE_RLN, 300)], [PRE_REF, slice(SE_RLN, END)], [PRE_REF, slice(SE_VAGUS, END)]]
    hn = _copy(3, 13, refs)
    noise = an._noise_of(_batch(se, extra), hn)
    scale = an._noise_band(FS)[1]
    np.testing.assert_allclose(noise, [_expected(hn[i], refs[i], scale) for i in range(3)], rtol=1e-12)


def test_with_other_stimuli_8_reference_samples_are_enough_and_7_are_not():
    """An earlier blank at sample 60 leaves nothing before the stimulus (60 + 1 + 8 is past
    66); a later blank 8 (row 0) or 7 (row 1) samples after the window end leaves that many."""
    an = EpochAnalyzer(Settings())
    extra = np.zeros((2, END), dtype=bool)
    extra[:, 60] = True
    extra[0, SE_RLN + 8] = True
    extra[1, SE_RLN + 7] = True
    hn = _copy(2, 14)
    noise = an._noise_of(_batch([SE_RLN, SE_RLN], extra), hn)
    scale = an._noise_band(FS)[1]
    assert noise[0] == _expected(hn[0], [slice(SE_RLN, SE_RLN + 8)], scale)
    assert noise[0] > 0.0
    assert noise[1] == 0.0
