"""The direct measurement's peak times and amplitude, as ``EpochAnalysis`` reports them.

The direct measurement (``EpochAnalyzer._direct``) takes the most positive and the most
negative point of the response window, each refined by a parabola through it and its two
neighbours, and reports their times after the stimulus (``max_ms``, ``min_ms``) and their
difference (the amplitude, never below 0). The phases here are far apart Gaussians
placed between samples at 5 kHz (0.2 ms a sample), so the true extreme lies a known
fraction of a sample from the nearest one: the refined times must find it to well within a
sample, on the right side of the sample.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import Side, Site, Source, Stimulus
from app.settings import Settings

FS = 5000.0
PRE, N = 50, 300  # 10 ms before the onset, 60 ms in all
SAMPLE_MS = 1000.0 / FS
STIM = Stimulus(0, 1.0, Site.VAGUS, Side.L, Source.PROBE, 1.0, 1.0)


def _analyse(x: np.ndarray):
    return EpochAnalyzer(Settings()).analyse(x, FS, PRE, STIM, "EMG L")


def _two_phases(t_pos: float, t_neg: float) -> np.ndarray:
    """A 300 µV positive phase at ``t_pos`` and a 250 µV negative one at ``t_neg`` (ms after
    the onset), each 0.5 ms wide (sigma), 3 ms apart or more so neither bends the other."""
    t = (np.arange(N) - PRE) * SAMPLE_MS
    return 300.0 * np.exp(-0.5 * ((t - t_pos) / 0.5) ** 2) - 250.0 * np.exp(-0.5 * ((t - t_neg) / 0.5) ** 2)


@pytest.mark.parametrize(
    ("t_pos", "t_neg"),
    [
        (6.0 + 0.37 * SAMPLE_MS, 10.0 - 0.41 * SAMPLE_MS),  # the maximum after a sample, the minimum before one
        (7.0 - 0.30 * SAMPLE_MS, 11.0 + 0.35 * SAMPLE_MS),  # and the other way round
        (12.0 + 0.40 * SAMPLE_MS, 8.0 + 0.25 * SAMPLE_MS),  # the negative phase first
    ],
)
def test_the_peak_times_are_refined_between_samples(t_pos, t_neg):
    """``max_ms`` and ``min_ms`` are the times after the stimulus of the two phases' tops,
    within 0.02 ms (a tenth of a sample): the parabola's offset is added to the sample's
    time, not taken away, and the times count from the onset in ms."""
    a = _analyse(_two_phases(t_pos, t_neg))
    assert a.method == "direct" and a.measurement.valid and a.measurement.response
    assert a.max_ms == pytest.approx(t_pos, abs=0.02)
    assert a.min_ms == pytest.approx(t_neg, abs=0.02)
    assert a.measurement.amplitude_uV == pytest.approx(550.0, rel=0.02)


def test_the_peak_times_move_with_the_response():
    """The same response 1.3 ms later: both reported times are 1.3 ms later."""
    early = _analyse(_two_phases(6.1, 9.5))
    late = _analyse(_two_phases(7.4, 10.8))
    assert late.max_ms - early.max_ms == pytest.approx(1.3, abs=0.02)
    assert late.min_ms - early.min_ms == pytest.approx(1.3, abs=0.02)


def test_a_quiet_epoch_reports_its_small_amplitude_as_it_is():
    """An epoch of 0.1 µV noise has a peak-to-peak well below 1 µV: reported as measured
    (valid, no response), not raised to any floor; a flat epoch measures 0."""
    quiet = _analyse(np.random.default_rng(3).normal(0.0, 0.1, N))
    assert quiet.measurement.valid and not quiet.measurement.response
    assert 0.05 < quiet.measurement.amplitude_uV < 0.9
    flat = _analyse(np.zeros(N))
    assert flat.measurement.valid and not flat.measurement.response
    assert flat.measurement.amplitude_uV == 0.0
