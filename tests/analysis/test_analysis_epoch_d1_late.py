"""What the background fit of the direct measurement leaves out after the response window
(``EpochAnalyzer._direct``).

After the window, response-band activity (the noise copy) above 5 noise RMS is a later
response of another structure, not background: it is left out of the fit, with 3 ms on
either side of it. The noise RMS is that of the peak band; the noise copy is smaller by
the noise band's white-noise scale (about 1.13 at 20 kHz), so the level is
5 x noise / scale in the noise copy. Samples already left out (another stimulus's blank
after the window) stay left out. Checked on the batch's ``keep`` mask as ``_direct``
leaves it.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import Side, Site, Source, Stimulus
from app.settings import Settings

FS, PRE, N = 20000.0, 200, 1200  # 10 ms before the onset, 60 ms in all; 20 samples a ms
T_MS = (np.arange(N) - PRE) / 20.0
LATE = PRE + 800  # a late burst 40 ms after the stimulus, after the vagal window (25 ms)


def _direct_keep(monkeypatch: pytest.MonkeyPatch, x: np.ndarray, other_onsets=()) -> tuple[np.ndarray, object]:
    seen = {}
    original = EpochAnalyzer._direct

    def spy(self, b, eligible):
        original(self, b, eligible)
        seen["keep"], seen["batch"] = b.keep.copy(), b

    monkeypatch.setattr(EpochAnalyzer, "_direct", spy)
    stim = Stimulus(0, 1.0, Site.VAGUS, Side.L, Source.PROBE, 1.0, 1.0)
    EpochAnalyzer(Settings()).analyse(x, FS, PRE, stim, "EMG L", other_onsets=list(other_onsets))
    return seen["keep"][0], seen["batch"]


def _with_burst(amplitude_uV: float) -> np.ndarray:
    """5 µV noise and a 0.3 ms Gaussian bump at 40 ms."""
    x = np.random.default_rng(4).normal(0.0, 5.0, N)
    return x + amplitude_uV * np.exp(-0.5 * ((T_MS - 40.0) / 0.3) ** 2)


def test_late_activity_just_above_five_noise_rms_is_left_out_with_3_ms_around_it(monkeypatch):
    keep, b = _direct_keep(monkeypatch, _with_burst(16.0))
    se = int(b.se[0])
    assert se == PRE + 500
    _hp, scale = EpochAnalyzer(Settings())._noise_band(FS)
    level = np.abs(b.hn[0, LATE - 20 : LATE + 20]).max() / (b.noise[0] / scale)
    assert 5.0 < level < 6.0  # above the level, though not by the noise band's scale squared
    assert not keep[LATE - 58 : LATE + 59].any()  # the burst and 2.9 ms either side
    assert keep[se : LATE - 70].all() and keep[LATE + 70 : LATE + 150].all()  # beyond 3.5 ms: kept


def test_noise_alone_after_the_window_is_kept(monkeypatch):
    keep, b = _direct_keep(monkeypatch, _with_burst(0.0))
    assert keep[int(b.se[0]) :].all()


def test_a_silent_epoch_has_no_late_activity(monkeypatch):
    """A constant level (a muted channel): no noise at all, and nothing after the window
    stands out of it."""
    keep, b = _direct_keep(monkeypatch, np.full(N, 250.0))
    assert b.noise[0] == 0.0 and not b.hn[0].any()
    assert keep[int(b.se[0]) :].all()


def test_another_stimulus_blank_after_the_window_stays_left_out(monkeypatch):
    """The next stimulus 35 ms after this one, after the vagal window: its blank is only the
    straight line drawn across it, never background, late activity or not."""
    other = PRE + 700
    keep, b = _direct_keep(monkeypatch, np.random.default_rng(7).normal(0.0, 5.0, N), [other])
    se = int(b.se[0])
    assert b.extra is not None and se < other
    blank = np.flatnonzero(b.extra[0])
    assert blank.min() > se and len(blank) >= 20
    assert not keep[blank].any()
    assert keep[se : blank.min()].all()
