"""The direct measurement's times and its background statistics (``EpochAnalyzer._direct``).

- ``max_ms`` / ``min_ms`` (the times of the most positive and most negative points of the
  response window, shown beside the measurement) are on the same clock as the latency:
  when the first major peak is the window's maximum (or minimum), its latency is that time.
- Whether a mains component is modelled depends on its chi-square, which counts the
  samples of the fit as correlated over the peak band. At a sample rate where the
  band-pass is capped at 45 % of the rate (below 2 kHz x ``analysis.peak_lowpass_hz``),
  the peak band is that cap: a low-pass setting above it changes nothing at all.
"""

from __future__ import annotations

import numpy as np
import pytest
from emg_synth import ResponseSpec, response_waveform

from app.analysis.epoch import EpochAnalyzer
from app.model import Side, Site, Source, Stimulus
from app.settings import Settings


def _stim() -> Stimulus:
    return Stimulus(0, 1.0, Site.VAGUS, Side.L, Source.PROBE, 1.0, 1.0)


@pytest.mark.parametrize("fs, pre", [(20000.0, 200), (5000.0, 50)])
@pytest.mark.parametrize("polarity", [1, -1])
def test_the_time_of_the_extreme_that_is_the_first_major_peak_is_its_latency(fs, pre, polarity):
    n = pre + int(50 * fs / 1000)
    t_ms = (np.arange(n) - pre) * 1000.0 / fs
    spec = ResponseSpec(300.0, 12.0, polarity=polarity)
    x = response_waveform(spec, t_ms) + np.random.default_rng(2).normal(0.0, 1.0, n)
    a = EpochAnalyzer(Settings()).analyse(x, fs, pre, _stim(), "EMG L")
    m = a.measurement
    assert m.response and a.method == "direct"
    first, second = (a.max_ms, a.min_ms) if polarity > 0 else (a.min_ms, a.max_ms)
    assert first == pytest.approx(m.latency_ms, abs=1e-9)
    assert first == pytest.approx(12.0, abs=0.02)
    assert 13.5 < second < 14.3  # the second phase, 1.8 ms later (its centre; the wider phase peaks a bit later)


def test_a_peak_lowpass_setting_above_the_capped_band_changes_no_measurement():
    """At 2 kHz the band stops at 900 Hz: a 1 kHz low-pass setting and a 900 Hz one measure
    the same. 100 Hz hum of 6-9 µV in 5 µV noise: around 7 µV its chi-square crosses the
    level at which it is modelled (which halves the amplitude measured here)."""
    fs, pre, n = 2000.0, 20, 120
    t = (np.arange(n) - pre) / fs
    got = {}
    for peak_hz in (900.0, 1000.0):
        rows = []
        for hum_uV in np.geomspace(6.0, 9.0, 16):
            x = np.random.default_rng(11).normal(0.0, 5.0, n) + hum_uV * np.sin(2 * np.pi * 100.0 * t + 0.4)
            an = EpochAnalyzer(Settings({"analysis.peak_lowpass_hz": peak_hz}))
            a = an.analyse(x, fs, pre, _stim(), "EMG L")
            rows.append((a.measurement.amplitude_uV, a.noise_uV, a.max_ms, a.min_ms))
        got[peak_hz] = rows
    assert got[900.0] == got[1000.0]
    amps = [r[0] for r in got[900.0]]
    assert max(amps) > 1.5 * min(amps)  # the hum is modelled in some rows and not in others
