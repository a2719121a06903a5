"""The first major peak of a response window (``EpochAnalyzer._first_major_peak``), on hand-made windows.

The window ``w`` is the peak waveform from the end of the artifact blank; ``start`` is its first
sample counted from the stimulus; ``ms`` the sample period. The verdict is ("response", latency,
onset), ("none", why) or ("artifact", why). Sample periods of 0.25 ms (4 kHz) make phase widths
exact: the default widest first phase, 6 ms, is 24 samples.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.epoch import EpochAnalyzer
from app.settings import Settings

MS = 0.25
START = 6  # the blank's end, 1.5 ms after the stimulus at 4 kHz
N = 80  # a 20 ms window


@pytest.fixture(scope="module")
def analyzer() -> EpochAnalyzer:
    an = EpochAnalyzer(Settings())
    assert an.max_phase_ms == 6.0
    return an


def _phase(width: int, at: int, n: int = N) -> np.ndarray:
    """A positive phase of ``width`` samples from index ``at``: a level of 6 with one peak of 10
    in its middle (8 either side), zero outside; every sample of it is above half the peak."""
    w = np.zeros(n)
    w[at : at + width] = 6.0
    c = at + width // 2
    w[c - 1 : c + 2] = (8.0, 10.0, 8.0)
    return w


# ------------------------------------------------------------------ which peak


def test_a_deflection_of_exactly_half_the_largest_is_the_first_major_peak(analyzer):
    w = np.zeros(N)
    w[12] = 5.0  # exactly half of the largest deflection: "at least 50 %"
    w[30] = 10.0
    verdict = analyzer._first_major_peak(w, START, MS, 0.0)
    assert verdict[0] == "response"
    assert verdict[1] == pytest.approx((START + 12) * MS)


def test_the_first_of_two_same_polarity_peaks_counts_when_the_signal_dips_below_half_between(analyzer):
    w = np.zeros(N)
    w[8:23] = [1.0, 3.0, 5.0, 6.0, 5.0, 3.0, 2.0, 3.0, 5.0, 7.0, 9.0, 10.0, 9.0, 7.0, 4.0]
    verdict = analyzer._first_major_peak(w, START, MS, 0.0)
    assert verdict[0] == "response"
    assert verdict[1] == pytest.approx((START + 11) * MS)  # the 6 at index 11, not the 10 at 19


def test_a_negative_first_phase_is_timed_like_a_positive_one(analyzer):
    w = np.zeros(N)
    w[10:15] = [-2.0, -7.0, -10.0, -7.0, -2.0]
    w[18:23] = [2.0, 6.0, 8.0, 6.0, 2.0]
    kind, latency, onset = analyzer._first_major_peak(w, START, MS, 0.0)
    assert kind == "response"
    assert latency == pytest.approx((START + 12) * MS)
    assert onset < latency


def test_without_a_noise_figure_the_verdict_does_not_depend_on_the_scale(analyzer):
    """No noise given: the major-peak level is half the largest deflection, for microvolt and
    for sub-microvolt windows alike (a biphasic window whose first phase is 60 % of the second)."""
    w = np.zeros(N)
    w[10:15] = [1.0, 4.0, 6.0, 4.0, 1.0]
    w[16:21] = [-2.0, -7.0, -10.0, -7.0, -2.0]
    big = analyzer._first_major_peak(w, START, MS)
    small = analyzer._first_major_peak(w * 1e-3, START, MS)
    assert big[0] == small[0] == "response"
    assert big[1] == pytest.approx((START + 12) * MS)
    assert small[1] == pytest.approx(big[1])
    assert small[2] == pytest.approx(big[2])


# ------------------------------------------------------------------ where the peak lies


def test_a_peak_on_the_last_sample_of_the_window_is_no_response(analyzer):
    w = np.zeros(N)
    w[-5:] = [1.0, 3.0, 5.0, 8.0, 10.0]  # still rising when the window ends
    verdict = analyzer._first_major_peak(w, START, MS, 0.0)
    assert verdict == ("none", "peak at the end of the response window")


def test_a_peak_one_sample_before_the_end_of_the_window_is_a_response(analyzer):
    w = np.zeros(N)
    w[-5:] = [1.0, 3.0, 6.0, 10.0, 8.0]
    kind, latency, _onset = analyzer._first_major_peak(w, START, MS, 0.0)
    assert kind == "response"
    assert latency == pytest.approx((START + N - 2) * MS, abs=MS)


@pytest.mark.parametrize(("ms", "p"), [(0.075, 4), (0.06, 5), (0.15, 2)])
def test_a_peak_exactly_0_3_ms_into_the_window_is_not_the_artifact_tail(analyzer, ms, p):
    w = np.zeros(N)
    w[p - 1 : p + 2] = (4.0, 10.0, 4.0)
    assert p * ms == 0.3
    kind, latency, _onset = analyzer._first_major_peak(w, START, ms, 0.0)
    assert kind == "response"
    assert latency == pytest.approx((START + p) * ms)


def test_a_peak_within_0_3_ms_of_the_window_start_is_the_artifact_tail(analyzer):
    w = np.zeros(N)
    w[2:5] = (4.0, 10.0, 4.0)  # peak 0.225 ms into the window at 0.075 ms per sample
    assert analyzer._first_major_peak(w, START, 0.075, 0.0) == (
        "artifact",
        "artifact tail at the start of the window",
    )


# ------------------------------------------------------------------ phase width


def test_a_first_phase_exactly_as_wide_as_the_limit_is_a_response(analyzer):
    kind, latency, _onset = analyzer._first_major_peak(_phase(24, 20), START, MS, 0.0)
    assert kind == "response"
    assert latency == pytest.approx((START + 32) * MS)


def test_a_first_phase_one_sample_wider_than_the_limit_is_no_response(analyzer):
    verdict = analyzer._first_major_peak(_phase(25, 20), START, MS, 0.0)
    assert verdict[0] == "none"
    assert "not a nerve response" in verdict[1]


@pytest.mark.parametrize("edge", ["left", "right"])
def test_a_sample_at_exactly_half_the_peak_is_part_of_the_phase(analyzer, edge):
    w = _phase(25, 20)
    w[20 if edge == "left" else 44] = 5.0  # 25 samples at or above half the peak: 6.25 ms
    verdict = analyzer._first_major_peak(w, START, MS, 0.0)
    assert verdict[0] == "none", verdict


@pytest.mark.parametrize(("width", "kind"), [(24, "response"), (25, "none")])
def test_a_phase_already_under_way_when_the_window_starts_counts_from_the_window_start(analyzer, width, kind):
    assert analyzer._first_major_peak(_phase(width, 0), START, MS, 0.0)[0] == kind


@pytest.mark.parametrize(("width", "kind"), [(24, "response"), (25, "none")])
def test_a_phase_still_under_way_when_the_window_ends_counts_to_the_window_end(analyzer, width, kind):
    assert analyzer._first_major_peak(_phase(width, N - width), START, MS, 0.0)[0] == kind


# ------------------------------------------------------------------ onset


def test_the_onset_is_interpolated_where_the_rise_crosses_a_tenth_of_the_peak(analyzer):
    w = np.full(N, 0.4)
    w[10:17] = [2.0, 5.0, 8.0, 10.0, 8.0, 5.0, 2.0]
    kind, latency, onset = analyzer._first_major_peak(w, START, MS, 0.0)
    assert kind == "response"
    assert latency == pytest.approx((START + 13) * MS)
    # 10 % of the peak is 1.0: crossed 0.6/1.6 of the way from sample 9 (0.4) to sample 10 (2.0)
    assert onset == pytest.approx((START + 9 + 0.6 / 1.6) * MS)


def test_a_sample_at_exactly_a_tenth_of_the_peak_is_still_quiet(analyzer):
    w = np.zeros(N)
    w[10:16] = [3.0, 1.0, 5.0, 10.0, 5.0, 0.0]  # a brief rise, back to exactly 10 %, then the response
    kind, latency, onset = analyzer._first_major_peak(w, START, MS, 0.0)
    assert kind == "response"
    assert latency == pytest.approx((START + 13) * MS)
    assert onset == pytest.approx((START + 11) * MS)
