"""Breathing variation: verdicts, published values and limits for hand-made frames and short streams.

The evaluation tests put frames (time, level, envelope, flag per side) straight into the
meter's frame buffer, so each verdict's inputs are known exactly; the feeding tests use a
1 kHz stream (100-sample frames) to check how frames are cut, flagged and masked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.analysis.breathing import REASONS, BreathingMeter
from app.settings import Settings

T0 = 100.0
FRAME = 0.1
OK, ARTIFACT, STIM = 0, 1, 2


def frame_times(n: int) -> np.ndarray:
    return T0 + FRAME / 2 + FRAME * np.arange(n)


def meter_with_frames(level, env, flags=None, *, n: int = 100, sides=("L", "R"), changes=None) -> BreathingMeter:
    """A meter holding ``n`` frames; ``level``/``env``/``flags`` are per side: functions of the frame times."""
    m = BreathingMeter(Settings(changes or {}), 1000.0, sides)
    t = frame_times(n)
    lv = np.array([f(t) for f in level])
    ev = np.array([f(t) for f in env])
    fl = np.array([f(t) for f in flags]) if flags is not None else np.zeros((len(sides), n))
    for i in range(n):
        m._frames.append([float(t[i]), lv[:, i].copy(), ev[:, i].copy(), fl[:, i].astype(np.int8)])
    return m


def sine(amp: float, f: float = 0.25, mean: float = 0.0):
    return lambda t: mean + amp * np.sin(2 * np.pi * f * (t - T0))


def const(v: float):
    return lambda t: np.full(len(t), v)


def stim_first(k: int):
    """Flag the first ``k`` frames as stimulation."""
    return lambda t: np.where(np.arange(len(t)) < k, STIM, OK)


COMB_025 = math.cos(math.pi * 0.25 * FRAME)


# ---------------------------------------------------------------------- evaluate: measured sides


def test_a_clean_breathing_side_reports_rate_wander_and_comb_corrected_modulation():
    m = meter_with_frames([sine(10.0), sine(3.0)], [sine(0.5, mean=5.0), sine(0.1, mean=2.0)])
    r = m.evaluate(T0, T0 + 10.0)
    assert r.t_from == T0 and r.t_to == T0 + 10.0
    assert r.rate_per_min == pytest.approx(15.0, abs=1e-6)
    L, R = r.sides["L"], r.sides["R"]
    assert L.side == "L" and R.side == "R"
    assert L.wander_uV == pytest.approx(20.0, rel=1e-6)
    assert L.modulation_pct == pytest.approx(10.0 / COMB_025, rel=1e-6)
    assert L.background_uV == pytest.approx(5.0, rel=1e-9)
    assert L.present is True and L.status == "measured"
    assert R.wander_uV == pytest.approx(6.0, rel=1e-6)
    assert R.modulation_pct == pytest.approx(5.0 / COMB_025, rel=1e-6)
    assert R.present is False  # 5 % modulation is below the 8 % limit
    for s in (L, R):
        assert s.coverage_pct == 100.0 and s.window_s == 10.0 and s.reason is None
        assert s.rate_per_min == pytest.approx(15.0, abs=1e-6)


@pytest.mark.parametrize(("wander", "setting", "field"), [
    (10.0, "tube.breathing_min_modulation_pct", "modulation_pct"),
    (6.0, "tube.breathing_min_wander_uV", "wander_uV"),
])
def test_a_measure_exactly_at_its_limit_is_present(wander, setting, field):
    def side(changes=None):
        m = meter_with_frames([sine(wander)], [sine(0.5, mean=5.0)], sides=("L",), changes=changes)
        return m.evaluate(T0, T0 + 10.0).sides["L"]

    got = getattr(side(), field)
    assert got is not None
    assert side({setting: got}).present is True
    assert side({setting: got * 1.001}).present is False


def test_a_small_wander_limit_below_one_microvolt_is_still_required():
    changes = {"tube.breathing_min_wander_uV": 0.5}
    m = meter_with_frames([sine(0.1)], [sine(0.5, mean=5.0)], sides=("L",), changes=changes)
    s = m.evaluate(T0, T0 + 10.0).sides["L"]
    assert s.wander_uV == pytest.approx(0.2, rel=1e-6)
    assert s.present is False


def test_a_wander_limit_of_zero_needs_no_wander():
    changes = {"tube.breathing_min_wander_uV": 0.0}
    m = meter_with_frames([const(3.0)], [sine(0.5, mean=5.0)], sides=("L",), changes=changes)
    assert m.evaluate(T0, T0 + 10.0).sides["L"].present is True


def test_a_background_below_one_microvolt_is_still_measured():
    m = meter_with_frames([sine(10.0)], [sine(0.05, mean=0.5)], sides=("L",))
    s = m.evaluate(T0, T0 + 10.0).sides["L"]
    assert s.background_uV == pytest.approx(0.5, rel=1e-9)
    assert s.modulation_pct == pytest.approx(10.0 / COMB_025, rel=1e-6)
    assert s.present is True


def test_an_envelope_fitting_to_no_positive_mean_reports_no_modulation():
    # 70 % of the frames at 1 µV, 30 % at -3 µV in whole breaths: the median is positive, the fitted mean is not
    def square(t):
        ph = ((t - T0) * 0.25) % 1.0
        return np.where(ph < 0.7, 1.0, -3.0)
    m = meter_with_frames([sine(10.0)], [square], sides=("L",), n=160)
    s = m.evaluate(T0, T0 + 16.0).sides["L"]
    assert s.background_uV is not None and s.background_uV <= 0
    assert s.modulation_pct == 0.0
    assert s.present is False


def test_coverage_is_capped_at_100_percent_when_the_window_holds_one_frame_more():
    m = meter_with_frames([sine(10.0)], [sine(0.5, mean=5.0)], sides=("L",), n=110)
    r = m.evaluate(T0 + 0.04, T0 + 10.08)  # 10.04 s: 100 frames expected, 101 frame centres inside
    s = r.sides["L"]
    assert s.coverage_pct == 100.0
    assert s.status == "measured"


def test_a_frame_exactly_at_the_window_start_is_counted_and_one_at_its_end_is_not():
    n = 120
    t = frame_times(n)
    stim = lambda tt: np.where((np.arange(len(tt)) >= 11) & (np.arange(len(tt)) <= 15), STIM, OK)  # noqa: E731
    m = meter_with_frames([sine(10.0)], [sine(0.5, mean=5.0)], [stim], sides=("L",), n=n)
    r = m.evaluate(float(t[10]), float(t[110]))  # frames 10..109 inside; frames 11..15 stimulation
    assert r.sides["L"].coverage_pct == pytest.approx(95.0)


# ---------------------------------------------------------------------- evaluate: not measurable


def test_exactly_80_percent_valid_frames_is_enough():
    m = meter_with_frames([sine(10.0)], [sine(0.5, mean=5.0)], [stim_first(20)], sides=("L",))
    s = m.evaluate(T0, T0 + 10.0).sides["L"]
    assert s.status == "measured" and s.coverage_pct == pytest.approx(80.0)


def test_too_few_valid_frames_is_not_measurable_with_its_coverage_and_reason():
    m = meter_with_frames([sine(10.0), sine(10.0)], [sine(0.5, mean=5.0), sine(0.5, mean=5.0)],
                          [stim_first(30), const(OK)])
    r = m.evaluate(T0, T0 + 10.0)
    L, R = r.sides["L"], r.sides["R"]
    assert L.side == "L" and L.present is None and L.status == "not_measurable"
    assert L.coverage_pct == pytest.approx(70.0)
    assert L.window_s == 10.0
    assert L.reason == REASONS["stimulation"]
    assert R.side == "R" and R.status == "measured" and R.present is True  # the other side is still measured
    assert r.rate_per_min == pytest.approx(15.0, abs=1e-6)
    assert r.t_from == T0 and r.t_to == T0 + 10.0


def test_a_flat_envelope_is_no_signal_with_its_coverage():
    m = meter_with_frames([sine(10.0), sine(10.0)], [const(0.04), sine(0.5, mean=5.0)])
    r = m.evaluate(T0, T0 + 10.0)
    L = r.sides["L"]
    assert L.side == "L" and L.present is None and L.reason == REASONS["no_signal"]
    assert L.coverage_pct == 100.0 and L.window_s == 10.0
    assert r.sides["R"].status == "measured"


def test_an_envelope_exactly_at_the_flat_limit_is_a_signal():
    m = meter_with_frames([sine(10.0)], [const(0.05)], sides=("L",))
    s = m.evaluate(T0, T0 + 10.0).sides["L"]
    assert s.status == "measured" and s.reason is None


def test_no_measurable_side_gives_no_rate_and_keeps_the_window():
    m = meter_with_frames([sine(10.0), sine(10.0)], [const(0.0), const(0.0)])
    r = m.evaluate(T0, T0 + 10.0)
    assert r.rate_per_min is None
    assert r.t_from == T0 and r.t_to == T0 + 10.0
    assert [s.reason for s in r.sides.values()] == [REASONS["no_signal"]] * 2


def test_no_frames_in_the_window_is_no_stream():
    m = meter_with_frames([sine(10.0)], [sine(0.5, mean=5.0)], sides=("L",))
    r = m.evaluate(T0 + 50.0, T0 + 60.0)
    s = r.sides["L"]
    assert s.side == "L" and s.reason == REASONS["no_stream"] and s.window_s == 10.0
    assert r.t_from == T0 + 50.0 and r.t_to == T0 + 60.0 and r.rate_per_min is None


def test_an_empty_meter_evaluates_the_window_ending_at_zero():
    m = BreathingMeter(Settings(), 1000.0)
    r = m.evaluate()
    assert r.t_to == 0.0 and r.t_from == -m.window_s
    assert all(s.reason == REASONS["no_stream"] for s in r.sides.values())


# ---------------------------------------------------------------------- feeding: frames, stimuli, artifacts

FS = 1000.0  # 100-sample frames
S0 = 10.0  # stream start


def frame_start(j: int) -> float:
    return S0 + j * FRAME


def fed_meter(blanks=(), changes=None, x: np.ndarray | None = None, dur_s: float = 3.0) -> BreathingMeter:
    """A 1 kHz meter told ``blanks`` first, then fed ``x`` (default: Gaussian noise, 5 µV) and flushed."""
    m = BreathingMeter(Settings(changes or {}), FS)
    for a, b in blanks:
        m.blank(a, b)
    if x is None:
        x = np.random.default_rng(5).normal(0.0, 5.0, (2, int(dur_s * FS)))
    for i in range(0, x.shape[1], 100):
        m.feed(x[:, i:i + 100], S0 + i / FS)
    m.flush()
    return m


def valid_frames(m: BreathingMeter) -> int:
    """Valid frames of the left side among the 29 of [10.1 s, 13.0 s)."""
    s = m.evaluate(S0 + 0.1, S0 + 3.0).sides["L"]
    return int(round(s.coverage_pct * 29 / 100))


def test_frame_times_are_their_centres_and_the_first_frame_is_only_the_comb_reference():
    m = fed_meter(dur_s=1.0)
    assert m.first_frame_t == pytest.approx(S0 + 0.1)
    assert m.covered_until == pytest.approx(S0 + 1.0)


def test_no_blank_leaves_every_frame_valid():
    assert valid_frames(fed_meter()) == 29


def test_a_frame_with_30_percent_of_its_samples_left_is_valid_and_with_less_it_is_not():
    j = 15
    ts = frame_start(j)
    # samples 0..69 of frame j blanked: 30 left in it and (through the comb) in frame j + 1
    m = fed_meter([(ts + 0.0005, ts + 0.0685)])
    assert valid_frames(m) == 29
    assert m.evaluate(S0 + 0.1, S0 + 3.0).sides["L"].status == "measured"
    # samples 0..70: 29 left
    m = fed_meter([(ts + 0.0005, ts + 0.0695)])
    assert valid_frames(m) == 27
    s = m.evaluate(S0 + 0.1, S0 + 3.0).sides["L"]
    assert s.status == "measured" and s.wander_uV is not None


def test_a_blank_starting_just_before_a_frame_covers_its_first_sample():
    j = 15
    ts = frame_start(j)
    # the last sample of frame j - 1 and samples 0..69 of frame j: 29 left for frame j's envelope
    # (frame j + 1 keeps 30: valid)
    m = fed_meter([(ts - 0.0005, ts + 0.0685)])
    assert valid_frames(m) == 28


def test_a_blank_ending_just_before_a_frame_leaves_the_frame_alone():
    j = 15
    ts = frame_start(j)
    # samples 98, 99 of frame j - 1 and 30..99 of frame j: 30 samples left (0..29) for frame j
    m = fed_meter([(ts - 0.0015, ts - 0.0005), (ts + 0.0305, ts + 0.0985)])
    assert valid_frames(m) == 29


def test_a_blank_ending_exactly_at_a_frame_start_covers_its_first_sample():
    j = 15
    ts = frame_start(j)
    # as above, but the first blank ends exactly where frame j starts: sample 0 of frame j too,
    # so 29 samples are left for frame j and (through the comb) for frame j + 1
    m = fed_meter([(ts - 0.0015, ts), (ts + 0.0305, ts + 0.0985)])
    assert valid_frames(m) == 27


def test_a_sample_exactly_at_saturation_invalidates_its_frame_and_its_neighbours():
    x = np.random.default_rng(5).normal(0.0, 5.0, (2, 3000))
    x[0, 1550] = 1000.0  # frame 15
    m = fed_meter(changes={"analysis.saturation_uV": 1000.0}, x=x)
    assert valid_frames(m) == 26
    x[0, 1550] = 999.0
    m = fed_meter(changes={"analysis.saturation_uV": 1000.0}, x=x)
    assert valid_frames(m) == 29


def test_an_envelope_exactly_at_the_cautery_level_invalidates_its_frame():
    x = np.random.default_rng(5).normal(0.0, 5.0, (2, 3000))
    x[:, 1500:1600] = np.random.default_rng(6).normal(0.0, 1000.0, (2, 100))  # frame 15: cautery-like burst
    m = fed_meter(x=x)
    top = max(float(np.max(fr[2])) for fr in m._frames)
    assert top > 200.0
    m = fed_meter(changes={"analysis.cautery_rms_uV": top}, x=x)
    s = m.evaluate(S0 + 0.1, S0 + 3.0).sides["L"]
    assert valid_frames(m) < 29
    m = fed_meter(changes={"analysis.cautery_rms_uV": top * 1.0001}, x=x)
    assert valid_frames(m) == 29
    assert s.coverage_pct < 100.0


def test_the_envelope_is_the_trimmed_rms_of_the_comb_difference_per_side():
    from scipy import signal as sps

    rng = np.random.default_rng(9)
    x = np.vstack([rng.normal(0.0, 5.0, 3000), rng.standard_t(3, 3000) * 2.0 + 40.0 * (rng.random(3000) < 0.05)])
    m = fed_meter(x=x)
    sos = sps.butter(4, 100.0, btype="highpass", fs=FS, output="sos")
    band, _ = sps.sosfilt(sos, x, axis=1, zi=sps.sosfilt_zi(sos)[:, None, :] * x[None, :, 0:1])
    frames = list(m._frames)
    assert len(frames) == 29
    for j, fr in enumerate(frames, start=1):
        d = band[:, j * 100:(j + 1) * 100] - band[:, (j - 1) * 100:j * 100]
        dev = np.sort(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1)[:, :90]
        want = np.sqrt(np.mean(dev * dev, axis=1)) / (0.78928 * math.sqrt(2.0))
        np.testing.assert_allclose(fr[2], want, rtol=1e-9)
        np.testing.assert_allclose(fr[1], np.median(x[:, j * 100:(j + 1) * 100], axis=1), rtol=1e-12)


# ---------------------------------------------------------------------- the common breathing frequency


def test_the_rate_is_found_between_coarse_grid_points():
    f = 0.2525  # a tenth of a coarse step (1/40 Hz for a 10 s window) above 0.25 Hz
    m = meter_with_frames([sine(10.0, f=f)], [sine(0.5, f=f, mean=5.0)], sides=("L",))
    assert m.evaluate(T0, T0 + 10.0).rate_per_min == pytest.approx(60.0 * f, abs=1e-6)


def test_the_rate_is_found_near_the_top_of_the_range():
    f = 0.69875  # the top coarse point (0.7 Hz) is the nearest
    m = meter_with_frames([sine(10.0, f=f)], [sine(0.5, f=f, mean=5.0)], sides=("L",))
    assert m.evaluate(T0, T0 + 10.0).rate_per_min == pytest.approx(60.0 * f, abs=1e-6)


def test_a_short_window_uses_a_coarse_step_of_a_quarter_of_its_resolution():
    f = 0.1 + 10.0 / 60.0  # on the 1.5 s window's fine grid
    m = meter_with_frames([sine(10.0, f=f)], [sine(0.5, f=f, mean=5.0)], sides=("L",), n=15)
    assert m.evaluate(T0, T0 + 1.5).rate_per_min == pytest.approx(60.0 * f, abs=1e-6)


def test_a_tiny_breathing_swing_still_gives_its_rate():
    m = meter_with_frames([sine(0.01)], [sine(0.001, mean=0.1)], sides=("L",))
    assert m.evaluate(T0, T0 + 10.0).rate_per_min == pytest.approx(15.0, abs=1e-6)


def test_each_series_weighs_by_the_fraction_it_explains_not_by_its_size():
    # left: a clean 12 /min swing on a large offset; right: a 30 /min swing that noise blurs
    rng = np.random.default_rng(2)
    noise, e1, e2 = rng.normal(0.0, 5.0, 100), rng.normal(5.0, 0.1, 100), rng.normal(5.0, 0.1, 100)
    m = meter_with_frames([sine(10.0, f=0.2, mean=1000.0), lambda t: sine(10.0, f=0.5)(t) + noise],
                          [lambda t: e1, lambda t: e2])
    assert m.evaluate(T0, T0 + 10.0).rate_per_min == pytest.approx(12.0, abs=1e-6)
