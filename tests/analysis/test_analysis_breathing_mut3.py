"""Breathing variation: the lowest stream rate, the trimmed envelope at 20 kHz, and which
frames a stimulus window or an artifact touches at the edges of frames and of segments.

- 100 Hz is the lowest rate the meter takes (10-sample frames): it measures there.
- A frame's envelope is the RMS of exactly the smallest 90 % of its deviations.
- A stimulus window starting exactly where a frame ends leaves that frame alone.
- Stimulus windows long past are forgotten: a stream that restarts at an earlier time (a
  clock reset) is not blanked by them.
- An artifact marks the frame before it invalid only when that frame is its neighbour: not
  the last frame before a gap in the stream.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal as sps

from app.analysis.breathing import REASONS, BreathingMeter
from app.settings import Settings

FS = 1000.0  # 100-sample frames
FRAME = 0.1
S0 = 10.0


def feed(m: BreathingMeter, x: np.ndarray, t0: float, block: int = 100) -> None:
    for i in range(0, x.shape[1], block):
        m.feed(x[:, i:i + block], t0 + i / m.fs)


def noise(dur_s: float, seed: int, fs: float = FS) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 5.0, (2, int(round(dur_s * fs))))


# ---------------------------------------------------------------------- the lowest rate


def test_a_100_hz_stream_is_measured():
    """Left: a 20 µV swing at 0.25 Hz and noise modulated by 25 %; right: noise alone."""
    fs = 100.0
    t = np.arange(2000) / fs
    breath = np.sin(2 * np.pi * 0.25 * t + 1.0)
    x = np.random.default_rng(2).normal(0.0, 5.0, (2, 2000))
    x[0] = x[0] * (1.0 + 0.25 * breath) + 20.0 * breath
    m = BreathingMeter(Settings(), fs)
    feed(m, x, 50.0, block=2)
    r = m.evaluate(50.5, 50.5 + m.window_s)
    left, right = r.sides["L"], r.sides["R"]
    assert left.status == "measured" and left.coverage_pct == 100.0
    assert left.present is True and left.wander_uV == pytest.approx(40.0, rel=0.1)
    assert r.rate_per_min == pytest.approx(15.0, abs=0.5)
    assert right.present is False and right.wander_uV is not None and right.wander_uV < 2.0


# ---------------------------------------------------------------------- the trimmed envelope


def test_the_envelope_at_20_khz_is_the_rms_of_exactly_the_smallest_90_percent():
    """At 2000 deviations a frame's 90 % are 1800: not one more or fewer, and not some other
    1800 (a partial sort up to a neighbouring index gives another set on some frames of
    this stream, with numpy 2.x's selection algorithm)."""
    fs, n = 20000.0, 2000
    x = noise(2.0, seed=24, fs=fs)
    m = BreathingMeter(Settings(), fs)
    feed(m, x, S0, block=n)
    m.flush()
    sos = sps.butter(4, 100.0, btype="highpass", fs=fs, output="sos")
    band, _ = sps.sosfilt(sos, x, axis=1, zi=sps.sosfilt_zi(sos)[:, None, :] * x[None, :, 0:1])
    frames = list(m._frames)
    assert len(frames) == 19
    for j, fr in enumerate(frames, start=1):
        d = band[:, j * n:(j + 1) * n] - band[:, (j - 1) * n:j * n]
        dev = np.sort(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1)[:, :1800]
        want = np.sqrt(np.mean(dev * dev, axis=1)) / (0.78928 * math.sqrt(2.0))
        np.testing.assert_allclose(fr[2], want, rtol=1e-9, err_msg=f"frame {j}")


# ---------------------------------------------------------------------- stimulus windows at the edges


def test_a_stimulus_window_starting_exactly_where_a_frame_ends_leaves_that_frame_alone():
    j = 20
    end = (S0 + j * FRAME) + FRAME  # frame j's end, as the meter works it out
    x = noise(3.0, seed=7)
    told, plain = BreathingMeter(Settings(), FS), BreathingMeter(Settings(), FS)
    told.blank(end, end + 0.03)
    feed(told, x, S0)
    feed(plain, x, S0)
    told.flush()
    plain.flush()
    # the frames up to frame j (its centre is 50 ms before its end) are the same with and without it
    assert told.evaluate(S0 + FRAME, end) == plain.evaluate(S0 + FRAME, end)
    # ... and the window does leave out samples of the next frame
    assert told.evaluate(S0 + FRAME, end + FRAME) != plain.evaluate(S0 + FRAME, end + FRAME)


def test_a_stimulus_window_long_past_does_not_blank_a_stream_restarted_at_an_earlier_time():
    m = BreathingMeter(Settings(), FS, keep_s=1.5)  # the newest 15 frames
    m.blank(S0 + 3.0, S0 + 3.6)
    feed(m, noise(8.0, seed=8), S0)  # the window's frames are cut and left behind
    feed(m, noise(2.5, seed=9), S0 + 2.0)  # the clock went back 6 s: a new segment
    m.flush()
    assert m.first_frame_t == pytest.approx(S0 + 3.0)
    r = m.evaluate(S0 + 3.0, S0 + 4.5)
    assert [s.coverage_pct for s in r.sides.values()] == [100.0, 100.0]


# ---------------------------------------------------------------------- artifacts across a gap


def test_an_artifact_just_after_a_gap_leaves_the_frame_before_the_gap_valid():
    m = BreathingMeter(Settings(), FS)
    feed(m, noise(3.0, seed=10), S0)
    after = noise(1.0, seed=11)
    after[0, 150] = 2.0 * m.saturation_uV  # the first frame after the gap that is kept (the second)
    feed(m, after, S0 + 5.0)
    m.flush()
    r = m.evaluate(S0 + 2.0, S0 + 3.0)  # the last 10 frames before the gap
    assert [s.coverage_pct for s in r.sides.values()] == [100.0, 100.0]
    r = m.evaluate(S0 + 5.0, S0 + 6.0)  # the artifact and the frame after it
    assert [s.coverage_pct for s in r.sides.values()] == [70.0, 70.0]
    assert all(s.reason == REASONS["cautery"] for s in r.sides.values())
