"""LED patterns measured over time, and the footswitch debouncer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.alarms import AlarmKind, AlarmManager
from app.outputs.gpio import GREEN, RED, YELLOW
from app.outputs.indicators import Footswitch, flash, led_states
from app.settings import Settings
from firmware_bridge.clock import ManualClock


def sample(kinds, seconds=10.0, dt=0.001):
    clock = ManualClock(100.0)
    m = AlarmManager(clock, Settings())
    for kind, key in kinds:
        m.raise_condition(kind, key)
    t0 = clock.now()
    st_ = m.state()
    times = t0 + np.arange(0, seconds, dt)
    levels = {role: np.array([led_states(st_, t)[role] for t in times]) for role in (RED, YELLOW, GREEN)}
    return times, levels


def rate_and_duty(times, on):
    rises = times[1:][np.diff(on.astype(int)) == 1]
    period = np.median(np.diff(rises))
    return 1.0 / period, float(np.mean(on))


def test_high_alarm_red_flashes_within_iec_rate_and_duty():
    times, lv = sample([(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L")])
    hz, duty = rate_and_duty(times, lv[RED])
    assert 1.4 <= hz <= 2.8 and hz == pytest.approx(2.0, rel=0.01)
    assert 0.20 <= duty <= 0.60
    assert lv[RED][0]  # on at once
    assert not lv[YELLOW].any()


def test_medium_alarm_yellow_flashes_slowly():
    times, lv = sample([(AlarmKind.AMPLITUDE_DECREASE, "VAGUS-L")], seconds=20.0)
    hz, duty = rate_and_duty(times, lv[YELLOW])
    assert 0.4 <= hz <= 0.8
    assert 0.20 <= duty <= 0.60
    assert not lv[RED].any()


def test_low_alarm_yellow_steady():
    _times, lv = sample([(AlarmKind.POOR_BASELINE, "VAGUS-L")])
    assert lv[YELLOW].all() and not lv[RED].any()


def test_high_and_medium_flash_both_and_technical_turns_green_off():
    times, lv = sample([(AlarmKind.LOSS_OF_SIGNAL, "VAGUS-L"), (AlarmKind.LEAD_OFF, "R")], seconds=10)
    assert rate_and_duty(times, lv[RED])[0] == pytest.approx(2.0, rel=0.01)
    assert rate_and_duty(times, lv[YELLOW])[0] == pytest.approx(0.6, rel=0.01)
    assert not lv[GREEN].any()


def test_green_blinks_while_all_is_well():
    times, lv = sample([])
    hz, duty = rate_and_duty(times, lv[GREEN])
    assert hz == pytest.approx(1.0, rel=0.01) and duty == pytest.approx(0.9, abs=0.01)
    assert not lv[RED].any() and not lv[YELLOW].any()


def test_flash_before_start_is_off():
    assert not flash(0.9, 1.0, 2.0, 0.5)
    assert flash(1.0, 1.0, 2.0, 0.5)


# ----------------------------------------------------------------------------- footswitch


def run(fs: Footswitch, pattern, dt=0.001, t0=0.0):
    """pattern: list of (seconds, raw level). Returns [(t, event)]."""
    events, t = [], t0
    for seconds, level in pattern:
        for _ in range(int(round(seconds / dt))):
            events += [(round(t, 6), e) for e in fs.update(t, level)]
            t += dt
    return events


def test_bouncy_short_press_gives_one_press_on_release():
    fs = Footswitch(0.030, 1.5)
    bounce = [(0.002, True), (0.002, False)] * 5
    events = run(fs, bounce + [(0.3, True)] + [(0.002, False), (0.002, True)] * 4 + [(0.2, False)])
    assert [e for _t, e in events] == ["press"]


def test_long_press_fires_once_while_held_and_release_is_silent():
    fs = Footswitch(0.030, 1.5)
    events = run(fs, [(0.5, False), (3.0, True), (0.5, False)])
    assert [e for _t, e in events] == ["long_press"]
    t, _ = events[0]
    assert t == pytest.approx(0.5 + 1.5, abs=0.002)  # dated from the first edge


def test_glitch_shorter_than_debounce_is_ignored():
    fs = Footswitch(0.030, 1.5)
    assert run(fs, [(0.1, False), (0.02, True), (0.5, False)]) == []


def test_slow_polling_still_sees_a_press():
    fs = Footswitch(0.030, 1.5)
    assert [e for _t, e in run(fs, [(0.2, True), (0.2, False)], dt=0.05)] == ["press"]


def test_bad_footswitch_timing_refused():
    with pytest.raises(ValueError, match="debounce"):
        Footswitch(0.5, 0.2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 25), min_size=0, max_size=8), st.integers(60, 1400))
def test_any_bounce_shorter_than_debounce_around_a_press_gives_one_press(bounces_ms, hold_ms):
    fs = Footswitch(0.030, 1.5)
    pattern, level = [], True
    for b in bounces_ms:
        pattern.append((b / 1000, level))
        level = not level
    pattern += [(hold_ms / 1000, True), (0.2, False)]
    assert [e for _t, e in run(fs, pattern)] == ["press"]
