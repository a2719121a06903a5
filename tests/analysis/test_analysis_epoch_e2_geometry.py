"""Where an epoch's artifact blank and analysis window fall, in samples, at several sample
rates (``EpochAnalyzer._geometry``), checked against values worked out by hand from the
default settings: the blank starts 0.1 ms before the onset and lasts 1.5 ms after it
(``analysis.artifact_blank_ms``), the analysis window ends 50 ms after the onset
(``analysis.window_ms``) or at the end of the samples, whichever is first."""

from __future__ import annotations

import pytest

from app.analysis.epoch import EpochAnalyzer
from app.settings import Settings


@pytest.mark.parametrize(
    ("fs", "pre", "n", "expected"),
    [
        # 10 kHz, 10 ms before the onset: blank 99..115 (1 sample lead, 15 after), end 100 + 500
        (10000.0, 100, 1000, (99, 115, 600)),
        # 17 kHz: lead 1.7 -> 2 samples, blank 25.5 -> 26 samples (round half to even), window 850
        (17000.0, 170, 2000, (168, 196, 1020)),
        # 15 kHz: lead 1.5 -> 2 samples, blank 22.5 -> 22 samples (round half to even), window 750
        (15000.0, 150, 2000, (148, 172, 900)),
        # 20 kHz: lead 2, blank 30, window 1000 samples
        (20000.0, 200, 3000, (198, 230, 1200)),
    ],
)
def test_blank_and_window_in_samples_at_several_rates(fs, pre, n, expected):
    an = EpochAnalyzer(Settings())
    assert an._geometry(fs, pre, n) == expected


def test_an_epoch_starting_at_the_onset_has_no_pre_stimulus_part():
    """Onset at sample 0: the blank starts at 0 (nothing before it), ends 15 samples later."""
    an = EpochAnalyzer(Settings())
    assert an._geometry(10000.0, 0, 1000) == (0, 15, 500)


def test_one_sample_before_the_onset_stays_outside_the_blank():
    """Onset at sample 1: the 0.1 ms lead would start the blank at 0, but sample 0 is kept
    as the pre-stimulus level, so the blank starts at 1."""
    an = EpochAnalyzer(Settings())
    assert an._geometry(10000.0, 1, 1000) == (1, 16, 501)


def test_a_short_epoch_ends_with_its_samples_and_the_blank_leaves_one_sample():
    """110 samples at 10 kHz, onset at 100: the epoch ends at 110 (not 600) and the blank
    (to 115) is cut to end at 109, leaving the last sample as the window."""
    an = EpochAnalyzer(Settings())
    assert an._geometry(10000.0, 100, 110) == (99, 109, 110)
    # 108 samples: the blank ends at 107
    assert an._geometry(10000.0, 100, 108) == (99, 107, 108)


def test_a_zero_blank_still_blanks_the_onset_sample():
    """With ``analysis.artifact_blank_ms`` 0 the blank still covers the onset sample itself."""
    an = EpochAnalyzer(Settings({"analysis.artifact_blank_ms": 0.0}))
    assert an._geometry(10000.0, 100, 1000) == (99, 101, 600)


def test_geometry_follows_the_window_setting():
    """A 20 ms window at 10 kHz ends 200 samples after the onset."""
    an = EpochAnalyzer(Settings({"analysis.window_ms": 20.0}))
    assert an._geometry(10000.0, 100, 1000) == (99, 115, 300)
