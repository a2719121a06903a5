"""Which samples the background fit of the direct measurement may use (``EpochAnalyzer._direct``).

The background (wander, hum, the artifact's tail) is fitted to the samples of the epoch that
hold no stimulus: the stimulus's own blank is left out, and so are the blanks of other
stimuli in the epoch (a fast probe train puts the next stimulus inside the window), whose
samples are only the straight line drawn across them. A fit that used those lines would
take a made-up segment for signal. Checked on the batch's ``keep`` mask as ``_direct`` leaves
it, before the response window's end (after it, late activity is masked as well).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.model import Side, Site, Source, Stimulus
from app.settings import Settings

FS, PRE, N = 20000.0, 200, 1200  # 10 ms before the onset, 60 ms in all


def _keep_after_direct(monkeypatch: pytest.MonkeyPatch, other_onsets: list[int]) -> tuple[np.ndarray, object]:
    seen = {}
    original = EpochAnalyzer._direct

    def spy(self, b, eligible):
        original(self, b, eligible)
        seen["keep"], seen["batch"] = b.keep.copy(), b

    monkeypatch.setattr(EpochAnalyzer, "_direct", spy)
    x = np.random.default_rng(7).normal(0.0, 5.0, N)
    stim = Stimulus(0, 1.0, Site.VAGUS, Side.L, Source.PROBE, 1.0, 1.0)
    EpochAnalyzer(Settings()).analyse(x, FS, PRE, stim, "EMG L", other_onsets=other_onsets)
    return seen["keep"][0], seen["batch"]


def test_the_background_fit_leaves_out_the_stimulus_blank_and_the_other_stimuli_blanks(monkeypatch):
    other = PRE + 400  # the next stimulus 20 ms after this one, inside the response window
    keep, b = _keep_after_direct(monkeypatch, [other])
    assert b.extra is not None and b.extra[0].any()
    want = np.ones(b.end, dtype=bool)
    want[b.bs : b.be] = False
    want &= ~b.extra[0]
    se = int(b.se[0])
    assert se > other  # the other blank lies before the window's end, where nothing else masks
    np.testing.assert_array_equal(keep[:se], want[:se])
    # and the other blank is really left out (not only the own one)
    assert not keep[other : other + 5].any() and keep[other - 40 : other - 20].all()


def test_without_other_stimuli_only_the_stimulus_blank_is_left_out(monkeypatch):
    keep, b = _keep_after_direct(monkeypatch, [])
    assert b.extra is None
    se = int(b.se[0])
    assert not keep[b.bs : b.be].any()
    assert keep[: b.bs].all() and keep[b.be : se].all()
