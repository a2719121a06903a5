"""Free-running EMG: the rules that make potentials of peaks, exactly at their boundaries.

- A potential both channels see alike is common-mode and dropped: correlation >= 0.8 over
  +-2 ms (``_COMMON_MS``: the window, rounded to samples and at least 2 each side, both
  edges included, nothing beyond), and the other channel's deflection at least a third as
  large (looked at whether or not the other channel reached its own threshold). A window of
  fewer than 4 samples (the start of a block at a low rate) cannot be told.
- Supra-threshold runs (a sample at the threshold counts) within the refractory time (4 ms,
  in samples, inclusive) of the previous potential are its phases: the larger gives the
  potential its place (the first when they are equal).
- Across frames: a peak within the refractory time of the last potential is that potential
  (its peak raised, never lowered); a later one within 10 ms and under 30 % of it is its tail.

Boundary values are chosen exact in binary floating point (e.g. 0.004 s is both
``80 / 20000`` and ``0.004 - 0.0``), so the comparisons at the boundaries are exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.freerun import EmgEvent, EmgEventKind, FreeRunDetector
from app.settings import Settings


def detector(fs: float = 20000.0, channels: tuple[str, ...] = ("EMG L", "EMG R")) -> FreeRunDetector:
    return FreeRunDetector(Settings(), fs, channels=channels)


def win_of(fs: float) -> int:
    """The common-mode window (samples each side) the docstring asks for: +-2 ms."""
    return max(2, int(round(2.0 * fs / 1000.0)))


def pearson(u: np.ndarray, v: np.ndarray) -> float:
    du, dv = u - u.mean(), v - v.mean()
    return abs(float(np.dot(du, dv))) / float(np.sqrt(np.dot(du, du) * np.dot(dv, dv)))


# ------------------------------------------------------------------ common mode: the window

def mup(n: int, i: int, amp: float = 100.0, width: float = 6.0) -> np.ndarray:
    """A smooth biphasic potential peaking (+amp) at ``i``."""
    k = np.arange(n, dtype=float) - i
    return amp * np.exp(-0.5 * (k / width) ** 2) * (1.0 - (k / width) ** 2)


@pytest.mark.parametrize("fs", [1000.0, 20000.0, 20260.0])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("at_start", [False, True])
def test_the_samples_at_both_edges_of_the_window_are_compared(fs, side, at_start):
    """Both channels alike inside the window except at one edge, where only the first
    channel deflects: that edge sample alone keeps the potential."""
    det = detector(fs)
    win = win_of(fs)
    i = win if at_start else win + 7
    n = i + win + 9
    u = mup(n, i, width=max(1.0, win / 3))
    v = u.copy()
    edge = i - win if side == "left" else i + win
    inside = slice(i - win, i + win + 1)
    u[edge] += 3.0 * float(np.linalg.norm(v[inside] - v[inside].mean()))
    assert pearson(u[inside], v[inside]) < 0.8
    # without the edge sample they would be alike
    cut = slice(i - win + 1, i + win + 1) if side == "left" else slice(i - win, i + win)
    assert pearson(u[cut], v[cut]) >= 0.8
    y = np.vstack([u, v])
    assert det._drop_common_mode(y, [[(i, float(u[i]))], []]) == [[(i, float(u[i]))], []]


@pytest.mark.parametrize("fs", [1000.0, 20000.0, 20260.0])
@pytest.mark.parametrize("side", ["left", "right"])
def test_nothing_beyond_the_window_is_compared(fs, side):
    """Both channels alike inside the window; just outside it only one deflects: dropped."""
    det = detector(fs)
    win = win_of(fs)
    i = win + 7
    n = i + win + 9
    u = mup(n, i, width=max(1.0, win / 3))
    v = u.copy()
    out = i - win - 1 if side == "left" else i + win + 1
    u[out] += 300.0
    v[out] -= 300.0
    u[out + (-1 if side == "left" else 1)] += 250.0
    y = np.vstack([u, v])
    assert pearson(u[i - win - 2: i + win + 3], v[i - win - 2: i + win + 3]) < 0.8
    assert det._drop_common_mode(y, [[(i, float(u[i]))], []]) == [[], []]
    # the same on the second channel (the first one is its "other")
    assert det._drop_common_mode(y[::-1].copy(), [[], [(i, float(u[i]))]]) == [[], []]


def test_a_potential_seen_alike_on_both_channels_is_dropped_on_each():
    det = detector()
    n, i = 200, 100
    u = mup(n, i)
    y = np.vstack([u, 0.5 * u])
    peak = float(u[i])
    assert det._drop_common_mode(y, [[(i, peak)], [(i, peak / 2)]]) == [[], []]
    # a different potential on the other channel (shifted by a phase): kept
    y2 = np.vstack([u, mup(n, i + 9)])
    assert pearson(u[i - 40: i + 41], y2[1, i - 40: i + 41]) < 0.8
    assert det._drop_common_mode(y2, [[(i, peak)], []]) == [[(i, peak)], []]


def test_alike_but_offset_channels_are_alike():
    """Correlation is of the deviations from the window's mean: a DC offset on either
    channel changes nothing."""
    det = detector()
    n, i = 200, 100
    u = mup(n, i)
    peak = float(u[i])
    for y in (np.vstack([u + 500.0, u]), np.vstack([u, u + 500.0]), np.vstack([u - 500.0, u + 800.0])):
        assert det._drop_common_mode(y, [[(i, peak)], []]) == [[], []]


def test_small_alike_signals_are_alike():
    """Correlation is scale-free: alike potentials of a fraction of a µV are common-mode
    too (the product of the channels' energies is far below 1 there)."""
    det = detector()
    n, i = 200, 100
    u = mup(n, i, amp=0.05)
    peak = float(u[i])
    assert det._drop_common_mode(np.vstack([u, u]), [[(i, peak)], []]) == [[], []]
    assert det._drop_common_mode(np.vstack([u, 2.0 * u]), [[(i, peak)], []]) == [[], []]


def test_large_partly_correlated_signals_are_not_alike():
    det = detector()
    n, i = 200, 100
    u = mup(n, i, amp=300.0)
    v = mup(n, i + 5, amp=300.0)
    c = pearson(u[i - 40: i + 41], v[i - 40: i + 41])
    assert 0.05 < c < 0.8
    assert det._drop_common_mode(np.vstack([u, v]), [[(i, float(u[i]))], []]) == [[(i, float(u[i]))], []]


def test_uncorrelated_other_channel_of_comparable_size_keeps_the_potential():
    det = detector(1000.0)  # window of 2 each side: 5 samples
    u = np.array([0.0, 0.0, 0.0, 1.0, 9.0, 1.0, 0.0, 0.0, 0.0])
    v = np.array([0.0, 0.0, 5.0, 0.0, 0.0, 0.0, -5.0, 0.0, 0.0])  # orthogonal to u's deviations
    du, dv = u[2:7] - u[2:7].mean(), v[2:7] - v[2:7].mean()
    assert abs(float(np.dot(du, dv))) < 1e-9  # zero but for rounding (which depends on the CPU's float path)
    assert det._drop_common_mode(np.vstack([u, v]), [[(4, 9.0)], []]) == [[(4, 9.0)], []]


def test_a_flat_other_channel_is_not_alike():
    """The other channel sits flat at a level of comparable size around the potential: no
    correlation can be worked out; it is not common-mode."""
    det = detector()
    n, i = 200, 100
    u = mup(n, i)
    v = np.full(n, 50.0)
    assert det._drop_common_mode(np.vstack([u, v]), [[(i, float(u[i]))], []]) == [[(i, float(u[i]))], []]


def test_a_correlation_of_exactly_0_8_is_common_mode():
    """u = 4 v' + 3 w' with v', w' orthogonal, zero-mean, of equal norm: correlation 16/20."""
    det = detector(1000.0)
    u = np.array([-1.0, 0.0, 7.0, 1.0, -7.0])
    v = np.array([-3.0, 0.0, 3.0, 3.0, -3.0])
    assert float(np.dot(u, v)) / float(np.sqrt(np.dot(u, u) * np.dot(v, v))) == 0.8
    assert det._drop_common_mode(np.vstack([u, v]), [[(2, 7.0)], []]) == [[], []]


def test_an_other_channel_exactly_a_third_as_large_is_comparable():
    det = detector()
    n, i = 200, 100
    v = np.round(mup(n, i, amp=40.0))
    u = 3.0 * v
    peak = float(np.max(np.abs(u[i - 40: i + 41])))
    assert float(np.max(np.abs(v[i - 40: i + 41]))) * 3.0 == peak
    assert det._drop_common_mode(np.vstack([u, v]), [[(i, peak)], []]) == [[], []]
    # a hair smaller: not comparable, kept
    w = v * (1.0 - 1e-9)
    assert det._drop_common_mode(np.vstack([u, w]), [[(i, peak)], []]) == [[(i, peak)], []]


def test_a_window_of_four_samples_is_enough_and_three_are_too_few():
    """At 1 kHz the window is 2 samples each side: a peak at the second sample of a frame
    has 4 samples to compare, one at its first or last only 3."""
    det = detector(1000.0)
    u = np.array([20.0, 90.0, 30.0, 10.0, 5.0, 10.0, 30.0, 90.0, 20.0, 80.0])
    y = np.vstack([u, u])
    assert det._drop_common_mode(y, [[(1, 90.0)], []]) == [[], []]  # samples 0..3
    assert det._drop_common_mode(y, [[(0, 20.0)], []]) == [[(0, 20.0)], []]  # samples 0..2
    assert det._drop_common_mode(y, [[(9, 80.0)], []]) == [[(9, 80.0)], []]  # samples 7..9


# ------------------------------------------------------------------ peaks of a frame

def test_peaks_of_a_frame_include_a_sample_exactly_at_the_threshold():
    det = detector()
    a = np.zeros(40)
    a[10], a[30] = 50.0, 49.0
    found = det._frame_peaks(a[None, :], a[None, :], [True], [50.0])
    assert found == [[(10, 50.0)]]


def test_runs_of_supra_threshold_samples_within_the_refractory_time_are_one_potential():
    det = detector()  # refractory: 80 samples
    assert det.refractory == 80
    a = np.zeros(400)
    # runs peaking at 50 and 60 (one potential, the larger), 300 (its own)
    a[49:52] = [45.0, 100.0, 45.0]
    a[59:62] = [45.0, 120.0, 45.0]
    a[299:302] = [45.0, 70.0, 45.0]
    assert det._peaks(a, a >= 40.0) == [(60, 120.0), (300, 70.0)]


def test_a_run_exactly_the_refractory_time_after_is_the_same_potential_and_one_more_is_not():
    det = detector()
    a = np.zeros(400)
    a[100], a[180] = 100.0, 90.0
    assert det._peaks(a, a >= 40.0) == [(100, 100.0)]
    b = np.zeros(400)
    b[100], b[181] = 100.0, 90.0
    assert det._peaks(b, b >= 40.0) == [(100, 100.0), (181, 90.0)]


def test_equal_phases_keep_the_first_place():
    det = detector()
    a = np.zeros(400)
    a[100], a[150] = 100.0, 100.0
    assert det._peaks(a, a >= 40.0) == [(100, 100.0)]


def test_merging_a_phase_does_not_stop_the_search_for_later_potentials():
    det = detector()
    a = np.zeros(400)
    a[10], a[20], a[200], a[350] = 60.0, 50.0, 70.0, 80.0
    assert det._peaks(a, a >= 40.0) == [(10, 60.0), (200, 70.0), (350, 80.0)]


def test_peaks_far_apart_are_separate_whatever_their_size():
    """The refractory distance is in samples, not compared with the peak's size."""
    det = detector()
    a = np.zeros(400)
    a[100], a[300] = 250.0, 90.0
    assert det._peaks(a, a >= 40.0) == [(100, 250.0), (300, 90.0)]


# ------------------------------------------------------------------ potentials across frames

def spikes(det: FreeRunDetector, seq: list[tuple[float, float]], ch: int = 0) -> list[EmgEvent]:
    """Potentials ``(t, peak)`` in order, each reported at the end of its 10 ms frame."""
    out: list[EmgEvent] = []
    for t, peak in seq:
        out += det._spike(ch, t, peak, t + 0.01)
    return out


TRAIN = [(0.1, 100.0), (0.15, 100.0), (0.2, 100.0)]  # three potentials: one more makes an episode


def episode(det: FreeRunDetector, ch: int = 0) -> EmgEvent:
    """The episode of channel ``ch`` as it is reported when closed."""
    ends = det._close(ch, 9.0)
    assert len(ends) == 1
    return ends[0]


def test_a_potential_exactly_the_refractory_time_after_the_last_is_the_same_one():
    det = detector()
    step = det.refractory / det.fs
    assert step == 0.004 and (0.204 - 0.2) != step  # (why the times start at 0)
    ev = spikes(det, [(0.0, 100.0), (step, 100.0), (0.05, 100.0), (0.1, 100.0)])
    assert ev == []  # three potentials, not four
    ev = spikes(det, [(0.15, 100.0)])
    assert [e.kind for e in ev] == [EmgEventKind.ACTIVITY_START]
    assert ev[0].potentials == 4 and ev[0].onset_s == 0.0


def test_a_larger_peak_within_the_refractory_time_raises_the_potential():
    det = detector()
    ev = spikes(det, [*TRAIN, (0.25, 100.0), (0.252, 300.0)])
    assert [e.kind for e in ev] == [EmgEventKind.ACTIVITY_START]
    e = episode(det)
    assert e.potentials == 4 and e.peak_uV == 300.0


def test_a_smaller_peak_within_the_refractory_time_leaves_the_potential_as_it_is():
    det = detector()
    spikes(det, [*TRAIN, (0.25, 300.0), (0.252, 150.0)])
    e = episode(det)
    assert e.potentials == 4 and e.peak_uV == 300.0


def test_a_potential_within_10_ms_is_its_own_unless_it_is_under_30_percent():
    det = detector()
    # 6 ms after a potential (past the refractory time): as large, its own potential
    ev = spikes(det, [(0.1, 100.0), (0.106, 100.0), (0.15, 100.0), (0.2, 100.0)])
    assert [e.kind for e in ev] == [EmgEventKind.ACTIVITY_START]
    det = detector()
    # ... under 30 % of it: its tail, not counted
    ev = spikes(det, [(0.1, 100.0), (0.106, 20.0), (0.15, 100.0), (0.2, 100.0)])
    assert ev == []
    assert [e.kind for e in spikes(det, [(0.25, 100.0)])] == [EmgEventKind.ACTIVITY_START]


def test_a_small_potential_more_than_10_ms_after_is_its_own():
    det = detector()
    ev = spikes(det, [(0.1, 100.0), (0.15, 20.0), (0.2, 100.0), (0.25, 100.0)])
    assert [e.kind for e in ev] == [EmgEventKind.ACTIVITY_START]


def test_the_tail_window_ends_exactly_at_10_ms_and_at_exactly_30_percent():
    det = detector()
    assert 0.01 - 0.0 == 10.0 / 1000.0
    # exactly 10 ms after, small: a tail
    ev = spikes(det, [(0.0, 100.0), (0.01, 20.0), (0.05, 100.0), (0.1, 100.0)])
    assert ev == []
    det = detector()
    # within 10 ms, exactly 30 %: its own potential
    ev = spikes(det, [(0.0, 100.0), (0.008, 0.3 * 100.0), (0.05, 100.0), (0.1, 100.0)])
    assert [e.kind for e in ev] == [EmgEventKind.ACTIVITY_START]


def test_a_potential_after_a_gap_ends_the_episode_when_it_comes():
    """The gap can show first at a potential (before any frame end closed the chain): the
    episode is reported then, at that frame's end, and a new chain starts."""
    det = detector()
    spikes(det, [*TRAIN, (0.25, 100.0)])
    ev = det._spike(0, 0.6, 100.0, 0.605)
    assert len(ev) == 1
    e = ev[0]
    assert e.kind is EmgEventKind.ACTIVITY and e.t_s == 0.605 and e.potentials == 4
    assert e.onset_s == 0.1 and e.duration_s == pytest.approx(0.15)


# ------------------------------------------------------------------ through feed

FS = 5000.0


def stream(fs: float = FS, seconds: float = 1.5, seed: int = 3, amp: float = 150.0) -> np.ndarray:
    """One channel: a 20 Hz train of biphasic potentials (``amp`` µV) on 2 µV noise."""
    n = int(seconds * fs)
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, n)
    t = np.arange(n) / fs
    for tk in np.arange(0.2, 1.2, 0.05):
        k = (t - tk) / 0.0004
        x += amp * np.exp(-0.5 * k * k) * (1.0 - k * k)
    return x


def run(det: FreeRunDetector, x: np.ndarray, block: int = 250) -> list[EmgEvent]:
    ev: list[EmgEvent] = []
    for i in range(0, x.shape[-1], block):
        ev += det.feed(x[..., i:i + block], i / FS)
    return ev + det.flush()


def kinds(ev: list[EmgEvent], channel: str | None = None) -> list[EmgEventKind]:
    return [e.kind for e in ev if channel is None or e.channel == channel]


def test_a_single_channel_detector_finds_an_episode():
    ev = run(FreeRunDetector(Settings(), FS, channels=("EMG L",)), stream())
    assert kinds(ev) == [EmgEventKind.ACTIVITY_START, EmgEventKind.ACTIVITY]
    assert ev[-1].pattern == "train" and ev[-1].potentials >= 15


def test_three_channels_are_independent():
    """Common-mode is a matter of a pair of channels: with three, a train on the third is
    activity (the other two quiet)."""
    x = stream()
    rng = np.random.default_rng(9)
    y = np.vstack([rng.normal(0, 2.0, x.size), rng.normal(0, 2.0, x.size), x])
    ev = run(FreeRunDetector(Settings(), FS, channels=("a", "b", "c")), y)
    assert kinds(ev, "c") == [EmgEventKind.ACTIVITY_START, EmgEventKind.ACTIVITY]


def test_a_train_both_channels_see_alike_is_common_mode():
    x = stream()
    ev = run(detector(FS), np.vstack([x, x]))
    assert ev == []


def test_common_mode_needs_no_potential_on_the_other_channel():
    """The other channel sees the train at 35 % (under its threshold: alone, it is no
    activity): still common-mode."""
    x = stream(amp=100.0)
    rng = np.random.default_rng(4)
    assert run(detector(FS), np.vstack([rng.normal(0, 2.0, x.size), 0.35 * x])) == []
    ev = run(detector(FS), np.vstack([x, 0.35 * x]))
    assert ev == []
    ev = run(detector(FS), np.vstack([0.35 * x, x]))
    assert ev == []
    # alone, with only noise on the other channel, the train is activity
    ev = run(detector(FS), np.vstack([x, rng.normal(0, 2.0, x.size)]))
    assert kinds(ev, "EMG L") == [EmgEventKind.ACTIVITY_START, EmgEventKind.ACTIVITY]
