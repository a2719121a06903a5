"""The verdict ``EpochAnalyzer`` gives one epoch (``EpochAnalysis``), as the record and the
display show it: a valid epoch whose response window holds no nerve-like first phase says
why there is no response; an invalid epoch keeps its noise, threshold, window, reason text
and method (the learned shape's fit, or the direct measurement) but no peak times; a valid
response reports the times of its most positive and most negative points."""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings
from emg_synth import EpochSpec, ResponseSpec, make_epoch, site_sequence

FS = 20000.0
PRE = 200  # 10 ms before the stimulus
T_MS = (np.arange(1200) - PRE) * 1000.0 / FS  # 60 ms epochs


def _stim(i: int = 0, t_s: float = 1.0) -> Stimulus:
    return Stimulus(i, t_s, Site.RLN, Side.L, Source.PROBE, 1.0, 1.0)  # RLN: window 1.5-15 ms


def _bump(centre_ms: float, sigma_ms: float, seed: int = 0) -> np.ndarray:
    """A 400 uV positive Gaussian phase on 1 uV white noise."""
    noise = np.random.default_rng(seed).normal(0.0, 1.0, len(T_MS))
    return 400.0 * np.exp(-0.5 * ((T_MS - centre_ms) / sigma_ms) ** 2) + noise


# ----------------------------------------------------------------------------- no response, and why


def test_a_phase_still_rising_at_the_end_of_the_window_is_no_response_and_says_so():
    """A large deflection that peaks after the RLN window (15 ms) is measured (valid, its
    amplitude above the threshold) but is no response: the detail says the peak is at the
    window's end, and there is no latency or onset."""
    a = EpochAnalyzer(Settings()).analyse(_bump(16.0, 0.8), FS, PRE, _stim(), "EMG L")
    m = a.measurement
    assert m.valid and m.invalid_reason is None
    assert not m.response
    assert m.amplitude_uV > a.threshold_uV
    assert m.latency_ms is None and m.onset_latency_ms is None
    assert a.detail == "peak at the end of the response window"
    assert a.method == "direct"


def test_a_phase_wider_than_a_nerve_response_is_no_response_and_says_how_wide():
    """A 4 ms (sigma) wave inside the window, its phase wider than ``analysis.max_phase_ms``
    (6 ms): valid, no response, and the detail gives the phase width."""
    a = EpochAnalyzer(Settings()).analyse(_bump(8.0, 4.0), FS, PRE, _stim(), "EMG L")
    m = a.measurement
    assert m.valid and not m.response
    assert m.amplitude_uV > a.threshold_uV
    assert m.latency_ms is None and m.onset_latency_ms is None
    assert a.detail.startswith("phase ") and a.detail.endswith(" ms wide: not a nerve response"), a.detail
    width = float(a.detail.split()[1])
    assert width > 6.0


# ----------------------------------------------------------------------------- invalid epochs


def _drowned(analyzer: EpochAnalyzer):
    """A 150 uV response in 25 uV white noise: above the 100 uV threshold but less than
    ``analysis.min_snr`` (10) times the noise RMS."""
    spec = ResponseSpec(150.0, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)
    x, pre, _ = make_epoch(EpochSpec(fs=FS, response=spec, noise_uV=25.0, seed=10, t0_s=12.0))
    return analyzer.analyse(x, FS, pre, _stim(5, 12.0), "EMG L")


def test_a_response_that_does_not_stand_out_of_the_noise_is_invalid_with_its_noise_and_reason():
    a = _drowned(EpochAnalyzer(Settings()))
    m = a.measurement
    assert not m.valid and m.invalid_reason is InvalidReason.ARTIFACT
    assert not m.response and m.amplitude_uV is None and m.latency_ms is None
    # the noise that made it invalid is reported, and the detail names both numbers
    assert a.noise_uV is not None and 5.0 < a.noise_uV < 30.0
    assert a.detail.endswith(f" uV does not stand out of {a.noise_uV:.1f} uV RMS noise"), a.detail
    amp = float(a.detail.split(" uV")[0])
    assert a.threshold_uV <= amp < 10.0 * a.noise_uV
    assert a.threshold_uV == 100.0  # the event threshold, kept with the invalid epoch
    assert a.method == "direct"
    assert a.max_ms is None and a.min_ms is None
    assert a.window_ms == pytest.approx((1.5, 15.0), abs=0.05)


def test_a_baseline_step_is_invalid_and_reports_the_step_and_the_noise():
    """A 1000 uV level shift that lasts to the end of the epoch (electrode moved) is no
    response: invalid, the detail gives the step, the noise is reported."""
    x = np.random.default_rng(4).normal(0.0, 5.0, len(T_MS)) + np.where(T_MS > 5.0, 1000.0, 0.0)
    a = EpochAnalyzer(Settings()).analyse(x, FS, PRE, _stim(), "EMG L")
    assert not a.measurement.valid and a.measurement.invalid_reason is InvalidReason.ARTIFACT
    assert a.detail.startswith("baseline step of ") and a.detail.endswith(" uV"), a.detail
    assert 900.0 < float(a.detail.split()[3]) < 1100.0
    assert a.noise_uV is not None and a.noise_uV > 0.0
    assert a.threshold_uV == 100.0
    assert a.method == "direct"


@pytest.mark.parametrize("case", ["no channel", "no finite sample"])
def test_an_invalid_epoch_without_any_noise_reports_no_noise_rather_than_zero(case):
    """Nothing to measure noise on (a flat epoch on no channel, or an epoch of NaN): the
    noise is unknown (None), never a noise of 0 uV."""
    an = EpochAnalyzer(Settings())
    if case == "no channel":
        a = an.analyse(np.zeros(len(T_MS)), FS, PRE, _stim(), None)
        assert a.measurement.invalid_reason is InvalidReason.NO_CHANNEL
    else:
        a = an.analyse(np.full(len(T_MS), np.nan), FS, PRE, _stim(), "EMG L")
        assert not a.measurement.valid
    assert a.noise_uV is None
    assert a.detail != ""
    assert a.threshold_uV == 100.0


def test_an_invalid_epoch_measured_with_the_learned_shape_says_so():
    """After the site's shape is learned, the drowned response is fitted with it (its noise
    is below 50 times the amplitude) and then found not to stand out of the noise: invalid,
    and the method says the learned shape measured it."""
    analyzer = EpochAnalyzer(Settings())
    shape = ResponseSpec(400.0, 4.0, polarity=1, width_ms=0.4, ratio=0.8, gap_ms=1.2)
    for i, spec in enumerate(site_sequence(np.random.default_rng(3), FS, shape, 3, noise_uV=3.0, t0_s=8.0)):
        x, pre, _ = make_epoch(spec)
        analyzer.analyse(x, FS, pre, _stim(i, spec.t0_s), "EMG L")
    a = _drowned(analyzer)
    assert not a.measurement.valid and a.measurement.invalid_reason is InvalidReason.ARTIFACT
    assert a.method == "template"
    assert "does not stand out of" in a.detail
    assert a.noise_uV is not None and a.noise_uV > 0.0


# ----------------------------------------------------------------------------- a response


def test_a_valid_response_reports_the_times_of_its_two_phases():
    """A positive phase at 5 ms and a negative one at 9 ms: ``max_ms`` and ``min_ms``."""
    t = T_MS
    x = 300.0 * np.exp(-0.5 * ((t - 5.0) / 0.4) ** 2) - 250.0 * np.exp(-0.5 * ((t - 9.0) / 0.5) ** 2)
    a = EpochAnalyzer(Settings()).analyse(x, FS, PRE, _stim(), "EMG L")
    assert a.measurement.valid and a.measurement.response
    assert a.max_ms == pytest.approx(5.0, abs=0.05)
    assert a.min_ms == pytest.approx(9.0, abs=0.05)
