"""Breathing variation: the published values of a side and where a stimulus window ends."""

from __future__ import annotations

import numpy as np

from app.analysis.breathing import BreathingMeter, SideBreathing
from app.settings import Settings


def test_a_measured_side_is_published_with_its_rounding():
    s = SideBreathing("L", True, wander_uV=12.3456, modulation_pct=23.4567, background_uV=3.45678,
                      rate_per_min=14.5678, coverage_pct=87.46, window_s=15.04)
    assert s.to_json() == {
        "status": "measured", "present": True, "wander_uV": 12.3, "modulation_pct": 23.5,
        "background_uV": 3.46, "rate_per_min": 14.6, "coverage_pct": 87.0, "window_s": 15.0, "reason": None,
    }


def test_published_values_are_floats_even_when_whole():
    s = SideBreathing("R", False, wander_uV=7.04, modulation_pct=2.04, background_uV=3.004,
                      rate_per_min=12.04, coverage_pct=99.6, window_s=15.0)
    d = s.to_json()
    assert d["wander_uV"] == 7.0 and d["modulation_pct"] == 2.0 and d["background_uV"] == 3.0
    assert d["rate_per_min"] == 12.0 and d["coverage_pct"] == 100.0
    for key in ("wander_uV", "modulation_pct", "background_uV", "rate_per_min", "coverage_pct"):
        assert isinstance(d[key], float), key


def _meter_with_frames() -> BreathingMeter:
    fs = 1000.0
    rng = np.random.default_rng(3)
    m = BreathingMeter(Settings(), fs)
    x = rng.normal(0.0, 5.0, (2, 3000))
    for i in range(0, 3000, 100):
        m.feed(x[:, i:i + 100], 10.0 + i / fs)
    m.flush()
    return m


def _coverage(m: BreathingMeter, t_from: float, t_to: float) -> list[float]:
    r = m.evaluate(t_from, t_to)
    return [s.coverage_pct for s in r.sides.values()]


def test_a_stimulus_window_starting_where_the_newest_frame_ends_leaves_the_frames_alone():
    m = _meter_with_frames()
    end = m.covered_until
    assert end is not None
    before = _coverage(m, end - 1.0, end)
    assert before == [100.0, 100.0]
    m.blank(end, end + 0.05)  # the window begins exactly where the newest frame ends
    assert _coverage(m, end - 1.0, end) == before


def test_a_stimulus_window_reaching_into_the_newest_frame_leaves_it_out():
    m = _meter_with_frames()
    end = m.covered_until
    assert end is not None
    m.blank(end - 0.001, end + 0.05)
    assert _coverage(m, end - 1.0, end) == [90.0, 90.0]  # 1 of the 10 frames
