"""How long a response window must be to be measured (``EpochAnalyzer._direct``).

The window runs from the end of the artifact blank to the site's response end. It is
measured when it lies inside the epoch (it may end exactly at the epoch's last sample) and
holds at least 4 samples; otherwise the epoch is invalid, ``artifact`` "epoch too short for
the response window". Each site of a batch has its own window: a window too short at one
site does not keep the other sites' epochs from being measured.

At 20 kHz a sample is 0.05 ms: with the RLN window ending at 5 ms, a blank of 4.8 ms leaves
4 samples, 4.9 ms leaves 2 and 5 ms none.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import InvalidReason, Side, Site, Source, Stimulus
from app.settings import Settings

FS, PRE, N = 20000.0, 200, 1200  # 10 ms before the onset, 60 ms in all
TOO_SHORT = "epoch too short for the response window"


def _stim(site: Site, index: int = 0, t_s: float = 1.0) -> Stimulus:
    return Stimulus(index, t_s, site, Side.L, Source.PROBE, 1.0, 1.0)


def _quiet(n: int = N, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 5.0, n)


def _short_rln(blank_ms: float) -> EpochAnalyzer:
    """An analyzer whose RLN window ends 5 ms after the stimulus, behind a blank of ``blank_ms``."""
    return EpochAnalyzer(Settings({"analysis.artifact_blank_ms": blank_ms, "analysis.response_end_rln_ms": 5.0}))


def test_an_epoch_that_ends_exactly_at_the_end_of_the_response_window_is_measured():
    """The vagal window ends 25 ms after the stimulus: sample 700, the epoch's length here."""
    a = EpochAnalyzer(Settings()).analyse(_quiet(PRE + 500), FS, PRE, _stim(Site.VAGUS), "EMG L")
    assert a.window_ms == (1.5, 25.0)
    m = a.measurement
    assert m.valid and m.invalid_reason is None, a.detail
    assert m.amplitude_uV is not None and 0.0 < m.amplitude_uV < 40.0
    assert a.detail != TOO_SHORT


def test_an_epoch_that_ends_one_sample_before_the_end_of_the_window_is_too_short():
    a = EpochAnalyzer(Settings()).analyse(_quiet(PRE + 499), FS, PRE, _stim(Site.VAGUS), "EMG L")
    assert not a.measurement.valid
    assert a.measurement.invalid_reason is InvalidReason.ARTIFACT and a.detail == TOO_SHORT


def test_a_response_window_of_four_samples_is_measured():
    a = _short_rln(4.8).analyse(_quiet(), FS, PRE, _stim(Site.RLN), "EMG L")
    assert a.window_ms == pytest.approx((4.8, 5.0))
    m = a.measurement
    assert m.valid and m.invalid_reason is None and a.detail == ""
    assert m.amplitude_uV is not None and 0.0 <= m.amplitude_uV < 10.0  # 0.2 ms of 5 µV noise
    assert not m.response


@pytest.mark.parametrize("blank_ms", [4.9, 5.0])  # 2 samples, none
def test_a_response_window_of_fewer_than_four_samples_is_too_short(blank_ms):
    a = _short_rln(blank_ms).analyse(_quiet(), FS, PRE, _stim(Site.RLN), "EMG L")
    m = a.measurement
    assert not m.valid and m.invalid_reason is InvalidReason.ARTIFACT
    assert a.detail == TOO_SHORT and m.amplitude_uV is None


def test_a_window_too_short_at_one_site_does_not_stop_the_other_sites_of_a_batch():
    """RLN (window ends at 5 ms, behind the 5 ms blank) and vagus (25 ms) epochs measured
    together: the RLN rows are too short, the vagal rows are measured as they are alone."""
    an = _short_rln(5.0)
    x = np.vstack([_quiet(seed=s) for s in (1, 2, 3)])
    stims = [_stim(Site.RLN, 0, 1.0), _stim(Site.VAGUS, 1, 1.1), _stim(Site.RLN, 2, 1.2)]
    got = an.analyse_batch(x, FS, PRE, stims, ["EMG L"] * 3)
    assert [g.detail for g in got] == [TOO_SHORT, "", TOO_SHORT]
    assert [g.measurement.valid for g in got] == [False, True, False]
    vagus = got[1].measurement
    assert vagus.amplitude_uV is not None and 0.0 < vagus.amplitude_uV < 40.0
    alone = _short_rln(5.0).analyse(x[1], FS, PRE, stims[1], "EMG L").measurement
    assert vagus.amplitude_uV == pytest.approx(alone.amplitude_uV, rel=1e-9)
