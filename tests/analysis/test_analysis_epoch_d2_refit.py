"""When the direct measurement fits the background a second time (``EpochAnalyzer._direct``).

The background is first fitted with the response left out from 4.5 ms before the largest
deflection of the response-band copy to 5.5 ms after it. When, with that background
removed, the largest deflection of the peak waveform lies elsewhere by more than half of
the 4.5 ms lead (and at least by more than one sample), the background is fitted once more
with the response left out around where it turned out to be; that second fit still models
the mains pairs known to be present on the channel.

Driven on hand-made batches: the response-band copy holds a single spike at sample ``P``
(where the first fit looks), the peak waveform a 300 µV spike ``d`` samples later (where
the response really is) on 1 µV noise. The second fit is seen as a call of the background
model's ``fit`` (the first fit is done in two stages, ``solve`` and ``finish``).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer, _Batch
from app.analysis.noise import MAINS_CHI2
from app.settings import Settings

END_MS = 25.0  # the vagal response window


def _run(fs: float, d: int, *, hum_known: bool = False, p_ms: float = 8.0):
    """Run ``_direct`` on one epoch at ``fs``; the response-band spike at ``p_ms`` after the
    onset, the peak-waveform spike ``d`` samples later. With ``hum_known`` the analyzer has
    learned from 8 earlier epochs that 50 Hz hum is on the channel. Returns the batch, the
    recorded second fits (their keep masks and ``present`` arguments) and ``P``."""
    an = EpochAnalyzer(Settings())
    pre, n = int(round(0.010 * fs)), int(round(0.060 * fs))
    bs, be, end = an._geometry(fs, pre, n)
    model = an._background_model(fs, pre, end)
    p = pre + int(round(p_ms * fs / 1000.0))
    z = np.random.default_rng(5).normal(0.0, 1.0, (1, end))
    z[0, p + d] += 300.0
    hn = np.zeros((1, end))
    hn[0, p] = 50.0
    b = _Batch(
        fs=fs,
        pre=pre,
        bs=bs,
        be=be,
        end=end,
        g=0,
        z=z,
        extra=None,
        se=np.array([pre + int(round(END_MS * fs / 1000.0))]),
        end_ms=[END_MS],
        background=model,
        channels=["EMG L"],
        times=np.array([100.0]),
    )
    b.noise, b.hn = np.array([1.0]), hn
    if hum_known:
        chi = np.zeros(model.n_pairs)
        chi[0] = 100.0  # the 50 Hz pair, strong in each earlier epoch
        for t in range(8):
            an.mains.update("EMG L", fs, chi, 90.0 + t)
    refits = []
    fit = model.fit

    def recording_fit(z_rows, keep, noise, peak_hz, present=None):
        refits.append((keep.copy(), None if present is None else np.array(present)))
        return fit(z_rows, keep, noise, peak_hz, present)

    model.fit = recording_fit
    an._direct(b, np.zeros(1, dtype=bool))
    return b, refits, p


@pytest.mark.parametrize("d", [1, 30, 31, 44, 45, -45])
def test_no_second_fit_when_the_response_lies_within_half_the_lead_of_where_it_was_looked_for(d):
    """At 20 kHz the lead is 90 samples: a move of up to 45 samples keeps the first fit."""
    b, refits, _p = _run(20000.0, d)
    assert refits == []
    assert b.amp[0] == pytest.approx(300.0, abs=10.0)


@pytest.mark.parametrize("d", [46, -46, 60])
def test_a_second_fit_leaves_out_the_response_where_it_turned_out_to_be(d):
    """A move of 46 samples (more than 2.25 ms at 20 kHz) fits again, with the response left
    out from 90 samples before its new place to 110 after it, everything else of the
    epoch outside the blank and the late guard kept."""
    b, refits, p = _run(20000.0, d)
    assert len(refits) == 1
    keep = refits[0][0][0]
    centre = p + d
    want = b.keep[0].copy()
    want[centre - 90 : centre + 110] = False
    np.testing.assert_array_equal(keep, want)
    assert b.amp[0] == pytest.approx(300.0, abs=10.0)


def test_at_a_low_sample_rate_a_move_of_two_samples_fits_again():
    """At 600 Hz the lead is 3 samples (half of it 1): a move of one sample keeps the first
    fit, a move of two samples fits once more."""
    _b, refits, _p = _run(600.0, 1)
    assert refits == []
    _b, refits, p = _run(600.0, 2)
    assert len(refits) == 1
    keep = refits[0][0][0]
    assert not keep[p + 2 - 3 : p + 2 + 3].any()  # 3 samples before, 3 after (5.5 ms rounds to 3 samples)


def test_the_second_fit_still_models_the_hum_known_on_the_channel():
    """50 Hz hum known present on the channel (learned over 8 epochs) is modelled in the
    second fit too, though this epoch alone shows none of it; the pairs not known present
    (and weak here) are left out."""
    b, refits, _p = _run(20000.0, 46, hum_known=True)
    assert len(refits) == 1
    assert (b.mains_chi[0] < MAINS_CHI2).all()  # by itself, this epoch would model no hum
    present = refits[0][1]
    assert present is not None and present[0, 0] and not present[0, 1:].any()
    ns = b.background.n_spline
    assert not b.drop[0, ns : ns + 2].any()  # the 50 Hz cosine and sine are fitted
    assert b.drop[0, ns + 2 :].all()
