"""Breathing variation: which frame an artifact (electrocautery, saturation) marks before it.

- The frame just before an artifact frame is marked too (its comb partner), and no other.
- Not across a restart of the stream: when the new segment starts inside the last frame of
  the old one (a backwards jump), the old frame, 1.5 frames before the first frame kept of
  the new segment, is not its neighbour. Times here are exact binary fractions (1024 Hz,
  102-sample frames), so "exactly 1.5 frames" is exact.
- A frame before an artifact that a stimulus already left out stays counted as stimulation,
  whatever the frames before it hold.
"""

from __future__ import annotations

import numpy as np

from app.analysis.breathing import REASONS, BreathingMeter
from app.settings import Settings


def feed(m: BreathingMeter, x: np.ndarray, t0: float, block: int = 64) -> None:
    for i in range(0, x.shape[1], block):
        m.feed(x[:, i : i + block], t0 + i / m.fs)


def noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 5.0, (2, n))


def coverage(m: BreathingMeter, t_from: float, t_to: float) -> list[float]:
    return [s.coverage_pct for s in m.evaluate(t_from, t_to).sides.values()]


def test_an_artifact_marks_the_frame_just_before_it_and_no_other():
    m = BreathingMeter(Settings(), 1000.0)  # 100-sample frames of 0.1 s
    x = noise(4000, seed=1)
    x[:, 2050] = 2.0 * m.saturation_uV  # in frame 20 (2.0-2.1 s after the start)
    feed(m, x, 10.0)
    m.flush()
    # frames 19 (before), 20 (the artifact) and 21 (after) are out; 18 and 22 are in
    assert coverage(m, 11.9, 12.9) == [70.0, 70.0]  # frames 19-28
    assert coverage(m, 11.8, 11.9) == [100.0, 100.0]  # frame 18
    assert coverage(m, 12.2, 12.3) == [100.0, 100.0]  # frame 22
    assert coverage(m, 10.2, 11.8) == [100.0, 100.0]  # the early frames: untouched


def test_an_artifact_after_a_restart_inside_the_last_frame_leaves_that_frame_valid():
    fs = 1024.0
    m = BreathingMeter(Settings(), fs)
    assert m.frame == 102 and m.frame_s == 102 / 1024  # exact in binary
    s0 = 8.0
    feed(m, noise(30 * 102 + 90, seed=2), s0)  # frames 0-29 and 90 samples more
    last = s0 + 29 * m.frame_s + m.frame_s / 2  # centre of the last frame kept
    after = noise(10 * 102, seed=3)
    after[:, 150] = 2.0 * m.saturation_uV  # in the second frame of the new segment (the first kept)
    feed(m, after, last)  # 0.14 s back in time: a new segment, starting at the old frame's centre
    m.flush()
    assert m._frames[-10][0] == last and m._frames[-9][0] - last == 1.5 * m.frame_s  # exactly 1.5 frames
    assert coverage(m, s0 + 20 * m.frame_s, last + m.frame_s / 2) == [100.0, 100.0]  # old frames 20-29


def test_the_frame_before_an_artifact_stays_counted_as_stimulation():
    """A new segment whose first frames a stimulus window covers: its first frame kept is
    left out for stimulation; the artifact right after it marks it too, but it stays counted
    as stimulation (two frames of stimulation, one more pair later, against two of
    electrocautery: the window is said to be out for stimulation)."""
    m = BreathingMeter(Settings(), 1000.0)
    s0 = 10.0
    feed(m, noise(3000, seed=4), s0)
    m.blank(s0 + 5.0, s0 + 5.1)  # all of the new segment's first frame (the comb's reference)
    m.blank(s0 + 5.6, s0 + 5.7)  # all of its frame 6 (and, as comb partner, frame 7)
    after = noise(1000, seed=5)
    after[:, 250] = 2.0 * m.saturation_uV  # frame 2: cautery-like saturation
    feed(m, after, s0 + 5.0)
    m.flush()
    r = m.evaluate(s0 + 5.0, s0 + 6.0)  # frames 1-9 of the new segment
    for side in r.sides.values():
        assert side.coverage_pct == 40.0  # 4 of 10: 1, 6, 7 stimulation; 2, 3 cautery; one missing
        assert side.reason == REASONS["stimulation"]
