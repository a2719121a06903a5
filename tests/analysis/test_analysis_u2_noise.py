"""Direct checks of ``app.analysis.noise.robust_rms`` (the RMS of the 90 % of samples nearest
the median, scaled to a Gaussian sigma) on hand-made rows, and of ``MainsProfile.present``:
when a learned pair counts as present, and when a channel's profile is dropped."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.analysis.noise import (
    PRESENT_CHI,
    PROFILE_MIN,
    PROFILE_STALE_S,
    TRIM_KEEP,
    TRIM_VARIANCE,
    MainsProfile,
    robust_rms,
)


def _expected(row: list[float]) -> float:
    """Independent reference: the median is the middle sample of the sorted row (the mean of
    the two middle ones for an even count); keep the ceil(90 %) samples nearest it (and any
    tied with the last one kept); RMS of their distances to the median over the Gaussian
    variance of the central 90 %."""
    s = sorted(row)
    h = len(s) // 2
    med = s[h] if len(s) % 2 else (s[h - 1] + s[h]) / 2.0
    dev = sorted(abs(x - med) for x in row)
    keep = max(2, math.ceil(TRIM_KEEP * len(row)))
    cut = dev[keep - 1]
    kept = [d for d in dev if d <= cut]
    return math.sqrt(sum(d * d for d in kept) / len(kept) / TRIM_VARIANCE)


def test_ten_samples_keep_nine_and_drop_the_outlier():
    """Median of 0..8 plus 1000 (between 4 and 5: 4.5); the 1000 is left out."""
    row = [3.0, 0.0, 1000.0, 7.0, 1.0, 8.0, 2.0, 6.0, 4.0, 5.0]
    dev = [4.5, 3.5, 2.5, 1.5, 0.5, 0.5, 1.5, 2.5, 3.5]  # distances of 0..8 to the median 4.5
    want = math.sqrt(sum(d * d for d in dev) / 9 / TRIM_VARIANCE)
    got = robust_rms(np.array([row]))
    assert got.shape == (1,)
    assert got[0] == pytest.approx(want, rel=1e-12)
    assert got[0] == pytest.approx(_expected(row), rel=1e-12)


def test_rows_are_independent_and_match_the_reference():
    rows = [
        [0.5, -1.5, 2.0, 7.0, -3.0, 0.0, 1.0, 4.5, -0.5, 2.5],
        [10.0, 12.0, 11.0, 30.0, 9.0, 10.5, 13.0, 8.0, 11.5, -20.0],
        [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
    ]
    got = robust_rms(np.array(rows))
    assert got.shape == (3,)
    for g, row in zip(got, rows, strict=True):
        assert g == pytest.approx(_expected(row), rel=1e-12)
    # the same rows alone give the same values
    for g, row in zip(got, rows, strict=True):
        assert robust_rms(np.array([row]))[0] == pytest.approx(g, rel=1e-12)


@pytest.mark.parametrize("n", [2, 3, 5, 7, 11, 20, 31])
def test_various_lengths_match_the_reference(n):
    rng = np.random.default_rng(100 + n)
    rows = rng.normal(0.0, 2.0, (3, n)) ** 3  # skewed, distinct values
    got = robust_rms(rows)
    for g, row in zip(got, rows, strict=True):
        assert g == pytest.approx(_expected(row.tolist()), rel=1e-12)


def test_two_samples_keep_both():
    """With two samples the median is between them: the distances are 2 and 2."""
    got = robust_rms(np.array([[1.0, 5.0]]))
    assert got[0] == pytest.approx(math.sqrt(8.0 / 2 / TRIM_VARIANCE), rel=1e-12)


def test_ties_at_the_cut_are_all_kept():
    """Distances 0,0,1,1,2,2,3,3,4,4 to the median 0: the 9th is 4, and the 10th, tied with it,
    is kept too: all ten count (mean square 6)."""
    row = [-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0]
    got = robust_rms(np.array([row]))[0]
    assert got == pytest.approx(math.sqrt(60.0 / 10 / TRIM_VARIANCE), rel=1e-12)
    assert got == pytest.approx(_expected(row), rel=1e-12)


def test_scale_and_shift():
    """Adding a constant does not change it; scaling the row scales it."""
    rng = np.random.default_rng(7)
    rows = rng.normal(0.0, 1.0, (4, 50))
    base = robust_rms(rows)
    assert robust_rms(rows + 123.0) == pytest.approx(base, rel=1e-9)
    assert robust_rms(3.0 * rows) == pytest.approx(3.0 * base, rel=1e-12)


def test_gaussian_noise_gives_its_sigma():
    rng = np.random.default_rng(1)
    rows = rng.normal(0.0, 2.0, (4, 20000))
    assert robust_rms(rows) == pytest.approx(np.full(4, 2.0), rel=0.02)


# ----------------------------------------------------------------------------- MainsProfile


def _teach(profile: MainsProfile, chi, times: int, t0: float = 0.0, channel="L", fs=10000.0) -> float:
    """``times`` epochs one second apart from ``t0``; returns the last stimulus time."""
    t = t0
    for k in range(times):
        t = t0 + k
        profile.update(channel, fs, np.asarray(chi, dtype=float), t)
    return t


def test_present_after_enough_epochs_only():
    p = MainsProfile()
    last = _teach(p, [10.0, 0.5, 3.0], PROFILE_MIN - 1)
    early = p.present("L", 10000.0, 3, last + 1.0)
    assert early.dtype == bool
    assert early.tolist() == [False, False, False]
    last = _teach(p, [10.0, 0.5, 3.0], 1, last + 1.0)
    got = p.present("L", 10000.0, 3, last + 1.0)
    assert got.dtype == bool
    assert got.tolist() == [True, False, False]


def test_present_on_an_unknown_channel_or_without_times():
    p = MainsProfile()
    got = p.present("X", 10000.0, 4, 5.0)
    assert got.dtype == bool and got.tolist() == [False] * 4
    got = p.present(None, 10000.0, 2)
    assert got.dtype == bool and got.tolist() == [False] * 2
    # learned without stimulus times: no staleness check, present by the average alone
    for _ in range(PROFILE_MIN):
        p.update("L", 10000.0, np.array([9.0, 1.0]))
    assert p.present("L", 10000.0, 2, 3.0).tolist() == [True, False]
    assert p.present("L", 10000.0, 2).tolist() == [True, False]
    # another channel or another sample rate knows nothing
    assert p.present("R", 10000.0, 2).tolist() == [False, False]
    assert p.present("L", 5000.0, 2).tolist() == [False, False]


def test_present_without_a_time_after_timed_learning():
    p = MainsProfile()
    _teach(p, [9.0], PROFILE_MIN)
    assert p.present("L", 10000.0, 1).tolist() == [True]


def test_the_average_reaching_the_threshold_exactly_is_present():
    p = MainsProfile()
    last = _teach(p, [PRESENT_CHI, PRESENT_CHI - 1.0, 2.0], PROFILE_MIN)
    assert p.present("L", 10000.0, 3, last + 1.0).tolist() == [True, False, False]


def test_a_different_number_of_pairs_knows_nothing():
    p = MainsProfile()
    last = _teach(p, [9.0, 9.0], PROFILE_MIN + 2)
    got = p.present("L", 10000.0, 3, last + 1.0)
    assert got.dtype == bool and got.tolist() == [False, False, False]
    assert p.present("L", 10000.0, 2, last + 1.0).tolist() == [True, True]


@pytest.mark.parametrize("dt", [-1.0, -0.5, 0.0, 0.5, 1.0, 30.0, PROFILE_STALE_S])
def test_kept_when_the_next_stimulus_time_is_plausible(dt):
    """From one second back (jitter) to ``PROFILE_STALE_S`` ahead, both ends included."""
    p = MainsProfile()
    last = _teach(p, [9.0, 1.0], PROFILE_MIN, t0=100.0)
    assert p.present("L", 10000.0, 2, last + dt).tolist() == [True, False]
    assert p.present("L", 10000.0, 2, last + dt).tolist() == [True, False]


@pytest.mark.parametrize("dt", [-1.5, -50.0, PROFILE_STALE_S + 0.5, 5000.0])
def test_dropped_when_time_goes_back_or_jumps_ahead(dt):
    p = MainsProfile()
    last = _teach(p, [9.0, 1.0], PROFILE_MIN, t0=100.0)
    got = p.present("L", 10000.0, 2, last + dt)
    assert got.dtype == bool and got.tolist() == [False, False]
    # dropped for good: back at the old time it is still unknown, and it learns afresh
    assert p.present("L", 10000.0, 2, last).tolist() == [False, False]
    t = _teach(p, [9.0, 1.0], PROFILE_MIN - 1, t0=last + dt)
    assert p.present("L", 10000.0, 2, t + 1.0).tolist() == [False, False]
    t = _teach(p, [9.0, 1.0], 1, t0=t + 1.0)
    assert p.present("L", 10000.0, 2, t + 1.0).tolist() == [True, False]


def test_dropping_one_channel_keeps_the_others():
    p = MainsProfile()
    _teach(p, [9.0], PROFILE_MIN, channel="L")
    last = _teach(p, [9.0], PROFILE_MIN, channel="R")
    assert p.present("L", 10000.0, 1, last + 10 * PROFILE_STALE_S).tolist() == [False]
    assert p.present("R", 10000.0, 1, last + 1.0).tolist() == [True]


def test_decayed_average_not_the_weighted_sum_decides():
    """Below-threshold chi-squares stay absent however many epochs are summed."""
    p = MainsProfile()
    last = _teach(p, [PRESENT_CHI * 0.9, 3.0 * PRESENT_CHI], 40)
    assert p.present("L", 10000.0, 2, last + 1.0).tolist() == [False, True]
    # a decaying average: recent epochs dominate
    last = _teach(p, [3.0 * PRESENT_CHI, 0.0], 60, t0=last + 1.0)
    assert p.present("L", 10000.0, 2, last + 1.0).tolist() == [True, False]
    # exact numbers: decay 0.95 weighted mean
    q = MainsProfile()
    chis = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 30.0]
    for k, c in enumerate(chis):
        q.update("L", 10000.0, np.array([c]), float(k))
    w = sum(0.95**i for i in range(8))
    mean = (30.0 + sum(0.95**i for i in range(1, 8))) / w
    assert mean >= PRESENT_CHI
    assert q.present("L", 10000.0, 1, 8.0).tolist() == [True]
