"""``EpochAnalyzer.analyse_batch`` end to end: non-finite samples, the other stimuli's blanks
in the saturation check, the stretch the noise is measured on, and how much of the end of
the window the baseline step looks at.

Non-finite samples are taken as 0 µV before anything is measured (the epoch is invalid,
``artifact``, but its noise is still reported). The noise reference runs from 0.5 ms after
the epoch's first sample (the filter's edge) to 1 ms before the blank, plus what follows
the response window; fewer than 8 samples measure no noise (0). The baseline step compares
the median of the last 5 ms of the window (rounded to samples, at least one) with the
median of the pre-stimulus part.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings


def _stim(j: int = 0, t_s: float = 1.0) -> Stimulus:
    return Stimulus(j, t_s, Site.VAGUS, Side.L, Source.PROBE, 1.0, 1.0)


def _gauss(t_ms: np.ndarray, amp: float, centre: float, sigma: float = 0.5) -> np.ndarray:
    return amp * np.exp(-0.5 * ((t_ms - centre) / sigma) ** 2)


_FS, _PRE, _N = 5000.0, 50, 300
_T = (np.arange(_N) - _PRE) / _FS * 1000.0


# ------------------------------------------------------------------ non-finite samples


def test_non_finite_samples_are_measured_as_zero():
    """A run of NaN samples before the stimulus makes the epoch invalid (``artifact``, non-finite
    samples); the noise and the (noise-raised) threshold it reports are exactly those of the
    same epoch with zeros in place of the NaN samples, and a clean epoch in the same batch is
    measured as on its own."""
    settings = Settings({"analysis.auto_threshold": True, "analysis.min_snr": 50.0})
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 5.0, _N)
    with_nan = x.copy()
    with_nan[10:30] = np.nan
    zeros = x.copy()
    zeros[10:30] = 0.0
    clean = rng.normal(0.0, 5.0, _N) + _gauss(_T, 300.0, 8.0)

    got = EpochAnalyzer(settings).analyse_batch(
        np.stack([with_nan, clean]), _FS, _PRE, [_stim(0, 1.0), _stim(1, 2.0)], ["EMG L", "EMG L"]
    )
    want = EpochAnalyzer(settings).analyse(zeros, _FS, _PRE, _stim(0, 1.0), "EMG L")
    alone = EpochAnalyzer(settings).analyse(clean, _FS, _PRE, _stim(1, 2.0), "EMG L")

    assert got[0].measurement.invalid_reason is InvalidReason.ARTIFACT
    assert got[0].detail == "non-finite samples"
    assert want.noise_uV is not None and want.noise_uV > 0.0
    assert got[0].noise_uV == pytest.approx(want.noise_uV, rel=1e-12)
    assert got[0].threshold_uV == pytest.approx(want.threshold_uV, rel=1e-12)
    assert np.isfinite(got[0].threshold_uV)

    m = got[1].measurement
    assert m.valid and m.response, got[1].detail
    assert m.amplitude_uV == pytest.approx(alone.measurement.amplitude_uV, rel=1e-9)
    assert got[1].noise_uV == pytest.approx(alone.noise_uV, rel=1e-9)


# ------------------------------------------------------------------ saturation and other stimuli


def test_a_huge_artifact_of_another_stimulus_is_no_saturation():
    """Another stimulus at 30 ms whose artifact reaches 150 mV (beyond ``saturation_uV``) only
    inside its own blank (1.5 ms from its onset): the blank is left out of the saturation
    check as the epoch's own is, so the epoch is valid and its 300 µV response is measured."""
    rng = np.random.default_rng(8)
    x = rng.normal(0.0, 5.0, _N) + _gauss(_T, 300.0, 8.0)
    o = _PRE + 150  # 30 ms after the stimulus
    x[o : o + 8] = 150_000.0  # the 8 samples (1.5 ms at 5 kHz) of its blank
    a = EpochAnalyzer(Settings()).analyse(x, _FS, _PRE, _stim(), "EMG L", other_onsets=[o])
    m = a.measurement
    assert m.valid and m.response, a.detail
    assert m.amplitude_uV == pytest.approx(300.0, rel=0.1)

    # the control: without the other stimulus's blank the same epoch is not valid
    b = EpochAnalyzer(Settings()).analyse(x, _FS, _PRE, _stim(), "EMG L")
    assert not b.measurement.valid


# ------------------------------------------------------------------ the noise reference


@pytest.mark.parametrize(
    ("fs", "pre", "measured"),
    [
        # 5 kHz: edge 0.5 ms = 2 samples, blank from the onset, guard 1 ms = 5 samples
        (5000.0, 14, False),  # samples 2..8: 7
        (5000.0, 15, True),  # samples 2..9: 8
        # 5003 Hz: edge round(2.5015) = 3 samples, blank one sample (0.1 ms) before the onset
        (5003.0, 16, False),  # samples 3..9: 7
        (5003.0, 17, True),  # samples 3..10: 8
    ],
)
def test_the_noise_reference_leaves_out_the_filter_edge(fs, pre, measured):
    """The response window runs to the end of the epoch, so the noise is measured on the
    pre-stimulus part only: from 0.5 ms after the first sample (rounded to samples) to 1 ms
    before the blank. Seven samples there are too few (noise 0); eight are enough."""
    an = EpochAnalyzer(Settings({"analysis.response_end_vagus_ms": 50.0}))
    n = pre + int(round(50.0 * fs / 1000.0))
    x = np.random.default_rng(5).normal(0.0, 5.0, n)
    a = an.analyse(x, fs, pre, _stim(), "EMG L")
    assert a.measurement.valid, a.detail
    if measured:
        assert a.noise_uV is not None and a.noise_uV > 1.0
    else:
        assert a.noise_uV == 0.0


# ------------------------------------------------------------------ the end of the window


def test_the_step_level_is_the_median_of_the_last_5_ms():
    """At 4902 Hz the last 5 ms are round(24.51) = 25 samples. A level of 500 µV on the last 12
    of them is less than half: their median is still the baseline, no step. On the last 13
    (more than half) it is a baseline step of 500 µV."""
    fs, pre = 4902.0, 50
    n = pre + int(round(50.0 * fs / 1000.0))
    an = EpochAnalyzer(Settings())
    x = np.zeros(n)
    x[-12:] = 500.0
    a = an.analyse(x, fs, pre, _stim(), "EMG L")
    assert a.measurement.valid, a.detail
    assert "step" not in a.detail
    x[-13] = 500.0
    b = an.analyse(x, fs, pre, _stim(1, 2.0), "EMG L")
    assert b.measurement.invalid_reason is InvalidReason.ARTIFACT
    assert b.detail == "baseline step of 500 uV"


def test_at_a_low_sample_rate_the_step_level_is_the_last_sample():
    """At 200 Hz the last 5 ms are one sample: 500 µV on the sample before it is no baseline
    step, 500 µV on the last sample is."""
    fs, pre = 200.0, 4
    n = pre + 10  # the 50 ms window
    an = EpochAnalyzer(Settings())
    x = np.zeros(n)
    x[-2] = 500.0
    a = an.analyse(x, fs, pre, _stim(), "EMG L")
    assert a.measurement.valid, a.detail
    assert "step" not in a.detail
    x = np.zeros(n)
    x[-1] = 500.0
    b = an.analyse(x, fs, pre, _stim(1, 2.0), "EMG L")
    assert b.measurement.invalid_reason is InvalidReason.ARTIFACT
    assert b.detail == "baseline step of 500 uV"


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("others", [[[150]], [[150], [], [160]]])
def test_a_batch_needs_one_list_of_other_onsets_per_epoch(others):
    """Two epochs with one (or three) lists of other stimuli's onsets: refused by name, not
    measured with the lists matched to the wrong epochs."""
    x = np.random.default_rng(9).normal(0.0, 5.0, (2, _N))
    with pytest.raises(ValueError, match=re.escape("2 epochs need 2 lists of other onsets")):
        EpochAnalyzer(Settings()).analyse_batch(
            x, _FS, _PRE, [_stim(0, 1.0), _stim(1, 2.0)], ["EMG L", "EMG L"], other_onsets=others
        )
