"""The breathing entries the engine publishes and the words the screen shows for them, and
the bookkeeping of the meter's frames (stimulus windows told late, readiness of a window).

Frame times are exact here: at 1024 Hz a frame is 102 samples, 51/512 s, a binary fraction,
so the frame edges and the window arithmetic are exact in floating point.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.analysis.breathing import (
    REASONS,
    BreathingMeter,
    SideBreathing,
    measuring_json,
    not_measured_json,
    side_text,
)
from app.settings import Settings

FS = 1024.0


def _meter(dur_s: float = 4.0, seed: int = 3) -> BreathingMeter:
    """A meter fed ``dur_s`` of plain background EMG from time 0, every whole frame cut."""
    m = BreathingMeter(Settings(), FS)
    x = np.random.default_rng(seed).normal(0.0, 5.0, (2, int(dur_s * FS)))
    m.feed(x, 0.0)
    m.flush()
    return m


def _left_out(m: BreathingMeter, k: int) -> bool:
    """Frame ``k`` (from ``k`` frames after time 0) is left out of the measurement."""
    f = m.frame_s
    side = m.evaluate(k * f, (k + 1) * f).sides["L"]
    if side.present is None:
        assert side.reason == REASONS["stimulation"]
        return True
    assert side.coverage_pct == 100.0
    return False


def test_measuring_entry_is_published_exactly():
    got = measuring_json(["L", "R"], 9.66, 12.34)
    want = {"status": "measuring", "present": None, "remaining_s": 9.7, "window_s": 12.3, "reason": None}
    assert got == {"L": want, "R": want}
    assert all(type(got["L"][k]) is float for k in ("remaining_s", "window_s"))
    # a window already over has nothing left to wait for
    assert measuring_json(["L"], -2.0, 15.0)["L"]["remaining_s"] == 0.0
    assert measuring_json(["R"], 0.44, 15.0)["R"]["remaining_s"] == 0.4


def test_not_measured_entry_is_published_exactly():
    want = {"status": "not_measurable", "present": None, "wander_uV": None, "modulation_pct": None,
            "background_uV": None, "rate_per_min": None, "coverage_pct": 0.0, "window_s": 0.0,
            "reason": REASONS["no_stream"]}
    assert not_measured_json(["L", "R"], REASONS["no_stream"]) == {"L": want, "R": want}
    got = not_measured_json(["R"], REASONS["cautery"], window_s=12.34)
    assert got == {"R": {**want, "window_s": 12.3, "reason": REASONS["cautery"]}}


def test_words_for_each_kind_of_entry():
    assert side_text({"status": "measuring", "remaining_s": 9.6}) == "measuring (10 s)"
    assert side_text({"status": "measuring"}) == "measuring"
    assert side_text({"status": "not_measurable", "present": None, "reason": None}) == "not measurable"
    assert side_text({"status": "not_measurable", "present": None}) == "not measurable"
    assert side_text({"status": "measured", "present": True}) == "present"
    assert side_text({"status": "measured", "present": False, "wander_uV": None}) == "absent"
    d = {"status": "measured", "present": True, "wander_uV": 40.4, "modulation_pct": 25.3}
    assert side_text(d) == "present (wander 40 µV, modulation 25 %)"
    assert side_text({"status": "measured", "present": False, "modulation_pct": 2.4}) == "absent (modulation 2 %)"
    # anything else is shown as it is
    assert side_text("stale") == "stale" and side_text(3) == "3"


def test_a_side_result_in_words():
    assert SideBreathing("L", True, 40.4, 25.3, 3.0, 15.0, 100.0, 15.0).text() == \
        "present (wander 40 µV, modulation 25 %)"
    assert SideBreathing("R", False, 1.2, 2.6).text() == "absent (wander 1 µV, modulation 3 %)"
    assert SideBreathing("R", None, reason=REASONS["cautery"]).text() == "not measurable: electrocautery"


def test_a_late_stimulus_window_leaves_out_the_frame_holding_it():
    m = _meter()
    f = m.frame_s
    assert not any(_left_out(m, k) for k in range(1, 30))
    m.blank(10 * f + 0.002, 10 * f + 0.01)  # early in frame 10, told after the frames were cut
    assert _left_out(m, 10)
    # frames two or more away are untouched
    assert not any(_left_out(m, k) for k in [*range(1, 9), *range(12, 30)])


def test_a_late_stimulus_window_given_end_first_counts_the_same():
    m = _meter()
    f = m.frame_s
    m.blank(10 * f + 0.01, 10 * f + 0.002)
    assert _left_out(m, 10)
    assert not any(_left_out(m, k) for k in [*range(1, 9), *range(12, 30)])


def test_a_late_stimulus_window_reaching_the_first_sample_of_a_frame_leaves_it_out():
    m = _meter()
    f = m.frame_s
    m.blank(12 * f - 0.01, 12 * f)  # [t_start, t_end] holds the first sample of frame 12
    assert _left_out(m, 12)
    assert not any(_left_out(m, k) for k in [*range(1, 10), *range(14, 30)])


def test_a_window_is_ready_once_a_frame_past_its_end_is_cut():
    m = _meter(16.5)
    end = m.covered_until
    assert end is not None
    half = m.frame_s / 2
    t_from = end - m.window_s - half  # the newest frame's centre is the window's end
    assert t_from + m.window_s + half == end  # exact (binary fractions)
    assert m.ready(t_from)
    assert m.ready(t_from - m.frame_s)
    assert not m.ready(t_from + 0.01)
    assert not m.ready(t_from + m.frame_s)


@pytest.mark.parametrize("remaining", [0.0, 3.0])
def test_measuring_entry_in_words(remaining):
    assert side_text(measuring_json(["L"], remaining, 15.0)["L"]) == f"measuring ({remaining:.0f} s)"


def test_a_late_stimulus_window_leaves_out_its_frame_and_the_next_one_not_the_one_before():
    """The comb subtracts the frame before: a stimulus in frame 10 reaches the envelope of frames 10
    and 11; frame 9, whose partner is frame 8, is clean (as when the window is told in time)."""
    m = _meter()
    f = m.frame_s
    m.blank(10 * f + 0.002, 10 * f + 0.01)
    assert [k for k in range(1, 30) if _left_out(m, k)] == [10, 11]
    m = _meter()
    m.blank(12 * f - 0.01, 12 * f)  # the end of frame 11 and the first sample of frame 12
    assert [k for k in range(1, 30) if _left_out(m, k)] == [11, 12, 13]
